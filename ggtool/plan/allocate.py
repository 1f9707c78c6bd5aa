"""One type per tensor that minimises the total predicted damage under a byte budget.

    plan = allocate(options, budget)   # options: {name: [(type, bytes, damage), ...]}

1. Per tensor, the lower convex hull of its (bytes, damage) points: a type off the hull is
   never worth its bytes at any trade-off between size and damage.
2. Start with every tensor at its smallest type; take hull steps in order of damage saved per
   byte (ties: by name, then step) while they fit: the Lagrangian solution, the same sequence of
   steps for every budget.
3. The bytes left (less than the next step needs) are filled by an exact multiple-choice
   knapsack over single upgrades (sizes rounded up to 1/4096 of the next step's bytes),
   so the budget is used up to a rounding unit and never exceeded.

Properties (tests/test_allocate.py): never over budget; deterministic; predicted damage is
non-increasing as the budget grows: the prefix of step 2 only grows, the knapsack of step 3 is
optimal (so monotone) within one prefix, and no set of upgrades that fits in the remainder can
save more than the next hull step does (each upgrade's saving per byte is at most its tensor's
first hull slope, which is at most the next step's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import QuantError
from . import rule_set

KNAPSACK_UNITS = 4096


@dataclass(frozen=True)
class Step:
    ratio: float   # damage saved per byte
    name: str
    index: int     # position along the tensor's hull
    dbytes: int
    ddamage: float


def hull(opts: list[tuple]) -> list[tuple]:
    """Lower convex hull (bytes ascending, damage descending) of (type, bytes, damage) options."""
    pts = sorted(opts, key=lambda o: (o[1], o[2], str(o[0])))
    best: list[tuple] = []
    for o in pts:  # keep only points that beat every cheaper one
        if not best or o[2] < best[-1][2]:
            if best and o[1] == best[-1][1]:
                best[-1] = o
            else:
                best.append(o)
    h: list[tuple] = []
    for o in best:
        while len(h) >= 2:
            (_, b1, d1), (_, b2, d2) = h[-2][:3], h[-1][:3]
            # h[-1] is above the segment h[-2] -> o: drop it
            if (d2 - d1) * (o[1] - b1) >= (o[2] - d1) * (b2 - b1):
                h.pop()
            else:
                break
        h.append(o)
    return h


def smallest(options: dict[str, list[tuple]]) -> int:
    return sum(min(o[1] for o in opts) for opts in options.values())


def allocate(options: dict[str, list[tuple]], budget: int) -> dict:
    """{name: type}: minimal total damage with sum of bytes <= budget."""
    if not options:
        return {}
    low = smallest(options)
    if budget < low:
        raise QuantError(f"the budget of {budget:,} bytes for the quantized tensors is below the smallest "
                         f"reachable size, {low:,} bytes",
                         hint=f"ask for at least {low:,} bytes (every tensor at its smallest type)")
    hulls = {n: hull(o) for n, o in sorted(options.items())}
    steps = []
    for n, h in hulls.items():
        for i in range(1, len(h)):
            db, dd = h[i][1] - h[i - 1][1], h[i - 1][2] - h[i][2]
            steps.append(Step(dd / db, n, i, db, dd))
    steps.sort(key=lambda s: (-s.ratio, s.name, s.index))
    pos = {n: 0 for n in hulls}
    used = sum(h[0][1] for h in hulls.values())
    nxt = None
    for s in steps:  # hull steps of one tensor come in order (decreasing slopes)
        if used + s.dbytes > budget:
            nxt = s
            break
        pos[s.name] = s.index
        used += s.dbytes
    plan = {n: hulls[n][pos[n]] for n in hulls}
    rest = budget - used
    if rest > 0 and nxt is not None:
        # the unit depends on the prefix only (not on the budget), so that within one prefix
        # a larger remainder can only do better
        plan = _fill(plan, options, rest, max(1, math.ceil(nxt.dbytes / KNAPSACK_UNITS)))
    return {n: o[0] for n, o in plan.items()}


def _fill(plan: dict, options: dict, rest: int, unit: int) -> dict:
    """Best set of single upgrades (at most one per tensor) within `rest` bytes (exact knapsack
    on sizes rounded up to `unit` bytes)."""
    cap = rest // unit
    groups = []
    for n in sorted(plan):
        cur = plan[n]
        ups = sorted({(math.ceil((o[1] - cur[1]) / unit), cur[2] - o[2], o) for o in options[n]
                      if o[1] > cur[1] and o[2] < cur[2] and math.ceil((o[1] - cur[1]) / unit) <= cap},
                     key=lambda u: (u[0], -u[1], str(u[2][0])))
        if ups:
            groups.append((n, ups))
    if not groups:
        return plan
    best = np.zeros(cap + 1)
    choice = []
    for n, ups in groups:
        new = best.copy()
        pick = np.full(cap + 1, -1, dtype=np.int32)
        for j, (w, v, _) in enumerate(ups):
            cand = np.full(cap + 1, -np.inf)
            cand[w:] = best[: cap + 1 - w] + v
            better = cand > new
            new[better] = cand[better]
            pick[better] = j
        choice.append(pick)
        best = new
    c = int(np.argmax(best))  # first maximum: the smallest capacity that reaches it
    out = dict(plan)
    for (n, ups), pick in zip(reversed(groups), reversed(choice)):
        j = int(pick[c])
        if j >= 0:
            out[n] = ups[j][2]
            c -= ups[j][0]
    return out


def total(options: dict[str, list[tuple]], plan: dict) -> tuple[int, float]:
    """(bytes, damage) of a plan."""
    b = d = 0
    for n, t in plan.items():
        o = next(o for o in options[n] if o[0] == t)
        b += o[1]
        d += o[2]
    return b, d


# ------------------------------------------------------------------------------ the rule set

def _pinned(names, overrides, output_type, token_embd_type) -> set[str]:
    """Tensors the user typed by hand (--tensor-type, --output-tensor-type,
    --token-embedding-type): the allocation leaves them as the mix's rules give them."""
    import re

    from .llamacpp import category

    pats = [re.compile(rx) for rx, _ in overrides]
    out = set()
    for n in names:
        cat = category(n)
        if any(p.search(n) for p in pats) or (output_type is not None and cat == "output") \
                or (token_embd_type is not None and cat == "token_embd"):
            out.add(n)
    return out


def header_bytes(src, mix_plan: dict, out_dir) -> int:
    """Bytes before the tensor data of a GGUF with src's metadata and this plan (measured by
    writing the header to a scratch file next to the output)."""
    from pathlib import Path

    from gguf import LlamaFileType

    from ..formats.gguf_writer import GGUFOutput
    from . import Plan, TensorPlan, tensor_nbytes

    plan = Plan(mix="", rules="given", file_type=LlamaFileType.ALL_F32, tensors=[
        TensorPlan(n, tuple(s), mix_plan[n], tensor_nbytes(mix_plan[n], s), mix_plan[n]) for n, s in src.tensors])
    md = src.metadata()
    md.add_string("ggtool.sensitivity.key", "v1-0123456789abcdef-0123456789abcdef")
    o = GGUFOutput(Path(out_dir) / "header-probe.gguf", md, plan)
    try:
        o.begin()
        for f in o.writer.fout or []:
            f.flush()
        return o.tmp.stat().st_size
    finally:
        o.abort()


def extra_metadata_bytes(sens_key: str, imatrix) -> int:
    """Bytes of the GGUF key-values ggtool adds that a llama_model_quantize file lacks
    (ggtool.sensitivity.key; quantize.imatrix.*), plus one alignment pad."""
    def kv(key: str, value_bytes: int) -> int:
        return 8 + len(key.encode()) + 4 + value_bytes
    n = kv("ggtool.sensitivity.key", 8 + len(sens_key.encode())) + 32
    if imatrix is not None:
        ds = imatrix.datasets[0].encode() if imatrix.datasets else b""
        n += kv("quantize.imatrix.dataset", 8 + len(ds)) + kv("quantize.imatrix.entries_count", 4) \
            + kv("quantize.imatrix.chunks_count", 4)
    return n


@dataclass
class Allocation:
    plan: dict
    budget: int                # bytes for the allocated tensors
    used: int
    predicted: float           # predicted KLD of our plan
    predicted_mix: float       # ... of llama.cpp's mix for the same model
    mix_bytes: int
    sens_key: str
    weighted: bool
    summary: str


def _bpw(t, shape) -> float:
    from .sensitivity import bytes_of

    return 8.0 * bytes_of(t, shape) / float(np.prod(shape))


def describe(sens, plan: dict, mix_plan: dict, mix_name: str) -> str:
    """'attn_v +1.9 bits, ffn_up -0.5 bits vs llama.cpp's Q4_K_M mix, predicted KLD -31%'."""
    from collections import defaultdict

    bits = defaultdict(lambda: [0.0, 0])
    for n, ts in sens.tensors.items():
        cnt = float(np.prod(ts.shape))
        bits[ts.category][0] += cnt * (_bpw(plan[n], ts.shape) - _bpw(mix_plan[n], ts.shape))
        bits[ts.category][1] += cnt
    moves = sorted(((v[0] / v[1], c) for c, v in bits.items() if abs(v[0] / v[1]) >= 0.05),
                   key=lambda m: -abs(m[0]))
    ours, theirs = sens.predict(plan), sens.predict(mix_plan)
    parts = ", ".join(f"{c} {d:+.1f} bits" for d, c in moves[:4]) or "same bits per category"
    pct = f"predicted KLD {100 * (ours / theirs - 1):+.0f}%" if theirs > 0 else "predicted KLD n/a"
    return f"{parts} vs llama.cpp's {mix_name} mix, {pct}"


def plan_allocation(src_path, src, mix, *, imatrix=None, target_bpw: float | None = None,
                    max_size: int | None = None, overrides=(), output_type=None, token_embd_type=None,
                    out_dir=".", threads=None, progress=True, log=None) -> Allocation:
    """The `sensitivity` rule set: llama.cpp's mix sets the budget (its byte size for this
    model) unless --target-bpw / --max-size say otherwise; bits go where the measured
    sensitivity says they do least damage."""
    from . import sensitivity
    from .llamacpp import choose_types, get_mix
    from .sensitivity import bytes_of

    m = get_mix(mix)
    mix_plan = {n: tw[0] for n, tw in choose_types(
        src.tensors, src.info, m, overrides=overrides, output_type=output_type, token_embd_type=token_embd_type,
        imatrix_available=imatrix is not None).items()}
    shapes = {n: tuple(s) for n, s in src.tensors}
    mix_bytes = {n: bytes_of(t, shapes[n]) for n, t in mix_plan.items()}
    sens = sensitivity.get(src_path, imatrix, threads=threads, progress=progress, log=log)
    pinned = _pinned(shapes, overrides, output_type, token_embd_type)
    free = [n for n in sens.tensors if n not in pinned and n in shapes]
    fixed_bytes = sum(b for n, b in mix_bytes.items() if n not in free)
    if max_size is not None:
        budget = max_size - header_bytes(src, mix_plan, out_dir) - fixed_bytes
        what = f"--max-size {max_size:,} bytes"
    elif target_bpw is not None:
        n_params = sum(float(np.prod(s)) for s in shapes.values())
        budget = int(target_bpw * n_params / 8) - fixed_bytes
        what = f"--target-bpw {target_bpw}"
    else:
        # the mix's bytes, less the key-values only our file has, so it is never the larger
        budget = sum(mix_bytes[n] for n in free) - extra_metadata_bytes(sens.key, imatrix)
        what = f"llama.cpp's {m.name} mix"
    options = {n: sens.options(n) for n in free}
    try:
        chosen = allocate(options, budget)
    except QuantError as e:
        low = smallest(options)
        if max_size is not None:
            need = low + max_size - budget
            raise QuantError(f"{what} is below the smallest file this model can have, {need:,} bytes",
                             hint=f"give --max-size {need} or more") from None
        if target_bpw is not None:
            n_params = sum(float(np.prod(s)) for s in shapes.values())
            need = 8 * (low + fixed_bytes) / n_params
            raise QuantError(f"{what} is below the smallest reachable {need:.3f} bits per weight",
                             hint=f"give --target-bpw {need + 0.001:.3f} or more") from None
        raise e
    plan = {n: chosen.get(n, mix_plan[n]) for n in mix_plan}
    used = sum(bytes_of(plan[n], shapes[n]) for n in free)
    return Allocation(plan=plan, budget=budget, used=used, predicted=sens.predict(plan),
                      predicted_mix=sens.predict(mix_plan), mix_bytes=sum(mix_bytes.values()),
                      sens_key=sens.key, weighted=sens.weighted, summary=describe(sens, plan, mix_plan, m.name))


# ------------------------------------------------------------------------------ show --tensors

def show_tensors(path) -> dict:
    """Each tensor of a GGUF: type, bits per weight and, when the sensitivity cache of the model
    it was quantized from exists (GGUF key ggtool.sensitivity.key), its share of the predicted KLD."""
    from pathlib import Path

    from ..formats.gguf_reader import GGUFFile
    from .sensitivity import find_for_file

    f = GGUFFile(path)
    try:
        rows = [{"name": t.name, "type": t.ggml_type.name, "shape": list(t.shape),
                 "bits_per_weight": round(8.0 * t.nbytes / max(1, int(np.prod(t.shape))), 4), "bytes": t.nbytes}
                for t in f.tensors]
    finally:
        f.close()
    sens = find_for_file(path)
    total_pred = None
    if sens is not None:
        dmg = {}
        for r in rows:
            ts = sens.tensors.get(r["name"])
            if ts is not None and r["type"] in ts.errors:
                dmg[r["name"]] = ts.damage(r["type"])
        total_pred = sum(dmg.values())
        for r in rows:
            d = dmg.get(r["name"])
            r["predicted_kld"] = d
            r["kld_share_pct"] = None if d is None or total_pred <= 0 else round(100 * d / total_pred, 2)
    n_params = sum(int(np.prod(r["shape"])) for r in rows)
    nbytes = sum(r["bytes"] for r in rows)
    return {"file": str(Path(path)), "tensors": rows, "params": n_params, "tensor_bytes": nbytes,
            "bits_per_weight": round(8.0 * nbytes / max(1, n_params), 4),
            "sensitivity": None if sens is None else {"key": sens.key, "imatrix_weighted": sens.weighted,
                                                      "predicted_kld": total_pred}}


# ------------------------------------------------------------------------------ the rule set

NO_ALLOCATION = ("Q8_0", "F16", "BF16", "F32")  # mixes that leave nothing to place: llama.cpp's rules


@rule_set("sensitivity")
def sensitivity_rules(tensors, model, mix: str, *, src=None, src_path=None, details: dict | None = None,
                      target_bpw: float | None = None, max_size: int | None = None, imatrix=None,
                      overrides=(), output_type=None, token_embd_type=None, **opts):
    """`--quant MIX --rules sensitivity` (the default): the mix's byte size for this model (or
    --target-bpw / --max-size), one type per tensor by measured sensitivity."""
    from .llamacpp import choose_types, get_mix

    m = get_mix(mix)
    if src is None or (m.name in NO_ALLOCATION and target_bpw is None and max_size is None):
        return choose_types(tensors, model, m, overrides=overrides, output_type=output_type,
                            token_embd_type=token_embd_type, imatrix_available=imatrix is not None), m.ftype
    a = plan_allocation(src_path, src, m.name, imatrix=imatrix, target_bpw=target_bpw, max_size=max_size,
                        overrides=overrides, output_type=output_type, token_embd_type=token_embd_type, **opts)
    if details is not None:
        details["allocation"] = a
    return {n: (t, t) for n, t in a.plan.items()}, m.ftype
