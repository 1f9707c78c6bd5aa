"""Bad input: a clear one-line error with a hint, exit code 1, no traceback, nothing left behind."""

from __future__ import annotations

import errno
import os

import pytest

from ggtool.cli import main
from tests import tinymodels as tm


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def assert_clean_failure(code, out, err, outdir, match):
    assert code == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    hints = [ln for ln in lines if ln.startswith("Hint: ")]
    assert len(errors) == 1 and len(hints) == 1, err
    assert match.lower() in errors[0].lower(), err
    assert out == ""
    assert sorted(os.listdir(outdir)) == [], os.listdir(outdir)  # no partial output


@pytest.fixture
def ck(tmp_path):
    return tm.make_checkpoint(tmp_path / "ck", "llama", hidden=64, heads=4, kv_heads=2)


@pytest.fixture
def outdir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_no_config(capsys, ck, outdir):
    (ck / "config.json").unlink()
    assert_clean_failure(*run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf")), outdir, "no config.json")


def test_unknown_architecture_lists_supported(capsys, ck, outdir):
    import json
    cfg = json.loads((ck / "config.json").read_text())
    cfg["architectures"] = ["GPTBigCodeForCausalLM"]
    (ck / "config.json").write_text(json.dumps(cfg))
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"))
    assert_clean_failure(code, out, err, outdir, "unsupported architecture 'GPTBigCodeForCausalLM'")
    assert "LlamaForCausalLM" in err and "Qwen3ForCausalLM" in err


def test_corrupt_header(capsys, ck, outdir):
    tm.corrupt_header_json(ck)
    assert_clean_failure(*run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf")), outdir, "not valid JSON")


def test_truncated_safetensors(capsys, ck, outdir):
    tm.corrupt_truncate(ck)
    assert_clean_failure(*run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf")), outdir, "truncated")


def test_shape_disagrees_with_config(capsys, ck, outdir):
    name, _ = tm.corrupt_shape(ck)
    assert_clean_failure(*run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf")), outdir,
                         "config.json implies")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nonfinite_weights_name_the_tensor(capsys, ck, outdir, value):
    tm.corrupt_nonfinite(ck, "model.layers.0.mlp.up_proj.weight", value=float(value))
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"), "--type", "Q8_0")
    assert_clean_failure(code, out, err, outdir, "blk.0.ffn_up.weight")
    assert "NaN/Inf" in err


def test_pickle_only_is_refused_never_unpickled(capsys, ck, outdir):
    tm.corrupt_pickle_only(ck)
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"))
    assert_clean_failure(code, out, err, outdir, "never unpickles")


def test_unwritable_output(capsys, ck, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permissions: use a read-only path instead
            target = "/proc/ggtool-test.gguf"
        else:
            target = str(ro / "m.gguf")
        code, out, err = run_cli(capsys, "convert", str(ck), "-o", target)
    finally:
        ro.chmod(0o700)
    assert code == 1 and "Traceback" not in err and err.startswith("Error: ")
    assert "Hint: " in err
    assert os.listdir(ro) == []


def test_missing_output_folder(capsys, ck, tmp_path):
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(tmp_path / "nope" / "m.gguf"))
    assert code == 1 and "does not exist" in err and "Hint: " in err


def test_full_disk_before_writing(capsys, ck, outdir, monkeypatch):
    import shutil
    from collections import namedtuple
    du = namedtuple("du", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: du(10**9, 10**9 - 1000, 1000))
    assert_clean_failure(*run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf")), outdir,
                         "not enough disk space")


def test_full_disk_mid_write(capsys, ck, outdir, monkeypatch):
    """ENOSPC on the third tensor: error with hint, the partial file is removed."""
    from ggtool.formats.gguf_writer import _Writer
    real = _Writer.write_tensor_data
    calls = {"n": 0}

    def failing(self, tensor, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tensor, *a, **k)

    monkeypatch.setattr(_Writer, "write_tensor_data", failing)
    assert_clean_failure(*run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf")), outdir,
                         "no space left")


def test_ctrl_c_mid_way_leaves_nothing(capsys, ck, outdir, monkeypatch):
    from ggtool import convert as conv
    real = conv.quants.quantize
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(conv.quants, "quantize", interrupted)
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"))
    assert code == 130 and "Traceback" not in err
    assert os.listdir(outdir) == []


def test_existing_output_survives_a_failed_run(capsys, ck, outdir):
    """A failed conversion never clobbers a good file already at the target."""
    target = outdir / "m.gguf"
    target.write_bytes(b"previous good file")
    tm.corrupt_nonfinite(ck, "model.layers.1.mlp.down_proj.weight", value=float("nan"))
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(target))
    assert code == 1
    assert target.read_bytes() == b"previous good file"
    assert os.listdir(outdir) == ["m.gguf"]


def test_not_a_gguf(capsys, tmp_path, outdir):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 20)
    code, out, err = run_cli(capsys, "convert", str(bad), "-o", str(outdir / "m.gguf"))
    assert code == 1 and "Traceback" not in err and "Error: " in err


# ---------------------------------------------------------------- quantization entry points

def test_unknown_mix_lists_the_valid_ones(capsys, ck, outdir):
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"), "--quant", "Q9_K")
    assert_clean_failure(code, out, err, outdir, "unknown quantization mix")
    assert "Q4_K_M" in err and "Q2_K" in err


def test_forced_type_that_does_not_fit_the_rows(capsys, ck, outdir):
    """hidden 64 is not a multiple of 256: a K type cannot be forced on those rows."""
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"), "--quant", "Q4_K_M",
                             "--output-tensor-type", "Q4_K")
    assert_clean_failure(code, out, err, outdir, "output.weight")


def test_bad_tensor_type_regex(capsys, ck, outdir):
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"), "--quant", "Q8_0",
                             "--tensor-type", "ffn_(=Q8_0")
    assert_clean_failure(code, out, err, outdir, "regex")


def test_quantize_refuses_quantized_input_without_flag(capsys, ck, tmp_path, outdir):
    from ggtool.convert import convert
    q8 = convert(ck, tmp_path / "q8.gguf", "Q8_0", progress=False).path
    code, out, err = run_cli(capsys, "quantize", str(q8), str(outdir / "m.gguf"), "--quant", "Q4_0")
    assert_clean_failure(code, out, err, outdir, "already quantized")


def test_quantize_a_folder_points_to_convert(capsys, ck, outdir):
    code, out, err = run_cli(capsys, "quantize", str(ck), str(outdir / "m.gguf"), "--quant", "Q4_0")
    assert_clean_failure(code, out, err, outdir, "not a GGUF")
    assert "ggtool convert" in err


def test_nan_in_gguf_input_names_the_tensor(capsys, ck, tmp_path, outdir):
    import struct
    from ggtool.convert import convert
    from ggtool.formats.gguf_reader import GGUFFile
    f32 = convert(ck, tmp_path / "f32.gguf", "F32", progress=False).path
    g = GGUFFile(f32)
    t = next(t for t in g.tensors if t.name == "blk.1.attn_output.weight")
    g.close()
    with open(f32, "r+b") as f:
        f.seek(t.offset + 4 * 7)
        f.write(struct.pack("<f", float("nan")))
    code, out, err = run_cli(capsys, "quantize", str(f32), str(outdir / "m.gguf"), "--quant", "Q4_0")
    assert_clean_failure(code, out, err, outdir, "blk.1.attn_output.weight")


def test_weights_beyond_f16_range_are_refused_for_f16(capsys, ck, outdir):
    tm.corrupt_nonfinite(ck, "model.layers.0.mlp.up_proj.weight", value=1e5)
    code, out, err = run_cli(capsys, "convert", str(ck), "-o", str(outdir / "m.gguf"), "--type", "F16")
    assert_clean_failure(code, out, err, outdir, "blk.0.ffn_up.weight")
    assert "BF16" in err
