"""Q6_K: decoding oracle (gguf-py), C == numpy, and quality vs libggml."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from ggtool.quants import q6_k
from oracles.weights import edge_cases, imatrix, imatrix_for, noised_rows, weighted_sse

N = 512
IM_KINDS = [None, "lognormal_s3", "zeros_and_block_s3"]  # see quantdata.imatrix


def _roundtrip(x, im=None):
    return quants.dequantize(quants.quantize(x, "Q6_K", im), "Q6_K", x.shape)


@pytest.mark.parametrize("with_imatrix", [False, True])
def test_gguf_decodes_what_we_encode(backend, with_imatrix):
    im = imatrix_for(N) if with_imatrix else None
    for case, x in edge_cases(N).items():
        q = quants.quantize(x, "Q6_K", im)
        assert q.shape == (x.shape[0], 2 * 210)
        ours = quants.dequantize(q, "Q6_K", x.shape)
        theirs = gguf_dequantize(q, T.Q6_K).reshape(x.shape)
        np.testing.assert_array_equal(ours, theirs, err_msg=case)
        assert np.isfinite(ours).all(), case


def test_native_equals_numpy(monkeypatch):
    if "Q6_K" not in quants.NATIVE_KERNELS:
        pytest.skip("no native Q6_K")
    rng = np.random.default_rng(7)
    cases = dict(edge_cases(N))
    cases["random_rows"] = (rng.standard_normal((9, 768)) * rng.lognormal(0, 2, (9, 1))).astype(np.float32)
    for im_kind in IM_KINDS:
        for case, x in cases.items():
            im = imatrix(im_kind, x.shape[1])
            monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
            a = quants.quantize(x, "Q6_K", im)
            monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
            b = quants.quantize(x, "Q6_K", im)
            assert a.tobytes() == b.tobytes(), (case, im_kind)


def test_zero_rows_and_exact_grid(backend):
    """A row already on a Q6_K grid (every sub-block reaching level -32) comes back exactly."""
    rng = np.random.default_rng(2)
    levels = rng.integers(-31, 32, (2, 256))
    levels[:, ::16] = -32
    x = (levels * 0.25).astype(np.float32)
    x[0] = 0
    np.testing.assert_array_equal(_roundtrip(x), x)


@pytest.mark.parametrize("im_kind", IM_KINDS)
def test_never_worse_than_llama_replica(backend, im_kind):
    im = imatrix(im_kind, N)
    for case, x in edge_cases(N).items():
        ours = weighted_sse(x, _roundtrip(x, im), im)
        ref = q6_k.llama_rows(x, im)
        theirs = weighted_sse(x, gguf_dequantize(ref, T.Q6_K).reshape(x.shape), im)
        assert ours <= theirs, case


# ------------------------------------------------------------------ libggml (llama.cpp) yardstick

@pytest.mark.parametrize("with_imatrix", [False, True])
def test_replica_matches_libggml(llama_cpp_ok, with_imatrix):
    from oracles.llamacpp import ggml_quantize

    rng = np.random.default_rng(11)
    x = rng.standard_normal((16, 1024)).astype(np.float32)
    im = imatrix_for(1024) if with_imatrix else None
    a = q6_k.llama_rows(x, im).reshape(-1, 210)
    b = ggml_quantize(x, "Q6_K", im).reshape(-1, 210)
    assert (a == b).all(axis=1).mean() >= 0.95


@pytest.mark.parametrize("with_imatrix", [False, True])
def test_error_not_above_libggml_random(llama_cpp_ok, backend, with_imatrix):
    from oracles.llamacpp import ggml_quantize

    rng = np.random.default_rng(5)
    im = imatrix_for(N) if with_imatrix else None
    for x in (rng.standard_normal((16, N)), rng.standard_t(3, (16, N))):
        x = x.astype(np.float32)
        theirs = gguf_dequantize(ggml_quantize(x, "Q6_K", im), T.Q6_K).reshape(x.shape)
        assert weighted_sse(x, _roundtrip(x, im), im) <= weighted_sse(x, theirs, im)


@pytest.mark.slow
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_error_not_above_libggml_real_weights(llama_cpp_ok, smollm2_weights, with_imatrix):
    from oracles.llamacpp import ggml_quantize

    x = noised_rows(smollm2_weights, "blk.2.ffn_down.weight", 32, seed=0)  # rows of 1536
    im = imatrix_for(x.shape[1], seed=9) if with_imatrix else None
    theirs = gguf_dequantize(ggml_quantize(x, "Q6_K", im), T.Q6_K).reshape(x.shape)
    assert weighted_sse(x, _roundtrip(x, im), im) <= weighted_sse(x, theirs, im)
