"""What the converter reads, seen one way: a source knows its GGUF architecture, says what it
knows as metadata (data, written by formats.gguf_writer), lists its tensors (GGUF names, numpy
shapes, in output order) and loads one tensor at a time as float32 in llama.cpp layout.
Every check that can fail (names, shapes, tokenizer) runs before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..formats.metadata import Metadata
from ..plan.model import ModelInfo

# values per piece the converter reads, quantizes and writes at a time (16 MiB as float32):
# memory follows this, not the largest tensor (a 128k-token embedding is 1-4 GB as float32).
# Smaller pieces also stay in cache between the stages: on a 0.5B model, 4M-value pieces took
# 0.84x the CPU time of 16M-value ones (and 0.6x the peak RSS); 1M-value ones were no faster.
PIECE_VALUES = 1 << 22


def row_spans(shape: tuple[int, ...], limit: int | None = None):
    """(lo, hi) row ranges of a tensor's first axis, each about `limit` (PIECE_VALUES) values,
    at least one row."""
    limit = limit or PIECE_VALUES
    rows = shape[0] if shape else 1
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64))) if shape else 1
    step = max(1, limit // per_row)
    return [(lo, min(rows, lo + step)) for lo in range(0, rows, step)] or [(0, 0)]


@dataclass
class Source:
    arch: str
    info: ModelInfo
    tensors: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def is_quantized(self) -> bool:
        """Does it hold quantized tensors (re-quantizing them loses quality)?"""
        return False

    def metadata(self) -> Metadata: ...
    def load(self, name: str) -> np.ndarray: ...
    def close(self) -> None: ...

    def load_parts(self, name: str) -> Iterator[np.ndarray]:
        """The tensor as consecutive pieces along its first axis (whole, unless a source can
        do better: a MoE's experts one at a time)."""
        yield self.load(name)

    def pieces(self, name: str, pool) -> Iterator[tuple[np.ndarray, float | None]]:
        """load_parts for the streaming converter: consecutive pieces along the first axis
        (row chunks of about PIECE_VALUES values where the source can), each with its largest
        |x| where reading it told (NaN or inf: a value is not finite), else None. A source may
        fill arrays from `pool` (buffers.BufferPool), which the caller gives back when done."""
        for x in self.load_parts(name):
            yield x, None


def order_key(name: str) -> tuple:
    """llama.cpp's tensor order: token_embd/rope_freqs, the blocks in order, then the rest."""
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)))
    return (0 if name.startswith(("token_embd", "rope_freqs")) else 2, 0)
