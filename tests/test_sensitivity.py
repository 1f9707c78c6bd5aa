"""Measured allocation end to end on tiny generated models: `--quant MIX` (rules sensitivity, the
default), `--target-bpw`, `--max-size`, `show --tensors`; llama.cpp loads and runs every
allocated file; bad budgets name the smallest reachable size."""

from __future__ import annotations

import json
import os

import pytest
from gguf import GGMLQuantizationType as T

from ggtool.cli import main
from ggtool.convert import convert
from tests.tinymodels import make_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_ck(tmp_path_factory):
    """Rows of 256 (every type) and 352 (32-block types only), 4 layers."""
    pytest.importorskip("llama_cpp")
    d = tmp_path_factory.mktemp("sens")
    return make_checkpoint(d / "ck", "llama", hidden=256, layers=4, heads=4, kv_heads=2, intermediate=352,
                           weight_scale=2.0)


@pytest.fixture(scope="module")
def tiny256(tiny_ck):
    return convert(tiny_ck, tiny_ck.parent / "f16.gguf", "F16", progress=False).path


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GGTOOL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def loads_and_runs(path):
    from ggtool.llamacpp.runtime import Model

    m = Model(path, n_ctx=64)
    try:
        lg = m.logits(m.tokenize("Once upon a time there was"))
        assert lg.shape[0] > 0 and (lg == lg).all()
    finally:
        m.close()


def file_type(path):
    from ggtool.formats.gguf_reader import GGUFFile

    f = GGUFFile(path)
    try:
        return f.get("general.file_type"), {t.name: t.ggml_type for t in f.tensors}
    finally:
        f.close()


def test_quant_default_is_measured_allocation(tiny256, tmp_path, capsys, llama_cpp_ok):
    mixfile = convert(tiny256, tmp_path / "mix.gguf", "Q4_K_M", rules="llama.cpp", progress=False).path
    out = tmp_path / "ours.gguf"
    code, so, err = run(capsys, "quantize", str(tiny256), str(out), "--quant", "Q4_K_M", "--json", "-q")
    assert code == 0, err
    assert "data-free" in err and "measuring" in err
    res = json.loads(so)
    a = res["allocation"]
    assert a["allocated_bytes"] <= a["budget_bytes"]
    assert "vs llama.cpp's Q4_K_M mix" in a["summary"] and "predicted KLD" in a["summary"]
    assert out.stat().st_size <= mixfile.stat().st_size
    assert out.stat().st_size >= 0.97 * mixfile.stat().st_size
    ft, types = file_type(out)
    assert ft == 15  # general.file_type stays the mix's
    for name, t in types.items():  # every type legal for its row length
        assert t in (T.F32, T.F16) or name.endswith("weight")
    loads_and_runs(out)
    # a second budget comes from the cache: nothing is measured again
    code, so, err = run(capsys, "quantize", str(tiny256), str(tmp_path / "q3.gguf"), "--quant", "Q3_K_M")
    assert code == 0 and "measuring" not in err and "allocation:" in err
    loads_and_runs(tmp_path / "q3.gguf")
    # --rules llama.cpp is today's heuristic, type for type
    code, so, err = run(capsys, "quantize", str(tiny256), str(tmp_path / "lc.gguf"), "--quant", "Q4_K_M",
                        "--rules", "llama.cpp")
    assert code == 0 and file_type(tmp_path / "lc.gguf")[1] == file_type(mixfile)[1]


@pytest.mark.parametrize("bpw", [4.6, 5.5, 7.0])
def test_target_bpw_and_max_size(tiny256, tmp_path, capsys, bpw, llama_cpp_ok):
    out = tmp_path / "b.gguf"
    code, so, err = run(capsys, "quantize", str(tiny256), str(out), "--quant", "Q4_K_M", "--target-bpw",
                        str(bpw), "--json", "-q")
    assert code == 0, err
    from ggtool.plan.allocate import show_tensors
    assert show_tensors(out)["bits_per_weight"] <= bpw  # tensor data; the file adds its metadata
    loads_and_runs(out)
    limit = out.stat().st_size
    out2 = tmp_path / "m.gguf"
    code, so, err = run(capsys, "quantize", str(tiny256), str(out2), "--quant", "Q4_K_M", "--max-size",
                        str(limit), "-q")
    assert code == 0, err
    assert out2.stat().st_size <= limit
    loads_and_runs(out2)


def test_budget_below_smallest_file(tiny256, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    code, so, err = run(capsys, "quantize", str(tiny256), str(out / "x.gguf"), "--quant", "Q4_K_M",
                        "--max-size", "10KB", "-q")
    assert code == 1 and so == ""
    assert "below the smallest file this model can have" in err and "Hint: give --max-size" in err
    assert os.listdir(out) == []
    code, so, err = run(capsys, "quantize", str(tiny256), str(out / "x.gguf"), "--quant", "Q4_K_M",
                        "--target-bpw", "1.0", "-q")
    assert code == 1 and "smallest reachable" in err and "bits per weight" in err
    assert os.listdir(out) == []


def test_show_tensors(tiny256, tmp_path, capsys):
    out = tmp_path / "s.gguf"
    assert run(capsys, "quantize", str(tiny256), str(out), "--quant", "Q4_K_M", "-q")[0] == 0
    code, so, err = run(capsys, "show", str(out), "--tensors", "--json")
    assert code == 0
    info = json.loads(so)
    shares = [r["kld_share_pct"] for r in info["tensors"] if r.get("kld_share_pct") is not None]
    assert len(shares) > 10 and abs(sum(shares) - 100) < 0.5
    assert info["sensitivity"]["imatrix_weighted"] is False
    code, so, err = run(capsys, "show", str(out), "--tensors")
    assert code == 0 and "blk.0.attn_q.weight" in so and "%" in so and "predicted KLD" in err
    # a file without a sensitivity cache: types and bits only, and it says so
    code, so, err = run(capsys, "show", str(tiny256), "--tensors")
    assert code == 0 and "F16" in so and "no sensitivity cache" in err


def test_allocator_on_the_measured_model(tiny256):
    """The invariants on a real measured sensitivity: over 40 budgets from the smallest file to
    all-F16, never over, damage non-increasing, deterministic, types legal for the rows."""
    import numpy as np

    from ggtool.plan import sensitivity
    from ggtool.plan.allocate import allocate, smallest, total
    from ggtool.plan.llamacpp import block_size

    sens = sensitivity.get(tiny256, None, progress=False)
    opts = {n: sens.options(n) for n in sens.tensors}
    lo, hi = smallest(opts), sum(max(o[1] for o in v) for v in opts.values())
    prev = None
    for b in np.linspace(lo, hi, 40).astype(int):
        plan = allocate(opts, int(b))
        assert plan == allocate(opts, int(b))
        used, dmg = total(opts, plan)
        assert used <= b
        for n, t in plan.items():
            assert sens.tensors[n].shape[-1] % block_size(t) == 0
        assert prev is None or dmg <= prev * (1 + 1e-12)
        prev = dmg
    # the measured gains predict the measured groups
    fit = [m for m in sens.measurements if m["kld"] > 0]
    assert len(fit) >= 8 and all(m["predicted"] > 0 for m in fit)


def test_convert_from_a_checkpoint_folder(tiny_ck, tmp_path, capsys, llama_cpp_ok):
    out = tmp_path / "c.gguf"
    code, so, err = run(capsys, "convert", str(tiny_ck), "-o", str(out), "--quant", "Q3_K_M", "-q")
    assert code == 0, err
    assert "allocation:" in err and "vs llama.cpp's Q3_K_M mix" in err
    assert file_type(out)[0] == 12
    loads_and_runs(out)


def test_never_larger_than_llama_quantize_with_the_same_imatrix(tiny256, tmp_path, llama_cpp_ok):
    """Our file carries a few more key-values (the sensitivity key, quantize.imatrix.*): the
    budget leaves room for them, so the file is never the larger one."""
    from ggtool import imatrix as imx
    from ggtool.formats.imatrix import write_gguf
    from ggtool.llamacpp.quantize import llama_quantize_file

    im = imx.collect(tiny256, n_ctx=128, chunks=2, progress=False, threads=1)
    imf = write_gguf(im, tmp_path / "im.gguf")
    for mix, ftype in (("Q4_K_M", 15), ("Q2_K", 10), ("Q6_K", 18)):
        ref = tmp_path / f"ref-{mix}.gguf"
        llama_quantize_file(tiny256, ref, ftype, imatrix={n: im.weights(n) for n in im.entries})
        ours = convert(tiny256, tmp_path / f"ours-{mix}.gguf", mix, rules="sensitivity", imatrix=str(imf),
                       progress=False).path
        assert ref.stat().st_size * 0.99 <= ours.stat().st_size <= ref.stat().st_size, mix
        loads_and_runs(ours)
