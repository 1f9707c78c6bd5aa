#!/usr/bin/env python
"""How ggtool's cost grows with model size, beside llama.cpp's, measured in the same run.

For each generated checkpoint (benchmarks/make_large_model.py) and each mix, four pipelines,
each step in its own process (wall time, CPU time = user + sys of the child, peak RSS =
the child's ru_maxrss, all from os.wait4):

  ggtool convert      safetensors (BF16) -> mix in one pass (--rules llama.cpp)
  ggtool quantize     F16 GGUF -> mix
  llama-quantize      llama.cpp's llama_model_quantize, F16 GGUF -> mix
  llama.cpp pipeline  convert_hf_to_gguf.py (safetensors -> F16, once per model) + llama-quantize

Both quantizers read the same F16 GGUF, the one convert_hf_to_gguf.py wrote. Ours and theirs
alternate (the order flips every repeat) so that a shared machine's load falls on both alike;
every input is read once before each step (warm page cache for everyone) and the output is
synced and deleted after it, outside the timing, so that one step's writeback never lands in
the next one's time. ggtool's times include its fdatasync before the rename (llama.cpp does
not sync). The driver stays small: a child's ru_maxrss starts from its parent's RSS.

    python benchmarks/scaling_bench.py --models /work/ext/large/llama-0.5B,/work/ext/large/llama-3B \
        [--mixes Q4_K_M,Q6_K,Q8_0] [--threads 2] [--sweep 1] [--repeat 1] [--json out.json]
    python benchmarks/scaling_bench.py --report out.json [--plot docs/scaling.png]

--sweep 1 also times both quantizers with 1 thread (the 2-vs-1 thread speed-up). Results are
appended to --json as each step ends (a long run can be stopped and --resume'd).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIXES = "Q4_K_M,Q6_K,Q8_0"
LLAMA_CONVERT = Path("/work/ext/llama-cpp-python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py")
PY = sys.executable


def run(cmd: list[str], cwd=ROOT, quiet: bool = False) -> dict:
    """Run cmd; wall s, CPU s (user + sys) and peak RSS MB of that process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"failed (status {status}): {' '.join(map(str, cmd))}")
    return {"wall": round(wall, 2), "cpu": round(ru.ru_utime + ru.ru_stime, 2),
            "rss_mb": round(ru.ru_maxrss / 1024, 1)}


def warm(paths) -> None:
    """Read the inputs once (page cache), so that every step starts warm."""
    for p in paths:
        p = Path(p)
        for f in sorted(p.iterdir()) if p.is_dir() else [p]:
            if f.is_file():
                with open(f, "rb", buffering=0) as fh:
                    while fh.read(1 << 24):
                        pass


def settle(out: Path) -> None:
    """Outside the timing: write back everything (the output and anything else dirty) and drop it."""
    os.sync()
    out.unlink(missing_ok=True)


def model_info(model: Path) -> dict:
    cfg = json.loads((model / "config.json").read_text())
    code = ("import json,sys; from ggtool.sources import open_source; s = open_source(sys.argv[1]); "
            "import math; print(json.dumps({'params': sum(math.prod(sh) for _, sh in s.tensors), "
            "'largest': max(math.prod(sh) for _, sh in s.tensors)})); s.close()")
    out = subprocess.run([PY, "-c", code, str(model)], cwd=ROOT, capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    return {"model": model.name, "hidden": cfg["hidden_size"], "layers": cfg["num_hidden_layers"],
            "ffn": cfg["intermediate_size"], "vocab": cfg["vocab_size"], **info}


class Recorder:
    def __init__(self, path: Path | None, resume: bool):
        self.path = path
        self.rows: list[dict] = []
        self.meta: dict = {}
        if path and resume and path.is_file():
            old = json.loads(path.read_text())
            self.rows, self.meta = old["rows"], old["meta"]

    def done(self, **key) -> dict | None:
        for r in self.rows:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, row: dict) -> None:
        row["loadavg"] = round(os.getloadavg()[0], 2)
        self.rows.append(row)
        print(f"  {row['model']:<12} {row.get('mix', '-'):<7} {row['tool']:<18} t={row['threads']} "
              f"wall {row['wall']:7.2f} s  cpu {row['cpu']:7.2f} s  rss {row['rss_mb']:7.0f} MB  "
              f"(load {row['loadavg']})", file=sys.stderr, flush=True)
        self.save()

    def save(self) -> None:
        if self.path:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1))
            os.replace(tmp, self.path)


def bench_model(model: Path, work: Path, mixes: list[str], threads: int, sweep: list[int], repeat: int,
                rec: Recorder, llama_convert: Path) -> None:
    info = rec.meta.setdefault("models", {}).get(model.name) or model_info(model)
    rec.meta["models"][model.name] = info
    f16 = work / f"{model.name}.llama.f16.gguf"
    base = {"model": model.name, "params": info["params"]}
    if not f16.is_file() or not rec.done(model=model.name, tool="convert_hf_to_gguf"):
        warm([model])
        tmp = work / "f16.incomplete.gguf"
        r = run([PY, str(llama_convert), str(model), "--outfile", str(tmp), "--outtype", "f16"],
                cwd=llama_convert.parents[3], quiet=True)  # /work/ext: the upstream script runs outside the repo
        os.replace(tmp, f16)
        os.sync()
        if not rec.done(model=model.name, tool="convert_hf_to_gguf"):
            rec.add({**base, "tool": "convert_hf_to_gguf", "threads": 1, **r})
    out = work / "out.gguf"
    for rep in range(repeat):
        for mix in mixes:
            steps = []
            for t in [threads] + [s for s in sweep if s != threads]:
                ours_q = ("ggtool quantize", [PY, "-m", "ggtool", "quantize", str(f16), str(out), "--quant", mix,
                                              "--rules", "llama.cpp", "--threads", str(t), "-q"], f16)
                theirs = ("llama-quantize", [PY, "-c", "import sys; from ggtool.plan.llamacpp import get_mix; "
                                             "from ggtool.llamacpp.quantize import llama_quantize_file; "
                                             "llama_quantize_file(sys.argv[1], sys.argv[2], get_mix(sys.argv[3]).ftype, "
                                             "nthread=int(sys.argv[4]))", str(f16), str(out), mix, str(t)], f16)
                pair = [ours_q, theirs]
                if t == threads:
                    pair.append(("ggtool convert", [PY, "-m", "ggtool", "convert", str(model), "-o", str(out), "--quant",
                                                    mix, "--rules", "llama.cpp", "--threads", str(t), "-q"], model))
                steps += [(t, s) for s in pair]
            if rep % 2:
                steps = steps[::-1]  # interleave: who goes first alternates
            for t, (tool, cmd, src) in steps:
                if len([r for r in rec.rows if r["model"] == model.name and r.get("mix") == mix
                        and r["tool"] == tool and r["threads"] == t]) > rep:
                    continue
                warm([src])
                r = run(cmd, quiet=True)
                size = out.stat().st_size
                settle(out)
                rec.add({**base, "mix": mix, "tool": tool, "threads": t, "rep": rep, "out_mb": round(size / 1e6, 1), **r})


# ------------------------------------------------------------------------------------ report
def best(rows, **key) -> dict | None:
    """The repeat with the lowest wall time."""
    m = [r for r in rows if all(r.get(k) == v for k, v in key.items())]
    return min(m, key=lambda r: r["wall"]) if m else None


def report(data: dict, threads: int) -> str:
    rows, models = data["rows"], data["meta"]["models"]
    order = sorted(models, key=lambda m: models[m]["params"])
    mixes = list(dict.fromkeys(r["mix"] for r in rows if "mix" in r))
    lines = ["| model | mix | ggtool convert | ggtool quantize | llama-quantize | convert_hf.py + llama-quantize | "
             "convert / llama-quantize | quantize / llama-quantize | s per B params: convert, quantize, llama-quantize | "
             "peak RSS MB: convert, quantize, llama-quantize |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in order:
        info = models[m]
        b = info["params"] / 1e9
        hf = best(rows, model=m, tool="convert_hf_to_gguf")
        for mix in mixes:
            c, q, l = (best(rows, model=m, mix=mix, tool=t, threads=threads)
                       for t in ("ggtool convert", "ggtool quantize", "llama-quantize"))
            if not (c and q and l):
                continue
            pipe = f"{hf['wall'] + l['wall']:.1f} s ({hf['cpu'] + l['cpu']:.1f})" if hf else "-"
            lines.append(
                f"| {m} ({b:.2f} B) | {mix} | {c['wall']:.1f} s ({c['cpu']:.1f}) | {q['wall']:.1f} s ({q['cpu']:.1f}) | "
                f"{l['wall']:.1f} s ({l['cpu']:.1f}) | {pipe} | {c['wall'] / l['wall']:.2f} ({c['cpu'] / l['cpu']:.2f}) | "
                f"{q['wall'] / l['wall']:.2f} ({q['cpu'] / l['cpu']:.2f}) | "
                f"{c['wall'] / b:.1f}, {q['wall'] / b:.1f}, {l['wall'] / b:.1f} | "
                f"{c['rss_mb']:.0f}, {q['rss_mb']:.0f}, {l['rss_mb']:.0f} |")
    sweep = sorted({r["threads"] for r in rows if r["tool"] == "ggtool quantize"})
    if len(sweep) > 1:
        lo, hi = sweep[0], sweep[-1]
        lines += ["", f"Speed-up from {lo} to {hi} threads (wall time at {lo} / at {hi}, same run):", "",
                  "| model | mix | ggtool quantize | llama-quantize |", "|---|---|---:|---:|"]
        for m in order:
            for mix in mixes:
                cells = []
                for tool in ("ggtool quantize", "llama-quantize"):
                    a, b = best(rows, model=m, mix=mix, tool=tool, threads=lo), best(rows, model=m, mix=mix, tool=tool, threads=hi)
                    cells.append(f"{a['wall'] / b['wall']:.2f}" if a and b else "-")
                if any(c != "-" for c in cells):
                    lines.append(f"| {m} | {mix} | {' | '.join(cells)} |")
    loads = [r["loadavg"] for r in rows]
    lines += ["", f"1-minute load average during the steps: {min(loads):.1f}-{max(loads):.1f} "
                  f"(median {sorted(loads)[len(loads) // 2]:.1f}); {data['meta'].get('cores', '?')} cores"]
    hfs = [(m, best(rows, model=m, tool="convert_hf_to_gguf")) for m in order]
    lines += ["convert_hf_to_gguf.py (safetensors -> F16) alone: " + ", ".join(
        f"{m} {r['wall']:.1f} s ({r['cpu']:.1f} CPU s), {r['rss_mb']:.0f} MB" for m, r in hfs if r)]
    lines += ["largest tensor as float32: " + ", ".join(
        f"{m} {models[m]['largest'] * 4 / 1e6:.0f} MB" for m in order)]
    return "\n".join(lines)


def plot(data: dict, threads: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, models = data["rows"], data["meta"]["models"]
    order = sorted(models, key=lambda m: models[m]["params"])
    mixes = list(dict.fromkeys(r["mix"] for r in rows if "mix" in r))
    fig, axes = plt.subplots(1, len(mixes) + 1, figsize=(4.2 * (len(mixes) + 1), 4.0))
    styles = {"ggtool convert": ("C0", "o-"), "ggtool quantize": ("C2", "s-"),
              "llama-quantize": ("C3", "^--"), "convert_hf + llama-quantize": ("C1", "v--")}
    for ax, mix in zip(axes, mixes):
        for tool, (color, style) in styles.items():
            xs, ys = [], []
            for m in order:
                if tool == "convert_hf + llama-quantize":
                    hf, l = best(rows, model=m, tool="convert_hf_to_gguf"), best(rows, model=m, mix=mix, tool="llama-quantize", threads=threads)
                    r = {"wall": hf["wall"] + l["wall"]} if hf and l else None
                else:
                    r = best(rows, model=m, mix=mix, tool=tool, threads=threads)
                if r:
                    xs.append(models[m]["params"] / 1e9)
                    ys.append(r["wall"])
            ax.plot(xs, ys, style, color=color, label=tool)
        ax.set_title(f"{mix}, {threads} threads: wall time")
        ax.set_xlabel("parameters (billions)")
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    for tool, (color, style) in list(styles.items())[:3]:
        xs, ys = [], []
        for m in order:
            rs = [r for r in rows if r["model"] == m and r["tool"] == tool and r["threads"] == threads]
            if rs:
                xs.append(models[m]["params"] / 1e9)
                ys.append(max(r["rss_mb"] for r in rs))
        ax.plot(xs, ys, style, color=color, label=tool)
    xs = [models[m]["params"] / 1e9 for m in order]
    ax.plot(xs, [2 * models[m]["largest"] * 4 / 1e6 + 300 for m in order], ":", color="gray",
            label="2 x largest tensor (f32) + 300 MB")
    ax.set_title("peak RSS, any mix")
    ax.set_xlabel("parameters (billions)")
    ax.set_ylabel("MB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help="comma-separated checkpoint folders")
    ap.add_argument("--mixes", default=DEFAULT_MIXES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sweep", default="", help="other thread counts for the two quantizers, e.g. 1")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/work/ext/large/work"), help="F16 GGUFs and outputs")
    ap.add_argument("--llama-convert", type=Path, default=LLAMA_CONVERT)
    ap.add_argument("--json", type=Path, help="results file (rewritten after every step)")
    ap.add_argument("--resume", action="store_true", help="keep the steps --json already holds")
    ap.add_argument("--report", type=Path, help="print the table of a results file and stop")
    ap.add_argument("--plot", type=Path, help="with --report: write the plot (PNG) here")
    args = ap.parse_args()

    if args.report:
        data = json.loads(args.report.read_text())
        t = data["meta"].get("threads", args.threads)
        print(report(data, t))
        if args.plot:
            plot(data, t, args.plot)
        return
    if not args.models:
        ap.error("--models or --report")
    args.work.mkdir(parents=True, exist_ok=True)
    rec = Recorder(args.json, args.resume)
    rec.meta.update({"threads": args.threads, "cores": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M"),
                     "loadavg_start": os.getloadavg()[0]})
    sweep = [int(s) for s in args.sweep.split(",") if s.strip()]
    for m in args.models.split(","):
        bench_model(Path(m), args.work, [x.strip() for x in args.mixes.split(",")], args.threads, sweep,
                    args.repeat, rec, args.llama_convert)
    rec.save()
    print(report({"meta": rec.meta, "rows": rec.rows}, args.threads))


if __name__ == "__main__":
    main()
