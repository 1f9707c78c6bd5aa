"""Q4_0, Q4_1, Q5_0, Q5_1: decoding oracle (gguf-py), C == numpy, and quality vs libggml."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from ggtool.quants import q4_0_q4_1_q5_0_q5_1 as legacy
from oracles.weights import edge_cases, imatrix, imatrix_for, noised_rows, weighted_sse

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1"]
N = 160  # not a multiple of 256: legacy types only need 32

# None, a plain imatrix, or one with zero columns (unused inputs) and a zero block
IM_KINDS = [None, "lognormal_s3", "zeros_and_block_s3"]


def _roundtrip(x, qtype, im=None):
    return quants.dequantize(quants.quantize(x, qtype, im), qtype, x.shape)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_gguf_decodes_what_we_encode(backend, qtype, with_imatrix):
    im = imatrix_for(N) if with_imatrix else None
    for case, x in edge_cases(N).items():
        q = quants.quantize(x, qtype, im)
        ours = quants.dequantize(q, qtype, x.shape)
        theirs = gguf_dequantize(q, T[qtype]).reshape(x.shape)
        np.testing.assert_array_equal(ours, theirs, err_msg=case)
        assert np.isfinite(ours).all(), case


@pytest.mark.parametrize("qtype", TYPES)
def test_native_equals_numpy(monkeypatch, qtype):
    if qtype not in quants.NATIVE_KERNELS:
        pytest.skip(f"no native {qtype}")
    rng = np.random.default_rng(7)
    cases = dict(edge_cases(N))
    cases["random_rows"] = (rng.standard_normal((33, 96)) * rng.lognormal(0, 2, (33, 1))).astype(np.float32)
    for im_kind in IM_KINDS:
        for case, x in cases.items():
            im = imatrix(im_kind, x.shape[1])
            monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
            a = quants.quantize(x, qtype, im)
            monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
            b = quants.quantize(x, qtype, im)
            assert a.tobytes() == b.tobytes(), (case, im_kind)


@pytest.mark.parametrize("qtype", TYPES)
def test_zero_and_constant_blocks_are_exact(backend, qtype):
    x = np.zeros((2, 64), np.float32)
    x[1, 32:] = 0.25  # fp16-exact constant
    xh = _roundtrip(x, qtype)
    np.testing.assert_array_equal(xh, x)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("im_kind", IM_KINDS)
def test_never_worse_than_llama_replica(backend, qtype, im_kind):
    """llama.cpp's algorithm (our replica, held to libggml below) is a floor we must beat."""
    im = imatrix(im_kind, N)
    for case, x in edge_cases(N).items():
        ours = weighted_sse(x, _roundtrip(x, qtype, im), im)
        ref = legacy.llama_rows(qtype, x, im)
        with np.errstate(invalid="ignore", over="ignore"):  # llama.cpp's m can be inf ("huge")
            theirs = weighted_sse(x, gguf_dequantize(ref, T[qtype]).reshape(x.shape), im)
        if np.isfinite(theirs):
            assert ours <= theirs, case


# ------------------------------------------------------------------ libggml (llama.cpp) yardstick

@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_replica_matches_libggml(llama_cpp_ok, qtype, with_imatrix):
    """Our llama.cpp candidate is llama.cpp's algorithm: same bytes as libggml."""
    from oracles.llamacpp import ggml_quantize

    rng = np.random.default_rng(11)
    x = rng.standard_normal((32, 512)).astype(np.float32)
    im = imatrix_for(512) if with_imatrix else None
    a = legacy.llama_rows(qtype, x, im)
    b = ggml_quantize(x, qtype, im)
    assert (a == b).all(axis=1).mean() >= 0.95


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_error_not_above_libggml_random(llama_cpp_ok, backend, qtype, with_imatrix):
    from oracles.llamacpp import ggml_quantize

    rng = np.random.default_rng(5)
    im = imatrix_for(256) if with_imatrix else None
    for x in (rng.standard_normal((32, 256)), rng.standard_t(3, (32, 256))):
        x = x.astype(np.float32)
        theirs = gguf_dequantize(ggml_quantize(x, qtype, im), T[qtype]).reshape(x.shape)
        assert weighted_sse(x, _roundtrip(x, qtype, im), im) <= weighted_sse(x, theirs, im)


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.slow
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_error_not_above_libggml_real_weights(llama_cpp_ok, smollm2_weights, qtype, with_imatrix):
    from oracles.llamacpp import ggml_quantize

    for name in ("blk.0.attn_q.weight", "blk.3.ffn_down.weight"):
        x = noised_rows(smollm2_weights, name, 32, seed=0)
        im = imatrix_for(x.shape[1], seed=9) if with_imatrix else None
        theirs = gguf_dequantize(ggml_quantize(x, qtype, im), T[qtype]).reshape(x.shape)
        assert weighted_sse(x, _roundtrip(x, qtype, im), im) <= weighted_sse(x, theirs, im), name
