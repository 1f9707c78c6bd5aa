"""Q4_0, Q4_1, Q5_0, Q5_1, Q6_K: ggtool's quantizer against libggml's (llama.cpp).

For each type, without and with an importance matrix, prints
  * err ratio: our weighted squared error / libggml's, sum(w*(x - x_hat)^2), w = imatrix or 1
    (per data set: random gaussian, random heavy-tailed, noised SmolLM2 weights);
  * same: the fraction of blocks whose bytes equal libggml's;
  * speed: single-thread M weights/s (best thread CPU time of --repeat, interleaved), ours (C
    kernel, or numpy if not built) vs libggml's ggml_quantize_chunk, on the same rows.

    .venv/bin/python benchmarks/quant_legacy_vs_ggml.py [--rows 256] [--repeat 5] [--no-real]
"""

from __future__ import annotations

import sys

import numpy as np
from _common import (Table, error_ratio, ggml_quantize, imatrix_for, parser, quants, same_blocks,
                     smollm2_rows, speed)

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K"]


def main() -> int:
    ap = parser(__doc__.splitlines()[0], repeat=5)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--no-real", action="store_true", help="skip the SmolLM2 weights")
    args = ap.parse_args()

    rng = np.random.default_rng(7)
    n = 4096
    data = {
        "gaussian": rng.standard_normal((args.rows, n)).astype(np.float32),
        "student-t3": rng.standard_t(3, (args.rows, n)).astype(np.float32),
    }
    if not args.no_real:  # rows of 1536 and 576
        data.update(smollm2_rows({"blk.5.ffn_down.weight": None, "blk.5.attn_q.weight": None}, args.rows,
                                 seed=0, label=lambda name: "smollm2:" + name.split(".")[2]))

    print(f"backend: {quants.backend_for('Q4_0')}; single thread; rows of {n} for speed", file=sys.stderr)
    table = Table(("type", "5"), ("imatrix", "7"), ("data", "17"), ("err ours/ggml", "13.4f"), ("same", "6.3f"))
    speed_rows = []
    for t in args.types.split(","):
        for with_im in (False, True):
            for name, x in data.items():
                if x.shape[1] % quants.get_type(t).block_size:
                    continue
                im = imatrix_for(x.shape[1]) if with_im else None
                ours = quants.quantize(x, t, im, threads=1)
                theirs = ggml_quantize(x, t, im)
                table.row(t, "yes" if with_im else "no", name, error_ratio(x, t, im, ours, theirs),
                          same_blocks(ours, theirs, t))
            im = imatrix_for(n) if with_im else None
            speed_rows.append((t, "yes" if with_im else "no", *speed(data["gaussian"], t, im, args.repeat)))
    print()
    table = Table(("type", "5"), ("imatrix", "7"), ("ours M/s", "9.1f"), ("ggml M/s", "9.1f"), ("ratio", "6.2f"))
    for t, with_im, so, sg in speed_rows:
        table.row(t, with_im, so, sg, so / sg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
