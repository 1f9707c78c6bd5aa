"""`--imatrix` on convert/quantize: llama-quantize's weights (sums / counts, by tensor name),
its imatrix_available rules, and clear errors for an imatrix that is not this model's."""

from __future__ import annotations

import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from ggtool.cli import main
from ggtool.convert import convert
from ggtool.formats.gguf_reader import tensor_types
from ggtool.formats.imatrix import write_gguf
from tests.tinymodels import make_checkpoint


@pytest.fixture(scope="module")
def model8(tmp_path_factory, ):
    """8 layers (so llama.cpp's n_layer/8 rules touch layer 0), rows of 64 and 192."""
    pytest.importorskip("llama_cpp")
    from ggtool import imatrix

    d = tmp_path_factory.mktemp("qim")
    ck = make_checkpoint(d / "ck", "llama", hidden=64, layers=8, heads=4, kv_heads=2, intermediate=192)
    f32 = convert(ck, d / "f32.gguf", "F32", progress=False).path
    im = imatrix.collect(f32, n_ctx=64, chunks=4, progress=False, threads=1)
    return ck, f32, write_gguf(im, d / "im.gguf")


def gguf_py_weights(path) -> dict:
    """The weights llama-quantize computes, from the file read by gguf-py: sums / counts."""
    import gguf

    r = gguf.GGUFReader(str(path))
    t = {x.name: np.asarray(x.data, dtype=np.float64) for x in r.tensors}
    out = {}
    for name in t:
        if name.endswith(".in_sum2"):
            base = name[: -len(".in_sum2")]
            out[base] = (t[name].reshape(-1) / t[base + ".counts"].reshape(-1)[0]).astype(np.float32)
    return out


def test_rules_and_weights_as_llama_quantize(model8, tmp_path, llama_cpp_ok):
    from ggtool import quants
    from ggtool.llamacpp.quantize import llama_quantize_file
    from ggtool.llamacpp.runtime import Model
    from ggtool.sources import open_source

    _, f32, imf = model8
    w = gguf_py_weights(imf)
    ours = convert(f32, tmp_path / "ours.gguf", "Q4_0", rules="llama.cpp", imatrix=str(imf), progress=False).path
    ref = tmp_path / "ref.gguf"
    llama_quantize_file(f32, ref, 2, imatrix=w)
    assert tensor_types(ours) == tensor_types(ref)
    assert tensor_types(ours)["blk.0.ffn_down.weight"] == T.Q4_1  # imatrix_available: Q4_0 -> Q4_1 on ffn_down
    plain = convert(f32, tmp_path / "plain.gguf", "Q4_0", rules="llama.cpp", progress=False).path
    assert tensor_types(plain)["blk.0.ffn_down.weight"] == T.Q4_0
    # each tensor quantized with exactly llama-quantize's weights for its name
    src = open_source(f32)
    from ggtool.formats.gguf_reader import GGUFFile
    g = GGUFFile(ours)
    try:
        for name in ("blk.3.attn_q.weight", "blk.0.ffn_down.weight", "blk.7.ffn_up.weight"):
            t = next(t for t in g.tensors if t.name == name)
            want = quants.quantize(src.load(name), t.ggml_type, imatrix=w[name])
            assert bytes(g.raw(t)) == want.tobytes(), name
            assert bytes(g.raw(t)) != quants.quantize(src.load(name), t.ggml_type).tobytes()
    finally:
        g.close()
        src.close()
    m = Model(ours, n_ctx=64)
    assert m.logits(m.tokenize("hello world")).shape[0] > 0
    m.close()


@pytest.fixture
def outdir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def clean_failure(code, out, err, outdir, match):
    assert code == 1 and "Traceback" not in err and out == ""
    assert match.lower() in err.lower(), err
    assert "Hint: " in err
    assert os.listdir(outdir) == []


def test_imatrix_of_another_model(model8, tmp_path, outdir, capsys, llama_cpp_ok):
    from ggtool import imatrix

    _, f32, _ = model8
    other = make_checkpoint(tmp_path / "other", "llama", hidden=128, layers=2, heads=4, kv_heads=2)
    of32 = convert(other, tmp_path / "o.gguf", "F32", progress=False).path
    oim = write_gguf(imatrix.collect(of32, n_ctx=64, chunks=2, progress=False, threads=1), tmp_path / "o-im.gguf")
    code, out, err = run_cli(capsys, "quantize", str(f32), str(outdir / "m.gguf"), "--quant", "Q4_0",
                             "--rules", "llama.cpp", "--imatrix", str(oim))
    clean_failure(code, out, err, outdir, "does not fit this model")
    assert "ggtool imatrix" in err


def test_truncated_imatrix(model8, tmp_path, outdir, capsys):
    _, f32, imf = model8
    bad = tmp_path / "trunc.gguf"
    bad.write_bytes(imf.read_bytes()[:-200])
    code, out, err = run_cli(capsys, "quantize", str(f32), str(outdir / "m.gguf"), "--quant", "Q4_0",
                             "--rules", "llama.cpp", "--imatrix", str(bad))
    clean_failure(code, out, err, outdir, "trunc")


def test_moe_experts_per_expert(tmp_path, llama_cpp_ok):
    """A Mixtral-style MoE: the collector counts MUL_MAT_ID rows per routed expert (every
    token reaches experts_used experts in every layer), writes (n_expert, n) sums, and the
    quantizer gives each expert its own row of weights, as llama_model_quantize does."""
    from ggtool import imatrix, quants
    from ggtool.formats.gguf_reader import GGUFFile
    from ggtool.llamacpp.quantize import llama_quantize_file
    from ggtool.llamacpp.runtime import Model
    from ggtool.sources import open_source
    from tests import tinymodels as tm

    ck = tm.make_family_checkpoint(tmp_path / "ck", "mixtral", layers=2, experts=4, experts_used=2)
    f32 = convert(ck, tmp_path / "f32.gguf", "F32", progress=False).path
    im = imatrix.collect(f32, n_ctx=64, chunks=2, progress=False, threads=1)
    e = im.entries["blk.1.ffn_up_exps.weight"]
    assert e.sums.shape == (4, 64) and e.counts.sum() == 2 * 64 * 2  # tokens x experts_used
    assert (e.counts > 0).sum() >= 2
    dense = im.entries["blk.1.attn_q.weight"]
    assert dense.counts.tolist() == [128]
    imf = write_gguf(im, tmp_path / "im.gguf")
    ours = convert(f32, tmp_path / "ours.gguf", "Q4_0", rules="llama.cpp", imatrix=str(imf), progress=False).path
    ref = tmp_path / "ref.gguf"
    llama_quantize_file(f32, ref, 2, imatrix={n: im.weights(n) for n in im.entries})
    assert tensor_types(ours) == tensor_types(ref)
    src, g = open_source(f32), GGUFFile(ours)
    try:
        t = next(t for t in g.tensors if t.name == "blk.1.ffn_up_exps.weight")
        x = src.load(t.name)
        w = im.weights(t.name).reshape(4, 64)
        want = np.stack([quants.quantize(x[k], t.ggml_type, imatrix=w[k]) for k in range(4)])
        assert bytes(g.raw(t)) == want.tobytes()
    finally:
        g.close()
        src.close()
    m = Model(ours, n_ctx=64)
    assert m.logits(m.tokenize("hello world")).shape[0] > 0
    m.close()
