"""Legacy 32-element block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.

Each mirrors its C kernel in native/ byte for byte (see primitives.py for the rules).

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
from .primitives import (F32, GROUP_MAX_EPS, block_weights, fp16_bytes, fp16_round, fp16_value, lane_sum,
                         pack_fields, round_half_away, safe_inv, seq_sum, signed_absmax,
                         unpack_fields)
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

class Q4_0(QuantType, qtype=T.Q4_0):
    """x = (q - 8) * d; d fp16; layout d, qs[16]."""
    uses_imatrix = True
    nmax = 8

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, q = _quantize_sym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), pack_fields(q, 4, 16)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 18)
        d = fp16_value(b[:, :2])
        lv = unpack_fields(b[:, 2:], 4, 16).astype(np.int8) - np.int8(8)
        return (d[:, None] * lv.astype(F32)).reshape(q.shape[0], -1)


class Q5_0(QuantType, qtype=T.Q5_0):
    """x = (q - 16) * d; layout d, qh[4], qs[16]."""
    uses_imatrix = True
    nmax = 16

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, q = _quantize_sym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), pack_fields(q >> 4, 1, 1), pack_fields(q, 4, 16)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 22)
        d = fp16_value(b[:, :2])
        lv = (unpack_fields(b[:, 6:], 4, 16) | (unpack_fields(b[:, 2:6], 1, 1) << 4)).astype(np.int8) - np.int8(16)
        return (d[:, None] * lv.astype(F32)).reshape(q.shape[0], -1)


class Q4_1(QuantType, qtype=T.Q4_1):
    """x = q * d + m; layout d, m, qs[16]."""
    uses_imatrix = True
    nmax = 15

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, m, q = _quantize_asym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), fp16_bytes(m), pack_fields(q, 4, 16)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 20)
        d, m = fp16_value(b[:, :2]), fp16_value(b[:, 2:4])
        lv = unpack_fields(b[:, 4:], 4, 16).astype(F32)
        return (d[:, None] * lv + m[:, None]).reshape(q.shape[0], -1)


class Q5_1(QuantType, qtype=T.Q5_1):
    """x = q * d + m; layout d, m, qh[4], qs[16]."""
    uses_imatrix = True
    nmax = 31

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        d, m, q = _quantize_asym(np.asarray(x, dtype=F32), imatrix, cls.nmax)
        out = np.concatenate([fp16_bytes(d), fp16_bytes(m), pack_fields(q >> 4, 1, 1), pack_fields(q, 4, 16)], axis=1)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 24)
        d, m = fp16_value(b[:, :2]), fp16_value(b[:, 2:4])
        lv = (unpack_fields(b[:, 8:], 4, 16) | (unpack_fields(b[:, 4:8], 1, 1) << 4)).astype(F32)
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
        elif sym:
            d, q = make_qx(xb, _row_weights(x, imatrix), nmax)
            q, m = q.astype(np.uint8), None
        else:
            d, m, q = _llama_asym(xb, _row_weights(x, imatrix), nmax)
            q = q.astype(np.uint8)
        parts = [fp16_bytes(d)] + ([fp16_bytes(m)] if m is not None else [])
    if nmax >= 16:
        parts.append(pack_fields(q >> 4, 1, 1))
    parts.append(pack_fields(q, 4, 16))
    return np.concatenate(parts, axis=1).reshape(nrows, t.row_bytes(n))
