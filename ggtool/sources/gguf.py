"""A GGUF file as a source: its metadata copied as is, its tensors decoded to float32."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import gguf

from .. import quants
from ..quants import floats
from ..errors import CorruptFile
from ..formats.gguf_reader import GGUFFile
from ..formats.metadata import Metadata
from ..plan import FLOAT_TYPES
from ..plan.model import ModelInfo
from .base import Source, row_spans

# types gguf-py can dequantize, besides the ones ggtool writes (quants.QuantType.registry)
DECODABLE = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16} | set(gguf.quants._type_traits)
FLOAT_KINDS = {gguf.GGMLQuantizationType.F32: "F32", gguf.GGMLQuantizationType.F16: "F16",
               gguf.GGMLQuantizationType.BF16: "BF16"}
SKIP_KEYS = {"general.architecture", "general.file_type", "general.quantization_version",
             "general.alignment"}


class GGUFSource(Source):
    def __init__(self, path: Path):
        self.file = GGUFFile(path)
        try:
            self._check(path)
        except CorruptFile:
            self.file.close()
            raise
        arch = self.file.get("general.architecture")
        super().__init__(arch=arch, info=ModelInfo.from_kv(self.file.get, where=path.name),
                         name=str(self.file.get("general.name", path.stem)))
        self.by_name = {t.name: t for t in self.file.tensors}
        quantized = sorted({t.ggml_type.name for t in self.file.tensors if t.ggml_type not in FLOAT_TYPES})
        self._quantized = bool(quantized)
        if quantized:
            self.warnings.append(
                f"input holds quantized tensors ({', '.join(quantized)}): they are dequantized and "
                "re-encoded, which keeps their quantization error (re-quantizing loses quality)")
        self.tensors = [(t.name, t.shape) for t in self.file.tensors]

    def _check(self, path: Path) -> None:
        """What a GGUF must hold to be a source: an architecture name, tensors of types ggtool
        can decode."""
        arch = self.file.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise CorruptFile(f"{path.name} has no general.architecture string"
                              + ("" if arch is None else f" (it holds {str(arch)[:40]!r})"))
        for t in self.file.tensors:
            if 0 in t.shape:
                raise CorruptFile(f"{path.name}: tensor {t.name!r} has no elements (shape {list(t.shape)})")
            if t.ggml_type not in quants.QuantType.registry and t.ggml_type not in DECODABLE:
                raise CorruptFile(f"{path.name}: tensor {t.name!r} has type {t.ggml_type.name}, which ggtool "
                                  "cannot decode", hint="convert from the model's safetensors or an F16/BF16 GGUF")

    @property
    def is_quantized(self) -> bool:
        return self._quantized

    def metadata(self) -> Metadata:
        md = Metadata(self.arch)
        for key, kv in self.file.kv.items():
            if key not in SKIP_KEYS:
                md.add_key_value(key, kv.value, kv.vtype, sub_type=kv.sub_type)
        return md

    def load(self, name: str) -> np.ndarray:
        t = self.by_name[name]
        raw = self.file.raw(t)
        if t.ggml_type in quants.QuantType.registry:
            x = quants.dequantize(raw, t.ggml_type, t.shape)  # always a new array
        else:  # types we do not write (IQ2_XXS, ...): gguf-py decodes them
            x = gguf.quants.dequantize(raw, t.ggml_type).astype(np.float32).reshape(t.shape)
        self.file.release(t)
        return x

    def load_parts(self, name: str) -> Iterator[np.ndarray]:
        """A 3-D tensor (a MoE's stacked experts) one expert at a time."""
        t = self.by_name[name]
        if len(t.shape) < 3 or t.ggml_type not in quants.QuantType.registry:
            yield self.load(name)
            return
        per = np.frombuffer(self.file.raw(t), np.uint8).reshape(t.shape[0], -1)
        for e in range(t.shape[0]):
            yield quants.dequantize(per[e], t.ggml_type, (1, *t.shape[1:]))
        self.file.release(t)

    def pieces(self, name: str, pool) -> Iterator[tuple[np.ndarray, float | None]]:
        """Float tensors (F32, F16, BF16) are widened into pool arrays in row chunks, in one
        pass that also finds their largest |x|; a 3-D one (a MoE's experts) expert by expert."""
        t = self.by_name[name]
        kind = FLOAT_KINDS.get(t.ggml_type)
        if kind is None:
            yield from ((x, None) for x in self.load_parts(name))
            return
        if len(t.shape) < 2:
            spans = [(t.shape, 0, t.nbytes)]
        else:
            stacked = len(t.shape) >= 3
            experts, inner = (t.shape[0], t.shape[1:]) if stacked else (1, t.shape)
            per_expert = t.nbytes // experts
            row = per_expert // inner[0] if inner[0] else 0
            spans = [((1,) * stacked + (hi - lo, *inner[1:]), e * per_expert + lo * row, e * per_expert + hi * row)
                     for e in range(experts) for lo, hi in row_spans(inner)]
        for shape, start, end in spans:
            out = pool.take(shape, np.float32)
            raw = self.file.raw(t, start, end)
            try:
                amax = floats.widen(raw, kind, out)
            finally:
                del raw
                self.file.release(t, start, end)
            yield out, amax

    def close(self) -> None:
        self.file.close()
