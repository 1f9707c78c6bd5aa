"""Q4_K / Q5_K: our quantizer against libggml's (ggml_quantize_chunk, in process).

    .venv/bin/python benchmarks/quant_k_high_vs_ggml.py [--rows 256] [--reps 5]

For random data and noised SmolLM2-135M weights (rows of 256-multiples), with and without an
imatrix, prints:
  same    fraction of super-blocks whose bytes equal libggml's (where the polish found nothing
          better, the guard keeps llama.cpp's own result)
  ratio   weighted squared error ours / libggml (< 1: ours is better)
  speed   single-thread M weights/s, ours (C kernel) vs libggml, best thread CPU time of
          --reps, interleaved
It also checks, on a slice, that our first stage alone reproduces libggml bit for bit.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from _common import (Table, error_ratio, ggml_quantize, imatrix_for, parser, quants, same_blocks,
                     smollm2_rows, speed)

TYPES = ("Q4_K", "Q5_K")


def load_data(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    data = {"gaussian": rng.standard_normal((rows, 2048)).astype(np.float32)}
    # 576-long rows flattened to 256-multiples
    data.update(smollm2_rows({"blk.5.ffn_down.weight": 1536, "blk.5.attn_q.weight": 2304,
                              "blk.20.ffn_gate.weight": 2304}, rows, seed=1,
                             label=lambda n: "smollm2 " + n.removesuffix(".weight")))
    return data


def stage1_identical(x, qtype, im) -> bool:
    cls = quants.get_type(qtype)
    radii, cls.radii = cls.radii, ()
    old = os.environ.get("GGTOOL_FORCE_NUMPY")
    os.environ["GGTOOL_FORCE_NUMPY"] = "1"
    try:
        return quants.quantize(x, qtype, imatrix=im).tobytes() == ggml_quantize(x, qtype, im).tobytes()
    finally:
        cls.radii = radii
        if old is None:
            del os.environ["GGTOOL_FORCE_NUMPY"]
        else:
            os.environ["GGTOOL_FORCE_NUMPY"] = old


def main() -> None:
    args = parser(__doc__, repeat=5).parse_args()
    print(f"backend for Q4_K: {quants.backend_for('Q4_K')}", file=sys.stderr)
    data = load_data(args.rows)
    table = Table(("type", "5"), ("data", "26"), ("imatrix", "7"), ("same", "6.3f"), ("ratio", "7.4f"),
                  ("ours M/s", "9.1f"), ("ggml M/s", "9.1f"), ("stage1==ggml", ">12"))
    for qtype in TYPES:
        for name, x in data.items():
            for use_im in (False, True):
                im = imatrix_for(x.shape[1]) if use_im else None
                q_ours = quants.quantize(x, qtype, imatrix=im)
                q_ref = ggml_quantize(x, qtype, im)
                table.row(qtype, name[:26], "yes" if use_im else "no", same_blocks(q_ours, q_ref, qtype),
                          error_ratio(x, qtype, im, q_ours, q_ref), *speed(x, qtype, im, args.repeat),
                          str(stage1_identical(x[:8], qtype, im)))


if __name__ == "__main__":
    main()
