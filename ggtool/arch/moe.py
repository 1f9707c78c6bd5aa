"""Mixture-of-experts families: Mixtral (llama.cpp arch "llama" with experts) and Qwen3-MoE
(arch "qwen3moe").

HF stores one 2-D matrix per expert; llama.cpp wants each layer's experts stacked into one 3-D
tensor per role, expert index outermost (numpy (n_expert, rows, cols), GGUF ne {cols, rows,
n_expert}): ffn_gate_exps, ffn_up_exps, ffn_down_exps. The router is ffn_gate_inp (kept F32 by
llama-quantize). The source streams a stacked tensor one expert at a time (sources.py), so
converting never holds a layer's experts in memory at once.

Routing as llama.cpp computes it: softmax over all experts, top expert_used_count, weights
renormalised to sum 1. Mixtral does that; Qwen3-MoE does it when norm_topk_prob is true (its
released models), and a config with it false, or with dense layers among the MoE ones
(mlp_only_layers, decoder_sparse_step), is refused: llama.cpp's qwen3moe graph has neither.
"""

from __future__ import annotations

import re

import gguf

from ..errors import InputError, UnsupportedArchitecture
from .base import BLOCK_NAMES, Family, HParams, _req

_ATTN = {k: v for k, v in BLOCK_NAMES.items() if not k.startswith("mlp.")}
_QK_NORMS = frozenset({"self_attn.q_norm.weight", "self_attn.k_norm.weight"})
EXPERT_ROLES = ("ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")


class MoEFamily(Family):
    """A family whose FFN is routed experts. Subclasses give the HF expert naming."""

    expert_re: re.Pattern            # groups: layer, expert, HF role
    roles: dict[str, str]            # HF role -> stacked GGUF name (within blk.N.)
    expert_count_key = "num_local_experts"

    def expert_slot(self, hf_name: str) -> tuple[str, int] | None:
        m = self.expert_re.match(hf_name)
        if not m or m.group(3) not in self.roles:
            return None
        return f"blk.{m.group(1)}.{self.roles[m.group(3)]}", int(m.group(2))

    def hparams(self, config: dict) -> HParams:
        hp = super().hparams(config)
        config = self.prepare_config(config)
        a = config.get("architectures", ["?"])[0]
        n_expert = int(_req(config, self.expert_count_key, a))
        n_used = int(_req(config, "num_experts_per_tok", a))
        if not 0 < n_used <= n_expert:
            raise InputError(f"num_experts_per_tok {n_used} is not within 1..{n_expert} experts",
                             hint="config.json is inconsistent")
        return HParams(**{**hp.__dict__, "n_expert": n_expert, "n_expert_used": n_used,
                          "n_ff_exp": self.expert_ff(hp, config)})

    def expert_ff(self, hp: HParams, config: dict) -> int:
        return hp.n_ff

    def shapes(self, hp: HParams) -> dict[str, tuple[int, ...]]:
        s = super().shapes(hp)
        s["ffn_gate_inp.weight"] = (hp.n_expert, hp.n_embd)
        # per expert; the stacked tensor is (n_expert, *shape)
        s["ffn_gate_exps.weight"] = s["ffn_up_exps.weight"] = (hp.n_ff_exp, hp.n_embd)
        s["ffn_down_exps.weight"] = (hp.n_embd, hp.n_ff_exp)
        return s

    def block_tensors(self, hp: HParams) -> list[str]:
        dense = super().block_tensors(hp)
        return [n for n in dense if not n.startswith(("ffn_gate.", "ffn_up.", "ffn_down."))] + [
            "ffn_gate_inp.weight", *EXPERT_ROLES]

    def write_hparams(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        super().write_hparams(w, hp, config)
        w.add_expert_count(hp.n_expert)
        w.add_expert_used_count(hp.n_expert_used)


class MixtralFamily(MoEFamily):
    expert_re = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")
    roles = {"w1": "ffn_gate_exps.weight", "w3": "ffn_up_exps.weight", "w2": "ffn_down_exps.weight"}


class Qwen3MoeFamily(MoEFamily):
    expert_re = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(\w+_proj)\.weight$")
    roles = {"gate_proj": "ffn_gate_exps.weight", "up_proj": "ffn_up_exps.weight",
             "down_proj": "ffn_down_exps.weight"}
    expert_count_key = "num_experts"

    def expert_ff(self, hp: HParams, config: dict) -> int:
        return int(_req(config, "moe_intermediate_size", config.get("architectures", ["?"])[0]))

    def validate(self, hp: HParams, config: dict, hf_names: list[str]) -> None:
        if not config.get("norm_topk_prob", False):
            raise UnsupportedArchitecture(
                "Qwen3-MoE with norm_topk_prob false is not supported",
                hint="llama.cpp's qwen3moe graph always renormalises the chosen experts' weights")
        if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step") or 1) != 1:
            raise UnsupportedArchitecture(
                "Qwen3-MoE with dense layers (mlp_only_layers / decoder_sparse_step) is not supported",
                hint="llama.cpp's qwen3moe graph has experts in every layer")

    def write_hparams(self, w: gguf.GGUFWriter, hp: HParams, config: dict) -> None:
        super().write_hparams(w, hp, config)
        w.add_expert_feed_forward_length(hp.n_ff_exp)


MIXTRAL = MixtralFamily(
    gguf_arch="llama", permute_qk=True, optional=frozenset(),
    block_names={**_ATTN, "block_sparse_moe.gate.weight": "ffn_gate_inp.weight"},
)

QWEN3MOE = Qwen3MoeFamily(
    gguf_arch="qwen3moe", optional=_QK_NORMS, required_optional=_QK_NORMS,
    block_names={**_ATTN, "mlp.gate.weight": "ffn_gate_inp.weight"},
)
