"""The model store's layout on disk: one folder per model under GGTOOL_HOME (platformdirs'
user data dir by default). `model_dir` is the one place that maps a name to its folder."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InputError
from .paths import models_dir

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def model_dir(name: str) -> Path:
    """The folder of model `name` (e.g. "smollm2-135m")."""
    if not _SAFE.match(name):
        raise InputError(f"invalid model name {name!r}",
                         hint="use letters, digits, '.', '_' and '-' (no '/' or '..')")
    return models_dir() / name
