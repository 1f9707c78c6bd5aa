"""What the converter reads: a Hugging Face checkpoint folder or a GGUF file, seen the same way
(sources.base.Source). `open_source(path)` picks the kind.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import Source
from .gguf import GGUFSource
from .hf import PICKLE_SUFFIXES, HFCheckpoint, HFSource, read_json


def open_source(path: str | Path) -> Source:
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".gguf":
        return GGUFSource(p)
    if p.is_file():
        with open(p, "rb") as fh:
            if fh.read(4) == b"GGUF":
                return GGUFSource(p)
        if p.suffix in PICKLE_SUFFIXES:
            raise InputError(f"{p.name} is a pickle file; ggtool never unpickles",
                             hint="use the model's safetensors checkpoint folder or a GGUF")
        raise InputError(f"{p} is neither a checkpoint folder nor a GGUF file",
                         hint="give a Hugging Face checkpoint folder or a .gguf file")
    return HFSource(p)


__all__ = ["Source", "HFSource", "HFCheckpoint", "GGUFSource", "open_source", "read_json"]
