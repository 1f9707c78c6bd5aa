"""The bounded fuzz pass of `make test`, the corpus replay, and the harness's own checks.

Each reader gets `TARGETS[name].budget` seeded mutants (fuzz/targets.py, fuzz/mutators.py),
run in a worker process with an address-space limit and a deadline per input (fuzz/worker.py).
A mutant passes when the library succeeds (writing a GGUF that gguf-py reads) or raises a
GgtoolError whose one-line message names the file and that has a hint. Anything else fails
the test: another exception, MemoryError, a hang, a dead worker. The tests call the library
directly, so cli.main's last line of defence never hides a bug from them.

Mutant i of target t is random.Random(f"0:{t}:{i}"), the same as `python -m fuzz.run`:
    python -m fuzz.run --target gguf --start 123 --count 1 -v     # rebuild and rerun one
"""

from __future__ import annotations

import random

import pytest

from fuzz.harness import Fuzzer, Stats, corpus_entries, load_entry
from fuzz.targets import TARGETS

SEED = 0
READERS = sorted(t for t in TARGETS if not t.startswith("_"))


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    fz = Fuzzer(tmp_path_factory.mktemp("fuzz"), timeout=60)
    yield fz
    fz.close()


def _report(target, r, i=None) -> str:
    where = f"mutant {i} (seed {r.seed}; python -m fuzz.run --target {target} --start {i} --count 1 -v)" \
        if i is not None else f"input from seed {r.seed}"
    return f"{where}: {r.problem}\n{r.outcome.get('traceback', '')[-3000:]}"


@pytest.mark.parametrize("target", READERS)
def test_bounded_pass(target, fuzzer, say):
    t = TARGETS[target]
    st = Stats()
    failures = []
    for i in range(t.budget):
        seed, files = fuzzer.mutant(target, random.Random(f"{SEED}:{target}:{i}"))
        r = fuzzer.run(target, seed, files)
        st.add(r)
        if r.problem:
            failures.append(_report(target, r, i))
    say(st.line(target))
    assert not failures, f"{len(failures)} of {t.budget} mutants of {target} ended badly:\n" + "\n".join(failures[:5])


@pytest.mark.parametrize("target,entry", corpus_entries(), ids=lambda x: getattr(x, "name", x))
def test_corpus_replay(target, entry, fuzzer):
    """Every input that once made a reader fail now ends in success or a proper GgtoolError."""
    try:
        seed, files = load_entry(entry, fuzzer.seed_dirs)
    except LookupError as e:
        pytest.skip(str(e))  # the seeds (tests/tinymodels) changed: rebuild the corpus with fuzz/run.py
    r = fuzzer.run(target, seed, files)
    assert r.problem is None, _report(target, r)


@pytest.mark.parametrize("mode,caught", [
    ("ok", None), ("error", None), ("no-hint", "without a hint"), ("exception", "bug: ValueError"),
    ("alloc", "bug: MemoryError"), ("abort", "crash"), ("hang", "hang"),
])
def test_the_harness_catches_every_kind_of_bug(mode, caught, tmp_path_factory):
    """What the bounded pass would report: a non-GgtoolError, an allocation past the worker's
    address-space limit, a worker that dies, an input that runs past its deadline."""
    fz = Fuzzer(tmp_path_factory.mktemp("selftest"), timeout=3, targets=["_selftest"])
    try:
        r = fz.run("_selftest", None, {"mode": mode.encode()})
        if caught is None:
            assert r.problem is None, r.problem
        else:
            assert r.problem and caught in r.problem, r.problem
        if mode == "hang":  # the dump says where it hung; the next input gets a fresh worker
            assert "run_selftest" in r.outcome["traceback"]
            assert fz.run("_selftest", None, {"mode": b"ok"}).problem is None
    finally:
        fz.close()
