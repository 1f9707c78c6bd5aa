"""A Hugging Face checkpoint folder as a source: config.json + *.safetensors (+ tokenizer files).

Pickle formats (.bin, .pt, .pth, .ckpt) are refused, never unpickled.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import arch as archs
from ..errors import CorruptFile, InputError
from ..formats.metadata import Metadata
from ..formats.safetensors import SafetensorsFile
from ..plan.model import ModelInfo
from ..quants import floats
from .base import Source, order_key, row_spans

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def read_json(path: Path) -> dict:
    """A JSON object from `path`; anything else (bad UTF-8 or JSON, nesting deeper than Python
    parses, not an object) is a CorruptFile naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptFile(f"{path.name} is not UTF-8 text (byte {e.start})",
                          hint="the file is damaged: download it again") from None
    except json.JSONDecodeError as e:
        raise CorruptFile(f"{path.name} is not valid JSON ({e})", hint="the file is damaged: download it again") from None
    except RecursionError:
        raise CorruptFile(f"{path.name} nests JSON too deeply to read",
                          hint="the file is damaged: download it again") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", hint="check the path and its permissions") from None
    if not isinstance(data, dict):
        raise CorruptFile(f"{path.name} is not a JSON object (it holds {type(data).__name__})")
    if _SURROGATE_ESCAPE.search(raw):  # a paired \ud83d\ude00 is fine; a lone half cannot be text
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise CorruptFile(f"{path.name} holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
                              "which is not text", hint="the file is damaged: download it again") from None
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


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
            bad = [v for v in weight_map.values()
                   if not isinstance(v, str) or Path(v).name != v or not v.endswith(".safetensors")
                   or len(v.encode()) > 255]
            if bad:
                raise CorruptFile(f"{index.name} maps a tensor to {str(bad[0])[:80]!r}, not a .safetensors file in the folder")
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
        return str(archs[0]) if isinstance(archs, list) and archs else str(self.config.get("model_type", "?"))

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name].entries[name].shape

    def dtype(self, name: str) -> str:
        return self.where[name].entries[name].dtype

    def tensor(self, name: str) -> np.ndarray:
        return self.where[name].float32(name)

    def tensor_into(self, name: str, pool, chunk: bool = True) -> Iterator[tuple[np.ndarray, float]]:
        """The tensor as float32 in arrays from `pool`, in row chunks (or whole: chunk=False),
        each with its largest |x|, found in the same pass."""
        st = self.where[name]
        e = st.entries[name]
        if len(e.shape) < 2 or not chunk:
            out = pool.take(e.shape, np.float32)
            raw = st.raw(name)
            try:
                amax = floats.widen(raw, e.dtype, out)
            finally:
                del raw
                st.release(name)
            yield out, amax
            return
        for lo, hi in row_spans(e.shape):
            out = pool.take((hi - lo, *e.shape[1:]), np.float32)
            raw = st.rows(name, lo, hi)
            try:
                amax = floats.widen(raw, e.dtype, out)
            finally:
                del raw
                st.release_rows(name, lo, hi)
            yield out, amax

    def close(self) -> None:
        for f in self.files:
            f.close()


@contextlib.contextmanager
def _from_config():
    """Errors of what config.json says (hparams, a family's checks) name config.json."""
    try:
        yield
    except InputError as e:
        if "config.json" in e.message:
            raise
        raise type(e)(f"config.json: {e.message}", hint=e.hint or "config.json is damaged or does not "
                      "belong to these weights") from None


class HFSource(Source):
    def __init__(self, path: Path):
        self.ck = HFCheckpoint.open(path)
        self.family = archs.family_for(self.ck.config)
        with _from_config():
            archs.base.check_config(self.ck.config)
            self.config = cfg = self.family.prepare_config(self.ck.config)
            self.hp = self.family.hparams(cfg)
        # the language model's tensors under the names the family tables use
        names, skipped = {}, []
        for hf in self.ck.names():
            rn = self.family.rename(hf)
            if rn is None:
                skipped.append(hf)
            else:
                names[rn] = hf
        has_lm_head = "lm_head.weight" in names
        tied = self.hp.tied or not has_lm_head
        if tied != self.hp.tied:
            self.hp = archs.base.HParams(**{**self.hp.__dict__, "tied": tied})
        with _from_config():
            self.family.validate(self.hp, cfg, list(names))
        super().__init__(
            arch=self.family.gguf_arch,
            info=ModelInfo(self.family.gguf_arch, self.hp.n_layer, self.hp.n_head, self.hp.n_head_kv,
                           n_expert=self.hp.n_expert),
            name=self.family.model_name(path.resolve().name, path),
        )
        if skipped:
            self.warnings.append(f"{len(skipped)} tensors outside the language model (e.g. {skipped[0]!r}) "
                                 "are not converted: ggtool writes the text model only")
        self.hf_of: dict[str, str] = {}
        self.stacks: dict[str, list[str | None]] = {}   # MoE: stacked GGUF name -> HF name per expert
        for rn, hf in names.items():
            slot = self.family.expert_slot(rn)
            try:
                g = slot[0] if slot else self.family.gguf_name(rn)
            except InputError as e:  # a weight the family cannot place: name the checkpoint
                raise type(e)(f"{path.name}: {e.message}", hint=e.hint) from None
            if g is None or (g == "output.weight" and tied):
                continue
            if g.startswith("blk.") and int(g.split(".")[1]) >= self.hp.n_layer:
                raise InputError(f"tensor {hf!r} is in a layer beyond config.json's num_hidden_layers "
                                 f"({self.hp.n_layer})", hint="config.json does not belong to these weights")
            want = self.family.expected_shape(g, self.hp)
            got = self.ck.shape(hf)
            if tuple(got) != tuple(want):
                raise InputError(
                    f"tensor {hf!r} has shape {list(got)} but config.json implies {list(want)}",
                    hint="config.json does not belong to these weights (or the checkpoint is damaged)")
            if slot:
                e = slot[1]
                if not 0 <= e < self.hp.n_expert:
                    raise InputError(f"tensor {hf!r} is expert {e}, config.json says {self.hp.n_expert} experts",
                                     hint="config.json does not belong to these weights")
                self.stacks.setdefault(g, [None] * self.hp.n_expert)[e] = hf
            else:
                self.hf_of[g] = hf
        missing = [n for n in self.family.required(self.hp) if n not in self.hf_of and n not in self.stacks]
        missing += [f"{g} (expert {e})" for g, hfs in self.stacks.items() for e, h in enumerate(hfs) if h is None]
        if missing:
            raise InputError(f"checkpoint {path.name} lacks {len(missing)} expected tensor(s), e.g. {missing[0]!r} "
                             f"(config.json: {self.hp.n_layer} layers)",
                             hint="download the whole checkpoint (all shards) again")
        self.extra = self.family.extra_tensors(self.hp)
        entries = [(g, tuple(self.ck.shape(h))) for g, h in self.hf_of.items()]
        entries += [(g, (len(hfs), *self.ck.shape(hfs[0]))) for g, hfs in self.stacks.items()]
        entries += [(g, a.shape) for g, a in self.extra.items()]
        self.tensors = sorted(entries, key=lambda e: order_key(e[0]))
        used = list(self.hf_of.values()) + [h for hfs in self.stacks.values() for h in hfs]
        self.dtypes = sorted({self.ck.dtype(h) for h in used})

    def metadata(self) -> Metadata:
        from ..tokenizer import add_tokenizer

        md = Metadata(self.arch)
        md.add_type("model")
        md.add_name(self.name)
        with _from_config():
            self.family.write_hparams(md, self.hp, self.config)
        self.tokenizer = add_tokenizer(md, self.ck.path, self.config)
        return md

    def load(self, name: str) -> np.ndarray:
        if name in self.stacks:
            return np.stack(list(self.load_parts(name)))
        if name in self.extra:
            return self.extra[name]
        x = self.ck.tensor(self.hf_of[name])
        return self.family.transform(name, x, self.hp)

    def load_parts(self, name: str) -> Iterator[np.ndarray]:
        """A MoE's stacked tensor one expert at a time (bounded memory); others whole."""
        if name not in self.stacks:
            yield self.load(name)
            return
        for hf in self.stacks[name]:
            yield self.family.transform(name, self.ck.tensor(hf), self.hp)[None]

    def pieces(self, name: str, pool) -> Iterator[tuple[np.ndarray, float | None]]:
        if name in self.extra:
            yield self.extra[name], None
            return
        stacked = self.stacks.get(name)
        rowwise = self.family.rowwise(name)
        for hf in stacked or [self.hf_of[name]]:
            for x, amax in self.ck.tensor_into(hf, pool, chunk=rowwise):
                spare = None if rowwise else pool.take(x.shape, np.float32)
                y = self.family.transform(name, x, self.hp, out=spare)
                if y is not spare:
                    pool.give(spare)
                if y is not x:  # new values or a new layout: their |x| is not known
                    amax = None
                    if not np.may_share_memory(x, y):
                        pool.give(x)
                yield (y[None] if stacked else y), amax

    def close(self) -> None:
        self.ck.close()
