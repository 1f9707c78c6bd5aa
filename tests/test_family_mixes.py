"""Quantization mixes on the new families: `--rules llama.cpp` gives every tensor the type
llama_model_quantize gives it (3-D expert tensors, fused qkv, Gemma's extra norms, tied
embeddings), and llama.cpp runs the file of every mix we write for every family.

Shapes are K-quant friendly (rows of 256) so the K types are really used, not all falling back.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from ggtool.convert import convert
from ggtool.plan.llamacpp import MIXES, allows_quantization
from tests import tinymodels as tm
from tests.test_mixes import assert_same_plan, tensor_list

# family -> make_family_checkpoint kwargs: hidden 256, GQA where the family has it
MODELS = {
    "gemma2": dict(arch="gemma2", hidden=256, heads=4, kv_heads=2, head_dim=64, intermediate=512, layers=2),
    "gemma3": dict(arch="gemma3", hidden=256, heads=4, kv_heads=1, head_dim=64, intermediate=512, layers=4),
    "phi3": dict(arch="phi3", hidden=256, heads=4, kv_heads=4, intermediate=512, layers=3,
                 config_overrides={"rope_scaling": None, "partial_rotary_factor": None}),
    "mixtral": dict(arch="mixtral", hidden=256, heads=4, kv_heads=2, intermediate=256, layers=4, experts=8),
    "qwen3moe": dict(arch="qwen3moe", hidden=256, heads=4, kv_heads=2, head_dim=64, intermediate=1024,
                     layers=4, experts=4, expert_ff=256),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, llama_cpp_ok):
    """family -> (HF checkpoint, our F16 GGUF of it), built on first use."""
    d = tmp_path_factory.mktemp("family-mixes")
    made = {}

    def get(fam):
        if fam not in made:
            kw = dict(MODELS[fam])
            ck = tm.make_family_checkpoint(d / fam, kw.pop("arch"), seed=1, **kw)
            made[fam] = (ck, convert(ck, d / f"{fam}.F16.gguf", "F16", progress=False).path)
        return made[fam]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("fam", list(MODELS))
def test_every_mix_matches_llama_cpp_and_runs(models, tmp_path, fam, mix):
    from oracles.llamacpp import logits

    ck, f16 = models(fam)
    # 1. on our F16 file, the rules choose what llama_model_quantize chooses, tensor by tensor
    want = assert_same_plan(f16, tmp_path / "llama.gguf", mix)
    # 2. converting the HF checkpoint straight to the mix gives the same types to every tensor
    #    llama.cpp quantizes (the others stay in their source type: F32 from HF, F16 in f16)
    res = convert(ck, tmp_path / f"ours.{mix}.gguf", mix, rules="llama.cpp", progress=False)
    shapes = dict((n, s) for n, s, _ in tensor_list(f16))
    got = {n: t for n, t in res.types.items() if allows_quantization(n, shapes[n])}
    assert got == {n: want[n].name for n in got}, fam
    # 3. llama.cpp runs it
    out = logits(res.path, [3, 10, 200, 7, 5, 6, 100, 42])
    assert out.shape[0] == 8 and np.isfinite(out).all()


def test_mixes_exercise_the_moe_and_gemma_rules(models, tmp_path):
    """The fixtures reach the rules that matter here (so the comparison above means something)."""
    from tests.test_mixes import llama_cpp_types

    want = llama_cpp_types(models("mixtral")[1], tmp_path / "a.gguf", "Q4_K_M")
    assert want["blk.0.attn_v.weight"] == want["blk.0.attn_k.weight"] == T.Q8_0     # 8 experts
    assert want["blk.0.attn_output.weight"] == T.Q5_K
    # use_more_bits(layer, 4), the layer read from the name: layers 2 and 3
    assert [want[f"blk.{i}.ffn_down_exps.weight"] for i in range(4)] == [T.Q4_K, T.Q4_K, T.Q6_K, T.Q6_K]
    assert want["blk.0.ffn_gate_inp.weight"] == T.F32                              # router kept
    want = llama_cpp_types(models("qwen3moe")[1], tmp_path / "b.gguf", "Q4_K_M")
    assert [want[f"blk.{i}.attn_v.weight"] for i in range(4)] == [T.Q4_K, T.Q4_K, T.Q6_K, T.Q6_K]
    assert want["blk.2.ffn_gate_exps.weight"] == T.Q4_K
    want = llama_cpp_types(models("gemma3")[1], tmp_path / "c.gguf", "Q2_K")
    assert want["token_embd.weight"] == T.Q6_K                                     # tied: output rule
    assert want["blk.0.attn_v.weight"] == T.Q4_K                                   # GQA 4
    assert want["blk.0.post_ffw_norm.weight"] == T.F32
    want = llama_cpp_types(models("phi3")[1], tmp_path / "d.gguf", "Q3_K_M")
    assert [want[f"blk.{i}.attn_qkv.weight"] for i in range(3)] == [T.Q5_K, T.Q5_K, T.Q4_K]  # as attn_v
