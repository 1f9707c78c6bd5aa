"""Downloads you can trust, against a local Hub that misbehaves on purpose: a corrupted byte, a
dropped connection, a stall, a full disk, a `..` file name, kill -9 mid-file and a rerun that
fetches only the missing bytes, two pulls of one model at once."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_hub_pull import listed, ok, one_error, run_cli

pytest_plugins = ["tests.hubserver"]  # the local Hub fixtures: hub, hub_env, tiny_ckpt, gguf_files, ...

WEIGHTS = "model.safetensors"


def ggtool_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ggtool", *args]


def blobs(env, repo) -> list[Path]:
    d = Path(env["HF_HUB_CACHE"]) / ("models--" + repo.replace("/", "--")) / "blobs"
    return sorted(d.iterdir()) if d.is_dir() else []


def test_corrupt_byte_is_caught_and_nothing_is_stored(capsys, hub, hub_env):
    hub.corrupt.add(("test/tiny-llama", WEIGHTS))
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    hint = one_error(err, "sha256 mismatch")
    assert "deleted" in err and "HF_ENDPOINT" in hint
    assert listed(capsys) == {}
    sha = hub.repos["test/tiny-llama"].sha256(WEIGHTS)
    assert not any(b.name.startswith(sha) for b in blobs(hub_env, "test/tiny-llama"))  # no blob, no partial
    assert not list((Path(hub_env["GGTOOL_HOME"]) / "models").rglob("*.gguf"))


def test_corrupt_small_file_is_caught_by_its_git_blob_id(capsys, hub, hub_env):
    hub.corrupt.add(("test/tiny-llama", "tokenizer.json"))
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    one_error(err, "git sha1 mismatch")


def test_dropped_connection_is_resumed(capsys, hub, hub_env):
    hub.drop[("test/tiny-llama", WEIGHTS)] = 2
    out, err = ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")
    assert "connection dropped" in err and "retrying" in err
    size = len(hub.repos["test/tiny-llama"].files[WEIGHTS])
    assert hub.served_bytes("test/tiny-llama", WEIGHTS) <= 1.1 * size
    assert any(m == "GET" and rng and rng != "bytes=0-" for m, p, rng in hub.requests if p.endswith(WEIGHTS))
    assert "test/tiny-llama:Q8_0" in listed(capsys)


def test_stall_is_retried(capsys, hub, hub_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.5")
    hub.stall_seconds = 3
    hub.stall[("test/tiny-llama", WEIGHTS)] = 1
    out, err = ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")
    assert "stalled" in err and "retrying" in err
    assert "test/tiny-llama:Q8_0" in listed(capsys)


def test_gives_up_after_repeated_failures_and_keeps_the_partial(capsys, hub, hub_env, monkeypatch):
    from ggtool.hub import download

    monkeypatch.setattr(download, "RETRIES", 2)
    hub.drop[("test/tiny-llama", WEIGHTS)] = 100
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    hint = one_error(err, "failed 3 times in a row")
    assert "resumes" in hint
    assert any(b.name.endswith(".incomplete") and b.stat().st_size > 0 for b in blobs(hub_env, "test/tiny-llama"))


def test_full_disk_is_refused_before_anything_starts(capsys, hub, hub_env, monkeypatch):
    import shutil
    from collections import namedtuple

    du = namedtuple("du", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: du(10**9, 10**9 - 1000, 1000))
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    hint = one_error(err, "not enough disk space")
    assert "HF_HUB_CACHE" in hint and "GGTOOL_HOME" in hint
    assert hub.served_bytes("test/tiny-llama", WEIGHTS) == 0
    assert listed(capsys) == {}


def test_disk_full_mid_download_keeps_a_resumable_partial(capsys, hub, hub_env, monkeypatch):
    from ggtool.hub import download

    real, written = download._write, {"n": 0}

    def write(f, b):
        if written["n"] > 20_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        written["n"] += len(b)
        real(f, b)

    monkeypatch.setattr(download, "_write", write)
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    hint = one_error(err, "no space left")
    assert "resumes" in hint and "prune" in hint
    assert listed(capsys) == {}
    monkeypatch.setattr(download, "_write", real)
    ok(capsys, "pull", "test/tiny-llama", "--quant", "Q8_0")  # resumes
    size = len(hub.repos["test/tiny-llama"].files[WEIGHTS])
    assert hub.served_bytes("test/tiny-llama", WEIGHTS) <= 1.1 * size


@pytest.mark.parametrize("bad", ["../evil.safetensors", "/etc/evil.safetensors", "a/../../evil.gguf"])
def test_file_names_escaping_the_cache_are_refused(capsys, hub, hub_env, bad):
    hub.extra_tree["test/tiny-llama"] = [{"type": "file", "oid": "1" * 40, "size": 4, "path": bad}]
    code, out, err = run_cli(capsys, "pull", "test/tiny-llama")
    one_error(err, "refusing file name")
    assert hub.resolve_requests() == 0
    assert not (Path(hub_env["HF_HUB_CACHE"]).parent / "evil.safetensors").exists()


def _start(env, *args, **kw):
    return subprocess.Popen(ggtool_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(cond, timeout=60.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _kill_mid_file(hub, env, repo, fraction=0.35):
    size = len(hub.repos[repo].files[WEIGHTS])
    hub.throttle[(repo, WEIGHTS)] = size / 4  # ~4 s for the whole file
    p = _start(env, "pull", repo, "--quant", "Q8_0")
    try:
        _wait_for(lambda: hub.served_bytes(repo, WEIGHTS) >= fraction * size or p.poll() is not None)
        assert p.poll() is None, p.communicate()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
        p.communicate()
    del hub.throttle[(repo, WEIGHTS)]
    return size


def test_kill_9_mid_file_then_rerun_fetches_only_the_missing_bytes(hub, hub_env):
    repo = "test/big-llama"
    size = _kill_mid_file(hub, hub_env, repo)
    first = hub.served_bytes(repo, WEIGHTS)
    assert 0.3 * size < first < size
    # nothing that looks complete: not listed; the partial download is there, and prune sees it
    r = subprocess.run(ggtool_cmd("list", "--json"), env=hub_env, capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = subprocess.run(ggtool_cmd("prune", "--dry-run", "--json"), env=hub_env, capture_output=True, text=True)
    kinds = {i["kind"] for i in json.loads(r.stdout)["items"]}
    assert {"partial download", "incomplete pull"} <= kinds
    # run again: only the missing bytes
    r = subprocess.run(ggtool_cmd("pull", repo, "--quant", "Q8_0"), env=hub_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resuming model.safetensors" in r.stderr
    assert hub.served_bytes(repo, WEIGHTS) <= 1.1 * size, (hub.served_bytes(repo, WEIGHTS), size)
    r = subprocess.run(ggtool_cmd("list", "--json"), env=hub_env, capture_output=True, text=True)
    assert [m["tag"] for m in json.loads(r.stdout)] == [f"{repo}:Q8_0"]


def test_prune_after_a_killed_pull_frees_the_partial_file(hub, hub_env):
    repo = "test/big-llama"
    _kill_mid_file(hub, hub_env, repo)
    partial = [b for b in blobs(hub_env, repo) if b.name.endswith(".incomplete")]
    assert len(partial) == 1
    n = partial[0].stat().st_size
    r = subprocess.run(ggtool_cmd("prune", "--json"), env=hub_env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    freed = {i["kind"]: i["bytes"] for i in res["items"]}
    assert freed["partial download"] == n and res["freed"] >= n
    assert not partial[0].exists()
    assert not list((Path(hub_env["GGTOOL_HOME"]) / "models").rglob("pull.json"))


def test_two_pulls_of_one_model_at_once(hub, hub_env):
    repo = "test/big-llama"
    size = len(hub.repos[repo].files[WEIGHTS])
    hub.throttle[(repo, WEIGHTS)] = size / 6  # a holds the lock for ~6 s: b starts (~2 s) well inside it
    a = _start(hub_env, "pull", repo, "--quant", "Q8_0")
    try:
        _wait_for(lambda: hub.served_bytes(repo, WEIGHTS) > 0 or a.poll() is not None)
        b = _start(hub_env, "pull", repo, "--quant", "Q8_0")
        out_b, err_b = b.communicate(timeout=120)
        out_a, err_a = a.communicate(timeout=120)
    finally:
        for p in (a,):
            if p.poll() is None:
                p.kill()
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    assert "another pull of" in err_b and "waiting" in err_b
    assert "already in the store" in err_b
    assert hub.served_bytes(repo, WEIGHTS) <= 1.1 * size
