"""Llama family (SmolLM, TinyLlama, Llama 2, Llama 3.x) and Mistral: llama.cpp arch "llama".

HF stores q/k rows in rotate_half order; llama.cpp's llama arch rotates interleaved pairs,
so q_proj/k_proj rows are permuted per head (as llama.cpp's own converter does).
"""

from .base import Family

LLAMA = Family(
    gguf_arch="llama",
    # attention_bias=True (rare) puts biases on q, k, v and o; llama.cpp's llama arch loads them
    optional=frozenset({"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                        "self_attn.o_proj.bias"}),
    permute_qk=True,
)

# Mistral 7B v0.1's sliding_window (4096) is not used by llama.cpp's llama arch either.
MISTRAL = LLAMA
