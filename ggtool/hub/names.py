"""What a NAME given to `ggtool pull` means.

    smollm2-135m                a catalog alias (ggtool/data/catalog.json)
    smollm2-135m:Q8_0           an alias with a quant
    org/repo                    a Hub safetensors repo: converted by ggtool
    org/repo:Q4_K_M             a ready GGUF from a Hub GGUF repo (quant case-insensitive)
    hf.co/org/repo:Q4_K_M       the same (also huggingface.co/..., https://huggingface.co/...)
    ./folder, model.gguf        a local checkpoint folder or GGUF file (imported)

Stored models are named NAME:QUANT (Ollama's habit): `smollm2-135m:Q4_K_M`,
`bartowski/llama-3.2-1b-instruct-gguf:Q4_K_M`. Names are lower case, quants upper case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "https://hf.co/", "http://hf.co/",
                "huggingface.co/", "hf.co/")
# the Hub's own rule for a repo id: letters, digits, '-', '_', '.'; no '--' or '..'; <= 96 chars each
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_RE = re.compile(rf"^{_PART}/{_PART}$")
QUANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_PART_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,94}[a-z0-9])?$")
LOCAL_SUFFIXES = (".gguf",)


@dataclass(frozen=True)
class Ref:
    kind: str                    # "alias" | "repo" | "local"
    text: str                    # as the user wrote it
    repo: str | None = None      # org/repo (kind "repo")
    alias: str | None = None     # catalog key (kind "alias")
    quant: str | None = None     # from NAME:QUANT, upper case
    path: Path | None = None     # kind "local"


def valid_repo(repo: str) -> bool:
    return bool(REPO_RE.match(repo)) and ".." not in repo and "--" not in repo


def check_repo(repo: str) -> str:
    if not valid_repo(repo):
        raise InputError(f"{repo!r} is not a valid Hugging Face repo id",
                         hint="a repo id is org/name: letters, digits, '-', '_' and '.', e.g. Qwen/Qwen3-0.6B")
    return repo


def normalize_quant(q: str | None) -> str | None:
    if q is None or q == "":
        return None
    if not QUANT_RE.match(q):
        raise InputError(f"{q!r} is not a quant name", hint="e.g. Q4_K_M, Q8_0, IQ4_XS (case-insensitive)")
    return q.upper()


def looks_local(text: str) -> bool:
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", ".."):
        return True
    if text.lower().endswith(LOCAL_SUFFIXES):
        return True
    return Path(text).expanduser().exists()


def parse(text: str) -> Ref:
    """A pull NAME -> Ref. Aliases are looked up in the catalog (unknown ones list close matches)."""
    from . import catalog

    t = text.strip()
    if not t:
        raise InputError("empty model name", hint="e.g. ggtool pull smollm2-135m, or org/repo, or org/repo:Q4_K_M")
    if looks_local(t):
        return Ref("local", text, path=Path(t).expanduser())
    forced_hub = False
    for p in HUB_PREFIXES:
        if t.lower().startswith(p):
            t, forced_hub = t[len(p):], True
            break
    base, quant = t, None
    if ":" in t:
        base, quant = t.rsplit(":", 1)
    quant = normalize_quant(quant)
    base = base.strip("/")
    if "/" in base or forced_hub:
        return Ref("repo", text, repo=check_repo(base), quant=quant)
    entry = catalog.get(base)
    if entry is None:
        import difflib

        close = difflib.get_close_matches(base.lower(), catalog.names(), n=4, cutoff=0.5)
        raise InputError(f"unknown model {base!r}: not a catalog alias, an org/repo or a local path",
                         hint=("did you mean " + ", ".join(close) + "? " if close else "")
                         + "`ggtool pull --list` shows the aliases; any Hub repo works as org/repo")
    return Ref("alias", text, alias=entry.alias, quant=quant)


# --------------------------------------------------------------------------- stored names

def split_tag(tag: str) -> tuple[str, str | None]:
    """'name:QUANT' -> ('name', 'QUANT'); 'name' -> ('name', None). Names are lower-cased."""
    t = tag.strip()
    for p in HUB_PREFIXES:
        if t.lower().startswith(p):
            t = t[len(p):]
    name, quant = (t.rsplit(":", 1) + [None])[:2] if ":" in t else (t, None)
    return name.lower(), normalize_quant(quant)


def check_name(name: str) -> str:
    """A store name: 'alias' or 'org/repo', lower case."""
    parts = name.split("/")
    if not (1 <= len(parts) <= 2) or not all(NAME_PART_RE.match(p) and "--" not in p and ".." not in p
                                             for p in parts):
        raise InputError(f"{name!r} is not a valid model name",
                         hint="names are lower case letters, digits, '.', '_' and '-' (one optional '/'), "
                              "e.g. smollm2-135m or org/model")
    return name


def name_for_repo(repo: str) -> str:
    return repo.lower()


def name_for_path(path: Path) -> str:
    """A store name from a local folder or file name: lower case, unsafe characters -> '-'."""
    stem = path.name[:-5] if path.name.lower().endswith(".gguf") else path.name
    from .ggufs import quant_of_filename

    q = quant_of_filename(path.name) if path.name.lower().endswith(".gguf") else None
    if q:  # "SmolLM2-135M-Instruct.Q4_1" -> "smollm2-135m-instruct"
        i = stem.upper().rfind(q)
        if i > 0:
            stem = stem[:i]
    s = re.sub(r"[^a-z0-9._-]+", "-", stem.lower())
    s = re.sub(r"-{2,}", "-", s)
    s = re.sub(r"\.{2,}", ".", s).strip("-._")
    return s or "model"
