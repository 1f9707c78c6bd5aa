"""Q4_0, Q4_1, Q5_0, Q5_1: blocks of 32 values with an fp16 scale (and an fp16 min for the _1
types), 4- or 5-bit quants (llama.cpp's "legacy" types; Q8_0 is in q8_0.py).

Mirrors native/q4_0_q4_1_q5_0_q5_1.c byte for byte (see primitives.py for the rules).

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
(`lane_sum(.., 8)`). `llama_rows` gives llama.cpp's exact bytes (the tests hold it to libggml).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from .base import QuantType
from .primitives import (F32, GROUP_MAX_EPS, block_weights, fp16_bytes, fp16_round, fp16_value,
                         lane_sum, pack_fields, safe_inv, seq_sum, signed_absmax, unpack_fields)
from .searches import LLAMA_QX_STEPS, make_qkx, make_qx

QK = GGML_QUANT_SIZES[T.Q4_0][0]  # 32 values per block

# inverse-scale scans: symmetric iscale = -(nmax + 0.1*is)/max; asymmetric
# iscale = (nmax + rmin + rdelta*is)/(max - min), is = 0..nstep
SYM_STEPS = LLAMA_QX_STEPS             # with an imatrix
SYM_STEPS_PLAIN = (-8, -4, 4, 8)       # without
ASYM_SCAN = (F32(-1.0), F32(0.25), 7)  # (rmin, rdelta, nstep), with an imatrix (where
                                       # llama.cpp's make_qkx3 scan (-0.9, 0.05, 36) runs too)
ASYM_OFFSETS_PLAIN = tuple(F32(v) for v in (-1.0, -0.25, 0.25, 0.75))  # rmin + rdelta*is values,
                                                                        # without an imatrix


# ---------------------------------------------------------------- shared pieces

def _sse(x, xh, w):
    """sum(w * (x - xh)^2) per block, float32, in lanes (C: e[i] = w[i]*(diff*diff))."""
    diff = x - xh
    return lane_sum(w * (diff * diff), 8)


def _row_weights(x, imatrix):
    """llama.cpp's legacy imatrix weights qw*sqrt(sigma2 + x^2), sigma2 = mean x^2 of the row.

    x (nrows, n) -> (nrows*n/32, 32)."""
    nrows, n = x.shape
    sigma2 = seq_sum(x * x) / F32(n)                               # (nrows,)
    w = imatrix[None, :] * np.sqrt(sigma2[:, None] + x * x)
    return w.astype(F32).reshape(-1, QK)


def _llama_asym(xb, wl, nmax):
    """llama.cpp make_qkx3_quants(32, nmax, x, wl, ..., -0.9, 0.05, 36, use_mad=false), in
    the guarded form (searches.make_qkx) -> (scale, min, L), x ~ scale*L + min."""
    scale, the_min, L = make_qkx(xb, wl, nmax, -0.9, 0.05, 36, guarded=True)
    return scale, -the_min, L


# ---------------------------------------------------------------- exact evaluation

def _sym_eval(x, w, d, nmax):
    """Stored d16 and nearest-level quants (signed, -nmax..nmax-1) for scale d; error."""
    d16 = fp16_round(d, clamp=True)
    ok = d16 != 0
    v = x / np.where(ok, d16, F32(1))[:, None]
    l = np.rint(np.clip(v, -nmax, nmax - 1)).astype(F32)
    l[~ok] = 0
    return d16, l, _sse(x, d16[:, None] * l, w)


def _asym_eval(x, w, d, m, nmax):
    d16, m16 = fp16_round(d, clamp=True), fp16_round(m, clamp=True)
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
    mx = signed_absmax(x)
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
    sumlx = lane_sum((w * x) * l, 8)
    suml2 = lane_sum((w * l) * l, 8)
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
        first = signed_absmax(xb) / F32(-nmax)          # llama.cpp reference scale
        steps = SYM_STEPS_PLAIN
    else:
        w = block_weights(imatrix, nrows, QK)
        first, _ = make_qx(xb, _row_weights(x, imatrix), nmax)
        steps = SYM_STEPS
    best = _sym_eval(xb, w, first, nmax)
    if imatrix is not None:
        best = _keep(best, _sym_eval(xb, w, signed_absmax(xb) / F32(-nmax), nmax))
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
        w = block_weights(imatrix, nrows, QK)
        first_d, first_m = _llama_asym(xb, _row_weights(x, imatrix), nmax)[:2]
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


# ---------------------------------------------------------------- the four types

def _pack(d, m, q, five_bit):
    """Blocks: d (fp16), m (fp16, _1 types: m is not None), qh (the 5th bits, Q5 types: one
    bit per value), qs (the low 4 bits: value j low nibble, j+16 high nibble)."""
    parts = [fp16_bytes(d)] + ([fp16_bytes(m)] if m is not None else [])
    if five_bit:
        parts.append(pack_fields(q >> 4, 1, 1))
    parts.append(pack_fields(q, 4, 16))
    return np.concatenate(parts, axis=1)


class _Q32(QuantType):
    uses_imatrix = True
    nmax: int        # Q4_0 8, Q5_0 16: x = (q - nmax) * d; Q4_1 15, Q5_1 31: x = q * d + m
    asym: bool       # the _1 types (a min)
    five_bit: bool   # the Q5 types (qh)

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        x = np.asarray(x, dtype=F32)
        if cls.asym:
            d, m, q = _quantize_asym(x, imatrix, cls.nmax)
        else:
            (d, q), m = _quantize_sym(x, imatrix, cls.nmax), None
        return _pack(d, m, q, cls.five_bit).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, cls.type_size)
        d = fp16_value(b[:, :2])
        o = 4 if cls.asym else 2
        lv = unpack_fields(b[:, o + (4 if cls.five_bit else 0):], 4, 16)
        if cls.five_bit:
            lv = lv | (unpack_fields(b[:, o:o + 4], 1, 1) << 4)
        if cls.asym:
            m = fp16_value(b[:, 2:4])
            return (d[:, None] * lv.astype(F32) + m[:, None]).reshape(q.shape[0], -1)
        lv = lv.astype(np.int8) - np.int8(cls.nmax)
        return (d[:, None] * lv.astype(F32)).reshape(q.shape[0], -1)


class Q4_0(_Q32, qtype=T.Q4_0):
    """x = (q - 8) * d; layout d, qs[16]."""
    nmax, asym, five_bit = 8, False, False


class Q5_0(_Q32, qtype=T.Q5_0):
    """x = (q - 16) * d; layout d, qh[4], qs[16]."""
    nmax, asym, five_bit = 16, False, True


class Q4_1(_Q32, qtype=T.Q4_1):
    """x = q * d + m; layout d, m, qs[16]."""
    nmax, asym, five_bit = 15, True, False


class Q5_1(_Q32, qtype=T.Q5_1):
    """x = q * d + m; layout d, m, qh[4], qs[16]."""
    nmax, asym, five_bit = 31, True, True


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
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if imatrix is None and not t.asym:
            d = signed_absmax(xb) / F32(-nmax)
            inv = safe_inv(d)
            q = np.minimum(np.trunc(xb * inv[:, None] + F32(nmax + 0.5)), 2 * nmax - 1).astype(np.uint8)
            m = None
        elif imatrix is None:
            m = xb.min(axis=1)
            d = (xb.max(axis=1) - m) / F32(nmax)
            inv = safe_inv(d)
            q = np.trunc((xb - m[:, None]) * inv[:, None] + F32(0.5))
            q = (np.minimum(q, 15) if nmax == 15 else q).astype(np.uint8)
        elif not t.asym:
            d, q = make_qx(xb, _row_weights(x, imatrix), nmax)
            q, m = q.astype(np.uint8), None
        else:
            d, m, q = _llama_asym(xb, _row_weights(x, imatrix), nmax)
            q = q.astype(np.uint8)
        out = _pack(d, m, q, t.five_bit)
    return out.reshape(nrows, t.row_bytes(n))
