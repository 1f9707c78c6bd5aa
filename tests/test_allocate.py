"""The allocator: never over budget, deterministic, damage non-increasing as the budget grows,
every type legal for its row length; the smallest-file error names the smallest size."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from ggtool.plan.allocate import allocate, hull, smallest, total
from ggtool.errors import QuantError
from ggtool.plan.sensitivity import bytes_of, candidates


def synthetic(seed=0, n=40):
    """Tensors of varied shapes (rows of 256-multiples and not), damage ~ gain * 2^(-2 bpw)
    with noise (so hulls are not trivially convex)."""
    rng = np.random.default_rng(seed)
    opts = {}
    for i in range(n):
        shape = (int(rng.integers(1, 40)) * 32, [576, 1536, 256, 96, 100][i % 5])
        gain = float(rng.lognormal(0, 1.5))
        o = []
        for t in candidates(shape):
            b = bytes_of(t, shape)
            bpw = 8 * b / (shape[0] * shape[1])
            o.append((t, b, gain * 2.0 ** (-2 * bpw) * float(rng.uniform(0.7, 1.3))))
        opts[f"blk.{i}.w"] = o
    return opts


def test_hull_is_convex_and_decreasing():
    for o in synthetic(1).values():
        h = hull(o)
        b = [p[1] for p in h]
        d = [p[2] for p in h]
        assert b == sorted(b) and all(x > y for x, y in zip(d, d[1:]))
        slopes = [(d[i] - d[i + 1]) / (b[i + 1] - b[i]) for i in range(len(h) - 1)]
        assert all(s1 >= s2 for s1, s2 in zip(slopes, slopes[1:]))
        for p in o:  # every option on or above the hull (beyond its ends: above its last point)
            line = np.interp(p[1], b, d)
            assert p[2] >= line * (1 - 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_budget_monotone_deterministic_legal(seed):
    opts = synthetic(seed)
    lo = smallest(opts)
    hi = sum(max(o[1] for o in v) for v in opts.values())
    prev = None
    rng = np.random.default_rng(seed)
    budgets = sorted(set(np.linspace(lo, hi * 1.02, 60).astype(int).tolist()
                         + rng.integers(lo, hi, 60).tolist()))
    for b in budgets:
        plan = allocate(opts, b)
        assert plan == allocate(opts, b)  # deterministic
        used, dmg = total(opts, plan)
        assert used <= b
        for name, t in plan.items():
            n = int(name.split(".")[1])
            assert t in [o[0] for o in opts[name]]
        if prev is not None:
            assert dmg <= prev + 1e-12 * abs(prev)
        prev = dmg
    # the fill leaves little: within 0.5% of a mid budget
    mid = (lo + hi) // 2
    assert total(opts, allocate(opts, mid))[0] >= mid * 0.995


def test_budget_below_smallest_names_it():
    opts = synthetic(0, n=5)
    lo = smallest(opts)
    assert total(opts, allocate(opts, lo))[0] == lo
    with pytest.raises(QuantError, match=f"smallest reachable size, {lo:,} bytes") as e:
        allocate(opts, lo - 1)
    assert f"{lo:,}" in e.value.hint


def test_legal_types_only():
    assert T.Q4_K not in candidates((10, 576)) and T.Q4_0 in candidates((10, 576))
    assert candidates((10, 100)) == [T.F16]
    assert T.Q2_K in candidates((10, 1536))
