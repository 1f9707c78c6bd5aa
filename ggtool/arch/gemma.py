"""Gemma 2 and Gemma 3 (text): llama.cpp archs "gemma2" and "gemma3".

What a converter must get right here, as llama.cpp's gemma2/gemma3 graphs read it:
- RMSNorm scales by (1 + w) in HF; llama.cpp multiplies by the stored weight, so every norm
  weight (attention, post-attention, pre/post-FFN, q/k norms, output) is written as w + 1.
- The embedding is scaled by sqrt(hidden_size) at run time by llama.cpp, not in the weights.
- Four norms per block: attn_norm, post_attention_norm, ffn_norm (pre-FFN), post_ffw_norm.
- Sliding-window layers: the window (attention.sliding_window) and which layers use it
  (attention.sliding_window_pattern: a period, or one bool per layer from config `layer_types`).
- RoPE: Gemma 3's global layers use rope_theta (and its linear scaling), the local ones
  rope_local_base_freq unscaled (rope.freq_base_swa); Gemma 2 uses one base.
- Soft-capping: Gemma 2's attention and final logits (tanh caps); Gemma 3 only final, optional.
- Attention scale: llama.cpp uses 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B models
  (by layer count); a config whose query_pre_attn_scalar says otherwise is refused.
- GELU-tanh feed-forward (llama.cpp's gemma graphs hard-code it); refused for another activation.
- Gemma 2's llama.cpp graph always reads the output from token_embd: untied is refused.
- Gemma3ForConditionalGeneration: the text part (text_config, `language_model` tensors); the
  vision tower and projector are skipped with a warning (they go in a separate mmproj file).
"""

from __future__ import annotations

import re

import gguf
import numpy as np

from ..errors import InputError, UnsupportedArchitecture
from .base import BLOCK_NAMES, Family, HParams

GEMMA_BLOCK_NAMES = {
    **{k: v for k, v in BLOCK_NAMES.items() if not k.startswith("post_attention_layernorm")},
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}
_QK_NORMS = frozenset({"self_attn.q_norm.weight", "self_attn.k_norm.weight"})

# Gemma3ForConditionalGeneration: where the language model's tensors live, by transformers version
_MM_PREFIXES = (("language_model.model.", "model."), ("model.language_model.", "model."),
                ("language_model.lm_head.", "lm_head."))
_MM_SKIP = re.compile(r"^(model\.)?(vision_tower|multi_modal_projector|vision_model|embed_vision)\.")

GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh", "gelu_new", "gelu_fast")


def _swa_layers(config: dict, n_layer: int, default_period: int) -> list[bool]:
    """Which layers use the sliding window, as transformers decides it."""
    types = config.get("layer_types")
    if types:
        if len(types) != n_layer:
            raise InputError(f"config layer_types has {len(types)} entries for {n_layer} layers",
                             hint="config.json is inconsistent")
        bad = sorted(set(types) - {"sliding_attention", "full_attention"})
        if bad:
            raise UnsupportedArchitecture(f"layer type {bad[0]!r} is not supported",
                                          hint="Gemma layers are sliding_attention or full_attention")
        return [t == "sliding_attention" for t in types]
    period = int(config.get("sliding_window_pattern") or default_period)
    return [bool((i + 1) % period) for i in range(n_layer)]


def _period_of(swa: list[bool]) -> int | None:
    """n such that layer i is sliding exactly when i % n < n - 1 (llama.cpp's period form)."""
    for n in range(1, len(swa) + 2):
        if all(s == (n == 0 or i % n < n - 1) for i, s in enumerate(swa)):
            return n
    return None


class GemmaFamily(Family):
    """Shared by Gemma 2 and Gemma 3; the differences are the fields below."""

    default_period: int = 2

    def validate(self, hp: HParams, config: dict, hf_names: list[str]) -> None:
        act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in GELU_TANH:
            raise UnsupportedArchitecture(f"{self.gguf_arch} with activation {act!r} is not supported",
                                          hint="llama.cpp's Gemma graphs use GELU (tanh approximation)")
        # llama.cpp picks the attention scale by model size (27B: hidden/heads), not from config
        scale_dim = hp.n_embd // hp.n_head if hp.n_layer in self.big_layers else hp.head_dim
        qpas = config.get("query_pre_attn_scalar")
        if qpas is not None and float(qpas) != float(scale_dim):
            raise UnsupportedArchitecture(
                f"query_pre_attn_scalar {qpas} differs from the {scale_dim} llama.cpp uses for a "
                f"{hp.n_layer}-layer {self.gguf_arch} model",
                hint="llama.cpp would compute a different attention scale and produce wrong output")
        if config.get("attention_bias"):
            raise UnsupportedArchitecture(f"{self.gguf_arch} with attention_bias is not supported",
                                          hint="llama.cpp's Gemma graphs have no attention biases")

    def rowwise(self, gguf_name: str) -> bool:
        return True  # transform() adds 1 to each norm weight: element by element

    def transform(self, gguf_name: str, x: np.ndarray, hp: HParams, out: np.ndarray | None = None) -> np.ndarray:
        if gguf_name.endswith("norm.weight"):     # HF: x * (1 + w); llama.cpp: x * w
            return (x.astype(np.float32) + np.float32(1.0)).astype(np.float32)
        return x

    def shapes(self, hp: HParams) -> dict[str, tuple[int, ...]]:
        s = super().shapes(hp)
        s["post_attention_norm.weight"] = s["post_ffw_norm.weight"] = (hp.n_embd,)
        return s

    def block_tensors(self, hp: HParams) -> list[str]:
        return super().block_tensors(hp) + ["post_attention_norm.weight", "post_ffw_norm.weight"]

    def write_sliding(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        swa = _swa_layers(config, hp.n_layer, self.default_period)
        w.add_sliding_window(int(config["sliding_window"]))
        period = _period_of(swa)
        w.add_sliding_window_pattern(period if period is not None else swa)

    def write_hparams(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        config = self.prepare_config(config)
        super().write_hparams(w, hp, config)
        if hp.head_dim == hp.n_embd // hp.n_head:   # Gemma always states it (convert_hf does too)
            w.add_key_length(hp.head_dim)
            w.add_value_length(hp.head_dim)


class Gemma2Family(GemmaFamily):
    big_layers = (46,)   # llama.cpp's LLM_TYPE_27B for gemma2

    def validate(self, hp: HParams, config: dict, hf_names: list[str]) -> None:
        super().validate(hp, config, hf_names)
        if not hp.tied and "lm_head.weight" in hf_names:
            raise UnsupportedArchitecture(
                "Gemma 2 with an untied lm_head is not supported",
                hint="llama.cpp's gemma2 graph always uses token_embd as the output matrix")

    def write_hparams(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        config = self.prepare_config(config)
        super().write_hparams(w, hp, config)
        w.add_attn_logit_softcapping(float(config["attn_logit_softcapping"] or 0.0))
        w.add_final_logit_softcapping(float(config["final_logit_softcapping"] or 0.0))
        self.write_sliding(w, hp, config)


class Gemma3Family(GemmaFamily):
    big_layers = (62,)   # llama.cpp's LLM_TYPE_27B for gemma3
    default_period = 6

    def prepare_config(self, config: dict) -> dict:
        text = config.get("text_config")
        if isinstance(text, dict):   # Gemma3ForConditionalGeneration: the language model's config
            top = {k: v for k, v in config.items() if k != "text_config"}
            config = {**top, **{k: v for k, v in text.items() if k not in ("architectures", "model_type")}}
        config = {**self.defaults, **config}
        # transformers v5 nests the two rope settings by layer type
        rp = config.get("rope_parameters")
        if isinstance(rp, dict) and ("full_attention" in rp or "sliding_attention" in rp):
            full, local = rp.get("full_attention") or {}, rp.get("sliding_attention") or {}
            config["rope_theta"] = full.get("rope_theta", config.get("rope_theta"))
            config["rope_local_base_freq"] = local.get("rope_theta", config.get("rope_local_base_freq"))
            config["rope_scaling"] = full if full.get("rope_type", "default") != "default" else None
            config.pop("rope_parameters")
        return config

    def rename(self, hf_name: str) -> str | None:
        if _MM_SKIP.match(hf_name):
            return None
        for old, new in _MM_PREFIXES:
            if hf_name.startswith(old):
                return new + hf_name[len(old):]
        return hf_name

    def validate(self, hp: HParams, config: dict, hf_names: list[str]) -> None:
        super().validate(hp, config, hf_names)
        if config.get("attn_logit_softcapping"):
            raise UnsupportedArchitecture("Gemma 3 with attention soft-capping is not supported",
                                          hint="llama.cpp's gemma3 graph has no attention soft-cap")
        if config.get("use_bidirectional_attention"):
            raise UnsupportedArchitecture("bidirectional Gemma 3 (an embedding model) is not supported",
                                          hint="ggtool converts the causal Gemma 3 language models")

    def write_hparams(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        config = self.prepare_config(config)
        super().write_hparams(w, hp, config)
        w.add_rope_freq_base_swa(float(config["rope_local_base_freq"]))
        if config.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
        if config.get("sliding_window"):
            self.write_sliding(w, hp, config)


GEMMA2 = Gemma2Family(
    gguf_arch="gemma2", optional=frozenset(), block_names=GEMMA_BLOCK_NAMES,
    defaults={"tie_word_embeddings": True, "rope_theta": 10000.0, "sliding_window": 4096,
              "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
              "query_pre_attn_scalar": 256, "head_dim": 256, "rms_norm_eps": 1e-6},
)

# Gemma3TextConfig's defaults (the multimodal configs leave many of them out of text_config)
GEMMA3 = Gemma3Family(
    gguf_arch="gemma3", optional=_QK_NORMS, required_optional=_QK_NORMS,
    block_names=GEMMA_BLOCK_NAMES,
    defaults={"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
              "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
              "head_dim": 256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True, "rope_theta": 1_000_000.0,
              "query_pre_attn_scalar": 256, "sliding_window": 4096,
              "rope_local_base_freq": 10000.0},
)
