"""Model sources: a Hugging Face checkpoint folder (safetensors) or a GGUF file.

Both give the converter the same view: metadata plus named float tensors read one at a time.
Pickle formats (.bin, .pt, .pth, .ckpt) are refused, never unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CorruptFile, InputError
from .safetensors import SafetensorsFile

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CorruptFile(f"{path.name} is not valid JSON ({e})") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    if not isinstance(data, dict):
        raise CorruptFile(f"{path.name} is not a JSON object")
    return data


@dataclass
class HFCheckpoint:
    """A Hugging Face model folder: config.json + *.safetensors (+ tokenizer files)."""

    path: Path
    config: dict
    files: list[SafetensorsFile] = field(default_factory=list)
    where: dict[str, SafetensorsFile] = field(default_factory=dict)  # tensor name -> file

    @classmethod
    def open(cls, path: str | Path) -> "HFCheckpoint":
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path} does not exist", hint="give a checkpoint folder or a .gguf file")
        if not path.is_dir():
            raise InputError(f"{path} is neither a folder nor a .gguf file",
                             hint="give a Hugging Face checkpoint folder or a .gguf file")
        cfg = path / "config.json"
        if not cfg.is_file():
            raise InputError(f"no config.json in {path}",
                             hint="a Hugging Face checkpoint folder holds config.json beside its *.safetensors")
        config = read_json(cfg)
        ck = cls(path, config)
        ck._find_weights()
        return ck

    def _find_weights(self) -> None:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CorruptFile(f"{index.name} has no weight_map")
            names = sorted(set(weight_map.values()))
            missing = [n for n in names if not (self.path / n).is_file()]
            if missing:
                raise InputError(f"shard {missing[0]} listed in {index.name} is missing",
                                 hint="download the whole checkpoint again")
            files = [self.path / n for n in names]
        else:
            files = sorted(self.path.glob("*.safetensors"))
        if not files:
            pickles = sorted(p.name for p in self.path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise InputError(
                    f"{self.path} has only pickle weights ({', '.join(pickles[:3])}); ggtool never unpickles",
                    hint="use the model's safetensors files (most Hub repos have them, "
                         "often on the 'refs/pr' branch), or a GGUF",
                )
            raise InputError(f"no *.safetensors weights in {self.path}",
                             hint="a Hugging Face checkpoint folder holds model*.safetensors")
        for f in files:
            st = SafetensorsFile(f)
            self.files.append(st)
            for name in st.entries:
                if name in self.where:
                    raise CorruptFile(f"tensor {name!r} appears in both {self.where[name].path.name} and {f.name}")
                self.where[name] = st

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else str(self.config.get("model_type", "?"))

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name].entries[name].shape

    def dtype(self, name: str) -> str:
        return self.where[name].entries[name].dtype

    def tensor(self, name: str) -> np.ndarray:
        return self.where[name].float32(name)

    def close(self) -> None:
        for f in self.files:
            f.close()
