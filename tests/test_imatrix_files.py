"""imatrix files: llama.cpp's GGUF format (read back through gguf-py) and the legacy .dat format
(laid out by hand here from its specification), and the errors for damaged or foreign files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ggtool.errors import CorruptFile, GgtoolError
from ggtool.formats.imatrix import Entry, IMatrix, IMatrixError, check_for_model, read, write_gguf


def sample(seed=0) -> IMatrix:
    rng = np.random.default_rng(seed)
    im = IMatrix(datasets=["calib.txt", "more.txt"], chunk_count=7, chunk_size=512)
    im.entries["blk.0.attn_q.weight"] = Entry(rng.random((1, 64), dtype=np.float32) * 100, np.array([3584.0]))
    im.entries["blk.0.ffn_down.weight"] = Entry(rng.random((1, 128), dtype=np.float32), np.array([3584.0]))
    # a MoE tensor: 4 experts, one never routed (count 0)
    im.entries["blk.1.ffn_up_exps.weight"] = Entry(rng.random((4, 64), dtype=np.float32),
                                                   np.array([10.0, 0.0, 7.0, 3567.0]))
    return im


def test_gguf_round_trip_through_gguf_py_and_ours(tmp_path):
    import gguf

    im = sample()
    p = write_gguf(im, tmp_path / "im.gguf")
    assert not list(tmp_path.glob("*.incomplete"))
    r = gguf.GGUFReader(str(p))
    assert r.fields["general.type"].contents() == "imatrix"
    assert "general.architecture" not in r.fields
    assert r.fields["imatrix.datasets"].contents() == ["calib.txt", "more.txt"]
    assert r.fields["imatrix.chunk_count"].contents() == 7
    assert r.fields["imatrix.chunk_size"].contents() == 512
    by = {t.name: t for t in r.tensors}
    assert sorted(by) == sorted(f"{n}{s}" for n in im.entries for s in (".in_sum2", ".counts"))
    names = [t.name.rsplit(".", 1)[0] for t in r.tensors[::2]]
    assert names == sorted(names)  # by matrix name (in_sum2 then counts), as llama-imatrix
    for name, e in im.entries.items():
        s, c = by[name + ".in_sum2"], by[name + ".counts"]
        assert s.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(s.shape) == [e.sums.shape[1], e.sums.shape[0]]  # ne = [n_cols, n_mat]
        assert list(c.shape) == [1, e.sums.shape[0]]
        np.testing.assert_array_equal(np.asarray(s.data).reshape(e.sums.shape), e.sums)
        np.testing.assert_array_equal(np.asarray(c.data).reshape(-1), e.counts)
    back = read(p)
    assert back.datasets == im.datasets and back.chunk_count == 7 and back.chunk_size == 512
    assert not back.legacy
    for name, e in im.entries.items():
        np.testing.assert_array_equal(back.entries[name].sums, e.sums)
        np.testing.assert_array_equal(back.entries[name].counts, e.counts)


def test_weights_as_llama_quantize_computes_them():
    im = sample()
    e = im.entries["blk.1.ffn_up_exps.weight"]
    w = im.weights("blk.1.ffn_up_exps.weight").reshape(4, 64)
    np.testing.assert_allclose(w[0], e.sums[0] / 10.0, rtol=1e-6)
    np.testing.assert_array_equal(w[1], np.ones(64, np.float32))  # a zero count gives 1
    np.testing.assert_allclose(w[3], e.sums[3] / 3567.0, rtol=1e-6)
    assert im.weights("nope") is None


def dat_bytes(entries, trailer=True, chunk_count=12, dataset="wiki.train.raw") -> bytes:
    """The legacy format, from its specification: i32 n_entries, then per entry i32 name length,
    the name, i32 ncall, i32 nval, nval f32; then optionally i32 chunk count, i32 length, name."""
    out = struct.pack("<i", len(entries))
    for name, ncall, vals in entries:
        b = name.encode()
        out += struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, len(vals))
        out += struct.pack(f"<{len(vals)}f", *vals)
    if trailer:
        d = dataset.encode()
        out += struct.pack("<ii", chunk_count, len(d)) + d
    return out


def test_legacy_dat_by_hand(tmp_path):
    vals = [float(i) * 0.5 for i in range(1, 33)]
    p = tmp_path / "im.dat"
    p.write_bytes(dat_bytes([("blk.0.attn_k.weight", 4, vals), ("blk.0.attn_v.weight", 0, [2.0] * 32)]))
    im = read(p)
    assert im.legacy and im.chunk_count == 12 and im.datasets == ["wiki.train.raw"]
    np.testing.assert_allclose(im.weights("blk.0.attn_k.weight"), np.array(vals) / 4, rtol=1e-7)
    # ncall 0: llama-quantize takes the stored values as they are
    np.testing.assert_array_equal(im.weights("blk.0.attn_v.weight"), np.full(32, 2.0, np.float32))
    # without the optional trailer
    p.write_bytes(dat_bytes([("blk.0.attn_k.weight", 4, vals)], trailer=False))
    im = read(p)
    assert im.chunk_count == 0 and im.datasets == []
    # and a .dat converted to GGUF keeps the weights
    back = read(write_gguf(im, tmp_path / "im.gguf"))
    np.testing.assert_allclose(back.weights("blk.0.attn_k.weight"), np.array(vals) / 4, rtol=1e-7)


@pytest.mark.parametrize("cut", [3, 10, 40, 100])
def test_truncated_dat(tmp_path, cut):
    raw = dat_bytes([("blk.0.attn_k.weight", 4, [1.0] * 32)], trailer=False)
    p = tmp_path / "im.dat"
    p.write_bytes(raw[:cut])
    with pytest.raises(CorruptFile, match="truncated|entry count|name length"):
        read(p)


def test_truncated_gguf(tmp_path):
    p = write_gguf(sample(), tmp_path / "im.gguf")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CorruptFile):
        read(p)


def test_not_an_imatrix(tmp_path):
    p = tmp_path / "x.dat"
    p.write_bytes(b"hello world, this is text")
    with pytest.raises(CorruptFile):
        read(p)
    with pytest.raises(GgtoolError, match="cannot read"):
        read(tmp_path / "missing.gguf")


def test_gguf_with_f16_sums_is_refused(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "llama")
    w.add_tensor("blk.0.attn_q.weight.in_sum2", np.ones((1, 64), np.float16))
    w.add_tensor("blk.0.attn_q.weight.counts", np.ones((1, 1), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CorruptFile, match="F16, not F32"):
        read(tmp_path / "bad.gguf")


def test_another_models_imatrix():
    im = sample()
    ok = [("token_embd.weight", (100, 64)), ("blk.0.attn_q.weight", (64, 64)),
          ("blk.0.ffn_down.weight", (64, 128)), ("blk.1.ffn_up_exps.weight", (4, 32, 64)),
          ("blk.0.attn_norm.weight", (64,))]
    check_for_model(im, ok)  # token_embd / norms need no entry
    wrong = [("blk.0.attn_q.weight", (64, 96))] + ok[2:]
    with pytest.raises(IMatrixError, match="wrong width.*blk.0.attn_q.weight.*64 values.*needs 96"):
        check_for_model(im, wrong)
    missing = ok + [("blk.0.attn_k.weight", (16, 64))]
    with pytest.raises(IMatrixError, match="no data for 1 .*blk.0.attn_k.weight") as e:
        check_for_model(im, missing)
    assert "ggtool imatrix" in e.value.hint
