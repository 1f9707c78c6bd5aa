"""Per-tensor sensitivity: the predicted increase of the model's KL divergence for every
quantizable tensor at every type it can take, calibrated on measured KLD.

    sens = sensitivity.get("model.F16.gguf", imatrix=None)      # cached per input + imatrix
    sens.damage("blk.3.ffn_down.weight", T.Q4_K)                 # predicted KLD increase (nats)

The model: damage_i(t) = gain_i * err_i(t), where
- err_i(t) is the quantization error of tensor i at type t by ggtool's own quantizer, as the
  energy of the error it adds to the matmul's output: sum over rows and columns of
  w_j * (x - x_hat)^2, with w_j the imatrix (the mean square of input column j on the
  calibration text). Without an imatrix w_j = 1: a data-free error (and ggtool says so).
  Rows are sampled for speed (SAMPLE_WEIGHTS weights per tensor, every k-th row, scaled up).
- gain_i = a[category(i)] * b[band(layer(i))]: how much KLD a unit of that error costs,
  fitted to measured KLD: llama.cpp runs a reference (every quantizable tensor Q8_0) and
  variants with one group of tensors (one category, e.g. all attn_v; or one band of layers)
  at a low probe type, on the calibration text, and the KLD of each variant against the
  reference is measured with ggtool's evaluation core (evaluate.py). The rank-1 fit
  (alternating least squares) uses categories x bands measurements.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T

from .. import quants
from .llamacpp import allows_quantization, block_size, category

VERSION = 1
# every type ggtool writes that a tensor may take, cheapest first (only where the row allows)
CANDIDATES = (T.Q2_K, T.Q3_K, T.IQ4_XS, T.Q4_0, T.IQ4_NL, T.Q4_1, T.Q4_K, T.Q5_0, T.Q5_1,
              T.Q5_K, T.Q6_K, T.Q8_0, T.F16)
PROBE = (T.Q3_K, T.Q4_0, T.Q8_0)      # the low type each tensor is measured at (first allowed)
SAMPLE_WEIGHTS = 1 << 17              # weights per tensor the error estimate is computed on
MEASURE_CTX, MEASURE_CHUNKS = 256, 4  # calibration tokens the KLD is measured on (1024, 508 scored)


def candidates(shape) -> list[T]:
    return [t for t in CANDIDATES if shape[-1] % block_size(t) == 0]


def bytes_of(t: T, shape) -> int:
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    nb = rows * quants.row_bytes(t, int(shape[-1]))
    return nb + (-nb % 32)  # as laid out in the file (32-byte alignment)


def layer_of(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def bands(n_layer: int) -> list[range]:
    """Layer bands with their own gain: every layer up to 8, else the first two and last two
    layers alone (where sensitivity tends to peak) and four bands between."""
    if n_layer <= 8:
        return [range(i, i + 1) for i in range(n_layer)]
    inner = np.linspace(2, n_layer - 2, 5).round().astype(int)
    return ([range(0, 1), range(1, 2)] + [range(int(a), int(b)) for a, b in zip(inner[:-1], inner[1:])]
            + [range(n_layer - 2, n_layer - 1), range(n_layer - 1, n_layer)])


def sample_rows(x: np.ndarray, target: int = SAMPLE_WEIGHTS) -> tuple[np.ndarray, float]:
    """(rows, scale): every k-th row of the 2-D x, and nrows / rows taken."""
    step = max(1, (x.shape[0] * x.shape[1]) // target)
    rows = x[::step]
    return np.ascontiguousarray(rows), x.shape[0] / rows.shape[0]


def tensor_errors(x: np.ndarray, w: np.ndarray | None, types, threads: int | None = None,
                  name: str = "tensor") -> dict[str, float]:
    """{type name: sum_j w_j * sum_rows (x - x_hat)^2} estimated on sampled rows, float64.
    x: (..., n); w: (n,) or per expert (n_expert * n,) importance weights, or None."""
    n = x.shape[-1]
    if x.ndim == 3:  # experts: each its own share of the sample and its own weights
        out: dict[str, float] = {}
        for e in range(x.shape[0]):
            we = None if w is None else w.reshape(x.shape[0], n)[e]
            sub = tensor_errors(x[e], we, types, threads, name)
            for k, v in sub.items():
                out[k] = out.get(k, 0.0) + v
        return out
    rows, scale = sample_rows(x.reshape(-1, n), SAMPLE_WEIGHTS)
    wq = None if w is None else np.ascontiguousarray(w, dtype=np.float32)
    wt = np.ones(n) if w is None else w.astype(np.float64)
    out = {}
    for t in types:
        q = quants.quantize(rows, t, imatrix=wq, threads=threads, name=name, finite_known=True)
        xh = quants.dequantize(q, t, rows.shape)
        d = (xh.astype(np.float64) - rows) ** 2
        out[t.name] = float(d.sum(axis=0) @ wt) * scale
    return out


# ------------------------------------------------------------------------------- the result

@dataclass
class TensorSens:
    shape: tuple
    category: str
    layer: int
    errors: dict[str, float]   # type name -> error energy
    gain: float = 0.0

    def damage(self, t: T | str) -> float:
        return self.gain * self.errors[t.name if isinstance(t, T) else t]


@dataclass
class Sensitivity:
    key: str
    weighted: bool                       # errors weighted by an imatrix
    tensors: dict[str, TensorSens]
    measurements: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    category_gain: dict = field(default_factory=dict)
    band_gain: dict = field(default_factory=dict)

    def options(self, name: str) -> list[tuple[T, int, float]]:
        """(type, bytes, predicted damage) for every type the tensor can take."""
        ts = self.tensors[name]
        return [(T[k], bytes_of(T[k], ts.shape), ts.damage(k)) for k in ts.errors]

    def damage(self, name: str, t) -> float:
        return self.tensors[name].damage(t)

    def predict(self, plan: dict) -> float:
        """Predicted KLD of a whole plan {name: type} (tensors not in the table cost nothing)."""
        return sum(self.tensors[n].damage(t) for n, t in plan.items()
                   if n in self.tensors and (t.name if isinstance(t, T) else t) in self.tensors[n].errors)

    # -------------------------------------------------------------- persistence
    def to_json(self) -> dict:
        return {"format": "ggtool-sensitivity", "version": VERSION, "key": self.key, "weighted": self.weighted,
                "seconds": self.seconds, "category_gain": self.category_gain, "band_gain": self.band_gain,
                "measurements": self.measurements,
                "tensors": {n: {"shape": list(t.shape), "category": t.category, "layer": t.layer,
                                "errors": t.errors, "gain": t.gain} for n, t in self.tensors.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "Sensitivity":
        if d.get("format") != "ggtool-sensitivity" or d.get("version") != VERSION:
            raise ValueError("not a sensitivity cache of this version")
        ts = {n: TensorSens(tuple(v["shape"]), v["category"], v["layer"], v["errors"], v["gain"])
              for n, v in d["tensors"].items()}
        return cls(d["key"], d["weighted"], ts, d.get("measurements", []), d.get("seconds", {}),
                   d.get("category_gain", {}), d.get("band_gain", {}))


def cache_root() -> Path:
    from ..paths import cache_dir

    return cache_dir() / "sensitivity"


def cache_key(src_path, imatrix) -> str:
    from ..fingerprint import input_sha256

    im = imatrix.digest() if imatrix is not None else "none"
    return f"v{VERSION}-{input_sha256(src_path)[:16]}-{im}"


def load_cached(key: str) -> Sensitivity | None:
    p = cache_root() / f"{key}.json"
    try:
        return Sensitivity.from_json(json.loads(p.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # damaged: measured again
        return None


def find_for_file(gguf_path) -> Sensitivity | None:
    """The sensitivity cache of the unquantized model a GGUF was made from, if ggtool recorded
    it there (key `ggtool.sensitivity.key`)."""
    from ..formats.gguf_reader import GGUFFile

    f = GGUFFile(gguf_path)
    try:
        key = f.get("ggtool.sensitivity.key")
    finally:
        f.close()
    return load_cached(key) if key else None


def _save(s: Sensitivity) -> None:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    p = root / f"{s.key}.json"
    tmp = p.with_name(f"{p.name}.{os.getpid()}.incomplete")
    tmp.write_text(json.dumps(s.to_json()))
    os.replace(tmp, p)


# ------------------------------------------------------------------------------- measuring

def quantizable(src) -> list[tuple[str, tuple]]:
    return [(n, tuple(s)) for n, s in src.tensors if allows_quantization(n, s) and candidates(s)]


def error_table(src, imatrix, threads, progress, log) -> dict[str, TensorSens]:
    from ..progress import bar

    out = {}
    todo = quantizable(src)
    with bar(len(todo), "sensitivity: errors per type", progress, "tensor") as pb:
        for name, shape in todo:
            x = src.load(name)
            if not quants.all_finite(x):
                from ..errors import BadWeights
                bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
                raise BadWeights(f"tensor {name!r} holds {bad} NaN/Inf value(s)")
            w = imatrix.weights(name) if imatrix is not None else None
            if w is not None and w.size != shape[-1] * (shape[0] if len(shape) == 3 else 1):
                w = None  # token_embd of another width: as the quantizer, unweighted
            out[name] = TensorSens(shape, category(name), layer_of(name),
                                   tensor_errors(x, w, candidates(shape), threads, name))
            del x
            pb.update(1)
    return out


def _groups(tensors: dict[str, TensorSens], n_layer: int) -> list[tuple[str, list[str]]]:
    cats = sorted({t.category for t in tensors.values()})
    groups = [(f"cat:{c}", sorted(n for n, t in tensors.items() if t.category == c)) for c in cats]
    for r in bands(n_layer):
        members = sorted(n for n, t in tensors.items() if t.layer in r)
        if members:
            groups.append((f"band:{r.start}-{r.stop - 1}", members))
    return groups


def _probe(t: TensorSens) -> str:
    return next((p.name for p in PROBE if p.name in t.errors), "F16")  # F16-only rows: nothing to probe


def _write_variant(ref, probe, group: set, out_path: Path, metadata) -> None:
    """A GGUF with the reference's metadata and tensors, those in `group` taken from `probe`."""
    from gguf import LlamaFileType

    from ..formats.gguf_writer import GGUFOutput
    from . import Plan, TensorPlan

    pt = {t.name: t for t in probe.tensors}
    chosen = [pt[t.name] if t.name in group else t for t in ref.tensors]
    plan = Plan(mix="Q8_0", rules="given", file_type=LlamaFileType.MOSTLY_Q8_0,
                tensors=[TensorPlan(t.name, t.shape, t.ggml_type, t.nbytes, t.ggml_type) for t in chosen])
    with GGUFOutput(out_path, metadata, plan) as out:
        out.begin()
        for t in chosen:
            out.write(t.name, (probe if t.name in group else ref).raw(t))
        out.commit(sync=False)


def fit_gains(tensors: dict[str, TensorSens], results: list[tuple[str, list[str], float]],
              iters: int = 100) -> tuple[dict, dict]:
    """a[category], b[band] so that measured KLD ~ sum over the group of a*b*(err(probe)-err(Q8_0))."""
    def excess(t):
        base = t.errors.get("Q8_0", t.errors.get("F16", 0.0))
        return max(t.errors[_probe(t)] - base, 1e-30)

    cats = {g[4:]: (members, max(m, 0.0)) for g, members, m in results if g.startswith("cat:")}
    bnds = {g[5:]: (members, max(m, 0.0)) for g, members, m in results if g.startswith("band:")}
    band_of = {n: b for b, (members, _) in bnds.items() for n in members}
    pos = [m for _, _, m in results if m > 0]
    floor = 1e-3 * (min(pos) if pos else 1.0)
    a = {c: 1.0 for c in cats}
    b = {k: 1.0 for k in bnds}
    for _ in range(iters):
        for c, (members, m) in cats.items():
            s = sum(b.get(band_of.get(n), 1.0) * excess(tensors[n]) for n in members)
            a[c] = max(m, floor) / s
        for k, (members, m) in bnds.items():
            s = sum(a[tensors[n].category] * excess(tensors[n]) for n in members)
            b[k] = max(m, floor) / s
        g = math.exp(np.mean([math.log(v) for v in b.values()])) if b else 1.0
        b = {k: v / g for k, v in b.items()}
        a = {c: v * g for c, v in a.items()}
    for n, t in tensors.items():
        t.gain = a[t.category] * b.get(band_of.get(n), 1.0)
    return a, b


def eval_threads(threads: int | None) -> int:
    """llama.cpp threads for the many short KLD runs: all cores, but one when the machine is
    already busy (llama.cpp's worker threads spin while they wait; on an oversubscribed
    machine two spinning threads run ~4x slower than one, measured on the 2-core CI box)."""
    n = threads or os.cpu_count() or 1
    try:
        if os.getloadavg()[0] > (os.cpu_count() or 1):
            return 1
    except OSError:
        pass
    return n


def measure(src_path, imatrix=None, *, text: str | None = None, threads: int | None = None,
            progress: bool = True, log=None, validate: int = 0, seed: int = 0) -> Sensitivity:
    """Compute the sensitivity of the model at src_path (no cache)."""
    from .. import evaluate
    from ..convert import convert
    from ..formats.gguf_reader import GGUFFile
    from ..imatrix import default_text
    from ..progress import bar
    from ..sources import GGUFSource, open_source

    log = log or (lambda m: None)
    t0 = time.perf_counter()
    src = open_source(src_path)
    try:
        tensors = error_table(src, imatrix, threads, progress, log)
        n_layer = src.info.n_layer
        plan_ref = {}
        for n, shape in src.tensors:
            if n in tensors:
                plan_ref[n] = T.Q8_0 if "Q8_0" in tensors[n].errors else T.F16
            else:
                plan_ref[n] = T.F16 if allows_quantization(n, shape) else T.F32
        plan_probe = {n: (T[_probe(tensors[n])] if n in tensors else plan_ref[n]) for n, _ in src.tensors}
    finally:
        src.close()
    t_err = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="ggtool-sens-"))
    try:
        ref = work / "ref.gguf"
        probe = work / "probe.gguf"
        convert(src_path, ref, "Q8_0", types=plan_ref, imatrix=imatrix, threads=threads, progress=False,
                sync=False)
        convert(src_path, probe, "Q8_0", types=plan_probe, imatrix=imatrix, threads=threads, progress=False,
                sync=False)
        eth = eval_threads(threads)
        base = evaluate.base_logprobs(ref, text if text is not None else default_text(), ctx=MEASURE_CTX,
                                      chunks=MEASURE_CHUNKS, cache_root=work / "lp", threads=eth,
                                      progress=False)
        groups = _groups(tensors, n_layer)
        rs = GGUFSource(ref)
        md = rs.metadata()
        rs.close()
        rf, pf = GGUFFile(ref), GGUFFile(probe)
        results = []
        try:
            with bar(len(groups), "sensitivity: measuring KLD", progress, "group") as pb:
                for gname, members in groups:
                    v = work / "variant.gguf"
                    _write_variant(rf, pf, set(members), v, md)
                    st = evaluate.kld(base, v, threads=eth, progress=False)
                    results.append((gname, members, float(st.kld_mean)))
                    v.unlink()
                    pb.update(1)
            a, b = fit_gains(tensors, results)
            sens = Sensitivity("", imatrix is not None, tensors, category_gain=a, band_gain=b)
            sens.measurements = [{"group": g, "tensors": len(m), "kld": k,
                                  "predicted": sum(tensors[n].damage(_probe(tensors[n])) -
                                                   tensors[n].damage("Q8_0" if "Q8_0" in tensors[n].errors else "F16")
                                                   for n in m)} for g, m, k in results]
            if validate:
                sens.measurements += _validate(sens, rf, pf, base, work, validate, seed, eth, md)
        finally:
            rf.close()
            pf.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sens.seconds = {"errors": round(t_err, 2), "total": round(time.perf_counter() - t0, 2)}
    return sens


def _validate(sens, rf, pf, base, work, n, seed, threads, md) -> list[dict]:
    """Held-out checks: random subsets of tensors at their probe type (none of them a fitted
    group), predicted vs measured."""
    from .. import evaluate

    rng = np.random.default_rng(seed)
    names = sorted(sens.tensors)
    out = []
    for i in range(n):
        frac = [0.1, 0.25, 0.5][i % 3]
        members = sorted(rng.choice(names, max(1, int(frac * len(names))), replace=False).tolist())
        v = work / "held.gguf"
        _write_variant(rf, pf, set(members), v, md)
        st = evaluate.kld(base, v, threads=threads, progress=False)
        v.unlink()
        ts = sens.tensors
        pred = sum(ts[m].damage(_probe(ts[m])) - ts[m].damage("Q8_0" if "Q8_0" in ts[m].errors else "F16")
                   for m in members)
        out.append({"group": f"heldout:{i}", "tensors": len(members), "kld": float(st.kld_mean), "predicted": pred})
    return out


def get(src_path, imatrix=None, *, threads: int | None = None, progress: bool = True, log=None,
        refresh: bool = False) -> Sensitivity:
    """The sensitivity of the model at src_path with this imatrix: from the cache, or measured
    (minutes for a 100M model on 2 cores) and cached."""
    log = log or (lambda m: None)
    key = cache_key(src_path, imatrix)
    if not refresh:
        s = load_cached(key)
        if s is not None:
            return s
    if imatrix is None:
        log("sensitivity: no imatrix, so quantization errors are data-free (unweighted); "
            "their KLD gains are measured on the calibration text")
    log("sensitivity: measuring this model's per-tensor KLD sensitivity once (cached afterwards)")
    s = measure(src_path, imatrix, threads=threads, progress=progress, log=log)
    s.key = key
    _save(s)
    return s
