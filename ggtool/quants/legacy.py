"""Legacy 32-element block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.

Each mirrors its C kernel in native/ byte for byte (see base.py for the rules).

Q4_0/Q4_1/Q5_0/Q5_1 evaluate a few candidate scales (and mins) per block and keep the one
with the lowest error sum(w * (x - x_hat)^2), w = imatrix column (or 1), measured on the
stored fp16 values (first candidate wins ties):
  * llama.cpp's own scale/min comes first: without an imatrix the reference one
    (d = max/-nmax for _0, (max - min)/nmax and min for _1), with an imatrix the
    make_qx_quants / make_qkx3_quants one (weights imatrix*sqrt(sigma2 + x^2)), with the
    reference one as a second candidate;
  * every candidate's quants are re-rounded to the nearest level of the *stored* fp16
    scale and min, so a candidate is never worse than llama.cpp's bytes for that scale:
    the result is never worse than llama.cpp's on any block;
  * a make_qx / qkx-style scan of inverse scales (least-squares fit on the metric
    weights) and a least-squares refit of the best quants supply the others. Without an
    imatrix the scans are short (SYM_STEPS_PLAIN, ASYM_OFFSETS_PLAIN: 4 trials, picked by
    the error they reach on noised SmolLM2 and gaussian rows) and the symmetric types skip
    the refit (worth < 0.5% there); the C kernel runs 8 blocks side by side, one per lane.
Sums: llama.cpp's routines and the scans add sequentially in element order (C computes
the trials side by side); the candidate errors and the symmetric refit add in 8 lanes
(`_lane_sum`). `llama_rows` gives llama.cpp's exact bytes (the tests hold it to libggml).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import F32, QuantType, fp16_bytes, fp16_value, round_half_away, safe_inv, seq_sum

QK = 32
FP16_MAX = F32(65504.0)
GROUP_MAX_EPS = F32(1e-15)

# inverse-scale scans: symmetric iscale = -(nmax + 0.1*is)/max; asymmetric
# iscale = (nmax + rmin + rdelta*is)/(max - min), is = 0..nstep
LLAMA_QX_STEPS = tuple(i for i in range(-9, 10) if i != 0)  # make_qx_quants' own
SYM_STEPS = LLAMA_QX_STEPS             # with an imatrix
SYM_STEPS_PLAIN = (-8, -4, 4, 8)       # without
ASYM_SCAN = (F32(-1.0), F32(0.25), 7)  # (rmin, rdelta, nstep), with an imatrix (where
                                       # llama.cpp's make_qkx3 scan (-0.9, 0.05, 36) runs too)
ASYM_OFFSETS_PLAIN = tuple(F32(v) for v in (-1.0, -0.25, 0.25, 0.75))  # rmin + rdelta*is values,
                                                                        # without an imatrix


class Q8_0(QuantType, qtype=T.Q8_0):
    """d = max|x|/127, q = roundf(x/d); imatrix ignored (as llama.cpp)."""

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        blocks = np.asarray(x, dtype=F32).reshape(-1, 32)  # (nb, 32)
        amax = np.max(np.abs(blocks), axis=1)               # max is order-independent
        d = amax / F32(127)
        with np.errstate(over="ignore"):
            inv = safe_inv(d)
        inv[~np.isfinite(inv)] = 0  # subnormal d: 1/d overflows; fp16(d) is 0 anyway
        q = round_half_away(blocks * inv[:, None]).astype(np.int8)
        out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
        out[:, :2] = fp16_bytes(d)
        out[:, 2:] = q.view(np.uint8)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 34)
        d = fp16_value(b[:, :2])
        vals = b[:, 2:].view(np.int8).astype(F32) * d[:, None]
        return vals.reshape(nrows, -1)


# ---------------------------------------------------------------- shared pieces

def _f16(v):
    """fp16 store/load of v, clamped to the finite range (llama.cpp would write inf)."""
    return np.clip(np.asarray(v, dtype=F32), -FP16_MAX, FP16_MAX).astype(np.float16).astype(F32)


def _signed_absmax(b):
    """(nb, n) -> (nb,) the value of the first element with the largest |x| (C: `>`)."""
    idx = np.argmax(np.abs(b), axis=1)
    return b[np.arange(b.shape[0]), idx]


def _lane_sum(a):
    """Sum over the last axis (a multiple of 8) in 8 interleaved lanes, lanes combined
    pairwise: ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). C: the j/k loop nests + lanes() in
    q_legacy.c, lane_sum16 in q6_k.c (the compiler vectorizes them)."""
    a = np.asarray(a, dtype=F32)
    acc = np.zeros(a.shape[:-1] + (8,), F32)
    for j in range(0, a.shape[-1], 8):
        acc = acc + a[..., j:j + 8]
    a0, a1, a2, a3, a4, a5, a6, a7 = (acc[..., k] for k in range(8))
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


def _sse(x, xh, w):
    """sum(w * (x - xh)^2) per block, float32, in lanes (C: e[i] = w[i]*(diff*diff))."""
    diff = x - xh
    return _lane_sum(w * (diff * diff))


def _row_weights(x, imatrix):
    """llama.cpp's legacy imatrix weights qw*sqrt(sigma2 + x^2), sigma2 = mean x^2 of the row.

    x (nrows, n) -> (nrows*n/32, 32)."""
    nrows, n = x.shape
    sigma2 = seq_sum(x * x) / F32(n)                               # (nrows,)
    w = imatrix[None, :] * np.sqrt(sigma2[:, None] + x * x)
    return w.astype(F32).reshape(-1, QK)


def make_qx_quants(x, nmax, w):
    """llama.cpp make_qx_quants(n, nmax, x, L, rmse_type=1, qw=w) on (nb, n) blocks.

    Returns (scale (nb,), L (nb, n) int32 in 0..2*nmax-1)."""
    nb, n = x.shape
    fn = F32(nmax)
    mx = _signed_absmax(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx)

    def trial(iscale):
        l = np.clip(np.rint(iscale[:, None] * x), -nmax, nmax - 1).astype(F32)
        wl = w * l
        return l, seq_sum((w * x) * l), seq_sum(wl * l)

    l, sumlx, suml2 = trial(-fn / mx)
    L = l
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, F32(1)), F32(0)).astype(F32)
    best = scale * sumlx
    for s in LLAMA_QX_STEPS:
        l, sumlx, suml2 = trial(-(F32(0.1) * F32(s) + fn) / mx)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        if better.any():
            L = np.where(better[:, None], l, L)
            sc = sumlx / np.where(better, suml2, F32(1))
            scale = np.where(better, sc, scale)
            best = np.where(better, sc * sumlx, best)
    L = (L + fn).astype(np.int32)
    L[zero] = 0
    scale[zero] = 0
    return scale.astype(F32), L


def make_qkx3_quants(x, nmax, w, rmin=F32(-0.9), rdelta=F32(0.05), nstep=36):
    """llama.cpp make_qkx3_quants(n, nmax, x, w, ..., use_mad=false) on (nb, n) blocks.

    Returns (scale, min, L) with x ~ scale*L + min (min = -the_min, <= 0)."""
    fn = F32(nmax)
    mn = np.minimum(x.min(axis=1), F32(0)) + F32(0)  # + 0: -0.0 -> +0.0, as in C
    mx = x.max(axis=1) + F32(0)
    sum_w = seq_sum(w)
    sum_x = seq_sum(w * x)
    flat = (mx <= mn) | (mx - mn < GROUP_MAX_EPS)  # ggtool: also a near-flat block is flat
    rng = np.where(flat, F32(1), mx - mn)

    def err(scale, m, l):
        diff = (scale[:, None] * l + m[:, None]) - x
        return seq_sum(w * (diff * diff))

    iscale = fn / rng
    scale = F32(1) / iscale
    l0 = np.clip(np.rint(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(F32)
    best = err(scale, mn, l0)
    m_best = mn
    L = l0
    for s in range(nstep + 1):
        # llama.cpp reuses `min`: each trial is taken from the best min so far
        span = mx - m_best
        live = span >= GROUP_MAX_EPS  # ggtool: a degenerate span skips the trial
        iscale = ((rmin + rdelta * F32(s)) + fn) / np.where(live, span, F32(1))
        l = np.clip(np.rint(iscale[:, None] * (x - m_best[:, None])), 0, nmax).astype(F32)
        wl = w * l
        sum_l = seq_sum(wl)
        sum_l2 = seq_sum(wl * l)
        sum_xl = seq_sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        Ds = np.where(ok, D, F32(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds
        pos = this_min > 0
        this_min = np.where(pos, F32(0), this_min)
        this_scale = np.where(pos, sum_xl / np.where(ok & pos, sum_l2, F32(1)), this_scale)
        mad = err(this_scale, this_min, l)
        better = live & ok & (mad < best)
        best = np.where(better, mad, best)
        scale = np.where(better, this_scale, scale)
        m_best = np.where(better, this_min, m_best)
        L = np.where(better[:, None], l, L)
    scale = np.where(flat, F32(0), scale).astype(F32)
    m_best = np.where(flat, mn, m_best).astype(F32)
    L = L.astype(np.int32)
    L[flat] = 0
    return scale, m_best, L


# ---------------------------------------------------------------- exact evaluation

def _sym_eval(x, w, d, nmax):
    """Stored d16 and nearest-level quants (signed, -nmax..nmax-1) for scale d; error."""
    d16 = _f16(d)
    ok = d16 != 0
    v = x / np.where(ok, d16, F32(1))[:, None]
    l = np.rint(np.clip(v, -nmax, nmax - 1)).astype(F32)
    l[~ok] = 0
    return d16, l, _sse(x, d16[:, None] * l, w)


def _asym_eval(x, w, d, m, nmax):
    d16, m16 = _f16(d), _f16(m)
    ok = d16 != 0
    v = (x - m16[:, None]) / np.where(ok, d16, F32(1))[:, None]
    l = np.rint(np.clip(v, 0, nmax)).astype(F32)
    l[~ok] = 0
    return d16, m16, l, _sse(x, d16[:, None] * l + m16[:, None], w)


def _keep(best, cand):
    """Per block, replace best by cand where cand's error (last item) is strictly lower."""
    take = cand[-1] < best[-1]
    return tuple(np.where(take.reshape(-1, *([1] * (c.ndim - 1))), c, b) for b, c in zip(best, cand))


def _sym_scan(x, w, nmax, steps):
    """make_qx-style scan on the metric weights: the least-squares scale of the best trial.

    Sequential sums (C runs the trials side by side, each summed in element order)."""
    fn = F32(nmax)
    mx = _signed_absmax(x)
    mx = np.where(np.abs(mx) < GROUP_MAX_EPS, F32(1), mx)  # all ~zero: no trial is used
    best_d = np.zeros(x.shape[0], F32)
    best = np.zeros(x.shape[0], F32)
    for s in steps:
        iscale = -(F32(0.1) * F32(s) + fn) / mx
        l = np.clip(np.rint(iscale[:, None] * x), -nmax, nmax - 1).astype(F32)
        sumlx = seq_sum((w * x) * l)
        suml2 = seq_sum((w * l) * l)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        d = sumlx / np.where(better, suml2, F32(1))
        best_d = np.where(better, d, best_d)
        best = np.where(better, d * sumlx, best)
    return best_d


def _sym_refit(x, w, l):
    sumlx = _lane_sum((w * x) * l)
    suml2 = _lane_sum((w * l) * l)
    return np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, F32(1)), F32(0)).astype(F32)


def _asym_fit(x, w, l, sw, sx):
    """Weighted least squares x ~ d*l + m; ok=False where singular. Returns d, m, gain, ok."""
    wl = w * l
    sl = seq_sum(wl)
    sl2 = seq_sum(wl * l)
    sxl = seq_sum(wl * x)
    D = sw * sl2 - sl * sl
    ok = D > 0
    Ds = np.where(ok, D, F32(1))
    d = (sw * sxl - sx * sl) / Ds
    m = (sl2 * sx - sl * sxl) / Ds
    return d, m, d * sxl + m * sx, ok


def _asym_scan(x, w, nmax, offsets):
    """Scan iscale = (offset + nmax)/(max - min); keep the best least-squares fit."""
    fn = F32(nmax)
    mn = x.min(axis=1) + F32(0)
    mx = x.max(axis=1) + F32(0)
    rng = np.where(mx - mn >= GROUP_MAX_EPS, mx - mn, F32(1))
    sw = seq_sum(w)
    sx = seq_sum(w * x)
    best_d = (mx - mn) / fn
    best_m = mn
    best = np.full(x.shape[0], -np.inf, F32)
    for off in offsets:
        iscale = (off + fn) / rng
        l = np.clip(np.rint(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(F32)
        d, m, gain, ok = _asym_fit(x, w, l, sw, sx)
        better = ok & (gain > best)
        best = np.where(better, gain, best)
        best_d = np.where(better, d, best_d)
        best_m = np.where(better, m, best_m)
    return best_d, best_m, sw, sx


# ---------------------------------------------------------------- per-family quantizers

def _quantize_sym(x, imatrix, nmax):
    """(nrows, n) -> d16 (nb,), q (nb, 32) uint8 in 0..2*nmax-1."""
    nrows, n = x.shape
    xb = x.reshape(-1, QK)
    if imatrix is None:
        w = np.ones_like(xb)
        first = _signed_absmax(xb) / F32(-nmax)          # llama.cpp reference scale
        steps = SYM_STEPS_PLAIN
    else:
        w = np.broadcast_to(imatrix.reshape(-1, QK), (nrows, n // QK, QK)).reshape(-1, QK)
        first, _ = make_qx_quants(xb, nmax, _row_weights(x, imatrix))
        steps = SYM_STEPS
    best = _sym_eval(xb, w, first, nmax)
    if imatrix is not None:
        best = _keep(best, _sym_eval(xb, w, _signed_absmax(xb) / F32(-nmax), nmax))
    best = _keep(best, _sym_eval(xb, w, _sym_scan(xb, w, nmax, steps), nmax))
    if imatrix is not None:
        best = _keep(best, _sym_eval(xb, w, _sym_refit(xb, w, best[1]), nmax))
    d16, l, _ = best
    return d16, (l + F32(nmax)).astype(np.uint8)


def _quantize_asym(x, imatrix, nmax):
    """(nrows, n) -> d16, m16 (nb,), q (nb, 32) uint8 in 0..nmax."""
    nrows, n = x.shape
    xb = x.reshape(-1, QK)
    mn = xb.min(axis=1) + F32(0)
    mx = xb.max(axis=1) + F32(0)
    if imatrix is None:
        w = np.ones_like(xb)
        first_d, first_m = (mx - mn) / F32(nmax), mn   # llama.cpp reference
        offsets = ASYM_OFFSETS_PLAIN
    else:
        w = np.broadcast_to(imatrix.reshape(-1, QK), (nrows, n // QK, QK)).reshape(-1, QK)
        first_d, first_m, _ = make_qkx3_quants(xb, nmax, _row_weights(x, imatrix))
        rmin, rdelta, nstep = ASYM_SCAN
        offsets = [rmin + rdelta * F32(s) for s in range(nstep + 1)]
    best = _asym_eval(xb, w, first_d, first_m, nmax)
    if imatrix is not None:
        best = _keep(best, _asym_eval(xb, w, (mx - mn) / F32(nmax), mn, nmax))
    d, m, sw, sx = _asym_scan(xb, w, nmax, offsets)
    best = _keep(best, _asym_eval(xb, w, d, m, nmax))
    d, m, _, ok = _asym_fit(xb, w, best[2], sw, sx)
    best = _keep(best, _asym_eval(xb, w, np.where(ok, d, best[0]), np.where(ok, m, best[1]), nmax))
    d16, m16, l, _ = best
    return d16, m16, l.astype(np.uint8)


def _pack_nibbles(q):
    """(nb, 32) levels -> (nb, 16): low nibble element j, high nibble element j+16."""
    return (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)


def _pack_qh(q):
    """(nb, 32) 5-bit levels -> (nb, 4) uint32 LE bytes, bit j = bit 4 of element j."""
    return np.packbits((q >> 4) & 1, axis=1, bitorder="little")


def _unpack_nibbles(qs):
    return np.concatenate([qs & 0xF, qs >> 4], axis=1)


def _unpack_qh(qh):
    return np.unpackbits(qh, axis=1, bitorder="little")


# ---------------------------------------------------------------- the four types

class Q4_0(QuantType, qtype=T.Q4_0):
    """x = (q - 8) * d; d fp16; layout d, qs[16]."""
    uses_imatrix = True
    nmax = 8

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, q = _quantize_sym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), _pack_nibbles(q)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 18)
        d = fp16_value(b[:, :2])
        lv = _unpack_nibbles(b[:, 2:]).astype(np.int8) - np.int8(8)
        return (d[:, None] * lv.astype(F32)).reshape(q.shape[0], -1)


class Q5_0(QuantType, qtype=T.Q5_0):
    """x = (q - 16) * d; layout d, qh[4], qs[16]."""
    uses_imatrix = True
    nmax = 16

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, q = _quantize_sym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), _pack_qh(q), _pack_nibbles(q)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 22)
        d = fp16_value(b[:, :2])
        lv = (_unpack_nibbles(b[:, 6:]) | (_unpack_qh(b[:, 2:6]) << 4)).astype(np.int8) - np.int8(16)
        return (d[:, None] * lv.astype(F32)).reshape(q.shape[0], -1)


class Q4_1(QuantType, qtype=T.Q4_1):
    """x = q * d + m; layout d, m, qs[16]."""
    uses_imatrix = True
    nmax = 15

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, m, q = _quantize_asym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), fp16_bytes(m), _pack_nibbles(q)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 20)
        d, m = fp16_value(b[:, :2]), fp16_value(b[:, 2:4])
        lv = _unpack_nibbles(b[:, 4:]).astype(F32)
        return (d[:, None] * lv + m[:, None]).reshape(q.shape[0], -1)


class Q5_1(QuantType, qtype=T.Q5_1):
    """x = q * d + m; layout d, m, qh[4], qs[16]."""
    uses_imatrix = True
    nmax = 31

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, m, q = _quantize_asym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), fp16_bytes(m), _pack_qh(q), _pack_nibbles(q)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 24)
        d, m = fp16_value(b[:, :2]), fp16_value(b[:, 2:4])
        lv = (_unpack_nibbles(b[:, 8:]) | (_unpack_qh(b[:, 4:8]) << 4)).astype(F32)
        return (d[:, None] * lv + m[:, None]).reshape(q.shape[0], -1)


# ---------------------------------------------------------------- llama.cpp's exact bytes

def llama_rows(qtype, x, imatrix=None):
    """What llama.cpp's quantize_q4_0/q4_1/q5_0/q5_1 write for rows x (nrows, n).

    A replica for the tests (libggml must agree with it byte for byte, which shows that the
    llama.cpp candidate inside our quantizers is the real one). Numpy only, not optimised."""
    t = {"Q4_0": Q4_0, "Q4_1": Q4_1, "Q5_0": Q5_0, "Q5_1": Q5_1}[str(qtype).upper()]
    x = np.asarray(x, dtype=F32)
    nrows, n = x.shape
    xb = x.reshape(-1, QK)
    nmax = t.nmax
    sym = t in (Q4_0, Q5_0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if imatrix is None and sym:
            d = _signed_absmax(xb) / F32(-nmax)
            inv = safe_inv(d)
            q = np.minimum(np.trunc(xb * inv[:, None] + F32(nmax + 0.5)), 2 * nmax - 1).astype(np.uint8)
            m = None
        elif imatrix is None:
            m = xb.min(axis=1)
            d = (xb.max(axis=1) - m) / F32(nmax)
            inv = safe_inv(d)
            q = np.trunc((xb - m[:, None]) * inv[:, None] + F32(0.5))
            q = (np.minimum(q, 15) if nmax == 15 else q).astype(np.uint8)
        elif sym:
            d, q = make_qx_quants(xb, nmax, _row_weights(x, imatrix))
            q, m = q.astype(np.uint8), None
        else:
            d, m, q = make_qkx3_quants(xb, nmax, _row_weights(x, imatrix))
            q = q.astype(np.uint8)
        parts = [fp16_bytes(d)] + ([fp16_bytes(m)] if m is not None else [])
    if nmax >= 16:
        parts.append(_pack_qh(q))
    parts.append(_pack_nibbles(q))
    return np.concatenate(parts, axis=1).reshape(nrows, t.row_bytes(n))
