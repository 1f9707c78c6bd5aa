"""llama.cpp's per-block scale searches (ggml-quants.c), reproduced bit for bit in numpy.

    make_qx    make_qx_quants(rmse_type=1) with weights: symmetric, 19 inverse scales
               (Q3_K, Q6_K, Q4_0/Q5_0 with an imatrix)
    make_qkx   make_qkx2_quants / make_qkx3_quants: asymmetric scale + min
               (Q2_K, Q4_K, Q5_K, Q4_1/Q5_1 with an imatrix)
    make_qp    make_qp_quants: unsigned scales of the sub-block scales (Q2_K, Q4_K, Q5_K)

Each works on many blocks at once, one per row: x, w (S, n) float32; the loops run over the n
columns, so every block's sums stay sequential as in C. The C kernels use the same routines
from native/ggq_search.h (Q4_K/Q5_K run make_qkx across vector lanes in native/k_quants.c).
"""

from __future__ import annotations

import numpy as np

from .primitives import F32, GROUP_MAX_EPS, nint, seq_sum, signed_absmax

LLAMA_QX_STEPS = tuple(i for i in range(-9, 10) if i != 0)  # make_qx_quants' extra trials


def make_qx(x: np.ndarray, w: np.ndarray, nmax: int):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, w) on (S, n) blocks.

    -> scale (S,), L (S, n) int32 in 0..2*nmax-1 (q + nmax); scale 0 and L 0 for a block
    whose largest |x| is below GROUP_MAX_EPS."""
    fn = F32(nmax)
    mx = signed_absmax(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx).astype(F32)
    wx = w * x

    def trial(iscale):
        l = np.clip(nint(iscale[:, None] * x), -nmax, nmax - 1).astype(F32)
        return l, seq_sum(wx * l), seq_sum((w * l) * l)

    l, sumlx, suml2 = trial(-fn / mx)
    L = l
    with np.errstate(all="ignore"):
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = scale * sumlx
        for s in LLAMA_QX_STEPS:
            l, sumlx, suml2 = trial(-(F32(0.1) * F32(s) + fn) / mx)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            if better.any():
                L = np.where(better[:, None], l, L)
                sc = sumlx / np.where(better, suml2, F32(1))
                scale = np.where(better, sc, scale).astype(F32)
                best = np.where(better, sc * sumlx, best).astype(F32)
    L = (L + fn).astype(np.int32)
    L[zero] = 0
    scale[zero] = 0
    return scale, L


def make_qkx(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
             use_mad: bool = False, guarded: bool = False):
    """make_qkx2_quants / make_qkx3_quants with weights on (S, n) blocks: x ~ scale*L - the_min.

    -> scale (S,), the_min (S,) (= -min >= 0), L (S, n) int32 in 0..nmax; a flat block
    (max == min) gets scale 0 and L 0.
    use_mad: errors sum w*|diff| instead of w*diff^2 (make_qkx2_quants for Q2_K).
    guarded: the form the Q4_1/Q5_1 candidates use (ggtool's guards, not llama.cpp's): a block
      narrower than GROUP_MAX_EPS is flat and a trial whose span is narrower is skipped, min
      and max are +0.0 rather than -0.0, the weight sums start from 0, and levels round as
      floats (rint, then clamp), so that no value of any size reaches the integer trick.
    As upstream, an accepted candidate's min replaces the running min, so later candidates
    are measured from it: the search over candidates is sequential.
    """
    S, n = x.shape
    fnmax = F32(nmax)
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    for i in range(1, n):
        xi = x[:, i]
        mn = np.where(xi < mn, xi, mn)
        mx = np.where(xi > mx, xi, mx)
    mn = np.where(mn > 0, F32(0), mn).astype(F32)
    sum_w = w[:, 0] + F32(0) if guarded else w[:, 0].copy()   # C: from 0, or from element 0
    sum_x = w[:, 0] * x[:, 0] + F32(0) if guarded else w[:, 0] * x[:, 0]
    for i in range(1, n):
        sum_w, sum_x = sum_w + w[:, i], sum_x + w[:, i] * x[:, i]
    if guarded:
        mn, mx = mn + F32(0), mx + F32(0)
        flat = (mx <= mn) | (mx - mn < GROUP_MAX_EPS)
    else:
        flat = mx == mn

    def levels(iscale, m):
        v = iscale[:, None] * (x - m[:, None])
        if guarded:
            return np.clip(np.rint(v), 0, nmax).astype(F32)
        return np.clip(nint(v), 0, nmax).astype(F32)

    def error(scale, m, L):
        diff = scale[:, None] * L + m[:, None] - x
        return seq_sum(w * (np.abs(diff) if use_mad else diff * diff))

    with np.errstate(all="ignore"):
        iscale = fnmax / (mx - mn)
        scale = F32(1) / iscale
        L = levels(iscale, mn)
        best = error(scale, mn, L)
        for c in range(nstep + 1):
            span = mx - mn
            isc = ((F32(rmin) + F32(rdelta) * F32(c)) + fnmax) / span
            La = levels(isc, mn)
            wl = w * La
            sum_l, sum_l2, sum_xl = seq_sum(np.stack([wl, wl * La, wl * x]))
            D = sum_w * sum_l2 - sum_l * sum_l
            t_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            t_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = t_min > 0
            t_min = np.where(pos, F32(0), t_min).astype(F32)
            t_scale = np.where(pos, sum_xl / sum_l2, t_scale).astype(F32)
            err = error(t_scale, t_min, La)
            take = (D > 0) & (err < best)
            if guarded:
                take &= span >= GROUP_MAX_EPS
            best = np.where(take, err, best).astype(F32)
            scale = np.where(take, t_scale, scale).astype(F32)
            mn = np.where(take, t_min, mn).astype(F32)
            L = np.where(take[:, None], La, L)
    scale = np.where(flat, F32(0), scale).astype(F32)
    L = np.where(flat[:, None], 0, L)
    return scale, (-mn).astype(F32), L.astype(np.int32)


def make_qp(x: np.ndarray, w: np.ndarray, nmax: int):
    """make_qp_quants on (S, n) non-negative values -> scale (S,), L (S, n) int32 in 0..255.

    L is what llama.cpp stores in its uint8 array (so wraps modulo 256 like C would)."""
    S, n = x.shape
    fnmax = F32(nmax)
    mx = np.zeros(S, F32)
    for i in range(n):
        mx = np.where(mx > x[:, i], mx, x[:, i]).astype(F32)
    zero = mx < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = fnmax / mx
        L = nint(iscale[:, None] * x) & 0xFF
        scale = F32(1) / iscale
        best = np.zeros(S, F32)
        for i in range(n):
            diff = x[:, i] - scale * L[:, i].astype(F32)
            best = best + w[:, i] * diff * diff
        for is_ in (-4, -3, -2, -1, 1, 2, 3, 4):
            isc = (F32(0.1) * F32(is_) + fnmax) / mx
            sc = F32(1) / isc
            mse = np.zeros(S, F32)
            for i in range(n):
                li = np.minimum(nmax, nint(isc * x[:, i])).astype(F32)
                diff = x[:, i] - sc * li
                mse = mse + w[:, i] * diff * diff
            take = mse < best
            best = np.where(take, mse, best)
            iscale = np.where(take, isc, iscale).astype(F32)
        sumlx = np.zeros(S, F32)
        suml2 = np.zeros(S, F32)
        for i in range(n):
            li = np.minimum(nmax, nint(iscale * x[:, i]))
            L[:, i] = li & 0xFF
            lf = li.astype(F32)
            sumlx = sumlx + w[:, i] * x[:, i] * lf
            suml2 = suml2 + w[:, i] * lf * lf
        for _ in range(5):  # a pass without changes leaves the state as it was
            for i in range(n):
                wi, xi = w[:, i], x[:, i]
                Lf = L[:, i].astype(F32)
                slx = sumlx - wi * xi * Lf
                sl2 = suml2 - wi * Lf * Lf
                ok = (slx > 0) & (sl2 > 0)
                new_l = np.minimum(nmax, nint(xi * sl2 / slx))
                ok &= new_l != L[:, i]
                nf = new_l.astype(F32)
                slx = slx + wi * xi * nf
                sl2 = sl2 + wi * nf * nf
                ok &= slx * slx * suml2 > sumlx * sumlx * sl2
                L[:, i] = np.where(ok, new_l & 0xFF, L[:, i])
                sumlx = np.where(ok, slx, sumlx).astype(F32)
                suml2 = np.where(ok, sl2, suml2).astype(F32)
        out = np.where(suml2 > 0, sumlx / suml2, F32(0)).astype(F32)
    out = np.where(zero, F32(0), out).astype(F32)
    L = np.where(zero[:, None], 0, L)
    return out, L
