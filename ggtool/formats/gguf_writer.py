"""Plan-then-stream GGUF output, written atomically.

    with GGUFOutput(path, metadata, plan) as out:  # metadata: formats.metadata.Metadata
        out.begin()                                # header, metadata, tensor infos (plan sizes)
        out.write("blk.0.attn_q.weight", data)     # in plan order, one tensor at a time
        out.commit()                               # fsync + rename into place

Data goes to `name.<random>.incomplete` beside the target and is renamed only when complete;
any exception (a full disk, Ctrl-C) removes it. Memory is bounded by the tensor being written.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import struct
from pathlib import Path

import numpy as np
import gguf

from ..errors import OutputError
from .dtypes import NUMPY
from .gguf_reader import PackedStrings

HEADER_MARGIN = 64 * 1024 * 1024  # metadata (vocab, merges) on top of tensor bytes, generously
WRITEBACK_CHUNK = 32 * 1024 * 1024  # start writing back to disk every 32 MiB


def _os_error(path: Path, e: OSError) -> OutputError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"no space left on the device writing {path}",
                           hint="free some disk space or write elsewhere with -o; nothing was left behind")
    if e.errno == errno.EROFS:
        return OutputError(f"cannot write {path}: read-only file system",
                           hint="write elsewhere with -o (or remount the file system read-write)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write {path}: {e.strerror}",
                           hint="choose an output path in a folder you can write to")
    return OutputError(f"cannot write {path}: {e.strerror or e}")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


GT = gguf.GGUFValueType


class _Writer(gguf.GGUFWriter):
    """gguf-py's writer with a fast path for big arrays (vocabularies: ~100k strings).

    Same bytes: little-endian, u32 element type, u64 count, then the elements."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if (vtype != GT.ARRAY or self.endianess != gguf.GGUFEndian.LITTLE or isinstance(val, bytes)
                or len(val) < 1024):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        ltype = sub_type if sub_type is not None else GT.get_type(val[0])
        head = (struct.pack("<I", vtype) if add_vtype else b"") + struct.pack("<IQ", ltype, len(val))
        if isinstance(val, PackedStrings):  # copied from another GGUF: already in wire format
            return head + val.raw
        if ltype == GT.STRING:
            enc = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
            return head + b"".join(struct.pack("<Q", len(e)) + e for e in enc)
        if ltype in NUMPY and ltype != GT.BOOL:
            return head + np.asarray(val, dtype=NUMPY[ltype]).tobytes()
        return super()._pack_val(val, vtype, add_vtype, sub_type)


class GGUFOutput:
    """`plan`: the tensors in file order, each with .name, .shape, .type and .nbytes
    (plan.Plan); general.file_type and general.quantization_version come from it too."""

    def __init__(self, path: str | os.PathLike, metadata, plan):
        self.path = Path(path)
        if self.path.is_dir():
            raise OutputError(f"{self.path} is a folder", hint="give a file name ending in .gguf")
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise OutputError(f"folder {parent} does not exist", hint="create it first or choose another -o")
        if _read_only(parent):
            raise OutputError(f"cannot write to folder {parent}: it is on a read-only file system",
                              hint="write elsewhere with -o (or remount the file system read-write)")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"cannot write to folder {parent}: permission denied",
                              hint="choose an output path in a folder you can write to")
        self.tmp = parent / f"{self.path.name}.{secrets.token_hex(4)}.incomplete"
        self.writer = _Writer(None, metadata.arch)
        for key, v in metadata.items.items():  # in order; general.architecture is already first
            if key != gguf.Keys.General.ARCHITECTURE:
                self.writer.add_key_value(key, v.value, v.type, sub_type=v.sub_type)
        self.writer.add_file_type(plan.file_type)
        if plan.quantized:
            self.writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        self._plan: list[tuple[str, int]] = []
        for t in plan:
            self.writer.add_tensor_info(t.name, tuple(int(s) for s in t.shape), np.dtype(np.float32),
                                        t.nbytes, raw_dtype=t.type)
            self._plan.append((t.name, t.nbytes))
        self.total_bytes = sum(n for _, n in self._plan)
        self._next = 0
        self._part = 0  # bytes of the current tensor written so far
        self._open = False
        self._unflushed = 0

    # ---------------------------------------------------------------- writing
    def begin(self) -> None:
        need = self.total_bytes + HEADER_MARGIN
        free = shutil.disk_usage(self.tmp.parent).free
        if free < need:
            raise OutputError(
                f"not enough disk space for {self.path.name}: needs {need / 1e9:.2f} GB, "
                f"{free / 1e9:.2f} GB free on that device",
                hint="free some disk space or write elsewhere with -o")
        try:
            self._open = True
            self.writer.write_header_to_file(self.tmp)
            self.writer.write_kv_data_to_file()
            self.writer.write_ti_data_to_file()
        except OSError as e:
            raise _os_error(self.path, e) from None

    def write(self, name: str, data: np.ndarray) -> None:
        """The tensor's bytes, whole or in consecutive pieces (a MoE's experts one by one)."""
        if self._next >= len(self._plan):
            raise RuntimeError(f"tensor {name} written after the last planned tensor")
        want, nbytes = self._plan[self._next]
        if name != want:
            raise RuntimeError(f"tensor {name} written out of plan order (expected {want})")
        data = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if self._part + data.nbytes > nbytes:
            raise RuntimeError(f"tensor {name}: {self._part + data.nbytes} bytes, planned {nbytes}")
        try:
            first, last = self._part == 0, self._part + data.nbytes == nbytes
            if first and last:
                self.writer.write_tensor_data(data)
            else:
                self._write_piece(data, first, last, nbytes)
            self._unflushed += data.nbytes
            if self._unflushed >= WRITEBACK_CHUNK:
                self._start_writeback()
        except OSError as e:
            raise _os_error(self.path, e) from None
        self._part += data.nbytes
        if self._part == nbytes:
            self._next, self._part = self._next + 1, 0

    def _write_piece(self, data: np.ndarray, first: bool, last: bool, nbytes: int) -> None:
        """One piece of a tensor written in parts: gguf-py's write_tensor_data, spread out
        (alignment padding before the first piece, after the last)."""
        w = self.writer
        fout = w.fout[0]
        if first:
            ti = w.tensors[0].pop(next(iter(w.tensors[0])))
            assert ti.nbytes == nbytes
            w.write_padding(fout, fout.tell())
            w.state = gguf.gguf_writer.WriterState.WEIGHTS
        data.tofile(fout)
        if last:
            w.write_padding(fout, nbytes)

    def _start_writeback(self) -> None:
        """Start the disk writes of what is written so far without waiting for them, so the
        fsync in commit() has little left to do (Linux starts writeback of dirty pages on
        FADV_DONTNEED)."""
        self._unflushed = 0
        if not hasattr(os, "posix_fadvise"):
            return
        for f in self.writer.fout or []:
            f.flush()
            try:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass

    def commit(self, sync: bool = True) -> Path:
        """sync=False: no fdatasync (scratch files that are thrown away: sensitivity probes)."""
        if self._next != len(self._plan):
            raise RuntimeError(f"only {self._next} of {len(self._plan)} tensors written")
        try:
            for f in self.writer.fout or []:
                f.flush()
                if sync:
                    os.fdatasync(f.fileno()) if hasattr(os, "fdatasync") else os.fsync(f.fileno())
            self.writer.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise _os_error(self.path, e) from None
        self._open = False
        return self.path

    def abort(self) -> None:
        try:
            for f in self.writer.fout or []:
                f.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)
        self._open = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or self._open:
            self.abort()
        return False
