"""llama.cpp's own whole-file quantizer (llama-quantize), in process: the same levels quantized
by llama.cpp for `ggtool bench --against llama.cpp`, and the yardstick our mixes are tested on."""

from __future__ import annotations

import ctypes
from pathlib import Path

from ..errors import InputError
from . import llama_cpp, quiet_log


def llama_quantize_file(src: str | Path, dst: str | Path, ftype: int, nthread: int = 0,
                        extra: dict | None = None) -> None:
    """llama.cpp's whole-file quantizer (llama-quantize), in process."""
    mod = llama_cpp()
    quiet_log()
    params = mod.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    for k, v in (extra or {}).items():
        setattr(params, k, v)
    rc = mod.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise InputError(f"llama_model_quantize failed on {src} (rc={rc})")
