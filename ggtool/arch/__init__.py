"""Supported architectures: HF `architectures[0]` -> family (data in one module each)."""

from __future__ import annotations

from ..errors import UnsupportedArchitecture
from .base import Family, HParams  # noqa: F401
from .llama import LLAMA, MISTRAL
from .qwen2 import QWEN2
from .qwen3 import QWEN3

ARCHITECTURES: dict[str, Family] = {
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": MISTRAL,
    "Qwen2ForCausalLM": QWEN2,
    "Qwen3ForCausalLM": QWEN3,
}


def family_for(config: dict) -> Family:
    archs = config.get("architectures") or []
    name = archs[0] if archs else None
    if name not in ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"unsupported architecture {name or config.get('model_type', 'unknown')!r}",
            hint="supported architectures are " + ", ".join(ARCHITECTURES),
        )
    return ARCHITECTURES[name]
