"""Every command through click's CliRunner: exit code, stdout/stderr split, the hint.

Data (tables, --json) goes to stdout, talk (progress, summaries, errors) to stderr.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ggtool.cli import EXIT_BUG, cli, main
from tests import tinymodels as tm


def invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def assert_error(res, match: str, hint: str | None = None):
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr)
    assert res.stdout == ""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("Error: ") and match.lower() in lines[0].lower(), res.stderr
    hints = [ln for ln in lines if ln.startswith("Hint: ")]
    assert len(hints) == 1, res.stderr
    if hint:
        assert hint.lower() in hints[0].lower(), res.stderr
    assert "Traceback" not in res.stderr


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    return tm.make_checkpoint(tmp_path_factory.mktemp("cli") / "ck", "llama", hidden=64, heads=4, kv_heads=2)


@pytest.fixture(scope="module")
def f16(ck, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli16") / "m.F16.gguf"
    res = invoke("convert", str(ck), "-o", str(out), "-q")
    assert res.exit_code == 0, res.stderr
    return out


def test_help_lists_every_command_and_the_environment():
    res = invoke("--help")
    assert res.exit_code == 0 and res.stderr == ""
    for cmd in ("convert", "quantize", "chat", "run", "serve", "doctor", "demo"):
        assert cmd in res.stdout
    assert "GGTOOL_HOME" in res.stdout and "NO_COLOR" in res.stdout


def test_convert_help_names_every_mix():
    res = invoke("convert", "--help")
    for mix in ("Q2_K", "Q4_K_M", "IQ4_NL", "IQ4_XS", "Q8_0", "BF16"):
        assert mix in res.stdout


def test_convert_summary_on_stderr_json_on_stdout(ck, tmp_path):
    res = invoke("convert", str(ck), "-o", str(tmp_path / "a.gguf"), "--type", "Q8_0", "-q")
    assert res.exit_code == 0 and res.stdout == ""
    assert "wrote" in res.stderr and "bits/weight" in res.stderr
    res = invoke("convert", str(ck), "-o", str(tmp_path / "b.gguf"), "--quant", "Q4_K_M", "--rules", "llama.cpp",
                 "--json", "-q")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert data["mix"] == "Q4_K_M" and data["rules"] == "llama.cpp" and data["tensors"] > 0
    assert data["bytes"] == (tmp_path / "b.gguf").stat().st_size


def test_convert_rejects_type_and_quant_together(ck, tmp_path):
    res = invoke("convert", str(ck), "-o", str(tmp_path / "a.gguf"), "--type", "F16", "--quant", "Q4_K_M")
    assert res.exit_code == 2 and "not both" in res.stderr and res.stdout == ""


def test_convert_missing_source(tmp_path):
    assert_error(invoke("convert", str(tmp_path / "nope"), "-o", str(tmp_path / "a.gguf")),
                 "does not exist", "checkpoint folder")


def test_quantize_ok_and_its_errors(ck, f16, tmp_path):
    res = invoke("quantize", str(f16), str(tmp_path / "q.gguf"), "--quant", "q4_k_m", "--rules", "llama.cpp", "-q")
    assert res.exit_code == 0 and res.stdout == "" and "wrote" in res.stderr
    assert_error(invoke("quantize", str(tmp_path / "q.gguf"), str(tmp_path / "r.gguf"), "--quant", "Q8_0"),
                 "already quantized", "--allow-requantize")
    assert_error(invoke("quantize", str(ck), str(tmp_path / "r.gguf"), "--quant", "Q8_0"),
                 "is not a GGUF file", "ggtool convert")
    assert_error(invoke("quantize", str(f16), str(tmp_path / "r.gguf"), "--quant", "Q9_K"),
                 "unknown quantization mix", "Q4_K_M")


def test_unknown_tensor_type_names_only_writable_types(f16, tmp_path):
    res = invoke("quantize", str(f16), str(tmp_path / "r.gguf"), "--quant", "Q4_K_M",
                 "--tensor-type", "attn_v=iq2_xxs")
    assert_error(res, "IQ2_XXS is not one ggtool writes", "Q4_K")
    assert "GGMLQuantizationType" not in res.stderr and "IQ2_XXS" not in res.stderr.splitlines()[-1]
    assert_error(invoke("quantize", str(f16), str(tmp_path / "r.gguf"), "--quant", "Q4_K_M",
                        "--tensor-type", "attn_v=nonsense"), "unknown tensor type 'nonsense'", "IQ4_XS")


def test_run_errors_are_error_and_hint(tmp_path):
    assert_error(invoke("run", str(tmp_path / "missing.gguf"), "hi"), "no model file", ".gguf")
    res = invoke("run", str(tmp_path / "missing.gguf"), "hi", "-n", "-5")
    assert res.exit_code == 2 and "-5" in res.stderr  # a usage error: the range is checked first


def test_run_streams_to_stdout(f16, llama_cpp_ok):
    res = invoke("run", str(f16), "hello", "-n", "4", "--raw", "--threads", "1")
    assert res.exit_code == 0 and res.stdout.endswith("\n") and "context" in res.stderr
    res = invoke("run", str(f16), "hello", "-n", "4", "--threads", "1", "--json", "--temp", "0")
    assert res.exit_code == 0 and json.loads(res.stdout)["completion_tokens"] <= 4


def test_doctor_text_and_json():
    res = invoke("doctor")
    assert res.exit_code == 0 and "quant_types" in res.stdout
    data = json.loads(invoke("doctor", "--json").stdout)
    assert "Q4_K" in data["quant_types"] and isinstance(data["native_kernels"], list)


def test_demo_help_and_bad_type():
    assert invoke("demo", "--help").exit_code == 0
    res = invoke("demo", "--type", "Q3_K")
    assert res.exit_code == 2 and "Q3_K" in res.stderr


def test_no_color_and_color(ck, tmp_path, monkeypatch, capsys):
    """Colour only on a terminal and never with NO_COLOR."""
    from ggtool import cli as cli_mod

    monkeypatch.setattr(cli_mod, "_color_stderr", lambda: True)
    with pytest.raises(SystemExit) as e:
        main(["convert", str(tmp_path / "nope"), "-o", str(tmp_path / "a.gguf")])
    assert e.value.code == 1 and "\x1b[" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli_mod._color_stderr() is False


def test_an_unexpected_exception_is_reported_as_a_bug(ck, tmp_path, monkeypatch, capsys):
    import ggtool.convert

    def boom(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(ggtool.convert, "convert", boom)
    with pytest.raises(SystemExit) as e:
        main(["convert", str(ck), "-o", str(tmp_path / "a.gguf")])
    err = capsys.readouterr().err
    assert e.value.code == EXIT_BUG
    assert "Error: internal error (a bug in ggtool" in err and "GGTOOL_DEBUG=1" in err
    assert "Traceback" not in err
    monkeypatch.setenv("GGTOOL_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["convert", str(ck), "-o", str(tmp_path / "a.gguf")])


def test_read_only_file_system_is_named_as_such(ck, tmp_path, monkeypatch):
    from ggtool.formats import gguf_writer

    monkeypatch.setattr(gguf_writer, "_read_only", lambda folder: True)
    assert_error(invoke("convert", str(ck), "-o", str(tmp_path / "a.gguf")), "read-only file system", "-o")


def test_a_fallback_that_moves_the_size_is_said(ck, tmp_path):
    """Rows of 64 cannot take Q2_K/Q3_K (blocks of 256): llama.cpp's Q4_0 fallback makes the file
    far bigger than 'Q2_K' suggests, and the summary says so."""
    res = invoke("convert", str(ck), "-o", str(tmp_path / "a.gguf"), "--quant", "Q2_K", "--rules", "llama.cpp", "-q")
    assert res.exit_code == 0
    assert "note:" in res.stderr and "fell back" in res.stderr and "Q4_0" in res.stderr
    res = invoke("convert", str(ck), "-o", str(tmp_path / "b.gguf"), "--quant", "Q8_0", "-q")
    assert "fell back" not in res.stderr
