"""Non-linear 4-bit types: IQ4_NL (blocks of 32) and IQ4_XS (super-blocks of 256).

Both store 4-bit indices into the fixed table KVALUES; x_hat = d * KVALUES[q] (IQ4_NL) or
d * (ls - 32) * KVALUES[q] with a 6-bit scale ls per 32 values (IQ4_XS).

llama.cpp's search (quantize_row_iq4_nl_impl), reproduced exactly: per 32 values, weights
w = x^2, or imatrix * sqrt(sigma2 + x^2) with sigma2 = 2 * mean(x^2) over the (super-)block;
a first inverse scale 127/max, then (itry - 127)/max for itry in -7..7 (max = the x of
largest |x|), each rounded to the nearest table value and fitted in closed form, keeping
the largest sumqx^2/sumq2. IQ4_XS then quantizes the 8 scales with d = -max_scale/32.

What we add, judged by the error the tensor is measured with, sum(wm * (x - x_hat)^2)
(wm = imatrix, or 1 without one):
  * the same trials plus EXTRA_TRIALS (a wider range, and max mapped to the positive end)
    fitted under wm;
  * per block a few candidates, keeping the lowest error (ties: the earlier): llama.cpp's
    own bytes first, its scale with indices re-picked for the fp16-rounded scale, the best
    wm scale, and that scale refitted once. IQ4_XS: per sub-block the best 6-bit scale of a
    few, for llama.cpp's super scale and for -max/32 and +max/31 of the wm scales, and a
    refitted super scale.
llama.cpp's bytes are always a candidate, so no block is ever worse than llama.cpp's. (One
deliberate difference: a scale beyond fp16 range is clamped to 65504 where llama.cpp would
store inf.) Our own sums use four interleaved lanes (lane_sum) so that the C loops vectorize.

Mirrors native/iq4_nl_iq4_xs.c byte for byte (see primitives.py for the rules).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import QuantType
from .primitives import (F32, GROUP_MAX_EPS, fp16_bytes, fp16_round, fp16_value, lane_sum, nint,
                         pack_fields, safe_inv, seq_sum, signed_absmax, unpack_fields)

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                   dtype=np.int8)
KV = KVALUES.astype(F32)
# 2 * midpoints between neighbouring table values (exact small integers)
MID2 = (KV[:-1] + KV[1:]).astype(F32)
# trials k: inverse scale k / max, max = the x of largest |x| (it maps to table value ~k)
LLAMA_TRIALS = tuple(range(-127 - 7, -127 + 8))                    # llama.cpp's ntry = 7
EXTRA_TRIALS = (tuple(-127 + i for i in (-30, -24, -18, -12, 12, 18, 24, 30))
                + tuple(113 + i for i in range(-30, 31, 6)))


def best_index(a: np.ndarray) -> np.ndarray:
    """Index of the nearest table value to `a`; a midpoint goes up (llama.cpp best_index_int8).

    Comparing 2a with the exact midpoint sums equals llama.cpp's float comparison of
    a - v[i-1] with v[i] - a: near a midpoint both differences are exact.
    """
    a = np.asarray(a, dtype=F32)
    return np.searchsorted(MID2, a + a, side="right").astype(np.uint8)


def _fit(xb, w, L):
    """llama.cpp's closed-form fit of indices L: (sumqx, sumq2), sequential over the block."""
    q = KV[L]
    wq = w * q
    return seq_sum(wq * xb), seq_sum(wq * q)


def _mfit(wx, wm, L):
    """The same fit under the judging weights (wx = wm * x): (sum q*wx, sum wm*q*q)."""
    q = KV[L]
    return lane_sum(q * wx), lane_sum(wm * q * q)


def _search(xb: np.ndarray, wl: np.ndarray, wm: np.ndarray):
    """Scale search on (M, 32) blocks.

    wl: llama.cpp's weights, wm: the judging weights.
    Returns (d_llama, d_metric) (M,) float32: llama.cpp's scale (its 16 trials under wl), and
    the least-squares scale under wm of the best of those trials plus EXTRA_TRIALS (which
    also map the largest |x| to -127 +- 30 or to the positive end 113 +- 30).
    0 for blocks below GROUP_MAX_EPS.
    """
    mx = signed_absmax(xb)  # first largest |x|, as the strict '>' loop
    zero = np.abs(mx) < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx).astype(F32)

    def ls(sumqx, sumq2, ok):
        return np.where(ok, sumqx / np.where(ok, sumq2, F32(1)), F32(0)).astype(F32)

    d0 = (-mx) / F32(KV[0])
    L = best_index(safe_inv(d0)[:, None] * xb)
    sumqx, sumq2 = _fit(xb, wl, L)
    d = ls(sumqx, sumq2, sumq2 > 0)
    best = d * sumqx
    wx = wm * xb
    mqx, mq2 = _mfit(wx, wm, L)
    dm = ls(mqx, mq2, mq2 > 0)
    bestm = dm * mqx
    for k in LLAMA_TRIALS + EXTRA_TRIALS:
        L = best_index((F32(k) / mx)[:, None] * xb)
        if k in LLAMA_TRIALS:
            sumqx, sumq2 = _fit(xb, wl, L)
            upd = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = np.where(upd, ls(sumqx, sumq2, upd), d)
            best = np.where(upd, d * sumqx, best).astype(F32)
        mqx, mq2 = _mfit(wx, wm, L)
        upd = (mq2 > 0) & (mqx * mqx > bestm * mq2)
        dm = np.where(upd, ls(mqx, mq2, upd), dm)
        bestm = np.where(upd, dm * mqx, bestm).astype(F32)
    return np.where(zero, F32(0), d).astype(F32), np.where(zero, F32(0), dm).astype(F32)


def _err(xb, wm, step, L):
    """sum(wm * (x - step*KV[L])^2) per block; step (M,) is the dequantized scale."""
    e = xb - step[:, None] * KV[L]
    err = lane_sum(wm * e * e)
    return np.where(np.isnan(err), F32(np.inf), err)  # inf * 0 weight: never chosen


def _refit(xb, wm, L, mult=None):
    """Least-squares scale under wm for fixed indices L (0 where undefined).

    mult: per-value integer multipliers of the table value (IQ4_XS sub-block scales)."""
    q = KV[L] if mult is None else mult * KV[L]
    wq = wm * q
    sumqx, sumq2 = lane_sum(wq * xb), lane_sum(wq * q)
    ok = sumq2 > 0
    return np.where(ok, sumqx / np.where(ok, sumq2, F32(1)), F32(0)).astype(F32)


def _pick(xb, wm, step):
    """Nearest indices for the dequantized scale `step` (M,) and their error."""
    L = best_index(safe_inv(step)[:, None] * xb)
    return L, _err(xb, wm, step, L)


def _weights(x, imatrix, nblk):
    """llama.cpp weights (nrows, n) and judging weights for rows x; sigma2 per nblk values."""
    nrows, n = x.shape
    if imatrix is None:
        return x * x, np.ones_like(x)
    sb = x.reshape(nrows, n // nblk, nblk)
    sigma2 = seq_sum(sb * sb) * F32(2.0 / nblk)                      # (nrows, n/nblk)
    im = np.broadcast_to(np.asarray(imatrix, dtype=F32), x.shape)
    wl = im * np.sqrt(np.repeat(sigma2, nblk, axis=1) + x * x)
    return wl.astype(F32), np.ascontiguousarray(im)


class IQ4_NL(QuantType, qtype=T.IQ4_NL):
    uses_imatrix = True

    @classmethod
    def _blocks(cls, x, imatrix):
        nrows, n = x.shape
        x = np.asarray(x, dtype=F32)
        wl, wm = _weights(x, imatrix, 32)
        xb, wl, wm = (a.reshape(-1, 32) for a in (x, wl, wm))
        with np.errstate(all="ignore"):
            d_ll, d_m = _search(xb, wl, wm)
            # llama.cpp's bytes: indices from the unrounded scale
            L0 = best_index(safe_inv(d_ll)[:, None] * xb)
            s0 = fp16_round(d_ll)
            e0 = _err(xb, wm, s0, L0)
            s1 = fp16_round(d_ll, clamp=True)
            L1, e1 = _pick(xb, wm, s1)
            s2 = fp16_round(d_m, clamp=True)
            L2, e2 = _pick(xb, wm, s2)
            s3 = fp16_round(_refit(xb, wm, L2), clamp=True)
            L3, e3 = _pick(xb, wm, s3)
        return xb, (s0, L0, e0), (s1, L1, e1), (s2, L2, e2), (s3, L3, e3)

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        _, *cands = cls._blocks(x, imatrix)
        errs = np.stack([c[2] for c in cands])           # (4, M)
        k = np.argmin(errs, axis=0)                       # first of equal errors
        s = np.choose(k, [c[0] for c in cands]).astype(F32)
        L = np.choose(k[:, None], [c[1] for c in cands]).astype(np.uint8)
        out = np.empty((L.shape[0], 18), dtype=np.uint8)
        out[:, :2] = fp16_bytes(s)
        out[:, 2:] = pack_fields(L, 4, 16)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def quantize_rows_llama(cls, x, imatrix=None):
        """llama.cpp's exact bytes (no candidate guard): for tests and benchmarks."""
        nrows, n = x.shape
        _, (s0, L0, _), *_ = cls._blocks(x, imatrix)
        out = np.empty((L0.shape[0], 18), dtype=np.uint8)
        out[:, :2] = fp16_bytes(s0)
        out[:, 2:] = pack_fields(L0, 4, 16)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 18)
        d = fp16_value(b[:, :2])
        return (d[:, None] * KV[unpack_fields(b[:, 2:], 4, 16)]).reshape(nrows, -1)


DELTAS = (-1, 0, 1)  # IQ4_XS: sub-block scales tried around a rounded one


class IQ4_XS(QuantType, qtype=T.IQ4_XS):
    uses_imatrix = True

    @classmethod
    def _super(cls, scales, div=-32):
        """Super-block scale d = max_scale/div (llama.cpp: div = -32) and 6-bit sub scales l."""
        max_scale = signed_absmax(scales)
        d = (max_scale / F32(div)).astype(F32) if div > 0 else (-max_scale / F32(-div)).astype(F32)
        return d, cls._sub_l(d, scales)

    @staticmethod
    def _sub_l(d, scales):
        v = np.clip(safe_inv(d)[:, None] * scales, F32(-40), F32(40))
        return np.clip(nint(v), -32, 31)

    @classmethod
    def _choose(cls, flat, wmf, s, opts, bases):
        """Per sub-block, the best of `opts` (l, L, err) and of l = base + delta for each
        (base, deltas) in `bases` -> (s, l, L, err total)."""
        nsb = s.shape[0]
        opts = list(opts)
        for base, deltas in bases:
            for dl_ in deltas:
                lc = np.clip(base + dl_, -32, 31)
                step = (s[:, None] * lc.astype(F32)).reshape(-1)
                Lc, ec = _pick(flat, wmf, step)
                opts.append((lc, Lc.reshape(nsb, 8, 32), ec.reshape(nsb, 8)))
        k = np.argmin(np.stack([o[2] for o in opts]), axis=0)          # (nsb, 8)
        lsel = np.choose(k, [o[0] for o in opts])
        Lsel = np.choose(k[..., None], [o[1] for o in opts])
        esel = np.choose(k, [o[2] for o in opts]).astype(F32)
        return s, lsel, Lsel, seq_sum(esel)

    @classmethod
    def _blocks(cls, x, imatrix):
        nrows, n = x.shape
        x = np.asarray(x, dtype=F32)
        wl, wm = _weights(x, imatrix, 256)
        flat = x.reshape(-1, 32)
        wmf = wm.reshape(-1, 32)
        nsb = flat.shape[0] // 8
        with np.errstate(all="ignore"):
            d_ll, d_m = _search(flat, wl.reshape(-1, 32), wmf)
            d_ll, d_m = d_ll.reshape(nsb, 8), d_m.reshape(nsb, 8)
            # A: llama.cpp's super scale; its own bytes are option 0 of every sub-block
            d, l = cls._super(d_ll)
            s = fp16_round(d, clamp=True)
            dl = (d[:, None] * l.astype(F32)).reshape(-1)
            L0 = best_index(safe_inv(dl)[:, None] * flat)
            step = (s[:, None] * l.astype(F32)).reshape(-1)
            opt0 = (l, L0.reshape(nsb, 8, 32), _err(flat, wmf, step, L0).reshape(nsb, 8))
            # A: llama.cpp's d; sub scales: its own, or rounded from the wm scales (+-1)
            cands = [cls._choose(flat, wmf, s, [opt0], [(l, (0,)), (cls._sub_l(d, d_m), DELTAS)])]
            # B, C: super scale from the wm scales, largest one at l = -32 or at l = +31
            for div in (-32, 31):
                d, l = cls._super(d_m, div)
                cands.append(cls._choose(flat, wmf, fp16_round(d, clamp=True), [], [(l, DELTAS)]))
            # D: the best so far with its super scale refitted (least squares under wm)
            k = np.argmin(np.stack([c[3] for c in cands]), axis=0)
            lsel = np.choose(k[:, None], [c[1] for c in cands])
            Lsel = np.choose(k[:, None, None], [c[2] for c in cands])
            dr = _refit(flat.reshape(nsb, 256), wmf.reshape(nsb, 256),
                        Lsel.reshape(nsb, 256), (np.repeat(lsel, 32, axis=1)).astype(F32))
            cands.append(cls._choose(flat, wmf, fp16_round(dr, clamp=True), [],
                                     [(lsel, (0,)), (cls._sub_l(dr, d_m), DELTAS)]))
        return cands

    @classmethod
    def _pack(cls, s, l, L):
        nsb = s.shape[0]
        out = np.zeros((nsb, 136), dtype=np.uint8)
        out[:, :2] = fp16_bytes(s)
        u = (l + 32).astype(np.uint16)                               # (nsb, 8) in 0..63
        out[:, 2:4] = pack_fields(u >> 4, 2, 1)                   # scales_h, uint16 LE
        out[:, 4:8] = pack_fields(u, 4, 1)                        # scales_l
        out[:, 8:] = pack_fields(L.reshape(nsb, 256), 4, 16)
        return out

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        cands = cls._blocks(x, imatrix)
        k = np.argmin(np.stack([c[3] for c in cands]), axis=0)       # (nsb,), ties -> first
        s = np.choose(k, [c[0] for c in cands]).astype(F32)
        l = np.choose(k[:, None], [c[1] for c in cands])
        L = np.choose(k[:, None, None], [c[2] for c in cands]).astype(np.uint8)
        return cls._pack(s, l, L).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def quantize_rows_llama(cls, x, imatrix=None):
        """llama.cpp's exact bytes (no candidate guard): for tests and benchmarks."""
        nrows, n = x.shape
        x = np.asarray(x, dtype=F32)
        wl, wm = _weights(x, imatrix, 256)
        flat = x.reshape(-1, 32)
        nsb = flat.shape[0] // 8
        with np.errstate(all="ignore"):
            d_ll, _ = _search(flat, wl.reshape(-1, 32), wm.reshape(-1, 32))
            d, l = cls._super(d_ll.reshape(nsb, 8))
            dl = (d[:, None] * l.astype(F32)).reshape(-1)
            L = best_index(safe_inv(dl)[:, None] * flat)
        return cls._pack(fp16_round(d), l, L).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 136)
        nsb = b.shape[0]
        d = fp16_value(b[:, :2])
        lo = unpack_fields(b[:, 4:8], 4, 1).astype(np.int32)
        hi = unpack_fields(b[:, 2:4], 2, 1).astype(np.int32)
        ls = (lo | (hi << 4)) - 32                                     # (nsb, 8)
        dl = d[:, None] * ls.astype(F32)
        L = unpack_fields(b[:, 8:], 4, 16).reshape(nsb, 8, 32)
        return (dl[:, :, None] * KV[L]).reshape(nrows, -1)
