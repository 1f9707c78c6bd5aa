"""A Hugging Face checkpoint folder (F32 safetensors + JSON files), written atomically.

    with HFFolder(out_dir) as tmp:          # tmp = out_dir.incomplete, renamed into place on success
        write_json(tmp / "config.json", {...})
        write_safetensors(tmp / "model.safetensors", [(name, shape, load_fn), ...])
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


class HFFolder:
    """Build a folder beside its target and rename it into place only when complete."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out = Path(out_dir)
        self.tmp = self.out.with_name(self.out.name + ".incomplete")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        shutil.rmtree(self.out, ignore_errors=True)
        os.replace(self.tmp, self.out)
        return False


def safetensors_header(entries: Iterable[tuple[str, str, list[int]]]) -> bytes:
    """The length prefix and JSON header of a safetensors file whose tensors (name, dtype such as
    "F32" or "BF16", shape) follow in this order; padded to 8 bytes as the reference writer does."""
    size = {"F32": 4, "F16": 2, "BF16": 2}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape in entries:
        nbytes = size[dtype] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(path: Path, items: Iterable[tuple[str, list[int], Callable[[], np.ndarray]]]) -> None:
    """F32 safetensors, streamed: the header from the shapes, then one tensor at a time
    (each `load()` called only when its turn comes)."""
    items = list(items)
    with open(path, "wb") as f:
        f.write(safetensors_header((name, "F32", shape) for name, shape, _ in items))
        for _, shape, load in items:
            f.write(np.ascontiguousarray(load(), dtype="<f4").tobytes())


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
