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
