"""ggtool.tokenizer: the oracle is llama.cpp's own tokenizer, loaded from a vocab-only GGUF we write.

For each tiny trained tokenizer (tests/tinytokenizers.py) and for SmolLM2's tokenizer rebuilt from
its GGUF (ggtool.hub.unpack, the smollm2_checkpoint fixture), llama.cpp must produce the same ids as `tokenizers` /
`sentencepiece` on a varied text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from ggtool.errors import InputError
from ggtool.tokenizer import CHKTXT, add_tokenizer, pre_tokenizer_hash, read_spm_proto

from tests.hf_from_gguf import gguf_fields, read_gguf_kv
from tests.reference_forward import read_safetensors
from tests.tinytokenizers import CHATML, KINDS, USER_TOKENS, make_tokenizer

SMOLLM_HASH = "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"
EXPECTED_PRE = {"gpt2": "gpt-2", "llama3": "llama-bpe", "qwen2": "qwen2", "smollm": "smollm", "spm": "default"}

PLAIN = (
    "Alice was beginning to get very tired of sitting by her sister on the bank.\n"
    "  Café naïve résumé — «quoted» 'single' \"double\" I've they'll WE'RE you'D\n"
    "日本語のテキスト、中文字符和한국어 텍스트. Ünïcödé Ελληνικά русский язык\n"
    "emoji: 🚀🦙😶\u200d🌫️ ✅ flags 🇫🇷 ok\n"
    "digits: 1 12 123 1234 1234567 3.14159 1,000,000 0x1F 2024-06-01\n"
    "whitespace:   three    four\t\ttabs \t mixed\n\n\n  \n"
    "def f(x):\n    return x ** 2  # comment\n\tif (a && b) { c[i] += 1; }\n"
    "   trailing spaces   "
)
SPECIAL = (
    "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\n"
    "<think>hmm 42</think> Fine!<|im_end|>\n"
)
TEXTS = [PLAIN, SPECIAL + PLAIN, "", " ", "\n\n", "a", "1234567890", "<|im_end|><|im_end|>x"]


# ------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """kind -> folder with that kind's tokenizer files (trained once per module)."""
    made = {}

    def get(kind):
        if kind not in made:
            d = tmp_path_factory.mktemp(f"tok_{kind}")
            make_tokenizer(kind, d)
            made[kind] = d
        return made[kind]

    return get


def write_vocab_gguf(model_dir: Path, path: Path, vocab_size: int | None = None):
    """A vocab-only llama GGUF: minimal llama.* hparams + add_tokenizer's keys, no tensors."""
    hparams = {"vocab_size": vocab_size} if vocab_size else {}
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(512)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    summary = add_tokenizer(w, model_dir, hparams)
    w.add_vocab_size(summary.n_vocab)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return summary


def hf_ids(model_dir: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids


def spm_ids(model_dir: Path, text: str, add_bos: bool) -> list[int]:
    """SentencePiece ids with llama.cpp's (= HF legacy Llama) convention for added tokens: the text
    is cut at control and user-defined tokens, and each text piece is encoded on its own (so it
    gets the dummy-prefix space, as after BOS)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    cut = sorted((sp.id_to_piece(i) for i in range(sp.vocab_size())
                  if sp.is_control(i) and sp.id_to_piece(i) not in ("<s>", "</s>")) , key=len)
    cut = cut[::-1] + sorted(USER_TOKENS, key=len, reverse=True)
    ids = [sp.bos_id()] if add_bos else []
    rest = text
    while rest:
        hits = [(rest.find(t), -len(t), t) for t in cut if t in rest]
        if not hits:
            ids += sp.encode(rest)
            break
        pos, _, tok = min(hits)
        if pos:
            ids += sp.encode(rest[:pos])
        ids.append(sp.piece_to_id(tok))
        rest = rest[pos + len(tok):]
    return ids


def read_kv(path: Path) -> dict:
    return gguf_fields(gguf.GGUFReader(str(path)))


@pytest.fixture(scope="module")
def smollm_tok(smollm2_checkpoint, smollm2_gguf):
    """(SmolLM2's checkpoint folder with tokenizer.json + tokenizer_config.json rebuilt from its
    GGUF by ggtool.hub.unpack, the original GGUF's metadata)."""
    return smollm2_checkpoint, read_gguf_kv(smollm2_gguf)


# ------------------------------------------------------------------ tiny tokenizers, no llama.cpp

@pytest.mark.parametrize("kind", KINDS)
def test_tiny_tokenizer_is_small_and_real(kind, tiny):
    d = tiny(kind)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == CHATML
    if kind == "spm":
        pieces, scores, types, prefix = read_spm_proto((d / "tokenizer.model").read_bytes())
        assert 500 <= len(pieces) <= 2000 and prefix is True
        assert types.count(gguf.TokenType.BYTE) == 256
    else:
        tj = json.loads((d / "tokenizer.json").read_text())
        assert 500 <= len(tj["model"]["vocab"]) <= 2000 and len(tj["model"]["merges"]) > 400
        assert hf_ids(d, "Alice") != []


@pytest.mark.parametrize("kind", KINDS)
def test_keys_round_trip(kind, tiny, tmp_path):
    """Every key read back through GGUFReader equals what the tokenizer library itself says."""
    d = tiny(kind)
    summ = write_vocab_gguf(d, tmp_path / "v.gguf")
    kv = read_kv(tmp_path / "v.gguf")
    assert kv["tokenizer.ggml.pre"] == EXPECTED_PRE[kind] == summ.pre
    assert kv["tokenizer.chat_template"] == CHATML
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == summ.n_vocab
    T = gguf.TokenType
    if kind == "spm":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
        assert kv["tokenizer.ggml.model"] == "llama"
        assert tokens == [sp.id_to_piece(i) for i in range(sp.vocab_size())]
        np.testing.assert_array_equal(np.float32(kv["tokenizer.ggml.scores"]),
                                      np.float32([sp.get_score(i) for i in range(sp.vocab_size())]))
        for i in range(sp.vocab_size()):
            want = (T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i) else
                    T.BYTE if sp.is_byte(i) else T.USER_DEFINED if sp.id_to_piece(i) in USER_TOKENS
                    else T.NORMAL)
            assert types[i] == want, (i, tokens[i])
        assert kv["tokenizer.ggml.add_space_prefix"] is True
        assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
        assert kv["tokenizer.ggml.unknown_token_id"] == 0
        assert kv["tokenizer.ggml.eot_token_id"] == sp.piece_to_id("<|im_end|>")
        assert kv["tokenizer.ggml.add_bos_token"] is True
    else:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        tj = json.loads((d / "tokenizer.json").read_text())
        assert kv["tokenizer.ggml.model"] == "gpt2"
        assert tokens == [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
        assert kv["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m
                                               for m in tj["model"]["merges"]]
        for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
            assert types[tok.token_to_id(t)] == T.CONTROL
        for t in USER_TOKENS:
            assert types[tok.token_to_id(t)] == T.USER_DEFINED
        assert types.count(T.NORMAL) == len(tj["model"]["vocab"]) - sum(
            1 for a in tj["added_tokens"] if a["content"] in tj["model"]["vocab"])
        assert kv["tokenizer.ggml.eos_token_id"] == tok.token_to_id("<|im_end|>")
        assert kv["tokenizer.ggml.padding_token_id"] == tok.token_to_id("<|endoftext|>")
        assert kv["tokenizer.ggml.add_bos_token"] is (kind == "llama3")
        if kind == "llama3":
            assert kv["tokenizer.ggml.bos_token_id"] == tok.token_to_id("<|begin_of_text|>")
    assert kv["tokenizer.ggml.add_eos_token"] is False


def test_spm_added_tokens_json(tiny, tmp_path):
    """added_tokens.json extends a SentencePiece vocab; tokenizer_config's added_tokens_decoder
    marks special ones as control tokens."""
    d = tmp_path / "m"
    shutil.copytree(tiny("spm"), d)
    n = len(read_spm_proto((d / "tokenizer.model").read_bytes())[0])
    (d / "added_tokens.json").write_text(json.dumps({"<tool>": n, "<|eot_id|>": n + 1}))
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"] = {str(n + 1): {"content": "<|eot_id|>", "special": True}}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    summ = write_vocab_gguf(d, tmp_path / "v.gguf", vocab_size=n + 3)
    kv = read_kv(tmp_path / "v.gguf")
    assert kv["tokenizer.ggml.tokens"][n:] == ["<tool>", "<|eot_id|>", f"[PAD{n + 2}]"]
    T = gguf.TokenType
    assert kv["tokenizer.ggml.token_type"][n:] == [T.USER_DEFINED, T.CONTROL, T.UNUSED]
    assert summ.special["eot"] == n + 1 == kv["tokenizer.ggml.eot_token_id"]


def test_non_spm_tokenizer_model_falls_back_to_json(tiny, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny("qwen2"), d)
    (d / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")   # tiktoken-style ranks, not protobuf
    assert write_vocab_gguf(d, tmp_path / "v.gguf").pre == "qwen2"


def test_vocab_padded_to_config_size(tiny, tmp_path):
    d = tiny("gpt2")
    n = len(json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]) + len(USER_TOKENS)
    summ = write_vocab_gguf(d, tmp_path / "v.gguf", vocab_size=n + 6)
    kv = read_kv(tmp_path / "v.gguf")
    assert summ.n_vocab == n + 6
    assert kv["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 6)]
    assert kv["tokenizer.ggml.token_type"][n:] == [gguf.TokenType.UNUSED] * 6
    with pytest.raises(InputError, match="vocab_size is 10"):
        write_vocab_gguf(d, tmp_path / "w.gguf", vocab_size=10)


def test_special_ids_from_configs(tiny, tmp_path):
    """No special tokens in tokenizer_config: ids come from generation_config (eos list) / config."""
    d = tmp_path / "m"
    shutil.copytree(tiny("smollm"), d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    for k in ("bos_token", "eos_token", "pad_token", "add_bos_token"):
        cfg.pop(k)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0], "bos_token_id": 1}))
    w = gguf.GGUFWriter(str(tmp_path / "v.gguf"), "llama")
    summ = add_tokenizer(w, d, {"vocab_size": 1100, "pad_token_id": 0})
    assert summ.special == {"bos": 1, "eos": 2, "pad": 0}
    assert summ.add_bos is False   # no TemplateProcessing, no add_bos_token


def test_add_bos_inferred_from_post_processor(tiny, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny("llama3"), d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    del cfg["add_bos_token"]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert write_vocab_gguf(d, tmp_path / "v.gguf").add_bos is True


def test_named_chat_templates(tiny, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny("gpt2"), d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "default", "template": CHATML},
                            {"name": "tool_use", "template": "{{x}}"}]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    write_vocab_gguf(d, tmp_path / "v.gguf")
    kv = read_kv(tmp_path / "v.gguf")
    assert kv["tokenizer.chat_template"] == CHATML
    assert kv["tokenizer.chat_template.tool_use"] == "{{x}}"
    assert kv["tokenizer.chat_templates"] == ["tool_use"]


def test_merges_in_list_form(tiny, tmp_path):
    """Newer tokenizers save merges as [a, b]; older ones as "a b". Both give the same GGUF."""
    d = tmp_path / "m"
    shutil.copytree(tiny("gpt2"), d)
    tj = json.loads((d / "tokenizer.json").read_text())
    as_list = isinstance(tj["model"]["merges"][0], list)
    tj["model"]["merges"] = [(" ".join(m) if as_list else m.split(" ")) for m in tj["model"]["merges"]]
    (d / "tokenizer.json").write_text(json.dumps(tj))
    write_vocab_gguf(tiny("gpt2"), tmp_path / "a.gguf")
    write_vocab_gguf(d, tmp_path / "b.gguf")
    merges = [read_kv(tmp_path / f)["tokenizer.ggml.merges"] for f in ("a.gguf", "b.gguf")]
    assert merges[0] == merges[1] and len(merges[0]) > 400


def test_unknown_pre_tokenizer_is_a_clear_error(tiny, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny("llama3"), d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|[^\w\s]+|\s+"
    (d / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(InputError, match="unknown BPE pre-tokenizer") as e:
        write_vocab_gguf(d, tmp_path / "v.gguf")
    assert "llama-bpe" in e.value.hint and "smollm" in e.value.hint


def test_fast_kv_reader_agrees_with_gguf_reader(tiny, tmp_path):
    """tests.hf_from_gguf.read_gguf_kv (used on the 49k-token SmolLM2 vocab) == gguf-py's reader."""
    for kind in ("smollm", "spm"):
        write_vocab_gguf(tiny(kind), tmp_path / f"{kind}.gguf")
        assert read_gguf_kv(tmp_path / f"{kind}.gguf") == read_kv(tmp_path / f"{kind}.gguf")


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no tokenizer.json or tokenizer.model"):
        add_tokenizer(gguf.GGUFWriter(str(tmp_path / "v.gguf"), "llama"), tmp_path, {})


# ------------------------------------------------------------------ llama.cpp is the oracle

@pytest.mark.parametrize("kind", KINDS)
def test_llamacpp_tokenizes_like_the_library(kind, tiny, tmp_path, llama_cpp_ok):
    from ggtool.llamacpp.runtime import Model

    d = tiny(kind)
    write_vocab_gguf(d, tmp_path / "v.gguf")
    m = Model(tmp_path / "v.gguf", vocab_only=True)
    try:
        for text in TEXTS:
            if kind == "spm":
                if SPECIAL not in text:   # the library on the whole text, no added tokens involved
                    import sentencepiece as spm

                    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
                    assert m.tokenize(text, add_special=False, parse_special=False) == sp.encode(text)
                want = spm_ids(d, text, add_bos=True)
            else:
                want = hf_ids(d, text)
            assert m.tokenize(text, add_special=True, parse_special=True) == want, repr(text[:80])
    finally:
        m.close()


@pytest.mark.parametrize("kind,wrong", [("gpt2", "smollm"), ("llama3", "qwen2"), ("qwen2", "gpt-2"),
                                        ("smollm", "llama-bpe")])
def test_llamacpp_comparison_has_teeth(kind, wrong, tiny, tmp_path, monkeypatch, llama_cpp_ok):
    """With another pre-tokenizer name llama.cpp tokenizes differently: the texts and the tiny
    vocabs are discriminating enough for the equality above to mean something."""
    import ggtool.tokenizer
    from ggtool.llamacpp.runtime import Model

    d = tiny(kind)
    monkeypatch.setattr(ggtool.tokenizer, "pre_from_structure", lambda tj: wrong)
    write_vocab_gguf(d, tmp_path / "v.gguf")
    m = Model(tmp_path / "v.gguf", vocab_only=True)
    try:
        assert m.tokenize(PLAIN) != hf_ids(d, PLAIN)
    finally:
        m.close()


def test_llamacpp_tokenizes_padded_vocab(tiny, tmp_path, llama_cpp_ok):
    from ggtool.llamacpp.runtime import Model

    d = tiny("qwen2")
    write_vocab_gguf(d, tmp_path / "v.gguf", vocab_size=1024)
    m = Model(tmp_path / "v.gguf", vocab_only=True)
    try:
        assert m.tokenize(SPECIAL + PLAIN) == hf_ids(d, SPECIAL + PLAIN)
    finally:
        m.close()


# ------------------------------------------------------------------ SmolLM2 rebuilt from its GGUF

def test_smollm2_rebuilt_tokenizer_hash(smollm_tok):
    d, _ = smollm_tok
    assert pre_tokenizer_hash(d / "tokenizer.json") == SMOLLM_HASH


def test_smollm2_keys_match_original_gguf(smollm_tok, tmp_path):
    d, orig = smollm_tok
    summ = write_vocab_gguf(d, tmp_path / "v.gguf")
    assert (summ.pre, summ.pre_source) == ("smollm", "hash")
    assert summ.n_merges == len(orig["tokenizer.ggml.merges"])
    kv = read_gguf_kv(tmp_path / "v.gguf")
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
        assert kv[key] == orig[key], key


def test_smollm2_llamacpp_matches_rebuilt_tokenizer(smollm_tok, smollm2_gguf, tmp_path, llama_cpp_ok):
    from ggtool.llamacpp.runtime import Model

    d, _ = smollm_tok
    write_vocab_gguf(d, tmp_path / "v.gguf")
    ours, orig = Model(tmp_path / "v.gguf", vocab_only=True), Model(smollm2_gguf, vocab_only=True)
    try:
        for text in TEXTS + [CHKTXT]:
            want = hf_ids(d, text)
            assert ours.tokenize(text) == want, repr(text[:80])
            assert orig.tokenize(text) == want, repr(text[:80])
    finally:
        ours.close()
        orig.close()


@pytest.mark.slow
def test_smollm2_checkpoint_logits_match_llamacpp(smollm2_gguf, smollm2_checkpoint, llama_cpp_ok):
    """The rebuilt F32 checkpoint, run by an HF-convention numpy forward pass (rotate_half RoPE on
    un-permuted q/k), gives the logits llama.cpp gives for the original GGUF."""
    from ggtool.llamacpp.runtime import Model

    d = smollm2_checkpoint
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True and cfg["num_key_value_heads"] == 3
    ids = hf_ids(d, "The capital of France is Paris. The capital of Italy is")
    ours = numpy_llama_forward(read_safetensors(d / "model.safetensors"), cfg, ids)
    m = Model(smollm2_gguf, n_ctx=64)
    try:
        ref = m.logits(ids)
    finally:
        m.close()
    assert ours.shape == ref.shape
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, ref)]
    # q/k left in llama.cpp's row order gives min corr ~0.82; the right order >= 0.998 (Q4_1 x Q8 noise)
    assert min(corr) > 0.995, corr
    assert np.mean(ours.argmax(-1) == ref.argmax(-1)) >= 0.9


def numpy_llama_forward(st: dict, cfg: dict, ids: list[int]) -> np.ndarray:
    """(len(ids), vocab) logits of LlamaForCausalLM, written from the HF modeling code's conventions."""
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh  # HF LlamaConfig's default
    eps, T = cfg["rms_norm_eps"], len(ids)

    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    def rope(x):  # (T, heads, hd), HF rotate_half convention
        inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = np.arange(T)[:, None] * inv[None, :]
        ang = np.concatenate([ang, ang], -1)[:, None]                 # (T, 1, hd)
        cos, sin = np.cos(ang), np.sin(ang)
        rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], -1)
        return x * cos + rot * sin

    emb = np.asarray(st["model.embed_tokens.weight"], dtype=np.float64)
    x = emb[ids]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = {k.split(f"layers.{i}.", 1)[1]: np.asarray(v, dtype=np.float64)
             for k, v in st.items() if f".layers.{i}." in k}
        h = norm(x, p["input_layernorm.weight"])
        q = rope((h @ p["self_attn.q_proj.weight"].T).reshape(T, nh, hd))
        k = rope((h @ p["self_attn.k_proj.weight"].T).reshape(T, nkv, hd))
        v = (h @ p["self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", a, v).reshape(T, nh * hd)
        x = x + o @ p["self_attn.o_proj.weight"].T
        h = norm(x, p["post_attention_layernorm.weight"])
        g = h @ p["mlp.gate_proj.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ p["mlp.up_proj.weight"].T)) @ p["mlp.down_proj.weight"].T
    x = norm(x, np.asarray(st["model.norm.weight"], dtype=np.float64))
    return (x @ emb.T).astype(np.float32)
