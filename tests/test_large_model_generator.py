"""benchmarks/make_large_model.py (the scaling benchmark's checkpoints), at its tiny size:
what it writes converts like every other checkpoint, and llama.cpp runs the result as the
independent numpy forward pass of the checkpoint says it should."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import gguf

from ggtool.convert import convert
from oracles.llamacpp import logits

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("make_large_model", ROOT / "benchmarks" / "make_large_model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(gen, tmp_path_factory):
    from tests.tinytokenizers import make_tokenizer

    root = tmp_path_factory.mktemp("large")
    make_tokenizer("smollm", root / "tok")
    # a shard limit below the model's size: several shards and an index, as the real sizes have
    return gen.make_model(root / "llama-tiny", "tiny", tokenizer_dir=root / "tok", seed=1, shard_bytes=10**6)


def test_files_shapes_and_weights(gen, tiny):
    cfg = json.loads((tiny / "config.json").read_text())
    s = gen.SIZES["tiny"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (s.hidden, s.layers, s.kv_heads)
    assert cfg["torch_dtype"] == "bfloat16" and cfg["tie_word_embeddings"] is False
    index = json.loads((tiny / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((tiny / f).is_file() for f in shards)
    from tests.reference_forward import load_checkpoint

    _, t = load_checkpoint(tiny)
    assert set(t) == set(gen.tensor_shapes(s, cfg["vocab_size"]))
    w = t["model.layers.0.mlp.up_proj.weight"]
    assert w.shape == (s.ffn, s.hidden) and np.isfinite(w).all()
    rows = np.sqrt((w.astype(np.float64) ** 2).mean(axis=1))
    assert rows.max() / rows.min() > 2                       # rows differ in scale
    cols = np.abs(w).max(axis=0)
    assert (cols > 3 * np.median(cols)).sum() >= 1           # a few outlier columns
    # seeded: the same tensor comes out of a second run
    again = np.concatenate(list(gen.tensor_chunks("model.layers.0.mlp.up_proj.weight", w.shape, 1)))
    np.testing.assert_array_equal(gen.bf16_bits(again), np.asarray(w, np.float32).view(np.uint32) >> 16)


def test_converts_and_runs_like_the_reference(tiny, tmp_path, llama_cpp_ok):
    from tests.reference_forward import reference_logits

    out = convert(tiny, tmp_path / "m.gguf", "F32", progress=False).path
    ids = list(np.random.default_rng(0).integers(3, 900, 10))
    ref = reference_logits(tiny, ids)
    got = logits(out, ids)
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) <= 1e-3


def test_q4_k_m_mix_types_and_decode(tiny, tmp_path):
    res = convert(tiny, tmp_path / "q.gguf", "Q4_K_M", rules="llama.cpp", progress=False)
    r = gguf.GGUFReader(res.path)
    kinds = {t.tensor_type.name for t in r.tensors}
    assert {"Q4_K", "Q6_K", "F32"} <= kinds
    for t in r.tensors:
        assert np.isfinite(gguf.quants.dequantize(t.data, t.tensor_type)).all(), t.name
