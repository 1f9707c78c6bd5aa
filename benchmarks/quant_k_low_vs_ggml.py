"""Q2_K / Q3_K: our quantizer vs libggml's (ggml_quantize_chunk, in process).

For random data and noised SmolLM2-135M weights (rows of 1536: ffn_down as is, other tensors
flattened and cut into 1536-long rows), with and without an imatrix:
  * error ratio ours / libggml of sum(w * (x - x_hat)^2) (w = imatrix or 1), per data set;
  * the fraction of blocks where our reproduction of llama.cpp's algorithm (q2_k_llama /
    q3_k_llama, before our refinement) gives libggml's bytes, and where our final bytes do;
  * single-thread speed in million weights per second (thread CPU time, best of --repeat,
    interleaved), ours (C kernel) vs libggml.

    .venv/bin/python benchmarks/quant_k_low_vs_ggml.py [--rows 256] [--repeat 3]
"""

from __future__ import annotations

import numpy as np
from _common import (Table, error_ratio, ggml_quantize, imatrix_for, parser, quants, same_blocks,
                     smollm2_rows, speed)

from ggtool.quants import q2_k_q3_k as k_low

N = 1536


def llama_bytes(name, x, im):
    """Our numpy port of llama.cpp's algorithm alone (no refinement) -> (nb, type_size)."""
    if name == "Q2_K":
        L, sb, d, dmin = k_low.q2_k_llama(x, im)
        return k_low.q2_k_bytes(L, sb & 0xF, sb >> 4, d, dmin)
    L, ls, d = k_low.q3_k_llama(x, im)
    return k_low.q3_k_bytes(L - 4, ls - 32, d)


def main():
    args = parser(__doc__).parse_args()
    rng = np.random.default_rng(0)
    sets = {"gaussian": rng.standard_normal((args.rows, N)).astype(np.float32)}
    sets.update(smollm2_rows({"blk.3.ffn_down.weight": N, "blk.10.attn_q.weight": N,
                              "blk.20.ffn_up.weight": N, "blk.29.ffn_down.weight": N}, args.rows))
    print(f"backend: {quants.backend_for('Q2_K')} / {quants.backend_for('Q3_K')}")
    table = Table(("type", "5"), ("data", "22"), ("imatrix", "7"), ("err ours/ggml", "13.4f"),
                  ("llama bytes=", "12.4f"), ("final bytes=", "12.4f"), ("ours Mw/s", "9.2f"),
                  ("ggml Mw/s", "9.2f"))
    for name in ("Q2_K", "Q3_K"):
        for dname, x in sets.items():
            for im in (None, imatrix_for(N)):
                ours_q = quants.quantize(x, name, imatrix=im, threads=1)
                ggml_q = ggml_quantize(x, name, im)
                sub = x[:64]
                same_llama = same_blocks(llama_bytes(name, sub, im), ggml_quantize(sub, name, im), name)
                table.row(name, dname, "yes" if im is not None else "no",
                          error_ratio(x, name, im, ours_q, ggml_q), same_llama,
                          same_blocks(ours_q, ggml_q, name), *speed(x, name, im, args.repeat))


if __name__ == "__main__":
    main()
