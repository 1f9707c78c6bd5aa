"""`ggtool bench` and `ggtool compare`: output contracts, caching/resume, Ctrl-C, bad input, and
the real SmolLM2's perplexity against an independent numpy forward pass."""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np
import pytest

from ggtool.bench import ROW_FIELDS
from ggtool.cli import main
from tests import tinymodels as tm

pytestmark = pytest.mark.usefixtures("llama_cpp_ok")

FAST = ["--chunks", "2", "--ctx", "64", "--reps", "1", "--threads", "1", "-q",  # 1 thread: fast on a busy machine
        "--rules", "llama.cpp"]  # llama.cpp's rules: the same level has the same bytes on both sides


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def run_ok(capsys, *args):
    """Run a command that must succeed (click returns normally when it does)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code in (0, None), err
    return out, err


def assert_clean_failure(code, out, err, match):
    assert code == 1, err
    assert "Traceback" not in err and out == ""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert len(errors) == 1 and len([ln for ln in lines if ln.startswith("Hint: ")]) == 1, err
    assert match.lower() in errors[0].lower(), err
    return errors[0], [ln for ln in lines if ln.startswith("Hint: ")][0]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GGTOOL_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny llama (SentencePiece tokenizer: BOS added) as an HF folder and as an F16 GGUF."""
    from ggtool.convert import convert

    d = tmp_path_factory.mktemp("tiny_bench")
    ck = tm.make_checkpoint(d / "ck", "llama", hidden=256, heads=4, kv_heads=2, layers=2, tokenizer="spm")
    f16 = convert(ck, d / "tiny.F16.gguf", "F16", progress=False).path
    q8 = convert(ck, d / "tiny.Q8_0.gguf", "Q8_0", progress=False).path
    return {"ck": ck, "f16": f16, "q8": q8}


@pytest.fixture(scope="module")
def tiny_json(tiny, tmp_path_factory):
    """One bench with --against llama.cpp, its JSON and its cache (shared by the output tests)."""
    cache = tmp_path_factory.mktemp("bench_cache")
    old = os.environ.get("GGTOOL_CACHE")
    os.environ["GGTOOL_CACHE"] = str(cache)
    try:
        from ggtool import bench

        res = bench.bench(tiny["ck"], ["Q4_K_M", "Q8_0"], chunks=2, ctx=64, reps=1, against="llama.cpp", threads=1,
                          progress=False, rules="llama.cpp")
    finally:
        if old is None:
            os.environ.pop("GGTOOL_CACHE", None)
        else:
            os.environ["GGTOOL_CACHE"] = old
    return {"cache": cache, "result": res}


def test_json_has_exactly_the_issue_fields(tiny, tiny_json, capsys, monkeypatch):
    monkeypatch.setenv("GGTOOL_CACHE", str(tiny_json["cache"]))     # rows come from the cache
    out, err = run_ok(capsys, "bench", tiny["ck"], "--quants", "Q4_K_M,Q8_0", "--against", "llama.cpp",
                      "--json", *FAST)
    doc = json.loads(out)                                            # stdout is only the JSON
    assert set(doc) == {"base", "text", "tokens_scored", "sweet_spot", "rows"}
    assert doc["tokens_scored"] == 2 * 31 and doc["text"]["chunks"] == 2 and doc["text"]["ctx"] == 64
    assert [(r["quant"], r["quantizer"]) for r in doc["rows"]] == [
        ("Q4_K_M", "ggtool"), ("Q4_K_M", "llama.cpp"), ("Q8_0", "ggtool"), ("Q8_0", "llama.cpp")]
    for r in doc["rows"]:
        assert list(r) == ROW_FIELDS
        assert isinstance(r["bytes"], int) and r["bytes"] == os.path.getsize(r["file"])
        for k in ROW_FIELDS[4:]:
            assert isinstance(r[k], float) and math.isfinite(r[k]), (k, r[k])
        assert r["kld_mean"] > 0 and r["kld_median"] <= r["kld_p99"] and 0 <= r["same_top_pct"] <= 100
        assert r["pp_tps"] > 0 and r["tg_tps"] > 0 and r["pp_tps_std"] == 0.0   # one rep: no spread
    q4 = [r for r in doc["rows"] if r["quant"] == "Q4_K_M"]
    q8 = [r for r in doc["rows"] if r["quant"] == "Q8_0"]
    assert all(a["kld_mean"] > 5 * b["kld_mean"] for a in q4 for b in q8)
    assert q4[0]["bytes"] == q4[1]["bytes"] and q8[0]["bytes"] == q8[1]["bytes"]   # same mix, same size
    assert doc["base"]["type"] == "F16" and doc["base"]["ppl"] > 0
    s = doc["sweet_spot"]
    assert s["quant"] == "Q8_0" and s["quantizer"] == "ggtool" and s["max_kld"] == 0.05
    assert "[1/4]" in err and "[4/4]" in err


def test_csv_has_the_same_columns_and_values(tiny, tiny_json, capsys, monkeypatch):
    monkeypatch.setenv("GGTOOL_CACHE", str(tiny_json["cache"]))
    out, _ = run_ok(capsys, "bench", tiny["ck"], "--quants", "Q4_K_M,Q8_0", "--against", "llama.cpp", "--csv", *FAST)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0].split(",") == ROW_FIELDS
    want = [r.to_dict() for r in tiny_json["result"].rows]
    assert len(rows) == len(want) == 4
    for got, w in zip(rows, want):
        assert got["quant"] == w["quant"] and got["quantizer"] == w["quantizer"]
        assert float(got["kld_mean"]) == pytest.approx(w["kld_mean"], rel=1e-12)
        assert int(got["bytes"]) == w["bytes"]


def test_markdown_table_and_sweet_spot(tiny, tiny_json, capsys, monkeypatch):
    monkeypatch.setenv("GGTOOL_CACHE", str(tiny_json["cache"]))
    out, err = run_ok(capsys, "bench", tiny["ck"], "--quants", "Q4_K_M,Q8_0", "--against", "llama.cpp", *FAST)
    lines = out.strip().splitlines()
    assert lines[0].startswith("| quant | by | size | bpw |") and "pp512 t/s" in lines[0] and "tg128 t/s" in lines[0]
    assert lines[2].startswith("| F16 (base) |")
    assert sum(ln.startswith("| Q") for ln in lines) == 4
    assert lines[-1].startswith("Sweet spot: Q8_0 (ggtool)")
    assert "Sweet spot" not in err and "|" not in err                # data on stdout, talk on stderr


def test_plot_is_a_png_with_both_panels(tiny_json, tmp_path):
    import matplotlib.image as mpimg

    from ggtool import benchreport

    png = tmp_path / "bench.png"
    benchreport.plot(tiny_json["result"], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.shape[:2] == (520, 1300)
    rgb = img[60:480, :, :3]
    for half in (rgb[:, :650], rgb[:, 650:]):                         # each panel has its points
        blue = (half[..., 2] > 0.6) & (half[..., 0] < 0.3)           # ggtool's markers (tab:blue)
        red = (half[..., 0] > 0.7) & (half[..., 1] < 0.3)            # llama.cpp's (tab:red)
        assert blue.sum() > 20 and red.sum() > 10
    assert list(tmp_path.iterdir()) == [png]                          # nothing half-written


def test_plot_without_matplotlib_says_how_to_get_it(tiny, capsys, monkeypatch, cache, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run_cli(capsys, "bench", tiny["ck"], "--plot", tmp_path / "p.png", *FAST)
    _, hint = assert_clean_failure(code, out, err, "needs matplotlib")
    assert "ggtool[plot]" in hint
    assert not cache.exists()                                         # refused before any work


def test_rerun_resumes_from_the_cache_and_ctrl_c_leaves_nothing_half_written(tiny, capsys, cache, monkeypatch):
    from ggtool import evaluate

    real_kld, calls = evaluate.kld, []

    def kld_then_interrupt(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_kld(*a, **k)

    monkeypatch.setattr(evaluate, "kld", kld_then_interrupt)
    code, out, err = run_cli(capsys, "bench", tiny["f16"], "--quants", "Q8_0,Q4_0", *FAST)
    assert code == 130 and "Interrupted" in err
    assert not list(cache.rglob("*.incomplete")), list(cache.rglob("*.incomplete"))
    assert len(list((cache / "bench" / "rows").glob("*.json"))) == 1  # the base's row was finished

    calls.clear()
    monkeypatch.setattr(evaluate, "kld", lambda *a, **k: (calls.append(1), real_kld(*a, **k))[1])
    out1, _ = run_ok(capsys, "bench", tiny["f16"], "--quants", "Q8_0,Q4_0", "--json", *FAST)
    assert len(calls) == 2                                            # only the two missing rows
    calls.clear()
    out2, _ = run_ok(capsys, "bench", tiny["f16"], "--quants", "Q8_0,Q4_0", "--json", *FAST)
    assert calls == [] and json.loads(out1)["rows"] == json.loads(out2)["rows"]


def test_a_level_equal_to_the_base_has_zero_kld(tiny, capsys):
    out, _ = run_ok(capsys, "bench", tiny["f16"], "--quants", "F16", "--json", "--chunks", "2", "--ctx", "64",
                    "--reps", "0", "-q")
    doc = json.loads(out)
    (row,) = doc["rows"]
    assert row["kld_mean"] < 1e-6 and row["kld_p99"] < 1e-5 and row["same_top_pct"] == 100.0
    assert row["ppl"] == pytest.approx(doc["base"]["ppl"], rel=1e-6)
    assert row["pp_tps"] is None and row["tg_tps"] is None               # --reps 0: no speed test


def test_a_stored_model_name_is_found_in_the_store(tiny, capsys, monkeypatch):
    """NAME resolves through the store (store.find); its unquantized quant is the base."""
    from types import SimpleNamespace

    from ggtool import store

    stored = [SimpleNamespace(quant="Q8_0", path=tiny["q8"]), SimpleNamespace(quant="F16", path=tiny["f16"])]
    monkeypatch.setattr(store, "find", lambda tag: stored if tag == "tiny-test" else [])
    out, _ = run_ok(capsys, "bench", "tiny-test", "--quants", "Q8_0", "--json", "--chunks", "1", "--ctx", "64",
                    "--reps", "0", "-q")
    assert json.loads(out)["base"]["file"] == str(tiny["f16"])
    monkeypatch.setattr(store, "find", lambda tag: stored[:1])             # only a quantized one
    code, out, err = run_cli(capsys, "bench", "tiny-test", *FAST)
    assert_clean_failure(code, out, err, "is quantized (Q8_0)")


# ---------------------------------------------------------------------------- bad input

def test_text_too_short_says_how_many_tokens_are_needed(tiny, capsys, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Alice was beginning to get very tired of sitting by her sister on the bank.")
    code, out, err = run_cli(capsys, "bench", tiny["f16"], "--text", short, "--quants", "Q8_0", "--ctx", "512",
                             "--reps", "0", "-q")
    msg, hint = assert_clean_failure(code, out, err, "tokens")
    assert "needs 512 tokens" in msg and "--ctx" in hint


def test_quantized_model_is_refused_with_a_base_needed(tiny, capsys, cache):
    code, out, err = run_cli(capsys, "bench", tiny["q8"], *FAST)
    msg, hint = assert_clean_failure(code, out, err, "is quantized (Q8_0)")
    assert "base" in msg and "F16" in hint
    assert not cache.exists()


def test_unknown_level_lists_the_valid_ones(tiny, capsys, cache):
    code, out, err = run_cli(capsys, "bench", tiny["f16"], "--quants", "Q4_K_M,Q3_X", *FAST)
    _, hint = assert_clean_failure(code, out, err, "unknown quantization level 'Q3_X'")
    assert "Q4_K_M" in hint and "Q8_0" in hint
    assert not cache.exists()


def test_missing_model_and_bad_numbers(capsys, tmp_path, tiny):
    code, out, err = run_cli(capsys, "bench", tmp_path / "nope", *FAST)
    assert_clean_failure(code, out, err, "neither a checkpoint folder, a GGUF file nor a stored model")
    code, out, err = run_cli(capsys, "bench", tiny["f16"], "--max-kld", "0", *FAST)
    assert_clean_failure(code, out, err, "--max-kld")


# ---------------------------------------------------------------------------- pieces

def test_sweet_spot_takes_the_smallest_that_is_good_enough_and_fits(monkeypatch):
    from ggtool import benchreport
    from ggtool.bench import BenchResult, Row

    def row(q, by, size, kld):
        return Row(q, by, f"{q}.gguf", size, 4.0, 1.0, 10.0, 0.1, kld, 0.001, kld, kld, 90.0, 1, 0, 1, 0)

    facts = {"n_layer": 2, "n_head_kv": 2, "head_k": 64, "head_v": 64, "n_vocab": 1000}
    res = BenchResult(base={}, text={}, tokens_scored=1, extra={"facts": facts},
                      rows=[row("Q2_K", "ggtool", 100, 0.3), row("Q4_K_M", "llama.cpp", 200, 0.04),
                            row("Q4_K_M", "ggtool", 200, 0.03), row("Q8_0", "ggtool", 400, 0.001)])
    kv = 2 * 4096 * 2 * 128 * 2
    monkeypatch.setattr(benchreport, "free_ram", lambda: (10 ** 9, "test"))
    s = benchreport.sweet_spot(res, 0.05, 4096)
    assert (s["quant"], s["quantizer"]) == ("Q4_K_M", "ggtool") and s["needed_bytes"] == 200 + kv + 1000 * 512 * 4
    assert benchreport.sweet_spot(res, 0.01, 4096)["quant"] == "Q8_0"
    monkeypatch.setattr(benchreport, "free_ram", lambda: (300 + kv + 1000 * 512 * 4, "test"))
    s = benchreport.sweet_spot(res, 0.01, 4096)
    assert s["quant"] is None and "needs more than" in s["reason"]
    assert "no level" in benchreport.sweet_spot(res, 0.0001, 4096)["reason"]


def test_pareto_front():
    from ggtool.benchreport import pareto

    pts = [(1.0, 0.5), (2.0, 0.1), (2.0, 0.2), (3.0, 0.15), (4.0, 0.01)]
    assert pareto(pts, lower_is_better=True) == [0, 1, 4]
    assert pareto([(1.0, 10.0), (2.0, 12.0), (3.0, 11.0)], lower_is_better=False) == [0, 1]


def test_free_ram_reads_meminfo():
    from ggtool.benchreport import free_ram

    n, source = free_ram()
    assert n is not None and n > 0 and "MemAvailable" in source


# ---------------------------------------------------------------------------- compare

def test_compare_side_by_side_with_kld(tiny, capsys, tmp_path):
    from ggtool.convert import convert

    q2 = convert(tiny["f16"], tmp_path / "tiny.Q2_K.gguf", "Q2_K", rules="llama.cpp", progress=False).path
    out, _ = run_ok(capsys, "compare", tiny["f16"], q2, "Alice was", "The Queen", "-n", "8", "--threads", "1", "--chunks", "1",
                    "--ctx", "64", "--json", "-q")
    doc = json.loads(out)
    assert [p["prompt"] for p in doc["prompts"]] == ["Alice was", "The Queen"]
    assert all(p["kld_mean"] > 0 and p["answer_a"] for p in doc["prompts"])
    assert doc["text_kld"]["count"] == 31 and doc["text_kld"]["kld_mean"] > 0
    out, _ = run_ok(capsys, "compare", tiny["f16"], q2, "Alice was", "-n", "8", "--threads", "1", "--chunks", "0", "-q")
    assert "A: tiny.F16.gguf" in out and "B: tiny.Q2_K.gguf" in out and "KLD(B||A)" in out


def test_compare_a_model_with_itself(tiny, capsys):
    out, _ = run_ok(capsys, "compare", tiny["f16"], tiny["f16"], "Alice was", "-n", "8", "--threads", "1", "--chunks", "1",
                    "--ctx", "64", "--json", "-q")
    doc = json.loads(out)
    (p,) = doc["prompts"]
    assert p["same"] and p["answer_a"] == p["answer_b"] and p["kld_mean"] < 1e-6
    assert doc["text_kld"]["kld_mean"] < 1e-6


# ---------------------------------------------------------------------------- the real SmolLM2

@pytest.mark.slow
def test_smollm2_bench_perplexity_equals_a_numpy_forward_pass(smollm2_checkpoint, tmp_path, capsys):
    """`ggtool bench` on the real SmolLM2 (F32 GGUF made by ggtool from the checkpoint): its base
    perplexity agrees within 1% with a float64 numpy forward pass of the checkpoint
    (tests/reference_forward.py) on the same text and chunks, tokens from the `tokenizers` library."""
    from tokenizers import Tokenizer

    from ggtool.convert import convert
    from ggtool.evaluate import default_text
    from tests.reference_forward import ReferenceModel

    f32 = convert(smollm2_checkpoint, tmp_path / "smol.F32.gguf", "F32", progress=False).path
    ctx, chunks = 64, 2
    out, _ = run_ok(capsys, "bench", f32, "--quants", "Q8_0", "--ctx", ctx, "--chunks", chunks, "--reps", "1", "--threads", "1",
                    "--json", "-q")
    doc = json.loads(out)

    ids = Tokenizer.from_file(str(smollm2_checkpoint / "tokenizer.json")).encode(default_text()).ids
    ref = ReferenceModel.from_dir(smollm2_checkpoint)
    nll = []
    for i in range(chunks):                      # SmolLM2 adds no BOS: the chunks are the raw tokens
        c = ids[i * ctx:(i + 1) * ctx]
        x = ref.logits(c)[ctx // 2:ctx - 1]
        x = x - x.max(axis=1, keepdims=True)
        lp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        nll.append(-lp[np.arange(len(lp)), c[ctx // 2 + 1:]])
    nll = np.concatenate(nll)
    assert doc["tokens_scored"] == nll.size == 62
    assert doc["base"]["ppl"] == pytest.approx(math.exp(nll.mean()), rel=0.01)
    (q8,) = doc["rows"]
    assert 0 < q8["kld_mean"] < 0.02 and q8["ppl"] == pytest.approx(doc["base"]["ppl"], rel=0.05)
    assert q8["pp_tps"] > 0 and q8["tg_tps"] > 0


def test_cli_runner_help_and_error_path(tiny):
    """Through click's CliRunner too: the commands are listed, errors are Error:/Hint: on stderr."""
    from click.testing import CliRunner

    from ggtool.cli import cli

    res = CliRunner().invoke(cli, ["--help"], catch_exceptions=False)
    assert "bench" in res.stdout and "compare" in res.stdout
    res = CliRunner().invoke(cli, ["bench", str(tiny["f16"]), "--quants", "Q9_K"], catch_exceptions=False)
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr.startswith("Error: unknown quantization level 'Q9_K'") and "Hint: " in res.stderr
    res = CliRunner().invoke(cli, ["bench", str(tiny["f16"]), "--json", "--csv"], catch_exceptions=False)
    assert res.exit_code == 2 and "--json or --csv" in res.stderr


def test_default_rules_are_measured_allocation_never_larger(tiny, tmp_path, capsys, monkeypatch):
    """Without --rules, ggtool's levels are what `--quant` makes (measured allocation): never larger
    than llama.cpp's file of the same level."""
    monkeypatch.setenv("GGTOOL_CACHE", str(tmp_path / "cache"))
    out, err = run_ok(capsys, "bench", tiny["ck"], "--quants", "Q4_K_M", "--against", "llama.cpp", "--json",
                      "--chunks", "2", "--ctx", "64", "--reps", "0", "--threads", "1", "-q")
    assert "rules: sensitivity" in err
    rows = {r["quantizer"]: r for r in json.loads(out)["rows"] if r["quant"] == "Q4_K_M"}
    assert rows["ggtool"]["bytes"] <= rows["llama.cpp"]["bytes"]
