"""Q4_K and Q5_K: gguf-py decodes what we encode, C == numpy byte for byte, our first stage is
libggml's quantizer bit for bit, and the final result is never worse than libggml's, per
super-block and per tensor, with and without an imatrix."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from oracles.weights import edge_cases, imatrix, imatrix_for, noised_rows, weighted_sse

TYPES = ["Q4_K", "Q5_K"]
N = 512  # two super-blocks per row: exercises the per-position imatrix slices


def _cases():
    """width -> (rows, labels): every edge case stacked into one array per row width (rows are
    quantized independently, so one call covers them all; labels name each row's case)."""
    groups = {}
    cases = edge_cases(N)
    cases["gaussian_768"] = np.random.default_rng(7).standard_normal((13, 768)).astype(np.float32)
    for name, x in cases.items():  # 13 rows of 768 = 39 blocks: a short last group in C
        groups.setdefault(x.shape[1], []).append((name, x))
    out = {}
    for n, parts in groups.items():
        labels = [name for name, x in parts for _ in range(len(x))]
        out[n] = (np.concatenate([x for _, x in parts]), labels)
    return out


def _first_bad(a, b, labels):
    """Name of the first case whose rows differ (for assertion messages)."""
    a = np.asarray(a).reshape(len(labels), -1)
    b = np.asarray(b).reshape(len(labels), -1)
    return [labels[i] for i in np.nonzero((a != b).any(axis=1))[0][:3]]


def _imatrices(n):
    return {"none": None, "imatrix": imatrix("lognormal", n), "imatrix_zeros": imatrix("with_zeros", n)}


def _per_block_sse(x, xh, im):
    """(nblocks,) weighted squared error per 256-value super-block, float64."""
    d = (x.astype(np.float64) - xh.astype(np.float64)) ** 2
    if im is not None:
        d = d * im.astype(np.float64)[None, :]
    return d.reshape(-1, 256).sum(axis=1)


@pytest.fixture(scope="module")
def smollm2_rows(smollm2_weights):
    """Noised real weights: blk.3.ffn_down (rows of 1536) and blk.3.attn_q flattened to rows
    of 2304 (576 is not a multiple of 256). Noise keeps them off the Q4_1 grid they sit on."""
    return {"blk.3.ffn_down.weight": noised_rows(smollm2_weights, "blk.3.ffn_down.weight", None, 3),
            "blk.3.attn_q.weight": noised_rows(smollm2_weights, "blk.3.attn_q.weight", None, 4, n=2304)}


@pytest.mark.parametrize("qtype", TYPES)
def test_gguf_decodes_what_we_encode(backend, qtype):
    for n, (x, labels) in _cases().items():
        for name, im in _imatrices(n).items():
            q = quants.quantize(x, qtype, imatrix=im)
            assert q.shape == (x.shape[0], n // 256 * quants.get_type(qtype).type_size)
            ours = quants.dequantize(q, qtype, x.shape)
            theirs = gguf_dequantize(q, T[qtype]).reshape(x.shape)
            assert np.array_equal(ours, theirs), (name, _first_bad(ours, theirs, labels))
            blocks = q.reshape(-1, quants.get_type(qtype).type_size)
            d = blocks[:, 0:4].copy().view("<f2")
            assert np.isfinite(d).all(), name  # llama.cpp rejects rows with non-finite d/dmin


@pytest.mark.parametrize("qtype", TYPES)
def test_native_equals_numpy(monkeypatch, qtype):
    if qtype not in quants.NATIVE_KERNELS:
        pytest.skip(f"no native {qtype}")
    cases = _cases()
    x1536 = np.random.default_rng(11).standard_normal((9, 1536)).astype(np.float32)
    cases[1536] = (x1536, ["row_1536"] * 9)
    for n, (x, labels) in cases.items():
        for name, im in _imatrices(n).items():
            monkeypatch.delenv("GGTOOL_FORCE_NUMPY", raising=False)
            a = quants.quantize(x, qtype, imatrix=im, threads=1)
            monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
            b = quants.quantize(x, qtype, imatrix=im)
            assert a.tobytes() == b.tobytes(), (name, _first_bad(a, b, labels))


def test_zero_rows(backend):
    for qtype in TYPES:
        q = quants.quantize(np.zeros((0, 256), np.float32), qtype)
        assert q.shape[0] == 0


# ------------------------------------------------------------------ libggml as the yardstick

@pytest.mark.parametrize("qtype", TYPES)
def test_first_stage_is_libggml_bit_for_bit(llama_cpp_ok, monkeypatch, qtype):
    """With the polish switched off, the numpy reference writes exactly libggml's bytes."""
    from oracles.llamacpp import ggml_quantize

    cls = quants.get_type(qtype)
    monkeypatch.setattr(cls, "radii", ())
    monkeypatch.setenv("GGTOOL_FORCE_NUMPY", "1")
    for n, (x, labels) in _cases().items():
        for name, im in _imatrices(n).items():
            ours = quants.quantize(x, qtype, imatrix=im)
            theirs = ggml_quantize(x, qtype, im)
            assert ours.tobytes() == theirs.tobytes(), (name, _first_bad(ours, theirs, labels))


@pytest.mark.parametrize("qtype", TYPES)
def test_never_worse_than_libggml_per_block(llama_cpp_ok, backend, qtype):
    """Every super-block's weighted error is <= libggml's on the same block."""
    from oracles.llamacpp import ggml_quantize

    for n, (x, labels) in _cases().items():
        for name, im in _imatrices(n).items():
            ours = quants.dequantize(quants.quantize(x, qtype, imatrix=im), qtype, x.shape)
            ref = quants.dequantize(ggml_quantize(x, qtype, im), qtype, x.shape)
            eo, er = _per_block_sse(x, ours, im), _per_block_sse(x, ref, im)
            worse = np.nonzero(eo > er * (1 + 1e-12))[0]
            assert not len(worse), (name, [labels[i // (n // 256)] for i in worse[:3]])


@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("use_im", [False, True], ids=["plain", "imatrix"])
def test_better_than_libggml_on_real_and_random_weights(llama_cpp_ok, backend, smollm2_rows,
                                                        qtype, use_im):
    from oracles.llamacpp import ggml_quantize

    rows = 32 if backend == "numpy" else None  # the numpy reference is slow on whole tensors
    data = dict(smollm2_rows)
    data["gaussian"] = np.random.default_rng(5).standard_normal((256, 1024)).astype(np.float32)
    for name, x in data.items():
        x = x[:rows]
        im = imatrix_for(x.shape[1]) if use_im else None
        q_ours = quants.quantize(x, qtype, imatrix=im)
        ours = weighted_sse(x, quants.dequantize(q_ours, qtype, x.shape), im)
        ref = weighted_sse(x, quants.dequantize(ggml_quantize(x, qtype, im), qtype, x.shape), im)
        # the polish is worth a few percent on ordinary weights; never a loss
        assert ours < 0.99 * ref, (name, ours / ref)
