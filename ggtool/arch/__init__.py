"""Supported architectures: HF `architectures[0]` -> family (data in one module each)."""

from __future__ import annotations

from ..errors import UnsupportedArchitecture
from .base import Family, HParams  # noqa: F401
from .gemma import GEMMA2, GEMMA3
from .llama import LLAMA, MISTRAL
from .moe import MIXTRAL, QWEN3MOE
from .phi3 import PHI3
from .qwen2 import QWEN2
from .qwen3 import QWEN3

ARCHITECTURES: dict[str, Family] = {
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": MISTRAL,
    "Qwen2ForCausalLM": QWEN2,
    "Qwen3ForCausalLM": QWEN3,
    "Gemma2ForCausalLM": GEMMA2,
    "Gemma3ForCausalLM": GEMMA3,
    "Gemma3ForConditionalGeneration": GEMMA3,   # the language model; vision tower skipped
    "Phi3ForCausalLM": PHI3,
    "MixtralForCausalLM": MIXTRAL,
    "Qwen3MoeForCausalLM": QWEN3MOE,
}


def family_for(config: dict) -> Family:
    from .base import check_config

    check_config(config)
    archs = config.get("architectures") or []
    name = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    if name not in ARCHITECTURES:
        shown = name or config.get("model_type") or "unknown"
        shown = shown[:60] if isinstance(shown, str) else str(shown)[:60]
        raise UnsupportedArchitecture(
            f"config.json: unsupported architecture {shown!r}",
            hint="supported architectures are " + ", ".join(ARCHITECTURES),
        )
    return ARCHITECTURES[name]
