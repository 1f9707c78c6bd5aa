"""The one place ggtool talks to llama.cpp (through llama-cpp-python).

Used to run what we write (generate, tokenize, logits) and as the independent yardstick
for our quantizer (ggml_quantize_chunk, llama_model_quantize).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import DependencyError, InputError

INSTALL_HINT = "run `make install` (builds llama-cpp-python without AMX; see README)"


@lru_cache(maxsize=None)
def llama_cpp():
    try:
        import llama_cpp as mod
    except ImportError as e:
        raise DependencyError(f"llama-cpp-python is not installed ({e})", hint=INSTALL_HINT) from None
    return mod


def _quiet_log():
    """Silence llama.cpp's C-level logging unless GGTOOL_DEBUG is set."""
    mod = llama_cpp()
    if os.environ.get("GGTOOL_DEBUG"):
        return
    if getattr(_quiet_log, "done", False):
        return

    @mod.llama_log_callback
    def _cb(level, text, user_data):  # pragma: no cover - C callback
        pass

    _quiet_log.cb = _cb  # keep alive
    mod.llama_log_set(_cb, ctypes.c_void_p(0))
    _quiet_log.done = True


def system_info() -> str:
    return llama_cpp().llama_print_system_info().decode()


# ------------------------------------------------------------------ libggml yardstick

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


def llama_quantize_file(src: str | Path, dst: str | Path, ftype: int, nthread: int = 0,
                        extra: dict | None = None) -> None:
    """llama.cpp's whole-file quantizer (llama-quantize), in process."""
    mod = llama_cpp()
    _quiet_log()
    params = mod.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    for k, v in (extra or {}).items():
        setattr(params, k, v)
    rc = mod.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise InputError(f"llama_model_quantize failed on {src} (rc={rc})")


# ------------------------------------------------------------------ running a model

class Model:
    """A GGUF loaded in llama.cpp: tokenize, logits, greedy generation."""

    def __init__(self, path: str | Path, n_ctx: int = 512, vocab_only: bool = False,
                 logits_all: bool = True, n_threads: int | None = None, n_gpu_layers: int = 0):
        mod = llama_cpp()
        _quiet_log()
        self.path = str(path)
        with _stderr_silenced():
            try:
                self.llm = mod.Llama(
                    model_path=self.path, n_ctx=n_ctx, vocab_only=vocab_only,
                    logits_all=logits_all, verbose=bool(os.environ.get("GGTOOL_DEBUG")),
                    n_threads=n_threads, n_gpu_layers=n_gpu_layers, seed=0,
                )
            except ValueError as e:
                raise InputError(f"llama.cpp could not load {path}: {e}",
                                 hint="the file is not a GGUF llama.cpp can run") from None

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    def detokenize(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids).decode("utf-8", errors="replace")

    def logits(self, ids: list[int]) -> np.ndarray:
        """(len(ids), n_vocab) float32 logits of one forward pass over `ids`."""
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def generate(self, prompt: str, max_tokens: int = 32, stream=None) -> str:
        """Greedy continuation of `prompt`."""
        out = []
        for chunk in self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0,
                                                top_k=1, stream=True):
            piece = chunk["choices"][0]["text"]
            out.append(piece)
            if stream:
                stream(piece)
        return "".join(out)

    def close(self):
        with contextlib.suppress(Exception):
            self.llm.close()


def logits(path: str | Path, ids: list[int], n_ctx: int = 128) -> np.ndarray:
    """(len(ids), n_vocab) logits of one forward pass of the GGUF at `path` (loaded, then freed)."""
    m = Model(path, n_ctx=max(n_ctx, len(ids)))
    try:
        return m.logits(ids)
    finally:
        m.close()


@contextlib.contextmanager
def _stderr_silenced():
    """llama.cpp prints load chatter on fd 2; hide it unless GGTOOL_DEBUG."""
    if os.environ.get("GGTOOL_DEBUG"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
