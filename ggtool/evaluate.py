"""Chunked scoring of a model's output, llama-perplexity style: perplexity, and KL divergence
against a base model whose log-probabilities are cached on disk.

    base = evaluate.base_logprobs("m.F16.gguf", text, ctx=512, chunks=20)   # computed once, cached
    stats = evaluate.kld(base, "m.Q4_K_M.gguf")                              # KLDStats
    for path, s in evaluate.kld_many(base, ["a.gguf", "b.gguf"]): ...
    ppl = evaluate.perplexity("m.gguf", text, ctx=512, chunks=20)            # PPLStats

As llama-perplexity (tools/perplexity/perplexity.cpp): the text is tokenized once (BOS added
when the model's vocabulary says so), cut into chunks of `ctx` tokens; each chunk starts with
BOS when the model adds one (it replaces the chunk's first token); the KV cache is cleared
between chunks; the logits at positions ctx/2 .. ctx-2 score the tokens ctx/2+1 .. ctx-1
(ctx - 1 - ctx/2 tokens per chunk). Log-softmax in float64.

Base log-probabilities on disk (one directory per base content x text x ctx, one file per chunk,
each written atomically, so an interrupted run resumes and a later run with more chunks extends
it). Each scored token is a row: the exact float64 NLL of the actual next token, the exact
argmax, and the log-softmax of all n_vocab tokens quantized like llama-perplexity's
--kl-divergence-base file: uint16 codes 1..65535 linear over [max(min, top - 32), top] nats
(step <= 4.9e-4 nat, rounding error <= 2.4e-4 nat); code 0 = more than 32 nats below the top,
left out. Two
differences from llama.cpp, both measured (tests/test_evaluate.py, README "Bench"): the decoded
distribution is renormalized over the kept tokens, which makes the rounding error of the KLD
second order; and the range is 32 nats, not 16: on SmolLM2 the probability mass llama.cpp's 16
leaves out adds +4% to a Q8_0 file's mean KLD, while with 32 the mean KLD from the cache is
within 1e-5 (relative) of the one from float32 logits. Size: 2 * n_vocab + 32 bytes per scored
token (SmolLM2's 49152 tokens: 25 MB per 512-token chunk).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import InputError
from .evalstats import KLDStats, PPLStats
from .fingerprint import file_sha256, text_sha256
from .llamacpp.context import LlamaModel, default_threads
from .paths import cache_dir
from .progress import bar

DEFAULT_TEXT = "eval-alice29.txt"  # Alice's Adventures in Wonderland (public domain), not the calibration text
LOGPROB_RANGE = 32.0               # nats below the top token kept in the base cache (llama.cpp: 16)
FORMAT = "ggtool-base-logprobs"
VERSION = 1
BLOCK_ROWS = 32                    # rows of float64 vocab-wide temporaries at a time


# ---------------------------------------------------------------------------- text and chunks

def default_text() -> str:
    """The evaluation text shipped with ggtool (ggtool/data/eval-alice29.txt)."""
    return resources.files("ggtool").joinpath(f"data/{DEFAULT_TEXT}").read_text(encoding="utf-8")


def read_text(path: str | Path | None) -> tuple[str, str]:
    """(text, label) of an evaluation text file, or of the default text when path is None."""
    if path is None:
        return default_text(), f"{DEFAULT_TEXT} (default)"
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8"), p.name
    except FileNotFoundError:
        raise InputError(f"text file {p} does not exist", hint="give a UTF-8 text file with --text") from None
    except UnicodeDecodeError as e:
        raise InputError(f"text file {p} is not UTF-8 ({e.reason} at byte {e.start})",
                         hint="convert it to UTF-8 first") from None


@dataclass
class Chunking:
    """The text's tokens cut into chunks of ctx, llama-perplexity style."""

    tokens: np.ndarray  # (n,) int32, the whole text
    ctx: int
    n_chunks: int
    add_bos: bool
    bos: int

    @property
    def first(self) -> int:
        return self.ctx // 2

    @property
    def n_scored(self) -> int:
        """Tokens scored per chunk."""
        return self.ctx - 1 - self.first

    def chunk(self, i: int) -> np.ndarray:
        """(ctx,) the tokens evaluated for chunk i (first token replaced by BOS when the model adds one)."""
        t = self.tokens[i * self.ctx:(i + 1) * self.ctx].copy()
        if self.add_bos:
            t[0] = self.bos
        return t

    def outputs(self) -> range:
        """Positions within a chunk whose logits are scored."""
        return range(self.first, self.ctx - 1)

    def targets(self, i: int) -> np.ndarray:
        """(n_scored,) the tokens the scored positions predict."""
        s = i * self.ctx
        return self.tokens[s + self.first + 1:s + self.ctx]


def chunking(tokens: np.ndarray, ctx: int, chunks: int | None, add_bos: bool, bos: int) -> Chunking:
    if ctx < 8:
        raise InputError(f"--ctx {ctx} is too small", hint="use at least 8 (llama-perplexity uses 512)")
    available = len(tokens) // ctx
    if available < 1:
        raise InputError(
            f"the text has {len(tokens)} tokens; one chunk of --ctx {ctx} needs {ctx} tokens"
            + (f" ({chunks} chunks need {chunks * ctx})" if chunks and chunks > 1 else ""),
            hint=f"give a longer text (--text), or a smaller --ctx (at most {max(len(tokens), 8)})")
    if chunks is not None and chunks < 1:
        raise InputError(f"--chunks {chunks} must be at least 1")
    n = available if chunks is None else min(chunks, available)
    return Chunking(np.asarray(tokens, dtype=np.int32), ctx, n, add_bos, bos)


def tokenize(model: LlamaModel, text: str) -> np.ndarray:
    if model.add_eos:
        # llama-perplexity asserts the same: an EOS after every chunk would be scored as text
        raise InputError(f"{model.path.name}'s tokenizer appends EOS to every text; perplexity is undefined",
                         hint="this model cannot be scored llama-perplexity style")
    return model.tokenize(text, add_special=True, parse_special=False)


# ---------------------------------------------------------------------------- numerics

def log_softmax64(logits: np.ndarray) -> np.ndarray:
    """(k, V) float32 -> (k, V) float64 log-probabilities."""
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def row_dtype(n_vocab: int) -> np.dtype:
    return np.dtype([("lo", "<f8"), ("scale", "<f8"), ("nll", "<f8"), ("top", "<i4"), ("pad", "<i4"),
                     ("q", "<u2", (n_vocab,))])


def encode_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(k, V) float32 logits + (k,) next tokens -> (k,) rows of the base cache."""
    k, V = logits.shape
    rows = np.zeros(k, dtype=row_dtype(V))
    for a in range(0, k, BLOCK_ROWS):
        b = min(k, a + BLOCK_ROWS)
        lp = log_softmax64(logits[a:b])
        hi = lp.max(axis=1)
        lo = np.maximum(lp.min(axis=1), hi - LOGPROB_RANGE)
        scale = (hi - lo) / 65534.0                       # code 1 = lo, code 65535 = hi
        safe = np.where(scale > 0, scale, 1.0)
        codes = 1 + np.rint((lp - lo[:, None]) / safe[:, None])
        codes = np.where(lp >= lo[:, None], codes, 0)   # 0: below the range (the row minimum is kept)
        codes[scale == 0] = 1                           # every logit equal: a uniform row, all kept
        rows["q"][a:b] = codes.astype(np.uint16)
        rows["lo"][a:b], rows["scale"][a:b] = lo, scale
        rows["nll"][a:b] = -lp[np.arange(b - a), targets[a:b]]
        rows["top"][a:b] = np.argmax(logits[a:b], axis=1)
    return rows


def decode_rows(rows: np.ndarray) -> np.ndarray:
    """(k,) base-cache rows -> (k, V) float64 log-probabilities, -inf for left-out tokens,
    renormalized over the kept ones."""
    codes = rows["q"]
    v = rows["lo"][:, None] + rows["scale"][:, None] * (codes.astype(np.float64) - 1)
    v[codes == 0] = -np.inf
    m = v.max(axis=1, keepdims=True)
    v -= m + np.log(np.exp(v - m).sum(axis=1, keepdims=True))
    return v


def kld_rows(rows: np.ndarray, logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per scored token: (nll, nll_base, kld, same_top, dp) of `logits` against the base rows.

    With v the decoded base values (log-probs up to a constant), x the logits, p_b the base
    distribution renormalized over the kept tokens K and LSE the log-sum-exp over K (base) or
    all tokens (model): KLD = sum_K p_b (v - x) - LSE_b(v) + LSE(x). Same value as
    sum p_b (log p_b - log q), in fewer passes over the vocabulary (all float64)."""
    k = len(rows)
    out = [np.empty(k), np.empty(k), np.empty(k), np.empty(k, dtype=bool), np.empty(k)]
    for a in range(0, k, BLOCK_ROWS):
        b = min(k, a + BLOCK_ROWS)
        r = rows[a:b]
        x = logits[a:b].astype(np.float64)                       # (n, V)
        mx = x.max(axis=1, keepdims=True)
        t = np.subtract(x, mx)
        np.exp(t, out=t)
        lse_q = mx[:, 0] + np.log(t.sum(axis=1))
        codes = r["q"]
        v = codes.astype(np.float64)
        v -= 1.0
        v *= r["scale"][:, None]
        v += r["lo"][:, None]
        hi = (r["lo"] + r["scale"] * 65534.0)[:, None]            # the top code's value
        np.subtract(v, hi, out=t)
        np.exp(t, out=t)                                         # p_b * Z, before masking
        np.copyto(t, 0.0, where=codes == 0)
        z = t.sum(axis=1)
        lse_b = hi[:, 0] + np.log(z)
        v -= x                                                   # v - x
        kld = np.einsum("ij,ij->i", t, v) / z - lse_b + lse_q
        nll = lse_q - x[np.arange(b - a), targets[a:b]]
        nll_base = r["nll"]
        out[0][a:b], out[1][a:b], out[2][a:b] = nll, nll_base, np.maximum(kld, 0.0)
        out[3][a:b] = np.argmax(logits[a:b], axis=1) == r["top"]
        out[4][a:b] = np.exp(-nll) - np.exp(-nll_base)
    return tuple(out)


# ---------------------------------------------------------------------------- running a model

def chunk_logits(model: LlamaModel, ch: Chunking, indices: Iterable[int], threads: int | None = None,
                 n_batch: int | None = None, flash_attn: bool | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(i, (n_scored, V) float32 logits) for each chunk index, one fresh KV cache per chunk.
    flash_attn: None = llama.cpp's default (auto), as llama-perplexity."""
    with model.context(n_ctx=ch.ctx, n_batch=min(ch.ctx, n_batch or 2048), n_threads=threads,
                       flash_attn=flash_attn) as ctx:
        for i in indices:
            ctx.clear()
            yield i, ctx.decode(ch.chunk(i), outputs=ch.outputs(), pos0=0)


def _open_model(model, n_gpu_layers: int = 0) -> tuple[LlamaModel, bool]:
    if isinstance(model, LlamaModel):
        return model, False
    return LlamaModel(model, n_gpu_layers=n_gpu_layers), True


def perplexity(model, text: str, ctx: int = 512, chunks: int | None = None, *, threads: int | None = None,
               progress: bool = True, n_gpu_layers: int = 0, flash_attn: bool | None = None) -> PPLStats:
    """Perplexity of a model (path or LlamaModel) on `text`, llama-perplexity style."""
    m, owned = _open_model(model, n_gpu_layers)
    try:
        ch = chunking(tokenize(m, text), ctx, chunks, m.add_bos, m.bos)
        nll = []
        with bar(ch.n_chunks, f"perplexity {m.path.name}", progress, "chunk") as pb:
            for i, lg in chunk_logits(m, ch, range(ch.n_chunks), threads, flash_attn=flash_attn):
                lp = log_softmax64(lg)
                nll.append(-lp[np.arange(len(lg)), ch.targets(i)])
                pb.update(1)
        return PPLStats.from_nll(np.concatenate(nll))
    finally:
        if owned:
            m.close()


# ---------------------------------------------------------------------------- the base cache

class BaseLogprobs:
    """A base model's log-probabilities on a text, one file per chunk under `directory`."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        try:
            self.meta = json.loads((self.dir / "meta.json").read_text())
            if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
                raise InputError(f"{self.dir} is not a ggtool base log-prob cache of version {VERSION}",
                                 hint="delete it; it is recomputed")
            self.tokens = np.load(self.dir / "tokens.npy")  # never a pickle (allow_pickle is off)
            self.ctx = int(self.meta["ctx"])
            self.n_vocab = int(self.meta["n_vocab"])
            self.base_path = Path(self.meta["base_file"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"the base log-prob cache {self.dir} is damaged ({e.__class__.__name__})",
                             hint="delete that folder; it is recomputed") from None
        self.n_chunks = 0   # chunks in use (set by `ensure`)
        self.dtype = row_dtype(self.n_vocab)

    def chunking(self, chunks: int | None = None) -> Chunking:
        m = self.meta
        return chunking(self.tokens, self.ctx, chunks if chunks is not None else self.n_chunks or None,
                        m["add_bos"], m["bos"])

    def _chunk_file(self, i: int) -> Path:
        return self.dir / f"chunk_{i:05d}.lp"

    def has_chunk(self, i: int) -> bool:
        f = self._chunk_file(i)
        n_scored = self.ctx - 1 - self.ctx // 2
        return f.is_file() and f.stat().st_size == n_scored * self.dtype.itemsize

    def rows(self, i: int) -> np.ndarray:
        """(n_scored,) rows of chunk i, memory-mapped (read-only)."""
        return np.memmap(self._chunk_file(i), dtype=self.dtype, mode="r")

    def ensure(self, chunks: int | None, base_path=None, *, threads: int | None = None, progress: bool = True,
               n_gpu_layers: int = 0) -> "BaseLogprobs":
        """Compute the chunks that are missing (only those), then use the first `chunks` chunks."""
        fa = self.meta.get("flash_attn")
        ch = self.chunking(chunks)
        for stale in self.dir.glob("*.incomplete"):   # left by a killed run (an hour is plenty)
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
        missing = [i for i in range(ch.n_chunks) if not self.has_chunk(i)]
        if missing:
            with LlamaModel(base_path or self.base_path, n_gpu_layers=n_gpu_layers) as m, \
                    bar(len(missing), f"base log-probs {m.path.name}", progress, "chunk") as pb:
                for i, lg in chunk_logits(m, ch, missing, threads, flash_attn=fa):
                    _write_atomic(self._chunk_file(i), encode_rows(lg, ch.targets(i)).tobytes())
                    pb.update(1)
        self.n_chunks = ch.n_chunks
        return self

    def base_stats(self) -> PPLStats:
        """Perplexity of the base itself (from the exact NLLs in the cache)."""
        nll = np.concatenate([np.asarray(self.rows(i)["nll"]) for i in range(self.n_chunks)])
        return PPLStats.from_nll(nll)

    @property
    def tokens_scored(self) -> int:
        return self.n_chunks * self.chunking().n_scored

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.dir.glob("chunk_*.lp"))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.incomplete")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def base_logprobs(base_path, text: str, ctx: int = 512, chunks: int | None = None, *,
                  cache_root: str | Path | None = None, threads: int | None = None, progress: bool = True,
                  n_gpu_layers: int = 0, base_sha256: str | None = None,
                  flash_attn: bool | None = None) -> BaseLogprobs:
    """The base model's log-probabilities on `text` (cached: computed only for missing chunks).
    flash_attn: None = llama.cpp's default (auto); True/False force it (and key the cache)."""
    base_path = Path(base_path)
    root = Path(cache_root) if cache_root else cache_dir() / "logprobs"
    sha = base_sha256 or file_sha256(base_path)
    tsha = text_sha256(text)
    d = root / (f"{sha[:16]}-{tsha[:16]}-ctx{ctx}" + ("" if flash_attn is None else f"-fa{int(flash_attn)}"))
    if not (d / "meta.json").is_file():
        with LlamaModel(base_path, n_gpu_layers=n_gpu_layers) as m:
            toks = tokenize(m, text)
            chunking(toks, ctx, chunks, m.add_bos, m.bos)  # too short: say so before writing anything
            meta = {"format": FORMAT, "version": VERSION, "base_sha256": sha, "base_file": str(base_path.resolve()),
                    "text_sha256": tsha, "ctx": ctx, "n_vocab": m.n_vocab, "add_bos": m.add_bos, "bos": m.bos,
                    "n_tokens": int(toks.size), "logprob_range": LOGPROB_RANGE, "flash_attn": flash_attn,
                    "encoding": f"uint16 codes 1..65535 linear over [max(min, top - {LOGPROB_RANGE:g}), top] nats "
                                "of log-softmax; 0 = left out"}
        d.mkdir(parents=True, exist_ok=True)
        _write_atomic(d / "tokens.npy", _npy_bytes(toks))
        _write_atomic(d / "meta.json", json.dumps(meta, indent=1).encode())
    base = BaseLogprobs(d)
    base.base_path = base_path  # the file may have moved since the cache was made
    return base.ensure(chunks, base_path, threads=threads, progress=progress, n_gpu_layers=n_gpu_layers)


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


# ---------------------------------------------------------------------------- scoring against the base

def kld(base: BaseLogprobs, model, *, chunks: int | None = None, threads: int | None = None,
        progress: bool = True, n_gpu_layers: int = 0, keep_values: bool = False, desc: str | None = None) -> KLDStats:
    """KL divergence (and perplexity, same-top, dp) of `model` (path or LlamaModel) against the base,
    on the base's first `chunks` chunks (default: all it has). Same attention path as the base."""
    m, owned = _open_model(model, n_gpu_layers)
    try:
        if m.n_vocab != base.n_vocab:
            raise InputError(f"{m.path.name} has {m.n_vocab} tokens, the base {base.n_vocab}",
                             hint="compare a model with its own base (same vocabulary)")
        n = base.n_chunks if chunks is None else min(chunks, base.n_chunks)
        ch = base.chunking(n)
        parts = []
        with bar(n, desc or f"score {m.path.name}", progress, "chunk") as pb:
            for i, lg in chunk_logits(m, ch, range(n), threads, flash_attn=base.meta.get("flash_attn")):
                parts.append(kld_rows(base.rows(i), lg, ch.targets(i)))
                pb.update(1)
        cols = [np.concatenate([p[j] for p in parts]) for j in range(5)]
        return KLDStats.from_values(*cols, keep_values=keep_values)
    finally:
        if owned:
            m.close()


def kld_many(base: BaseLogprobs, models: Iterable, **kw) -> Iterator[tuple[object, KLDStats]]:
    """(model, KLDStats) for each model, all against one cached base (loaded one at a time)."""
    for model in models:
        yield model, kld(base, model, **kw)


def pair_kld(model_a, model_b, sequences: Iterable[np.ndarray], *, threads: int | None = None) -> KLDStats:
    """KLD of B against A over every position of short token sequences (prompts, answers),
    both in memory: for `compare`, not for vocab x thousands of tokens."""
    a, own_a = _open_model(model_a)
    b, own_b = _open_model(model_b)
    try:
        if a.n_vocab != b.n_vocab:
            raise InputError(f"{a.path.name} has {a.n_vocab} tokens, {b.path.name} {b.n_vocab}",
                             hint="compare two versions of the same model")
        cols = []
        for seq in sequences:
            seq = np.asarray(seq, dtype=np.int32)
            if seq.size < 2:
                continue
            out = range(seq.size - 1)
            with a.context(n_ctx=seq.size, n_threads=threads) as ca, b.context(n_ctx=seq.size, n_threads=threads) as cb:
                la, lb = ca.decode(seq, outputs=out), cb.decode(seq, outputs=out)
            cols.append(kld_rows(encode_rows(la, seq[1:]), lb, seq[1:]))
        if not cols:
            raise InputError("nothing to compare: every prompt is shorter than 2 tokens")
        return KLDStats.from_values(*[np.concatenate([c[j] for c in cols]) for j in range(5)])
    finally:
        for m, owned in ((a, own_a), (b, own_b)):
            if owned:
                m.close()


__all__ = ["BaseLogprobs", "Chunking", "KLDStats", "PPLStats", "base_logprobs", "chunking", "default_text",
           "default_threads", "kld", "kld_many", "pair_kld", "perplexity", "read_text", "tokenize"]
