"""`ggtool pull` under faults, many times over: kill -9 at random points, ENOSPC and EIO at
random write offsets (in the Hugging Face cache and the store). After each: the store lists no
half-made model, partial files are `.incomplete` (downloads resume from them; `prune` removes
them), and the next pull succeeds. (tests/test_hub_faults.py covers each fault once, in depth.)"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuzz.faults import write_faults
from ggtool.errors import GgtoolError

pytest_plugins = ["tests.hubserver"]  # the local Hub: hub, hub_env, ...

REPO = "test/tiny-llama"


def pull_cmd(*args):
    return [sys.executable, "-m", "ggtool", "pull", REPO, "--quant", "Q8_0", "--quiet", *args]


def stored(env) -> list[str]:
    r = subprocess.run([sys.executable, "-m", "ggtool", "list", "--json"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [m["tag"] for m in json.loads(r.stdout)]


def prunable(env) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "ggtool", "prune", "--dry-run", "--json"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["items"]


def check_no_half_model(env) -> tuple[int, list[dict]]:
    """No half-made model is listed: a GGUF in the store outside a listed model is a complete
    file whose folder `ggtool prune` removes (the manifest is written last); partial files are
    `.incomplete`. Returns (partial files, what prune would remove)."""
    from ggtool.errors import CorruptFile
    from ggtool.formats.gguf_reader import GGUFFile

    home = Path(env["GGTOOL_HOME"])
    listed = stored(env)
    items = prunable(env)
    for g in home.rglob("*.gguf"):
        if listed:
            continue
        try:
            GGUFFile(g).close()
        except CorruptFile:
            pytest.fail(f"{g} looks like a finished model file but is not complete")
        assert any(str(g).startswith(i["path"]) for i in items), (g, items)
    partial = [p for p in list(home.rglob("*")) + list(Path(env["HF_HUB_CACHE"]).rglob("*"))
               if p.is_file() and ".incomplete" in p.name]
    assert all(p.name.endswith(".incomplete") for p in partial)
    return len(partial), items


@pytest.mark.slow
def test_pull_killed_at_random_points(hub, hub_env, tmp_path, say):
    base = dict(hub_env)
    t0 = time.monotonic()
    r = subprocess.run(pull_cmd(), env={**base, "HF_HUB_CACHE": str(tmp_path / "hf0"),
                                         "GGTOOL_HOME": str(tmp_path / "home0")}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t_full = time.monotonic() - t0
    rng = random.Random("pull-kill")
    kills = 12
    n = {"killed": 0, "finished first": 0, "partials left": 0, "reruns ok": 0}
    for i in range(kills):
        env = {**base, "HF_HUB_CACHE": str(tmp_path / f"hf{i + 1}"), "GGTOOL_HOME": str(tmp_path / f"home{i + 1}")}
        p = subprocess.Popen(pull_cmd(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_start = time.monotonic()
        if i % 2:  # once it has begun writing: a partial download or the store's folder
            roots = [Path(env["HF_HUB_CACHE"]), Path(env["GGTOOL_HOME"])]
            while p.poll() is None and time.monotonic() - t_start < 3 * t_full + 5 and \
                    not any(r.exists() and any(True for _ in r.rglob("*.incomplete")) for r in roots):
                time.sleep(0.001)
            time.sleep(rng.uniform(0, max(t_full - (time.monotonic() - t_start), 0.05)))
        else:      # anywhere
            time.sleep(rng.uniform(0, t_full))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            n["killed"] += 1
        else:
            n["finished first"] += 1
        p.wait()
        partials, items = check_no_half_model(env)
        n["partials left"] += partials
        for item in items:  # what the kill left, as `ggtool prune` sees it
            n[f"left: {item['kind']}"] = n.get(f"left: {item['kind']}", 0) + 1
        r = subprocess.run(pull_cmd(), env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert stored(env) == [f"{REPO}:Q8_0"]
        n["reruns ok"] += 1
    say(f"{kills} kill -9 of `ggtool pull` (full run {t_full:.1f} s): "
        + ", ".join(f"{v} {k}" for k, v in n.items()) + "; 0 half-made models listed")


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_pull_write_errors_at_random_offsets(hub, hub_env, tmp_path, err, say):
    from ggtool.hub import pull

    r = subprocess.run(pull_cmd(), env={**hub_env, "HF_HUB_CACHE": str(tmp_path / "probe-hf"),
                                        "GGTOOL_HOME": str(tmp_path / "probe-home")}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    total = sum(p.stat().st_size for p in (tmp_path / "probe-hf").rglob("*") if p.is_file() and not p.is_symlink())
    total += sum(p.stat().st_size for p in (tmp_path / "probe-home").rglob("*") if p.is_file())
    rng = random.Random(f"pull-{err}")
    offsets = sorted({0, 100} | {rng.randrange(total) for _ in range(8)})
    kinds = {}
    for i, at in enumerate(offsets):
        hf, home = tmp_path / f"hf{i}", tmp_path / f"home{i}"
        os.environ["HF_HUB_CACHE"], os.environ["GGTOOL_HOME"] = str(hf), str(home)
        with write_faults(tmp_path, at_byte=at, err=err) as st:
            try:
                pull.pull(REPO, "Q8_0", progress=False, threads=1)
                outcome = "finished (the fault fell past the last write)"
            except GgtoolError as e:
                assert e.hint and "\n" not in e.message, e.message
                outcome = type(e).__name__
        kinds[outcome] = kinds.get(outcome, 0) + 1
        env = {**hub_env, "HF_HUB_CACHE": str(hf), "GGTOOL_HOME": str(home)}
        if st["faults"]:
            assert stored(env) == []
            check_no_half_model(env)
        pull.pull(REPO, "Q8_0", progress=False, threads=1)  # the next pull succeeds
        assert stored(env) == [f"{REPO}:Q8_0"]
    say(f"{len(offsets)} {errno.errorcode[err]} faults in `pull` at byte offsets 0..{total}: "
        + ", ".join(f"{v} {k}" for k, v in kinds.items()) + "; 0 half-made models; every next pull succeeded")
