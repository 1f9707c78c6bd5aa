"""A model loaded for talking, and the one token-streaming loop that chat, run, serve's start-up
and the benchmarks share.

    eng = Engine.load(resolve_model("model.gguf"), ctx=None, gpu_layers=None, draft=None)
    res = eng.stream(eng.chat_tokens(messages), Sampling(temp=0), max_tokens=64, on_text=print)

Flash attention is on (llama.cpp's own default picks it wherever it is supported; llama-cpp-python's
default is off). Besides speed it makes a token's logits the same whether it is evaluated alone or
in a batch, which speculative decoding needs for greedy output to stay exactly the same.

The loop drives llama-cpp-python's `Llama.generate` directly (so a draft model plugs in) and
turns token ids into text itself: UTF-8 pieces are decoded incrementally, stop strings are held
back until they can no longer match, end-of-generation tokens (EOS, EOT, <|im_end|>...) stop it.
"""

from __future__ import annotations

import codecs
import ctypes
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import GgtoolError, InputError
from . import hardware
from .templates import ChatTemplate, from_metadata


class ContextFull(GgtoolError):
    hint = "start a new chat (/reset), shorten the input, or raise --ctx"


def resolve_model(spec: str) -> Path:
    """MODEL argument -> a .gguf path: a file, a folder holding one .gguf, or a stored NAME[:QUANT]
    (the model store's resolve_model)."""
    from ..store import resolve_model as store_resolve

    p = Path(store_resolve(spec))
    if p.is_file():
        return p
    if p.is_dir():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
        raise InputError(f"{spec} is a folder with {len(ggufs)} .gguf files", hint="name the .gguf file itself")
    raise InputError(f"no model file {spec}", hint="give the path of a .gguf file, or a stored model's name")


@dataclass
class Sampling:
    temp: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int | None = None

    def generate_kwargs(self) -> dict:
        greedy = self.temp <= 0
        return dict(temp=0.0 if greedy else self.temp, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                    repeat_penalty=self.repeat_penalty)


@dataclass
class Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    stop_reason: str                # stop | length | context | interrupted
    time_to_first_token: float      # seconds: prompt processing + the first token
    seconds: float                  # the whole answer
    draft: dict | None = None       # {"kind", "drafted", "accepted", "acceptance"}
    ids: list[int] = field(default_factory=list, repr=False)

    @property
    def tokens_per_second(self) -> float:
        """Generation speed after the first token (prompt processing excluded)."""
        gen = self.seconds - self.time_to_first_token
        return (self.completion_tokens - 1) / gen if self.completion_tokens > 1 and gen > 0 else 0.0

    def stats_line(self) -> str:
        s = (f"{self.prompt_tokens} prompt tokens, {self.completion_tokens} tokens, "
             f"first token {self.time_to_first_token:.2f} s, {self.tokens_per_second:.1f} tokens/s"
             f" (stop: {self.stop_reason})")
        if self.draft:
            s += f", draft {self.draft['kind']}: {self.draft['accepted']}/{self.draft['drafted']} accepted"
        return s

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("ids")
        d["tokens_per_second"] = round(self.tokens_per_second, 2)
        d["time_to_first_token"] = round(self.time_to_first_token, 4)
        d["seconds"] = round(self.seconds, 4)
        return d


class Engine:
    """A GGUF loaded in llama.cpp with a placement plan, ready to stream tokens."""

    def __init__(self, path: Path, model, shape, machine, plan, draft=None):
        self.path, self.model, self.shape, self.machine, self.plan = path, model, shape, machine, plan
        self.llm = model.llm
        self.draft = draft
        self._pieces: dict[int, bytes] = {}
        self._template: ChatTemplate | None = None

    @classmethod
    def load(cls, path: str | Path, *, ctx: int | None = None, gpu_layers: int | None = None,
             threads: int | None = None, draft: str | None = None, draft_tokens: int | None = None) -> "Engine":
        from ..llamacpp.runtime import Model

        path = Path(path)
        shape = hardware.ModelShape.from_gguf(path)
        machine = hardware.probe()
        plan = hardware.plan(shape, machine, ctx=ctx, gpu_layers=gpu_layers, threads=threads)
        draft_model = None
        if draft:
            from .draft import make_draft

            draft_model = make_draft(draft, n_ctx=plan.n_ctx, threads=plan.threads, machine=machine,
                                     n_pred=draft_tokens)
        try:
            model = Model(path, n_ctx=plan.n_ctx, logits_all=False, n_threads=plan.threads,
                          n_gpu_layers=plan.n_gpu_layers, n_threads_batch=plan.threads,
                          flash_attn=True, draft_model=draft_model)
        except MemoryError:
            raise InputError(f"not enough memory to load {path.name} with a {plan.n_ctx}-token context",
                             hint="pass a smaller --ctx, or fewer --gpu-layers") from None
        eng = cls(path, model, shape, machine, plan, draft_model)
        if draft_model is not None:
            draft_model.check_vocab(eng.llm)
        return eng

    # ------------------------------------------------------------------ what runs where
    def describe(self) -> list[str]:
        lines = [f"model: {self.path} ({self.shape.arch}, {self.shape.n_layer} layers, "
                 f"{hardware.human(self.path.stat().st_size)})"]
        lines += self.plan.describe(self.shape, self.machine)
        from ..llamacpp import log_tail

        got = hardware.offloaded_from_log(log_tail())
        if got and self.machine.devices and got[0] != min(self.plan.n_gpu_layers, got[1]):
            lines.append(f"note: llama.cpp offloaded {got[0]}/{got[1]} layers (asked for {self.plan.n_gpu_layers})")
        if self.draft is not None:
            lines.append(f"speculative decoding: {self.draft.describe()}")
        return lines

    def summary(self) -> str:
        """One line for `run`: where it runs."""
        on_gpu = min(self.plan.n_gpu_layers, self.shape.n_layer + 1)
        gpu = (f"{on_gpu}/{self.shape.n_layer + 1} layers on GPU" if self.machine.devices
               else "CPU only" + (f" ({self.machine.gpu_hint})" if self.machine.gpu_hint else ""))
        return (f"{self.path.name}: {self.plan.threads} thread{'s' if self.plan.threads != 1 else ''}, {gpu}, context {self.plan.n_ctx}, "
                f"KV cache {hardware.human(self.plan.kv_bytes)}")

    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    # ------------------------------------------------------------------ text <-> tokens
    def token_text(self, tid: int) -> str:
        if tid < 0:
            return ""
        return self.llm._model.token_get_text(tid)

    def template(self, override: str | None = None) -> ChatTemplate:
        if self._template is None or override:
            self._template = from_metadata(self.llm.metadata, self.token_text(self.llm.token_bos()),
                                           self.token_text(self.llm.token_eos()), override,
                                           model_name=self.path.name)
        return self._template

    def tokenize_chat(self, prompt: str) -> list[int]:
        """Tokens of a rendered chat prompt: special tokens parsed; no BOS added (the template
        writes it if the model wants it, as transformers' apply_chat_template does)."""
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def tokenize_raw(self, text: str) -> list[int]:
        """Tokens of plain text for completion: BOS as the model's tokenizer adds it."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def piece(self, tid: int) -> bytes:
        p = self._pieces.get(tid)
        if p is None:
            import llama_cpp

            buf = ctypes.create_string_buffer(256)
            n = llama_cpp.llama_token_to_piece(self.llm._model.vocab, tid, buf, 256, 0, False)
            p = self._pieces[tid] = buf.raw[:max(n, 0)]
        return p

    # ------------------------------------------------------------------ the loop
    def stream(self, tokens: list[int], sampling: Sampling, max_tokens: int | None = None, on_text=None,
               stop: list[str] | None = None, cancel=None, lstrip: bool = False) -> Result:
        """Generate after `tokens` until an end-of-generation token, a stop string, max_tokens,
        the end of the context, or cancel() returns True. Streams text to on_text(str)."""
        import llama_cpp

        n_ctx = self.n_ctx
        room = n_ctx - len(tokens)
        if room <= 0:
            raise ContextFull(f"the prompt is {len(tokens)} tokens; the context holds {n_ctx}")
        limit = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
        if sampling.seed is not None:
            self.llm.set_seed(sampling.seed)
        vocab = self.llm._model.vocab
        stop = [s for s in (stop or []) if s]
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        emit = on_text or (lambda s: None)
        out_ids: list[int] = []
        parts: list[str] = []
        pending = ""
        reason = "length" if limit < room else "context"
        if self.draft is not None:
            self.draft.start()
        t0 = time.perf_counter()
        first = None

        def flush(text: str):
            nonlocal lstrip
            if lstrip:
                text = text.lstrip()
                if not text:
                    return
                lstrip = False
            parts.append(text)
            emit(text)

        gen = self.llm.generate(tokens, reset=True, **sampling.generate_kwargs())
        try:
            for tid in gen:
                if first is None:
                    first = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, tid):
                    reason = "stop"
                    break
                out_ids.append(tid)
                pending += decoder.decode(self.piece(tid))
                if stop:
                    cut = min((i for i in (pending.find(s) for s in stop) if i >= 0), default=-1)
                    if cut >= 0:
                        pending = pending[:cut]
                        reason = "stop"
                        break
                    keep = _held_back(pending, stop)
                    if len(pending) > keep:
                        flush(pending[:len(pending) - keep])
                        pending = pending[len(pending) - keep:]
                elif pending:
                    flush(pending)
                    pending = ""
                if len(out_ids) >= limit:
                    break
                if cancel is not None and cancel():
                    reason = "interrupted"
                    break
        finally:
            gen.close()
        pending += decoder.decode(b"", final=True)
        if pending:
            flush(pending)
        t1 = time.perf_counter()
        draft = None
        if self.draft is not None:
            draft = self.draft.finish(list(tokens) + out_ids, len(tokens))
        return Result("".join(parts), len(tokens), len(out_ids), reason,
                      (first or t1) - t0, t1 - t0, draft, out_ids)

    def close(self):
        self.model.close()
        if self.draft is not None:
            self.draft.close()


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
