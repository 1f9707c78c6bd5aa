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

from . import quants
from .errors import BadWeights
from .formats.gguf_writer import GGUFOutput
from .plan import Plan, make_plan
from .sources import Source, open_source


@dataclass
class ConvertResult:
    path: Path
    plan: Plan
    nbytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # what the user should know about the result

    @property
    def n_tensors(self) -> int:
        return len(self.plan)

    @property
    def n_params(self) -> int:
        return self.plan.n_params

    @property
    def mix(self) -> str:
        return self.plan.mix

    @property
    def types(self) -> dict[str, str]:
        return {n: t.name for n, t in self.plan.types.items()}

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / max(self.n_params, 1)


def _pieces(src: Source, plan: Plan):
    """(tensor plan, array) for every tensor in plan order; a MoE's stacked experts come one
    expert at a time (Source.load_parts), so memory holds one expert, not the layer's."""
    for t in plan:
        for part in src.load_parts(t.name):
            yield t, part


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=None if enabled else True, dynamic_ncols=True, leave=False)  # None: only on a TTY


def convert(src_path, out_path, mix: str = "F16", *, rules: str = "plain", threads: int | None = None,
            progress: bool = True, log=None, source: Source | None = None, **mix_opts) -> ConvertResult:
    """Write `out_path` from `src_path` with every tensor typed by `mix` under `rules`
    (plan.RULES: "plain" for `--type`, "llama.cpp" for llama-quantize's mixes)."""
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    src = source or open_source(src_path)
    try:
        for w in src.warnings:
            log(f"warning: {w}")
        plan = make_plan(src, mix, rules, **mix_opts)
        notes = [n for n in [plan.fallback_note()] if n]
        out = GGUFOutput(out_path, src.metadata(), plan)
        with out:
            out.begin()
            # read the next piece while this one is quantized (two pieces in memory at most);
            # a piece is a whole tensor, or one expert of a MoE's stacked tensor
            with _progress(out.total_bytes, progress) as bar, ThreadPoolExecutor(1) as reader:
                pieces = _pieces(src, plan)
                pending = reader.submit(next, pieces, None)
                try:
                    while (item := pending.result()) is not None:
                        t, x = item
                        pending = reader.submit(next, pieces, None)
                        name = t.name
                        bar.set_description(f"{name:<28} {t.type.name:>5}", refresh=False)
                        if not quants.all_finite(x):
                            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
                            raise BadWeights(f"tensor {name!r} holds {bad} NaN/Inf value(s)")
                        quants.check_range(x, t.type, name)
                        data = quants.quantize(x, t.type, threads=threads, name=name, finite_known=True)
                        out.write(name, data)
                        bar.update(data.nbytes)
                        del x, data, item
                finally:
                    pending.cancel()
            path = out.commit()
    finally:
        src.close()
    return ConvertResult(path=path, plan=plan, nbytes=path.stat().st_size, seconds=time.perf_counter() - t0,
                         warnings=list(src.warnings), notes=notes)
