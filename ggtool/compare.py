"""`ggtool compare A.gguf B.gguf [PROMPTS]`: the same prompts through two models, side by side.

Answers are greedy (argmax at every step: no sampling, so no seed is involved and a rerun gives
the same text). The KL divergence is of B against A (A is the reference, as the base in
llama-perplexity): per prompt over the positions of prompt + A's answer (teacher-forced), and
over a few chunks of the evaluation text (A's log-probabilities cached like a bench base).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .evaluate import base_logprobs, kld, pair_kld, read_text
from .llamacpp.context import LlamaModel

DEFAULT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "Water boils at a temperature of",
]


@dataclass
class PromptResult:
    prompt: str
    answer_a: str
    answer_b: str
    same: bool
    kld_mean: float
    same_top_pct: float


@dataclass
class CompareResult:
    model_a: str
    model_b: str
    prompts: list[PromptResult] = field(default_factory=list)
    text_kld: dict | None = None     # KLDStats.to_dict() on the evaluation text, or None

    def to_json(self) -> dict:
        return {"model_a": self.model_a, "model_b": self.model_b,
                "prompts": [p.__dict__ for p in self.prompts], "text_kld": self.text_kld}


def greedy(model: LlamaModel, prompt: str, max_tokens: int, threads=None) -> tuple[np.ndarray, np.ndarray]:
    """(prompt ids, answer ids): argmax continuation, stopping at an end-of-generation token."""
    mod = model._mod
    ids = model.tokenize(prompt, add_special=True, parse_special=True)
    if ids.size == 0:
        raise InputError("an empty prompt cannot be continued", hint="give a prompt with some text")
    out = []
    with model.context(n_ctx=int(ids.size) + max_tokens + 1, n_threads=threads) as ctx:
        logits = ctx.decode(ids, outputs=[ids.size - 1])
        for _ in range(max_tokens):
            tok = int(np.argmax(logits[0]))
            if mod.llama_vocab_is_eog(model.vocab, tok):
                break
            out.append(tok)
            logits = ctx.decode([tok], outputs=[0])
    return ids, np.asarray(out, dtype=np.int32)


def compare(path_a, path_b, prompts=None, *, max_tokens: int = 48, chunks: int = 4, ctx: int = 512,
            text_path=None, threads=None, progress: bool = True, log=None) -> CompareResult:
    log = log or (lambda m: None)
    prompts = list(prompts) or DEFAULT_PROMPTS
    res = CompareResult(str(path_a), str(path_b))
    with LlamaModel(path_a) as a, LlamaModel(path_b) as b:
        if a.n_vocab != b.n_vocab:
            raise InputError(f"{a.path.name} has {a.n_vocab} tokens, {b.path.name} {b.n_vocab}",
                             hint="compare two versions of the same model (same vocabulary)")
        for p in prompts:
            ids, ans_a = greedy(a, p, max_tokens, threads)
            _, ans_b = greedy(b, p, max_tokens, threads)
            st = pair_kld(a, b, [np.concatenate([ids, ans_a])], threads=threads)
            res.prompts.append(PromptResult(p, a.detokenize(ans_a), b.detokenize(ans_b),
                                            bool(np.array_equal(ans_a, ans_b)), st.kld_mean, st.same_top_pct))
        if chunks > 0:
            text, label = read_text(text_path)
            log(f"KLD of B against A on {chunks} chunk(s) of {label}")
            base = base_logprobs(Path(path_a), text, ctx, chunks, threads=threads, progress=progress)
            res.text_kld = kld(base, b, threads=threads, progress=progress).to_dict()
    return res


def side_by_side(res: CompareResult, width: int = 100) -> str:
    col = max(20, (width - 3) // 2)
    name_a, name_b = Path(res.model_a).name, Path(res.model_b).name
    out = []
    for i, p in enumerate(res.prompts, 1):
        out.append(f"[{i}] {p.prompt}")
        la = textwrap.wrap(p.answer_a.strip() or "(nothing)", col) or [""]
        lb = textwrap.wrap(p.answer_b.strip() or "(nothing)", col) or [""]
        out.append(f"{('A: ' + name_a)[:col]:<{col}} | {('B: ' + name_b)[:col]}")
        for k in range(max(len(la), len(lb))):
            out.append(f"{(la[k] if k < len(la) else ''):<{col}} | {lb[k] if k < len(lb) else ''}")
        out.append(f"{'same answer' if p.same else 'answers differ'}; KLD(B||A) {p.kld_mean:.5f}, "
                   f"same top token {p.same_top_pct:.1f}%")
        out.append("")
    if res.text_kld:
        k = res.text_kld
        out.append(f"On the evaluation text ({k['count']} tokens): KLD(B||A) {k['kld_mean']:.5f} ± {k['kld_err']:.5f}, "
                   f"median {k['kld_median']:.5f}, p99 {k['kld_p99']:.5f}, same top {k['same_top_pct']:.2f}%, "
                   f"PPL A {k['ppl_base']:.3f}, PPL B {k['ppl']:.3f}")
    return "\n".join(out)
