"""Long fuzz campaigns: mutants of every target (or those named) until a count or a time is
reached; inputs that end in anything but success or a GgtoolError are kept in
fuzz/corpus/<target>/<id>/ (tests/test_fuzz.py replays them) and printed.

    python -m fuzz.run --seconds 600                 # all targets, 10 minutes each
    python -m fuzz.run --target gguf --count 20000 --seed 7
    python -m fuzz.run --replay                      # the corpus only

Mutant i of a campaign is made by random.Random(f"{seed}:{target}:{i}"), so `--seed S --start
I --count 1` rebuilds exactly one mutant. Prints one line per target: mutants, problems, CPU time.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .harness import CORPUS, Fuzzer, Result, Stats, corpus_entries, judge, load_entry, save
from .targets import TARGETS


def signature(problem: str) -> str:
    """A problem with its numbers and quoted names blanked: one kind of failure."""
    return re.sub(r"'[^']*'|\d+", "_", problem)[:120]


def kept_signatures(target: str) -> Counter:
    out: Counter = Counter()
    for meta in (CORPUS / target).glob("*/meta.json"):
        out[signature(json.loads(meta.read_text()).get("problem") or "")] += 1
    return out


def campaign(fz: Fuzzer, target: str, seed: int, count: int | None, seconds: float | None,
             start: int = 0, keep: bool = True, verbose: bool = False, per_problem: int = 2) -> Stats:
    """Mutants start.. of `target`; a failing one is saved to the corpus unless `per_problem`
    inputs with the same kind of problem are there already."""
    st = Stats()
    seen = kept_signatures(target)
    t_end = time.monotonic() + seconds if seconds else None
    i = start
    while (count is None or i < start + count) and (t_end is None or time.monotonic() < t_end):
        rng = random.Random(f"{seed}:{target}:{i}")
        try:
            seed_name, files = fz.mutant(target, rng)
        except Exception as e:  # a mutator bug: say so and go on (tests/test_fuzz.py would fail on it)
            print(f"  {target} #{i}: the mutator failed: {e.__class__.__name__}: {e}", flush=True)
            st.mutator_errors += 1
            i += 1
            continue
        r = fz.run(target, seed_name, files)
        st.add(r)
        if r.problem:
            sig = signature(r.problem)
            where = save(r, fz.seed_dirs.get(seed_name)) if keep and seen[sig] < per_problem else ""
            seen[sig] += 1
            print(f"  {target} #{i} ({seed_name}): {r.problem} {where}", flush=True)
            if verbose and r.outcome.get("traceback"):
                print(r.outcome["traceback"], flush=True)
        i += 1
    return st


def replay(fz: Fuzzer) -> int:
    bad = 0
    for target, d in corpus_entries():
        seed, files = load_entry(d, fz.seed_dirs)
        r = fz.run(target, seed, files)
        status = "ok" if not r.problem else f"STILL FAILS: {r.problem}"
        bad += bool(r.problem)
        print(f"{target:<12} {d.name}  {r.outcome['outcome']:<6} {status}")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", choices=sorted(t for t in TARGETS if not t.startswith("_")),
                    help="repeatable; default: all")
    ap.add_argument("--count", type=int, help="mutants per target")
    ap.add_argument("--seconds", type=float, help="time per target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first mutant number")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds one input may take")
    ap.add_argument("--mem-mb", type=int, default=3072, help="address-space limit of the worker")
    ap.add_argument("--no-keep", action="store_true", help=f"do not save failures to {CORPUS}")
    ap.add_argument("--per-problem", type=int, default=2, help="inputs kept per kind of failure")
    ap.add_argument("--replay", action="store_true", help="replay the corpus and stop")
    ap.add_argument("-v", "--verbose", action="store_true", help="print tracebacks")
    ap.add_argument("--workdir", help="where seeds and mutants go (default: a temporary folder)")
    args = ap.parse_args(argv)
    targets = args.target or sorted(t for t in TARGETS if not t.startswith("_"))
    if args.count is None and args.seconds is None:
        args.count = 200
    with tempfile.TemporaryDirectory(prefix="ggtool-fuzz-") as tmp:
        fz = Fuzzer(Path(args.workdir or tmp), timeout=args.timeout, mem_mb=args.mem_mb,
                    targets=None if args.replay else targets)
        try:
            if args.replay:
                return 1 if replay(fz) else 0
            total: dict[str, Stats] = {}
            for t in targets:
                t0 = time.monotonic()
                total[t] = campaign(fz, t, args.seed, args.count, args.seconds, args.start,
                                    keep=not args.no_keep, verbose=args.verbose, per_problem=args.per_problem)
                print(total[t].line(t) + f"  wall {time.monotonic() - t0:.0f} s", flush=True)
        finally:
            fz.close()
    return 1 if any(s.problems for s in total.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
