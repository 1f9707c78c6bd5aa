"""Rule set `plain` (`ggtool convert --type`): one type for every matrix, as convert_hf_to_gguf.

1-D tensors (norms, biases), rope factors and MoE routers stay F32; a row that the type's block cannot hold
stays F16 (llama.cpp's converter does the same for Q8_0).
"""

from __future__ import annotations

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T, LlamaFileType as F

from ..errors import QuantError
from . import rule_set

# --type values: name -> (tensor type, general.file_type)
PLAIN_TYPES = {"F32": (T.F32, F.ALL_F32), "F16": (T.F16, F.MOSTLY_F16), "BF16": (T.BF16, F.MOSTLY_BF16),
               "Q8_0": (T.Q8_0, F.MOSTLY_Q8_0)}


def keep_f32(name: str, shape) -> bool:
    """Tensors llama.cpp never quantizes: 1-D ones (norms, biases), rope factors and a MoE's
    router (ffn_gate_inp: convert_hf_to_gguf keeps it F32 in F16 files too)."""
    return (len(shape) == 1 or name.endswith("_norm.weight") or name.startswith(("rope_freqs", "rope_factors"))
            or "ffn_gate_inp.weight" in name)


@rule_set("plain")
def plain_rules(tensors, model, mix: str, **opts):
    key = mix.upper()
    if key not in PLAIN_TYPES:
        raise QuantError(f"unknown output type {mix!r}", hint="valid: " + ", ".join(PLAIN_TYPES))
    if opts:
        raise QuantError(f"--type {key} takes no per-tensor options ({', '.join(opts)})",
                         hint="use --quant for a mix with per-tensor overrides")
    qtype, ftype = PLAIN_TYPES[key]
    chosen = {}
    for name, shape in tensors:
        t = T.F32 if keep_f32(name, shape) else qtype
        if shape[-1] % GGML_QUANT_SIZES[t][0]:
            t = T.F16  # as llama.cpp's converter: a row Q8_0 cannot take stays F16
        chosen[name] = (t, t)
    return chosen, ftype
