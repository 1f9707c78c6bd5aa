"""Seeded tiny Hugging Face checkpoints (config.json, tokenizer, safetensors) for every family
ggtool converts, plus `corrupt_*` helpers that damage one in a known way.

    ckpt = make_checkpoint(tmp_path / "m", "qwen3", hidden=64, dtype="bfloat16", shards=2)

Weights are random but scaled so a forward pass stays sane: embeddings N(0, 1), every
projection N(0, weight_scale^2 / fan_in), lm_head 3x that (logit std ~3; tied: ~sqrt(hidden)),
norm weights 1 + N(0, norm_noise^2), biases N(0, 0.2^2).
Each tensor draws from its own generator seeded by (seed, crc32(name)), so a tensor's values do
not depend on dtype, shards, tying or the other tensors. Safetensors are written by our own
tiny writer (no torch, no safetensors package); tests/reference_forward.py reads them back.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_ST_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
             np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int8): "I8",
             np.dtype(np.uint8): "U8", np.dtype(np.uint16): "BF16"}  # uint16 arrays are bf16 bits
LLAMA3_ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
_NOT_GIVEN = object()


# --------------------------------------------------------------------------- safetensors
def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even (torch's .to(bfloat16))."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> int:
    """Write `tensors` (name -> array, uint16 meaning BF16 bits) in the given order.

    8-byte little-endian header length, JSON header padded with spaces to 8 bytes, then the
    tensors back to back. Returns the number of data bytes."""
    header: dict = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    offset = 0
    blobs = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for b in blobs:
            f.write(b)
    return offset


def read_header(path: Path) -> tuple[dict, int]:
    """(header dict, byte offset where data starts) of a safetensors file, no validation."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)), 8 + n


def _rewrite(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data)


# --------------------------------------------------------------------------- shapes
def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> numpy shape, in HF's order, for a config written by make_checkpoint."""
    arch = config["architectures"][0]
    h, n_layer = config["hidden_size"], config["num_hidden_layers"]
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // n_head
    ff, vocab = config["intermediate_size"], config["vocab_size"]
    bias_qkv = arch == "Qwen2ForCausalLM" or config.get("attention_bias", False)
    bias_o = arch != "Qwen2ForCausalLM" and config.get("attention_bias", False)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        for proj, rows in (("q", n_head * hd), ("k", n_kv * hd), ("v", n_kv * hd)):
            shapes[p + f"self_attn.{proj}_proj.weight"] = (rows, h)
            if bias_qkv:
                shapes[p + f"self_attn.{proj}_proj.bias"] = (rows,)
        shapes[p + "self_attn.o_proj.weight"] = (h, n_head * hd)
        if bias_o:
            shapes[p + "self_attn.o_proj.bias"] = (h,)
        if arch == "Qwen3ForCausalLM":
            shapes[p + "self_attn.q_norm.weight"] = (hd,)
            shapes[p + "self_attn.k_norm.weight"] = (hd,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (ff, h)
        shapes[p + "mlp.up_proj.weight"] = (ff, h)
        shapes[p + "mlp.down_proj.weight"] = (h, ff)
    shapes["model.norm.weight"] = (h,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def _random_tensor(name: str, shape: tuple[int, ...], seed: int, weight_scale: float,
                   norm_noise: float) -> np.ndarray:
    """float32 values for one tensor, from its own generator."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    z = rng.standard_normal(shape, dtype=np.float32)
    if name.endswith("norm.weight"):                       # RMSNorm gains: ~1
        return np.float32(1.0) + np.float32(norm_noise) * z
    if name.endswith(".bias"):
        return np.float32(0.2) * z
    if name == "model.embed_tokens.weight":
        return z
    if name == "lm_head.weight":                           # logits ~N(0, 3^2): clear argmax
        return np.float32(3.0 * weight_scale / np.sqrt(shape[1])) * z
    return np.float32(weight_scale / np.sqrt(shape[1])) * z  # (out, in): 1/sqrt(fan_in)


# --------------------------------------------------------------------------- tokenizer ids
def _token_id(tok_dir: Path, token) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    if not token:
        return None
    tj = tok_dir / "tokenizer.json"
    if tj.exists():
        data = json.loads(tj.read_text())
        for t in data.get("added_tokens") or []:
            if t.get("content") == token:
                return int(t["id"])
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict) and token in vocab:
            return int(vocab[token])
        if isinstance(vocab, list):                         # Unigram: [[piece, score], ...]
            for i, (piece, _score) in enumerate(vocab):
                if piece == token:
                    return i
    tc = tok_dir / "tokenizer_config.json"
    if tc.exists():
        for k, v in (json.loads(tc.read_text()).get("added_tokens_decoder") or {}).items():
            if v.get("content") == token:
                return int(k)
    return None


def special_token_ids(tok_dir: Path) -> tuple[int | None, int | None]:
    """(bos_id, eos_id) of the tokenizer in tok_dir, None where it has none."""
    tok_dir = Path(tok_dir)
    tc = tok_dir / "tokenizer_config.json"
    cfg = json.loads(tc.read_text()) if tc.exists() else {}
    bos = _token_id(tok_dir, cfg.get("bos_token"))
    eos = _token_id(tok_dir, cfg.get("eos_token"))
    model = tok_dir / "tokenizer.model"
    if (bos is None or eos is None) and model.exists():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model))
        bos = bos if bos is not None else (sp.bos_id() if sp.bos_id() >= 0 else None)
        eos = eos if eos is not None else (sp.eos_id() if sp.eos_id() >= 0 else None)
    return bos, eos


# --------------------------------------------------------------------------- config
def _config(arch: str, *, hidden, layers, heads, kv_heads, intermediate, vocab, tied, dtype,
            rope_theta, rope_scaling, head_dim, qkv_bias, max_pos, rms_norm_eps, sliding_window,
            bos, eos) -> dict:
    qwen = arch in ("qwen2", "qwen3")
    cfg = {
        "architectures": [ARCHITECTURES[arch]],
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": intermediate,
        "max_position_embeddings": max_pos,
        "model_type": arch,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": rms_norm_eps if rms_norm_eps is not None else (1e-6 if qwen else 1e-5),
        "rope_scaling": rope_scaling,
        "rope_theta": rope_theta,
        "tie_word_embeddings": tied,
        "torch_dtype": dtype,
        "transformers_version": "4.51.0",
        "use_cache": True,
        "vocab_size": vocab,
    }
    if arch == "llama":
        cfg.update(attention_bias=bool(qkv_bias), mlp_bias=False, pretraining_tp=1)
    if arch == "qwen3":
        cfg["attention_bias"] = bool(qkv_bias)
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    if arch == "mistral":
        cfg["sliding_window"] = sliding_window
    if qwen:   # Qwen2.5 / Qwen3 ship the window but keep it off
        cfg.update(use_sliding_window=False, max_window_layers=layers,
                   sliding_window=sliding_window if arch == "qwen2" else None)
    return dict(sorted(cfg.items()))


# --------------------------------------------------------------------------- generator
def make_checkpoint(out_dir, arch: str = "llama", *, hidden: int = 64, layers: int = 2,
                    heads: int = 4, kv_heads: int = 2, intermediate: int | None = None,
                    vocab: int | None = None, tied: bool = False, dtype: str = "float32",
                    shards: int = 1, seed: int = 0, tokenizer: str | None = "gpt2",
                    rope_theta: float = 10000.0, rope_scaling: dict | str | None = None,
                    head_dim: int | None = None, qkv_bias: bool | None = None,
                    max_pos: int = 2048, weight_scale: float = 1.0, norm_noise: float = 0.1,
                    rms_norm_eps: float | None = None, sliding_window=_NOT_GIVEN,
                    config_overrides: dict | None = None, chat_template=_NOT_GIVEN,
                    tokenizer_config: dict | None = None) -> Path:
    """Write a tiny HF checkpoint into out_dir (created) and return out_dir as a Path.

    arch: llama | mistral | qwen2 | qwen3. intermediate defaults to 3 * hidden. vocab defaults
    to the tokenizer's size (a larger vocab pads the embedding like Qwen does); with
    tokenizer=None no tokenizer files are written and vocab defaults to 512. head_dim is written
    to config.json when given (qwen3: always, default hidden // heads). qkv_bias: None = the
    family's own (qwen2 q/k/v biases; others none); True on llama/qwen3 sets attention_bias,
    which in HF puts a bias on q, k, v AND o_proj. rope_scaling: a dict, or "llama3" for
    LLAMA3_ROPE_SCALING. sliding_window: mistral default 4096, qwen2 default max_pos (unused,
    use_sliding_window=false). config_overrides: merged into config.json last (value None
    deletes a key), e.g. to write a transformers-v5 style `rope_parameters`. chat_template: the
    tokenizer_config.json chat_template (None removes it; default: the tokenizer's ChatML);
    tokenizer_config: more keys merged into tokenizer_config.json (e.g. bos_token, eos_token).
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch {arch!r} not in {sorted(ARCHITECTURES)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not in {sorted(DTYPES)}")
    if heads % kv_heads:
        raise ValueError(f"heads {heads} is not a multiple of kv_heads {kv_heads}")
    if head_dim is None and hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}; pass head_dim")
    if qkv_bias is None:
        qkv_bias = arch == "qwen2"
    if arch == "qwen2" and not qkv_bias:
        raise ValueError("Qwen2 always has q/k/v biases in HF (bias=True is hard-coded)")
    if arch == "mistral" and qkv_bias:
        raise ValueError("Mistral has no attention_bias option in HF")
    if arch == "qwen3" and head_dim is None:
        head_dim = hidden // heads
    if (head_dim or hidden // heads) % 2:
        raise ValueError("head_dim must be even for RoPE")
    if rope_scaling == "llama3":
        rope_scaling = dict(LLAMA3_ROPE_SCALING)
    if sliding_window is _NOT_GIVEN:
        sliding_window = 4096 if arch == "mistral" else max_pos
    intermediate = intermediate or 3 * hidden

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bos, eos = 1, 2
    if tokenizer is not None:
        from tests.tinytokenizers import make_tokenizer

        n_tok = int(make_tokenizer(tokenizer, out))
        if vocab is None:
            vocab = n_tok
        elif vocab < n_tok:
            raise ValueError(f"vocab {vocab} is smaller than the {tokenizer} tokenizer's {n_tok} tokens")
        if chat_template is not _NOT_GIVEN or tokenizer_config:
            tc_path = out / "tokenizer_config.json"
            tc = json.loads(tc_path.read_text(encoding="utf-8"))
            tc.update(tokenizer_config or {})
            if chat_template is None:
                tc.pop("chat_template", None)
            elif chat_template is not _NOT_GIVEN:
                tc["chat_template"] = chat_template
            tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        bos, eos = special_token_ids(out)
    vocab = vocab or 512

    config = _config(arch, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                     intermediate=intermediate, vocab=vocab, tied=tied, dtype=dtype,
                     rope_theta=rope_theta, rope_scaling=rope_scaling, head_dim=head_dim,
                     qkv_bias=qkv_bias, max_pos=max_pos, rms_norm_eps=rms_norm_eps,
                     sliding_window=sliding_window, bos=bos, eos=eos)
    shapes = tensor_shapes(config)   # before overrides: they may rename/remove fields
    for k, v in (config_overrides or {}).items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"_from_model_config": True, "bos_token_id": bos, "eos_token_id": eos,
           "transformers_version": config.get("transformers_version", "4.51.0")}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")

    tensors = {}
    for name, shape in shapes.items():
        x = _random_tensor(name, shape, seed, weight_scale, norm_noise)
        if dtype == "float16":
            x = x.astype(np.float16)
        elif dtype == "bfloat16":
            x = bf16_bits(x)
        tensors[name] = x
    _write_weights(out, tensors, shards)
    return out


def _write_weights(out: Path, tensors: dict[str, np.ndarray], shards: int) -> None:
    for old in list(out.glob("*.safetensors")) + [out / "model.safetensors.index.json"]:
        old.unlink(missing_ok=True)
    if shards <= 1:
        write_safetensors(out / "model.safetensors", tensors)
        return
    names = list(tensors)
    if shards > len(names):
        raise ValueError(f"shards {shards} > number of tensors {len(names)}")
    # contiguous groups of roughly equal bytes, every shard non-empty
    sizes = np.array([tensors[n].nbytes for n in names], dtype=np.float64)
    cum = np.cumsum(sizes)
    cuts = [int(np.searchsorted(cum, cum[-1] * k / shards)) for k in range(1, shards)]
    bounds, prev = [0], 0
    for k, c in enumerate(cuts, start=1):
        c = min(max(c, prev + 1), len(names) - (shards - k))
        bounds.append(c)
        prev = c
    bounds.append(len(names))
    weight_map, total = {}, 0
    for k in range(shards):
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[bounds[k]:bounds[k + 1]]}
        total += write_safetensors(out / fname, part)
        weight_map.update({n: fname for n in part})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def rewrite_tensors(ckpt_dir, tensors: dict[str, np.ndarray], config_updates: dict | None = None,
                    shards: int = 1) -> Path:
    """Replace a checkpoint's weights with `tensors` (same conventions as write_safetensors),
    optionally updating config.json; for tests that build a variant of a generated model."""
    ckpt = Path(ckpt_dir)
    if config_updates:
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg.update(config_updates)
        (ckpt / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    _write_weights(ckpt, tensors, shards)
    return ckpt


# --------------------------------------------------------------------------- more families
# Gemma 2/3, Phi-3, Mixtral and Qwen3-MoE: checked against transformers (tests/test_families.py),
# not against tests/reference_forward.py, so they live beside ARCHITECTURES, not in it.
FAMILY_ARCHITECTURES = {
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen3moe": "Qwen3MoeForCausalLM",
}
FAMILY_MODEL_TYPES = {"gemma2": "gemma2", "gemma3": "gemma3_text", "phi3": "phi3",
                      "mixtral": "mixtral", "qwen3moe": "qwen3_moe"}
FAMILY_TOKENIZERS = {"gemma2": "gemma", "gemma3": "gemma", "phi3": "phi3", "mixtral": "spm",
                     "qwen3moe": "qwen2"}


def family_config(arch: str, *, hidden: int, layers: int, heads: int, kv_heads: int,
                  head_dim: int | None, intermediate: int, vocab: int, tied: bool, bos, eos,
                  experts: int = 8, experts_used: int = 2, expert_ff: int | None = None,
                  max_pos: int = 4096) -> dict:
    """config.json of a tiny model of a family with its quirks on (see make_family_checkpoint)."""
    hd = head_dim or hidden // heads
    cfg = {
        "architectures": [FAMILY_ARCHITECTURES[arch]], "model_type": FAMILY_MODEL_TYPES[arch],
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "intermediate_size": intermediate, "vocab_size": vocab,
        "max_position_embeddings": max_pos, "tie_word_embeddings": tied, "torch_dtype": "float32",
        "bos_token_id": bos, "eos_token_id": eos, "attention_dropout": 0.0, "use_cache": True,
        "initializer_range": 0.02, "transformers_version": "4.57.6",
    }
    if arch in ("gemma2", "gemma3"):
        cfg.update(head_dim=hd, query_pre_attn_scalar=hd, hidden_activation="gelu_pytorch_tanh",
                   rms_norm_eps=1e-6, attention_bias=False, pad_token_id=0, sliding_window=4)
    if arch == "gemma2":   # every other layer slides; both soft-caps on and biting
        cfg.update(rope_theta=10000.0, attn_logit_softcapping=10.0, final_logit_softcapping=30.0)
    if arch == "gemma3":   # 2 of every 3 layers slide; local/global rope bases; linear scaling
        cfg.update(rope_theta=1_000_000.0, rope_local_base_freq=10000.0, sliding_window_pattern=3,
                   rope_scaling={"rope_type": "linear", "factor": 8.0}, final_logit_softcapping=25.0,
                   attn_logit_softcapping=None)
    if arch == "phi3":     # LongRoPE (original context 256: llama.cpp pads n_ctx to 256), window
                           # larger than the test prompts (llama.cpp does not apply it)
        half = int(0.75 * hidden) // heads // 2
        r = np.random.default_rng(7)
        cfg.update(hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0, partial_rotary_factor=0.75,
                   original_max_position_embeddings=256, sliding_window=512, resid_pdrop=0.0,
                   embd_pdrop=0.0, attention_bias=False, pad_token_id=None,
                   rope_scaling={"type": "longrope",
                                 "long_factor": [round(float(v), 4) for v in 1 + 3 * r.random(half)],
                                 "short_factor": [round(float(v), 4) for v in 1 + 0.2 * r.random(half)]})
    if arch == "mixtral":
        cfg.update(hidden_act="silu", rms_norm_eps=1e-5, rope_theta=1e6, num_local_experts=experts,
                   num_experts_per_tok=experts_used, sliding_window=None, router_aux_loss_coef=0.02,
                   output_router_logits=False, router_jitter_noise=0.0)
    if arch == "qwen3moe":
        cfg.update(hidden_act="silu", rms_norm_eps=1e-6, rope_theta=1e6, head_dim=hd,
                   num_experts=experts, num_experts_per_tok=experts_used,
                   moe_intermediate_size=expert_ff or intermediate // 4, norm_topk_prob=True,
                   decoder_sparse_step=1, mlp_only_layers=[], attention_bias=False,
                   use_sliding_window=False, sliding_window=None, max_window_layers=layers,
                   output_router_logits=False, router_aux_loss_coef=0.001)
    return dict(sorted(cfg.items()))


def family_tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> numpy shape for a family_config (HF's names and order)."""
    arch = next(k for k, v in FAMILY_ARCHITECTURES.items() if v == config["architectures"][0])
    h, n_layer = config["hidden_size"], config["num_hidden_layers"]
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or h // n_head
    ff, vocab = config["intermediate_size"], config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(n_layer):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        if arch == "phi3":
            shapes[p + "self_attn.qkv_proj.weight"] = ((n_head + 2 * n_kv) * hd, h)
        else:
            for proj, rows in (("q", n_head * hd), ("k", n_kv * hd), ("v", n_kv * hd)):
                shapes[p + f"self_attn.{proj}_proj.weight"] = (rows, h)
        shapes[p + "self_attn.o_proj.weight"] = (h, n_head * hd)
        if arch in ("gemma3", "qwen3moe"):
            shapes[p + "self_attn.q_norm.weight"] = (hd,)
            shapes[p + "self_attn.k_norm.weight"] = (hd,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        if arch in ("gemma2", "gemma3"):
            shapes[p + "pre_feedforward_layernorm.weight"] = (h,)
            shapes[p + "post_feedforward_layernorm.weight"] = (h,)
        if arch == "phi3":
            shapes[p + "mlp.gate_up_proj.weight"] = (2 * ff, h)
            shapes[p + "mlp.down_proj.weight"] = (h, ff)
        elif arch == "mixtral":
            shapes[p + "block_sparse_moe.gate.weight"] = (config["num_local_experts"], h)
            for e in range(config["num_local_experts"]):
                q = p + f"block_sparse_moe.experts.{e}."
                shapes[q + "w1.weight"], shapes[q + "w2.weight"], shapes[q + "w3.weight"] = (ff, h), (h, ff), (ff, h)
        elif arch == "qwen3moe":
            eff = config["moe_intermediate_size"]
            shapes[p + "mlp.gate.weight"] = (config["num_experts"], h)
            for e in range(config["num_experts"]):
                q = p + f"mlp.experts.{e}."
                shapes[q + "gate_proj.weight"], shapes[q + "up_proj.weight"] = (eff, h), (eff, h)
                shapes[q + "down_proj.weight"] = (h, eff)
        else:
            shapes[p + "mlp.gate_proj.weight"] = (ff, h)
            shapes[p + "mlp.up_proj.weight"] = (ff, h)
            shapes[p + "mlp.down_proj.weight"] = (h, ff)
    shapes["model.norm.weight"] = (h,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def make_family_checkpoint(out_dir, arch: str, *, hidden: int = 64, layers: int = 3, heads: int = 4,
                           kv_heads: int = 2, head_dim: int | None = None, intermediate: int | None = None,
                           vocab: int | None = None, tied: bool | None = None, dtype: str = "float32",
                           seed: int = 0, tokenizer: str | None = "default", experts: int = 8,
                           experts_used: int = 2, expert_ff: int | None = None, shards: int = 1,
                           weight_scale: float = 1.0, norm_noise: float = 0.1,
                           config_overrides: dict | None = None) -> Path:
    """A tiny HF checkpoint of one of FAMILY_ARCHITECTURES, with its quirks on:

    gemma2   tied, GQA, head_dim != hidden/heads, window 4 on every other layer, attention
             soft-cap 10 and final soft-cap 30 (both bite on these weights)
    gemma3   q/k norms, GQA, 2 of 3 layers sliding (window 4), local rope base 1e4 and global
             1e6 with linear scaling x8, final soft-cap 25, tied unless tied=False
    phi3     fused qkv and gate_up, partial rotary 0.75, LongRoPE (original context 256)
    mixtral  8 experts, 2 per token, GQA, q/k rows permuted by the converter
    qwen3moe 8 experts of ffn intermediate/4, 2 per token, q/k norms, head_dim given
    Gemma's norm weights are stored as HF does (the model scales by 1 + w).
    """
    if arch not in FAMILY_ARCHITECTURES:
        raise ValueError(f"arch {arch!r} not in {sorted(FAMILY_ARCHITECTURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bos, eos = 1, 2
    if tokenizer == "default":
        tokenizer = FAMILY_TOKENIZERS[arch]
    if tokenizer is not None:
        from tests.tinytokenizers import make_tokenizer

        n_tok = int(make_tokenizer(tokenizer, out))
        vocab = vocab or n_tok
        if vocab < n_tok:
            raise ValueError(f"vocab {vocab} is smaller than the tokenizer's {n_tok} tokens")
        bos, eos = special_token_ids(out)
    vocab = vocab or 512
    if tied is None:
        tied = arch in ("gemma2", "gemma3")
    config = family_config(arch, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                           head_dim=head_dim, intermediate=intermediate or 3 * hidden, vocab=vocab,
                           tied=tied, bos=bos, eos=eos, experts=experts, experts_used=experts_used,
                           expert_ff=expert_ff)
    config["torch_dtype"] = dtype
    shapes = family_tensor_shapes(config)
    for k, v in (config_overrides or {}).items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"_from_model_config": True, "bos_token_id": bos, "eos_token_id": eos,
           "transformers_version": config["transformers_version"]}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    gemma = arch.startswith("gemma")
    tensors = {}
    for name, shape in shapes.items():
        x = _random_tensor(name, shape, seed, weight_scale, norm_noise)
        if gemma and name.endswith("norm.weight"):
            x = x - np.float32(1.0)                          # HF Gemma norms: x * (1 + w)
        if dtype == "float16":
            x = x.astype(np.float16)
        elif dtype == "bfloat16":
            x = bf16_bits(x)
        tensors[name] = x
    _write_weights(out, tensors, shards)
    return out


# --------------------------------------------------------------------------- corruption
def weight_files(ckpt_dir) -> list[Path]:
    return sorted(Path(ckpt_dir).glob("*.safetensors"))


def tensor_file(ckpt_dir, name: str) -> Path:
    """The safetensors file of a checkpoint that holds tensor `name`."""
    for f in weight_files(ckpt_dir):
        if name in read_header(f)[0]:
            return f
    raise KeyError(name)


def _as_file(target) -> Path:
    p = Path(target)
    if p.is_dir():
        files = weight_files(p)
        if not files:
            raise FileNotFoundError(f"no .safetensors in {p}")
        return files[0]
    return p


def corrupt_truncate(target, keep_bytes: int | None = None) -> Path:
    """Cut a safetensors file (or a checkpoint dir's first one) short. Default: keep the header
    and half of the data, so the header parses but the data section is incomplete."""
    path = _as_file(target)
    size = path.stat().st_size
    if keep_bytes is None:
        _hdr, start = read_header(path)
        keep_bytes = start + (size - start) // 2
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)
    return path


def corrupt_header_json(target) -> Path:
    """Break the JSON header in place (same length, so the 8-byte size still fits the file)."""
    path = _as_file(target)
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8)
        raw = bytearray(f.read(n))
        raw[0:1] = b"["                  # '{' -> '[': valid length, invalid JSON object
        mid = len(raw) // 2
        raw[mid:mid + 4] = b"\x00\xff}{"
        f.seek(8)
        f.write(bytes(raw))
    return path


def corrupt_shape(ckpt_dir, name: str = "model.layers.0.mlp.up_proj.weight",
                  shape: tuple[int, ...] | None = None) -> tuple[str, list[int]]:
    """Declare a different shape for one tensor in its file's header.

    Default: the tensor's shape reversed (up_proj (ff, hidden) -> (hidden, ff): same byte count,
    so the file stays internally consistent and only disagrees with config.json). A `shape` with
    a different element count makes the header disagree with its own data_offsets as well.
    Returns (tensor name, the shape it had)."""
    path = tensor_file(ckpt_dir, name)
    hdr, start = read_header(path)
    old = list(hdr[name]["shape"])
    hdr[name]["shape"] = list(shape) if shape is not None else old[::-1]
    data = path.read_bytes()[start:]
    _rewrite(path, hdr, data)
    return name, old


def corrupt_nonfinite(ckpt_dir, name: str = "model.layers.0.mlp.up_proj.weight",
                      value: float = float("nan"), index: int = 0) -> Path:
    """Write `value` (NaN, +-Inf) at flat `index` of tensor `name`, in the tensor's own dtype."""
    path = tensor_file(ckpt_dir, name)
    hdr, start = read_header(path)
    info = hdr[name]
    dt = info["dtype"]
    if dt == "F32":
        raw = np.array([value], dtype="<f4").tobytes()
    elif dt == "F16":
        raw = np.array([value], dtype="<f2").tobytes()
    elif dt == "BF16":
        raw = bf16_bits(np.array([value], dtype=np.float32)).astype("<u2").tobytes()
    else:
        raise ValueError(f"tensor {name} has dtype {dt}")
    with open(path, "r+b") as f:
        f.seek(start + info["data_offsets"][0] + index * len(raw))
        f.write(raw)
    return path


def corrupt_drop_tensor(ckpt_dir, name: str = "model.layers.1.mlp.down_proj.weight") -> Path:
    """Remove one tensor from the checkpoint (its file and the index, if any)."""
    ckpt = Path(ckpt_dir)
    path = tensor_file(ckpt, name)
    hdr, start = read_header(path)
    blob = path.read_bytes()[start:]
    meta = hdr.pop("__metadata__", None)
    kept = {k: v for k, v in hdr.items() if k != name}
    new_hdr, parts, off = {}, [], 0
    if meta is not None:
        new_hdr["__metadata__"] = meta
    for k, v in kept.items():
        a, b = v["data_offsets"]
        new_hdr[k] = dict(v, data_offsets=[off, off + b - a])
        parts.append(blob[a:b])
        off += b - a
    _rewrite(path, new_hdr, b"".join(parts))
    index = ckpt / "model.safetensors.index.json"
    if index.exists():
        idx = json.loads(index.read_text())
        idx["weight_map"].pop(name, None)
        index.write_text(json.dumps(idx, indent=2) + "\n")
    return path


def corrupt_pickle_only(ckpt_dir, payload: bytes | None = None) -> Path:
    """Turn a checkpoint into a pickle-only one: drop every safetensors file and the index and
    write pytorch_model.bin holding arbitrary bytes (a zip signature then noise; never a real
    pickle, nothing to unpickle). Returns the .bin path."""
    ckpt = Path(ckpt_dir)
    for f in weight_files(ckpt):
        f.unlink()
    (ckpt / "model.safetensors.index.json").unlink(missing_ok=True)
    if payload is None:
        payload = b"PK\x03\x04" + np.random.default_rng(0).bytes(4096)
    path = ckpt / "pytorch_model.bin"
    path.write_bytes(payload)
    return path


def dir_digest(ckpt_dir) -> dict[str, str]:
    """file name -> sha256, for reproducibility checks."""
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(ckpt_dir).iterdir()) if p.is_file()}


__all__ = ["ARCHITECTURES", "DTYPES", "LLAMA3_ROPE_SCALING", "make_checkpoint", "tensor_shapes",
           "write_safetensors", "read_header", "bf16_bits", "rewrite_tensors", "special_token_ids",
           "weight_files", "tensor_file", "corrupt_truncate", "corrupt_header_json", "corrupt_shape",
           "corrupt_nonfinite", "corrupt_drop_tensor", "corrupt_pickle_only", "dir_digest"]
