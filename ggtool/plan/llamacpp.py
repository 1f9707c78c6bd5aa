"""Quantization mixes: which GGML type each tensor gets for `--quant Q4_K_M` and friends.

`plan_types` reproduces llama.cpp's per-tensor choice exactly (`--rules llama.cpp`): the rules
of src/llama-quant.cpp (llama_tensor_get_type, tensor_allows_quantization and
tensor_type_fallback) as of llama.cpp 0c1e570, the build vendored by llama-cpp-python 0.3.36.
tests/test_mixes.py checks every choice against llama_model_quantize itself.

Shapes are numpy shapes: the row length (llama.cpp's ne[0]) is the LAST dimension.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from ..errors import QuantError
from . import rule_set
from .model import ModelInfo

T = GGMLQuantizationType
F = LlamaFileType

LLAMA_CPP_RULES_VERSION = "llama.cpp 0c1e570 (llama-cpp-python 0.3.36)"


@dataclass(frozen=True)
class Mix:
    name: str      # llama-quantize's name for it
    ftype: LlamaFileType  # llama_ftype, written as general.file_type
    default: T     # the type every quantizable tensor gets unless a rule says otherwise


MIXES: dict[str, Mix] = {m.name: m for m in (
    Mix("Q2_K", F.MOSTLY_Q2_K, T.Q2_K),
    Mix("Q3_K_S", F.MOSTLY_Q3_K_S, T.Q3_K),
    Mix("Q3_K_M", F.MOSTLY_Q3_K_M, T.Q3_K),
    Mix("Q3_K_L", F.MOSTLY_Q3_K_L, T.Q3_K),
    Mix("Q4_K_S", F.MOSTLY_Q4_K_S, T.Q4_K),
    Mix("Q4_K_M", F.MOSTLY_Q4_K_M, T.Q4_K),
    Mix("Q5_K_S", F.MOSTLY_Q5_K_S, T.Q5_K),
    Mix("Q5_K_M", F.MOSTLY_Q5_K_M, T.Q5_K),
    Mix("Q6_K", F.MOSTLY_Q6_K, T.Q6_K),
    Mix("IQ4_NL", F.MOSTLY_IQ4_NL, T.IQ4_NL),
    Mix("IQ4_XS", F.MOSTLY_IQ4_XS, T.IQ4_XS),
    Mix("Q4_0", F.MOSTLY_Q4_0, T.Q4_0),
    Mix("Q4_1", F.MOSTLY_Q4_1, T.Q4_1),
    Mix("Q5_0", F.MOSTLY_Q5_0, T.Q5_0),
    Mix("Q5_1", F.MOSTLY_Q5_1, T.Q5_1),
    Mix("Q8_0", F.MOSTLY_Q8_0, T.Q8_0),
    Mix("F16", F.MOSTLY_F16, T.F16),
    Mix("BF16", F.MOSTLY_BF16, T.BF16),
    Mix("F32", F.ALL_F32, T.F32),
)}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # as llama-quantize

UNQUANTIZED = (T.F32, T.F16, T.BF16)


def get_mix(name: str | Mix) -> Mix:
    """A mix by name, case-insensitive ('q4_k_m', and the aliases Q3_K, Q4_K, Q5_K)."""
    if isinstance(name, Mix):
        return name
    key = str(name).upper()
    key = ALIASES.get(key, key)
    if key not in MIXES:
        raise QuantError(f"unknown quantization mix {name!r}",
                         hint="valid mixes are " + ", ".join(MIXES))
    return MIXES[key]


def parse_type(name: str | T) -> T:
    """A GGML tensor type ggtool can write, by name, case-insensitive ('q6_k', 'F16')."""
    from .. import quants

    writable = quants.type_names()
    t = name if isinstance(name, T) else T.__members__.get(str(name).upper())
    if t is None or t.name not in writable:
        what = f"tensor type {t.name} is not one ggtool writes" if t is not None else f"unknown tensor type {name!r}"
        raise QuantError(what, hint="ggtool writes " + ", ".join(writable))
    return t


def parse_tensor_type(spec: str) -> tuple[str, T]:
    """One `--tensor-type REGEX=TYPE` option, as llama-quantize parses it (regex lowercased)."""
    regex, sep, tname = spec.partition("=")
    if not sep or not regex or not tname:
        raise QuantError(f"malformed --tensor-type {spec!r}", hint="write it as REGEX=TYPE, e.g. attn_v=q8_0")
    return regex.lower(), parse_type(tname)


def block_size(t: T) -> int:
    return GGML_QUANT_SIZES[t][0]


# ---------------------------------------------------------------------------- tensor classes

# Substrings that keep a 2-D tensor unquantized (tensor_allows_quantization).
KEEP_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
) + tuple(f"time_mix_{k}.weight" for k in (
    "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2",
    "decay_w1", "decay_w2", "lerp_fused"))
KEEP_NAMES = ("position_embd.weight", "token_types.weight")
TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")

# First matching substring gives the category (tensor_get_category; the order matters).
CATEGORIES = (
    ("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
    ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
    ("attn_output.weight", "attn_output"),
    ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"),
)


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in TOKEN_EMBD_NAMES:
        return "token_embd"
    return next((cat for sub, cat in CATEGORIES if sub in name), "other")


def n_dims(shape: Sequence[int]) -> int:
    """ggml_n_dims: trailing ggml dims of size 1 (leading numpy ones) do not count."""
    ne = list(shape)[::-1]
    return max([i + 1 for i, n in enumerate(ne) if n > 1], default=1)


def allows_quantization(name: str, shape: Sequence[int]) -> bool:
    return (n_dims(shape) >= 2 and name.endswith("weight") and name not in KEEP_NAMES
            and not any(s in name for s in KEEP_SUBSTRINGS))


def _layer_of(name: str) -> int:
    """sscanf(name, "blk.%d.") as llama.cpp's loader and MoE rules use it; -1 if none."""
    m = re.match(r"blk\.([+-]?\d+)", name)
    return int(m.group(1)) if m else -1


# ---------------------------------------------------------------------------- the rules

def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass
class _Ctx:
    i: int          # running index of this tensor among its kind (or its layer, for MoE ffn)
    n: int          # how many of its kind (attn_v-like tensors; n_layer for ffn_down)
    model: ModelInfo
    imatrix: bool

    @property
    def falcon(self) -> bool:
        return self.model.arch == "falcon"

    @property
    def more_bits(self) -> bool:
        return use_more_bits(self.i, self.n)


Rule = Callable[[_Ctx], "T | None"]  # None: keep the mix's default

ATTN_V: dict[str, Rule] = {  # also attn_qkv and attn_kv_b
    "Q2_K": lambda c: T.Q4_K if c.model.n_gqa >= 4 else T.Q3_K,
    "Q3_K_M": lambda c: T.Q5_K if c.i < 2 else T.Q4_K,
    "Q3_K_L": lambda c: T.Q5_K,
    "IQ4_NL": lambda c: T.Q5_K if c.model.n_gqa >= 4 else None,
    "IQ4_XS": lambda c: T.Q5_K if c.model.n_gqa >= 4 else None,
    "Q4_K_M": lambda c: T.Q6_K if c.more_bits else None,
    "Q5_K_M": lambda c: T.Q6_K if c.more_bits else None,
    "Q4_K_S": lambda c: T.Q5_K if c.i < 4 else None,
}

FFN_DOWN: dict[str, Rule] = {
    "Q2_K": lambda c: T.Q3_K,
    "Q3_K_M": lambda c: (T.Q5_K if c.i < c.n // 16
                         else T.Q4_K if not c.falcon or c.more_bits else T.Q3_K),
    "Q3_K_L": lambda c: T.Q4_K if c.falcon else T.Q5_K,
    "Q4_K_M": lambda c: ((T.Q6_K if c.i < c.n // 16 else T.Q5_K if c.more_bits else T.Q4_K)
                         if c.falcon else T.Q6_K if c.more_bits else None),
    "IQ4_NL": lambda c: T.Q5_K if c.i < c.n // 8 and not c.imatrix else None,
    "IQ4_XS": lambda c: T.Q5_K if c.i < c.n // 8 and not c.imatrix else None,
    "Q5_K_M": lambda c: T.Q6_K if c.more_bits else None,
    "Q4_K_S": lambda c: T.Q5_K if not c.falcon and c.i < c.n // 8 else None,
    # with an imatrix only, so that the plain mix stays what it always was
    "Q4_0": lambda c: T.Q4_1 if c.imatrix and c.i < c.n // 8 else None,
    "Q5_0": lambda c: T.Q5_1 if c.imatrix and c.i < c.n // 8 else None,
}

ATTN_OUTPUT = {"Q2_K": T.Q3_K, "Q3_K_M": T.Q4_K, "Q3_K_L": T.Q5_K}
ATTN_OUTPUT_FALCON = {"Q3_K_L": T.Q4_K}
ATTN_OUTPUT_8_EXPERTS = dict.fromkeys(
    ("Q2_K", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ4_XS"), T.Q5_K)

# Row length not a multiple of the type's block: the 32-block type to use instead.
FALLBACK = {
    T.IQ1_S: T.IQ4_NL, T.IQ1_M: T.IQ4_NL, T.IQ2_XXS: T.IQ4_NL, T.IQ2_XS: T.IQ4_NL,
    T.IQ2_S: T.IQ4_NL, T.IQ3_XXS: T.IQ4_NL, T.IQ3_S: T.IQ4_NL, T.IQ4_XS: T.IQ4_NL,
    T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
}


def shape_fallback(name: str, ncols: int, t: T) -> T:
    """tensor_type_fallback: a type whose block divides the row, else F16."""
    if ncols % block_size(t) == 0:
        return t
    if t in FALLBACK:
        fb = FALLBACK[t]
    elif block_size(t) <= 32:
        fb = t
    else:
        raise QuantError(f"{name}: row length {ncols} is not a multiple of {block_size(t)} "
                         f"and there is no fallback for {t.name}", hint="pick another type for it")
    return fb if ncols % block_size(fb) == 0 else T.F16


def _apply(table: dict[str, Rule], mix: Mix, c: _Ctx, new: T) -> T:
    chosen = table[mix.name](c) if mix.name in table else None
    return new if chosen is None else chosen


def _rule_type(mix: Mix, cat: str, new: T, ncols: int, c: _Ctx, tied: bool,
               output_type: T | None) -> T:
    """llama_tensor_get_type_impl for the mixes above; `new` is the mix's default type."""
    m = c.model
    if cat == "output" or (tied and cat == "token_embd"):
        if output_type is not None:
            return output_type
        if c.falcon or ncols % block_size(new) != 0:
            return T.Q8_0
        return new if new == T.Q8_0 else T.Q6_K
    if cat == "attn_v":
        new = _apply(ATTN_V, mix, c, new)
        if m.is_70b and new in (T.Q3_K, T.Q4_K):
            new = T.Q5_K
        return T.Q8_0 if m.n_expert == 8 else new
    if cat == "attn_k":
        return T.Q8_0 if m.n_expert == 8 else new
    if cat == "ffn_down":
        return _apply(FFN_DOWN, mix, c, new)
    if cat == "attn_output":
        table = (ATTN_OUTPUT_FALCON if c.falcon
                 else ATTN_OUTPUT_8_EXPERTS if m.n_expert == 8 else ATTN_OUTPUT)
        return table.get(mix.name, new)
    return new


def _check_fits(name: str, ncols: int, t: T, flag: str) -> T:
    if ncols % block_size(t) != 0:  # llama.cpp would abort here: it applies no fallback
        raise QuantError(f"{name}: row length {ncols} is not a multiple of {t.name}'s block "
                         f"({block_size(t)})", hint=f"pick another {flag}")
    return t


def plan_types(tensors: Iterable[tuple], model: ModelInfo, mix: str | Mix, **opts) -> dict[str, T]:
    """The GGML type of every tensor, as llama-quantize would choose it (see `choose_types`)."""
    return {name: final for name, (final, _) in choose_types(tensors, model, mix, **opts).items()}


def choose_types(tensors: Iterable[tuple], model: ModelInfo, mix: str | Mix,
                 overrides: Sequence[tuple[str, T | str]] = (), output_type: T | str | None = None,
                 token_embd_type: T | str | None = None, imatrix_available: bool = False,
                 pure: bool = False) -> dict[str, tuple[T, T]]:
    """name -> (type, the type the rules wanted before the row-length fallback), as
    llama-quantize chooses them.

    tensors: (name, numpy shape) or (name, shape, source type) in any order; a tensor that is
    never quantized keeps its source type (F32 if not given).
    overrides: `--tensor-type` (regex, type) pairs; the first whose regex.search()es the name
    wins, and such a tensor skips the mix rules (but not the shape fallback).
    output_type / token_embd_type: `--output-tensor-type` / `--token-embedding-type`.
    pure: `--pure`, every quantizable tensor gets the default type (shape fallback aside).
    """
    mix = get_mix(mix)
    output_type = parse_type(output_type) if output_type is not None else None
    token_embd_type = parse_type(token_embd_type) if token_embd_type is not None else None
    try:
        patterns = [(re.compile(rx), parse_type(t)) for rx, t in overrides]
    except re.error as e:
        raise QuantError(f"bad --tensor-type regex: {e}", hint="write it as REGEX=TYPE") from None

    # llama.cpp walks tensors sorted by (layer, name); the rule counters depend on that order
    given = [(t[0], tuple(t[1]), t[2] if len(t) > 2 else T.F32) for t in tensors]
    items = sorted(given, key=lambda t: (_layer_of(t[0]), t[0]))
    names = [t[0] for t in items]
    tied = "output.weight" not in names
    n_attn_v = sum(category(n) == "attn_v" for n in names)
    counters = {"attn_v": 0, "ffn_down": 0}

    def match(name):
        return next((t for rx, t in patterns if rx.search(name)), None)

    plan: dict[str, tuple[T, T]] = {}
    for name, shape, src in items:
        if not allows_quantization(name, shape):
            plan[name] = (src, src)
            continue
        cat, ncols = category(name), shape[-1]
        # --token-embedding-type / --output-tensor-type win outright, in every mix
        if token_embd_type is not None and cat == "token_embd" and not (
                name == "per_layer_token_embd.weight" and match(name) is not None):
            plan[name] = (_check_fits(name, ncols, token_embd_type, "--token-embedding-type"),) * 2
            continue
        if output_type is not None and cat == "output":
            plan[name] = (_check_fits(name, ncols, output_type, "--output-tensor-type"),) * 2
            continue
        new = mix.default
        if new in UNQUANTIZED:  # F16/BF16/F32 mixes: no rules, no overrides
            plan[name] = (new, new)
            continue
        manual = match(name)
        if manual is not None:
            new = manual
        elif not pure:
            if cat in counters:
                i = counters[cat]
                counters[cat] += 1
                n = n_attn_v if cat == "attn_v" else model.n_layer
                if cat == "ffn_down" and model.n_expert > 1:  # experts: the layer from the name
                    i = _layer_of(name)
                    if not 0 <= i < n:
                        raise QuantError(f"cannot tell the layer of {name} (0..{n - 1})",
                                         hint="expert tensors must be named blk.N.*")
            else:
                i, n = 0, 0
            new = _rule_type(mix, cat, new, ncols, _Ctx(i, n, model, imatrix_available),
                             tied, output_type)
        plan[name] = (shape_fallback(name, ncols, new), new)
    return {name: plan[name] for name, _, _ in given}  # in the caller's order


@rule_set("llama.cpp")
def llama_cpp_rules(tensors, model: ModelInfo, mix: str, **opts):
    m = get_mix(mix)
    return choose_types(tensors, model, m, **opts), m.ftype
