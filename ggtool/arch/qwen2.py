"""Qwen2 / Qwen2.5: llama.cpp arch "qwen2": q/k/v projections carry biases, NEOX rope (no permute)."""

from .base import Family

_BIASES = frozenset({"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"})

QWEN2 = Family(gguf_arch="qwen2", optional=_BIASES, required_optional=_BIASES)
