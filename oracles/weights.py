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


def imatrix(kind: str | None, n: int) -> np.ndarray | None:
    """None (kind None) or a fresh (n,) importance matrix of a named kind:

    lognormal           imatrix_for(n)
    with_zeros          lognormal with every 5th column 0 (dead input columns happen)
    lognormal_s3        imatrix_for(n, 3)
    zeros_and_block_s3  lognormal_s3 with every 3rd column and columns 32..63 (a whole
                        32-block, when n >= 64) 0
    random_zeros_s3     lognormal_s3 with a random 30% of the columns 0
    """
    if kind is None:
        return None
    if kind in ("lognormal", "with_zeros"):
        im = imatrix_for(n)
        if kind == "with_zeros":
            im[::5] = 0
        return im
    im = imatrix_for(n, 3)
    if kind == "lognormal_s3":
        return im
    if kind == "zeros_and_block_s3":
        im[::3] = 0
        im[32:64] = 0
        return im
    if kind == "random_zeros_s3":
        im[np.random.default_rng(3).random(n) < 0.3] = 0.0
        return im
    raise ValueError(f"unknown imatrix kind {kind!r}")


def noised(x: np.ndarray, seed, rel: float = 0.05) -> np.ndarray:
    """x + N(0, (rel * std(x))^2), float32. Real weights sit on their Q4_1 grid; without the
    noise re-quantizing them looks free. seed: an int or a np.random.Generator (shared draws)."""
    rng = np.random.default_rng(seed)
    return (x + rng.standard_normal(x.shape) * (rel * x.std())).astype(np.float32)


def noised_rows(weights, name: str, rows: int | None, seed, n: int | None = None,
                rel: float = 0.05) -> np.ndarray:
    """The first `rows` rows (all if None) of real tensor `name` from a name -> array mapping
    (the smollm2_weights fixture), noised. n: first flatten the tensor into rows of n values
    (SmolLM2's 576-long rows are no multiple of 256)."""
    w = weights[name]
    w = w.reshape(-1, w.shape[-1]) if n is None else w.reshape(-1)[: w.size // n * n].reshape(-1, n)
    return noised(w[:rows], seed, rel)
