"""Quantize and dequantize GGML tensor data: numpy reference plus an optional C backend.

    quantize(x, "Q4_K", imatrix=None, threads=None) -> uint8 array (..., row_bytes)
    dequantize(data, "Q4_K", shape) -> float32 array of `shape`

The C extension (ggtool._native) is used for every type it has a kernel for, unless
GGTOOL_FORCE_NUMPY=1. Both give identical bytes; tests run against both.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGMLQuantizationType

from ..errors import QuantError  # noqa: F401  (re-exported)
from .base import QuantType
from .floats import absmax, widen  # noqa: F401  (re-exported)
# Each module registers the types it holds, in this order (type_names() and the help list them
# so): F32 F16 BF16, Q8_0, Q4_0 Q5_0 Q4_1 Q5_1, IQ4_NL IQ4_XS, Q2_K Q3_K, Q4_K Q5_K, Q6_K.
from . import floats, q8_0, q4_0_q4_1_q5_0_q5_1, iq4_nl_iq4_xs  # noqa: F401,I001
from . import q2_k_q3_k, q4_k_q5_k, q6_k  # noqa: F401

try:
    from .. import _native  # type: ignore[attr-defined]
    NATIVE_KERNELS = frozenset(_native.kernels())
except ImportError:  # no compiler at install time: numpy only
    _native = None
    NATIVE_KERNELS = frozenset()

F16_MAX = 65504.0
BLOCK_MAX = 1e6  # block scales are fp16: beyond this some types' d or dmin would overflow to inf
MIN_WEIGHTS_PER_TASK = 1 << 16  # smallest piece of work handed to a thread
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per thread count (starting threads per tensor costs more than Q8_0)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ggtool-quant")
    return _POOLS[threads]


def force_numpy() -> bool:
    return os.environ.get("GGTOOL_FORCE_NUMPY", "") not in ("", "0")


def type_names() -> list[str]:
    return [t.name for t in QuantType.registry]


def get_type(qtype) -> type[QuantType]:
    """Look up by name ('q4_k' too) or GGMLQuantizationType."""
    if isinstance(qtype, type) and issubclass(qtype, QuantType):
        return qtype
    try:
        key = qtype if isinstance(qtype, GGMLQuantizationType) else GGMLQuantizationType[str(qtype).upper()]
        return QuantType.registry[key]
    except KeyError:
        shown = qtype.name if isinstance(qtype, GGMLQuantizationType) else repr(qtype)
        raise QuantError(
            f"unknown or unsupported tensor type {shown}",
            hint="supported types are " + ", ".join(type_names()),
        ) from None


def backend_for(qtype) -> str:
    t = get_type(qtype)
    if t.qtype.name in NATIVE_KERNELS and not force_numpy():
        return "native"
    return "numpy"


def all_finite(x: np.ndarray) -> bool:
    """One pass, no mask: a float64 sum of float32 values overflows only through NaN/Inf."""
    return bool(np.isfinite(np.sum(x, dtype=np.float64)))


def check_range(x: np.ndarray, qtype, name: str = "tensor", amax: float | None = None) -> None:
    """Refuse values whose fp16 scales (or F16 values) would overflow: llama.cpp rejects a row
    with an infinite scale, and an F16 inf is silent damage. amax: max |x|, when known."""
    t = get_type(qtype)
    if not x.size or t.qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.BF16):
        return
    if amax is None:
        amax = max(float(x.max()), -float(x.min()))
    limit = F16_MAX if t.qtype == GGMLQuantizationType.F16 else BLOCK_MAX
    if amax > limit:
        raise QuantError(
            f"{name}: |value| up to {amax:.3g} does not fit {t.qtype.name} (fp16 scales; limit {limit:.3g})",
            hint="use --type BF16 or F32 for this model (its weights are far outside the usual range)",
        )


def _check_input(x: np.ndarray, t: type[QuantType], imatrix, name: str, finite_known: bool = False) -> None:
    n = x.shape[-1]
    if n % t.block_size:
        raise QuantError(
            f"{name}: row length {n} is not a multiple of {t.qtype.name}'s block size {t.block_size}",
            hint="use a type with a smaller block (e.g. Q8_0, Q5_0, IQ4_NL for 32) or F16",
        )
    if t.block_size > 1 and not finite_known and not all_finite(x):
        bad = np.argwhere(~np.isfinite(x.reshape(-1, n)))[0]
        raise QuantError(
            f"{name}: non-finite value (NaN or Inf) in row {bad[0]}, column {bad[1]}",
            hint="the source weights are damaged; they cannot be quantized",
        )
    if imatrix is not None:
        if imatrix.shape != (n,):
            raise QuantError(f"{name}: imatrix has {imatrix.size} values, the rows have {n}")
        if not np.isfinite(imatrix).all() or (imatrix < 0).any():
            raise QuantError(f"{name}: imatrix values must be finite and >= 0")


def quantize(x, qtype, imatrix=None, threads: int | None = None, name: str = "tensor",
             finite_known: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """float array (..., n) -> uint8 (..., row_bytes) in GGML layout.

    imatrix: (n,) importance weights for every row, or (n_expert, n) for a 3-D (n_expert, rows,
    n) tensor of stacked experts, each expert's rows weighted by its own row, as llama.cpp does.

    finite_known: the caller already checked for NaN/Inf (skips a pass over the data).
    out: a uint8 array of the result's size to write into (a reused buffer), else a new one."""
    t = get_type(qtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    lead = x.shape[:-1]
    n = x.shape[-1]
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.ndim == 2:  # a MoE's stacked experts: one importance row per expert (llama.cpp)
            if x.ndim != 3 or imatrix.shape != (x.shape[0], n):
                raise QuantError(f"{name}: imatrix of shape {imatrix.shape} does not fit tensor {x.shape}",
                                 hint="a 3-D tensor takes one imatrix row per expert")
            return np.stack([quantize(x[e], t, imatrix[e], threads, name, finite_known)
                             for e in range(x.shape[0])])
    _check_input(x, t, imatrix, name, finite_known)
    rows = x.reshape(-1, n)
    nrows = rows.shape[0]
    if out is None:
        out = np.empty((nrows, t.row_bytes(n)), dtype=np.uint8)
    else:
        if out.dtype != np.uint8 or out.size != nrows * t.row_bytes(n) or not out.flags.c_contiguous:
            raise ValueError(f"{name}: out must be {nrows * t.row_bytes(n)} contiguous bytes")
        out = out.reshape(nrows, t.row_bytes(n))
    use_native = t.qtype.name in NATIVE_KERNELS and not force_numpy()

    def work(lo: int, hi: int) -> None:
        if use_native:
            _native.quantize(t.qtype.name, rows[lo:hi], hi - lo, n, imatrix, out[lo:hi])
        else:
            out[lo:hi] = t.quantize_rows(rows[lo:hi], imatrix)

    threads = threads or os.cpu_count() or 1
    # a few chunks per thread, each big enough that handing it over costs nothing
    step = max(1, -(-nrows // (threads * 4)), MIN_WEIGHTS_PER_TASK // n)
    chunks = [(lo, min(lo + step, nrows)) for lo in range(0, nrows, step)]
    if threads <= 1 or len(chunks) <= 1:
        for lo, hi in chunks:
            work(lo, hi)
    else:
        pool = _pool(threads)
        for f in [pool.submit(work, lo, hi) for lo, hi in chunks]:
            f.result()
    return out.reshape(*lead, t.row_bytes(n))


def dequantize(data: np.ndarray, qtype, shape) -> np.ndarray:
    """uint8 GGML data -> float32 array of `shape` (numpy shape, row length last)."""
    t = get_type(qtype)
    shape = tuple(int(s) for s in shape)
    n = shape[-1]
    q = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, t.row_bytes(n))
    return t.dequantize_rows(q).reshape(shape)


def row_bytes(qtype, n_per_row: int) -> int:
    return get_type(qtype).row_bytes(n_per_row)
