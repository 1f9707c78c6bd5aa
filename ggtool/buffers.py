"""Reusable working arrays for the streaming converter.

A fresh numpy array of a few hundred MB costs more than the work done in it: the kernel maps
and zeroes every page on first touch (for a BF16 tensor, reading it into a new float32 array
took ~5x as long as into one already touched). The pipeline holds a few tensors at a time
(one read ahead, one being quantized, one being written), so it takes its arrays from here and
gives them back when done; memory stays bounded by those few, as before.

    pool = BufferPool()
    x = pool.take((rows, cols), np.float32)   # contents undefined
    ...
    pool.give(x)                              # x must not be used after this
"""

from __future__ import annotations

import threading
import weakref

import numpy as np


class BufferPool:
    """Free raw buffers, reused by size; at most `keep` are held while free."""

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._free: list[np.ndarray] = []     # uint8 arrays, each a whole allocation
        self._mine = weakref.WeakValueDictionary()  # id -> every buffer this pool made and is alive
        self._lock = threading.Lock()

    def take(self, shape, dtype=np.float32) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.nbytes >= nbytes]
            # the smallest that fits (list.remove would compare arrays by value: pop by index)
            raw = self._free.pop(min(fits, key=lambda i: self._free[i].nbytes)) if fits else None
        if raw is None:
            raw = np.empty(max(nbytes, 1), np.uint8)
            with self._lock:
                self._mine[id(raw)] = raw
        return raw[:nbytes].view(dtype).reshape(shape)

    def give(self, view: np.ndarray | None) -> None:
        """Return an array from take() or a view of one (anything else is ignored). A buffer
        never given back is simply freed when its last view goes."""
        raw = getattr(view, "base", None)
        if raw is None:
            return
        with self._lock:
            if self._mine.get(id(raw)) is not raw or any(b is raw for b in self._free):
                return
            self._free.append(raw)
            if len(self._free) > self.keep:  # drop the smallest: the big ones are the costly ones
                self._free.pop(min(range(len(self._free)), key=lambda i: self._free[i].nbytes))

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
