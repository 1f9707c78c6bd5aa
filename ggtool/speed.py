"""Prompt-processing and generation speed, measured as llama-bench measures it.

tools/llama-bench/llama-bench.cpp, for each test (pp512, tg128):
- a fresh context of n_prompt + n_gen tokens (n_batch 2048, n_ubatch 512) on the loaded model;
- a warm-up run first (pp: the whole prompt; tg: one token);
- each repetition clears the KV cache, then times the test:
  pp = random tokens (BOS first when the model adds one) decoded in batches of n_batch, only
  the last token's logits computed, then a synchronize;
  tg = one token per llama_decode (logits on), a synchronize after each;
- t/s of a repetition = tokens / seconds; reported as mean +- sample standard deviation.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .llamacpp.context import LlamaModel, default_threads
from .progress import bar


@dataclass
class SpeedResult:
    test: str                       # "pp512", "tg128"
    n_tokens: int
    threads: int
    samples_ts: list[float] = field(default_factory=list)

    @property
    def avg_ts(self) -> float:
        return float(np.mean(self.samples_ts)) if self.samples_ts else 0.0

    @property
    def stddev_ts(self) -> float:
        s = self.samples_ts
        return float(np.std(s, ddof=1)) if len(s) > 1 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "avg_ts": self.avg_ts, "stddev_ts": self.stddev_ts}


def _prompt(ctx, model: LlamaModel, n: int, n_batch: int, rng) -> None:
    done = 0
    while done < n:
        m = min(n - done, n_batch)
        toks = rng.integers(0, model.n_vocab, m, dtype=np.int32)
        if done == 0 and model.add_bos:
            toks[0] = model.bos
        ctx.decode(toks, outputs=[m - 1], fetch=False)
        done += m
    ctx.synchronize()


def _generate(ctx, model: LlamaModel, n: int, rng) -> None:
    tok = model.bos if model.add_bos else int(rng.integers(model.n_vocab))
    for _ in range(n):
        ctx.decode([tok], outputs=[0], fetch=False)
        ctx.synchronize()
        tok = int(rng.integers(model.n_vocab))


def measure(model, n_prompt: int = 512, n_gen: int = 128, reps: int = 5, *, threads: int | None = None,
            n_batch: int = 2048, n_ubatch: int = 512, warmup: bool = True, progress: bool = True,
            n_gpu_layers: int = 0, seed: int = 0, flash_attn: bool | None = None) -> dict[str, SpeedResult]:
    """{"pp<n_prompt>": ..., "tg<n_gen>": ...} for a GGUF path or a loaded LlamaModel.
    flash_attn: None = llama.cpp's default (auto), as llama-bench."""
    owned = not isinstance(model, LlamaModel)
    m = LlamaModel(model, n_gpu_layers=n_gpu_layers) if owned else model
    threads = threads or default_threads()
    rng = np.random.default_rng(seed)
    tests = [t for t in (("pp", n_prompt), ("tg", n_gen)) if t[1] > 0]
    results = {}
    try:
        with bar(len(tests) * reps, f"speed {m.path.name}", progress, "rep") as pb:
            for kind, n in tests:
                res = SpeedResult(f"{kind}{n}", n, threads)
                batch = min(n_batch, n)
                with m.context(n_ctx=n, n_batch=batch, n_ubatch=n_ubatch, n_threads=threads,
                               flash_attn=flash_attn) as ctx:
                    run = (lambda: _prompt(ctx, m, n, batch, rng)) if kind == "pp" else (lambda: _generate(ctx, m, n, rng))
                    if warmup:
                        _prompt(ctx, m, n, batch, rng) if kind == "pp" else _generate(ctx, m, 1, rng)
                    for _ in range(reps):
                        ctx.clear()
                        t0 = time.perf_counter_ns()
                        run()
                        res.samples_ts.append(1e9 * n / (time.perf_counter_ns() - t0))
                        pb.update(1)
                results[res.test] = res
    finally:
        if owned:
            m.close()
    return results
