"""Advisory file locks between ggtool processes (and huggingface_hub, which flocks the same files).

    with file_lock(path, on_wait=lambda: say("another pull holds it; waiting")):
        ...

fcntl.flock on POSIX (released by the kernel when a process dies, even with kill -9);
filelock (a huggingface_hub dependency) elsewhere. Lock files are never deleted: deleting one
while another process waits on it would let a third process take a second, separate lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class Busy(Exception):
    """The lock is held by another process (non-blocking attempt)."""


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, blocking: bool = True, on_wait=None):
    """Hold an exclusive lock on `path` (created if needed) for the with-block.

    Non-blocking: raise Busy at once if held. Blocking: call on_wait() once, then wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        from filelock import FileLock, Timeout

        lk = FileLock(str(path))
        try:
            lk.acquire(timeout=0)
        except Timeout:
            if not blocking:
                raise Busy(str(path)) from None
            if on_wait:
                on_wait()
            lk.acquire()
        try:
            yield
        finally:
            lk.release()
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                raise Busy(str(path)) from None
            if on_wait:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(path: str | os.PathLike) -> bool:
    """Whether another process holds the lock on `path` now (False if the file does not exist)."""
    if not Path(path).exists():
        return False
    try:
        with file_lock(path, blocking=False):
            return False
    except Busy:
        return True
