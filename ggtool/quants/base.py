"""The quant-type registry and the numpy helpers every reference kernel shares.

A type subclasses `QuantType` with `qtype=GGMLQuantizationType.X`; it registers itself and
writes `quantize_rows` / `dequantize_rows` on (nrows, n_per_row) arrays.

Byte-identity with the C kernels (native/) rests on three rules, which every numpy kernel
follows and every C kernel mirrors:
  * float32 everywhere, operations in the same order (C is built with -ffp-contract=off);
  * reductions over a block are sequential (`seq_sum`), never np.sum (pairwise);
  * rounding helpers below: `nearest_int` (half to even), `round_half_away` (C roundf).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gguf import GGMLQuantizationType, GGML_QUANT_SIZES

F32 = np.float32


class QuantType:
    qtype: ClassVar[GGMLQuantizationType]
    block_size: ClassVar[int]
    type_size: ClassVar[int]
    uses_imatrix: ClassVar[bool] = False

    registry: ClassVar[dict[GGMLQuantizationType, type["QuantType"]]] = {}

    def __init_subclass__(cls, qtype: GGMLQuantizationType | None = None, **kw):
        super().__init_subclass__(**kw)
        if qtype is None:
            return
        cls.qtype = qtype
        cls.block_size, cls.type_size = GGML_QUANT_SIZES[qtype]
        QuantType.registry[qtype] = cls

    @classmethod
    def row_bytes(cls, n_per_row: int) -> int:
        return n_per_row // cls.block_size * cls.type_size

    @classmethod
    def quantize_rows(cls, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        """(nrows, n) float32 -> (nrows, row_bytes) uint8."""
        raise NotImplementedError

    @classmethod
    def dequantize_rows(cls, q: np.ndarray) -> np.ndarray:
        """(nrows, row_bytes) uint8 -> (nrows, n) float32."""
        raise NotImplementedError


# ---------------------------------------------------------------- shared numpy helpers

def seq_sum(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum along `axis` strictly left to right in float32 (what a C loop does)."""
    a = np.moveaxis(np.asarray(a, dtype=F32), axis, -1)
    acc = np.zeros(a.shape[:-1], dtype=F32)
    for j in range(a.shape[-1]):
        acc = acc + a[..., j]
    return acc


def nearest_int(v: np.ndarray) -> np.ndarray:
    """llama.cpp nearest_int: round half to even (valid for |v| < 2^22)."""
    return np.rint(np.asarray(v, dtype=F32)).astype(np.int32)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C roundf: round half away from zero, exactly (no v+0.5 double rounding)."""
    v = np.asarray(v, dtype=F32)
    a = np.abs(v)
    r = np.floor(a)
    r = r + ((a - r) >= F32(0.5)).astype(F32)
    return np.copysign(r, v).astype(np.int32)


def safe_inv(d: np.ndarray) -> np.ndarray:
    """1/d where d != 0, else 0 (float32)."""
    d = np.asarray(d, dtype=F32)
    out = np.zeros_like(d)
    nz = d != 0
    out[nz] = F32(1) / d[nz]
    return out


def fp16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 (...,) -> (..., 2) uint8 little-endian fp16 (round to nearest even)."""
    return np.asarray(v, dtype=F32).astype("<f2").reshape(*np.shape(v), 1).view(np.uint8)


def fp16_value(b: np.ndarray) -> np.ndarray:
    """(..., 2) uint8 -> (...,) float32."""
    return np.ascontiguousarray(b).view("<f2")[..., 0].astype(F32)


def fp16_round(v: np.ndarray) -> np.ndarray:
    """The float32 value an fp16 store then load gives back."""
    return np.asarray(v, dtype=F32).astype(np.float16).astype(F32)
