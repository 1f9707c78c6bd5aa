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
import glob
import os
import re
import secrets
import shutil
import struct
from pathlib import Path

import numpy as np
import gguf

try:
    import fcntl
except ImportError:  # Windows: no flock; stale partial files are then never recognised
    fcntl = None

from ..errors import OutputError
from .dtypes import NUMPY
from .gguf_reader import PackedArrays, PackedStrings

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
    if e.errno == errno.EFBIG:
        return OutputError(f"cannot write {path}: the file is too large for this file system or limit",
                           hint="write elsewhere with -o (a file system without a small file-size limit)")
    return OutputError(f"cannot write {path}: {e.strerror or e}",
                       hint="the device reported an error (nothing half-written was left); check the disk "
                            "or write elsewhere with -o")


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
        if vtype != GT.ARRAY or self.endianess != gguf.GGUFEndian.LITTLE or isinstance(val, bytes):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        packed = isinstance(val, (PackedStrings, PackedArrays))  # copied from a GGUF: wire format
        if not (packed or len(val) >= 1024 or (not val and sub_type is not None)):
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        ltype = sub_type if sub_type is not None else GT.get_type(val[0])
        head = (struct.pack("<I", vtype) if add_vtype else b"") + struct.pack("<IQ", ltype, len(val))
        if packed:
            return head + val.raw
        if not val:  # an empty array is valid GGUF (gguf-py's writer refuses it)
            return head
        if ltype == GT.STRING:
            enc = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
            return head + b"".join(struct.pack("<Q", len(e)) + e for e in enc)
        if ltype in NUMPY and ltype != GT.BOOL:
            return head + np.asarray(val, dtype=NUMPY[ltype]).tobytes()
        return super()._pack_val(val, vtype, add_vtype, sub_type)


    def write_tensor_data(self, tensor: np.ndarray, tensor_endianess=None) -> None:
        """As gguf-py's, but through the file object's write(): gguf-py's ndarray.tofile writes
        around the file object (through a duplicated descriptor), so the writer had two write
        paths and the fault tests (fuzz/faults.py) could not reach one of them."""
        from gguf.gguf_writer import WriterState

        if self.state not in (WriterState.TI_DATA, WriterState.WEIGHTS):
            raise ValueError(f"Expected output file to contain tensor info or weights, got {self.state}")
        fid = next(i for i, ts in enumerate(self.tensors) if ts)
        fout = self.fout[fid]
        ti = self.tensors[fid].pop(next(iter(self.tensors[fid])))
        assert ti.nbytes == tensor.nbytes
        self.write_padding(fout, fout.tell())
        fout.write(memoryview(np.ascontiguousarray(tensor).reshape(-1).view(np.uint8)))
        self.write_padding(fout, tensor.nbytes)
        self.state = WriterState.WEIGHTS


PARTIAL_RE = re.compile(r"\.[0-9a-f]{8}\.incomplete")


def stale_partials(target: str | os.PathLike) -> list[Path]:
    """`target`'s partial files (`<name>.<8 hex>.incomplete`, what a killed run leaves) that no
    running ggtool is writing: a writer holds an exclusive flock on its partial file until it
    ends, and the kernel drops the lock when the process dies, kill -9 included."""
    target = Path(target)
    out = []
    for p in target.parent.glob(glob.escape(target.name) + ".*.incomplete"):
        if not PARTIAL_RE.fullmatch(p.name[len(target.name):]):
            continue
        try:
            with open(p, "rb") as f:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            out.append(p)
        except OSError:  # BlockingIOError: a live writer holds it
            continue
    return sorted(out)


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
            # our partial file, created and locked before gguf-py opens it: a later run (or
            # `ggtool prune`) knows it is not stale while the lock is held (stale_partials)
            self._lock = open(self.tmp, "xb")
            if fcntl is not None:
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            for p in stale_partials(self.path):  # what killed runs for this target left
                p.unlink(missing_ok=True)
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
        self._unlock()
        self._open = False
        return self.path

    def _unlock(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.close()

    def abort(self) -> None:
        try:
            for f in self.writer.fout or []:
                f.close()
        except OSError:
            pass
        self.tmp.unlink(missing_ok=True)
        self._unlock()
        self._open = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or self._open:
            self.abort()
        return False
