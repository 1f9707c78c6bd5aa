"""Convert a checkpoint (HF safetensors folder or GGUF) to a GGUF file, in one streaming pass.

    result = convert("path/to/ckpt", "out.gguf", mix="Q8_0")

Plan everything first (names, shapes, types, sizes: every check that can fail runs before a
byte is written), then load, transform, quantize and write one tensor at a time.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

from . import quants
from .errors import BadWeights, QuantError
from .gguf_out import GGUFOutput
from .sources import Source, open_source

# --type values for plain conversion: name -> (tensor type, general.file_type)
PLAIN_TYPES = {"F32": (T.F32, 0), "F16": (T.F16, 1), "BF16": (T.BF16, 32), "Q8_0": (T.Q8_0, 7)}


@dataclass
class ConvertResult:
    path: Path
    n_tensors: int
    nbytes: int
    n_params: int
    seconds: float
    mix: str
    types: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / max(self.n_params, 1)


def keep_f32(name: str, shape) -> bool:
    """Tensors llama.cpp never quantizes: 1-D ones (norms, biases) and rope factors."""
    return len(shape) == 1 or name.endswith("_norm.weight") or name.startswith("rope_freqs")


def plain_plan(src: Source, mix: str) -> tuple[dict[str, T], int]:
    qtype, ftype = PLAIN_TYPES[mix]
    plan = {}
    for name, shape in src.tensors:
        t = T.F32 if keep_f32(name, shape) else qtype
        if shape[-1] % quants.get_type(t).block_size:
            t = T.F16  # as llama.cpp's converter: a row Q8_0 cannot take stays F16
        plan[name] = t
    return plan, ftype


def plan_types(src: Source, mix: str, rules: str = "plain", **opts) -> tuple[dict[str, T], int]:
    """Type of every tensor plus general.file_type.

    rules="plain": `ggtool convert --type` (one type for every matrix, as convert_hf_to_gguf);
    rules="llama.cpp": a quantization mix chosen exactly as llama-quantize would.
    """
    mix_u = mix.upper()
    if rules == "plain":
        if mix_u not in PLAIN_TYPES:
            raise QuantError(f"unknown output type {mix!r}", hint="valid: " + ", ".join(PLAIN_TYPES))
        return plain_plan(src, mix_u)
    if rules != "llama.cpp":
        raise QuantError(f"unknown rules {rules!r}", hint="valid: plain, llama.cpp")
    from . import mixes

    m = mixes.get_mix(mix_u)
    plan = mixes.plan_types(src.tensors, src.info, m, **opts)
    return plan, m.ftype


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=None if enabled else True, dynamic_ncols=True, leave=False)  # None: only on a TTY


def convert(src_path, out_path, mix: str = "F16", *, rules: str = "plain", threads: int | None = None,
            progress: bool = True, log=None, source: Source | None = None, **mix_opts) -> ConvertResult:
    """Write `out_path` from `src_path` with every tensor typed by `mix`."""
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    src = source or open_source(src_path)
    try:
        for w in src.warnings:
            log(f"warning: {w}")
        plan, ftype = plan_types(src, mix, rules, **mix_opts)
        out = GGUFOutput(out_path, src.arch)
        with out:
            w = out.writer
            src.write_metadata(w)
            w.add_file_type(ftype)
            if any(t not in (T.F32, T.F16, T.BF16) for t in plan.values()):
                w.add_quantization_version(2)
            for name, shape in src.tensors:
                out.plan(name, plan[name], shape)
            out.begin()
            n_params = 0
            # read the next tensor while this one is quantized (two tensors in memory at most)
            with _progress(out.total_bytes, progress) as bar, ThreadPoolExecutor(1) as reader:
                names = [n for n, _ in src.tensors]
                pending = reader.submit(src.load, names[0]) if names else None
                try:
                    for i, (name, shape) in enumerate(src.tensors):
                        bar.set_description(f"{name:<28} {plan[name].name:>5}", refresh=False)
                        x = pending.result()
                        pending = reader.submit(src.load, names[i + 1]) if i + 1 < len(names) else None
                        if not quants.all_finite(x):
                            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
                            raise BadWeights(f"tensor {name!r} holds {bad} NaN/Inf value(s)")
                        quants.check_range(x, plan[name], name)
                        data = quants.quantize(x, plan[name], threads=threads, name=name, finite_known=True)
                        out.write(name, data)
                        n_params += int(np.prod(shape))
                        bar.update(data.nbytes)
                        del x, data
                finally:
                    if pending is not None:
                        pending.cancel()
            path = out.commit()
    finally:
        src.close()
    return ConvertResult(
        path=path, n_tensors=len(src.tensors), nbytes=path.stat().st_size, n_params=n_params,
        seconds=time.perf_counter() - t0, mix=mix.upper(),
        types={n: t.name for n, t in plan.items()}, warnings=list(src.warnings),
    )
