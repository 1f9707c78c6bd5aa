"""The bridge to llama.cpp (through llama-cpp-python): loading the library, its logging.

    runtime.py    Model: load a GGUF, tokenize, logits, generate
    context.py    LlamaModel/LlamaContext: the low-level runner (llama_batch, chosen logits,
                  KV clear, cb_eval) that evaluate, speed and the imatrix collector use
    quantize.py   llama.cpp's own whole-file quantizer (llama_model_quantize), for
                  `bench --against llama.cpp` and as a yardstick
The yardsticks only tests and benchmarks use (libggml's per-chunk quantizer, one-shot
logits) live beside them, in the repository's oracles/ package.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import sys
from functools import lru_cache

from ..errors import DependencyError

INSTALL_HINT = "run `make install` (builds llama-cpp-python without AMX; see README)"


@lru_cache(maxsize=None)
def llama_cpp():
    try:
        import llama_cpp as mod
    except ImportError as e:
        raise DependencyError(f"llama-cpp-python is not installed ({e})", hint=INSTALL_HINT) from None
    return mod


_LOG_TAIL: collections.deque = collections.deque(maxlen=500)


def log_tail() -> list[str]:
    """The last lines llama.cpp logged (kept while its logging is silenced), e.g. to read back
    what it offloaded to the GPU or how big its KV cache is."""
    return list(_LOG_TAIL)


def quiet_log():
    """Silence llama.cpp's C-level logging unless GGTOOL_DEBUG is set (the tail is kept)."""
    mod = llama_cpp()
    if os.environ.get("GGTOOL_DEBUG"):
        return
    if getattr(quiet_log, "done", False):
        return

    @mod.llama_log_callback
    def _cb(level, text, user_data):  # pragma: no cover - C callback
        _LOG_TAIL.append(text.decode("utf-8", errors="replace") if text else "")

    quiet_log.cb = _cb  # keep alive
    mod.llama_log_set(_cb, ctypes.c_void_p(0))
    quiet_log.done = True


def system_info() -> str:
    return llama_cpp().llama_print_system_info().decode()


@contextlib.contextmanager
def stderr_silenced():
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
