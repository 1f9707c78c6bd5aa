import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from ggtool.quants.iq4_nl_iq4_xs import IQ4_NL, IQ4_XS, KVALUES, best_index
from oracles.weights import edge_cases, imatrix_for, noised_rows, weighted_sse
from oracles.weights import imatrix as make_imatrix

TYPES = ["IQ4_NL", "IQ4_XS"]
CLS = {"IQ4_NL": IQ4_NL, "IQ4_XS": IQ4_XS}


# test id -> quantdata.imatrix kind
IMATRICES = {"none": None, "imatrix": "lognormal", "imatrix0": "random_zeros_s3"}


def _cases():
    cases = dict(edge_cases())
    rng = np.random.default_rng(11)
    cases["scaled_rows"] = (rng.standard_normal((32, 256))
                            * rng.lognormal(0, 2, (32, 1))).astype(np.float32)
    return cases


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("im", ["none", "imatrix"])
@pytest.mark.parametrize("case", list(edge_cases()))
def test_gguf_decodes_what_we_encode(backend, qtype, im, case):
    x = edge_cases()[case]
    imatrix = make_imatrix(IMATRICES[im], x.shape[1])
    q = quants.quantize(x, qtype, imatrix=imatrix)
    ours = quants.dequantize(q, qtype, x.shape)
    theirs = gguf_dequantize(q, T[qtype]).reshape(x.shape)
    np.testing.assert_array_equal(ours, theirs)
    assert np.isfinite(ours).all()


@pytest.mark.parametrize("qtype", TYPES)
def test_native_equals_numpy(monkeypatch, qtype):
    if qtype not in quants.NATIVE_KERNELS:
        pytest.skip(f"no native {qtype}")
    for case, x in _cases().items():
        for im, kind in IMATRICES.items():
            imatrix = make_imatrix(kind, x.shape[1])
            monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
            a = quants.quantize(x, qtype, imatrix=imatrix)
            monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
            b = quants.quantize(x, qtype, imatrix=imatrix)
            assert a.tobytes() == b.tobytes(), (case, im)


def test_best_index_is_nearest_with_midpoints_going_up():
    kv = KVALUES.astype(np.float64)
    a = np.concatenate([np.linspace(-200, 200, 40001), (kv[:-1] + kv[1:]) / 2]).astype(np.float32)
    idx = best_index(a)
    dist = np.abs(a.astype(np.float64)[:, None] - kv[None, :])
    nearest_up = 15 - np.argmin(dist[:, ::-1], axis=1)  # ties -> the upper value
    np.testing.assert_array_equal(idx, nearest_up)


@pytest.mark.parametrize("qtype", TYPES)
def test_values_on_the_grid_come_back_exactly(backend, qtype):
    # every row is a permutation of 0.5 * KVALUES (0.5 and 0.5*(l) are exact in fp16)
    rng = np.random.default_rng(4)
    x = np.stack([rng.permutation(np.tile(KVALUES, 16)) for _ in range(4)]).astype(np.float32) * 0.5
    xh = quants.dequantize(quants.quantize(x, qtype), qtype, x.shape)
    np.testing.assert_array_equal(xh, x)


@pytest.mark.parametrize("qtype", TYPES)
def test_values_beyond_fp16_scale_keep_a_finite_scale(backend, qtype):
    # llama.cpp would store d = inf here (and then refuse to load the file)
    x = np.random.default_rng(2).standard_normal((2, 512)).astype(np.float32)
    x[0, 3], x[1, 300] = 3e7, -1e9
    xh = quants.dequantize(quants.quantize(x, qtype), qtype, x.shape)
    assert np.isfinite(xh).all()
    assert xh[0, 3] > 8e6 and xh[1, 300] < -8e6


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("im", list(IMATRICES))
def test_never_worse_than_llama_algorithm_per_block(qtype, im):
    """Our bytes vs our exact reproduction of llama.cpp's (always a candidate)."""
    cls = CLS[qtype]
    for case, x in _cases().items():
        imatrix = make_imatrix(IMATRICES[im], x.shape[1])
        w = np.ones(x.shape[1]) if imatrix is None else imatrix.astype(np.float64)
        bs = cls.block_size
        ours = cls.dequantize_rows(cls.quantize_rows(x, imatrix))
        ref = cls.dequantize_rows(cls.quantize_rows_llama(x, imatrix))
        e_ours = (((x - ours).astype(np.float64) ** 2) * w).reshape(-1, bs).sum(1)
        e_ref = (((x - ref).astype(np.float64) ** 2) * w).reshape(-1, bs).sum(1)
        assert (e_ours <= e_ref * (1 + 1e-5) + 1e-30).all(), case


# ------------------------------------------------------------------ libggml as the yardstick

@pytest.fixture(scope="module")
def noised_smollm2_rows(smollm2_weights):
    """Three real weight tensors (on the Q4_1 grid, so + small noise), as (48, 1536) rows."""
    rng = np.random.default_rng(5)  # one stream, drawn in file order
    return {name: noised_rows(smollm2_weights, name, 48, rng, n=1536)
            for name in ("blk.3.ffn_down.weight", "blk.5.attn_q.weight", "blk.7.ffn_up.weight")}


@pytest.mark.parametrize("qtype", TYPES)
def test_llama_reproduction_matches_libggml_bytes(llama_cpp_ok, qtype):
    from oracles.llamacpp import ggml_quantize

    cls = CLS[qtype]
    rng = np.random.default_rng(8)
    x = rng.standard_normal((48, 512)).astype(np.float32)
    for imatrix in (None, imatrix_for(512)):
        ours = cls.quantize_rows_llama(x, imatrix)
        theirs = ggml_quantize(x, qtype, imatrix)
        same = (ours.reshape(-1, cls.type_size) == theirs.reshape(-1, cls.type_size)).all(1)
        assert same.mean() >= 0.99, same.mean()


@pytest.mark.parametrize("qtype", TYPES)
def test_error_not_above_libggml(llama_cpp_ok, noised_smollm2_rows, qtype):
    """Default backend only: test_native_equals_numpy shows both give the same bytes."""
    from oracles.llamacpp import ggml_quantize

    rng = np.random.default_rng(9)
    sets = {"gaussian": rng.standard_normal((48, 1536)).astype(np.float32),
            "heavy_tail": rng.standard_t(3, (16, 1536)).astype(np.float32)}
    sets.update(noised_smollm2_rows)
    for name, x in sets.items():
        for imatrix in (None, imatrix_for(x.shape[1])):
            ours = quants.dequantize(quants.quantize(x, qtype, imatrix=imatrix), qtype, x.shape)
            theirs = gguf_dequantize(ggml_quantize(x, qtype, imatrix), T[qtype]).reshape(x.shape)
            e_ours = weighted_sse(x, ours, imatrix)
            e_theirs = weighted_sse(x, theirs, imatrix)
            assert e_ours <= e_theirs, (name, imatrix is not None, e_ours / e_theirs)
