"""Content fingerprints of inputs, so caches are keyed by what a file holds, not by its name.

The sha256 of a multi-GB file takes seconds to minutes; it is remembered per (path, size,
mtime, inode) in the cache directory, so the second look at an unchanged file is free.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .paths import cache_dir

_MEMO = "digests.json"


def _memo_path() -> Path:
    return cache_dir() / _MEMO


def _load_memo() -> dict:
    try:
        return json.loads(_memo_path().read_text())
    except (OSError, ValueError):
        return {}


def _save_memo(memo: dict) -> None:
    p = _memo_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.incomplete")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, p)
    except OSError:  # a read-only cache only costs a re-hash next time
        pass


def file_sha256(path: str | Path) -> str:
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    memo = _load_memo()
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    digest = h.hexdigest()
    memo = {k: v for k, v in _load_memo().items() if not k.startswith(f"{p}|")}
    memo[key] = digest
    _save_memo(memo)
    return digest


def input_sha256(path: str | Path) -> str:
    """A file's sha256, or for a checkpoint folder the sha256 over its files' names and digests
    (weights, config, tokenizer: everything a conversion reads)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")):
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
