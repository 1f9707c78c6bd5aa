"""Qwen3 (dense): llama.cpp arch "qwen3": per-head RMSNorm on q and k, head_dim may differ from
hidden/heads (written as key_length/value_length), NEOX rope (no permute)."""

from .base import Family

_QK_NORMS = frozenset({"self_attn.q_norm.weight", "self_attn.k_norm.weight"})

QWEN3 = Family(gguf_arch="qwen3", optional=_QK_NORMS, required_optional=_QK_NORMS)
