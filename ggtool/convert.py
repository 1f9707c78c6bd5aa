"""Convert a checkpoint (HF safetensors folder or GGUF) to a GGUF file, in one streaming pass.

    result = convert("path/to/ckpt", "out.gguf", mix="Q8_0")

Plan everything first (names, shapes, types, sizes: every check that can fail runs before a
byte is written), then load, transform, quantize and write one tensor at a time.
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import quants
from .buffers import BufferPool
from .errors import BadWeights
from .formats.gguf_writer import GGUFOutput
from .plan import FLOAT_TYPES, Plan, TensorPlan, make_plan, tensor_nbytes
from .sources import Source, open_source


@dataclass
class ConvertResult:
    path: Path
    plan: Plan
    nbytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # what the user should know about the result
    allocation: object = None   # plan.allocate.Allocation when the sensitivity rules chose the types

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


def _pieces(src: Source, plan: Plan, pool: BufferPool):
    """(tensor plan, array, largest |x| or None) for every tensor in plan order; a MoE's stacked
    experts come one expert at a time (Source.pieces), so memory holds one expert, not the
    layer's."""
    for t in plan:
        for part, amax in src.pieces(t.name, pool):
            yield t, part, amax


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=None if enabled else True, dynamic_ncols=True, leave=False)  # None: only on a TTY


def _imatrix_for(x: np.ndarray, shape, w: np.ndarray | None, row0: int):
    """Importance weights for piece x of a tensor of `shape`, as llama-quantize hands them over:
    (n,) for a matrix; for a MoE's stacked experts (n_expert, rows, n), the row of the expert the
    piece's rows belong to (a piece holds some rows of one expert, or whole experts: then one
    row per expert). row0: rows of the tensor (across experts) before this piece. None when
    absent or (token_embd only: check_for_model refuses it elsewhere) of another width."""
    if w is None:
        return None
    n = shape[-1]
    n_mat = shape[0] if len(shape) == 3 else 1
    if w.size != n * n_mat:
        return None
    if len(shape) != 3:
        return w
    per_expert = shape[1]
    first = row0 // per_expert
    if x.ndim == 3 and x.shape[1] == per_expert:  # whole experts
        return w.reshape(n_mat, n)[first:first + x.shape[0]].reshape(x.shape[0], n)
    return w.reshape(n_mat, n)[first]


def given_plan(src: Source, mix: str, types: dict) -> Plan:
    """A plan from types chosen elsewhere ({name: type}); general.file_type is the mix's."""
    from .plan.llamacpp import get_mix

    plan = Plan(mix=mix.upper(), rules="given", file_type=get_mix(mix).ftype)
    for name, shape in src.tensors:
        t = types[name]
        plan.tensors.append(TensorPlan(name, tuple(int(s) for s in shape), t, tensor_nbytes(t, shape), t))
    return plan


def convert(src_path, out_path, mix: str = "F16", *, rules: str = "plain", threads: int | None = None,
            progress: bool = True, log=None, source: Source | None = None, imatrix=None,
            types: dict | None = None, sync: bool = True, **mix_opts) -> ConvertResult:
    """Write `out_path` from `src_path` with every tensor typed by `mix` under `rules`
    (plan.RULES: "plain" for `--type`, "llama.cpp" for llama-quantize's mixes, "sensitivity"
    for measured allocation: then target_bpw= / max_size= set another budget).

    imatrix: a formats.imatrix.IMatrix or a path to one: the quantizer's importance weights,
    matched by tensor name as llama-quantize does (and the llama.cpp rules see
    imatrix_available). types: {name: type} chosen elsewhere (overrides `rules`).
    sync=False: no fdatasync at commit (scratch files)."""
    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    src = source or open_source(src_path)
    try:
        for w in src.warnings:
            log(f"warning: {w}")
        im_name = "the imatrix"
        if imatrix is not None and not hasattr(imatrix, "entries"):
            from .formats.imatrix import read as read_imatrix
            im_name = f"the imatrix {Path(imatrix).name}"
            imatrix = read_imatrix(imatrix)
        details: dict = {}
        if types is not None:
            plan = given_plan(src, mix, types)
        elif rules == "sensitivity":
            plan = make_plan(src, mix, rules, src=src, src_path=src_path, imatrix=imatrix, threads=threads,
                             progress=progress, log=log, out_dir=Path(out_path).parent, details=details,
                             **mix_opts)
        else:
            if imatrix is not None and rules == "llama.cpp":
                mix_opts["imatrix_available"] = True
            plan = make_plan(src, mix, rules, **mix_opts)
        if imatrix is not None:
            from .formats.imatrix import check_for_model
            check_for_model(imatrix, src.tensors, {t.name for t in plan if t.type not in FLOAT_TYPES}, source=im_name)
        notes = [n for n in [plan.fallback_note()] if n and types is None and rules != "sensitivity"]
        md = src.metadata()
        alloc = details.get("allocation")
        if alloc is not None:  # where `ggtool show --tensors` finds the sensitivity
            md.add_string("ggtool.sensitivity.key", alloc.sens_key)
        if imatrix is not None:  # as llama-quantize records it
            if imatrix.datasets:
                md.add_string("quantize.imatrix.dataset", imatrix.datasets[0])
            md.add_int32("quantize.imatrix.entries_count", len(imatrix.entries))
            if imatrix.chunk_count > 0:
                md.add_int32("quantize.imatrix.chunks_count", imatrix.chunk_count)
        out = GGUFOutput(out_path, md, plan)
        pool = BufferPool()
        with out:
            out.begin()
            # three stages at once: the next piece is read (and widened to float32) while this
            # one is quantized and the previous one written; a piece is a whole tensor, or one
            # expert of a MoE's stacked tensor. Arrays come from `pool` and go back to it.
            with _progress(out.total_bytes, progress) as bar, \
                    ThreadPoolExecutor(1, thread_name_prefix="ggtool-read") as reader, \
                    ThreadPoolExecutor(1, thread_name_prefix="ggtool-write") as writer:
                pieces = _pieces(src, plan, pool)
                pending = reader.submit(next, pieces, None)
                done: dict[str, int] = {}  # rows of a tensor (all its experts') written so far
                written = None

                def write(name, data):
                    out.write(name, data)
                    pool.give(data)

                try:
                    while (item := pending.result()) is not None:
                        t, x, amax = item
                        pending = reader.submit(next, pieces, None)
                        name = t.name
                        bar.set_description(f"{name:<28} {t.type.name:>5}", refresh=False)
                        if amax is None:
                            amax = quants.absmax(x)
                        if not math.isfinite(amax):  # (counted in the piece read so far)
                            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
                            raise BadWeights(f"{Path(src_path).name}: tensor {name!r} holds NaN/Inf values "
                                             f"({bad} in rows read so far)")
                        quants.check_range(x, t.type, f"{Path(src_path).name}: {name}", amax=amax)
                        im = None
                        if imatrix is not None and t.type not in FLOAT_TYPES:
                            im = _imatrix_for(x, t.shape, imatrix.weights(name), done.get(name, 0))
                        done[name] = done.get(name, 0) + (int(np.prod(x.shape[:-1])) if x.ndim > 1 else 1)
                        n = x.shape[-1] if x.ndim else 1
                        buf = pool.take((x.size // max(n, 1) * quants.row_bytes(t.type, n),), np.uint8) \
                            if x.ndim and n % quants.get_type(t.type).block_size == 0 else None
                        data = quants.quantize(x, t.type, imatrix=im, threads=threads, name=name, finite_known=True,
                                               out=buf)
                        pool.give(x)
                        if written is not None:
                            written.result()  # one write in flight: memory stays bounded
                        written = writer.submit(write, name, data)
                        bar.update(data.nbytes)
                        del x, data, item
                    if written is not None:
                        written.result()
                finally:
                    pending.cancel()
                    pool.clear()
            path = out.commit(sync=sync)
    finally:
        src.close()
    return ConvertResult(path=path, plan=plan, nbytes=path.stat().st_size, seconds=time.perf_counter() - t0,
                         warnings=list(src.warnings), notes=notes, allocation=alloc)
