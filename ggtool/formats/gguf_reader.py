"""A fast, strict GGUF reader: metadata as plain Python values, tensors as views over an mmap.

gguf-py's GGUFReader builds a numpy view per array element; on a 49k-token vocabulary that is
~4 s and ~160 MB before the first tensor. This parses the header with struct in one pass.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from . import mmap_hints
from ..errors import CorruptFile, InputError
from .dtypes import NUMPY, SCALARS

V = GGUFValueType



def _q(s: str, limit: int = 60) -> str:
    """A key or tensor name as an error shows it: quoted, and cut when a damaged file makes it
    long (the error stays one short line)."""
    return repr(s) if len(s) <= limit else repr(s[:limit]) + f"... ({len(s)} characters)"

class PackedStrings(list):
    """A string array kept as its packed GGUF bytes; decoded only if someone reads it.

    Copying a vocabulary from one GGUF to another then costs a memcpy, not 100k decodes.
    The reader has checked every length and every string's UTF-8 before it makes one."""

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


class PackedArrays(list):
    """An array of arrays (valid GGUF, rare): the decoded lists, plus `raw`, their exact wire
    bytes, so that a copy keeps every inner element type."""

    def __init__(self, items: list, raw: bytes, n: int):
        super().__init__(items)
        self.raw, self.n = raw, n


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


MAX_DIMS = 4          # GGML_MAX_DIMS
MAX_NAME = 64         # GGML_MAX_NAME: a tensor name llama.cpp accepts is shorter
MAX_NESTING = 8       # arrays of arrays of ...: llama.cpp reads none, gguf-py any; we allow a few
# the fewest bytes one element of each type takes: bounds an array's count by the bytes left
_MIN_SIZE = {**{t: struct.calcsize(f) for t, f in SCALARS.items()}, V.STRING: 8, V.ARRAY: 12}


def _all_utf8(raw: bytes, words: list[int]) -> bool:
    """Is every string of a packed string array (length words at `words`) valid UTF-8? One
    decode of the strings' bytes joined: that is valid and no string starts with a continuation
    byte exactly when each string is valid on its own."""
    a = np.frombuffer(raw, np.uint8)
    w = np.asarray(words, dtype=np.int64)
    keep = np.ones(len(a), dtype=bool)
    keep[(w[:, None] + np.arange(8)).reshape(-1)] = False
    lengths = np.append(w[1:], len(a)) - w - 8
    firsts = (w + 8)[lengths > 0]
    if len(firsts) and ((a[firsts] & 0xC0) == 0x80).any():
        return False  # a string starts with a continuation byte: check them one by one
    try:
        a[keep].tobytes().decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Bad(Exception):
    """A malformed field: what is wrong and the byte offset where it was read."""

    def __init__(self, what: str, at: int):
        super().__init__(what)
        self.what, self.at = what, at


class GGUFFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 24:
                    raise CorruptFile(f"{self.path.name} is {size} bytes: too short for a GGUF header")
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise InputError(f"cannot read {self.path}: {e.strerror or e}",
                             hint="check the path and that you may read the file") from None
        self.kv: dict[str, KV] = {}
        self.tensors: list[TensorInfo] = []
        try:
            self._parse()
        except _Bad as e:
            self.close()
            raise CorruptFile(f"{self.path.name} is not a valid GGUF file: {e.what} (at byte {e.at})") from None

    # ------------------------------------------------------------------ parsing
    def _parse(self) -> None:
        """Every count, length, type and offset is checked against the file before it is used:
        a header that claims 2^60 elements fails here, having allocated nothing."""
        mm, size, pos = self._mm, len(self._mm), 0
        u32, u64 = struct.Struct("<I").unpack_from, struct.Struct("<Q").unpack_from

        def need(n: int, what: str) -> None:
            if n > size - pos:
                raise _Bad(f"{what} runs past the end of the file ({size} bytes; truncated?)", pos)

        def read_u32(what: str) -> int:
            nonlocal pos
            need(4, what)
            (v,) = u32(mm, pos)
            pos += 4
            return v

        def read_u64(what: str) -> int:
            nonlocal pos
            need(8, what)
            (v,) = u64(mm, pos)
            pos += 8
            return v

        def string(what: str) -> str:
            nonlocal pos
            at = pos
            n = read_u64(what)
            need(n, what)
            try:
                s = mm[pos: pos + n].decode("utf-8")
            except UnicodeDecodeError:
                raise _Bad(f"{what} is not valid UTF-8", at) from None
            pos += n
            return s

        def vtype(what: str) -> V:
            at, t = pos, read_u32(what)
            try:
                return V(t)
            except ValueError:
                raise _Bad(f"{what} has unknown value type {t}", at) from None

        def count(sub: V, what: str) -> int:
            at, n = pos, read_u64(what)
            if n > (size - pos) // _MIN_SIZE[sub]:
                raise _Bad(f"{what} claims {n} elements of type {sub.name}, more than the "
                           f"{size - pos} bytes left can hold", at)
            return n

        def array(key: str, depth: int):
            """An array's value (after its type and count)."""
            nonlocal pos
            what = f"array {_q(key)}"
            sub = vtype(f"element type of {what}")
            n = count(sub, what)
            start = pos
            if sub == V.STRING:  # the hot loop of a 100k-token vocabulary: inline
                words = []
                for i in range(n):
                    if size - pos < 8 or (k := u64(mm, pos)[0]) > size - pos - 8:
                        raise _Bad(f"string {i} of {what} runs past the end of the file "
                                   f"({size} bytes; truncated?)", pos)
                    words.append(pos - start)
                    pos += 8 + k
                raw = mm[start:pos]
                if not _all_utf8(raw, words):
                    at = 0
                    for i in range(n):
                        (k,) = u64(raw, at)
                        try:
                            raw[at + 8: at + 8 + k].decode("utf-8")
                        except UnicodeDecodeError:
                            raise _Bad(f"string {i} of {what} is not valid UTF-8", start + at) from None
                        at += 8 + k
                return PackedStrings(raw, n)
            if sub == V.ARRAY:
                if depth >= MAX_NESTING:
                    raise _Bad(f"{what} nests arrays more than {MAX_NESTING} deep", start)
                items = [array(f"{key}[{i}]", depth + 1) for i in range(n)]
                return PackedArrays([list(x) for x in items], mm[start:pos], n)
            nbytes = np.dtype(NUMPY[sub]).itemsize * n
            need(nbytes, what)
            val = np.frombuffer(mm, NUMPY[sub], n, pos).tolist()
            pos += nbytes
            return val

        magic = bytes(mm[0:4])
        if magic != b"GGUF":
            raise _Bad(f"it does not start with 'GGUF' (starts with {magic!r})", 0)
        pos = 4
        version = read_u32("version")
        if version not in (2, 3):
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            what = ("it is a big-endian GGUF, which ggtool does not read" if swapped in (2, 3)
                    else f"unsupported GGUF version {version} (ggtool reads versions 2 and 3)")
            raise _Bad(what, 4)
        n_tensors = read_u64("tensor count")
        n_kv = read_u64("key-value count")
        if n_kv > (size - pos) // 13 or n_tensors > (size - pos) // 24:
            raise _Bad(f"the header claims {n_tensors} tensors and {n_kv} key-values, more than "
                       f"a {size}-byte file can hold", 8)
        for i in range(n_kv):
            at = pos
            key = string(f"key {i}")
            if not key:
                raise _Bad(f"key {i} is empty", at)
            if key in self.kv:
                raise _Bad(f"key {_q(key)} appears twice", at)
            t = vtype(f"key {_q(key)}")
            if t == V.ARRAY:
                sub = V(u32(mm, pos)[0]) if size - pos >= 4 and u32(mm, pos)[0] in _MIN_SIZE else None
                self.kv[key] = KV(array(key, 1), t, sub)
            elif t == V.STRING:
                self.kv[key] = KV(string(f"value of {_q(key)}"), t, None)
            else:
                fmt = SCALARS[t]
                need(struct.calcsize(fmt), f"value of {_q(key)}")
                self.kv[key] = KV(struct.unpack_from(fmt, mm, pos)[0], t, None)
                pos += struct.calcsize(fmt)
        align = self._alignment()
        infos, names = [], set()
        for i in range(n_tensors):
            at = pos
            name = string(f"name of tensor {i}")
            if not name or len(name.encode()) >= MAX_NAME:
                raise _Bad(f"tensor {i} has a name of {len(name.encode())} bytes (llama.cpp takes 1 to {MAX_NAME - 1})", at)
            if name in names:
                raise _Bad(f"tensor {_q(name)} appears twice", at)
            names.add(name)
            at = pos
            nd = read_u32(f"dimension count of tensor {_q(name)}")
            if nd > MAX_DIMS:
                raise _Bad(f"tensor {_q(name)} has {nd} dimensions (at most {MAX_DIMS})", at)
            dims = [read_u64(f"dimensions of tensor {_q(name)}") for _ in range(nd)] or [1]  # 0 dims: a scalar, as llama.cpp reads it
            at = pos
            t = read_u32(f"type of tensor {_q(name)}")
            try:
                gt = GGMLQuantizationType(t)
                block, type_size = GGML_QUANT_SIZES[gt]
            except (ValueError, KeyError):
                raise _Bad(f"tensor {_q(name)} has unknown ggml type {t}", at) from None
            off = read_u64(f"offset of tensor {_q(name)}")
            n_el = 1
            for d in dims:
                n_el *= d
            if any(d >= 2**63 for d in dims) or n_el >= 2**63:
                raise _Bad(f"tensor {_q(name)} has dimensions {dims}: {n_el} elements overflow", at)
            if dims and dims[0] % block:
                raise _Bad(f"tensor {_q(name)} ({gt.name}) has rows of {dims[0]}, not a multiple of its block of {block}", at)
            if off % align:
                raise _Bad(f"tensor {_q(name)} has offset {off}, not a multiple of the alignment {align}", pos - 8)
            infos.append((name, tuple(reversed(dims)), gt, off, n_el // block * type_size))
        data_start = self.data_start = -(-pos // align) * align
        for name, shape, t, off, nbytes in infos:
            start = data_start + off
            if start + nbytes > size:
                raise _Bad(f"tensor {_q(name)} ({nbytes} bytes at data offset {off}) runs past the end "
                           f"of the file ({size} bytes; truncated?)", data_start)
            self.tensors.append(TensorInfo(name, shape, t, start, nbytes))

    def _alignment(self) -> int:
        kv = self.kv.get("general.alignment")
        if kv is None:
            return 32
        if kv.vtype != V.UINT32 or kv.value == 0 or kv.value & (kv.value - 1):
            shown = kv.value if kv.vtype != V.ARRAY else "an array"
            raise _Bad(f"general.alignment is {shown} ({kv.vtype.name}); it must be a power of two "
                       "stored as UINT32", 0)
        return kv.value

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


def tensor_types(path) -> dict:
    """{tensor name: GGMLQuantizationType} of a GGUF file, read from its header."""
    f = GGUFFile(path)
    try:
        return {t.name: t.ggml_type for t in f.tensors}
    finally:
        f.close()
