"""A fast, strict GGUF reader: metadata as plain Python values, tensors as views over an mmap.

gguf-py's GGUFReader builds a numpy view per array element; on a 49k-token vocabulary that is
~4 s and ~160 MB before the first tensor. This parses the header with struct in one pass.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from . import mmap_hints
from ..errors import CorruptFile, InputError
from .dtypes import NUMPY, SCALARS

V = GGUFValueType


class PackedStrings(list):
    """A string array kept as its packed GGUF bytes; decoded only if someone reads it.

    Copying a vocabulary from one GGUF to another then costs a memcpy, not 100k decodes."""

    def __init__(self, raw: bytes, n: int):
        super().__init__()
        self.raw, self.n, self._decoded = raw, n, False

    def _decode(self):
        if not self._decoded:
            pos, out = 0, []
            for _ in range(self.n):
                (k,) = struct.unpack_from("<Q", self.raw, pos)
                out.append(self.raw[pos + 8: pos + 8 + k].decode("utf-8"))
                pos += 8 + k
            super().extend(out)
            self._decoded = True

    def __len__(self):
        return self.n

    def __iter__(self):
        self._decode()
        return super().__iter__()

    def __getitem__(self, i):
        self._decode()
        return super().__getitem__(i)

    def __eq__(self, other):
        self._decode()
        return list.__eq__(self, other)


@dataclass(frozen=True)
class KV:
    value: object                   # str, number, bool, or list of those
    vtype: GGUFValueType
    sub_type: GGUFValueType | None  # element type of an array


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]          # numpy order: row length last
    ggml_type: GGMLQuantizationType
    offset: int                     # absolute, in the file
    nbytes: int


class GGUFFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {self.path}: {e}") from None
        self.kv: dict[str, KV] = {}
        self.tensors: list[TensorInfo] = []
        try:
            self._parse()
        except (struct.error, UnicodeDecodeError, ValueError, KeyError) as e:
            self.close()
            raise CorruptFile(f"{self.path.name} is not a valid GGUF file ({e.__class__.__name__}: {e})") from None

    # ------------------------------------------------------------------ parsing
    def _parse(self) -> None:
        mm, pos = self._mm, 0

        def take(fmt: str):
            nonlocal pos
            vals = struct.unpack_from(fmt, mm, pos)
            pos += struct.calcsize(fmt)
            return vals

        def string() -> str:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", mm, pos)
            if pos + 8 + n > len(mm):
                raise ValueError("string runs past the end of the file")
            s = mm[pos + 8: pos + 8 + n].decode("utf-8")
            pos += 8 + n
            return s

        def value(vtype: V):
            nonlocal pos
            if vtype == V.STRING:
                return string()
            if vtype in SCALARS:
                return take(SCALARS[vtype])[0]
            raise ValueError(f"unknown value type {int(vtype)}")

        magic, version = take("<4sI")
        if magic != b"GGUF":
            raise ValueError("bad magic (not a GGUF file)")
        if version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {version}")
        n_tensors, n_kv = take("<QQ")
        for _ in range(n_kv):
            key = string()
            vtype = V(take("<I")[0])
            if vtype == V.ARRAY:
                sub = V(take("<I")[0])
                (n,) = take("<Q")
                if sub == V.STRING:
                    start = pos
                    unpack = struct.Struct("<Q").unpack_from
                    for _ in range(n):
                        pos += 8 + unpack(mm, pos)[0]
                    if pos > len(mm):
                        raise ValueError(f"array {key} runs past the end of the file")
                    val = PackedStrings(mm[start:pos], n)
                elif sub in NUMPY:
                    size = np.dtype(NUMPY[sub]).itemsize * n
                    if pos + size > len(mm):
                        raise ValueError(f"array {key} runs past the end of the file")
                    val = np.frombuffer(mm, NUMPY[sub], n, pos).tolist()
                    pos += size
                else:
                    val = [value(sub) for _ in range(n)]
                self.kv[key] = KV(val, vtype, sub)
            else:
                self.kv[key] = KV(value(vtype), vtype, None)
        align = int(self.get("general.alignment", 32))
        infos = []
        for _ in range(n_tensors):
            name = string()
            (nd,) = take("<I")
            dims = take(f"<{nd}Q")
            t, off = take("<IQ")
            infos.append((name, tuple(int(d) for d in reversed(dims)), GGMLQuantizationType(t), off))
        data_start = self.data_start = -(-pos // align) * align
        for name, shape, t, off in infos:
            bs, ts = GGML_QUANT_SIZES[t]
            n_el = int(np.prod(shape, dtype=np.int64))
            nbytes = n_el // bs * ts
            start = data_start + off
            if start + nbytes > len(mm):
                raise ValueError(f"tensor {name} runs past the end of the file (truncated?)")
            self.tensors.append(TensorInfo(name, shape, t, start, nbytes))

    # ------------------------------------------------------------------ access
    def get(self, key: str, default=None):
        kv = self.kv.get(key)
        return default if kv is None else kv.value

    def raw(self, t: TensorInfo, start: int = 0, end: int | None = None) -> np.ndarray:
        """The tensor's bytes (uint8 view over the mmap), or bytes start..end of them."""
        end = t.nbytes if end is None else end
        mmap_hints.populate(self._mm, t.offset + start, t.offset + end)
        return np.frombuffer(self._mm, np.uint8, end - start, t.offset + start)

    def release(self, t: TensorInfo, start: int = 0, end: int | None = None) -> None:
        """Drop the tensor's pages (or those of bytes start..end) from the resident set
        (see mmap_hints)."""
        end = t.nbytes if end is None else end
        mmap_hints.release(self._mm, t.offset + start, t.offset + end)

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:  # a view is alive; the GC unmaps it
            pass
