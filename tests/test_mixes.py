"""Quantization mixes: plan_types must choose, for every tensor, the type llama.cpp itself picks.

The oracle is llama_model_quantize (llama-quantize, in process): we write tiny GGUF models,
let llama.cpp quantize them with each mix and read back the tensor types it wrote.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from ggtool.errors import QuantError
from ggtool.plan.model import ModelInfo
from ggtool.plan.llamacpp import MIXES, get_mix, parse_tensor_type, plan_types, use_more_bits

from tests.hf_from_gguf import read_gguf_header


# ---------------------------------------------------------------------------- tiny models

@dataclass(frozen=True)
class Cfg:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    tied: bool
    dtype: type = np.float32
    arch: str = "llama"
    n_expert: int = 0
    rows: int | None = None  # cap on every output dim (row length kept): cheap, same rules
    vocab: int = 32


def tensor_shapes(c: Cfg) -> dict[str, tuple[int, ...]]:
    """GGUF name -> numpy shape (row length last), llama layout."""
    hd = c.n_embd // c.n_head
    cap = (lambda n: min(n, c.rows)) if c.rows else (lambda n: n)
    s = {"token_embd.weight": (c.vocab, c.n_embd), "output_norm.weight": (c.n_embd,)}
    if not c.tied:
        s["output.weight"] = (c.vocab, c.n_embd)
    for i in range(c.n_layer):
        b = f"blk.{i}."
        s[b + "attn_norm.weight"] = (c.n_embd,)
        s[b + "ffn_norm.weight"] = (c.n_embd,)
        if c.arch == "falcon":  # fused q/k/v
            s[b + "attn_qkv.weight"] = (cap(c.n_embd + 2 * c.n_head_kv * hd), c.n_embd)
        else:
            s[b + "attn_q.weight"] = (cap(c.n_embd), c.n_embd)
            s[b + "attn_k.weight"] = (cap(c.n_head_kv * hd), c.n_embd)
            s[b + "attn_v.weight"] = (cap(c.n_head_kv * hd), c.n_embd)
        s[b + "attn_output.weight"] = (cap(c.n_embd), c.n_embd)
        if c.n_expert:
            e = c.n_expert
            s[b + "ffn_gate_inp.weight"] = (e, c.n_embd)
            s[b + "ffn_gate_exps.weight"] = (e, cap(c.n_ff), c.n_embd)
            s[b + "ffn_up_exps.weight"] = (e, cap(c.n_ff), c.n_embd)
            s[b + "ffn_down_exps.weight"] = (e, cap(c.n_embd), c.n_ff)
        else:
            s[b + "ffn_gate.weight"] = (cap(c.n_ff), c.n_embd)
            s[b + "ffn_up.weight"] = (cap(c.n_ff), c.n_embd)
            s[b + "ffn_down.weight"] = (cap(c.n_embd), c.n_ff)
    return s


def write_model(path, c: Cfg, seed=0):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), c.arch)
    w.add_context_length(128)
    w.add_embedding_length(c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_feed_forward_length(c.n_ff)
    w.add_head_count(c.n_head)
    w.add_head_count_kv(c.n_head_kv)
    w.add_rope_dimension_count(c.n_embd // c.n_head)
    if c.arch == "falcon":
        w.add_layer_norm_eps(1e-5)
    else:
        w.add_layer_norm_rms_eps(1e-5)
    if c.n_expert:
        w.add_expert_count(c.n_expert)
        w.add_expert_used_count(2)
    w.add_file_type(1 if c.dtype == np.float16 else 0)
    # a minimal byte-level BPE vocabulary
    tokens = [chr(ord("a") + i % 26) * (1 + i // 26) for i in range(c.vocab)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * c.vocab)
    w.add_token_merges(["a a"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    shapes = list(tensor_shapes(c).items())
    rng.shuffle(shapes)  # file order must not matter: llama.cpp sorts by (layer, name)
    for name, shape in shapes:
        x = rng.standard_normal(shape).astype(np.float32) * 0.02
        w.add_tensor(name, x if len(shape) == 1 else x.astype(c.dtype))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tensor_list(path):
    """[(name, numpy shape, type)] of a GGUF file, from its header alone (gguf.GGUFReader takes
    seconds on SmolLM2's vocabulary; test_tensor_list_agrees_with_gguf_reader checks this)."""
    return [(name, tuple(reversed(dims)), T(ggml_type)) for name, dims, ggml_type, _ in read_gguf_header(path)[1]]


_SOURCES: dict = {}


def source_info(path):
    """(tensor_list, ModelInfo) of a source GGUF, read once per file."""
    st = Path(path).stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _SOURCES:
        _SOURCES[key] = (tensor_list(path), ModelInfo.from_gguf(path))
    return _SOURCES[key]


def llama_cpp_types(src, dst, mix, **params):
    """What llama.cpp chose: quantize src with llama_model_quantize, read dst's tensor types."""
    from ggtool.llamacpp.quantize import llama_quantize_file

    llama_quantize_file(src, dst, get_mix(mix).ftype, nthread=2, extra=params)
    return {name: t for name, _, t in tensor_list(dst)}


def assert_same_plan(src, dst, mix, plan_kw=None, **params):
    want = llama_cpp_types(src, dst, mix, **params)
    tensors, model = source_info(src)
    got = plan_types(tensors, model, mix, **(plan_kw or {}))
    diff = {n: (got.get(n), t) for n, t in want.items() if got.get(n) != t}
    assert not diff, f"{mix}: ours vs llama.cpp differ on {len(diff)} tensors: " + ", ".join(
        f"{n}: {a.name if a is not None else None} != {b.name}" for n, (a, b) in sorted(diff.items())[:12])
    assert set(got) == set(want)
    return want


CONFIGS = {
    # GQA 4, untied output, every row a multiple of 256
    "gqa4-untied-8L-256": Cfg(8, 256, 512, 8, 2, tied=False, rows=32),
    # MHA, tied embeddings, 16 layers, rows of 320 and 544: every K type falls back
    "mha-tied-16L-320": Cfg(16, 320, 544, 4, 4, tied=True, dtype=np.float16, rows=32),
    # GQA 4 with tied embeddings, 16 layers, ffn_down rows of 768
    "gqa4-tied-16L-256": Cfg(16, 256, 768, 4, 1, tied=True, rows=32),
    # GQA 2, rows of 96 and 200 (200 is not a multiple of 32: F16 fallback), 12 layers
    "gqa2-untied-12L-96": Cfg(12, 96, 200, 4, 2, tied=False, dtype=np.float16),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, llama_cpp_ok):
    d = tmp_path_factory.mktemp("mixes")
    return {k: write_model(d / f"{k}.gguf", c, seed=i) for i, (k, c) in enumerate(CONFIGS.items())}


@pytest.mark.parametrize("mix", list(MIXES))
@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_plan_matches_llama_cpp(models, tmp_path, cfg, mix):
    assert_same_plan(models[cfg], tmp_path / "q.gguf", mix)


def test_tensor_list_agrees_with_gguf_reader(models, tmp_path):
    """tensor_list's header reader == gguf-py's reader, on a model we wrote (shuffled tensors,
    F16 and F32) and on what llama.cpp wrote from it."""
    def by_reader(path):
        r = gguf.GGUFReader(str(path))
        return [(t.name, tuple(int(n) for n in reversed(t.shape.tolist())), T(t.tensor_type),
                 int(t.data_offset - r.data_offset)) for t in r.tensors]

    src = models["mha-tied-16L-320"]
    llama_cpp_types(src, tmp_path / "q.gguf", "Q4_K_M")
    for path in (src, tmp_path / "q.gguf"):
        want = by_reader(path)
        assert [(n, tuple(reversed(d)), T(t), off) for n, d, t, off in read_gguf_header(path)[1]] == want
        assert tensor_list(path) == [w[:3] for w in want]


def test_rules_actually_vary(models, tmp_path):
    """The fixtures exercise the interesting rules (so the comparison above means something)."""
    want = llama_cpp_types(models["gqa4-untied-8L-256"], tmp_path / "q.gguf", "Q4_K_M")
    v = [want[f"blk.{i}.attn_v.weight"] for i in range(8)]
    assert v == [T.Q6_K if use_more_bits(i, 8) else T.Q4_K for i in range(8)]
    assert want["output.weight"] == T.Q6_K and want["token_embd.weight"] == T.Q4_K
    want = llama_cpp_types(models["mha-tied-16L-320"], tmp_path / "q.gguf", "Q2_K")
    assert want["blk.0.attn_v.weight"] == T.Q4_0  # Q3_K (MHA) falls back to Q4_0 on 320
    assert want["token_embd.weight"] == T.Q8_0  # tied, row not a multiple of 256
    want = llama_cpp_types(models["gqa2-untied-12L-96"], tmp_path / "q.gguf", "Q4_K_M")
    assert want["blk.0.ffn_down.weight"] == T.F16  # 200 fits neither Q6_K nor Q8_0


# ---------------------------------------------------------------------------- options

def _overrides(pairs):
    from ggtool.llamacpp import llama_cpp

    mod = llama_cpp()
    arr = (mod.llama_model_tensor_override * (len(pairs) + 1))()
    for i, (rx, t) in enumerate(pairs):
        arr[i].pattern = rx.encode()
        arr[i].type = int(t)
    arr[len(pairs)].pattern = None
    return ctypes.cast(arr, ctypes.POINTER(mod.llama_model_tensor_override))  # keeps arr alive


@pytest.mark.parametrize("mix,pairs", [
    ("Q4_K_M", [(r"blk\.1\.ffn_down", T.Q8_0)]),  # shifts llama.cpp's ffn_down counter
    ("Q3_K_M", [(r"blk\.0\.attn_v", T.Q6_K), ("ffn_up", T.Q5_0)]),  # shifts the attn_v counter
    ("Q4_K_S", [("attn_v", T.Q2_K), ("attn", T.Q8_0)]),  # first match wins
    ("Q5_K_M", [("output", T.Q4_K), ("token_embd", T.IQ4_NL)]),
    ("F16", [("attn_v", T.Q8_0)]),  # no overrides in float mixes
])
@pytest.mark.parametrize("cfg", ["gqa4-untied-8L-256", "mha-tied-16L-320"])
def test_tensor_type_overrides(models, tmp_path, cfg, mix, pairs):
    assert_same_plan(models[cfg], tmp_path / "q.gguf", mix, plan_kw={"overrides": pairs},
                     tt_overrides=_overrides(pairs))


def test_overrides_shift_llama_cpp_counters(models, tmp_path):
    """An overridden tensor skips the rules, so it does not advance llama.cpp's counters."""
    src = models["gqa4-untied-8L-256"]
    pairs = [(r"blk\.1\.ffn_down", T.Q8_0)]
    want = assert_same_plan(src, tmp_path / "q.gguf", "Q4_K_M", plan_kw={"overrides": pairs},
                            tt_overrides=_overrides(pairs))
    # without the override layer 3 is a use_more_bits layer and layer 4 is not
    assert [want[f"blk.{i}.ffn_down.weight"] for i in (3, 4)] == [T.Q4_K, T.Q6_K]
    pairs = [(r"blk\.0\.attn_v", T.Q6_K)]
    want = assert_same_plan(src, tmp_path / "q.gguf", "Q3_K_M", plan_kw={"overrides": pairs},
                            tt_overrides=_overrides(pairs))
    assert [want[f"blk.{i}.attn_v.weight"] for i in range(4)] == [T.Q6_K, T.Q5_K, T.Q5_K, T.Q4_K]


@pytest.mark.parametrize("mix,out,emb", [
    ("Q4_K_M", T.Q8_0, None),  # tied: token_embd follows the output type
    ("Q4_K_M", None, T.Q5_0),
    ("Q3_K_S", T.Q4_0, T.Q8_0),
    ("F16", T.Q8_0, None),  # a float mix still honours --output-tensor-type
])
@pytest.mark.parametrize("cfg", ["gqa4-tied-16L-256", "gqa4-untied-8L-256", "mha-tied-16L-320"])
def test_output_and_token_embd_types(models, tmp_path, cfg, mix, out, emb):
    params = {}
    if out is not None:
        params["output_tensor_type"] = int(out)
    if emb is not None:
        params["token_embedding_type"] = int(emb)
    assert_same_plan(models[cfg], tmp_path / "q.gguf", mix,
                     plan_kw={"output_type": out, "token_embd_type": emb}, **params)


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q2_K", "Q6_K"])
def test_pure(models, tmp_path, mix):
    for cfg in ("gqa4-untied-8L-256", "mha-tied-16L-320"):
        assert_same_plan(models[cfg], tmp_path / "q.gguf", mix, plan_kw={"pure": True}, pure=True)


@pytest.mark.parametrize("mix", ["Q4_0", "Q5_0", "IQ4_NL", "IQ4_XS", "Q4_K_M"])
def test_imatrix_changes_plan(models, tmp_path, mix):
    from ggtool.llamacpp import llama_cpp

    mod = llama_cpp()
    none = (mod.llama_model_imatrix_data * 1)()  # an empty imatrix: only "have one" matters
    none[0].name = None
    want = assert_same_plan(models["gqa4-tied-16L-256"], tmp_path / "q.gguf", mix,
                            plan_kw={"imatrix_available": True},
                            imatrix=ctypes.cast(none, ctypes.POINTER(mod.llama_model_imatrix_data)))
    if mix in ("Q4_0", "Q5_0"):
        assert want["blk.1.ffn_down.weight"] == {"Q4_0": T.Q4_1, "Q5_0": T.Q5_1}[mix]


# ---------------------------------------------------------------------------- other shapes

SPECIAL = {
    # 80 layers with GQA: llama.cpp calls it a 70B and bumps attn_v
    "llama-70b": Cfg(80, 256, 256, 8, 1, tied=False, rows=4, vocab=8),
    # 8 experts: attn_v/attn_k Q8_0, attn_output Q5_K, ffn_down layer from the name
    "moe-8x": Cfg(8, 256, 256, 8, 2, tied=False, n_expert=8, rows=8),
    # Falcon: fused attn_qkv, output always Q8_0, its own ffn_down ladder
    "falcon": Cfg(16, 256, 512, 8, 1, tied=False, arch="falcon", rows=16),
}


@pytest.mark.parametrize("mix", ["Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M",
                                 "Q5_K_M", "IQ4_XS", "Q4_0"])
@pytest.mark.parametrize("cfg", list(SPECIAL))
def test_special_models(tmp_path_factory, tmp_path, llama_cpp_ok, cfg, mix):
    d = tmp_path_factory.getbasetemp() / "mixes-special"
    d.mkdir(exist_ok=True)
    src = d / f"{cfg}.gguf"
    if not src.exists():
        write_model(src, SPECIAL[cfg])
    want = assert_same_plan(src, tmp_path / "q.gguf", mix)
    if cfg == "moe-8x" and mix != "Q4_0":
        assert want["blk.3.attn_v.weight"] == want["blk.3.attn_k.weight"] == T.Q8_0
    if cfg == "llama-70b" and mix == "Q3_K_S":
        assert want["blk.40.attn_v.weight"] == T.Q5_K
    if cfg == "falcon":
        assert want["output.weight"] == T.Q8_0


# ---------------------------------------------------------------------------- pure-python checks

def test_unknown_mix_lists_valid_ones():
    with pytest.raises(QuantError) as e:
        get_mix("Q4_K_XL")
    assert "Q4_K_M" in e.value.hint and "Q8_0" in e.value.hint


def test_aliases_and_case():
    assert get_mix("q4_k").name == "Q4_K_M" and get_mix("Q3_K").name == "Q3_K_M"
    assert get_mix("bf16").ftype == 32 and get_mix("Q8_0").ftype == 7


def test_parse_tensor_type():
    assert parse_tensor_type("Blk\\.0\\.ATTN_V=q8_0") == ("blk\\.0\\.attn_v", T.Q8_0)
    for bad in ("attn_v", "=q8_0", "attn_v=", "attn_v=Q9_K"):
        with pytest.raises(QuantError):
            parse_tensor_type(bad)


def test_forced_type_that_does_not_fit_is_an_error():
    model = ModelInfo("llama", 1, 4, 4)
    tensors = [("token_embd.weight", (32, 320)), ("output.weight", (32, 320))]
    with pytest.raises(QuantError, match="320"):
        plan_types(tensors, model, "Q4_K_M", output_type="Q6_K")
    assert plan_types(tensors, model, "Q4_K_M", output_type="Q8_0")["output.weight"] == T.Q8_0


def test_never_quantized_tensors_keep_their_type():
    model = ModelInfo("llama", 1, 4, 4)
    plan = plan_types([("blk.0.attn_norm.weight", (256,), T.F32),
                       ("position_embd.weight", (64, 256), T.F16),
                       ("blk.0.ffn_gate_inp.weight", (8, 256), T.F32),
                       ("blk.0.attn_q.weight", (1, 256), T.F16),  # ggml sees a 1-D tensor
                       ("blk.0.attn_q.bias", (4, 256), T.F32)],  # not a *weight
                      model, "Q4_K_M")
    assert plan == {"blk.0.attn_norm.weight": T.F32, "position_embd.weight": T.F16,
                    "blk.0.ffn_gate_inp.weight": T.F32, "blk.0.attn_q.weight": T.F16,
                    "blk.0.attn_q.bias": T.F32}


# ---------------------------------------------------------------------------- the real SmolLM2

def f16_copy(r, dst):
    """SmolLM2 Q4_1 (its gguf.GGUFReader) -> an F16 GGUF with the same metadata (2-D weights F16,
    the rest F32)."""
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(str(dst), arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = gguf.GGUFValueType(f.types[0])
        sub = gguf.GGUFValueType(f.types[-1]) if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub_type=sub)
    w.add_file_type(1)
    for t in r.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        w.add_tensor(t.name, x.astype(np.float16 if x.ndim >= 2 else np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="module")
def smollm2_f16(tmp_path_factory, smollm2_reader, llama_cpp_ok):
    return f16_copy(smollm2_reader, tmp_path_factory.mktemp("smollm2") / "smollm2-f16.gguf")


@pytest.mark.slow
@pytest.mark.parametrize("mix,fallbacks", [
    ("Q4_K_M", {T.Q5_0}),  # Q4_K on 576-wide rows
    ("Q3_K_M", {T.Q4_0, T.Q5_0, T.Q5_1}),  # Q3_K, Q4_K and Q5_K on 576-wide rows
])
def test_smollm2(smollm2_f16, tmp_path, mix, fallbacks):
    want = assert_same_plan(smollm2_f16, tmp_path / "q.gguf", mix)
    # tied embeddings 576 wide: the output rule gives Q8_0; K types fall back on 576-wide rows
    assert want["token_embd.weight"] == T.Q8_0
    assert fallbacks <= set(want.values())
