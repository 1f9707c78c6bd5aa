"""Phi-3 / Phi-3.5 / Phi-4-mini (Phi3ForCausalLM): llama.cpp arch "phi3".

- The fused projections go through as they are: qkv_proj (q, k, v rows) is attn_qkv, and
  gate_up_proj (gate rows, then up rows) is ffn_up, which llama.cpp splits in that order.
- NEOX rope over the first partial_rotary_factor of each head (Phi-4-mini: 0.75).
- LongRoPE (rope_scaling type longrope/su, Phi-3.5 and the 128k models): the per-frequency
  divisors go in rope_factors_long/rope_factors_short, the attention factor and the original
  context in rope.scaling.*; llama.cpp takes the long factors when its context is longer than
  original_max_position_embeddings (transformers: when the sequence is).
- sliding_window is written (0 where the config has none, as Phi-4-mini), but llama.cpp's phi3
  graph does not apply it: prompts longer than the window (2047 on Phi-3-mini-4k) differ.
- Phi-3's chat tokens strip the whitespace after them (rstrip in tokenizer_config); llama.cpp
  does that only when general.name contains "phi-3"/"phi3", so such a model's name gets a
  "Phi-3 " prefix when its folder name (a Hub snapshot hash, say) lacks it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np

from ..errors import InputError, UnsupportedArchitecture
from .base import Family, HParams

PHI3_BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _longrope(config: dict) -> dict | None:
    rs = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = str(rs.get("rope_type") or rs.get("type") or "").lower()
    return rs if kind in ("longrope", "su") else None


class Phi3Family(Family):
    def model_name(self, name: str, model_dir) -> str:
        path = Path(model_dir) / "tokenizer_config.json"
        try:
            decoder = json.loads(path.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
        except (OSError, ValueError, AttributeError):
            return name   # the tokenizer step reports a broken file
        rstrip = any(isinstance(t, dict) and t.get("rstrip") for t in decoder.values())
        low = name.lower()
        return f"Phi-3 {name}" if rstrip and "phi-3" not in low and "phi3" not in low else name

    def rope_dims(self, hp: HParams, config: dict) -> int:
        rs = config.get("rope_parameters") or {}
        pct = float(config.get("partial_rotary_factor") or rs.get("partial_rotary_factor") or 1.0)
        return int(pct * hp.n_embd) // hp.n_head

    def validate(self, hp: HParams, config: dict, hf_names: list[str]) -> None:
        if hp.head_dim * hp.n_head != hp.n_embd:
            raise UnsupportedArchitecture(
                f"Phi-3 with head_dim {hp.head_dim} x {hp.n_head} heads != hidden {hp.n_embd}",
                hint="llama.cpp's phi3 graph needs head_dim * heads == hidden_size")
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise UnsupportedArchitecture(f"Phi-3 with activation {act!r} is not supported",
                                          hint="llama.cpp's phi3 graph uses SwiGLU")
        rs = hp.rope_scaling or {}
        kind = str(rs.get("rope_type") or rs.get("type") or "default").lower()
        if kind not in ("default", "longrope", "su"):
            raise UnsupportedArchitecture(f"Phi-3 rope_scaling type {kind!r} is not supported",
                                          hint="supported: none, longrope")
        lr = _longrope(config)
        if lr is not None:
            half = self.rope_dims(hp, config) // 2
            for key in ("long_factor", "short_factor"):
                if len(lr.get(key) or []) != half:
                    raise InputError(f"rope_scaling.{key} has {len(lr.get(key) or [])} values, "
                                     f"{half} expected (half the rotary dimensions)",
                                     hint="config.json is inconsistent")

    def shapes(self, hp: HParams) -> dict[str, tuple[int, ...]]:
        s = super().shapes(hp)
        q, kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
        s["attn_qkv.weight"] = (q + 2 * kv, hp.n_embd)
        s["ffn_up.weight"] = (2 * hp.n_ff, hp.n_embd)   # gate rows, then up rows
        return s

    def block_tensors(self, hp: HParams) -> list[str]:
        return ["attn_norm.weight", "attn_qkv.weight", "attn_output.weight", "ffn_norm.weight",
                "ffn_up.weight", "ffn_down.weight"]

    def write_hparams(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        super().write_hparams(w, hp, config)
        orig = int(config.get("original_max_position_embeddings") or hp.n_ctx)
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_sliding_window(int(config.get("sliding_window") or 0))
        lr = _longrope(config)
        if lr is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
            w.add_rope_scaling_attn_factors(self.attn_factor(hp, config))

    def attn_factor(self, hp: HParams, config: dict) -> float:
        """transformers' LongRoPE cos/sin scale: sqrt(1 + ln(s) / ln(orig)), s = ctx / orig."""
        lr = _longrope(config) or {}
        if lr.get("attention_factor") is not None:
            return float(lr["attention_factor"])
        orig = int(config.get("original_max_position_embeddings") or hp.n_ctx)
        scale = hp.n_ctx / orig
        return math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0

    def extra_tensors(self, hp: HParams) -> dict[str, np.ndarray]:
        lr = _longrope({"rope_scaling": hp.rope_scaling})
        if lr is None:
            return {}
        return {"rope_factors_long.weight": np.asarray(lr["long_factor"], dtype=np.float32),
                "rope_factors_short.weight": np.asarray(lr["short_factor"], dtype=np.float32)}


PHI3 = Phi3Family(gguf_arch="phi3", optional=frozenset(), block_names=PHI3_BLOCK_NAMES,
                  handles_longrope=True)
