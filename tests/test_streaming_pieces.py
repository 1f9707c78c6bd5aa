"""The converter reads, quantizes and writes big tensors a few rows at a time (sources.base.
PIECE_VALUES): the file it writes is byte for byte the one a whole-tensor pass writes, for
every source kind and family twist, and memory follows the piece, not the largest tensor."""

from __future__ import annotations

import numpy as np
import pytest

from ggtool import buffers, quants
from ggtool.convert import convert
from ggtool.errors import BadWeights
from ggtool.sources import base
from tests.tinymodels import make_checkpoint, make_family_checkpoint, rewrite_tensors

SMALL = 700  # values per piece: 10 rows of a 64-wide tensor


def _both(tmp_path, monkeypatch, src, mix, rules="llama.cpp", **kw) -> tuple[bytes, bytes]:
    """The output with whole tensors, then with pieces of SMALL values."""
    whole = convert(src, tmp_path / "whole.gguf", mix, rules=rules, progress=False, **kw).path.read_bytes()
    monkeypatch.setattr(base, "PIECE_VALUES", SMALL)
    pieces = convert(src, tmp_path / "pieces.gguf", mix, rules=rules, progress=False, **kw).path.read_bytes()
    monkeypatch.undo()
    return whole, pieces


@pytest.mark.parametrize("mix,rules", [("F16", "plain"), ("Q8_0", "plain"), ("Q4_K_M", "llama.cpp")])
def test_hf_pieces_write_the_same_bytes(tmp_path, monkeypatch, mix, rules):
    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=256, heads=4, kv_heads=2, intermediate=512,
                         dtype="bfloat16", shards=2, seed=4, tokenizer="smollm")
    whole, pieces = _both(tmp_path, monkeypatch, ck, mix, rules)
    assert whole == pieces


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F32"])
def test_gguf_pieces_write_the_same_bytes(tmp_path, monkeypatch, dtype):
    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=256, heads=4, kv_heads=2, intermediate=512, seed=6)
    f = convert(ck, tmp_path / f"m.{dtype}.gguf", dtype, progress=False).path
    whole, pieces = _both(tmp_path, monkeypatch, f, "Q6_K")
    assert whole == pieces


@pytest.mark.parametrize("arch", ["gemma2", "qwen3moe"])
def test_family_twists_in_pieces(tmp_path, monkeypatch, arch):
    """Gemma's norm +1 (a transform of values) and a MoE's experts, each cut in pieces."""
    ck = make_family_checkpoint(tmp_path / "ck", arch, hidden=64, layers=2, seed=2)
    whole, pieces = _both(tmp_path, monkeypatch, ck, "Q8_0", "plain")
    assert whole == pieces


def test_moe_experts_in_pieces_take_their_own_imatrix_rows(tmp_path, monkeypatch):
    """Each piece of an expert is quantized with that expert's importance weights: cut in
    pieces, the file is the whole-tensor pass's, byte for byte."""
    from ggtool.formats.imatrix import Entry, IMatrix
    from ggtool.sources import open_source

    ck = make_family_checkpoint(tmp_path / "ck", "qwen3moe", hidden=64, layers=2, seed=5)
    src = open_source(ck)
    rng = np.random.default_rng(0)
    im = IMatrix(datasets=["t"], chunk_count=1, chunk_size=64)
    for name, shape in src.tensors:
        if name.startswith("blk.") and len(shape) >= 2:
            n_mat = shape[0] if len(shape) == 3 else 1
            im.entries[name] = Entry(rng.lognormal(0, 1, (n_mat, shape[-1])).astype(np.float32),
                                     np.ones(n_mat))
    src.close()
    whole, pieces = _both(tmp_path, monkeypatch, ck, "Q4_K_M", "llama.cpp", imatrix=im)
    assert whole == pieces


def test_nan_in_a_late_piece_fails_and_leaves_nothing(tmp_path, monkeypatch):
    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=64, heads=4, kv_heads=2, seed=1)
    from safetensors.numpy import load_file

    tensors = load_file(str(ck / "model.safetensors"))
    tensors["model.embed_tokens.weight"][-1, 3] = np.nan  # in the last piece
    rewrite_tensors(ck, tensors)
    monkeypatch.setattr(base, "PIECE_VALUES", SMALL)
    with pytest.raises(BadWeights, match="NaN/Inf"):
        convert(ck, tmp_path / "out.gguf", "Q8_0", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_memory_follows_the_piece_not_the_largest_tensor(tmp_path, monkeypatch):
    """A big embedding (20000 x 64) beside small blocks: with pieces of 4096 values, what the
    streaming stage allocates (numpy arrays included) stays far below one float32 copy of the
    embedding; whole tensors take more than two."""
    import tracemalloc

    from ggtool.formats.gguf_writer import GGUFOutput

    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=64, heads=4, kv_heads=2, vocab=20000, seed=3)
    embed = 20000 * 64 * 4
    begin = GGUFOutput.begin
    start = {}

    def begin_then_reset(self):  # measure the stream, not the metadata (vocabulary) built before
        begin(self)
        start["current"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

    monkeypatch.setattr(GGUFOutput, "begin", begin_then_reset)
    quants.quantize(np.zeros((1, 256), np.float32), "Q8_0", threads=2)  # thread pool before tracing
    peaks = {}
    for values in (1 << 24, 4096):
        monkeypatch.setattr(base, "PIECE_VALUES", values)
        tracemalloc.start()
        convert(ck, tmp_path / "m.gguf", "F32", progress=False, threads=2)
        peaks[values] = tracemalloc.get_traced_memory()[1] - start["current"]
        tracemalloc.stop()
    assert peaks[4096] < embed / 4 < 2 * embed < peaks[1 << 24], (peaks, embed)


def test_pool_reuses_and_bounds():
    pool = buffers.BufferPool(keep=2)
    a = pool.take((10, 10))
    base_a = a.base
    pool.give(a.reshape(-1))            # a view of a pool array goes back too
    b = pool.take((5, 5))               # the smallest free buffer that fits: a's
    assert b.base is base_a
    pool.give(np.zeros(3))              # not the pool's: ignored
    for shape in [(1,), (2,), (3,)]:
        pool.give(pool.take(shape))
    pool.give(b)
    assert len(pool._free) == 2 and any(f is base_a for f in pool._free)  # the big one is kept
