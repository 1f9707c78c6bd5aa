#!/usr/bin/env python
"""One table for every quant type: our error and single-thread speed against libggml's own
quantizer (ggml_quantize_chunk, in process), on the same rows, measured in the same run.

    python benchmarks/quant_summary.py [--rows 128] [--repeat 3] [--markdown]

Data: 1536-long rows of N(0,1) noise and of noised SmolLM2-135M ffn_down weights (its weights
sit on the Q4_1 grid; the noise makes them continuous). imatrix: a lognormal one.
Error = sum(w * (x - x_hat)^2), w = imatrix or 1. Ratios < 1: ours is better / slower.
The per-family scripts (quant_*_vs_ggml.py) show more detail (byte matches, edge cases).
"""

from __future__ import annotations

import numpy as np

from _common import error_ratio, imatrix_for, parser, smollm2_rows, speed
from ggtool import quants
from oracles.llamacpp import ggml_quantize

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "IQ4_XS", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
N = 1536


def main() -> None:
    ap = parser(__doc__, rows=128)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    data = {"gaussian": np.random.default_rng(0).standard_normal((args.rows, N)).astype(np.float32)}
    data.update(smollm2_rows({"blk.3.ffn_down.weight": None}, args.rows, label=lambda n: "smollm2"))
    im = imatrix_for(N)
    cols = ["type", "err gauss", "err gauss+im", "err smol", "err smol+im",
            "M/s ours", "M/s ggml", "M/s ours+im", "M/s ggml+im"]
    if args.markdown:
        print("| " + " | ".join(cols) + " |\n|" + "---|" + "---:|" * (len(cols) - 1))
    else:
        print("  ".join(f"{c:>11}" for c in cols))
    for qt in TYPES:
        errs = []
        for x in data.values():
            for w in (None, im):
                errs.append(error_ratio(x, qt, w, quants.quantize(x, qt, imatrix=w, threads=1),
                                        ggml_quantize(x, qt, w)))
        x = data["smollm2"]
        s_plain, s_im = speed(x, qt, None, args.repeat), speed(x, qt, im, args.repeat)
        vals = [f"{e:.3f}" for e in errs] + [f"{v:.1f}" for v in (*s_plain, *s_im)]
        if args.markdown:
            print(f"| {qt} | " + " | ".join(vals) + " |", flush=True)
        else:
            print("  ".join(f"{v:>11}" for v in [qt, *vals]), flush=True)


if __name__ == "__main__":
    main()
