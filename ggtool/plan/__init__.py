"""Each tensor's type, decided in one place, before a byte is written.

    plan = make_plan(source, "Q4_K_M", rules="llama.cpp")
    for t in plan: t.name, t.shape, t.type, t.nbytes

A rule set turns (tensors, model, mix) into a type per tensor; the plan adds each tensor's byte
size from its shape and type (gguf-py's block sizes), as llama.cpp's llama-quant.cpp builds its
per-tensor metadata in a first loop and uses it in the main loop. Rule sets register by name:
    plain       `convert --type`: one type for every matrix (convert_hf_to_gguf's way)
    llama.cpp   `--quant MIX --rules llama.cpp`: exactly llama-quantize's choice per tensor
    sensitivity `--quant MIX` (default): the mix's size, bits placed by measured per-tensor
                KLD sensitivity (sensitivity.py measures and caches, allocate.py allocates)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, LlamaFileType

from ..errors import QuantError
from .model import ModelInfo

FLOAT_TYPES = (T.F32, T.F16, T.BF16)
DEFAULT_RULES = "sensitivity"  # what `--quant MIX` means unless --rules says otherwise


def tensor_nbytes(qtype: T, shape) -> int:
    """Bytes of a tensor of numpy `shape` (row length last) stored as `qtype`."""
    block, size = GGML_QUANT_SIZES[T(qtype)]
    n = 1
    for s in shape:
        n *= int(s)
    return n // block * size


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]   # numpy order: row length last
    type: T
    nbytes: int
    wanted: T                # what the rules chose before the row-length fallback

    @property
    def n_params(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n


@dataclass
class Plan:
    mix: str
    rules: str
    file_type: LlamaFileType
    tensors: list[TensorPlan] = field(default_factory=list)

    def __iter__(self) -> Iterator[TensorPlan]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, name: str) -> TensorPlan:
        return next(t for t in self.tensors if t.name == name)

    @property
    def types(self) -> dict[str, T]:
        return {t.name: t.type for t in self.tensors}

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_params for t in self.tensors)

    @property
    def quantized(self) -> bool:
        return any(t.type not in FLOAT_TYPES for t in self.tensors)

    def type_counts(self) -> Counter:
        return Counter(t.type.name for t in self.tensors)

    def fallback_note(self, min_share: float = 0.05) -> str | None:
        """A sentence when tensors whose rows do not fit the mix's block fell back to another
        type and hold at least `min_share` of the weights (the size then differs from what the
        mix's name suggests); None otherwise."""
        moved = [t for t in self.tensors if t.type != t.wanted]
        quantizable = sum(t.n_params for t in self.tensors if t.wanted not in FLOAT_TYPES) or 1
        share = sum(t.n_params for t in moved) / quantizable
        if not moved or share < min_share:
            return None
        pairs = Counter(f"{t.wanted.name}->{t.type.name}" for t in moved)
        rows = sorted({t.shape[-1] for t in moved})
        bpw = 8 * self.total_bytes / max(self.n_params, 1)
        return (f"{len(moved)} tensors ({share:.0%} of the quantized weights) have rows of "
                f"{', '.join(map(str, rows))}, which {self.mix}'s types cannot hold: they fell back "
                f"({', '.join(f'{n} {p}' for p, n in pairs.most_common())}), as llama.cpp does, "
                f"so its tensors average {bpw:.2f} bits/weight")


# name -> (tensors [(name, shape)], model, mix, **opts) -> ({name: (type, wanted)}, file type)
RuleSet = Callable[..., "tuple[dict[str, tuple[T, T]], LlamaFileType]"]
RULES: dict[str, RuleSet] = {}


def rule_set(name: str):
    def register(fn: RuleSet) -> RuleSet:
        RULES[name] = fn
        return fn
    return register


def make_plan(source, mix: str, rules: str = "plain", **opts) -> Plan:
    """The plan for writing `source` (anything with .tensors [(name, shape)] and .info ModelInfo)."""
    if rules not in RULES:
        raise QuantError(f"unknown rules {rules!r}", hint="valid: " + ", ".join(RULES))
    chosen, ftype = RULES[rules](source.tensors, source.info, mix, **opts)
    plan = Plan(mix=mix.upper(), rules=rules, file_type=ftype)
    for name, shape in source.tensors:
        t, wanted = chosen[name]
        plan.tensors.append(TensorPlan(name, tuple(int(s) for s in shape), t, tensor_nbytes(t, shape), wanted))
    return plan


# the rule sets register themselves
from . import plain, llamacpp, allocate  # noqa: E402,F401


__all__ = ["Plan", "TensorPlan", "ModelInfo", "RULES", "DEFAULT_RULES", "rule_set", "make_plan", "tensor_nbytes"]
