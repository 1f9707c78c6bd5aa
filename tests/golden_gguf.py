"""Golden files: every GGUF key and a sha256 per tensor of a tiny checkpoint's conversion, one
file per family in tests/golden/<Architecture>.json, so that a change to shared code cannot
silently alter what a family writes. Regenerate on purpose only:

    python tests/golden/regenerate.py [Gemma2ForCausalLM ...]

and say in the commit why the output changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent / "golden"
# HF architecture -> (tinymodels family, make_family_checkpoint kwargs); F32 output
CASES = {
    "Gemma2ForCausalLM": ("gemma2", {"layers": 2}),
    "Gemma3ForCausalLM": ("gemma3", {"layers": 3}),
    "Phi3ForCausalLM": ("phi3", {"layers": 2}),
    "MixtralForCausalLM": ("mixtral", {"layers": 2, "experts": 4}),
    "Qwen3MoeForCausalLM": ("qwen3moe", {"layers": 2, "experts": 4, "head_dim": 32}),
}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _value(v):
    """A key's value as stored: scalars as they are, long strings and arrays as length + sha256."""
    if isinstance(v, list):
        return {"len": len(v), "sha256": _digest(json.dumps(v, ensure_ascii=False).encode())}
    if isinstance(v, str) and len(v) > 120:
        return {"len": len(v), "sha256": _digest(v.encode())}
    return v


def summarize(gguf_path) -> dict:
    """{"keys": {key: value}, "tensors": {name: {"type", "shape", "sha256"}}} of a GGUF file,
    read with gguf-py (keys and tensors in file order)."""
    import gguf

    r = gguf.GGUFReader(str(gguf_path))
    keys = {k: _value(f.contents()) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: {"type": t.tensor_type.name, "shape": [int(n) for n in t.shape],
                        "sha256": _digest(bytes(t.data.tobytes()))} for t in r.tensors}
    return {"keys": keys, "tensors": tensors}


def build(arch: str, workdir: Path) -> dict:
    """Make the tiny checkpoint of `arch` in workdir, convert it to F32, summarize the output."""
    from ggtool.convert import convert
    from tests.tinymodels import make_family_checkpoint

    family, kw = CASES[arch]
    ck = make_family_checkpoint(Path(workdir) / f"tiny-{family}", family, seed=0, **kw)
    res = convert(ck, Path(workdir) / f"tiny-{family}.gguf", "F32", progress=False)
    return summarize(res.path)


def golden_path(arch: str) -> Path:
    return GOLDEN_DIR / f"{arch}.json"


def differences(want: dict, got: dict) -> list[str]:
    """Human-readable differences between two summaries (empty: identical)."""
    out = []
    for part in ("keys", "tensors"):
        a, b = want[part], got[part]
        out += [f"{part}: {k} missing" for k in a if k not in b]
        out += [f"{part}: {k} new" for k in b if k not in a]
        out += [f"{part}: {k}: {a[k]!r} -> {b[k]!r}" for k in a if k in b and a[k] != b[k]]
        if not out and list(a) != list(b):
            out.append(f"{part}: order changed")
    return out
