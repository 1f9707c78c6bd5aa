"""Independent float64 numpy forward pass of a Hugging Face decoder checkpoint (no torch).

The oracle llama.cpp's logits on a converted GGUF are compared against. It reads the checkpoint
itself (config.json + safetensors, own reader) and follows the HF modeling code
(modeling_llama / modeling_mistral / modeling_qwen2 / modeling_qwen3, modeling_rope_utils):

- RMSNorm: x * rsqrt(mean(x^2) + eps) * w  (also per head on q and k for Qwen3, before RoPE)
- RoPE in HF's rotate_half layout: pairs are (i, i + d/2), NOT llama.cpp's interleaved (2i, 2i+1);
  inv_freq = theta^(-2i/d); rope_type default | linear | llama3 (_compute_llama3_parameters)
- GQA as repeat_kv: query head h reads kv head h // (n_head / n_kv_head)
- scores * head_dim^-0.5, causal mask (+ sliding window where HF applies one), softmax
- SwiGLU MLP down(silu(gate(x)) * up(x)); final norm; lm_head, or embed_tokens when tied
- biases are added wherever the checkpoint has them (Qwen2 q/k/v; attention_bias=True: q/k/v/o)

Every tensor of the checkpoint must be used; an unknown one is an error (strict on purpose).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


# --------------------------------------------------------------------------- reading
def read_safetensors(path) -> dict[str, np.ndarray]:
    """name -> array. BF16 is widened to float32 exactly; F16 stays float16. Raises ValueError
    on a damaged file (bad header length, bad JSON, offsets outside the data, shape/size clash)."""
    blob = Path(path).read_bytes()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file size {len(blob)}")
    try:
        header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    data = memoryview(blob)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _DTYPES.get(info.get("dtype"))
        if dt is None:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        shape = tuple(int(s) for s in info["shape"])
        a, b = (int(o) for o in info["data_offsets"])
        if not 0 <= a <= b <= len(data):
            raise ValueError(f"{path}: tensor {name} data [{a}, {b}) outside the {len(data)} data bytes")
        if math.prod(shape) * np.dtype(dt).itemsize != b - a:
            raise ValueError(f"{path}: tensor {name} shape {list(shape)} does not fit its {b - a} bytes")
        arr = np.frombuffer(data[a:b], dtype=dt).reshape(shape)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    return out


def load_checkpoint(ckpt_dir) -> tuple[dict, dict[str, np.ndarray]]:
    """(config dict, name -> array) of an HF checkpoint directory (single file or sharded)."""
    ckpt = Path(ckpt_dir)
    config = json.loads((ckpt / "config.json").read_text())
    index = ckpt / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in ckpt.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {ckpt}")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        for name, arr in read_safetensors(ckpt / f).items():
            if name in tensors:
                raise ValueError(f"tensor {name} appears in more than one file")
            tensors[name] = arr
    return config, tensors


# --------------------------------------------------------------------------- rope
def rope_settings(config: dict) -> tuple[float, dict]:
    """(rope_theta, scaling dict with 'rope_type'), from transformers <=4.x fields (rope_theta,
    rope_scaling) or the v5 `rope_parameters` dict."""
    rp = config.get("rope_parameters")
    if isinstance(rp, dict) and ("rope_theta" in rp or "rope_type" in rp):
        theta = float(rp.get("rope_theta", config.get("rope_theta", 10000.0)))
        scaling = dict(rp)
    else:
        theta = float(config.get("rope_theta", 10000.0))
        scaling = dict(config.get("rope_scaling") or {})
    scaling["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
    return theta, scaling


def inv_freq(head_dim: int, theta: float, scaling: dict) -> np.ndarray:
    """(head_dim/2,) float64 inverse frequencies, HF modeling_rope_utils semantics."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    kind = scaling.get("rope_type", "default")
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        factor = float(scaling["factor"])
        low_ff, high_ff = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_ctx = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_ctx / low_ff, old_ctx / high_ff
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)       # low freq: / factor
        smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled)
    raise NotImplementedError(f"rope_type {kind!r} is not in the reference (default, linear, llama3)")


def rotate_half(x: np.ndarray) -> np.ndarray:
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x (T, heads, head_dim); cos/sin (T, head_dim) = cat(freqs, freqs)."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


# --------------------------------------------------------------------------- model
def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class ReferenceModel:
    """A checkpoint held in float64, ready for `logits(token_ids)`."""

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]):
        arch = (config.get("architectures") or ["?"])[0]
        if arch not in SUPPORTED:
            raise NotImplementedError(f"architecture {arch} not in the reference {SUPPORTED}")
        if config.get("hidden_act", "silu") != "silu":
            raise NotImplementedError(f"hidden_act {config['hidden_act']}")
        if float(config.get("partial_rotary_factor", 1.0)) != 1.0:
            raise NotImplementedError("partial_rotary_factor != 1")
        self.config, self.arch = config, arch
        self.n_layer = int(config["num_hidden_layers"])
        self.n_embd = int(config["hidden_size"])
        self.n_head = int(config["num_attention_heads"])
        self.n_kv = int(config.get("num_key_value_heads") or self.n_head)
        self.head_dim = int(config.get("head_dim") or self.n_embd // self.n_head)
        self.eps = float(config["rms_norm_eps"])
        self.vocab = int(config["vocab_size"])
        self.theta, self.scaling = rope_settings(config)
        self.inv_freq = inv_freq(self.head_dim, self.theta, self.scaling)
        self.windows = self._sliding_windows()
        t = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
        used: set[str] = set()

        def take(name, required=True):
            if name not in t:
                if required:
                    raise KeyError(f"checkpoint has no tensor {name}")
                return None
            used.add(name)
            return t[name]

        self.embed = take("model.embed_tokens.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"model.layers.{i}."
            qk_norm = arch == "Qwen3ForCausalLM"
            self.layers.append({
                "attn_norm": take(p + "input_layernorm.weight"),
                "wq": take(p + "self_attn.q_proj.weight"), "bq": take(p + "self_attn.q_proj.bias", False),
                "wk": take(p + "self_attn.k_proj.weight"), "bk": take(p + "self_attn.k_proj.bias", False),
                "wv": take(p + "self_attn.v_proj.weight"), "bv": take(p + "self_attn.v_proj.bias", False),
                "wo": take(p + "self_attn.o_proj.weight"), "bo": take(p + "self_attn.o_proj.bias", False),
                "q_norm": take(p + "self_attn.q_norm.weight", qk_norm),
                "k_norm": take(p + "self_attn.k_norm.weight", qk_norm),
                "ffn_norm": take(p + "post_attention_layernorm.weight"),
                "gate": take(p + "mlp.gate_proj.weight"), "b_gate": take(p + "mlp.gate_proj.bias", False),
                "up": take(p + "mlp.up_proj.weight"), "b_up": take(p + "mlp.up_proj.bias", False),
                "down": take(p + "mlp.down_proj.weight"), "b_down": take(p + "mlp.down_proj.bias", False),
            })
        self.norm = take("model.norm.weight")
        # HF default for all four families: tie_word_embeddings=False; tied -> embed wins
        if config.get("tie_word_embeddings", False):
            self.lm_head = self.embed
            if "lm_head.weight" in t:
                used.add("lm_head.weight")
        else:
            self.lm_head = take("lm_head.weight")
        unused = sorted(k for k in t if k not in used and not k.endswith("rotary_emb.inv_freq"))
        if unused:
            raise ValueError(f"tensors the {arch} forward does not use: {unused[:5]}")
        self._check_shapes()

    @classmethod
    def from_dir(cls, ckpt_dir) -> "ReferenceModel":
        return cls(*load_checkpoint(ckpt_dir))

    def _sliding_windows(self) -> list[int | None]:
        c = self.config
        if self.arch == "MistralForCausalLM":
            return [c.get("sliding_window")] * self.n_layer
        if self.arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") and c.get("use_sliding_window") \
                and c.get("sliding_window"):
            types = c.get("layer_types") or [
                "sliding_attention" if i >= int(c.get("max_window_layers", 0)) else "full_attention"
                for i in range(self.n_layer)]
            return [c["sliding_window"] if ty == "sliding_attention" else None for ty in types]
        return [None] * self.n_layer

    def _check_shapes(self) -> None:
        q, kv, h = self.n_head * self.head_dim, self.n_kv * self.head_dim, self.n_embd
        ff = int(self.config["intermediate_size"])
        want = {"wq": (q, h), "wk": (kv, h), "wv": (kv, h), "wo": (h, q), "attn_norm": (h,),
                "ffn_norm": (h,), "bq": (q,), "bk": (kv,), "bv": (kv,), "bo": (h,),
                "q_norm": (self.head_dim,), "k_norm": (self.head_dim,),
                "gate": (ff, h), "up": (ff, h), "down": (h, ff), "b_gate": (ff,), "b_up": (ff,),
                "b_down": (h,)}
        for i, layer in enumerate(self.layers):
            for k, shape in want.items():
                if layer[k] is not None and layer[k].shape != shape:
                    raise ValueError(f"layer {i} {k}: shape {layer[k].shape}, config says {shape}")
        for what, a, shape in (("embed_tokens", self.embed, (self.vocab, h)),
                               ("lm_head", self.lm_head, (self.vocab, h)), ("norm", self.norm, (h,))):
            if a.shape != shape:
                raise ValueError(f"{what}: shape {a.shape}, config says {shape}")
        if self.n_head % self.n_kv:
            raise ValueError(f"{self.n_head} heads not a multiple of {self.n_kv} kv heads")

    def logits(self, token_ids) -> np.ndarray:
        """(T, vocab) float64 logits for one sequence at positions 0..T-1."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= self.vocab:
            raise ValueError(f"token ids must be in [0, {self.vocab}) and non-empty")
        T, hd, rep = ids.size, self.head_dim, self.n_head // self.n_kv
        freqs = np.arange(T, dtype=np.float64)[:, None] * self.inv_freq[None, :]
        emb = np.concatenate([freqs, freqs], axis=-1)            # (T, hd)
        cos, sin = np.cos(emb), np.sin(emb)                        # attention_factor = 1
        qi, ki = np.arange(T)[:, None], np.arange(T)[None, :]
        x = self.embed[ids]                                        # (T, H)
        for L, win in zip(self.layers, self.windows):
            h = rms_norm(x, L["attn_norm"], self.eps)
            q, k, v = (h @ L[w].T for w in ("wq", "wk", "wv"))
            q, k, v = (a if L[b] is None else a + L[b] for a, b in ((q, "bq"), (k, "bk"), (v, "bv")))
            q = q.reshape(T, self.n_head, hd)
            k = k.reshape(T, self.n_kv, hd)
            v = v.reshape(T, self.n_kv, hd)
            if L["q_norm"] is not None:                            # Qwen3: per head, before RoPE
                q = rms_norm(q, L["q_norm"], self.eps)
                k = rms_norm(k, L["k_norm"], self.eps)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)   # repeat_kv
            scores = np.einsum("qhd,khd->hqk", q, k) * hd ** -0.5
            allowed = ki <= qi
            if win is not None:
                allowed = allowed & (ki > qi - int(win))
            scores = np.where(allowed[None], scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(axis=-1, keepdims=True)
            attn = np.einsum("hqk,khd->qhd", p, v).reshape(T, self.n_head * hd)
            attn = attn @ L["wo"].T
            if L["bo"] is not None:
                attn = attn + L["bo"]
            x = x + attn
            h = rms_norm(x, L["ffn_norm"], self.eps)
            g, u = h @ L["gate"].T, h @ L["up"].T
            if L["b_gate"] is not None:                            # mlp_bias=True
                g = g + L["b_gate"]
            if L["b_up"] is not None:
                u = u + L["b_up"]
            m = (silu(g) * u) @ L["down"].T
            if L["b_down"] is not None:
                m = m + L["b_down"]
            x = x + m
        return rms_norm(x, self.norm, self.eps) @ self.lm_head.T


def reference_logits(checkpoint_dir, token_ids) -> np.ndarray:
    """(T, vocab) float64 logits of the HF checkpoint in checkpoint_dir for token_ids."""
    return ReferenceModel.from_dir(checkpoint_dir).logits(token_ids)


def greedy_tokens(checkpoint_dir, prompt_ids, n_new: int) -> list[int]:
    """n_new greedily generated ids after prompt_ids (argmax, first index on ties)."""
    model = ReferenceModel.from_dir(checkpoint_dir)
    ids = [int(i) for i in prompt_ids]
    for _ in range(n_new):
        ids.append(int(np.argmax(model.logits(ids)[-1])))
    return ids[len(prompt_ids):]
