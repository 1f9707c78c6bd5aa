"""Gemma 2/3, Phi-3, Mixtral and Qwen3-MoE: what we convert, llama.cpp runs as transformers does.

The oracle is transformers (CPU torch, eager attention) on the tiny seeded source checkpoint
(tests/tinymodels.py make_family_checkpoint): llama.cpp's logits on our F32 GGUF must agree to a
max relative error of 1e-3 (max |llama.cpp - transformers| / max |transformers|, as
tests/test_convert.py), and llama.cpp's tokenizer must give the source tokenizer's ids.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ggtool.convert import convert
from ggtool.errors import GgtoolError, UnsupportedArchitecture
from tests import tinymodels as tm
from tests.reference_forward import load_checkpoint

F32_BOUND = 1e-3


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="session")
def hf():
    """(transformers, torch), imported once per session (the import takes seconds)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers, torch


def hf_run(hf, ckpt, ids, cls_name: str | None = None) -> tuple[np.ndarray, float]:
    """transformers' logits for one sequence (float32 throughout, eager attention: soft-capping)
    and, for a MoE, the smallest gap between the last chosen and the first unchosen expert's
    router probability over all tokens and layers (inf for a dense model)."""
    transformers, torch = hf
    cls = getattr(transformers, cls_name) if cls_name else transformers.AutoModelForCausalLM
    model, info = cls.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager",
                                      output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    k = getattr(model.config, "num_experts_per_tok", 0)
    with torch.no_grad():
        out = model(torch.tensor([list(map(int, ids))]), **({"output_router_logits": True} if k else {}))
    gap = float("inf")
    for rl in (out.router_logits or []) if k else []:
        p = torch.sort(torch.softmax(rl.float(), -1), -1, descending=True).values
        if p.shape[-1] > k:
            gap = min(gap, float((p[:, k - 1] - p[:, k]).min()))
    return out.logits[0].float().numpy(), gap


def hf_logits(hf, ckpt, ids, cls_name: str | None = None) -> np.ndarray:
    return hf_run(hf, ckpt, ids, cls_name)[0]


def well_routed_ids(hf, ckpt, vocab: int, n: int, seed: int, min_gap: float = 1e-3):
    """(ids, transformers logits) for a random sequence on which no routing decision is a near
    tie: a MoE picks experts by rank, and a 1e-5 difference in router logits (float summation
    order) may flip the choice near a tie, a discrete jump no tolerance covers."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        ids = [int(i) for i in rng.integers(4, vocab, n)]
        ref, gap = hf_run(hf, ckpt, ids)
        if gap > min_gap:
            return ids, ref
    raise AssertionError("no sequence without a near-tie routing decision in 50 draws")


# name -> (arch, make_family_checkpoint kwargs, [(n_ids, llama.cpp n_ctx), ...])
_GEMMA3_MIXED = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]
CASES = {
    # tied, GQA, head_dim 32 != 64/4, window 4 on layers 0 and 2, both soft-caps
    "gemma2": ("gemma2", {}, [(16, 64)]),
    # tied, q/k norms, layers 0 1 3 4 slide (period 3), local base 1e4, global 1e6 with x8 scaling
    "gemma3": ("gemma3", {"layers": 5}, [(16, 64)]),
    # untied, one KV head, an irregular layer pattern (written per layer), no final soft-cap
    "gemma3-untied-mqa": ("gemma3", {"layers": 4, "tied": False, "kv_heads": 1, "config_overrides": {
        "layer_types": _GEMMA3_MIXED, "final_logit_softcapping": None}}, [(16, 64)]),
    # Phi-3-mini-4k: MHA, untied, full rotary, no rope scaling, SentencePiece + chat tokens
    "phi3-mini": ("phi3", {"kv_heads": 4, "config_overrides": {
        "rope_scaling": None, "partial_rotary_factor": None}}, [(16, 64)]),
    # Phi-4-mini: GQA, tied, rotary on 3/4 of each head, LongRoPE short and long factors, BPE
    "phi4-mini-longrope": ("phi3", {"tied": True, "tokenizer": "gpt2"}, [(16, 256), (300, 512)]),
    # 8 experts (llama.cpp's special 8-expert quant rules), 2 per token, GQA, SentencePiece
    "mixtral": ("mixtral", {}, [(16, 64)]),
    # 8 experts of ffn 48, 2 per token, q/k norms, head_dim 32 != 64/4, BPE
    "qwen3moe": ("qwen3moe", {"head_dim": 32}, [(16, 64)]),
}


def _make(tmp_path, case, **over):
    arch, kw, _ = CASES[case]
    return tm.make_family_checkpoint(tmp_path / case, arch, seed=3, **{**kw, **over})


@pytest.mark.parametrize("case", list(CASES))
def test_f32_logits_match_transformers(tmp_path, case, hf, llama_cpp_ok):
    from oracles.llamacpp import logits

    ck = _make(tmp_path, case)
    res = convert(ck, tmp_path / "m.gguf", "F32", progress=False)
    vocab = json.loads((ck / "config.json").read_text())["vocab_size"]
    for n_ids, n_ctx in CASES[case][2]:
        ids, ref = well_routed_ids(hf, ck, vocab, n_ids, seed=11)
        got = logits(res.path, ids, n_ctx=n_ctx)
        assert got.shape == ref.shape
        err = rel_err(got, ref)
        assert err <= F32_BOUND, (case, n_ids, err)


def test_phi3_long_and_short_factors_both_matter(tmp_path, hf):
    """The LongRoPE test above really switches factors: short and long logits differ."""
    ck = _make(tmp_path, "phi4-mini-longrope")
    ids = [int(i) for i in np.random.default_rng(5).integers(4, 500, 300)]
    long_ = hf_logits(hf, ck, ids)[:16]
    short = hf_logits(hf, ck, ids[:16])
    assert rel_err(short, long_) > 1e-2


def test_gemma3_conditional_generation_text_part(tmp_path, hf, llama_cpp_ok):
    """Gemma3ForConditionalGeneration: its language model converts (vision tower skipped with a
    warning) and runs in llama.cpp as transformers runs the whole model on text."""
    from oracles.llamacpp import logits

    transformers, torch = hf
    # no final soft-cap: the released multimodal Gemma 3 have none, and transformers 4.57's
    # Gemma3ForConditionalGeneration would not apply one (its Gemma3ForCausalLM does)
    text = _make(tmp_path, "gemma3", layers=3, config_overrides={"final_logit_softcapping": None})
    tcfg = json.loads((text / "config.json").read_text())
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14, "model_type": "siglip_vision_model"}
    cfg = transformers.Gemma3Config(text_config={k: v for k, v in tcfg.items() if k != "architectures"},
                                    vision_config=vision, mm_tokens_per_image=4,
                                    boi_token_index=5, eoi_token_index=6, image_token_index=7)
    torch.manual_seed(0)
    vis = {k: v.numpy() for k, v in transformers.Gemma3ForConditionalGeneration(cfg).state_dict().items()
           if "language_model" not in k and k != "lm_head.weight"}
    weights = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v
               for k, v in load_checkpoint(text)[1].items()}
    mm = tmp_path / "mm"
    mm.mkdir()
    for f in ("tokenizer.model", "tokenizer_config.json", "generation_config.json"):
        (mm / f).write_bytes((text / f).read_bytes())
    d = cfg.to_dict()
    d["architectures"] = ["Gemma3ForConditionalGeneration"]
    (mm / "config.json").write_text(json.dumps(d, indent=2))
    tm.write_safetensors(mm / "model.safetensors", {**weights, **vis})
    msgs = []
    res = convert(mm, tmp_path / "mm.gguf", "F32", progress=False, log=msgs.append)
    assert any("not converted" in m and "vision_tower" in m for m in msgs), msgs
    ids = [int(i) for i in np.random.default_rng(2).integers(10, tcfg["vocab_size"], 16)]
    ref = hf_logits(hf, mm, ids, "Gemma3ForConditionalGeneration")
    assert rel_err(logits(res.path, ids, n_ctx=64), ref) <= F32_BOUND
    assert rel_err(logits(res.path, ids, n_ctx=64), logits(convert(text, tmp_path / "t.gguf", "F32",
                                                                    progress=False).path, ids)) == 0


# ---------------------------------------------------------------------------- tokenizers

def _source_ids(ck, text: str) -> list[int]:
    """The source tokenizer's ids: `tokenizers` on tokenizer.json; for SentencePiece, the
    sentencepiece library on each stretch of text between added tokens (llama.cpp's and HF
    legacy's convention: added tokens split the text first), BOS per tokenizer_config."""
    tc = json.loads((ck / "tokenizer_config.json").read_text())
    if not (ck / "tokenizer.model").exists():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(ck / "tokenizer.json")).encode(text).ids
    import sentencepiece as spm

    from tests.tinytokenizers import GEMMA_TURN_TOKENS, USER_TOKENS

    sp = spm.SentencePieceProcessor(model_file=str(ck / "tokenizer.model"))
    added = {t["content"]: int(i) for i, t in (tc.get("added_tokens_decoder") or {}).items()}
    added.update({sp.id_to_piece(i): i for i in range(sp.vocab_size()) if sp.is_control(i)
                  or sp.id_to_piece(i) in (*USER_TOKENS, *GEMMA_TURN_TOKENS, "<mask>")})
    rstrip = {t["content"] for t in (tc.get("added_tokens_decoder") or {}).values() if t.get("rstrip")}
    cut = sorted(added, key=len, reverse=True)
    ids = [sp.bos_id()] if tc.get("add_bos_token") else []
    rest = text
    while rest:
        hits = [(rest.find(t), -len(t), t) for t in cut if t in rest]
        if not hits:
            ids += sp.encode(rest)
            break
        pos, _, tok = min(hits)
        if pos:
            ids += sp.encode(rest[:pos])
        ids.append(added[tok])
        rest = rest[pos + len(tok):]
        if tok in rstrip:
            rest = rest.lstrip()
    return ids


TOKEN_TEXTS = [
    "Alice was beginning to get very tired of sitting by her sister on the bank.\n"
    "  Café naïve — «quoted» I've they'll 日本語 🚀🦙 digits: 1 12 1234567 3.14159\n"
    "def f(x):\n    return x ** 2  # comment\n\n\n   trailing   ",
    "<start_of_turn>user\nHello there!<end_of_turn>\n<start_of_turn>model\n<think>42</think> Hi",
    "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4<|end|><|endoftext|>",
    "<|im_start|>user\nhey<|im_end|>\n",
    "", " ", "a", "\n\n",
]


@pytest.mark.parametrize("case", ["gemma2", "phi3-mini", "phi4-mini-longrope", "mixtral", "qwen3moe"])
def test_llama_cpp_tokenizer_matches_source(tmp_path, case, llama_cpp_ok):
    from ggtool.llamacpp.runtime import Model

    arch, kw, _ = CASES[case]   # a folder name that says nothing about the family (a Hub snapshot)
    ck = tm.make_family_checkpoint(tmp_path / "0f3a9c", arch, seed=3, **{**kw, "layers": 1})
    res = convert(ck, tmp_path / "m.gguf", "F32", progress=False)
    m = Model(res.path, vocab_only=True)
    try:
        for text in TOKEN_TEXTS:
            assert m.tokenize(text) == _source_ids(ck, text), (case, text)
    finally:
        m.close()


def test_gemma_vocab_types_and_template(tmp_path):
    """Turn markers are control tokens (user-defined in the SentencePiece model, special in the
    tokenizer config), <end_of_turn> is the end-of-turn token, no space prefix, the template."""
    import gguf

    ck = _make(tmp_path, "gemma3", layers=1)
    res = convert(ck, tmp_path / "m.gguf", "F32", progress=False)
    f = gguf.GGUFReader(res.path).fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    eot = tokens.index("<end_of_turn>")
    assert types[tokens.index("<start_of_turn>")] == types[eot] == gguf.TokenType.CONTROL
    assert types[tokens.index("<mask>")] == gguf.TokenType.CONTROL      # looks special, as llama.cpp
    assert types[tokens.index("<think>")] == gguf.TokenType.USER_DEFINED
    assert f["tokenizer.ggml.eot_token_id"].contents() == eot
    assert f["tokenizer.ggml.add_space_prefix"].contents() is False
    assert f["tokenizer.ggml.bos_token_id"].contents() == tokens.index("<bos>")
    assert "<start_of_turn>" in f["tokenizer.chat_template"].contents()


# ---------------------------------------------------------------------------- metadata

def test_gemma3_metadata(tmp_path):
    import gguf

    ck = _make(tmp_path, "gemma3", layers=5)
    f = gguf.GGUFReader(convert(ck, tmp_path / "m.gguf", "F32", progress=False).path).fields
    kv = {k: f[k].contents() for k in f if k.startswith("gemma3.")}
    assert kv["gemma3.attention.sliding_window"] == 4
    assert kv["gemma3.attention.sliding_window_pattern"] == 3
    assert kv["gemma3.rope.freq_base"] == 1e6 and kv["gemma3.rope.freq_base_swa"] == 1e4
    assert kv["gemma3.rope.scaling.type"] == "linear" and kv["gemma3.rope.scaling.factor"] == 8.0
    assert kv["gemma3.final_logit_softcapping"] == 25.0
    assert kv["gemma3.attention.key_length"] == 16
    ck2 = _make(tmp_path, "gemma3-untied-mqa")
    f = gguf.GGUFReader(convert(ck2, tmp_path / "m2.gguf", "F32", progress=False).path).fields
    assert f["gemma3.attention.sliding_window_pattern"].contents() == [True, False, True, True]
    assert "gemma3.final_logit_softcapping" not in f


def test_gemma_norms_are_shifted_by_one(tmp_path):
    import gguf

    ck = _make(tmp_path, "gemma2", layers=1)
    src = load_checkpoint(ck)[1]
    r = gguf.GGUFReader(convert(ck, tmp_path / "m.gguf", "F32", progress=False).path)
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    for hf_name, g in [("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
                       ("model.layers.0.post_attention_layernorm.weight", "blk.0.post_attention_norm.weight"),
                       ("model.layers.0.pre_feedforward_layernorm.weight", "blk.0.ffn_norm.weight"),
                       ("model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight"),
                       ("model.norm.weight", "output_norm.weight")]:
        np.testing.assert_array_equal(t[g], src[hf_name] + np.float32(1))
    np.testing.assert_array_equal(t["token_embd.weight"].reshape(src["model.embed_tokens.weight"].shape),
                                  src["model.embed_tokens.weight"])        # scaled at run time
    assert "output.weight" not in t


def test_phi3_fused_tensors_and_longrope(tmp_path):
    import gguf

    ck = _make(tmp_path, "phi4-mini-longrope", layers=1)
    cfg = json.loads((ck / "config.json").read_text())
    src = load_checkpoint(ck)[1]
    r = gguf.GGUFReader(convert(ck, tmp_path / "m.gguf", "F32", progress=False).path)
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    np.testing.assert_array_equal(t["blk.0.attn_qkv.weight"], src["model.layers.0.self_attn.qkv_proj.weight"])
    np.testing.assert_array_equal(t["blk.0.ffn_up.weight"], src["model.layers.0.mlp.gate_up_proj.weight"])
    np.testing.assert_allclose(t["rope_factors_long.weight"], cfg["rope_scaling"]["long_factor"], rtol=1e-7)
    np.testing.assert_allclose(t["rope_factors_short.weight"], cfg["rope_scaling"]["short_factor"], rtol=1e-7)
    f = r.fields
    assert f["phi3.rope.dimension_count"].contents() == 12
    assert f["phi3.rope.scaling.original_context_length"].contents() == 256
    assert f["phi3.rope.scaling.attn_factor"].contents() == pytest.approx(
        np.sqrt(1 + np.log(4096 / 256) / np.log(256)), rel=1e-6)


def test_moe_experts_stacked_in_order(tmp_path):
    import gguf

    ck = _make(tmp_path, "qwen3moe", layers=1)
    src = load_checkpoint(ck)[1]
    r = gguf.GGUFReader(convert(ck, tmp_path / "m.gguf", "F32", progress=False).path)
    t = {x.name: x for x in r.tensors}
    f = r.fields
    assert f["qwen3moe.expert_count"].contents() == 8 and f["qwen3moe.expert_used_count"].contents() == 2
    assert f["qwen3moe.expert_feed_forward_length"].contents() == 48
    for hf_role, g in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
        x = t[f"blk.0.{g}.weight"]
        want = np.stack([src[f"model.layers.0.mlp.experts.{e}.{hf_role}.weight"] for e in range(8)])
        assert tuple(int(n) for n in x.shape) == want.shape[::-1]     # ggml ne: {cols, rows, experts}
        np.testing.assert_array_equal(np.asarray(x.data).reshape(want.shape), want)
    np.testing.assert_array_equal(np.asarray(t["blk.0.ffn_gate_inp.weight"].data),
                                  src["model.layers.0.mlp.gate.weight"])


# ---------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("case,over,match", [
    ("gemma2", {"query_pre_attn_scalar": 20}, "attention scale"),
    ("gemma2", {"tie_word_embeddings": False}, "untied"),
    ("gemma3", {"hidden_activation": "relu"}, "GELU"),
    ("qwen3moe", {"norm_topk_prob": False}, "renormalises"),
    ("qwen3moe", {"mlp_only_layers": [0]}, "experts in every layer"),
    ("phi3-mini", {"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "longrope"),
])
def test_configs_llama_cpp_would_run_wrongly_are_refused(tmp_path, case, over, match):
    arch, kw, _ = CASES[case]
    kw = dict(kw)
    kw["config_overrides"] = {**kw.get("config_overrides", {}), **over}
    if case == "gemma2" and "tie_word_embeddings" in over:
        kw["tied"] = False
    kw.update(layers=1, tokenizer=None)
    ck = tm.make_family_checkpoint(tmp_path / "ck", arch, **kw)
    with pytest.raises(GgtoolError) as e:
        convert(ck, tmp_path / "m.gguf", "F32", progress=False)
    assert match in str(e.value) + (e.value.hint or "")
    assert not list(tmp_path.glob("*.gguf*"))


def test_missing_expert_is_named(tmp_path):
    ck = tm.make_family_checkpoint(tmp_path / "ck", "mixtral", layers=1, tokenizer=None)
    tm.corrupt_drop_tensor(ck, "model.layers.0.block_sparse_moe.experts.5.w2.weight")
    with pytest.raises(GgtoolError, match=r"ffn_down_exps.weight \(expert 5\)"):
        convert(ck, tmp_path / "m.gguf", "F32", progress=False)


def test_unknown_architecture_lists_the_new_families(tmp_path):
    ck = tm.make_family_checkpoint(tmp_path / "ck", "phi3", layers=1, tokenizer=None,
                                   config_overrides={"architectures": ["Phi4MMForCausalLM"]})
    with pytest.raises(UnsupportedArchitecture) as e:
        convert(ck, tmp_path / "m.gguf", "F32", progress=False)
    for name in ("Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration",
                 "Phi3ForCausalLM", "MixtralForCausalLM", "Qwen3MoeForCausalLM"):
        assert name in e.value.hint


# ---------------------------------------------------------------------------- golden files

@pytest.mark.parametrize("arch", ["Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM",
                                  "MixtralForCausalLM", "Qwen3MoeForCausalLM"])
def test_output_equals_golden_file(tmp_path, arch):
    """Every key and every tensor's bytes as recorded in tests/golden/<arch>.json. A difference
    means shared code changed what this family writes: if that is intended, run
    `python tests/golden/regenerate.py ARCH` and say why in the commit."""
    from tests.golden_gguf import build, differences, golden_path

    want = json.loads(golden_path(arch).read_text(encoding="utf-8"))
    diff = differences(want, build(arch, tmp_path))
    assert not diff, f"{arch} output differs from its golden file:\n  " + "\n  ".join(diff[:20])


# ---------------------------------------------------------------------------- MoE streaming

def _peak_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_moe_streaming_memory_is_bounded_by_a_few_tensors(tmp_path):
    """A layer of 128 experts is 48 MiB of float32; converting it (HF -> F16 GGUF, and that GGUF
    -> Q8_0) never holds more than a few single tensors: experts are read, quantized and written
    one at a time."""
    from ggtool.sources import HFCheckpoint

    ck = tm.make_family_checkpoint(tmp_path / "ck", "qwen3moe", hidden=128, heads=4, kv_heads=2,
                                   layers=1, experts=128, expert_ff=256, intermediate=1024)
    c = HFCheckpoint.open(ck)
    sizes = {n: int(np.prod(c.shape(n))) * 4 for n in c.names()}
    c.close()
    largest = max(sizes.values())                        # one tensor (an expert, the embedding)
    stacked = sum(v for n, v in sizes.items() if ".experts." in n and n.endswith("down_proj.weight"))
    bound = 3 * largest + 4 * 2**20
    assert stacked > 2 * bound                           # the test means something
    f16 = tmp_path / "m.F16.gguf"
    peak = _peak_bytes(lambda: convert(ck, f16, "F16", progress=False))
    assert peak < bound, (peak, largest, stacked)
    peak = _peak_bytes(lambda: convert(f16, tmp_path / "m.Q8_0.gguf", "Q8_0", progress=False))
    assert peak < bound, (peak, largest, stacked)


def test_moe_gguf_reencoded_expert_by_expert_is_exact(tmp_path):
    """A MoE GGUF re-encoded (its 3-D tensors read one expert at a time) keeps every value."""
    import gguf

    ck = tm.make_family_checkpoint(tmp_path / "ck", "mixtral", layers=1, experts=4)
    q8 = convert(ck, tmp_path / "a.Q8_0.gguf", "Q8_0", progress=False).path
    f32 = convert(q8, tmp_path / "b.F32.gguf", "F32", progress=False).path
    b = {t.name: t for t in gguf.GGUFReader(f32).tensors}
    for t in gguf.GGUFReader(q8).tensors:
        np.testing.assert_array_equal(np.asarray(b[t.name].data).reshape(-1),
                                      gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1))


@pytest.mark.parametrize("qtype", ["Q4_K", "IQ4_XS", "Q4_0"])
def test_3d_imatrix_weights_each_expert_by_its_own_row(llama_cpp_ok, qtype):
    """A 3-D (experts, rows, cols) tensor with an (experts, cols) imatrix: each expert quantized
    with its own importance row, as llama.cpp's llama_tensor_quantize_impl does; the weighted
    error is never above libggml's on the same expert with the same row."""
    import gguf

    from ggtool import quants
    from ggtool.errors import QuantError
    from oracles.llamacpp import ggml_quantize

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 256)).astype(np.float32)
    im = (rng.random((4, 256)) ** 4 * 10 + 1e-3).astype(np.float32)
    q = quants.quantize(x, qtype, imatrix=im)
    assert q.shape[:2] == (4, 8)
    deq = quants.dequantize(q, qtype, x.shape)
    for e in range(4):
        np.testing.assert_array_equal(q[e], quants.quantize(x[e], qtype, imatrix=im[e]))
        assert not np.array_equal(q[e], quants.quantize(x[e], qtype, imatrix=im[(e + 1) % 4]))
        ref = gguf.quants.dequantize(ggml_quantize(x[e], qtype, imatrix=im[e]), T_(qtype)).reshape(x[e].shape)
        ours_err = float((im[e] * (x[e] - deq[e]) ** 2).sum())
        assert ours_err <= float((im[e] * (x[e] - ref) ** 2).sum()) * (1 + 1e-6)
    with pytest.raises(QuantError, match="does not fit"):
        quants.quantize(x, qtype, imatrix=im[:3])


def T_(name):
    import gguf

    return gguf.GGMLQuantizationType[name]
