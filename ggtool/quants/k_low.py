"""Q2_K and Q3_K: 256-value super-blocks of 16 sub-blocks of 16 values.

Q2_K  (84 bytes): scales[16] (low nibble scale, high nibble min), qs[64], d, dmin (fp16);
                  x = d*sc*q - dmin*m, q in 0..3.
Q3_K (110 bytes): hmask[32], qs[64], scales[12] (6-bit, stored +32), d (fp16);
                  x = d*(sc-32)*(q-4), q in 0..7 (low 2 bits in qs, third bit in hmask).

Algorithm: first exactly llama.cpp's (ggml-quants.c quantize_row_q{2,3}_K_ref without an
imatrix, quantize_row_q{2,3}_K_impl with one), then a refinement pass that only keeps a change
where it lowers the block's error sum(w*(x - x_hat)^2) (w = imatrix or 1), so the result is
never worse than libggml's. The C kernels (native/q_k_low.c) mirror this file byte for byte:
float32 in C's operation order, sequential sums, llama.cpp's nearest_int bit trick.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import F32, QuantType, fp16_bytes, fp16_round, fp16_value

F64 = np.float64
QK = 256
EPS = F32(1e-15)  # llama.cpp GROUP_MAX_EPS


# ---------------------------------------------------------------- helpers

def _nint(v: np.ndarray) -> np.ndarray:
    """llama.cpp nearest_int bit for bit: half to even, and the same value as C for inf/nan."""
    with np.errstate(all="ignore"):
        t = np.add(np.asarray(v, dtype=F32), F32(12582912.0), dtype=F32)
    return (np.atleast_1d(t).view(np.int32) & 0x7FFFFF) - 0x400000


def _ssum(terms) -> np.ndarray:
    """Sequential sum of an iterable of equally-shaped arrays: C's `acc = 0; acc += t`."""
    acc = None
    for t in terms:
        acc = t + 0 if acc is None else acc + t  # + 0 turns -0.0 into 0.0, as C's 0 + t
    return acc


def _pack2(L: np.ndarray) -> np.ndarray:
    """(nb, 256) values 0..3 -> (nb, 64): qs[32h+l] holds 128h+l+32k at bits 2k."""
    L = L.astype(np.uint8).reshape(-1, 2, 4, 32)
    qs = L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)
    return qs.reshape(-1, 64)


def _unpack2(qs: np.ndarray) -> np.ndarray:
    """(nb, 64) -> (nb, 256) values 0..3."""
    sh = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return ((qs.reshape(-1, 2, 1, 32) >> sh) & 3).reshape(-1, QK)


def _block_weights(imatrix, nrows: int, n: int) -> np.ndarray:
    """imatrix (n,) -> per-block importance (nrows*n/256, 256)."""
    return np.tile(np.asarray(imatrix, dtype=F32).reshape(-1, QK), (nrows, 1))


# ---------------------------------------------------------------- llama.cpp search routines
# All take sub-blocks as rows: x, w (S, n) float32; loops run over the n columns.

def _minmax_sums(x, w):
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, x.shape[1]):
        xi, wi = x[:, i], w[:, i]
        mn = np.where(xi < mn, xi, mn)
        mx = np.where(xi > mx, xi, mx)
        sum_w = sum_w + wi
        sum_x = sum_x + wi * xi
    return mn, mx, sum_w, sum_x


def _make_qkx(x, w, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants / make_qkx3_quants (with weights): asymmetric scale + min search.

    -> (scale (S,), the_min (S,), L (S, n) int32 in 0..nmax)."""
    n = x.shape[1]
    mn, mx, sum_w, sum_x = _minmax_sums(x, w)
    mn = np.where(mn > 0, F32(0), mn)
    flat = mx == mn
    with np.errstate(all="ignore"):
        rng = mx - mn
        iscale = F32(nmax) / rng
        scale = F32(1) / iscale
        xm = x - mn[:, None]

        def err(sc, m, L):
            out = []
            for i in range(n):
                diff = (sc * L[:, i].astype(F32) + m) - x[:, i]
                diff = np.abs(diff) if use_mad else diff * diff
                out.append(w[:, i] * diff)
            return _ssum(out)

        L = np.clip(_nint(iscale[:, None] * xm), 0, nmax)
        best = err(scale, mn, L)
        for step in range(nstep + 1):
            # as in llama.cpp, a better candidate's min also moves the search range
            isc = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (mx - mn)
            La = np.clip(_nint(isc[:, None] * (x - mn[:, None])), 0, nmax)
            Lf = La.astype(F32)
            sl = sl2 = sxl = None
            for i in range(n):
                wl = w[:, i] * Lf[:, i]
                sl = wl if sl is None else sl + wl
                t2 = wl * Lf[:, i]
                sl2 = t2 if sl2 is None else sl2 + t2
                t3 = wl * x[:, i]
                sxl = t3 if sxl is None else sxl + t3
            D = sum_w * sl2 - sl * sl
            this_scale = (sum_w * sxl - sum_x * sl) / D
            this_min = (sl2 * sum_x - sl * sxl) / D
            pos = this_min > 0
            this_min = np.where(pos, F32(0), this_min)
            this_scale = np.where(pos, sxl / sl2, this_scale)
            cur = err(this_scale, this_min, La)
            upd = (D > 0) & (cur < best)
            L = np.where(upd[:, None], La, L)
            best = np.where(upd, cur, best)
            scale = np.where(upd, this_scale, scale)
            mn = np.where(upd, this_min, mn)
    L = np.where(flat[:, None], 0, L)
    scale = np.where(flat, F32(0), scale)
    return scale.astype(F32), (-mn).astype(F32), L


def _absmax(x):
    """(amax, the signed value of the first largest |x|) per row."""
    amax = np.zeros(x.shape[0], F32)
    mx = np.zeros(x.shape[0], F32)
    for i in range(x.shape[1]):
        ax = np.abs(x[:, i])
        upd = ax > amax
        amax = np.where(upd, ax, amax)
        mx = np.where(upd, x[:, i], mx)
    return amax, mx


def _make_q3(x, nmax):
    """make_q3_quants(do_rmse=true): symmetric, w = x^2, coordinate descent.

    -> (scale (S,), L (S, n) int32 in 0..2*nmax-1; all 0 for an all-zero sub-block)."""
    n = x.shape[1]
    amax, mx = _absmax(x)
    zero = amax < EPS
    W = x * x
    WX = W * x
    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / mx
        L = np.clip(_nint(iscale[:, None] * x), -nmax, nmax - 1)
        Lf = L.astype(F32)
        sumlx = _ssum(WX[:, i] * Lf[:, i] for i in range(n))
        suml2 = _ssum((W[:, i] * Lf[:, i]) * Lf[:, i] for i in range(n))
        for _ in range(5):
            changed = False
            for i in range(n):
                w, wx, xi = W[:, i], WX[:, i], x[:, i]
                Li = L[:, i]
                Lif = Li.astype(F32)
                slx = sumlx - wx * Lif
                sl2 = suml2 - (w * Lif) * Lif
                new = np.clip(_nint((xi * sl2) / slx), -nmax, nmax - 1)
                nf = new.astype(F32)
                slx2 = slx + wx * nf
                sl22 = sl2 + (w * nf) * nf
                acc = ((slx > 0) & (new != Li) & (sl22 > 0)
                       & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22))
                if acc.any():
                    changed = True
                    L[:, i] = np.where(acc, new, Li)
                    sumlx = np.where(acc, slx2, sumlx)
                    suml2 = np.where(acc, sl22, suml2)
            if not changed:  # a pass that changes nothing would repeat itself
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    L = np.where(zero[:, None], 0, L + nmax)
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32), L


def _make_qx(x, w, nmax):
    """make_qx_quants(rmse_type=1) with weights: symmetric, 18 extra scale tries.

    -> (scale (S,), L (S, n) int32 in 0..2*nmax-1)."""
    n = x.shape[1]
    amax, mx = _absmax(x)
    zero = amax < EPS
    wx = w * x

    def trial(isc):
        l = np.clip(_nint(isc[:, None] * x), -nmax, nmax - 1)
        lf = l.astype(F32)
        sumlx = _ssum(wx[:, i] * lf[:, i] for i in range(n))
        suml2 = _ssum((w[:, i] * lf[:, i]) * lf[:, i] for i in range(n))
        return l, sumlx, suml2

    with np.errstate(all="ignore"):
        l, sumlx, suml2 = trial(F32(-nmax) / mx)
        L = l + nmax
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            l, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
            upd = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(upd[:, None], l + nmax, L)
            scale = np.where(upd, sumlx / suml2, scale)
            best = np.where(upd, scale * sumlx, best)
    L = np.where(zero[:, None], 0, L)
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32), L


def _make_qp(x, w, nmax):
    """make_qp_quants: unsigned scales of the sub-block scales (L stored as uint8 in C).

    -> (scale (B,), L (B, n) int32 0..255)."""
    n = x.shape[1]
    mx = np.zeros(x.shape[0], F32)
    for i in range(n):
        mx = np.where(mx > x[:, i], mx, x[:, i])
    zero = mx < EPS
    wx = w * x
    with np.errstate(all="ignore"):
        iscale = F32(nmax) / mx
        L = _nint(iscale[:, None] * x) & 0xFF
        sc = F32(1) / iscale
        best = _ssum(w[:, i] * d * d for i in range(n)
                     for d in [x[:, i] - sc * L[:, i].astype(F32)])
        for step in range(-4, 5):
            if step == 0:
                continue
            isc = (F32(0.1) * F32(step) + F32(nmax)) / mx
            sc = F32(1) / isc
            l = np.minimum(nmax, _nint(isc[:, None] * x))
            mse = _ssum(w[:, i] * d * d for i in range(n)
                        for d in [x[:, i] - sc * l[:, i].astype(F32)])
            upd = mse < best
            best = np.where(upd, mse, best)
            iscale = np.where(upd, isc, iscale)
        l = np.minimum(nmax, _nint(iscale[:, None] * x))
        L = l & 0xFF
        lf = l.astype(F32)
        sumlx = _ssum(wx[:, i] * lf[:, i] for i in range(n))
        suml2 = _ssum((w[:, i] * lf[:, i]) * lf[:, i] for i in range(n))
        for _ in range(5):
            changed = False
            for i in range(n):
                wi, wxi, xi = w[:, i], wx[:, i], x[:, i]
                Li = L[:, i]
                Lif = Li.astype(F32)
                slx = sumlx - wxi * Lif
                sl2 = suml2 - (wi * Lif) * Lif
                new = np.minimum(nmax, _nint((xi * sl2) / slx))
                nf = new.astype(F32)
                slx2 = slx + wxi * nf
                sl22 = sl2 + (wi * nf) * nf
                acc = ((slx > 0) & (sl2 > 0) & (new != Li)
                       & ((slx2 * slx2) * suml2 > (sumlx * sumlx) * sl22))
                if acc.any():
                    changed = True
                    L[:, i] = np.where(acc, new & 0xFF, Li)
                    sumlx = np.where(acc, slx2, sumlx)
                    suml2 = np.where(acc, sl22, suml2)
            if not changed:
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    L = np.where(zero[:, None], 0, L)
    scale = np.where(zero, F32(0), scale)
    return scale.astype(F32), L


def _running_max(v):
    """for j: if (v[j] > m) m = v[j], from m = 0 -> (B,)."""
    m = np.zeros(v.shape[0], F32)
    for j in range(v.shape[1]):
        m = np.where(v[:, j] > m, v[:, j], m)
    return m


# ---------------------------------------------------------------- Q2_K

def _q2_requant(xb, L, sb, dval, mval):
    """Re-round every sub-block with its stored scale; a sub-block with d*sc == 0 keeps L.

    xb (nb, 16, 16), L (nb, 16, 16), sb (nb, 16) scale bytes, dval/mval (nb,) fp16 values."""
    dl = dval[:, None] * (sb & 0xF).astype(F32)       # (nb, 16)
    ml = mval[:, None] * (sb >> 4).astype(F32)
    with np.errstate(all="ignore"):
        new = np.clip(_nint((xb + ml[..., None]) / dl[..., None]), 0, 3)
    return np.where((dl != 0)[..., None], new, L)


def q2_k_llama(x: np.ndarray, imatrix: np.ndarray | None):
    """llama.cpp's Q2_K -> (L (nb,16,16), scale bytes (nb,16), d (nb,), dmin (nb,)) with d, dmin
    as fp16-rounded float32."""
    nrows, n = x.shape
    xb = np.asarray(x, dtype=F32).reshape(-1, QK)      # (nb, 256)
    nb = xb.shape[0]
    xs = xb.reshape(nb * 16, 16)
    if imatrix is None:
        scales, mins, L = _make_qkx(xs, np.abs(xs), 3, -0.5, 0.1, 15, True)
        scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
        max_scale, max_min = _running_max(scales), _running_max(mins)
        q4 = F32(15)
        with np.errstate(all="ignore"):
            ls = _nint((q4 / max_scale)[:, None] * scales)
            lm = _nint((q4 / max_min)[:, None] * mins)
            ps, pm = max_scale > 0, max_min > 0
            sb = np.where(ps[:, None], ls & 0xFF, 0) | np.where(pm[:, None], (lm << 4) & 0xFF, 0)
            d = np.where(ps, max_scale / q4, F32(0))
            dmin = np.where(pm, max_min / q4, F32(0))
    else:
        qw = _block_weights(imatrix, nrows, n)                       # (nb, 256)
        sumx2 = _ssum(xb[:, j] * xb[:, j] for j in range(QK))
        sigma2 = sumx2 / F32(QK)
        weight = (qw * np.sqrt(sigma2[:, None] + xb * xb)).reshape(nb * 16, 16)
        sw = _ssum(weight[:, l] for l in range(16)).reshape(nb, 16)
        scales, mins, L = _make_qkx(xs, weight, 3, -0.9, 0.05, 36, False)
        d, Ls = _make_qp(scales.reshape(nb, 16), sw, 15)
        dmin, Lm = _make_qp(mins.reshape(nb, 16), sw, 15)
        sb = (Ls | (Lm << 4)) & 0xFF
    d, dmin = fp16_round(d), fp16_round(dmin)
    sb = sb.astype(np.uint8)
    L = _q2_requant(xb.reshape(nb, 16, 16), L.reshape(nb, 16, 16), sb, d, dmin)
    return L, sb, d, dmin


# ---------------------------------------------------------------- refinement (ours)
# After llama.cpp's result, per block: (1) per sub-block, try nearby integer scales (and mins),
# re-rounding the 16 values, keep the lowest error; (2) refit the fp16 super-block scale(s) by
# weighted least squares, re-round everything, keep it if the error goes down; repeat.
# The search works in float32 with 4 interleaved partial sums (what the C compiler vectorizes):
# lane k sums elements k, k+4, k+8, k+12, then (l0+l1)+(l2+l3). A final guard in float64 keeps
# llama.cpp's block unless ours is strictly better: never worse than libggml, block by block.
# Error = sum(w*(x - x_hat)^2), w = imatrix (or 1), x_hat exactly as dequantized.

# candidate steps per round: Q2_K (d sc, d m), Q3_K d sc (same as q2_steps / q3_steps in C)
Q2_SEARCH = ([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)],) * 2
Q3_SEARCH = ((-2, -1, 1, 2), (-2, -1, 1, 2))
MAGIC = F32(12582912.0)


def _lanes16(t):
    """(..., 16) float32 -> (...) in the C kernels' 4-lane order."""
    t4 = t.reshape(*t.shape[:-1], 4, 4)              # [..., g, k] = element 4g + k
    acc = (((t4[..., 0, :] + 0) + t4[..., 1, :]) + t4[..., 2, :]) + t4[..., 3, :]
    return (acc[..., 0] + acc[..., 1]) + (acc[..., 2] + acc[..., 3])


def _err_f64(x, xh, w):
    """Block error in float64, 4 lanes over the 256 values: x, xh, w (nb, 256) -> (nb,)."""
    diff = x.astype(F64) - xh.astype(F64)
    t = ((w.astype(F64) * diff) * diff).reshape(-1, 64, 4)
    acc = _ssum(t[:, g] for g in range(64))
    return (acc[:, 0] + acc[:, 1]) + (acc[:, 2] + acc[:, 3])


def _inv_or_0(v):
    with np.errstate(all="ignore"):
        return np.where(v != 0, F32(1) / v, F32(0)).astype(F32)


def _clamp_round(v, lo, hi):
    """v > lo ? v : lo, then v < hi ? v : hi, then round half to even via the 1.5*2^23 trick."""
    v = np.where(v > F32(lo), v, F32(lo))
    v = np.where(v < F32(hi), v, F32(hi))
    return (v + MAGIC) - MAGIC


def _q2_cand(x, w, dl, ml):
    """x, w (..., 16); dl, ml (...) -> (L (..., 16) float32 0..3, error (...) float32)."""
    with np.errstate(all="ignore"):
        L = _clamp_round((x + ml[..., None]) * _inv_or_0(dl)[..., None], 0, 3)
    d = x - (dl[..., None] * L - ml[..., None])
    return L, _lanes16((w * d) * d)


def _q3_cand(x, w, dl):
    """x, w (..., 16); dl (...) -> (q (..., 16) float32 -4..3, error (...) float32)."""
    with np.errstate(all="ignore"):
        q = _clamp_round(x * _inv_or_0(dl)[..., None], -4, 3)
    d = x - dl[..., None] * q
    return q, _lanes16((w * d) * d)


def _q2_refine(x, w, L, s, m, D, M):
    """x, w (nb,16,16) f32; L (nb,16,16) 0..3; s, m (nb,16) 0..15; D, M (nb,) fp16 values."""
    nb = x.shape[0]
    sf, mf, Lf = s.astype(F32), m.astype(F32), L.astype(F32)
    base = (Lf, sf, mf, D, M)
    xh = ((D[:, None] * sf)[..., None] * Lf - (M[:, None] * mf)[..., None])
    E0 = _err_f64(x.reshape(nb, QK), xh.reshape(nb, QK), w.reshape(nb, QK))
    E = _lanes16((w * (x - xh)) * (x - xh))
    for search in Q2_SEARCH:
        s0, m0 = sf, mf
        for a, b in search:
            s2 = np.clip(s0 + F32(a), F32(0), F32(15))
            m2 = np.clip(m0 + F32(b), F32(0), F32(15))
            L2, E2 = _q2_cand(x, w, D[:, None] * s2, M[:, None] * m2)
            u = ((s2 != s0) | (m2 != m0)) & (E2 < E)
            Lf = np.where(u[..., None], L2, Lf)
            sf, mf, E = np.where(u, s2, sf), np.where(u, m2, mf), np.where(u, E2, E)
        # weighted least squares for (D, M): x_hat = D*A - M*B, A = sc*L, B = m
        A = sf[..., None] * Lf
        Bm = np.broadcast_to(mf[..., None], x.shape)
        wx = w * x

        def S(t):
            return _ssum(_lanes16(t)[:, j] for j in range(16)).astype(F64)

        Saa, Sab, Sbb = S((w * A) * A), S((w * A) * Bm), S((w * Bm) * Bm)
        Sxa, Sxb = S(wx * A), S(wx * Bm)
        det = Saa * Sbb - Sab * Sab
        Mf = M.astype(F64)
        with np.errstate(all="ignore"):
            D2 = np.where(det > 0, (Sxa * Sbb - Sab * Sxb) / det,
                          np.where(Saa > 0, (Sxa + Mf * Sab) / Saa, D.astype(F64)))
            M2 = np.where(det > 0, (Sab * Sxa - Saa * Sxb) / det, Mf)
            D2, M2 = fp16_round(D2.astype(F32)), fp16_round(M2.astype(F32))
        L2, E2 = _q2_cand(x, w, D2[:, None] * sf, M2[:, None] * mf)
        u = _ssum(E2[:, j] for j in range(16)) < _ssum(E[:, j] for j in range(16))
        Lf = np.where(u[:, None, None], L2, Lf)
        E = np.where(u[:, None], E2, E)
        D, M = np.where(u, D2, D), np.where(u, M2, M)
    xh = ((D[:, None] * sf)[..., None] * Lf - (M[:, None] * mf)[..., None])
    keep = _err_f64(x.reshape(nb, QK), xh.reshape(nb, QK), w.reshape(nb, QK)) < E0
    Lf, sf, mf, D, M = (np.where(keep.reshape((nb,) + (1,) * (a.ndim - 1)), a, b)
                        for a, b in zip((Lf, sf, mf, D, M), base))
    return Lf.astype(np.int32), sf.astype(np.int32), mf.astype(np.int32), D, M


def _q3_refine(x, w, q, s, D):
    """x, w (nb,16,16) f32; q (nb,16,16) -4..3; s (nb,16) -32..31; D (nb,) fp16 value."""
    nb = x.shape[0]
    sf, qf = s.astype(F32), q.astype(F32)
    base = (qf, sf, D)
    xh = (D[:, None] * sf)[..., None] * qf
    E0 = _err_f64(x.reshape(nb, QK), xh.reshape(nb, QK), w.reshape(nb, QK))
    E = _lanes16((w * (x - xh)) * (x - xh))
    for search in Q3_SEARCH:
        s0 = sf
        for a in search:
            s2 = np.clip(s0 + F32(a), F32(-32), F32(31))
            q2, E2 = _q3_cand(x, w, D[:, None] * s2)
            u = (s2 != s0) & (E2 < E)
            qf = np.where(u[..., None], q2, qf)
            sf, E = np.where(u, s2, sf), np.where(u, E2, E)
        # weighted least squares for D: x_hat = D*A, A = sc*q
        A = sf[..., None] * qf
        Sxa = _ssum(_lanes16((w * x) * A)[:, j] for j in range(16)).astype(F64)
        Saa = _ssum(_lanes16((w * A) * A)[:, j] for j in range(16)).astype(F64)
        with np.errstate(all="ignore"):
            D2 = np.where(Saa > 0, Sxa / Saa, D.astype(F64))
            D2 = fp16_round(D2.astype(F32))
        q2, E2 = _q3_cand(x, w, D2[:, None] * sf)
        u = _ssum(E2[:, j] for j in range(16)) < _ssum(E[:, j] for j in range(16))
        qf = np.where(u[:, None, None], q2, qf)
        E = np.where(u[:, None], E2, E)
        D = np.where(u, D2, D)
    xh = (D[:, None] * sf)[..., None] * qf
    keep = _err_f64(x.reshape(nb, QK), xh.reshape(nb, QK), w.reshape(nb, QK)) < E0
    qf, sf, D = (np.where(keep.reshape((nb,) + (1,) * (a.ndim - 1)), a, b)
                 for a, b in zip((qf, sf, D), base))
    return qf.astype(np.int32), sf.astype(np.int32), D


def q2_k_bytes(L, sc, m, d, dmin) -> np.ndarray:
    """L (nb,16,16) 0..3, sc/m (nb,16) 0..15, d/dmin (nb,) -> (nb, 84) Q2_K blocks."""
    nb = L.shape[0]
    out = np.empty((nb, 84), dtype=np.uint8)
    out[:, :16] = (sc | (m << 4)).astype(np.uint8)
    out[:, 16:80] = _pack2(L.reshape(nb, QK))
    out[:, 80:82] = fp16_bytes(d)
    out[:, 82:84] = fp16_bytes(dmin)
    return out


class Q2_K(QuantType, qtype=T.Q2_K):
    uses_imatrix = True

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        L, sb, d, dmin = q2_k_llama(x, imatrix)
        nb = L.shape[0]
        w = (np.ones((nb, QK), F32) if imatrix is None
             else _block_weights(imatrix, nrows, n)).reshape(nb, 16, 16)
        xb = np.asarray(x, dtype=F32).reshape(nb, 16, 16)
        L, sc, m, d, dmin = _q2_refine(xb, w, L, (sb & 0xF).astype(np.int32),
                                       (sb >> 4).astype(np.int32), d, dmin)
        return q2_k_bytes(L, sc, m, d, dmin).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 84)
        sb = b[:, :16]
        d, dmin = fp16_value(b[:, 80:82]), fp16_value(b[:, 82:84])
        dl = d[:, None] * (sb & 0xF).astype(F32)          # (nb, 16)
        ml = dmin[:, None] * (sb >> 4).astype(F32)
        L = _unpack2(b[:, 16:80]).reshape(-1, 16, 16).astype(F32)
        return (dl[..., None] * L - ml[..., None]).reshape(nrows, -1)


# ---------------------------------------------------------------- Q3_K

def _q3_pack_scales(ls: np.ndarray) -> np.ndarray:
    """(nb, 16) 6-bit values -> (nb, 12) bytes."""
    ls = ls.astype(np.uint8)
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, :8] = (ls[:, :8] & 0xF) | ((ls[:, 8:] & 0xF) << 4)
    hi = ls >> 4                                         # (nb, 16) 0..3
    for j in range(16):
        out[:, 8 + j % 4] |= hi[:, j] << (2 * (j // 4))
    return out


def _q3_unpack_scales(s: np.ndarray) -> np.ndarray:
    """(nb, 12) -> (nb, 16) signed scales (stored - 32) as int32."""
    lo = np.concatenate([s[:, :8] & 0xF, s[:, :8] >> 4], axis=1).astype(np.int32)
    j = np.arange(16)
    hi = (s[:, 8 + j % 4] >> (2 * (j // 4))) & 3
    return (lo | (hi.astype(np.int32) << 4)) - 32


def _q3_requant(xb, L, sc, dval):
    """xb, L (nb, 16, 16); sc (nb, 16) signed scales; L in 0..7 (q+4)."""
    dl = dval[:, None] * sc.astype(F32)
    with np.errstate(all="ignore"):
        new = np.clip(_nint(xb / dl[..., None]), -4, 3) + 4
    return np.where((dl != 0)[..., None], new, L)


def q3_k_llama(x: np.ndarray, imatrix: np.ndarray | None):
    """llama.cpp's Q3_K -> (L (nb,16,16) 0..7, stored scales (nb,16) 0..63, d (nb,) fp16 value)."""
    nrows, n = x.shape
    xb = np.asarray(x, dtype=F32).reshape(-1, QK)
    nb = xb.shape[0]
    xs = xb.reshape(nb * 16, 16)
    if imatrix is None:
        scales, L = _make_q3(xs, 4)
        scales = scales.reshape(nb, 16)
        _, max_scale = _absmax(scales)
        nz = max_scale != 0
        with np.errstate(all="ignore"):
            iscale = F32(-32) / max_scale
            l = _nint(iscale[:, None] * scales)
            l = ((l + 128) & 0xFF) - 128                  # int8_t l = nearest_int(...)
            ls = np.where(nz[:, None], np.clip(l, -32, 31) + 32, 0)
            d = np.where(nz, F32(1) / iscale, F32(0))
    else:
        qw = _block_weights(imatrix, nrows, n)
        sumx2 = _ssum(xb[:, j] * xb[:, j] for j in range(QK))
        sigma2 = (F32(2) * sumx2) / F32(QK)
        weight = (qw * np.sqrt(sigma2[:, None] + xb * xb)).reshape(nb * 16, 16)
        sw = _ssum(weight[:, l] for l in range(16)).reshape(nb, 16)
        scales, L = _make_qx(xs, weight, 4)
        d, ls = _make_qx(scales.reshape(nb, 16), sw, 32)
    d = fp16_round(d)
    # the stored 6-bit field decodes to ls - 32 (ls is 0..63 here)
    L = _q3_requant(xb.reshape(nb, 16, 16), L.reshape(nb, 16, 16), ls - 32, d)
    return L, ls, d



def q3_k_bytes(q, sc, d) -> np.ndarray:
    """q (nb,16,16) -4..3, sc (nb,16) -32..31, d (nb,) -> (nb, 110) Q3_K blocks."""
    nb = q.shape[0]
    L = (q + 4).reshape(nb, QK)
    hb = (L > 3).astype(np.uint8).reshape(nb, 8, 32)     # element 32k+l -> bit k of hmask[l]
    hmask = np.zeros((nb, 32), dtype=np.uint8)
    for k in range(8):
        hmask |= hb[:, k] << k
    out = np.empty((nb, 110), dtype=np.uint8)
    out[:, :32] = hmask
    out[:, 32:96] = _pack2(L & 3)
    out[:, 96:108] = _q3_pack_scales(sc + 32)
    out[:, 108:110] = fp16_bytes(d)
    return out


class Q3_K(QuantType, qtype=T.Q3_K):
    uses_imatrix = True

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        L, ls, d = q3_k_llama(x, imatrix)
        nb = L.shape[0]
        w = (np.ones((nb, QK), F32) if imatrix is None
             else _block_weights(imatrix, nrows, n)).reshape(nb, 16, 16)
        xb = np.asarray(x, dtype=F32).reshape(nb, 16, 16)
        q, sc, d = _q3_refine(xb, w, L - 4, ls - 32, d)
        return q3_k_bytes(q, sc, d).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 110)
        nb = b.shape[0]
        d = fp16_value(b[:, 108:110])
        dl = d[:, None] * _q3_unpack_scales(b[:, 96:108]).astype(F32)    # (nb, 16)
        low = _unpack2(b[:, 32:96]).astype(np.int32)
        hm = b[:, :32].reshape(nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
        high = (hm & 1).reshape(nb, QK).astype(np.int32)
        q = (low - 4 * (1 - high)).astype(F32).reshape(nb, 16, 16)
        return (dl[..., None] * q).reshape(nrows, -1)
