"""IQ4_NL / IQ4_XS: our quantizer vs libggml's (ggml_quantize_chunk, in process).

For random data and noised SmolLM2-135M weights, with and without an imatrix:
  * error ratio ours / libggml of sum(w * (x - x_hat)^2) (w = imatrix or 1), per data set;
  * the fraction of blocks where our exact reproduction of llama.cpp's algorithm
    (quantize_rows_llama, numpy) gives libggml's bytes;
  * single-thread speed in million weights per second (thread CPU time, best of --repeat,
    interleaved), ours (C kernel) vs libggml.

    .venv/bin/python benchmarks/quant_iq4_vs_ggml.py [--rows 256] [--repeat 3]
"""

from __future__ import annotations

import numpy as np
from _common import Table, error_ratio, ggml_quantize, imatrix_for, parser, quants, smollm2_rows, speed

from ggtool.quants.iq4_nl_iq4_xs import IQ4_NL, IQ4_XS

N = 1536


def main():
    args = parser(__doc__).parse_args()
    rng = np.random.default_rng(0)
    sets = {"gaussian": rng.standard_normal((args.rows, N)).astype(np.float32)}
    sets.update(smollm2_rows({"blk.3.ffn_down.weight": N, "blk.10.attn_q.weight": N,
                              "blk.20.ffn_up.weight": N}, args.rows))

    table = Table(("type", "7"), ("data", "22"), ("imatrix", "7"), ("err ours/ggml", "13.4f"),
                  ("llama bytes =", "13.4f"), ("ours Mw/s", "9.2f"), ("ggml Mw/s", "9.2f"))
    for cls in (IQ4_NL, IQ4_XS):
        name = cls.qtype.name
        for dname, x in sets.items():
            for im in (None, imatrix_for(N)):
                ratio = error_ratio(x, name, im, quants.quantize(x, name, imatrix=im, threads=1),
                                    ggml_quantize(x, name, im))
                sub = x[:64]
                ll = cls.quantize_rows_llama(sub, im).reshape(-1, cls.type_size)
                same = (ll == ggml_quantize(sub, name, im).reshape(-1, cls.type_size)).all(1).mean()
                table.row(name, dname, "yes" if im is not None else "no", ratio, same,
                          *speed(x, name, im, args.repeat))


if __name__ == "__main__":
    main()
