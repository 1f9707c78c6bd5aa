"""Non-linear 4-bit types: IQ4_NL (blocks of 32) and IQ4_XS (super-blocks of 256).

Both store 4-bit indices into the fixed table KVALUES; x_hat = d * KVALUES[q] (IQ4_NL) or
d * (ls - 32) * KVALUES[q] with a 6-bit scale ls per 32 values (IQ4_XS).

The search is llama.cpp's (quantize_row_iq4_nl_impl): per 32 values, weights w = x^2, or
imatrix * sqrt(sigma2 + x^2) with sigma2 = 2 * mean(x^2) over the (super-)block; a first
scale max/127, then 15 inverse scales (itry - 127) / max for itry in -7..7, each rounded to
the nearest table value and fitted in closed form (keep the largest sumqx^2 / sumq2).
On top of that exact reproduction we keep, per block, the lowest of a few candidates under
the error the tensor is judged by, sum(imatrix * (x - x_hat)^2) (imatrix = 1 without one):
llama.cpp's own bytes, the same scale with indices re-picked for the fp16-rounded scale, and
the scale that was best under that error during the search. So we are never worse per block.

Mirrors native/q_iq4.c byte for byte (see base.py for the rules).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import F32, QuantType, fp16_bytes, fp16_round, fp16_value, nearest_int, safe_inv, seq_sum

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                   dtype=np.int8)
KV = KVALUES.astype(F32)
# 2 * midpoints between neighbouring table values (exact small integers)
MID2 = (KV[:-1] + KV[1:]).astype(F32)
GROUP_MAX_EPS = F32(1e-15)
NTRY = 7


def best_index(a: np.ndarray) -> np.ndarray:
    """Index of the nearest table value to `a`; a midpoint goes up (llama.cpp best_index_int8).

    Comparing 2a with the exact midpoint sums equals llama.cpp's float comparison of
    a - v[i-1] with v[i] - a: near a midpoint both differences are exact.
    """
    a = np.asarray(a, dtype=F32)
    return np.searchsorted(MID2, a + a, side="right").astype(np.uint8)


def _fit(xb, w, L):
    """Closed-form fit of indices L: (sumqx, sumq2), both sequential over the block."""
    q = KV[L]
    wq = w * q
    return seq_sum(wq * xb), seq_sum(wq * q)


def _search(xb: np.ndarray, wl: np.ndarray, wm: np.ndarray):
    """Scale search on (M, 32) blocks.

    wl: llama.cpp's weights, wm: the judging weights.
    Returns (d_llama, d_metric) (M,) float32: llama.cpp's scale and the scale whose rounding
    gave the best fit under wm among the same trials (0 for blocks below GROUP_MAX_EPS).
    """
    M = xb.shape[0]
    imax = np.argmax(np.abs(xb), axis=1)  # first largest |x|, as the strict '>' loop
    mx = xb[np.arange(M), imax]
    zero = np.abs(mx) < GROUP_MAX_EPS
    mx = np.where(zero, F32(1), mx).astype(F32)

    d0 = (-mx) / F32(KV[0])
    L = best_index(safe_inv(d0)[:, None] * xb)
    sumqx, sumq2 = _fit(xb, wl, L)
    d = np.where(sumq2 > 0, sumqx / np.where(sumq2 > 0, sumq2, F32(1)), F32(0)).astype(F32)
    best = d * sumqx
    mqx, mq2 = _fit(xb, wm, L)
    dm = np.where(mq2 > 0, mqx / np.where(mq2 > 0, mq2, F32(1)), F32(0)).astype(F32)
    bestm = dm * mqx
    for itry in range(-NTRY, NTRY + 1):
        inv = F32(itry + int(KVALUES[0])) / mx
        L = best_index(inv[:, None] * xb)
        sumqx, sumq2 = _fit(xb, wl, L)
        upd = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(upd, sumqx / np.where(upd, sumq2, F32(1)), d).astype(F32)
        best = np.where(upd, d * sumqx, best).astype(F32)
        mqx, mq2 = _fit(xb, wm, L)
        upd = (mq2 > 0) & (mqx * mqx > bestm * mq2)
        dm = np.where(upd, mqx / np.where(upd, mq2, F32(1)), dm).astype(F32)
        bestm = np.where(upd, dm * mqx, bestm).astype(F32)
    return np.where(zero, F32(0), d).astype(F32), np.where(zero, F32(0), dm).astype(F32)


def _err(xb, wm, step, L):
    """sum(wm * (x - step*KV[L])^2), sequential; step (M,) is the dequantized scale."""
    e = xb - step[:, None] * KV[L]
    return seq_sum(wm * e * e)


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


def _pack_nibbles(L):
    """(M, 32) indices -> (M, 16) bytes: low nibble element j, high nibble element j+16."""
    return (L[:, :16] | (L[:, 16:] << 4)).astype(np.uint8)


def _unpack_nibbles(qs):
    """(M, 16) bytes -> (M, 32) indices."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


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
            L1, e1 = _pick(xb, wm, s0)
            s2 = fp16_round(d_m)
            L2, e2 = _pick(xb, wm, s2)
        return xb, (s0, L0, e0), (s0, L1, e1), (s2, L2, e2)

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        _, *cands = cls._blocks(x, imatrix)
        errs = np.stack([c[2] for c in cands])           # (3, M)
        k = np.argmin(errs, axis=0)                       # first of equal errors
        s = np.choose(k, [c[0] for c in cands]).astype(F32)
        L = np.choose(k[:, None], [c[1] for c in cands]).astype(np.uint8)
        out = np.empty((L.shape[0], 18), dtype=np.uint8)
        out[:, :2] = fp16_bytes(s)
        out[:, 2:] = _pack_nibbles(L)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def quantize_rows_llama(cls, x, imatrix=None):
        """llama.cpp's exact bytes (no candidate guard): for tests and benchmarks."""
        nrows, n = x.shape
        _, (s0, L0, _), *_ = cls._blocks(x, imatrix)
        out = np.empty((L0.shape[0], 18), dtype=np.uint8)
        out[:, :2] = fp16_bytes(s0)
        out[:, 2:] = _pack_nibbles(L0)
        return out.reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 18)
        d = fp16_value(b[:, :2])
        return (d[:, None] * KV[_unpack_nibbles(b[:, 2:])]).reshape(nrows, -1)


class IQ4_XS(QuantType, qtype=T.IQ4_XS):
    uses_imatrix = True
    SUB_DELTAS = (-1, 0, 1)   # sub-block scale candidates around the rounded one

    @classmethod
    def _super(cls, scales):
        """llama.cpp's super-block scale d = -max_scale/32 and the 6-bit sub scales l."""
        nsb = scales.shape[0]
        imax = np.argmax(np.abs(scales), axis=1)
        max_scale = scales[np.arange(nsb), imax]
        d = (-max_scale / F32(32)).astype(F32)
        l = np.clip(nearest_int(safe_inv(d)[:, None] * scales), -32, 31)
        return d, l

    @classmethod
    def _blocks(cls, x, imatrix):
        nrows, n = x.shape
        x = np.asarray(x, dtype=F32)
        wl, wm = _weights(x, imatrix, 256)
        xs, wm = x.reshape(-1, 8, 32), wm.reshape(-1, 8, 32)
        nsb = xs.shape[0]
        flat = xs.reshape(-1, 32)
        wmf = wm.reshape(-1, 32)
        with np.errstate(all="ignore"):
            d_ll, d_m = _search(flat, wl.reshape(-1, 32), wmf)
            d_ll, d_m = d_ll.reshape(nsb, 8), d_m.reshape(nsb, 8)
            cands = []
            for scales in (d_ll, d_m):
                d, l = cls._super(scales)
                s = fp16_round(d)
                opts = []
                if not cands:  # llama.cpp's own bytes: indices from the unrounded d*l
                    dl = (d[:, None] * l.astype(F32)).reshape(-1)
                    L0 = best_index(safe_inv(dl)[:, None] * flat)
                    step = (s[:, None] * l.astype(F32)).reshape(-1)
                    opts.append((l, L0.reshape(nsb, 8, 32), _err(flat, wmf, step, L0).reshape(nsb, 8)))
                ls = [l]
                if scales is d_ll:
                    ls.append(np.clip(nearest_int(safe_inv(d)[:, None] * d_m), -32, 31))
                for base in ls:
                    for dl_ in cls.SUB_DELTAS:
                        lc = np.clip(base + dl_, -32, 31)
                        step = (s[:, None] * lc.astype(F32)).reshape(-1)
                        Lc, ec = _pick(flat, wmf, step)
                        opts.append((lc, Lc.reshape(nsb, 8, 32), ec.reshape(nsb, 8)))
                errs = np.stack([o[2] for o in opts])            # (k, nsb, 8)
                k = np.argmin(errs, axis=0)
                lsel = np.choose(k, [o[0] for o in opts])
                Lsel = np.choose(k[..., None], [o[1] for o in opts])
                esel = np.choose(k, [o[2] for o in opts]).astype(F32)
                cands.append((s, lsel, Lsel, seq_sum(esel)))
        return cands

    @classmethod
    def _pack(cls, s, l, L):
        nsb = s.shape[0]
        out = np.zeros((nsb, 136), dtype=np.uint8)
        out[:, :2] = fp16_bytes(s)
        u = (l + 32).astype(np.uint16)                               # (nsb, 8) in 0..63
        sh = np.zeros(nsb, dtype=np.uint16)
        for ib in range(8):
            sh |= (u[:, ib] >> 4) << (2 * ib)
        out[:, 2:4] = sh.astype("<u2").reshape(nsb, 1).view(np.uint8)
        lo = (u & 0x0F).astype(np.uint8)
        out[:, 4:8] = lo[:, 0::2] | (lo[:, 1::2] << 4)
        out[:, 8:] = _pack_nibbles(L.reshape(-1, 32)).reshape(nsb, 128)
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
        sh = b[:, 2:4].copy().view("<u2")[:, 0].astype(np.int32)
        lo = b[:, 4:8]
        lo = np.stack([lo & 0x0F, lo >> 4], axis=2).reshape(nsb, 8).astype(np.int32)
        hi = np.stack([(sh >> (2 * ib)) & 3 for ib in range(8)], axis=1)
        ls = (lo | (hi << 4)) - 32                                     # (nsb, 8)
        dl = d[:, None] * ls.astype(F32)
        L = _unpack_nibbles(b[:, 8:].reshape(-1, 16)).reshape(nsb, 8, 32)
        return (dl[:, :, None] * KV[L]).reshape(nrows, -1)
