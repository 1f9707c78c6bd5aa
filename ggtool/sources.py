"""What the converter reads: an HF checkpoint or a GGUF, seen the same way.

A source knows its GGUF architecture, writes its metadata, lists its tensors (GGUF names,
numpy shapes, in output order) and loads one tensor at a time as float32 in llama.cpp layout.
Every check that can fail (names, shapes, tokenizer) runs before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import gguf

from . import arch as archs
from . import quants
from .checkpoint import HFCheckpoint, read_json
from .gguf_read import GGUFFile
from .errors import CorruptFile, InputError
from .mixes import ModelInfo  # what the type-choice rules need to know about a model


@dataclass
class Source:
    arch: str
    info: ModelInfo
    tensors: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    name: str = ""

    def write_metadata(self, w: gguf.GGUFWriter) -> None: ...
    def load(self, name: str) -> np.ndarray: ...
    def close(self) -> None: ...


def _order_key(name: str) -> tuple:
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)))
    return (0 if name.startswith(("token_embd", "rope_freqs")) else 2, 0)


class HFSource(Source):
    def __init__(self, path: Path):
        self.ck = HFCheckpoint.open(path)
        cfg = self.ck.config
        self.family = archs.family_for(cfg)
        self.hp = self.family.hparams(cfg)
        names = self.ck.names()
        has_lm_head = "lm_head.weight" in names
        tied = self.hp.tied or not has_lm_head
        if tied != self.hp.tied:
            self.hp = archs.base.HParams(**{**self.hp.__dict__, "tied": tied})
        super().__init__(
            arch=self.family.gguf_arch,
            info=ModelInfo(self.family.gguf_arch, self.hp.n_layer, self.hp.n_head, self.hp.n_head_kv),
            name=path.resolve().name,
        )
        self.hf_of: dict[str, str] = {}
        for hf in names:
            g = self.family.gguf_name(hf)
            if g is None or (g == "output.weight" and tied):
                continue
            want = self.family.expected_shape(g, self.hp)
            got = self.ck.shape(hf)
            if tuple(got) != tuple(want):
                raise InputError(
                    f"tensor {hf!r} has shape {list(got)} but config.json implies {list(want)}",
                    hint="config.json does not belong to these weights (or the checkpoint is damaged)")
            self.hf_of[g] = hf
        missing = [n for n in self.family.required(self.hp) if n not in self.hf_of]
        if missing:
            raise InputError(f"checkpoint lacks {len(missing)} expected tensor(s), e.g. {missing[0]!r}",
                             hint="download the whole checkpoint (all shards) again")
        self.extra = self.family.extra_tensors(self.hp)
        entries = [(g, tuple(self.ck.shape(h))) for g, h in self.hf_of.items()]
        entries += [(g, a.shape) for g, a in self.extra.items()]
        self.tensors = sorted(entries, key=lambda e: _order_key(e[0]))
        self.dtypes = sorted({self.ck.dtype(h) for h in self.hf_of.values()})

    def write_metadata(self, w: gguf.GGUFWriter) -> None:
        from .tokenizer import add_tokenizer

        w.add_type("model")
        w.add_name(self.name)
        self.family.write_hparams(w, self.hp, self.ck.config)
        self.tokenizer = add_tokenizer(w, self.ck.path, self.ck.config)

    def load(self, name: str) -> np.ndarray:
        if name in self.extra:
            return self.extra[name]
        x = self.ck.tensor(self.hf_of[name])
        return self.family.transform(name, x, self.hp)

    def close(self) -> None:
        self.ck.close()


SKIP_KEYS = {"general.architecture", "general.file_type", "general.quantization_version",
             "general.alignment"}


class GGUFSource(Source):
    def __init__(self, path: Path):
        self.file = GGUFFile(path)
        g = self.file.get
        arch = g("general.architecture")
        if not arch:
            raise CorruptFile(f"{path.name} has no general.architecture")
        n_head = g(f"{arch}.attention.head_count", 0)
        first = lambda v: v[0] if isinstance(v, list) else v  # per-layer lists: layer 0, as llama.cpp
        info = ModelInfo(arch=arch, n_layer=int(g(f"{arch}.block_count", 0)), n_head=int(first(n_head)),
                         n_head_kv=int(first(g(f"{arch}.attention.head_count_kv", n_head))),
                         n_expert=int(g(f"{arch}.expert_count", 0)))
        super().__init__(arch=arch, info=info, name=str(g("general.name", path.stem)))
        self.by_name = {t.name: t for t in self.file.tensors}
        unquantized = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
        quantized = sorted({t.ggml_type.name for t in self.file.tensors if t.ggml_type not in unquantized})
        if quantized:
            self.warnings.append(
                f"input holds quantized tensors ({', '.join(quantized)}): they are dequantized and "
                "re-encoded, which keeps their quantization error (re-quantizing loses quality)")
        self.tensors = [(t.name, t.shape) for t in self.file.tensors]

    def write_metadata(self, w: gguf.GGUFWriter) -> None:
        for key, kv in self.file.kv.items():
            if key not in SKIP_KEYS:
                w.add_key_value(key, kv.value, kv.vtype, sub_type=kv.sub_type)

    def load(self, name: str) -> np.ndarray:
        t = self.by_name[name]
        raw = self.file.raw(t)
        if t.ggml_type in quants.QuantType.registry:
            x = quants.dequantize(raw, t.ggml_type, t.shape)  # always a new array
        else:  # types we do not write (IQ2_XXS, ...): gguf-py decodes them
            x = gguf.quants.dequantize(raw, t.ggml_type).astype(np.float32).reshape(t.shape)
        self.file.release(t)
        return x

    def close(self) -> None:
        self.file.close()


def open_source(path: str | Path) -> Source:
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".gguf":
        return GGUFSource(p)
    if p.is_file():
        with open(p, "rb") as fh:
            if fh.read(4) == b"GGUF":
                return GGUFSource(p)
        if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"):
            raise InputError(f"{p.name} is a pickle file; ggtool never unpickles",
                             hint="use the model's safetensors checkpoint folder or a GGUF")
        raise InputError(f"{p} is neither a checkpoint folder nor a GGUF file",
                         hint="give a Hugging Face checkpoint folder or a .gguf file")
    return HFSource(p)


__all__ = ["Source", "HFSource", "GGUFSource", "ModelInfo", "open_source", "read_json"]
