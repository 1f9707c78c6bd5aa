"""A strict, mmap-based safetensors reader (no torch, never a pickle).

Every header field is validated before any data is touched, so a truncated or corrupt file
fails with a CorruptFile error naming the file and the problem, not a numpy traceback.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import mmap_hints
from ..errors import CorruptFile, InputError

# safetensors dtype -> (numpy dtype of the stored bits, bytes per element)
DTYPES = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),   # converted to float32 on read
}
MAX_HEADER = 100 * 1024 * 1024


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _short(v, n: int = 60) -> str:
    """repr(v), cut to n characters: a header may hold a 100k-element shape or a 1 MB name."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def n_elements(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class SafetensorsFile:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._mm = None
        self.entries: dict[str, TensorEntry] = {}
        self.metadata: dict = {}
        self._parse_header()

    def _fail(self, what: str) -> CorruptFile:
        return CorruptFile(f"{self.path.name}: {what}")

    def _parse_header(self) -> None:
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise self._fail(f"file is {size} bytes, too short for a safetensors header")
                (n,) = struct.unpack("<Q", head)
                if n > MAX_HEADER or 8 + n > size:
                    raise self._fail(f"header claims {n} bytes but the file has {size} (truncated?)")
                raw = f.read(n)
        except OSError as e:
            raise InputError(f"cannot read {self.path}: {e.strerror}", hint="check the path and its permissions") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._fail(f"header is not valid JSON ({e})") from None
        except RecursionError:
            raise self._fail("header nests JSON too deeply") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
        data_start = 8 + n
        data_len = size - data_start
        self.metadata = header.pop("__metadata__", None) or {}
        if not isinstance(self.metadata, dict):
            raise self._fail("__metadata__ is not a JSON object")
        spans = []
        for name, info in header.items():
            what = f"tensor {_short(name)}"
            if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
                raise self._fail(f"{what} has a malformed header entry (needs dtype, shape and data_offsets)")
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
                raise self._fail(f"{what} has shape {_short(shape)}; expected a list of non-negative integers")
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(v) for v in offsets)):
                raise self._fail(f"{what} has data_offsets {_short(offsets)}; expected [begin, end]")
            if not isinstance(dtype, str):
                raise self._fail(f"{what} has dtype {_short(dtype)}; expected a name such as \"F16\"")
            if dtype not in DTYPES:
                raise InputError(
                    f"{self.path.name}: {what} has dtype {_short(dtype)}",
                    hint="ggtool reads F32, F16 and BF16 safetensors checkpoints",
                )
            shape = tuple(shape)
            a, b = offsets
            e = TensorEntry(name, dtype, shape, data_start + a, data_start + b)
            if not (0 <= a <= b <= data_len):
                raise self._fail(
                    f"{what} lies at bytes {a}..{b} but the data section has {data_len} (truncated?)")
            if b - a != e.n_elements * DTYPES[dtype][1]:
                raise self._fail(
                    f"{what}: shape {_short(list(shape))} x {dtype} needs {_short(e.n_elements * DTYPES[dtype][1])} "
                    f"bytes, header gives {b - a}")
            spans.append((a, b, name))
            self.entries[name] = e
        spans.sort()
        for (a0, b0, n0), (a1, b1, n1) in zip(spans, spans[1:]):
            if a1 < b0:
                raise self._fail(f"tensors {_short(n0)} and {_short(n1)} overlap")

    def _map(self):
        if self._mm is None:
            with open(self.path, "rb") as f:
                if self.path.stat().st_size == 0:
                    raise self._fail("file is empty")
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm

    def raw(self, name: str) -> np.ndarray:
        """The stored array (a zero-copy view over the mmap; BF16 as uint16 bits)."""
        e = self.entries[name]
        dt, _ = DTYPES[e.dtype]
        if e.n_elements == 0:
            return np.zeros(e.shape, dtype=dt)
        mm = self._map()
        mmap_hints.populate(mm, e.start, e.end)
        return np.frombuffer(mm, dtype=dt, count=e.n_elements, offset=e.start).reshape(e.shape)

    def rows(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi (first axis) of a tensor of 2+ dimensions as a zero-copy view, their
        pages faulted in with one call (BF16 as uint16 bits)."""
        e = self.entries[name]
        dt, width = DTYPES[e.dtype]
        row = e.n_elements // e.shape[0] if e.shape[0] else 0
        start, end = e.start + lo * row * width, e.start + hi * row * width
        if end <= start:
            return np.zeros((hi - lo, *e.shape[1:]), dtype=dt)
        mm = self._map()
        mmap_hints.populate(mm, start, end)
        return np.frombuffer(mm, dtype=dt, count=(hi - lo) * row, offset=start).reshape((hi - lo, *e.shape[1:]))

    def release_rows(self, name: str, lo: int, hi: int) -> None:
        """Drop the pages of rows lo..hi from the resident set."""
        if self._mm is not None:
            e = self.entries[name]
            row_bytes = (e.end - e.start) // e.shape[0] if e.shape[0] else 0
            mmap_hints.release(self._mm, e.start + lo * row_bytes, e.start + hi * row_bytes)

    def float32(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array; its pages of the mapping are released after."""
        a = self.raw(name)
        if self.entries[name].dtype == "BF16":
            out = (a.astype(np.uint32) << 16).view(np.float32)
        else:
            out = a.astype(np.float32)  # always a copy
        del a
        self.release(name)
        return out

    def release(self, name: str) -> None:
        """Drop the tensor's pages from the resident set (see mmaputil)."""
        if self._mm is not None:
            e = self.entries[name]
            mmap_hints.release(self._mm, e.start, e.end)

    def close(self) -> None:
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # a view is still alive; the GC will unmap it
                pass
            self._mm = None
