"""Sanity of the tiny-checkpoint generator and of the numpy reference forward pass."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests import reference_forward as rf
from tests import tinymodels as tm

ARCHS = list(tm.ARCHITECTURES)
PROMPT = [3, 17, 250, 9, 41, 100, 7, 77]


def _ckpt(tmp_path, name="m", arch="llama", **kw):
    kw.setdefault("tokenizer", None)
    return tm.make_checkpoint(tmp_path / name, arch, **kw)


# --------------------------------------------------------------------------- generator
@pytest.mark.parametrize("arch", ARCHS)
def test_files_and_config(tmp_path, arch):
    ckpt = _ckpt(tmp_path, arch=arch)
    for f in ("config.json", "generation_config.json", "model.safetensors"):
        assert (ckpt / f).is_file()
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == [tm.ARCHITECTURES[arch]]
    assert cfg["model_type"] == arch
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]) == (64, 2, 4, 2, 192, 512)
    assert cfg["tie_word_embeddings"] is False and cfg["torch_dtype"] == "float32"
    assert ("head_dim" in cfg) == (arch == "qwen3")
    assert ("sliding_window" in cfg) == (arch in ("mistral", "qwen2", "qwen3"))
    if arch.startswith("qwen"):
        assert cfg["use_sliding_window"] is False and cfg["rms_norm_eps"] == 1e-6
    header, _ = tm.read_header(ckpt / "model.safetensors")
    assert header.pop("__metadata__") == {"format": "pt"}
    shapes = tm.tensor_shapes(cfg)
    assert list(header) == list(shapes)                       # HF order, nothing extra
    assert {k: tuple(v["shape"]) for k, v in header.items()} == shapes
    names = set(shapes)
    assert ("model.layers.0.self_attn.q_proj.bias" in names) == (arch == "qwen2")
    assert "model.layers.0.self_attn.o_proj.bias" not in names
    assert ("model.layers.1.self_attn.k_norm.weight" in names) == (arch == "qwen3")
    assert "lm_head.weight" in names


def test_tied_and_bias_options(tmp_path):
    cfg_of = lambda p: json.loads((p / "config.json").read_text())  # noqa: E731
    tied = _ckpt(tmp_path, "t", tied=True)
    assert "lm_head.weight" not in tm.read_header(tied / "model.safetensors")[0]
    assert cfg_of(tied)["tie_word_embeddings"] is True
    biased = _ckpt(tmp_path, "b", arch="qwen3", qkv_bias=True)
    hdr = tm.read_header(biased / "model.safetensors")[0]
    assert cfg_of(biased)["attention_bias"] is True
    assert {"model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.o_proj.bias"} <= set(hdr)
    with pytest.raises(ValueError):
        _ckpt(tmp_path, "q", arch="qwen2", qkv_bias=False)
    with pytest.raises(ValueError):
        _ckpt(tmp_path, "x", arch="gpt2")


@pytest.mark.parametrize("dtype,st", [("float32", "F32"), ("float16", "F16"), ("bfloat16", "BF16")])
def test_dtypes_load_back(tmp_path, dtype, st):
    ref = rf.load_checkpoint(_ckpt(tmp_path, "f32"))[1]
    cfg, t = rf.load_checkpoint(_ckpt(tmp_path, dtype, dtype=dtype))
    assert cfg["torch_dtype"] == dtype
    assert {v["dtype"] for k, v in tm.read_header(tmp_path / dtype / "model.safetensors")[0].items()
            if k != "__metadata__"} == {st}
    for name, x in ref.items():
        if dtype == "float32":
            np.testing.assert_array_equal(t[name], x)
        elif dtype == "float16":
            assert t[name].dtype == np.float16
            np.testing.assert_array_equal(t[name], x.astype(np.float16))
        else:
            y = t[name]
            assert y.dtype == np.float32 and not (y.view(np.uint32) & 0xFFFF).any()
            np.testing.assert_allclose(y, x, rtol=2.0**-8, atol=0)


def test_bf16_rounds_to_nearest_even():
    x = np.array([1.0, 1 + 2.0**-8, 1 + 3 * 2.0**-8, -2.5, 3e38, 1e-40, 0.0], dtype=np.float32)
    bits = tm.bf16_bits(x)
    assert bits[0] == 0x3F80 and bits[1] == 0x3F80 and bits[2] == 0x3F82   # ties to even
    rng = np.random.default_rng(5)
    y = (rng.standard_normal(4000) * 10.0 ** rng.uniform(-5, 5, 4000)).astype(np.float32)
    b = tm.bf16_bits(y).astype(np.uint32)
    dec = lambda u: (u << 16).view(np.float32).astype(np.float64)  # noqa: E731
    err = np.abs(dec(b) - y)
    trunc = (y.view(np.uint32) >> 16).astype(np.uint32)
    for cand in (trunc, trunc + 1):                      # no neighbour is nearer
        assert (err <= np.abs(dec(cand) - y)).all()


def test_shards_match_single_file(tmp_path):
    one = rf.load_checkpoint(_ckpt(tmp_path, "one"))[1]
    ckpt = _ckpt(tmp_path, "three", shards=3)
    files = sorted(p.name for p in ckpt.glob("*.safetensors"))
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(one)
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in one.values())
    three = rf.load_checkpoint(ckpt)[1]
    assert set(three) == set(one)
    for k in one:
        np.testing.assert_array_equal(three[k], one[k])


def test_seeded_is_reproducible(tmp_path):
    a = tm.dir_digest(_ckpt(tmp_path, "a", arch="qwen2", seed=7))
    b = tm.dir_digest(_ckpt(tmp_path, "b", arch="qwen2", seed=7))
    c = tm.dir_digest(_ckpt(tmp_path, "c", arch="qwen2", seed=8))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]


@pytest.mark.parametrize("hidden,heads,kv,head_dim,arch", [
    (256, 4, 2, None, "llama"), (96, 4, 4, None, "mistral"), (96, 3, 1, None, "qwen2"),
    (64, 4, 2, 32, "qwen3"), (64, 4, 1, 24, "llama")])
def test_shapes_on_and_off_256(tmp_path, hidden, heads, kv, head_dim, arch):
    ckpt = _ckpt(tmp_path, arch=arch, hidden=hidden, heads=heads, kv_heads=kv, head_dim=head_dim)
    cfg, t = rf.load_checkpoint(ckpt)
    hd = head_dim or hidden // heads
    assert t["model.layers.0.self_attn.q_proj.weight"].shape == (heads * hd, hidden)
    assert t["model.layers.0.self_attn.k_proj.weight"].shape == (kv * hd, hidden)
    assert t["model.layers.0.mlp.down_proj.weight"].shape == (hidden, 3 * hidden)
    logits = rf.reference_logits(ckpt, PROMPT[:4])
    assert logits.shape == (4, 512) and np.isfinite(logits).all()


def test_logits_are_not_flat(tmp_path):
    logits = rf.reference_logits(_ckpt(tmp_path), PROMPT)
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert (logits.std(axis=1) > 1.5).all()
    assert (top2[:, 1] - top2[:, 0] > 1e-3).all()         # a unique argmax everywhere


# --------------------------------------------------------------------------- reference forward
@pytest.mark.parametrize("arch", ARCHS)
def test_causal(tmp_path, arch):
    model = rf.ReferenceModel.from_dir(_ckpt(tmp_path, arch=arch))
    a = model.logits(PROMPT)
    b = model.logits(PROMPT[:5] + [400, 401, 402])
    np.testing.assert_allclose(b[:5], a[:5], rtol=1e-12, atol=1e-12)
    assert not np.allclose(b[5:], a[5:])
    np.testing.assert_allclose(model.logits(PROMPT[:3]), a[:3], rtol=1e-12, atol=1e-12)


def _repeat_kv_rows(w: np.ndarray, n_kv: int, rep: int) -> np.ndarray:
    """k/v projection rows (n_kv*hd, ...) -> (n_kv*rep*hd, ...): kv head j serves heads j*rep+r."""
    hd = w.shape[0] // n_kv
    return np.repeat(w.reshape(n_kv, hd, *w.shape[1:]), rep, axis=0).reshape(n_kv * rep * hd, *w.shape[1:])


@pytest.mark.parametrize("arch", ARCHS)
def test_gqa_equals_explicit_mha(tmp_path, arch):
    ckpt = _ckpt(tmp_path, arch=arch, heads=4, kv_heads=2)
    gqa = rf.reference_logits(ckpt, PROMPT)
    cfg, t = rf.load_checkpoint(ckpt)
    mha = {k: (_repeat_kv_rows(v, 2, 2) if any(s in k for s in ("k_proj", "v_proj")) else v)
           for k, v in t.items()}
    tm.rewrite_tensors(ckpt, mha, {"num_key_value_heads": 4})
    np.testing.assert_allclose(rf.reference_logits(ckpt, PROMPT), gqa, rtol=1e-10, atol=1e-10)


def test_tied_equals_untied_copy(tmp_path):
    ckpt = _ckpt(tmp_path, tied=True)
    tied = rf.reference_logits(ckpt, PROMPT)
    _, t = rf.load_checkpoint(ckpt)
    t["lm_head.weight"] = t["model.embed_tokens.weight"].copy()
    tm.rewrite_tensors(ckpt, t, {"tie_word_embeddings": False})
    np.testing.assert_array_equal(rf.reference_logits(ckpt, PROMPT), tied)
    t["lm_head.weight"] = t["lm_head.weight"] * 2                       # untied really uses lm_head
    tm.rewrite_tensors(ckpt, t)
    np.testing.assert_allclose(rf.reference_logits(ckpt, PROMPT), 2 * tied, rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [("float16", 5e-3), ("bfloat16", 5e-2)])
def test_half_checkpoint_close_to_float32_twin(tmp_path, dtype, tol):
    full = rf.reference_logits(_ckpt(tmp_path, "f", arch="qwen3"), PROMPT)
    half = rf.reference_logits(_ckpt(tmp_path, "h", arch="qwen3", dtype=dtype), PROMPT)
    rel = np.abs(half - full).max() / np.abs(full).max()
    assert 0 < rel < tol


@pytest.mark.parametrize("arch,kw", [("llama", {"qkv_bias": True}), ("qwen2", {}), ("qwen3", {"tied": True})])
def test_every_tensor_matters(tmp_path, arch, kw):
    cfg, t = rf.load_checkpoint(_ckpt(tmp_path, arch=arch, layers=1, **kw))
    base = rf.ReferenceModel(cfg, t).logits(PROMPT)
    rng = np.random.default_rng(0)
    for name in t:
        changed = dict(t, **{name: t[name] * (1 + 0.3 * rng.standard_normal(t[name].shape)).astype(np.float32)})
        assert not np.allclose(rf.ReferenceModel(cfg, changed).logits(PROMPT), base), name
    with pytest.raises(ValueError, match="does not use"):
        rf.ReferenceModel(cfg, dict(t, **{"model.layers.0.mlp.extra.weight": t["model.norm.weight"]}))


def test_rope_depends_on_relative_position_only():
    inv = rf.inv_freq(16, 10000.0, {"rope_type": "default"})
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 1, 1, 16))

    def rot(x, pos):
        f = pos * inv
        e = np.concatenate([f, f])[None]
        return rf.apply_rope(x, np.cos(e), np.sin(e))[0, 0]

    d1 = rot(q, 5) @ rot(k, 2)
    d2 = rot(q, 105) @ rot(k, 102)
    assert abs(d1 - d2) < 1e-12 and abs(d1 - q[0, 0] @ k[0, 0]) > 1e-3
    # rotate_half layout: dims i and i + 8 form a pair (HF), not 2i and 2i+1 (llama.cpp)
    e = np.zeros(16)
    e[0] = 1.0
    r = rot(e[None, None], 1)
    assert np.nonzero(np.abs(r) > 1e-12)[0].tolist() == [0, 8]


def test_llama3_inv_freq_bands():
    sc = dict(tm.LLAMA3_ROPE_SCALING)
    base = rf.inv_freq(16, 10000.0, {"rope_type": "default"})
    got = rf.inv_freq(16, 10000.0, sc)
    wavelen = 2 * np.pi / base                      # 6.3 ... 19869; bands at 2048 and 8192
    assert (wavelen[:6] < 2048).all() and 2048 <= wavelen[6] <= 8192 and wavelen[7] > 8192
    np.testing.assert_array_equal(got[:6], base[:6])               # high freq: untouched
    assert got[7] == base[7] / 8.0                                 # low freq: / factor
    s = (8192 / wavelen[6] - 1.0) / (4.0 - 1.0)                    # medium: interpolated
    assert got[6] == pytest.approx((1 - s) * base[6] / 8.0 + s * base[6], rel=1e-14)
    lin = rf.inv_freq(16, 10000.0, {"rope_type": "linear", "factor": 4.0})
    np.testing.assert_allclose(lin, base / 4)
    with pytest.raises(NotImplementedError):
        rf.inv_freq(16, 10000.0, {"rope_type": "yarn", "factor": 4.0})


def _naive_logits(model: rf.ReferenceModel, ids) -> np.ndarray:
    """Token-by-token decoding with a KV cache, complex-number RoPE, explicit loops over heads:
    a second formulation of the same HF semantics to check the vectorised one against."""
    hd, half, rep = model.head_dim, model.head_dim // 2, model.n_head // model.n_kv
    cache = [([], []) for _ in model.layers]
    out = []

    def rope(vec, pos):
        z = (vec[:half] + 1j * vec[half:]) * np.exp(1j * pos * model.inv_freq)
        return np.concatenate([z.real, z.imag])

    def norm(x, w):
        return x / np.sqrt((x ** 2).sum() / x.size + model.eps) * w

    for pos, tok in enumerate(ids):
        x = model.embed[tok].copy()
        for L, (ks, vs) in zip(model.layers, cache):
            h = norm(x, L["attn_norm"])
            q = L["wq"] @ h + (L["bq"] if L["bq"] is not None else 0)
            k = L["wk"] @ h + (L["bk"] if L["bk"] is not None else 0)
            v = L["wv"] @ h + (L["bv"] if L["bv"] is not None else 0)
            qh = [q[i * hd:(i + 1) * hd] for i in range(model.n_head)]
            kh = [k[j * hd:(j + 1) * hd] for j in range(model.n_kv)]
            if L["q_norm"] is not None:
                qh = [norm(a, L["q_norm"]) for a in qh]
                kh = [norm(a, L["k_norm"]) for a in kh]
            ks.append([rope(a, pos) for a in kh])
            vs.append([v[j * hd:(j + 1) * hd] for j in range(model.n_kv)])
            heads = []
            for i in range(model.n_head):
                qi = rope(qh[i], pos)
                s = np.array([qi @ ks[t][i // rep] for t in range(pos + 1)]) / np.sqrt(hd)
                p = np.exp(s - s.max())
                p /= p.sum()
                heads.append(sum(p[t] * vs[t][i // rep] for t in range(pos + 1)))
            x = x + L["wo"] @ np.concatenate(heads) + (L["bo"] if L["bo"] is not None else 0)
            h = norm(x, L["ffn_norm"])
            g, u = L["gate"] @ h, L["up"] @ h
            x = x + L["down"] @ (g / (1 + np.exp(-g)) * u)
        out.append(model.lm_head @ norm(x, model.norm))
    return np.array(out)


@pytest.mark.parametrize("arch,kw", [
    ("llama", {"rope_scaling": "llama3", "rope_theta": 500000.0, "heads": 4, "kv_heads": 1}),
    ("qwen2", {"tied": True}),
    ("qwen3", {"head_dim": 24, "kv_heads": 4}),
])
def test_vectorised_matches_naive_decoding(tmp_path, arch, kw):
    model = rf.ReferenceModel.from_dir(_ckpt(tmp_path, arch=arch, **kw))
    np.testing.assert_allclose(model.logits(PROMPT), _naive_logits(model, PROMPT), rtol=1e-10, atol=1e-10)


def test_llama3_scaling_changes_logits(tmp_path):
    plain = rf.reference_logits(_ckpt(tmp_path, "p", head_dim=64, heads=1, kv_heads=1), PROMPT)
    scaled = rf.reference_logits(_ckpt(tmp_path, "s", head_dim=64, heads=1, kv_heads=1,
                                       rope_scaling="llama3"), PROMPT)
    np.testing.assert_allclose(scaled[0], plain[0], rtol=1e-12)      # position 0: no rotation
    assert not np.allclose(scaled[1:], plain[1:])


def test_mistral_sliding_window(tmp_path):
    model = rf.ReferenceModel.from_dir(_ckpt(tmp_path, arch="mistral", layers=1, sliding_window=3))
    a = model.logits(PROMPT[:6])
    b = model.logits([500, 501, 502] + PROMPT[3:6])   # position 5 sees only positions 3, 4, 5
    np.testing.assert_allclose(b[5], a[5], rtol=1e-12)
    assert not np.allclose(b[3], a[3])
    default = rf.ReferenceModel.from_dir(_ckpt(tmp_path, "d", arch="mistral"))
    assert default.windows == [4096, 4096]   # llama.cpp's llama arch ignores it: keep prompts short


def test_rope_parameters_v5_config(tmp_path):
    legacy = rf.reference_logits(_ckpt(tmp_path, "a", rope_scaling="llama3", rope_theta=5e5), PROMPT)
    v5 = _ckpt(tmp_path, "b", config_overrides={
        "rope_theta": None, "rope_scaling": None,
        "rope_parameters": dict(tm.LLAMA3_ROPE_SCALING, rope_theta=5e5)})
    assert "rope_theta" not in json.loads((v5 / "config.json").read_text())
    np.testing.assert_array_equal(rf.reference_logits(v5, PROMPT), legacy)


def test_greedy_tokens(tmp_path):
    ckpt = _ckpt(tmp_path)
    new = rf.greedy_tokens(ckpt, PROMPT[:3], 4)
    logits = rf.reference_logits(ckpt, PROMPT[:3] + new)
    assert new == [int(np.argmax(logits[i])) for i in range(2, 6)]


def test_reference_rejects_bad_ids_and_archs(tmp_path):
    ckpt = _ckpt(tmp_path)
    with pytest.raises(ValueError):
        rf.reference_logits(ckpt, [0, 512])
    cfg, t = rf.load_checkpoint(ckpt)
    with pytest.raises(NotImplementedError):
        rf.ReferenceModel(dict(cfg, architectures=["GPT2LMHeadModel"]), t)


# --------------------------------------------------------------------------- corruption helpers
def test_corrupt_truncate(tmp_path):
    ckpt = _ckpt(tmp_path)
    size = (ckpt / "model.safetensors").stat().st_size
    path = tm.corrupt_truncate(ckpt)
    assert 0 < path.stat().st_size < size
    tm.read_header(path)                                  # header still parses
    with pytest.raises(ValueError, match="outside"):
        rf.read_safetensors(path)
    tm.corrupt_truncate(path, keep_bytes=5)
    with pytest.raises(ValueError):
        rf.read_safetensors(path)


def test_corrupt_header_json(tmp_path):
    ckpt = _ckpt(tmp_path)
    size = (ckpt / "model.safetensors").stat().st_size
    path = tm.corrupt_header_json(ckpt)
    assert path.stat().st_size == size
    with pytest.raises(ValueError, match="JSON"):
        rf.read_safetensors(path)


def test_corrupt_shape(tmp_path):
    ckpt = _ckpt(tmp_path, shards=2)
    cfg = json.loads((ckpt / "config.json").read_text())
    name, old = tm.corrupt_shape(ckpt)
    assert list(tm.tensor_shapes(cfg)[name]) == old
    _, t = rf.load_checkpoint(ckpt)                       # file itself is consistent ...
    assert t[name].shape == tuple(old[::-1])
    with pytest.raises(ValueError, match="shape"):        # ... but disagrees with config.json
        rf.ReferenceModel.from_dir(ckpt)
    tm.corrupt_shape(ckpt, name, (old[0] + 1, old[1]))    # now disagrees with its own offsets
    with pytest.raises(ValueError, match="does not fit"):
        rf.load_checkpoint(ckpt)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_corrupt_nonfinite(tmp_path, dtype, value):
    ckpt = _ckpt(tmp_path, dtype=dtype, shards=2)
    name = "model.layers.1.self_attn.v_proj.weight"
    tm.corrupt_nonfinite(ckpt, name, value, index=7)
    _, t = rf.load_checkpoint(ckpt)
    flat = t[name].reshape(-1)
    assert np.isnan(flat[7]) if np.isnan(value) else flat[7] == value
    assert np.isfinite(np.delete(flat, 7)).all()
    assert all(np.isfinite(v).all() for k, v in t.items() if k != name)


def test_corrupt_drop_tensor(tmp_path):
    ckpt = _ckpt(tmp_path, shards=2)
    name = "model.layers.1.mlp.down_proj.weight"
    tm.corrupt_drop_tensor(ckpt, name)
    _, t = rf.load_checkpoint(ckpt)
    assert name not in t and "model.layers.1.mlp.up_proj.weight" in t
    with pytest.raises(KeyError):
        rf.ReferenceModel.from_dir(ckpt)


def test_corrupt_pickle_only(tmp_path):
    ckpt = _ckpt(tmp_path, shards=2)
    path = tm.corrupt_pickle_only(ckpt)
    assert path.name == "pytorch_model.bin" and path.read_bytes()[:2] == b"PK"
    assert not list(ckpt.glob("*.safetensors")) and not (ckpt / "model.safetensors.index.json").exists()
    assert (ckpt / "config.json").exists()


# --------------------------------------------------------------------------- tokenizer
def _tokenizer_facts(ckpt):
    """(vocab size, bos id, eos id) read with the tokenizers / sentencepiece libraries."""
    tc = json.loads((ckpt / "tokenizer_config.json").read_text())
    if (ckpt / "tokenizer.model").exists():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
        ids = lambda tok: sp.piece_to_id(tok) if tok else None  # noqa: E731
        return sp.vocab_size(), ids(tc["bos_token"]), ids(tc["eos_token"])
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    ids = lambda t: tok.token_to_id(t) if t else None  # noqa: E731
    return tok.get_vocab_size(with_added_tokens=True), ids(tc["bos_token"]), ids(tc["eos_token"])


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "qwen2", "smollm", "spm"])
def test_with_tokenizer(tmp_path, kind):
    pytest.importorskip("tests.tinytokenizers")
    ckpt = tm.make_checkpoint(tmp_path / "m", "qwen2" if kind == "qwen2" else "llama", tokenizer=kind)
    n, bos, eos = _tokenizer_facts(ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    gen = json.loads((ckpt / "generation_config.json").read_text())
    assert cfg["vocab_size"] == n
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (bos, eos) == (gen["bos_token_id"], gen["eos_token_id"])
    assert eos is not None


def test_tokenizer_vocab_padding(tmp_path):
    pytest.importorskip("tests.tinytokenizers")
    ckpt = tm.make_checkpoint(tmp_path / "p", "qwen2", tokenizer="gpt2", vocab=1100)
    n = _tokenizer_facts(ckpt)[0]
    assert n < 1100 and json.loads((ckpt / "config.json").read_text())["vocab_size"] == 1100
    assert rf.reference_logits(ckpt, [0, n - 1]).shape == (2, 1100)
    with pytest.raises(ValueError):
        tm.make_checkpoint(tmp_path / "s", "llama", tokenizer="gpt2", vocab=n - 1)
