"""`ggtool run` on the real SmolLM2 (a Q8_0 GGUF written by ggtool): the answer streams and says
Paris, --json parses, a prompt on stdin works, --raw completes plain text; speculative decoding
(a draft model, prompt lookup) gives exactly the greedy output it gives without; the CLI's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ggtool.cli import cli, main

pytestmark = [pytest.mark.usefixtures("llama_cpp_ok"), pytest.mark.slow]

Q = "What is the capital of France?"
OPTS = ["--system", "You are a helpful assistant.", "--threads", "1"]   # the 135M model needs the nudge


def test_run_streams_an_answer(smollm2_q8_gguf, capsys):
    main(["run", str(smollm2_q8_gguf), Q, *OPTS, "--temp", "0", "-n", "24", "--ctx", "1024"])
    cap = capsys.readouterr()
    assert "Paris" in cap.out
    assert "1 thread, CPU only, context 1024" in cap.err       # where it runs: stderr
    assert "thread" not in cap.out


def test_run_json(smollm2_q8_gguf, capsys):
    main(["run", str(smollm2_q8_gguf), Q, *OPTS, "--temp", "0", "-n", "24", "--ctx", "1024", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert "Paris" in out["text"]
    assert out["prompt_tokens"] > 5 and 0 < out["completion_tokens"] <= 24
    assert out["stop_reason"] in ("stop", "length")
    assert out["time_to_first_token"] > 0 and out["seconds"] >= out["time_to_first_token"]
    assert out["tokens_per_second"] >= 0
    assert out["template"].startswith("the model's own")
    assert out["draft"] is None


def test_run_prompt_on_stdin(smollm2_q8_gguf, tmp_path):
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "ggtool", "run", str(smollm2_q8_gguf), *OPTS, "--temp", "0",
                        "-n", "24", "--ctx", "1024", "--json"], input=Q, capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Paris" in json.loads(r.stdout)["text"]


def test_run_raw_completion(smollm2_q8_gguf, capsys):
    main(["run", str(smollm2_q8_gguf), "The capital of France is", "--raw", "--temp", "0", "-n", "8",
          "--ctx", "512", "--threads", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert "Paris" in out["text"] and "template" not in out


def test_same_seed_same_text(smollm2_q8_gguf, capsys):
    args = ["run", str(smollm2_q8_gguf), "Tell me a story.", "--temp", "0.9", "--seed", "7", "-n", "16",
            "--ctx", "512", "--threads", "1", "--json"]
    main(args)
    a = json.loads(capsys.readouterr().out)["text"]
    main(args)
    assert json.loads(capsys.readouterr().out)["text"] == a


@pytest.mark.parametrize("draft", ["lookup", "model"])
def test_greedy_output_identical_with_a_draft(draft, smollm2_q8_gguf, smollm2_gguf):
    """Speculative decoding changes the speed, never the greedy text."""
    from ggtool.chat.engine import Engine, Sampling
    from ggtool.chat.session import answer_once

    prompt = ("Repeat this list exactly: apple, banana, cherry, apple, banana, cherry, apple, banana, "
              "cherry. Then say why fruit is good.")
    spec = "lookup" if draft == "lookup" else str(smollm2_gguf)     # the original Q4_1 drafts for our Q8_0
    results = []
    for d in (None, spec):
        eng = Engine.load(smollm2_q8_gguf, ctx=1024, threads=1, draft=d, draft_tokens=4)
        try:
            results.append(answer_once(eng, prompt, sampling=Sampling(temp=0), max_tokens=40))
        finally:
            eng.close()
    plain, fast = results
    assert fast.ids == plain.ids and fast.text == plain.text
    assert plain.draft is None
    assert fast.draft["kind"] == draft and fast.draft["drafted"] > 0
    assert 0 < fast.draft["accepted"] <= fast.draft["drafted"]


def test_draft_with_another_vocabulary_is_refused(smollm2_q8_gguf, tmp_path):
    from ggtool.convert import convert
    from ggtool.errors import InputError
    from tests.tinymodels import make_checkpoint

    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=64, layers=1, heads=4, kv_heads=2)
    small = tmp_path / "other.gguf"
    convert(ck, small, "F16", progress=False)
    from ggtool.chat.engine import Engine

    with pytest.raises(InputError, match="does not share the model's vocabulary"):
        Engine.load(smollm2_q8_gguf, ctx=512, draft=str(small))


# ------------------------------------------------------------------ CLI errors (no model needed)

def test_run_missing_model_message(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "/nonexistent/model.gguf", "hi"])
    assert e.value.code == 1
    cap = capsys.readouterr()
    assert "Error: no model file /nonexistent/model.gguf" in cap.err
    assert "Hint:" in cap.err and cap.out == ""


def test_run_without_prompt(smollm2_q8_gguf, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    with pytest.raises(SystemExit) as e:
        main(["run", str(smollm2_q8_gguf)])
    assert e.value.code == 1
    assert "Error: the prompt on stdin is empty" in capsys.readouterr().err
    r = CliRunner().invoke(cli, ["run", "--help"])
    assert r.exit_code == 0 and "--max-tokens" in r.output and "--draft" in r.output


def test_serve_without_the_extra_says_how(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_uvicorn(name, *a, **kw):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(SystemExit) as e:
        main(["serve", "/nonexistent/model.gguf"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "needs llama-cpp-python's server packages" in err and "ggtool[serve]" in err


def test_run_on_a_file_that_is_not_a_gguf(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(SystemExit) as e:
        main(["run", str(bad), "hi"])
    assert e.value.code == 1
    cap = capsys.readouterr()
    assert "Error: bad.gguf is not a valid GGUF file" in cap.err and cap.out == ""
