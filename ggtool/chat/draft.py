"""Speculative decoding through llama-cpp-python's draft-model interface.

`Llama(draft_model=...)` asks the draft for a guess of the next tokens, evaluates them all in one
batch, and keeps the longest prefix that its own sampler agrees with; under greedy sampling the
output is exactly what it would have been without a draft, only sooner.

    --draft lookup        prompt lookup decoding (llama-cpp-python's LlamaPromptLookupDecoding):
                          continue the last n-gram as it went earlier in the context
    --draft small.gguf    a smaller model with the same vocabulary (or the same model at a low
                          quant), run greedily by `DraftModel`

Both are wrapped so that the acceptance rate can be reported: every guess is remembered with
where it started, and compared with the tokens that were finally generated.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

DEFAULT_DRAFT_TOKENS = {"lookup": 10, "model": 8}


class _Counting:
    """Remembers each guess (start position, tokens) for the acceptance count."""

    kind = "?"

    def start(self):
        self.guesses: list[tuple[int, np.ndarray]] = []

    def _record(self, n_input: int, guess: np.ndarray) -> np.ndarray:
        if not hasattr(self, "guesses"):
            self.start()
        if len(guess):
            self.guesses.append((n_input, np.asarray(guess, dtype=np.intc)))
        return guess

    def finish(self, final_ids: list[int], n_prompt: int) -> dict:
        """Drafted and accepted tokens of this answer, given every token it ended up with."""
        final = np.asarray(final_ids, dtype=np.intc)
        drafted = accepted = 0
        for pos, guess in getattr(self, "guesses", []):
            if pos >= len(final):
                continue   # guessed past the end of the answer: never checked
            drafted += len(guess)
            seen = final[pos: pos + len(guess)]
            neq = np.nonzero(seen != guess[: len(seen)])[0]
            accepted += int(neq[0]) if len(neq) else len(seen)
        self.start()
        return {"kind": self.kind, "drafted": drafted, "accepted": accepted,
                "acceptance": round(accepted / drafted, 4) if drafted else None}

    def check_vocab(self, llm) -> None:
        pass

    def close(self) -> None:
        pass


def make_draft(spec: str, *, n_ctx: int, threads: int, machine=None, n_pred: int | None = None):
    from llama_cpp.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

    if spec == "lookup":
        class Lookup(_Counting, AdaptiveLookup, LlamaPromptLookupDecoding):
            kind = "lookup"

            def __call__(self, input_ids, /, **kwargs):
                return self._record(len(input_ids), self.guess(input_ids))

            def describe(self):
                return (f"prompt lookup (n-grams of {self.min_ngram_size}-{self.max_ngram_size} tokens, "
                        f"up to {self.num_pred_tokens} tokens a step)")

        return Lookup(max_ngram_size=3, num_pred_tokens=n_pred or DEFAULT_DRAFT_TOKENS["lookup"])

    from .engine import resolve_model

    path = resolve_model(spec)

    class Draft(DraftModel, _Counting, LlamaDraftModel):
        pass

    return Draft(path, n_ctx=n_ctx, threads=threads, n_pred=n_pred or DEFAULT_DRAFT_TOKENS["model"])


class AdaptiveLookup:
    """Prompt lookup with two changes to llama-cpp-python's: a match must be at least 2 tokens
    (a single repeated token guesses wrong far more often than right), the most recent match
    wins, and the guess length adapts (halved after a guess that was wholly rejected, doubled
    back after one wholly accepted): a rejected guess still costs a batch of evaluations."""

    min_ngram_size = 2

    def guess(self, input_ids) -> np.ndarray:
        ids = np.asarray(input_ids, dtype=np.intc)
        n_now = getattr(self, "_n_now", self.num_pred_tokens)
        last = getattr(self, "_last", None)
        if last is not None and last[0] < len(ids):
            pos, g = last
            seen = ids[pos: pos + len(g)]
            ok = len(seen) if np.array_equal(seen, g[: len(seen)]) else int(np.argmin(seen == g[: len(seen)]))
            if ok == 0:
                n_now = max(1, n_now // 2)
            elif ok == len(g):
                n_now = min(self.num_pred_tokens, n_now * 2)
        out = np.array([], dtype=np.intc)
        n = len(ids)
        for size in range(min(self.max_ngram_size, n - 1), self.min_ngram_size - 1, -1):
            windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], size)
            hits = np.nonzero(np.all(windows == ids[n - size:], axis=1))[0]
            if len(hits):
                start = int(hits[-1]) + size
                out = ids[start: min(start + n_now, n)]
                if len(out):
                    break
        self._n_now = n_now
        self._last = (n, out) if len(out) else None
        return out


class DraftModel:
    """A small model run greedily: n_pred tokens of guess after the current context. Its own KV
    cache is reused across calls (llama-cpp-python's prefix matching in `generate`)."""

    kind = "model"

    def __init__(self, path, *, n_ctx: int, threads: int, n_pred: int):
        from ..llamacpp.runtime import Model

        self.path, self.n_pred = path, n_pred
        self.model = Model(path, n_ctx=n_ctx, logits_all=False, n_threads=threads, n_threads_batch=threads,
                           flash_attn=True)
        self.llm = self.model.llm

    def describe(self) -> str:
        return f"draft model {self.path} (greedy, up to {self.n_pred} tokens a step)"

    def check_vocab(self, llm) -> None:
        """The draft must speak the target's token ids."""
        a, b = self.llm, llm
        same = a.n_vocab() == b.n_vocab() and a.token_eos() == b.token_eos() and a.token_bos() == b.token_bos()
        if same:
            probe = b"The quick brown fox, 1234: <|im_start|> caf\xc3\xa9"
            same = a.tokenize(probe, add_bos=False, special=True) == b.tokenize(probe, add_bos=False, special=True)
        if not same:
            raise InputError(f"the draft model {self.path} does not share the model's vocabulary "
                             f"({a.n_vocab()} vs {b.n_vocab()} tokens, or different token ids)",
                             hint="use a smaller model of the same family, the same model at a low quant, "
                                  "or --draft lookup")

    def __call__(self, input_ids, /, **kwargs):
        import llama_cpp

        ids = input_ids.tolist()
        room = min(self.n_pred, self.llm.n_ctx() - len(ids) - 1)
        out: list[int] = []
        if room > 0:
            gen = self.llm.generate(ids, reset=True, temp=0.0, top_k=1, top_p=1.0, min_p=0.0,
                                    repeat_penalty=1.0)
            try:
                for tid in gen:
                    if llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, tid):
                        break
                    out.append(tid)
                    if len(out) >= room:
                        break
            finally:
                gen.close()
        return self._record(len(ids), np.array(out, dtype=np.intc))

    def close(self) -> None:
        self.model.close()
