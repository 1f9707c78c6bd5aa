#!/usr/bin/env python3
"""Measured allocation (`ggtool quantize --quant MIX`, rules `sensitivity`) against llama.cpp's
mix (`llama_model_quantize`) at the same file size, on the model's output.

    python benchmarks/allocation_vs_llamacpp.py [--models smollm2,klike] [--mixes Q2_K,...]
        [--chunks 8] [--ctx 512] [--threads 2] [--work DIR] [--json FILE]

For each model (benchmarks/_alloc_models.py: SmolLM2-135M made continuous; a generated
K-shaped llama) and each mix, both without an imatrix and with the same imatrix (collected by
`ggtool imatrix` on ggtool's calibration text; llama.cpp's side gets it through
llama_model_quantize_params.imatrix, i.e. libggml's ggml_quantize_chunk with those weights and
the mix rules' imatrix_available, exactly as llama-quantize --imatrix):
- file sizes (ours never larger, within 1%), mean KLD, KLD p99, same-top %, perplexity against
  the F16 base on held-out text (Alice's Adventures in Wonderland, ggtool's evaluation text; the
  sensitivity and the imatrix only ever see the calibration text);
- the predicted KLD of both files from the sensitivity model vs the measured one (held-out
  check of the predictor: Spearman rank correlation and measured/predicted ratios);
- cost: the first sensitivity measurement (seconds), and a later quantization from the cache
  against llama_model_quantize's time in the same run (ratio).
The machine is shared: times are noisy; the ratios come from runs interleaved in one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _alloc_models import MODELS  # noqa: E402

from ggtool import evaluate, imatrix as imx  # noqa: E402
from ggtool.convert import convert  # noqa: E402
from ggtool.formats.gguf_reader import tensor_types  # noqa: E402
from ggtool.formats.imatrix import read as read_imatrix, write_gguf  # noqa: E402
from ggtool.llamacpp.quantize import llama_quantize_file  # noqa: E402
from ggtool.plan import llamacpp as mixes, sensitivity  # noqa: E402

MIXES = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K")


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def run_model(name: str, work: Path, args, log) -> dict:
    t0 = time.perf_counter()
    f16 = MODELS[name](work) if name in MODELS else Path(name)  # or an F16 GGUF of your own
    name = name if name in MODELS else f16.stem
    log(f"[{name}] base {f16.name} ({f16.stat().st_size / 1e6:.0f} MB), {time.perf_counter() - t0:.0f} s")
    imf = work / f"{name}.imatrix.gguf"
    if not imf.exists():
        t = time.perf_counter()
        write_gguf(imx.collect(f16, chunks=args.imatrix_chunks, progress=False,
                               threads=sensitivity.eval_threads(args.threads)), imf)
        log(f"[{name}] imatrix on the calibration text: {time.perf_counter() - t:.0f} s")
    im = read_imatrix(imf)
    text, label = evaluate.read_text(None)
    base = evaluate.base_logprobs(f16, text, ctx=args.ctx, chunks=args.chunks, cache_root=work / "logprobs",
                                  threads=sensitivity.eval_threads(args.threads), progress=False)
    log(f"[{name}] base log-probs: {base.tokens_scored} tokens of {label}")
    cost = {}
    sens = {}
    for tag, m in (("none", None), ("imatrix", im)):
        key = sensitivity.cache_key(f16, m)
        cached = sensitivity.load_cached(key) is not None
        t = time.perf_counter()
        sens[tag] = sensitivity.get(f16, m, threads=args.threads, progress=False, log=log)
        cost[f"sensitivity_{tag}_s"] = None if cached else round(time.perf_counter() - t, 1)
        if cached:
            cost[f"sensitivity_{tag}_s_first"] = sens[tag].seconds.get("total")
        log(f"[{name}] sensitivity ({tag}): {sens[tag].seconds}")
    rows = []
    ratios = []
    eth = sensitivity.eval_threads(args.threads)
    for mix in args.mixes:
        ftype = mixes.get_mix(mix).ftype
        for tag, m in (("none", None), ("imatrix", im)):
            weights = None if m is None else {n: m.weights(n) for n in m.entries}
            theirs = work / f"{name}.{mix}.{tag}.llamacpp.gguf"
            ours = work / f"{name}.{mix}.{tag}.ggtool.gguf"
            for p in (theirs, ours):
                p.unlink(missing_ok=True)
            t = time.perf_counter()
            llama_quantize_file(f16, theirs, ftype, nthread=args.threads, imatrix=weights)
            t_llama = time.perf_counter() - t
            t = time.perf_counter()
            res = convert(f16, ours, mix, rules="sensitivity", imatrix=m, threads=args.threads, progress=False)
            t_ours = time.perf_counter() - t
            ratios.append(t_ours / t_llama)
            st_l = evaluate.kld(base, theirs, threads=eth, progress=False)
            st_o = evaluate.kld(base, ours, threads=eth, progress=False)
            s = sens[tag]
            row = {"model": name, "mix": mix, "imatrix": tag,
                   "bytes_llamacpp": theirs.stat().st_size, "bytes_ggtool": ours.stat().st_size,
                   "kld_llamacpp": st_l.kld_mean, "kld_ggtool": st_o.kld_mean,
                   "kld_ratio": st_o.kld_mean / st_l.kld_mean,
                   "kld_p99_llamacpp": st_l.kld_p99, "kld_p99_ggtool": st_o.kld_p99,
                   "same_top_llamacpp": st_l.same_top_pct, "same_top_ggtool": st_o.same_top_pct,
                   "ppl_llamacpp": st_l.ppl, "ppl_ggtool": st_o.ppl, "ppl_base": st_l.ppl_base,
                   "pred_llamacpp": s.predict(tensor_types(theirs)), "pred_ggtool": s.predict(res.types),
                   "t_llamacpp_s": round(t_llama, 2), "t_ggtool_s": round(t_ours, 2),
                   "summary": res.allocation.summary if res.allocation else ""}
            rows.append(row)
            log(f"[{name}] {mix:<7} {tag:<8} KLD {row['kld_ggtool']:.5f} vs {row['kld_llamacpp']:.5f} "
                f"(x{row['kld_ratio']:.3f}), bytes {row['bytes_ggtool']} vs {row['bytes_llamacpp']}, "
                f"time x{t_ours / t_llama:.2f}; {row['summary']}")
            if not args.keep:
                theirs.unlink()
                ours.unlink()
    meas = [r["kld_" + k] for r in rows for k in ("llamacpp", "ggtool")]
    pred = [r["pred_" + k] for r in rows for k in ("llamacpp", "ggtool")]
    cost["quantize_from_cache_ratio_median"] = round(float(np.median(ratios)), 3)
    return {"model": name, "rows": rows, "cost": cost, "eval_text": label, "tokens_scored": base.tokens_scored,
            "prediction": {"spearman": spearman(pred, meas),
                           "measured_over_predicted": [round(a / b, 3) for a, b in zip(meas, pred)]},
            "fit": {k: s.measurements for k, s in sens.items()}}


def table(res: dict) -> str:
    out = [f"\n{res['model']} ({res['tokens_scored']} tokens of {res['eval_text']} scored; "
           f"prediction vs measured: Spearman {res['prediction']['spearman']:.3f})\n",
           "| mix | imatrix | MB llama.cpp | MB ggtool | KLD llama.cpp | KLD ggtool | ratio | p99 llama.cpp | "
           "p99 ggtool | same-top % l/g | PPL l/g |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        out.append(f"| {r['mix']} | {r['imatrix']} | {r['bytes_llamacpp'] / 1e6:.2f} | {r['bytes_ggtool'] / 1e6:.2f} | "
                   f"{r['kld_llamacpp']:.5f} | {r['kld_ggtool']:.5f} | **{r['kld_ratio']:.3f}** | "
                   f"{r['kld_p99_llamacpp']:.4f} | {r['kld_p99_ggtool']:.4f} | "
                   f"{r['same_top_llamacpp']:.2f} / {r['same_top_ggtool']:.2f} | "
                   f"{r['ppl_llamacpp']:.3f} / {r['ppl_ggtool']:.3f} |")
    c = res["cost"]
    out.append(f"\ncost: {json.dumps(c)}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2,klike", help="smollm2, klike, or paths of F16 GGUFs")
    ap.add_argument("--mixes", default=",".join(MIXES))
    ap.add_argument("--chunks", type=int, default=8, help="evaluation chunks of --ctx tokens (default 8)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--imatrix-chunks", type=int, default=None,
                    help="chunks of 512 calibration tokens for the imatrix (default: the whole text)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "ggtool-bench-alloc"))
    ap.add_argument("--keep", action="store_true", help="keep the quantized files")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args()
    args.mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    results = []
    for name in args.models.split(","):
        res = run_model(name.strip(), work, args, log)
        results.append(res)
        print(table(res), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    print(f"\n{os.cpu_count()} cores (shared machine), threads {args.threads}, total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
