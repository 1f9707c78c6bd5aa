"""Q8_0: blocks of 32 values, fp16 d then 32 int8; x = q*d (C: native/q8_0.c)."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import QuantType
from .primitives import F32, fp16_bytes, fp16_value, round_half_away, safe_inv


class Q8_0(QuantType, qtype=T.Q8_0):
    """d = max|x|/127, q = roundf(x/d); imatrix ignored (as llama.cpp)."""

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        blocks = np.asarray(x, dtype=F32).reshape(-1, 32)  # (nb, 32)
        amax = np.max(np.abs(blocks), axis=1)               # max is order-independent
        d = amax / F32(127)
        with np.errstate(over="ignore"):
            inv = safe_inv(d)
        inv[~np.isfinite(inv)] = 0  # subnormal d: 1/d overflows; fp16(d) is 0 anyway
        q = round_half_away(blocks * inv[:, None]).astype(np.int8)
        out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
        out[:, :2] = fp16_bytes(d)
        out[:, 2:] = q.view(np.uint8)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 34)
        d = fp16_value(b[:, :2])
        vals = b[:, 2:].view(np.int8).astype(F32) * d[:, None]
        return vals.reshape(nrows, -1)
