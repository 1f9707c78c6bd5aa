"""A GGUF loaded in llama.cpp: tokenize, logits, greedy generation."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import llama_cpp, quiet_log, stderr_silenced


class Model:
    """A GGUF loaded in llama.cpp: tokenize, logits, greedy generation."""

    def __init__(self, path: str | Path, n_ctx: int = 512, vocab_only: bool = False,
                 logits_all: bool = True, n_threads: int | None = None, n_gpu_layers: int = 0,
                 **llama_kwargs):
        """llama_kwargs go to llama_cpp.Llama as they are (n_batch, flash_attn, draft_model, ...)."""
        if not Path(path).is_file():
            raise InputError(f"no model file {path}", hint="give the path of a .gguf file")
        mod = llama_cpp()
        quiet_log()
        self.path = str(path)
        with stderr_silenced():
            try:
                self.llm = mod.Llama(
                    model_path=self.path, n_ctx=n_ctx, vocab_only=vocab_only,
                    logits_all=logits_all, verbose=bool(os.environ.get("GGTOOL_DEBUG")),
                    n_threads=n_threads, n_gpu_layers=n_gpu_layers, **{"seed": 0, **llama_kwargs},
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
