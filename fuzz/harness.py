"""Drive the fuzz worker: make mutants, run them with a deadline, judge each outcome, keep the
inputs that failed in fuzz/corpus/<target>/<id>/ (replayed by tests/test_fuzz.py).

An outcome is fine when the library either succeeds (and wrote a valid GGUF) or raises a
GgtoolError whose message is one line that names the file (or its folder) and that has a hint.
Anything else (another exception, MemoryError under the worker's rlimit, a hang past the
deadline, a dead worker) is a bug.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
import os
import selectors
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import seeds as seedlib
from .targets import TARGETS, Seed

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus"


class Worker:
    """One `python -m fuzz.worker` process, restarted when it dies or hangs."""

    def __init__(self, log: Path, timeout: float = 30.0, mem_mb: int = 3072, seeds: Path | None = None):
        self.log, self.timeout, self.mem_mb, self.seeds = Path(log), timeout, mem_mb, seeds
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "GGTOOL_FUZZ_MEM_MB": str(self.mem_mb), "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1",
               "GGTOOL_FUZZ_SEEDS": str(self.seeds)}
        env.pop("GGTOOL_DEBUG", None)
        self._err = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "fuzz.worker"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        line = self._readline(120)
        if not line or b"ready" not in line:
            raise RuntimeError(f"fuzz worker did not start: {self._tail()}")

    def _readline(self, timeout: float) -> bytes | None:
        """The next answer line; b"" when the worker died, None after `timeout` seconds."""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                return None
        finally:
            sel.close()
        return self.proc.stdout.readline()

    def _tail(self, n: int = 4000) -> str:
        self._err.flush()
        data = self.log.read_bytes() if self.log.exists() else b""
        return data[-n:].decode("utf-8", "replace")

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._err.close()

    def run(self, target: str, folder: Path) -> dict:
        if self.proc is None:
            self._start()
        req = {"target": target, "folder": str(folder), "timeout": self.timeout}
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._readline(self.timeout + 15)
        if line:
            return json.loads(line)
        # dead (faulthandler's deadline, a segfault, the OOM killer) or stuck in C past the deadline
        if line is None:
            self.proc.kill()
        rc = self.proc.wait()
        tail = self._tail()
        self._kill()
        self.restarts += 1
        hang = line is None or "Timeout (" in tail
        return {"outcome": "hang" if hang else "crash", "cls": "Hang" if hang else f"exit {rc}",
                "message": f"no answer within {self.timeout:.0f} s" if hang else f"worker died (exit code {rc})",
                "traceback": tail, "cpu": 0.0, "wall": time.perf_counter() - t0}

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._err.close()


def judge(res: dict, names: list[str]) -> str | None:
    """None when the outcome is acceptable, else what is wrong with it."""
    o = res["outcome"]
    if o == "ok":
        return None
    msg = res.get("message", "")
    if o != "error":
        return f"{o}: {res.get('cls')}: {msg[:300]}"
    if not (res.get("hint") or "").strip():
        return f"{res['cls']} without a hint: {msg[:300]}"
    if "\n" in msg or len(msg) > 1000:
        return f"{res['cls']} message is not one short line: {msg[:300]!r}"
    if not any(n in msg for n in names):
        return f"{res['cls']} does not name the file: {msg[:300]}"
    return None


@dataclass
class Result:
    target: str
    seed: str
    files: dict[str, bytes]
    outcome: dict
    problem: str | None


@dataclass
class Stats:
    mutants: int = 0
    outcomes: Counter = field(default_factory=Counter)
    problems: list[Result] = field(default_factory=list)
    cpu: float = 0.0
    wall: float = 0.0
    max_wall: float = 0.0
    max_cpu: float = 0.0
    mutator_errors: int = 0

    def add(self, r: Result) -> None:
        self.mutants += 1
        o = r.outcome
        self.outcomes[o["outcome"] if o["outcome"] != "error" else o["cls"]] += 1
        self.cpu += o.get("cpu", 0.0)
        self.wall += o.get("wall", 0.0)
        self.max_wall = max(self.max_wall, o.get("wall", 0.0))
        self.max_cpu = max(self.max_cpu, o.get("cpu", 0.0))
        if r.problem:
            self.problems.append(r)

    def line(self, name: str) -> str:
        top = ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common(6))
        return (f"{name:<12} {self.mutants:>7} mutants  {len(self.problems):>3} not a GgtoolError/ok  "
                f"cpu {self.cpu:7.1f} s  slowest {self.max_cpu:5.2f} s cpu / {self.max_wall:5.2f} s wall  [{top}]")


class Fuzzer:
    """Seeds built once under `workdir`, one worker, mutants materialized and removed one by one."""

    def __init__(self, workdir: Path, timeout: float = 30.0, mem_mb: int = 3072, targets=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = set(targets or [t for t in TARGETS if not t.startswith("_")])
        wanted = {s for t in names for s in TARGETS[t].seeds}
        self.seed_dirs = seedlib.build(self.workdir / "seeds", only=wanted)
        self._seeds: dict[str, Seed] = {}
        self.worker = Worker(self.workdir / "worker.log", timeout, mem_mb, seeds=self.workdir / "seeds")
        self._n = 0

    def seed(self, name: str) -> Seed:
        if name not in self._seeds:
            self._seeds[name] = Seed(name, self.seed_dirs[name])
        return self._seeds[name]

    def mutant(self, target: str, rng) -> tuple[str, dict[str, bytes]]:
        t = TARGETS[target]
        seed = rng.choice(t.seeds)
        return seed, t.mutate(rng, self.seed(seed))

    def run(self, target: str, seed: str | None, files: dict[str, bytes]) -> Result:
        """Run one input: the seed's files with `files` written over them (seed None: `files` only)."""
        self._n += 1
        folder = self.workdir / f"m{self._n:06d}-{seed or 'noseed'}"
        seedlib.materialize(self.seed_dirs[seed] if seed else None, files, folder)
        try:
            res = self.worker.run(target, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        names = sorted(set(self.seed(seed).files() if seed else ()) | set(files) | {folder.name}
                       | set(TARGETS[target].names))
        return Result(target, seed, files, res, judge(res, names))

    def close(self) -> None:
        self.worker.close()


# --------------------------------------------------------------------------- the corpus

PATCH = ".patch.json"


def _patch(seed: bytes, data: bytes) -> dict:
    """data as the seed file with one middle span replaced (mutants differ from their seed in one
    region, mostly): a 300 kB GGUF mutant is kept as a few hundred bytes."""
    n = min(len(seed), len(data))
    pre = next((i for i in range(n) if seed[i] != data[i]), n)
    suf = 0
    while suf < n - pre and seed[len(seed) - 1 - suf] == data[len(data) - 1 - suf]:
        suf += 1
    return {"seed_sha256": hashlib.sha256(seed).hexdigest(), "prefix": pre, "suffix": suf,
            "middle_zlib": base64.b64encode(zlib.compress(data[pre: len(data) - suf], 9)).decode(), "size": len(data)}


def _unpatch(seed: bytes, p: dict) -> bytes | None:
    if hashlib.sha256(seed).hexdigest() != p["seed_sha256"]:
        return None
    tail = seed[len(seed) - p["suffix"]:] if p["suffix"] else b""
    return seed[: p["prefix"]] + zlib.decompress(base64.b64decode(p["middle_zlib"])) + tail


def save(r: Result, seed_dir: Path | None, corpus: Path = CORPUS) -> Path:
    """Keep a failing input: corpus/<target>/<id>/ holds meta.json and each changed file, as is
    or (big files of the seed) as a patch against the seed file."""
    h = hashlib.sha256(r.seed.encode() if r.seed else b"")
    for k in sorted(r.files):
        h.update(k.encode() + b"\0" + r.files[k])
    d = corpus / r.target / h.hexdigest()[:12]
    d.mkdir(parents=True, exist_ok=True)
    for k, v in r.files.items():
        base = seed_dir / k if seed_dir is not None else None
        if base is not None and base.is_file() and len(v) > 4096:
            (d / (k + PATCH)).write_text(json.dumps(_patch(base.read_bytes(), v)) + "\n")
        else:
            (d / k).write_bytes(v)
    (d / "meta.json").write_text(json.dumps({"seed": r.seed, "problem": r.problem,
                                             "outcome": {k: (v[:300] if isinstance(v, str) else v)
                                                         for k, v in r.outcome.items() if k != "traceback"}},
                                            indent=2) + "\n")
    return d


def corpus_entries(corpus: Path = CORPUS) -> list[tuple[str, Path]]:
    """(target, entry folder) of every kept input whose target exists here."""
    out = []
    for d in sorted(corpus.glob("*/*/meta.json")):
        if d.parent.parent.name in TARGETS and not d.parent.parent.name.startswith("_"):
            out.append((d.parent.parent.name, d.parent))
    return out


def load_entry(d: Path, seed_dirs: dict[str, Path]) -> tuple[str, dict[str, bytes]]:
    """(seed, files) of a corpus entry; raises LookupError if a patch's seed file has changed."""
    meta = json.loads((d / "meta.json").read_text())
    seed, files = meta["seed"], {}
    for p in d.iterdir():
        if p.name == "meta.json":
            continue
        if p.name.endswith(PATCH):
            name = p.name[: -len(PATCH)]
            data = _unpatch((seed_dirs[seed] / name).read_bytes(), json.loads(p.read_text()))
            if data is None:
                raise LookupError(f"{d}: the seed file {seed}/{name} has changed since this input was kept")
            files[name] = data
        else:
            files[p.name] = p.read_bytes()
    return seed, files
