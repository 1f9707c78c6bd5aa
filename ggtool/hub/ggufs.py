"""The GGUF files of a Hub repo grouped by quant, their sizes, and what fits this machine.

    Qwen3-8B-Q4_K_M.gguf                               -> Q4_K_M
    qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf     -> Q4_K_M (split: both parts)
    Q8_0/Model-Q8_0-00001-of-00003.gguf                -> Q8_0 (split, in a folder)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from .client import RemoteFile

_Q = (r"(?:UD-)?(?:I?Q[1-8]_(?:K_(?:XXS|XS|S|M|L|XL)|K|NL|XXS|XS|S|M|L|[0-9](?:_[0-9]_[0-9])?)"
      r"|TQ[12]_0|MXFP4(?:_MOE)?|BF16|FP16|F16|FP32|F32)")
QUANT_IN_NAME = re.compile(rf"(?<![A-Za-z0-9])({_Q})(?![A-Za-z0-9])", re.IGNORECASE)
SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

# approximate bits per weight of llama.cpp's mixes on a Llama-3-8B-sized model (llama-quantize's
# table); small models with big vocabularies come out higher. Only for estimates and disk checks.
MIX_BPW = {"Q2_K": 3.17, "Q3_K_S": 3.65, "Q3_K_M": 4.00, "Q3_K_L": 4.31, "Q4_K_S": 4.67, "Q4_K_M": 4.89,
           "Q5_K_S": 5.57, "Q5_K_M": 5.70, "Q6_K": 6.56, "Q8_0": 8.50, "Q4_0": 4.64, "Q4_1": 5.11,
           "Q5_0": 5.57, "Q5_1": 6.04, "IQ4_NL": 4.50, "IQ4_XS": 4.25, "F16": 16.0, "BF16": 16.0, "F32": 32.0}


def quant_of_filename(name: str) -> str | None:
    base = os.path.basename(name)
    base = SPLIT.sub(".gguf", base)
    hits = QUANT_IN_NAME.findall(base[:-5] if base.lower().endswith(".gguf") else base)
    if not hits:
        return None
    q = hits[-1].upper()
    return {"FP16": "F16", "FP32": "F32"}.get(q, q)


@dataclass
class QuantFiles:
    quant: str
    files: list[RemoteFile] = field(default_factory=list)   # split parts in order

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def split(self) -> bool:
        return len(self.files) > 1


def group(files: list[RemoteFile]) -> dict[str, QuantFiles]:
    """quant -> its file(s). Vision projectors (mmproj) are left out; incomplete splits too."""
    candidates: dict[str, dict[str, list[tuple[int, int, RemoteFile]]]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf") or "mmproj" in f.path.lower():
            continue
        q = quant_of_filename(f.path) or os.path.basename(f.path)[:-5].upper()
        m = SPLIT.search(f.path)
        prefix = SPLIT.sub("", f.path) if m else f.path
        idx, count = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        candidates.setdefault(q, {}).setdefault(prefix, []).append((idx, count, f))
    out = {}
    for q, variants in candidates.items():
        complete = []
        for prefix, parts in variants.items():
            parts.sort(key=lambda p: p[0])
            n = parts[0][1]
            if [p[0] for p in parts] == list(range(1, n + 1)) and all(p[1] == n for p in parts):
                complete.append((len(prefix), prefix, [p[2] for p in parts]))
        if complete:
            complete.sort()  # the plainest name wins (e.g. over "...-Q4_K_M-imat.gguf" variants)
            out[q] = QuantFiles(q, complete[0][2])
    return dict(sorted(out.items(), key=lambda kv: kv[1].size))


# --------------------------------------------------------------------------- this machine

@dataclass
class Machine:
    ram_total: int
    ram_available: int
    vram_total: int | None = None  # NVIDIA GPUs (nvidia-smi), summed; None when there is none

    def fit(self, size: int) -> str:
        """'fits' (in free RAM or VRAM now), 'tight' (RAM if other programs make room), 'too big'."""
        need = needed_memory(size)
        if need <= self.ram_available or (self.vram_total and need <= self.vram_total):
            return "fits"
        if need <= self.ram_total:
            return "tight"
        return "too big"


def needed_memory(size: int) -> int:
    """A model's file size plus room for a 4k context and compute buffers (a rough rule)."""
    return int(size * 1.1) + (512 << 20)


def machine() -> Machine:
    total = avail = 0
    try:
        with open("/proc/meminfo") as f:
            mem = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f if ln.split()[1:2]}
        total, avail = mem.get("MemTotal", 0), mem.get("MemAvailable", mem.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        pass
    if not total:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            total = avail = 0
    return Machine(total, avail, _vram())


def _vram() -> int | None:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5)
        mib = [int(x) for x in out.stdout.split() if x.strip().isdigit()]
        return sum(mib) << 20 if out.returncode == 0 and mib else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def recommend(sizes: dict[str, int], m: Machine) -> str | None:
    """The biggest quant (F16/BF16/F32 excluded) that fits now: the LM Studio habit."""
    ok = [(s, q) for q, s in sizes.items() if q not in ("F16", "BF16", "F32") and m.fit(s) == "fits"]
    return max(ok)[1] if ok else None


# --------------------------------------------------------------------------- `ggtool quants`

def available(text: str, revision: str = "main") -> dict:
    """What quants of a model you can get and whether each fits this machine.

    A GGUF repo: its files grouped by quant, with sizes. A safetensors repo ggtool can convert:
    every mix ggtool makes, with an estimated size. An alias: both (its safetensors repo, its
    first GGUF repo)."""
    import json as _json
    from pathlib import Path

    from . import catalog, client, names
    from .download import fetch

    ref = names.parse(text)
    if ref.kind == "local":
        from ..errors import InputError

        raise InputError(f"{text} is a local path", hint="`ggtool quants` asks the Hub about org/repo or an alias")
    repos = []
    if ref.kind == "alias":
        e = catalog.get(ref.alias)
        repos = [e.repo] + list(e.gguf[:1])
    else:
        repos = [ref.repo]
    m = machine()
    rows, notes = [], []
    for repo in repos:
        info = client.repo_info(repo, revision)
        for q, g in group(info.files).items():
            rows.append({"quant": q, "size": g.size, "kind": "gguf", "repo": repo,
                         "files": [f.path for f in g.files], "estimate": False})
        st = [f for f in info.files if f.path.endswith(".safetensors") and "/" not in f.path]
        cfg = info.file("config.json")
        if st and cfg:
            arch = (_json.loads(Path(fetch(cfg, repo, info.commit, progress=False)).read_text())
                    .get("architectures") or ["?"])[0]
            if not catalog.convertible(arch):
                notes.append(f"{repo} is a {arch}: ggtool cannot convert it yet")
                continue
            n_params = sum(f.size for f in st) // 2
            for mix, bpw in MIX_BPW.items():
                rows.append({"quant": mix, "size": int(n_params * bpw / 8), "kind": "convert", "repo": repo,
                             "files": [], "estimate": True})
    for r in rows:
        r["fit"] = m.fit(r["size"])
    best = recommend({r["quant"]: r["size"] for r in rows if r["kind"] == "gguf"} or
                     {r["quant"]: r["size"] for r in rows}, m)
    return {"repos": repos, "machine": {"ram_total": m.ram_total, "ram_available": m.ram_available,
                                        "vram_total": m.vram_total},
            "quants": rows, "recommended": best, "notes": notes}
