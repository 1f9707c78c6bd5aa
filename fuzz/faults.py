"""Simulated write faults for the writer tests: a full disk (ENOSPC) or an I/O error (EIO) at a
chosen byte offset, an fsync or a rename that fails, a read-only file system.

    with write_faults(folder, at_byte=12345, err=errno.ENOSPC):
        convert(...)            # every file opened for writing under `folder` fails at byte 12345

Files opened for writing under `folder` (builtins.open / io.open, so pathlib and gguf-py too)
get a raw file whose write() stops at `at_byte` total bytes: it writes what fits, then raises
OSError(err), as a real full disk does. Everything else is the real file (a real descriptor,
so fileno/flush/seek work). No LD_PRELOAD: the library's own Python write path is wrapped.
"""

from __future__ import annotations

import builtins
import contextlib
import errno as errnos
import io
import os
from pathlib import Path
from unittest import mock


class FaultyFileIO(io.FileIO):
    """A FileIO that fails once `budget` bytes have been written through it (all such files
    of one `write_faults` share the budget)."""

    def __init__(self, file, mode, state: dict):
        super().__init__(file, mode)
        self._state = state

    def write(self, b) -> int:
        st = self._state
        n = len(memoryview(b).cast("B"))
        left = st["at_byte"] - st["written"]
        if left <= 0:
            st["faults"] += 1
            raise OSError(st["err"], os.strerror(st["err"]), self.name)
        if n > left:
            n = super().write(memoryview(b).cast("B")[:left])  # a short write, as the kernel does
            st["written"] += n
            return n
        n = super().write(b)
        st["written"] += n
        return n


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


@contextlib.contextmanager
def write_faults(folder, at_byte: int | None = None, err: int = errnos.ENOSPC, *, fsync_err: int | None = None,
                 replace_err: int | None = None, open_err: int | None = None):
    """Inject faults into writes under `folder`; yields the shared state (bytes written, faults)."""
    folder = Path(folder).resolve()
    state = {"at_byte": at_byte if at_byte is not None else 1 << 62, "written": 0, "err": err, "faults": 0}
    real_open = builtins.open
    real_fsync, real_fdatasync, real_replace = os.fsync, getattr(os, "fdatasync", None), os.replace
    ours: set[int] = set()

    def under(path) -> bool:
        try:
            return Path(os.fspath(path)).resolve().is_relative_to(folder)
        except (TypeError, ValueError):
            return False

    def fake_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True, opener=None):
        if isinstance(file, int) or not _writing(mode) or not under(file):
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        if open_err is not None:
            state["faults"] += 1
            raise OSError(open_err, os.strerror(open_err), str(file))
        raw_mode = mode.replace("b", "").replace("t", "")
        raw = FaultyFileIO(file, raw_mode, state)
        ours.add(raw.fileno())
        f = io.BufferedWriter(raw) if "+" not in mode else io.BufferedRandom(raw)
        if "b" not in mode:
            return io.TextIOWrapper(f, encoding=encoding or "utf-8", errors=errors, newline=newline)
        return f

    def fake_sync(real):
        def sync(fd):
            if fsync_err is not None and fd in ours:
                state["faults"] += 1
                raise OSError(fsync_err, os.strerror(fsync_err))
            return real(fd)
        return sync

    def fake_replace(src, dst, *a, **k):
        if replace_err is not None and under(dst):
            state["faults"] += 1
            raise OSError(replace_err, os.strerror(replace_err), str(dst))
        return real_replace(src, dst, *a, **k)

    patches = [mock.patch.object(builtins, "open", fake_open), mock.patch.object(io, "open", fake_open),
               mock.patch.object(os, "fsync", fake_sync(real_fsync)), mock.patch.object(os, "replace", fake_replace)]
    if real_fdatasync is not None:
        patches.append(mock.patch.object(os, "fdatasync", fake_sync(real_fdatasync)))
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        yield state
