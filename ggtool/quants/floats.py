"""F32, F16 and BF16: not block types, but they go through the same registry."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import QuantType


class F32Type(QuantType, qtype=T.F32):
    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        return np.ascontiguousarray(x, dtype="<f4").view(np.uint8)

    @classmethod
    def dequantize_rows(cls, q):
        return np.ascontiguousarray(q).view("<f4").astype(np.float32)


class F16Type(QuantType, qtype=T.F16):
    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32).astype("<f2")).view(np.uint8)

    @classmethod
    def dequantize_rows(cls, q):
        q = np.ascontiguousarray(q)
        native = _native_f16()
        if native is None:
            return q.view("<f2").astype(np.float32)
        out = np.empty(q.shape[:-1] + (q.shape[-1] // 2,), dtype=np.float32)
        native(q, out)  # exact, F16C where available: ~4x numpy's cast
        return out


def _native_widen():
    import os
    if os.environ.get("GGTOOL_FORCE_NUMPY", "") not in ("", "0"):
        return None
    try:
        from .._native import widen
    except ImportError:
        return None
    return widen


def widen(raw: np.ndarray, kind: str, out: np.ndarray) -> float:
    """Stored values -> float32 in `out`, in one pass, and the largest |x| among them: NaN if
    any is NaN, else inf if any is infinite (so the caller learns from this pass both that the
    tensor is finite and whether it fits an fp16-scaled type). kind: "BF16", "F16" or "F32";
    raw: the stored bytes (any array over them: uint8, uint16 bits, float16, float32)."""
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    flat = out.reshape(-1)
    width = 4 if kind == "F32" else 2
    if kind not in ("BF16", "F16", "F32") or out.dtype != np.float32 or raw.nbytes != flat.size * width:
        raise ValueError(f"widen: {raw.nbytes} bytes of {kind} into a {out.dtype} array of {flat.size}")
    native = _native_widen()
    if native is not None:
        return native(kind, raw, flat.view(np.uint8))
    if kind == "BF16":
        bits = flat.view(np.uint32)
        np.copyto(bits, raw.view("<u2"), casting="unsafe")
        bits <<= 16
    else:
        np.copyto(flat, raw.view("<f2" if kind == "F16" else "<f4"), casting="unsafe")
    return absmax(flat)


def absmax(x: np.ndarray) -> float:
    """max |x| of a float32 array: NaN if any is NaN, else inf if any is infinite, 0 if empty."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.size:
        return 0.0
    native = _native_widen()
    if native is not None:
        return native("F32", x.reshape(-1).view(np.uint8), None)
    return float(np.max(np.abs(x)))


def _native_f16():
    import os
    if os.environ.get("GGTOOL_FORCE_NUMPY", "") not in ("", "0"):
        return None
    try:
        from .._native import f16_to_f32
    except ImportError:
        return None
    return f16_to_f32


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bits; NaN stays a quiet NaN."""
    n = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    nan = (n & 0x7FFFFFFF) > 0x7F800000
    r = ((n.astype(np.uint64) + (0x7FFF + ((n >> 16) & 1))) >> 16).astype(np.uint16)
    return np.where(nan, ((n >> 16) | 0x40).astype(np.uint16), r)


class BF16Type(QuantType, qtype=T.BF16):
    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        return f32_to_bf16_bits(x).astype("<u2").view(np.uint8)

    @classmethod
    def dequantize_rows(cls, q):
        bits = np.ascontiguousarray(q).view("<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
