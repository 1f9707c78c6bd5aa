"""llama.cpp's own whole-file quantizer (llama-quantize), in process: the same levels quantized
by llama.cpp for `ggtool bench --against llama.cpp`, and the yardstick our mixes are tested on."""

from __future__ import annotations

import ctypes
from pathlib import Path

from ..errors import InputError
from . import llama_cpp, quiet_log


def llama_quantize_file(src: str | Path, dst: str | Path, ftype: int, nthread: int = 0,
                        extra: dict | None = None, imatrix: dict | None = None) -> None:
    """llama.cpp's whole-file quantizer (llama-quantize), in process.

    imatrix: {tensor name: float32 weights} as llama-quantize hands them over (per column, per
    expert; formats.imatrix.IMatrix.weights), passed as llama_model_quantize_params.imatrix:
    libggml's ggml_quantize_chunk gets them for every tensor and the mix rules see an imatrix."""
    import numpy as np

    mod = llama_cpp()
    quiet_log()
    params = mod.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    for k, v in (extra or {}).items():
        setattr(params, k, v)
    keep = []  # the C side only borrows these
    if imatrix:
        arr = (mod.llama_model_imatrix_data * (len(imatrix) + 1))()
        for i, (name, w) in enumerate(sorted(imatrix.items())):
            w = np.ascontiguousarray(w, dtype=np.float32)
            b = name.encode()
            keep += [w, b]
            arr[i].name = b
            arr[i].data = w.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = w.size
        arr[len(imatrix)].name = None  # terminator
        keep.append(arr)
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(mod.llama_model_imatrix_data))
    rc = mod.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise InputError(f"llama_model_quantize failed on {src} (rc={rc})")
