"""Where ggtool keeps things. Every location can be moved with an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

# name -> (meaning, default); printed by `ggtool --help` (cli.ENV_HELP)
ENV_VARS = {
    "GGTOOL_HOME": "where ggtool stores models and caches (default: the platform's user data dir)",
    "GGTOOL_CACHE": "download and build cache (default: the platform's user cache dir)",
    "GGTOOL_FORCE_NUMPY": "1 = use the numpy reference quantizer, not the C extension",
    "GGTOOL_DEBUG": "1 = show tracebacks and llama.cpp's own logging",
    "GGTOOL_CATALOG": "a JSON file of extra model aliases, merged over ggtool's catalog",
    "HF_ENDPOINT": "Hugging Face Hub mirror to download from",
    "HF_TOKEN": "Hugging Face access token for gated or private models",
    "HF_HOME": "Hugging Face home; downloads go to $HF_HOME/hub (default: ~/.cache/huggingface)",
    "HF_HUB_CACHE": "where downloaded source weights live (shared with other HF tools)",
    "HF_HUB_OFFLINE": "1 = never contact the Hub: use only what is cached or stored",
    "HF_HUB_DOWNLOAD_TIMEOUT": "seconds without data before a download counts as stalled (default: 20)",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1 = no download progress bars",
    "NO_COLOR": "disable colour in output",
}


def data_dir() -> Path:
    p = os.environ.get("GGTOOL_HOME")
    return Path(p) if p else Path(platformdirs.user_data_dir("ggtool"))


def cache_dir() -> Path:
    p = os.environ.get("GGTOOL_CACHE")
    return Path(p) if p else Path(platformdirs.user_cache_dir("ggtool"))


def models_dir() -> Path:
    return data_dir() / "models"
