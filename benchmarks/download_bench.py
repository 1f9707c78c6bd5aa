#!/usr/bin/env python
"""ggtool's downloader against huggingface_hub's own hf_hub_download, on the same local Hub server
(tests/hubserver.py on 127.0.0.1), the same file, interleaved, in the same run.

ggtool hashes while it streams and checks the sha256 before the file is used; huggingface_hub does
not check it. Both write into the Hugging Face cache layout. The server is Python's http.server,
so absolute MB/s say more about it than about either client: read the ratio.
Also: kill -9 mid-file and rerun (ggtool resumes; bytes served / file size), both clients.

Usage: python benchmarks/download_bench.py [--mb 256] [--reps 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tests.hubserver as hubserver  # noqa: E402
from tests.hubserver import HubServer, Repo  # noqa: E402

hubserver.CHUNK = 1 << 20  # the tests' 16 KB writes make the server the bottleneck

REPO, FILE = "bench/model", "model.safetensors"


def fetch_ggtool(url: str, cache: Path) -> None:
    code = ("from ggtool.hub import client, download; from ggtool.hub.cache import RepoCache; "
            f"i = client.repo_info({REPO!r}, 'main'); "
            f"download.fetch(i.file({FILE!r}), {REPO!r}, i.commit, cache=RepoCache({REPO!r}), progress=False)")
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_CACHE": str(cache), "GGTOOL_CACHE": str(cache / "gg")}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def fetch_hf(url: str, cache: Path) -> None:
    code = ("from huggingface_hub import hf_hub_download; "
            f"hf_hub_download({REPO!r}, {FILE!r}, cache_dir={str(cache)!r}, endpoint={url!r}, token=False)")
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_XET": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)


def timed(start, url: str, cache: Path) -> float:
    t0 = time.perf_counter()
    p = start(url, cache)
    if p.wait() != 0:
        raise SystemExit(f"{start.__name__} failed")
    return time.perf_counter() - t0


def killed_then_rerun(start, server: HubServer, cache: Path, size: int) -> float:
    """Bytes served for one complete file when the first try is killed at ~50%: 1.0 = resumed."""
    server.served.clear()
    server.throttle[(REPO, FILE)] = size / 4
    p = start(server.url, cache)
    while server.served_bytes(REPO, FILE) < size // 2 and p.poll() is None:
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    del server.throttle[(REPO, FILE)]
    if start(server.url, cache).wait() != 0:
        raise SystemExit(f"{start.__name__} rerun failed")
    return server.served_bytes(REPO, FILE) / size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = args.mb << 20
    data = os.urandom(size)
    server = HubServer()
    server.add(Repo(REPO, {FILE: data, "config.json": b"{}"}))
    server.start()
    rows = {"ggtool": [], "huggingface_hub": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.reps):
            for name, start in (("ggtool", fetch_ggtool), ("huggingface_hub", fetch_hf)):
                rows[name].append(timed(start, server.url, Path(tmp) / f"{name}{i}"))
        resumed = {name: killed_then_rerun(start, server, Path(tmp) / f"kill-{name}", size)
                   for name, start in (("ggtool", fetch_ggtool), ("huggingface_hub", fetch_hf))}
    server.stop()
    best = {k: min(v) for k, v in rows.items()}
    res = {"mb": args.mb, "reps": args.reps,
           "seconds": {k: [round(x, 2) for x in v] for k, v in rows.items()},
           "mb_per_s": {k: round(args.mb / v, 1) for k, v in best.items()},
           "time_ratio_ggtool_vs_hf": round(best["ggtool"] / best["huggingface_hub"], 2),
           "served_over_size_after_kill_at_50pct": {k: round(v, 2) for k, v in resumed.items()}}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print("| client | best s | MB/s | sha256 checked | bytes served / size after kill -9 at 50% + rerun |")
    print("|---|---:|---:|---|---:|")
    for k in rows:
        print(f"| {k} | {best[k]:.2f} | {res['mb_per_s'][k]} | {'yes' if k == 'ggtool' else 'no'} | "
              f"{res['served_over_size_after_kill_at_50pct'][k]} |")
    print(f"\n{args.mb} MiB file, best of {args.reps}, interleaved; time ratio ggtool/huggingface_hub = "
          f"{res['time_ratio_ggtool_vs_hf']}")


if __name__ == "__main__":
    main()
