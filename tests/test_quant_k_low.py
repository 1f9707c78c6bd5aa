"""Q2_K and Q3_K: gguf-py decodes our bytes, C == numpy, and never worse than libggml."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from ggtool.quants import q2_k_q3_k as k_low
from oracles.weights import edge_cases, imatrix, imatrix_for, noised, weighted_sse

TYPES = ["Q2_K", "Q3_K"]
CASES = edge_cases(512)


def _both_backends(x, qtype, im, monkeypatch):
    monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
    a = quants.quantize(x, qtype, im)
    monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
    b = quants.quantize(x, qtype, im)
    monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
    return a, b


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("im_kind", [None, "lognormal"])
@pytest.mark.parametrize("case", list(CASES))
def test_gguf_decodes_what_we_encode(backend, qtype, im_kind, case):
    x = CASES[case]
    q = quants.quantize(x, qtype, imatrix(im_kind, x.shape[1]))
    assert q.shape == (x.shape[0], x.shape[1] // 256 * (84 if qtype == "Q2_K" else 110))
    ours = quants.dequantize(q, qtype, x.shape)
    theirs = gguf_dequantize(q, T[qtype]).reshape(x.shape)
    np.testing.assert_array_equal(ours, theirs)
    assert np.isfinite(ours).all()


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("im_kind", [None, "lognormal", "with_zeros"])
def test_native_equals_numpy(qtype, im_kind, monkeypatch):
    if qtype not in quants.NATIVE_KERNELS:
        pytest.skip(f"no native {qtype}")
    rng = np.random.default_rng(7)
    cases = dict(CASES)
    cases["random_wide"] = rng.standard_normal((24, 1024)).astype(np.float32)
    for case, x in cases.items():
        a, b = _both_backends(x, qtype, imatrix(im_kind, x.shape[1]), monkeypatch)
        assert a.tobytes() == b.tobytes(), case


@pytest.mark.parametrize("qtype", TYPES)
def test_zero_rows_and_error_bounds(backend, qtype, rng):
    assert quants.quantize(np.zeros((0, 256), np.float32), qtype).shape == (0, 84 if qtype == "Q2_K" else 110)
    x = np.zeros((3, 256), np.float32)
    np.testing.assert_array_equal(quants.dequantize(quants.quantize(x, qtype), qtype, x.shape), x)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    xh = quants.dequantize(quants.quantize(x, qtype), qtype, x.shape)
    rel = weighted_sse(x, xh) / weighted_sse(x, 0 * x)
    assert rel < (0.09 if qtype == "Q2_K" else 0.035)  # 2.6 / 3.4 bits per weight on N(0, 1)


# ---------------------------------------------------------------- the libggml yardstick

@pytest.fixture(scope="module")
def smollm2_rows(smollm2_weights):
    """Noised real weights: 32 ffn_down rows (1536 long) from each of three layers."""
    x = np.concatenate([smollm2_weights[f"blk.{i}.ffn_down.weight"][:32] for i in (0, 15, 29)])
    return noised(x, 3)


def _ggml(x, qtype, im):
    from oracles.llamacpp import ggml_quantize

    return ggml_quantize(x, qtype, im)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("use_im", [False, True])
def test_llama_port_matches_libggml_bytes(llama_cpp_ok, qtype, use_im, rng):
    """Our port of llama.cpp's algorithm (before the refinement) gives libggml's bytes."""
    x = np.concatenate([rng.standard_normal((32, 512)).astype(np.float32), *CASES.values()])
    im = imatrix_for(512) if use_im else None
    theirs = _ggml(x, qtype, im).reshape(-1, 84 if qtype == "Q2_K" else 110)
    if qtype == "Q2_K":
        L, sb, d, dmin = k_low.q2_k_llama(x, im)
        ours = k_low.q2_k_bytes(L, sb & 0xF, sb >> 4, d, dmin)
    else:
        L, ls, d = k_low.q3_k_llama(x, im)
        ours = k_low.q3_k_bytes(L - 4, ls - 32, d)
    same = (ours == theirs).all(axis=1).mean()
    assert same >= 0.99, same  # 1.0 with llama-cpp-python 0.3.x built without FMA


def _block_sse(x, xh, im):
    d = (x.astype(np.float64) - xh.astype(np.float64)) ** 2
    if im is not None:
        d = d * im.astype(np.float64)
    return d.reshape(-1, 256).sum(axis=1)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("use_im", [False, True])
@pytest.mark.parametrize("data", ["random", "smollm2", "edge"])
def test_error_never_above_libggml(llama_cpp_ok, backend, qtype, use_im, data, request):
    """Per block (so per tensor too): sum(w*(x - x_hat)^2) <= libggml's, and lower in total."""
    if data == "random":
        xs = [np.random.default_rng(11).standard_normal((48, 1024)).astype(np.float32)]
    elif data == "smollm2":
        xs = [request.getfixturevalue("smollm2_rows")]
    else:
        xs = list(CASES.values())
    for x in xs:
        im = imatrix_for(x.shape[1]) if use_im else None
        ours = quants.dequantize(quants.quantize(x, qtype, im), qtype, x.shape)
        theirs = gguf_dequantize(_ggml(x, qtype, im), T[qtype]).reshape(x.shape)
        b_ours, b_theirs = _block_sse(x, ours, im), _block_sse(x, theirs, im)
        assert (b_ours <= b_theirs * (1 + 1e-12)).all()
        e_ours, e_theirs = weighted_sse(x, ours, im), weighted_sse(x, theirs, im)
        assert e_ours <= e_theirs, (e_ours, e_theirs)
        if data != "edge":  # the refinement must actually pay off on real-looking data
            assert e_ours < e_theirs * (0.995 if use_im else 0.95), e_ours / e_theirs
