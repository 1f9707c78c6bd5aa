"""The quant-type registry.

A type subclasses `QuantType` with `qtype=GGMLQuantizationType.X`; it registers itself, takes
its block size and bytes per block from gguf-py's GGML_QUANT_SIZES, and writes
`quantize_rows` / `dequantize_rows` on (nrows, n_per_row) arrays. The numpy helpers the types
share are in primitives.py (arithmetic, fp16, bit packing) and searches.py (llama.cpp's
scale searches).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gguf import GGMLQuantizationType, GGML_QUANT_SIZES


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
