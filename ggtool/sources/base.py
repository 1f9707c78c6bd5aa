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


def order_key(name: str) -> tuple:
    """llama.cpp's tensor order: token_embd/rope_freqs, the blocks in order, then the rest."""
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)))
    return (0 if name.startswith(("token_embd", "rope_freqs")) else 2, 0)
