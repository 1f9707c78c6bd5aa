"""`ggtool bench`: size, quality and speed of every quantization level of one model, side by side.

    result = bench("path/to/hf-folder-or-F16.gguf", quants=["Q4_K_M", "Q8_0"], chunks=8)
    print(benchreport.markdown(result))

Phases (each with a progress bar, each resumable from the cache):
1. the base: the unquantized model as a GGUF (an F32/F16/BF16 GGUF input is its own base; a
   Hugging Face folder is converted to F16 once);
2. every level quantized from that base by ggtool (and, with against="llama.cpp", by
   llama.cpp's llama_model_quantize from the same base), each file cached by the base's
   content + level + quantizer + its version;
3. the base's log-probabilities on the evaluation text (evaluate.base_logprobs, cached);
4. per file: perplexity + KLD against the base (evaluate.kld) and pp/tg speed (speed.measure);
   each finished row is saved, so a rerun (or a run stopped by Ctrl-C) resumes.

Cache layout under `paths.cache_dir()/bench/` (the sha256 of a file is remembered by
fingerprint.py): `<input sha>/base.F16.gguf`, `<base sha>/<LEVEL>.<quantizer>.<opts>.gguf`
(+ .json: how long it took), `rows/<key>.json`; the log-probabilities under `logprobs/`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import __version__
from .errors import InputError, QuantError
from .fingerprint import file_sha256, input_sha256
from .paths import cache_dir

DEFAULT_QUANTS = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
DEFAULT_CHUNKS = 16        # 16 x 255 = 4080 scored tokens
DEFAULT_MAX_KLD = 0.05     # see README "Bench": the sweet spot threshold
DEFAULT_FIT_CTX = 4096     # context the sweet spot must fit in memory with
QUANTIZERS = ("ggtool", "llama.cpp")
ROW_FIELDS = ["quant", "quantizer", "file", "bytes", "bpw", "quantize_s", "ppl", "ppl_err", "kld_mean",
              "kld_err", "kld_median", "kld_p99", "same_top_pct", "pp_tps", "pp_tps_std", "tg_tps", "tg_tps_std"]
FLOAT_TYPES = {"F32", "F16", "BF16"}


@dataclass
class Row:
    quant: str
    quantizer: str
    file: str
    bytes: int
    bpw: float
    quantize_s: float | None
    ppl: float
    ppl_err: float
    kld_mean: float
    kld_err: float
    kld_median: float
    kld_p99: float
    same_top_pct: float
    pp_tps: float | None
    pp_tps_std: float | None
    tg_tps: float | None
    tg_tps_std: float | None

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ROW_FIELDS}


@dataclass
class BenchResult:
    base: dict
    text: dict
    tokens_scored: int
    rows: list[Row]
    sweet_spot: dict | None = None
    extra: dict = field(default_factory=dict)   # kld details per row, timings (not in --json's contract)

    def to_json(self) -> dict:
        return {"base": self.base, "text": self.text, "tokens_scored": self.tokens_scored,
                "sweet_spot": self.sweet_spot, "rows": [r.to_dict() for r in self.rows]}


# ---------------------------------------------------------------------------- inputs and files

def gguf_facts(path) -> dict:
    """What bench needs to know of a GGUF: tensor types, weights, sizes, KV-cache shape."""
    from .formats.gguf_reader import GGUFFile

    f = GGUFFile(path)
    try:
        g = f.get
        arch = g("general.architecture")
        types = sorted({t.ggml_type.name for t in f.tensors})
        n_params = sum(math.prod(t.shape) for t in f.tensors)
        tensor_bytes = sum(t.nbytes for t in f.tensors)
        first = lambda v: int(v[0] if isinstance(v, list) else v)  # noqa: E731
        n_head = first(g(f"{arch}.attention.head_count", 1))
        n_embd = int(g(f"{arch}.embedding_length", 0))
        head_k = int(g(f"{arch}.attention.key_length", n_embd // max(n_head, 1)))
        head_v = int(g(f"{arch}.attention.value_length", head_k))
        return {"arch": arch, "types": types, "n_params": n_params, "tensor_bytes": tensor_bytes,
                "file_type": g("general.file_type"), "n_layer": int(g(f"{arch}.block_count", 0)),
                "n_head_kv": first(g(f"{arch}.attention.head_count_kv", n_head)),
                "head_k": head_k, "head_v": head_v,
                "n_vocab": len(g("tokenizer.ggml.tokens", []) or [])}
    finally:
        f.close()


def check_levels(quants, against: str | None) -> list[str]:
    from .plan.llamacpp import get_mix

    if against not in (None, "llama.cpp"):
        raise InputError(f"--against {against!r}: only llama.cpp can be benched against", hint="use --against llama.cpp")
    out = []
    for q in quants:
        try:
            out.append(get_mix(q.strip()).name)
        except QuantError as e:
            raise InputError(f"unknown quantization level {q.strip()!r}", hint=e.hint) from None
    if not out:
        raise InputError("no quantization level given", hint="e.g. --quants Q4_K_M,Q8_0")
    return list(dict.fromkeys(out))


def resolve_model(model: str | Path) -> tuple[Path, str]:
    """(path, "hf" | "gguf") of MODEL: a checkpoint folder, a GGUF, or a stored model's name (its
    HF folder, else its unquantized GGUF). A quantized GGUF is refused: it cannot be the base."""
    p = Path(model)
    if not p.exists():
        p = _stored(str(model)) or p
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise InputError(f"{p} is a folder without config.json",
                             hint="give a Hugging Face checkpoint folder or an F32/F16/BF16 GGUF")
        return p, "hf"
    if p.is_file():
        types = set(gguf_facts(p)["types"])
        quantized = sorted(types - FLOAT_TYPES)
        if quantized:
            raise InputError(f"{p.name} is quantized ({', '.join(quantized)}): bench needs the unquantized "
                             "model as its base, to measure every level against",
                             hint="give the F16/BF16/F32 GGUF or the Hugging Face checkpoint folder it was made from")
        return p, "gguf"
    raise InputError(f"{model} is neither a checkpoint folder, a GGUF file nor a stored model",
                     hint="give a Hugging Face checkpoint folder or an F32/F16/BF16 GGUF")


def _stored(name: str) -> Path | None:
    """A stored model's GGUF (store.find): NAME:QUANT as named, or for a bare NAME its unquantized
    quant if one is stored (else its only quant, which resolve_model then refuses as quantized)."""
    from . import store
    from .errors import GgtoolError

    try:
        hits = store.find(name)
    except GgtoolError:
        return None
    floats = [h for h in hits if h.quant.upper() in FLOAT_TYPES]
    pick = floats[0] if floats else (hits[0] if len(hits) == 1 else None)
    try:
        return pick.path if pick is not None and pick.path.is_file() else None
    except GgtoolError:
        return None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.incomplete")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def make_base(src: Path, kind: str, root: Path, *, threads, progress, log) -> tuple[Path, str]:
    """(base GGUF path, its sha256). A float GGUF is its own base; a checkpoint folder becomes F16."""
    if kind == "gguf":
        return src, file_sha256(src)
    from .convert import convert

    out = root / input_sha256(src)[:16] / "base.F16.gguf"
    if out.is_file() and _sidecar(out).is_file():
        log(f"base: {out} (cached)")
    else:
        log(f"base: converting {src} to F16")
        out.parent.mkdir(parents=True, exist_ok=True)
        res = convert(src, out, "F16", threads=threads, progress=progress, log=log)
        _write_json_atomic(_sidecar(out), {"source": str(src), "seconds": res.seconds, "ggtool": __version__})
    return out, file_sha256(out)


def _quant_opts(quantizer: str, rules: str) -> str:
    if quantizer == "ggtool":
        from .plan.llamacpp import LLAMA_CPP_RULES_VERSION

        desc = f"ggtool {__version__} rules={rules} {LLAMA_CPP_RULES_VERSION}"
    else:
        from .llamacpp import llama_cpp

        desc = f"llama_model_quantize {llama_cpp().__version__}"
    return hashlib.sha256(desc.encode()).hexdigest()[:8]


def quantize_level(base: Path, base_sha: str, level: str, quantizer: str, root: Path, *,
                   threads, progress, log, rules: str | None = None) -> tuple[Path, float]:
    """(file, seconds it took to make) of one level by one quantizer, from the cache when there.
    ggtool quantizes under `rules` (default: plan.DEFAULT_RULES, what `--quant` does)."""
    from .plan import DEFAULT_RULES

    rules = rules or DEFAULT_RULES
    out = root / base_sha[:16] / f"{level}.{quantizer}.{_quant_opts(quantizer, rules)}.gguf"
    side = _sidecar(out)
    if out.is_file() and side.is_file():
        try:
            return out, float(json.loads(side.read_text())["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is a missing one: made again below
    out.parent.mkdir(parents=True, exist_ok=True)
    if quantizer == "ggtool":
        from .convert import convert

        res = convert(base, out, level, rules=rules, threads=threads, progress=progress, log=log)
        seconds = res.seconds
    else:
        from .llamacpp.quantize import llama_quantize_file
        from .plan.llamacpp import get_mix

        tmp = out.with_name(f"{out.name}.{uuid.uuid4().hex[:8]}.incomplete")
        t0 = time.perf_counter()
        try:
            llama_quantize_file(base, tmp, int(get_mix(level).ftype), nthread=threads or 0)
            seconds = time.perf_counter() - t0
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    _write_json_atomic(side, {"base": str(base), "level": level, "quantizer": quantizer, "seconds": seconds})
    return out, seconds


# ---------------------------------------------------------------------------- one row

def measure_file(path: Path, base, *, quant: str, quantizer: str, quantize_s, reps: int, threads,
                 n_gpu_layers: int, progress: bool, rows_dir: Path, fresh: bool, facts: dict | None = None) -> tuple[Row, dict]:
    """The row of one file: quality against the cached base, then speed. Cached by the file's content."""
    from .llamacpp.context import default_threads

    threads = threads or default_threads()
    fsha = file_sha256(path)
    key = hashlib.sha256(json.dumps([fsha, base.dir.name, base.n_chunks, reps, threads, n_gpu_layers,
                                     __version__]).encode()).hexdigest()[:24]
    cached = rows_dir / f"{key}.json"
    if cached.is_file() and not fresh:
        try:
            d = json.loads(cached.read_text())
            d["row"].update(quant=quant, quantizer=quantizer, file=str(path), quantize_s=quantize_s)
            return Row(**d["row"]), d["detail"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # a damaged cache entry is a missing one: measured again below
    from .evaluate import kld
    from .llamacpp.context import LlamaModel
    from .speed import measure

    facts = facts or gguf_facts(path)
    with LlamaModel(path, n_gpu_layers=n_gpu_layers) as m:
        st = kld(base, m, threads=threads, progress=progress, desc=f"score {quant} ({quantizer})")
        sp = measure(m, reps=reps, threads=threads, progress=progress) if reps > 0 else {}
    pp, tg = sp.get("pp512"), sp.get("tg128")
    row = Row(quant=quant, quantizer=quantizer, file=str(path), bytes=path.stat().st_size,
              bpw=round(8.0 * facts["tensor_bytes"] / max(facts["n_params"], 1), 4), quantize_s=quantize_s,
              ppl=st.ppl, ppl_err=st.ppl_err, kld_mean=st.kld_mean, kld_err=st.kld_err,
              kld_median=st.kld_median, kld_p99=st.kld_p99, same_top_pct=st.same_top_pct,
              pp_tps=pp.avg_ts if pp else None, pp_tps_std=pp.stddev_ts if pp else None,
              tg_tps=tg.avg_ts if tg else None, tg_tps_std=tg.stddev_ts if tg else None)
    detail = {"kld": st.to_dict(), "speed": {k: v.to_dict() for k, v in sp.items()}, "threads": threads}
    _write_json_atomic(cached, {"row": asdict(row), "detail": detail})
    return row, detail


# ---------------------------------------------------------------------------- the whole bench

def bench(model, quants=None, *, text_path=None, chunks: int | None = DEFAULT_CHUNKS, ctx: int = 512,
          threads: int | None = None, reps: int = 5, against: str | None = None,
          max_kld: float = DEFAULT_MAX_KLD, fit_ctx: int | None = None, n_gpu_layers: int = 0,
          fresh: bool = False, progress: bool = True, log=None, cache_root=None,
          rules: str | None = None) -> BenchResult:
    from . import benchreport
    from .evaluate import base_logprobs, read_text

    log = log or (lambda msg: None)
    levels = check_levels(quants or DEFAULT_QUANTS, against)
    if reps < 0:
        raise InputError(f"--reps {reps} must be 0 (no speed test) or more", hint="e.g. --reps 5, as llama-bench")
    if max_kld <= 0:
        raise InputError(f"--max-kld {max_kld} must be positive",
                         hint=f"e.g. --max-kld {DEFAULT_MAX_KLD} (mean KL divergence in nats)")
    text, text_label = read_text(text_path)
    src, kind = resolve_model(model)
    root = Path(cache_root) if cache_root else cache_dir() / "bench"
    t_start = time.perf_counter()

    log("[1/4] base model")
    base_path, base_sha = make_base(src, kind, root, threads=threads, progress=progress, log=log)
    base_facts = gguf_facts(base_path)

    from .plan import DEFAULT_RULES

    rules = rules or DEFAULT_RULES
    quantizers = ["ggtool"] + (["llama.cpp"] if against else [])
    log(f"[2/4] quantizing {len(levels)} level(s) with {' and '.join(quantizers)} "
        f"(ggtool's rules: {rules}; cached files are reused)")
    files = []
    for level in levels:
        for qz in quantizers:
            path, secs = quantize_level(base_path, base_sha, level, qz, root, threads=threads,
                                        progress=progress, log=lambda m: None, rules=rules)
            files.append((level, qz, path, secs))

    log(f"[3/4] base log-probabilities on {text_label}")
    base = base_logprobs(base_path, text, ctx, chunks, cache_root=root.parent / "logprobs", threads=threads,
                         progress=progress, n_gpu_layers=n_gpu_layers, base_sha256=base_sha)
    ch = base.chunking()
    if chunks is not None and ch.n_chunks < chunks:
        log(f"note: the text gives only {ch.n_chunks} chunk(s) of {ctx} tokens, not {chunks}")

    log(f"[4/4] scoring {len(files) + 1} file(s) on {base.tokens_scored} tokens"
        + (f", speed pp512/tg128 x{reps}" if reps else ""))
    rows_dir = root / "rows"
    base_row, base_detail = measure_file(base_path, base, quant=base_facts_label(base_facts), quantizer="base",
                                         quantize_s=None, reps=reps, threads=threads, n_gpu_layers=n_gpu_layers,
                                         progress=progress, rows_dir=rows_dir, fresh=fresh, facts=base_facts)
    rows, details = [], {}
    for level, qz, path, secs in files:
        row, detail = measure_file(path, base, quant=level, quantizer=qz, quantize_s=round(secs, 3), reps=reps,
                                   threads=threads, n_gpu_layers=n_gpu_layers, progress=progress,
                                   rows_dir=rows_dir, fresh=fresh)
        rows.append(row)
        details[f"{level}/{qz}"] = detail

    bp = base.base_stats()
    base_info = {"source": str(src), "file": str(base_path), "type": base_row.quant, "bytes": base_row.bytes,
                 "bpw": base_row.bpw, "ppl": bp.ppl, "ppl_err": bp.ppl_err,
                 "pp_tps": base_row.pp_tps, "pp_tps_std": base_row.pp_tps_std,
                 "tg_tps": base_row.tg_tps, "tg_tps_std": base_row.tg_tps_std}
    text_info = {"name": text_label, "sha256": base.meta["text_sha256"], "tokens": int(base.meta["n_tokens"]),
                 "ctx": ctx, "chunks": base.n_chunks}
    result = BenchResult(base=base_info, text=text_info, tokens_scored=base.tokens_scored, rows=rows,
                         extra={"details": details, "base_detail": base_detail, "facts": base_facts,
                                "seconds": time.perf_counter() - t_start})
    result.sweet_spot = benchreport.sweet_spot(result, max_kld=max_kld, fit_ctx=fit_ctx or DEFAULT_FIT_CTX,
                                               n_gpu_layers=n_gpu_layers)
    return result


def base_facts_label(facts: dict) -> str:
    kinds = set(facts["types"]) & FLOAT_TYPES
    for t in ("BF16", "F16"):   # norms stay F32 in every file: name the matrices' type
        if t in kinds:
            return t
    return "F32"
