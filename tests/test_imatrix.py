"""`ggtool imatrix`: the statistic collected through llama.cpp's eval callback equals an
independent computation (the inputs of every matmul in the float64 numpy reference forward
pass, recorded by a hook that does not change what it computes)."""

from __future__ import annotations

import numpy as np
import pytest

from ggtool.cli import main
from ggtool.convert import convert
from ggtool.formats.imatrix import read
from tests.reference_forward import ReferenceModel
from tests.tinymodels import make_checkpoint

HF_TO_GGUF = {"wq": "attn_q", "wk": "attn_k", "wv": "attn_v", "wo": "attn_output",
              "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}


class Recorded(np.ndarray):
    """A weight that logs the left operand of every matmul it is the right operand of."""

    def __array_finalize__(self, obj):
        self.tag = getattr(obj, "tag", None)
        self.log = getattr(obj, "log", None)

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        plain = [np.asarray(a) if isinstance(a, Recorded) else a for a in inputs]
        if ufunc is np.matmul and len(inputs) == 2 and inputs[1] is self and self.tag:
            self.log.setdefault(self.tag, []).append(np.asarray(inputs[0], dtype=np.float64))
        return getattr(ufunc, method)(*plain, **kw)


def record(ref: ReferenceModel, tied: bool) -> dict:
    log: dict[str, list] = {}

    def wrap(a, tag):
        r = a.view(Recorded)
        r.tag, r.log = tag, log
        return r

    for i, L in enumerate(ref.layers):
        for k, g in HF_TO_GGUF.items():
            L[k] = wrap(L[k], f"blk.{i}.{g}.weight")
    ref.lm_head = wrap(ref.lm_head, "token_embd.weight" if tied else "output.weight")
    return log


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("imx")
    ck = make_checkpoint(d / "ck", "llama", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96)
    return ck, convert(ck, d / "f32.gguf", "F32", progress=False).path


def test_statistic_equals_reference_forward(tiny, llama_cpp_ok):
    from ggtool import imatrix

    ck, f32 = tiny
    n_ctx, n_chunks = 48, 3
    rng = np.random.default_rng(5)
    ref = ReferenceModel.from_dir(ck)
    tokens = rng.integers(0, ref.vocab, n_ctx * n_chunks + 7).tolist()
    im = imatrix.collect(f32, tokens=tokens, n_ctx=n_ctx, progress=False, threads=1)
    from ggtool.llamacpp.context import LlamaModel
    with LlamaModel(f32) as m:
        bos = m.bos if m.add_bos else None

    log = record(ref, tied=False)
    for chunk in imatrix.chunk_tokens(tokens, n_ctx, None, bos):
        ref.logits(chunk)
    assert im.chunk_count == n_chunks and im.chunk_size == n_ctx
    assert sorted(im.entries) == sorted(log)
    for name, xs in log.items():
        x = np.concatenate(xs)                      # (tokens, n_cols)
        want = (x * x).sum(axis=0)
        e = im.entries[name]
        assert e.counts.tolist() == [x.shape[0]]
        # float tolerance: llama.cpp computes in float32 and keeps K/V in an F16 cache, so only
        # the inputs upstream of the first attention are exact to float32 rounding
        tol = 1e-6 if name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight") else 2e-3
        np.testing.assert_allclose(e.sums[0], want, rtol=tol, err_msg=name)


def test_cli_writes_gguf_imatrix(tiny, tmp_path, capsys, llama_cpp_ok):
    _, f32 = tiny
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 60)
    main(["imatrix", str(f32), "-o", str(tmp_path / "im.gguf"), "--text", str(text), "--ctx", "64",
          "--chunks", "2", "--threads", "1"])
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "2 chunks" in cap.err
    im = read(tmp_path / "im.gguf")
    assert im.chunk_count == 2 and im.datasets == ["t.txt"]
    assert "blk.1.ffn_down.weight" in im.entries


def test_cli_text_too_short(tiny, tmp_path, capsys, llama_cpp_ok):
    _, f32 = tiny
    text = tmp_path / "t.txt"
    text.write_text("too short")
    with pytest.raises(SystemExit) as e:
        main(["imatrix", str(f32), "-o", str(tmp_path / "im.gguf"), "--text", str(text), "--ctx", "64"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "fewer than one chunk of 64" in err and "Hint:" in err
    assert not (tmp_path / "im.gguf").exists()


def test_default_calibration_text_is_shipped_and_not_alice():
    from ggtool.imatrix import default_text

    t = default_text()
    assert len(t) > 20_000
    assert "Alice" not in t and "rabbit-hole" not in t
    for sample in ("def ", "SELECT", "Français", "Deutsch", "中文", "\"Good morning"):
        assert sample in t
