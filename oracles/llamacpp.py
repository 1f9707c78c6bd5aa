"""llama.cpp as the yardstick of tests and benchmarks (never used by ggtool at run time).

    ggml_quantize(x, "Q4_K", imatrix)   libggml's own quantizer on rows (ggml_quantize_chunk)
    logits(path, ids)                   llama.cpp's logits of one forward pass over ids
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import numpy as np

from ggtool.errors import DependencyError
from ggtool.llamacpp import INSTALL_HINT, llama_cpp
from ggtool.llamacpp.runtime import Model


@lru_cache(maxsize=None)
def _libggml_base():
    mod = llama_cpp()
    libdir = Path(mod.__file__).parent / "lib"
    cands = sorted(libdir.glob("libggml-base.*"))
    if not cands:
        raise DependencyError(f"libggml-base not found in {libdir}", hint=INSTALL_HINT)
    lib = ctypes.CDLL(str(cands[0]))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_int64, ctypes.c_void_p,
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    return lib


def ggml_quantize(x: np.ndarray, qtype, imatrix: np.ndarray | None = None) -> np.ndarray:
    """libggml's own quantizer on (nrows, n) float32 rows -> (nrows, row_bytes) uint8."""
    from gguf import GGMLQuantizationType

    t = qtype if isinstance(qtype, GGMLQuantizationType) else GGMLQuantizationType[str(qtype).upper()]
    x = np.ascontiguousarray(x, dtype=np.float32)
    nrows, n = x.reshape(-1, x.shape[-1]).shape
    lib = _libggml_base()
    rb = lib.ggml_row_size(int(t), n)
    out = np.zeros((nrows, rb), dtype=np.uint8)
    im = None
    if imatrix is not None:
        im = np.ascontiguousarray(imatrix, dtype=np.float32)
    lib.ggml_quantize_init(int(t))
    lib.ggml_quantize_chunk(
        int(t), x.ctypes.data, out.ctypes.data, 0, nrows, n,
        im.ctypes.data if im is not None else None,
    )
    return out


def logits(path: str | Path, ids: list[int], n_ctx: int = 128) -> np.ndarray:
    """(len(ids), n_vocab) logits of one forward pass of the GGUF at `path` (loaded, then freed)."""
    m = Model(path, n_ctx=max(n_ctx, len(ids)))
    try:
        return m.logits(ids)
    finally:
        m.close()
