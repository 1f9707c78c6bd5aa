"""Test inputs for the quantizers: random data and the edge cases every type must survive."""

from __future__ import annotations

import numpy as np


def edge_cases(n: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> (nrows, n) float32. n must be a multiple of 256 for the K types."""
    rng = np.random.default_rng(seed)
    cases = {
        "gaussian": rng.standard_normal((16, n)),
        "uniform": rng.uniform(-1, 1, (8, n)),
        "zeros": np.zeros((2, n)),
        "constant_pos": np.full((2, n), 0.37),
        "constant_neg": np.full((2, n), -2.5),
        "huge": rng.standard_normal((4, n)) * 6e4,      # near fp16 max after scaling
        "tiny": rng.standard_normal((4, n)) * 1e-6,
        "subnormal": rng.standard_normal((4, n)) * 1e-39,
        "all_positive": np.abs(rng.standard_normal((4, n))),
        "all_negative": -np.abs(rng.standard_normal((4, n))),
        "heavy_tail": rng.standard_t(2, (8, n)),
    }
    outlier = rng.standard_normal((4, n)) * 0.01
    outlier[:, 5] = 40.0
    outlier[1, 200 % n] = -75.0
    cases["single_outlier"] = outlier
    sparse = np.zeros((4, n))
    sparse[:, ::37] = rng.standard_normal((4, len(range(0, n, 37))))
    cases["sparse"] = sparse
    return {k: v.astype(np.float32) for k, v in cases.items()}


def imatrix_for(n: int, seed: int = 1) -> np.ndarray:
    """A plausible importance matrix: positive, spread over two orders of magnitude."""
    rng = np.random.default_rng(seed)
    return (rng.lognormal(0, 1.0, n)).astype(np.float32)


def weighted_sse(x: np.ndarray, xhat: np.ndarray, imatrix: np.ndarray | None = None) -> float:
    """sum(w * (x - xhat)^2) in float64; w = imatrix per column or 1."""
    d = (x.astype(np.float64) - xhat.astype(np.float64)) ** 2
    if imatrix is not None:
        d = d * imatrix.astype(np.float64)[None, :]
    return float(d.sum())
