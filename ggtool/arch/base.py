"""What every decoder-only family shares: hyper-parameters, the tensor-name table, shape checks.

A family module (llama.py, qwen2.py, ...) is a `Family(...)` value: data plus, where needed, a
small transform. A family with more twists (gemma.py, phi3.py, moe.py) subclasses Family and
overrides the few methods it needs: `prepare_config`, `rename`, `shapes`, `block_tensors`,
`transform`, `write_hparams`, `rope_dims`, `validate`, `model_name`, `expert_slot`.
Registering the next family is adding a module and a line in __init__.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import gguf

from ..errors import InputError, UnsupportedArchitecture

# HF name -> GGUF name, outside the blocks
GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
# HF suffix inside model.layers.{i}. -> GGUF suffix inside blk.{i}.
BLOCK_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.bias": "attn_output.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
# stored by some checkpoints, derived by llama.cpp: skipped
IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class HParams:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool
    rope_scaling: dict | None
    n_expert: int = 0           # mixture of experts: experts per layer (0: dense)
    n_expert_used: int = 0      # experts each token is routed to
    n_ff_exp: int = 0           # one expert's feed-forward length


def _req(config: dict, key: str, arch: str):
    if config.get(key) is None:
        raise InputError(f"config.json of this {arch} checkpoint has no {key!r}",
                         hint="the checkpoint's config.json is incomplete")
    return config[key]


# config.json keys ggtool reads -> (kind, smallest, largest). Checked before any is used, so a
# wrong type or an absurd size (2^63 layers, a negative vocab) is an error naming the key, not
# a traceback or a 2^63-long loop. null means absent, as in HF's own configs.
CONFIG_FIELDS: dict[str, tuple[type, float, float]] = {
    "hidden_size": (int, 1, 1 << 20),
    "num_attention_heads": (int, 1, 1 << 14),
    "num_key_value_heads": (int, 1, 1 << 14),
    "num_hidden_layers": (int, 1, 4096),
    "intermediate_size": (int, 1, 1 << 22),
    "vocab_size": (int, 1, (1 << 31) - 1),
    "head_dim": (int, 2, 1 << 14),
    "max_position_embeddings": (int, 1, (1 << 32) - 1),
    "rope_theta": (float, 1e-6, 1e30),
    "rms_norm_eps": (float, 0.0, 1.0),
    "tie_word_embeddings": (bool, 0, 1),
    # the families with twists (gemma.py, phi3.py, moe.py)
    "num_local_experts": (int, 1, 1024), "num_experts": (int, 1, 1024), "num_experts_per_tok": (int, 1, 1024),
    "moe_intermediate_size": (int, 1, 1 << 22), "decoder_sparse_step": (int, 1, 4096),
    "sliding_window": (int, 0, (1 << 32) - 1), "sliding_window_pattern": (int, 1, 4096),
    "query_pre_attn_scalar": (float, 1e-6, 1e6), "attn_logit_softcapping": (float, 0.0, 1e6),
    "final_logit_softcapping": (float, 0.0, 1e6), "rope_local_base_freq": (float, 1e-6, 1e30),
    "partial_rotary_factor": (float, 1e-6, 1.0), "original_max_position_embeddings": (int, 1, (1 << 32) - 1),
    "hidden_act": (str, 0, 0), "hidden_activation": (str, 0, 0),
}
ROPE_FIELDS: dict[str, tuple[type, float, float]] = {
    "factor": (float, 1e-6, 1e6), "low_freq_factor": (float, 1e-6, 1e6),
    "high_freq_factor": (float, 1e-6, 1e6), "original_max_position_embeddings": (int, 1, (1 << 32) - 1),
    "rope_theta": (float, 1e-6, 1e30), "attention_factor": (float, 1e-6, 1e6),
    "partial_rotary_factor": (float, 1e-6, 1.0),
}
ROPE_LISTS = ("long_factor", "short_factor")   # LongRoPE: one finite factor per rotary dimension pair


def _check_value(where: str, key: str, v, kind: type, lo: float, hi: float) -> None:
    if kind is str:
        ok = isinstance(v, str) and len(v) < 200
    elif kind is bool:
        ok = isinstance(v, bool)
    elif kind is int:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    else:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi)
    if not ok:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:40] + "..."
        want = ("true or false" if kind is bool else "a name" if kind is str
                else f"{'an integer' if kind is int else 'a number'} from {lo:g} to {hi:g}")
        raise InputError(f"{where}: {key} is {shown}; expected {want}",
                         hint="config.json is damaged or not a Hugging Face model config")


def check_config(config: dict) -> None:
    """Every config.json value ggtool reads has the right type and a sane size."""
    text = config.get("text_config")  # multimodal configs (Gemma 3) nest the language model's
    if text is not None:
        if not isinstance(text, dict):
            raise InputError(f"config.json: text_config is {str(text)[:60]!r}; expected an object",
                             hint="config.json is damaged or not a Hugging Face model config")
        check_config(text)
    for key in ("layer_types", "mlp_only_layers"):
        v = config.get(key)
        if v is not None and not (isinstance(v, list) and len(v) <= 4096
                                  and all(isinstance(x, str if key == "layer_types" else int) for x in v)):
            raise InputError(f"config.json: {key} is {str(v)[:60]!r}; expected a list of "
                             f"{'names' if key == 'layer_types' else 'layer numbers'}",
                             hint="config.json is damaged or not a Hugging Face model config")
    archs = config.get("architectures")
    if archs is not None and not (isinstance(archs, list) and all(isinstance(a, str) for a in archs)):
        raise InputError(f"config.json: architectures is {str(archs)[:60]!r}; expected a list of names",
                         hint="config.json is damaged or not a Hugging Face model config")
    for key, (kind, lo, hi) in CONFIG_FIELDS.items():
        if config.get(key) is not None:
            _check_value("config.json", key, config[key], kind, lo, hi)
    for rkey in ("rope_scaling", "rope_parameters"):
        rs = config.get(rkey)
        if rs is None:
            continue
        if not isinstance(rs, dict):
            raise InputError(f"config.json: {rkey} is {str(rs)[:60]!r}; expected an object",
                             hint="config.json is damaged or not a Hugging Face model config")
        for key in ("rope_type", "type"):
            if rs.get(key) is not None and not isinstance(rs[key], str):
                raise InputError(f"config.json: {rkey}.{key} is {str(rs[key])[:40]!r}; expected a name",
                                 hint="config.json is damaged or not a Hugging Face model config")
        for key, (kind, lo, hi) in ROPE_FIELDS.items():
            if rs.get(key) is not None:
                _check_value(f"config.json: {rkey}", key, rs[key], kind, lo, hi)
        for key in ROPE_LISTS:
            v = rs.get(key)
            if v is not None and not (isinstance(v, list) and len(v) <= 65536 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1e6 for x in v)):
                raise InputError(f"config.json: {rkey}.{key} is {str(v)[:60]!r}; expected a list of numbers "
                                 "from 0 to 1e6",
                                 hint="config.json is damaged or not a Hugging Face model config")
        kind = str(rs.get("rope_type") or rs.get("type") or "").lower()
        need = {"linear": ("factor",), "yarn": ("factor", "original_max_position_embeddings")}.get(kind, ())
        for key in need:
            if rs.get(key) is None:
                raise InputError(f"config.json: {kind} {rkey} has no {key}",
                                 hint="config.json is damaged or not a Hugging Face model config")
        if kind == "llama3" and float(rs.get("low_freq_factor", 1.0)) >= float(rs.get("high_freq_factor", 4.0)):
            raise InputError(f"config.json: llama3 {rkey} needs low_freq_factor < high_freq_factor",
                             hint="config.json is damaged or not a Hugging Face model config")


@dataclass(frozen=True)
class Family:
    gguf_arch: str                      # general.architecture in the GGUF
    optional: frozenset[str]            # block suffixes this family may have (biases, q/k norms)
    permute_qk: bool = False            # llama.cpp's llama arch wants rotary pairs interleaved
    note: str = ""
    extra_hparams: Callable | None = None  # (writer, config, hp) -> None
    required_optional: frozenset[str] = field(default_factory=frozenset)
    block_names: Mapping[str, str] = field(default_factory=lambda: BLOCK_NAMES)
    defaults: Mapping[str, object] = field(default_factory=dict)  # config.json keys HF defaults
    handles_longrope: bool = False

    # ------------------------------------------------------------------ config
    def prepare_config(self, config: dict) -> dict:
        """The config the rest reads: HF's defaults for keys the file leaves out."""
        return {**self.defaults, **config}

    def validate(self, hp: "HParams", config: dict, hf_names: list[str]) -> None:
        """Refuse what llama.cpp would run wrongly (before anything is written)."""

    def model_name(self, name: str, model_dir) -> str:
        """general.name for a checkpoint folder called `name`."""
        return name

    def rename(self, hf_name: str) -> str | None:
        """HF tensor name as the tables spell it; None: not part of the language model."""
        return hf_name

    def expert_slot(self, hf_name: str) -> tuple[str, int] | None:
        """(stacked GGUF name, expert index) for one expert's tensor of a MoE; None otherwise."""
        return None

    # ------------------------------------------------------------------ hyper-parameters
    def hparams(self, config: dict) -> HParams:
        check_config(config)
        config = self.prepare_config(config)
        a = (config.get("architectures") or ["?"])[0]
        n_embd = int(_req(config, "hidden_size", a))
        n_head = int(_req(config, "num_attention_heads", a))
        n_head_kv = int(config.get("num_key_value_heads") or n_head)
        head_dim = int(config.get("head_dim") or n_embd // n_head)
        # transformers v5 moved rope settings into `rope_parameters`
        rope = config.get("rope_parameters") or {}
        scaling_from_params = rope if str(rope.get("rope_type", "default")) != "default" else None
        if n_head % n_head_kv:
            raise InputError(f"config.json: num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}",
                             hint="config.json is damaged or does not belong to these weights")
        if head_dim < 2 or head_dim % 2:
            raise InputError(f"config.json: head_dim {head_dim} (hidden_size / num_attention_heads or head_dim) "
                             "must be even and at least 2 for rotary embeddings",
                             hint="config.json is damaged or does not belong to these weights")
        return HParams(
            n_layer=int(_req(config, "num_hidden_layers", a)),
            n_embd=n_embd,
            n_ff=int(_req(config, "intermediate_size", a)),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_vocab=int(_req(config, "vocab_size", a)),
            n_ctx=int(config.get("max_position_embeddings") or 2048),
            rope_theta=float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0),
            rms_eps=float(config.get("rms_norm_eps") or 1e-6),
            tied=bool(config.get("tie_word_embeddings", False)),
            rope_scaling=config.get("rope_scaling") or scaling_from_params or None,
        )

    def write_hparams(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        w.add_context_length(hp.n_ctx)
        w.add_embedding_length(hp.n_embd)
        w.add_block_count(hp.n_layer)
        w.add_feed_forward_length(hp.n_ff)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(hp.n_head_kv)
        w.add_rope_freq_base(hp.rope_theta)
        w.add_layer_norm_rms_eps(hp.rms_eps)
        w.add_rope_dimension_count(self.rope_dims(hp, config))
        w.add_vocab_size(hp.n_vocab)
        if hp.head_dim != hp.n_embd // hp.n_head:
            w.add_key_length(hp.head_dim)
            w.add_value_length(hp.head_dim)
        rs = hp.rope_scaling
        if rs:
            kind = str(rs.get("rope_type") or rs.get("type") or "").lower()
            if kind == "linear":
                w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
                w.add_rope_scaling_factor(float(rs["factor"]))
            elif kind == "yarn":
                w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
                w.add_rope_scaling_factor(float(rs["factor"]))
                w.add_rope_scaling_orig_ctx_len(int(rs["original_max_position_embeddings"]))
            elif kind in ("llama3", "default", ""):
                pass  # llama3: rope_freqs.weight tensor (extra_tensors)
            elif kind in ("longrope", "su") and self.handles_longrope:
                pass  # the family writes it (phi3.py)
            else:
                raise UnsupportedArchitecture(f"config.json: rope_scaling type {kind[:40]!r} is not supported",
                                              hint="supported: linear, yarn, llama3")
        if self.extra_hparams:
            self.extra_hparams(w, config, hp)

    def rope_dims(self, hp: HParams, config: dict) -> int:
        """How many dimensions of each head RoPE rotates."""
        return hp.head_dim

    # ------------------------------------------------------------------ tensors
    def gguf_name(self, hf_name: str) -> str | None:
        """GGUF name for an HF tensor name; None if it is to be skipped."""
        if IGNORED.search(hf_name):
            return None
        if hf_name in GLOBAL_NAMES:
            return GLOBAL_NAMES[hf_name]
        m = BLOCK_RE.match(hf_name)
        if m and m.group(2) in self.block_names:
            suffix = m.group(2)
            if suffix.startswith(("self_attn.q_norm", "self_attn.k_norm")) or suffix.endswith(".bias"):
                if suffix not in self.optional:
                    raise InputError(f"tensor {hf_name!r} is not expected in a {self.gguf_arch} model",
                                     hint="the config's architecture does not match the weights")
            return f"blk.{m.group(1)}.{self.block_names[suffix]}"
        raise InputError(f"unknown tensor {hf_name!r} for a {self.gguf_arch} model",
                         hint="this checkpoint has weights ggtool does not know how to place; "
                              "it may be a different architecture than config.json says")

    def expected_shape(self, gguf_name: str, hp: HParams) -> tuple[int, ...]:
        """numpy shape (out, in) the HF tensor must have (a MoE's stacked tensors: per expert)."""
        base = gguf_name.split(".", 2)[-1] if gguf_name.startswith("blk.") else gguf_name
        return self.shapes(hp)[base]

    def shapes(self, hp: HParams) -> dict[str, tuple[int, ...]]:
        """GGUF name (without blk.N.) -> numpy shape; families add or change entries."""
        q, kv = hp.n_head * hp.head_dim, hp.n_head_kv * hp.head_dim
        return {
            "token_embd.weight": (hp.n_vocab, hp.n_embd),
            "output.weight": (hp.n_vocab, hp.n_embd),
            "output_norm.weight": (hp.n_embd,),
            "attn_norm.weight": (hp.n_embd,),
            "ffn_norm.weight": (hp.n_embd,),
            "attn_q.weight": (q, hp.n_embd),
            "attn_k.weight": (kv, hp.n_embd),
            "attn_v.weight": (kv, hp.n_embd),
            "attn_output.weight": (hp.n_embd, q),
            "attn_q.bias": (q,),
            "attn_k.bias": (kv,),
            "attn_v.bias": (kv,),
            "attn_output.bias": (hp.n_embd,),
            "attn_q_norm.weight": (hp.head_dim,),
            "attn_k_norm.weight": (hp.head_dim,),
            "ffn_gate.weight": (hp.n_ff, hp.n_embd),
            "ffn_up.weight": (hp.n_ff, hp.n_embd),
            "ffn_down.weight": (hp.n_embd, hp.n_ff),
        }

    def required(self, hp: HParams) -> list[str]:
        names = ["token_embd.weight", "output_norm.weight"]
        if not hp.tied:
            names.append("output.weight")
        per_block = self.block_tensors(hp)
        for i in range(hp.n_layer):
            names += [f"blk.{i}.{n}" for n in per_block]
        return names

    def block_tensors(self, hp: HParams) -> list[str]:
        """Every tensor a block must have (GGUF names without blk.N.)."""
        return ["attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                "attn_output.weight", "ffn_norm.weight", "ffn_gate.weight", "ffn_up.weight",
                "ffn_down.weight"] + [self.block_names[s] for s in sorted(self.required_optional)]

    def rowwise(self, gguf_name: str) -> bool:
        """Does transform() act on each row of this tensor alone, so that the converter may
        read, quantize and write it a few rows at a time? (Not the q/k row permutation.) A
        family overriding transform() answers for it too."""
        if type(self).transform is not Family.transform:
            return False
        return not (self.permute_qk and gguf_name.endswith(
            ("attn_q.weight", "attn_q.bias", "attn_k.weight", "attn_k.bias")))

    def transform(self, gguf_name: str, x: np.ndarray, hp: HParams, out: np.ndarray | None = None) -> np.ndarray:
        """HF layout -> llama.cpp layout for one tensor. out: an array of x's shape and dtype
        that a new layout may be written into (the converter's reused buffers), or None."""
        if self.permute_qk:
            if gguf_name.endswith(("attn_q.weight", "attn_q.bias")):
                return permute_rotary(x, hp.n_head, out)
            if gguf_name.endswith(("attn_k.weight", "attn_k.bias")):
                return permute_rotary(x, hp.n_head_kv, out)
        return x

    def extra_tensors(self, hp: HParams) -> dict[str, np.ndarray]:
        rs = hp.rope_scaling or {}
        if str(rs.get("rope_type") or rs.get("type") or "").lower() == "llama3":
            return {"rope_freqs.weight": llama3_rope_factors(hp.head_dim, hp.rope_theta, rs)}
        return {}


def permute_rotary(w: np.ndarray, n_head: int, out: np.ndarray | None = None) -> np.ndarray:
    """HF rotate_half order -> llama.cpp's interleaved pairs, per head, on the output rows
    (into `out` when given)."""
    rows = w.shape[0]
    src = w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2)
    if out is None:
        return src.reshape(w.shape)
    np.copyto(out.reshape(src.shape), src)
    return out


def unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of permute_rotary."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
             .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(head_dim: int, theta: float, rs: dict) -> np.ndarray:
    """Per-frequency divisors llama.cpp applies for Llama 3.1-style rope scaling."""
    factor = float(rs.get("factor", 8.0))
    low = float(rs.get("low_freq_factor", 1.0))
    high = float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / theta ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)
