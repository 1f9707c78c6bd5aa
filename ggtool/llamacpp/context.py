"""A low-level llama.cpp runner: one model, fresh contexts, chunks of tokens in, chosen logits out.

    model = LlamaModel("m.gguf")                       # weights loaded once
    with model.context(n_ctx=512, n_threads=2) as ctx:  # a fresh KV cache
        lg = ctx.decode(tokens, outputs=range(256, 511))   # (255, n_vocab) float32
        ctx.clear()                                     # empty the KV cache for the next chunk

Why not llama-cpp-python's `Llama`: it keeps a copy of every logit of every position
(n_ctx x n_vocab floats) and re-copies them per call. Scoring needs the logits of a few
positions once; speed measurement needs none. This goes through llama.cpp's C API
(llama_model_load_from_file, llama_init_from_model, llama_batch, llama_decode,
llama_memory_clear) by ctypes, the way llama-perplexity and llama-bench do.

`cb_eval` (+ user data) is passed through to llama_context_params: the imatrix collector hooks
llama.cpp's eval callback into the same runner.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError
from . import llama_cpp, quiet_log, stderr_silenced


def default_threads() -> int:
    """Threads for llama.cpp: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_backend_ready = False


def _backend_init(mod) -> None:
    global _backend_ready
    if not _backend_ready:
        mod.llama_backend_init()
        _backend_ready = True



class _Closes:
    """`with` and garbage collection call close() (each class frees its own llama.cpp object)."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

class LlamaModel(_Closes):
    """A GGUF's weights loaded in llama.cpp (freed by `close` or the context manager)."""

    def __init__(self, path: str | Path, n_gpu_layers: int = 0):
        mod = llama_cpp()
        quiet_log()
        _backend_init(mod)
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{path} does not exist", hint="give the path of a .gguf file")
        mp = mod.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        with stderr_silenced():
            ptr = mod.llama_model_load_from_file(str(self.path).encode(), mp)
        if not ptr:
            raise InputError(f"llama.cpp could not load {self.path}",
                             hint="the file is not a GGUF llama.cpp can run (GGTOOL_DEBUG=1 shows its log)")
        self._mod, self._ptr = mod, ptr
        self.n_gpu_layers = n_gpu_layers
        self.vocab = mod.llama_model_get_vocab(ptr)
        self.n_vocab = int(mod.llama_vocab_n_tokens(self.vocab))
        self.add_bos = bool(mod.llama_vocab_get_add_bos(self.vocab))
        self.add_eos = bool(mod.llama_vocab_get_add_eos(self.vocab))
        self.bos = int(mod.llama_vocab_bos(self.vocab))
        self.n_ctx_train = int(mod.llama_model_n_ctx_train(ptr))

    @property
    def ptr(self):
        if self._ptr is None:
            raise ValueError("model is closed")
        return self._ptr

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> np.ndarray:
        """int32 token ids of `text` (as llama.cpp's common_tokenize: BOS added if the model says so,
        special-token text not parsed by default, like llama-perplexity)."""
        mod = self._mod
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        while True:
            buf = (mod.llama_token * cap)()
            n = mod.llama_tokenize(self.vocab, raw, len(raw), buf, cap, add_special, parse_special)
            if n >= 0:
                return np.ctypeslib.as_array(buf)[:n].astype(np.int32)
            cap = -n

    def detokenize(self, ids: Iterable[int]) -> str:
        mod = self._mod
        out = bytearray()
        buf = ctypes.create_string_buffer(256)
        for t in ids:
            n = mod.llama_token_to_piece(self.vocab, int(t), buf, len(buf), 0, False)
            out += buf.raw[:max(n, 0)]
        return out.decode("utf-8", errors="replace")

    def context(self, **kw) -> "LlamaContext":
        return LlamaContext(self, **kw)

    def close(self) -> None:
        if self._ptr is not None:
            self._mod.llama_model_free(self._ptr)
            self._ptr = None


class LlamaContext(_Closes):
    """A llama.cpp context (KV cache + compute buffers) on a loaded `LlamaModel`.

    n_batch: most tokens per llama_decode call; n_ubatch: the physical batch. cb_eval: a
    `llama_cpp.ggml_backend_sched_eval_callback` (or a Python callable
    `(tensor_ptr, ask: bool, user_data) -> bool`, wrapped here) called by llama.cpp's graph
    scheduler; cb_eval_user_data: passed back to it as a void pointer. flash_attn: None keeps
    llama.cpp's default (auto), as llama-perplexity and llama-bench run.
    """

    def __init__(self, model: LlamaModel, n_ctx: int = 512, n_batch: int | None = None,
                 n_ubatch: int | None = None, n_threads: int | None = None,
                 cb_eval=None, cb_eval_user_data=None, flash_attn: bool | None = None):
        mod = model._mod
        self.model, self._mod = model, mod
        n_threads = n_threads or default_threads()
        n_batch = n_batch or n_ctx
        cp = mod.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = min(n_ubatch or 512, n_batch)
        cp.n_seq_max = 1
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        cp.no_perf = True
        if flash_attn is not None:  # default: llama.cpp's "auto", as its tools run
            cp.flash_attn_type = 1 if flash_attn else 0
        self._cb = None
        if cb_eval is not None:
            if not isinstance(cb_eval, mod.ggml_backend_sched_eval_callback):
                cb_eval = mod.ggml_backend_sched_eval_callback(cb_eval)
            self._cb = cb_eval  # keep the C trampoline alive as long as the context
            cp.cb_eval = cb_eval
            cp.cb_eval_user_data = cb_eval_user_data
        with stderr_silenced():
            ptr = mod.llama_init_from_model(model.ptr, cp)
        if not ptr:
            raise InputError(f"llama.cpp could not create a context of {n_ctx} tokens for {model.path.name}",
                             hint="lower --ctx, or free memory")
        self._ptr = ptr
        self.n_ctx, self.n_batch, self.n_threads = int(mod.llama_n_ctx(ptr)), n_batch, n_threads
        self._mem = mod.llama_get_memory(ptr)
        self._batch = mod.llama_batch_init(n_batch, 0, 1)
        b = self._batch
        for i in range(n_batch):  # every token in sequence 0; set once, reused by every call
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
        self._tok = np.ctypeslib.as_array(b.token, shape=(n_batch,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(n_batch,))
        self._out = np.ctypeslib.as_array(b.logits, shape=(n_batch,))
        self.n_past = 0

    def clear(self) -> None:
        """Empty the KV cache (llama_memory_clear): the next decode starts at position 0."""
        self._mod.llama_memory_clear(self._mem, True)
        self.n_past = 0

    def decode(self, tokens, outputs=None, pos0: int | None = None, fetch: bool = True) -> np.ndarray | None:
        """Run `tokens` at positions pos0.. (default: after what the cache holds).

        outputs: positions *within tokens* whose logits are wanted (sorted, any iterable), or
        None for none. Returns (len(outputs), n_vocab) float32 logits (a copy), or None.
        fetch=False: llama.cpp computes the outputs but nothing is copied (speed tests).
        Tokens longer than n_batch go in several llama_decode calls, as llama-perplexity does.
        """
        toks = np.asarray(tokens, dtype=np.int32).reshape(-1)
        n = toks.size
        start = self.n_past if pos0 is None else pos0
        if start + n > self.n_ctx:
            raise InputError(f"{start + n} tokens do not fit the context of {self.n_ctx}")
        want = np.zeros(n, dtype=bool)
        if outputs is not None:
            want[np.fromiter(outputs, dtype=np.int64)] = True
        n_vocab = self.model.n_vocab
        result = np.empty((int(want.sum()), n_vocab), dtype=np.float32) if fetch and want.any() else None
        filled = 0
        for a in range(0, n, self.n_batch):
            m = min(self.n_batch, n - a)
            b = self._batch
            self._tok[:m] = toks[a:a + m]
            self._pos[:m] = np.arange(start + a, start + a + m, dtype=np.int32)
            self._out[:m] = want[a:a + m]
            b.n_tokens = m
            rc = self._mod.llama_decode(self._ptr, b)
            if rc != 0:
                raise InputError(f"llama_decode failed (rc={rc}) on {m} tokens at position {start + a}")
            k = int(want[a:a + m].sum())
            if k and result is not None:
                ptr = self._mod.llama_get_logits(self._ptr)
                result[filled:filled + k] = np.ctypeslib.as_array(ptr, shape=(k, n_vocab))
                filled += k
        self.n_past = start + n
        return result

    def synchronize(self) -> None:
        self._mod.llama_synchronize(self._ptr)

    def close(self) -> None:
        if getattr(self, "_ptr", None) is not None:
            self._mod.llama_batch_free(self._batch)
            self._mod.llama_free(self._ptr)
            self._ptr = None
