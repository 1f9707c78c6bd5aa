"""Converter: llama.cpp loads what we write, and its logits match an independent numpy
forward pass of the source checkpoint (tests/reference_forward.py)."""

from __future__ import annotations

import numpy as np
import pytest
import gguf

from ggtool.convert import convert
from oracles.llamacpp import logits as _logits  # llama.cpp's logits of a GGUF
from tests.tinymodels import make_checkpoint


# (arch, kwargs): GQA, tied/untied, biases, q/k norms, head_dim override, rope scaling,
# shapes that are and are not multiples of 256
CASES = {
    "llama-gqa": ("llama", dict(hidden=64, heads=4, kv_heads=2)),
    "llama-tied-mha": ("llama", dict(hidden=96, heads=6, kv_heads=6, tied=True)),
    "llama-256": ("llama", dict(hidden=256, heads=4, kv_heads=1, intermediate=512, tokenizer="llama3")),
    "llama3-rope-scaling": ("llama", dict(hidden=64, heads=4, kv_heads=2, rope_scaling="llama3",
                                          rope_theta=500000.0, tokenizer="llama3")),
    "llama-attn-bias": ("llama", dict(hidden=64, heads=4, kv_heads=2, qkv_bias=True)),
    "mistral": ("mistral", dict(hidden=64, heads=8, kv_heads=2, tokenizer="spm")),
    "qwen2": ("qwen2", dict(hidden=64, heads=4, kv_heads=2, tied=True, tokenizer="qwen2")),
    "qwen3": ("qwen3", dict(hidden=64, heads=4, kv_heads=2, head_dim=32, tokenizer="qwen2")),
    "smollm-576": ("llama", dict(hidden=576 // 4, heads=9, kv_heads=3, head_dim=None, tied=True,
                                 tokenizer="smollm")),
}

# relative error bound (max |llama.cpp - reference| / max |reference|) per output type
BOUNDS = {"F32": 1e-3, "F16": 1e-2, "BF16": 5e-2, "Q8_0": 5e-2}


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("case", list(CASES))
def test_f32_logits_match_reference(tmp_path, case, llama_cpp_ok):
    from tests.reference_forward import reference_logits

    arch, kw = CASES[case]
    ck = make_checkpoint(tmp_path / "ck", arch, seed=3, **kw)
    out = convert(ck, tmp_path / "m.gguf", "F32", progress=False).path
    vocab = gguf.GGUFReader(out).fields[f"{gguf.GGUFReader(out).fields['general.architecture'].contents()}.vocab_size"].contents()
    ids = list(np.random.default_rng(0).integers(3, vocab, 12))
    ref = reference_logits(ck, ids)
    got = _logits(out, ids)
    assert got.shape == ref.shape
    assert rel_err(got, ref) <= BOUNDS["F32"], case


@pytest.mark.parametrize("out_type", ["F16", "BF16", "Q8_0"])
@pytest.mark.parametrize("src_dtype", ["float32", "bfloat16"])
def test_lower_precision_within_expected_error(tmp_path, out_type, src_dtype, llama_cpp_ok):
    from tests.reference_forward import reference_logits

    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=128, heads=4, kv_heads=2, dtype=src_dtype, seed=5)
    out = convert(ck, tmp_path / f"m.{out_type}.gguf", out_type, progress=False).path
    ids = list(np.random.default_rng(1).integers(3, 400, 12))
    err = rel_err(_logits(out, ids), reference_logits(ck, ids))
    assert err <= BOUNDS[out_type], (out_type, err)


def test_sharded_and_f16_checkpoint(tmp_path, llama_cpp_ok):
    from tests.reference_forward import reference_logits

    ck = make_checkpoint(tmp_path / "ck", "qwen2", hidden=64, heads=4, kv_heads=2, dtype="float16", shards=3)
    out = convert(ck, tmp_path / "m.gguf", "F32", progress=False).path
    ids = [5, 9, 20, 31, 7, 100]
    assert rel_err(_logits(out, ids), reference_logits(ck, ids)) <= BOUNDS["F32"]


def test_round_trip_every_key_and_tensor(tmp_path):
    """What we write reads back through gguf-py: keys, types, shapes and F32 data."""
    from ggtool.arch.base import unpermute_rotary

    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=64, heads=4, kv_heads=2, seed=9)
    res = convert(ck, tmp_path / "m.gguf", "F32", progress=False)
    r = gguf.GGUFReader(res.path)
    keys = set(r.fields)
    for k in ["general.architecture", "general.file_type", "llama.block_count", "llama.embedding_length",
              "llama.attention.head_count_kv", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
              "tokenizer.ggml.pre", "tokenizer.chat_template"]:
        assert k in keys, k
    assert r.fields["general.file_type"].contents() == 0
    names = {t.name for t in r.tensors}
    assert len(names) == res.n_tensors == 2 + 1 + 9 * 2
    from safetensors.numpy import load_file
    src = load_file(str(ck / "model.safetensors"))
    for t in r.tensors:
        data = np.array(t.data).reshape(tuple(reversed([int(s) for s in t.shape])))
        if t.name == "blk.0.attn_q.weight":
            np.testing.assert_array_equal(unpermute_rotary(data, 4), src["model.layers.0.self_attn.q_proj.weight"])
        if t.name == "blk.1.attn_k.weight":
            np.testing.assert_array_equal(unpermute_rotary(data, 2), src["model.layers.1.self_attn.k_proj.weight"])
        if t.name == "blk.1.ffn_down.weight":
            np.testing.assert_array_equal(data, src["model.layers.1.mlp.down_proj.weight"])


def test_q8_0_tensors_decode_with_gguf_py(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=64, heads=4, kv_heads=2)
    res = convert(ck, tmp_path / "m.gguf", "Q8_0", progress=False)
    from ggtool import quants
    r = gguf.GGUFReader(res.path)
    kinds = {t.tensor_type.name for t in r.tensors}
    assert kinds == {"Q8_0", "F32"}
    for t in r.tensors:
        shape = tuple(reversed([int(s) for s in t.shape]))
        np.testing.assert_array_equal(gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape),
                                      quants.dequantize(np.ascontiguousarray(t.data).reshape(-1).view(np.uint8),
                                                        t.tensor_type, shape))


def test_gguf_input_is_reencoded_with_warning(tmp_path, llama_cpp_ok):
    """A quantized GGUF in: dequantized exactly (gguf-py is the oracle), metadata kept, runs."""
    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=64, heads=4, kv_heads=2)
    q8 = convert(ck, tmp_path / "a.Q8_0.gguf", "Q8_0", progress=False).path
    msgs = []
    res = convert(q8, tmp_path / "b.F32.gguf", "F32", progress=False, log=msgs.append)
    assert any("re-quantizing loses quality" in m for m in msgs)
    a, b = gguf.GGUFReader(q8), gguf.GGUFReader(res.path)
    for k in a.fields:
        if not k.startswith("GGUF.") and k not in ("general.file_type", "general.quantization_version"):
            assert b.fields[k].contents() == a.fields[k].contents(), k
    assert b.fields["general.file_type"].contents() == 0
    bt = {t.name: t for t in b.tensors}
    for t in a.tensors:
        np.testing.assert_array_equal(np.asarray(bt[t.name].data).reshape(-1),
                                      gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1))
    ids = [3, 50, 60, 70]
    assert np.isfinite(_logits(res.path, ids)).all()


def test_streaming_memory_is_bounded_by_a_few_tensors(tmp_path):
    """Peak numpy allocation while converting stays within a few of the largest tensor."""
    import tracemalloc

    ck = make_checkpoint(tmp_path / "ck", "llama", hidden=128, heads=4, kv_heads=2, layers=8, seed=2)
    largest = 0
    from ggtool.sources.hf import HFCheckpoint
    c = HFCheckpoint.open(ck)
    total = 0
    for n in c.names():
        nb = int(np.prod(c.shape(n))) * 4
        largest, total = max(largest, nb), total + nb
    c.close()
    tracemalloc.start()
    convert(ck, tmp_path / "m.gguf", "F32", progress=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * largest + 4 * 2**20, (peak, largest, total)
    assert peak < total  # never the whole model at once
