"""Turn a llama-architecture GGUF back into a Hugging Face checkpoint folder (for tests).

The real SmolLM2-135M GGUF is the only real model the tests have; this gives the converter a real
checkpoint to eat: tokenizer.json rebuilt from the GGUF vocab + merges (SmolLM's pre-tokenizer:
Digits(individual) + ByteLevel), tokenizer_config.json, config.json, generation_config.json and an
F32 model.safetensors with HF tensor names. Weights are the GGUF's dequantized values, with
llama.cpp's q/k row permutation undone, so converting the folder back gives the same model.
The safetensors file is written by a tiny writer below (8-byte LE header length, JSON header, data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# GGUF name -> HF name ("{}" = layer index)
TENSOR_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{}.attn_norm.weight": "model.layers.{}.input_layernorm.weight",
    "blk.{}.attn_q.weight": "model.layers.{}.self_attn.q_proj.weight",
    "blk.{}.attn_k.weight": "model.layers.{}.self_attn.k_proj.weight",
    "blk.{}.attn_v.weight": "model.layers.{}.self_attn.v_proj.weight",
    "blk.{}.attn_output.weight": "model.layers.{}.self_attn.o_proj.weight",
    "blk.{}.ffn_norm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "blk.{}.ffn_gate.weight": "model.layers.{}.mlp.gate_proj.weight",
    "blk.{}.ffn_up.weight": "model.layers.{}.mlp.up_proj.weight",
    "blk.{}.ffn_down.weight": "model.layers.{}.mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        key = ".".join(["blk", "{}"] + parts[2:])
        return TENSOR_NAMES[key].format(parts[1])
    return TENSOR_NAMES[gguf_name]


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's converter permutation of q/k rows (it pairs rotary halves per head)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation (HF layout -> GGUF layout)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_fields(reader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def read_gguf_kv(path: str | Path) -> dict:
    """The metadata of a GGUF (v2/v3, little-endian) as a dict; much faster than GGUFReader on big
    vocabularies (GGUFReader builds a numpy view per array element)."""
    import struct

    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
              10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as f:
        magic, version, _n_tensors, n_kv = struct.unpack("<4sIQQ", f.read(24))
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path}: not a GGUF v2+ file")

        def value(vtype):
            if vtype == 8:
                (n,) = struct.unpack("<Q", f.read(8))
                return f.read(n).decode("utf-8", errors="surrogateescape")
            if vtype == 9:
                etype, n = struct.unpack("<IQ", f.read(12))
                if etype in scalar:
                    return np.frombuffer(f.read(n * struct.calcsize(scalar[etype])), scalar[etype]).tolist()
                return [value(etype) for _ in range(n)]
            fmt = scalar[vtype]
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        out = {}
        for _ in range(n_kv):
            (n,) = struct.unpack("<Q", f.read(8))
            key = f.read(n).decode()
            (vtype,) = struct.unpack("<I", f.read(4))
            out[key] = value(vtype)
    return out


def hf_checkpoint_from_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    import gguf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reader = gguf.GGUFReader(str(gguf_path))
    kv = read_gguf_kv(gguf_path)
    arch = kv["general.architecture"]
    if arch != "llama" or kv.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{gguf_path}: need a llama-arch GGUF with a BPE tokenizer, got {arch}")
    tokens = kv["tokenizer.ggml.tokens"]
    tensors = {t.name: t for t in reader.tensors}
    tied = "output.weight" not in tensors

    _write_tokenizer(out, kv)
    n_head, n_head_kv = kv[f"{arch}.attention.head_count"], kv[f"{arch}.attention.head_count_kv"]
    special = {n: kv.get(f"tokenizer.ggml.{k}") for n, k in
               (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id"))}
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": kv[f"{arch}.embedding_length"],
        "intermediate_size": kv[f"{arch}.feed_forward_length"],
        "num_hidden_layers": kv[f"{arch}.block_count"],
        "num_attention_heads": n_head, "num_key_value_heads": n_head_kv,
        "head_dim": kv[f"{arch}.embedding_length"] // n_head,
        "rms_norm_eps": float(kv[f"{arch}.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(kv.get(f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": kv[f"{arch}.context_length"],
        "vocab_size": len(tokens), "tie_word_embeddings": tied,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True, "torch_dtype": "float32",
        "bos_token_id": special["bos"], "eos_token_id": special["eos"], "pad_token_id": special["pad"],
    }
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json",
                {"bos_token_id": special["bos"], "eos_token_id": special["eos"],
                 "pad_token_id": special["pad"]})

    # Plan: every tensor's shape (numpy order = reversed GGUF order) is known before any data.
    plan = []
    for name, t in tensors.items():
        shape = [int(x) for x in reversed([int(d) for d in t.shape])]
        plan.append((hf_name(name), name, shape))

    def load(gname: str) -> np.ndarray:
        t = tensors[gname]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        w = w.reshape([int(x) for x in reversed([int(d) for d in t.shape])])
        if gname.endswith("attn_q.weight"):
            w = unpermute_qk(w, n_head)
        elif gname.endswith("attn_k.weight"):
            w = unpermute_qk(w, n_head_kv)
        return w

    write_safetensors(out / "model.safetensors", [(h, shape, lambda g=g: load(g)) for h, g, shape in plan])
    return out


def write_safetensors(path: Path, items: list[tuple[str, list[int], callable]]) -> None:
    """Stream F32 tensors: header first (offsets from the shapes), then each tensor's data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in items:
        nbytes = 4 * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name, shape, get in items:
            arr = np.ascontiguousarray(get(), dtype="<f4")
            assert list(arr.shape) == shape, (name, arr.shape, shape)
            f.write(arr.tobytes())


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """F32 tensors of a safetensors file, as read-only memory maps."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    n = int.from_bytes(bytes(data[:8]), "little")
    header = json.loads(bytes(data[8:8 + n]))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        b, e = info["data_offsets"]
        out[name] = data[8 + n + b: 8 + n + e].view("<f4").reshape(info["shape"])
    return out


def _write_tokenizer(out: Path, kv: dict) -> None:
    """tokenizer.json (SmolLM's structure) + tokenizer_config.json from the GGUF vocab."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ", 1)) for m in kv["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [t for t, ty in zip(tokens, types) if ty == 3]   # gguf TokenType.CONTROL
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.save(str(out / "tokenizer.json"))

    def text(key):
        i = kv.get(f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None else None

    _write_json(out / "tokenizer_config.json", {
        "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False,
        "bos_token": text("bos_token_id"), "eos_token": text("eos_token_id"),
        "unk_token": text("unknown_token_id"), "pad_token": text("padding_token_id"),
        "chat_template": kv.get("tokenizer.chat_template"),
        "clean_up_tokenization_spaces": False, "model_max_length": kv["llama.context_length"],
        "tokenizer_class": "GPT2Tokenizer",
    })


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
