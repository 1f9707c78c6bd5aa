"""Q4_K and Q5_K: 256-value super-blocks of 8 sub-blocks (32 values), each with a 6-bit scale
and a 6-bit min; x = d*sc*q - dmin*m with fp16 d, dmin and q in 0..15 (Q4_K) or 0..31 (Q5_K).

Mirrors native/q4_k_q5_k.c byte for byte (rules in primitives.py). Two stages per super-block:

1. llama.cpp's own search, reproduced exactly: without imatrix make_qkx2_quants on weights
   rms + |x| and 6-bit scales/mins relative to the largest; with imatrix make_qkx3_quants on
   weights imatrix * sqrt(sigma2 + x^2) and make_qp_quants for the scales and mins.
2. A polish pass that only ever helps: starting from stage 1, it retries every sub-block's
   (scale, min) pair at the neighbouring 6-bit levels and refits d and dmin by least squares,
   measuring the error we are judged by (sum of imatrix * (x - xhat)^2, imatrix = 1 if none).
   The super-block keeps whichever of the two results has the lower error, computed in float64.

Every reduction below is a sequential loop over the block axis, as the C loops run.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import QuantType
from .primitives import (F32, QK_K, clamp_rint, fp16_bytes, fp16_round, fp16_value, nint,
                         pack_fields, running_max, seq_sum, unpack_fields)
from .searches import make_qkx, make_qp

_CHUNK_BLOCKS = 256  # super-blocks per numpy pass (the polish holds ~50 candidates of each)


# ------------------------------------------------------------------ packing

def _pack_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(B, 8) ints (as llama.cpp holds them in uint8) -> (B, 12) uint8, its exact packing."""
    s = np.zeros((ls.shape[0], 12), np.int64)
    for j in range(8):
        if j < 4:
            s[:, j] = ls[:, j]
            s[:, j + 4] = lm[:, j]
        else:
            s[:, j + 4] = ((ls[:, j] & 0xF) | ((lm[:, j] & 0xF) << 4)) & 0xFF
            s[:, j - 4] = (s[:, j - 4] | ((ls[:, j] >> 4) << 6)) & 0xFF
            s[:, j] = (s[:, j] | ((lm[:, j] >> 4) << 6)) & 0xFF
    return s.astype(np.uint8)


def _unpack_scales(s: np.ndarray):
    """(B, 12) uint8 -> sc, m (B, 8) int32 (get_scale_min_k4)."""
    s = s.astype(np.int32)
    lo, mid, hi = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([lo & 63, (hi & 0xF) | ((lo >> 6) << 4)], axis=1)
    m = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    return sc, m


def _requant(xs, dval, mval, sc, m, L, nmax):
    """Round every value with the stored scale/min. xs (B, 8, 32); dval, mval (B,)."""
    d = dval[:, None] * sc.astype(F32)                       # (B, 8)
    dm = mval[:, None] * m.astype(F32)
    with np.errstate(all="ignore"):
        q = np.clip(nint((xs + dm[:, :, None]) / d[:, :, None]), 0, nmax)
    return np.where((d != 0)[:, :, None], q, L)


def _dequant(dval, mval, sc, m, q):
    """(B,), (B,), (B, 8), (B, 8), (B, 8, 32) -> xhat (B, 8, 32), as llama.cpp dequantizes."""
    d = (dval[:, None] * sc.astype(F32))[:, :, None]
    dm = (mval[:, None] * m.astype(F32))[:, :, None]
    return (d * q.astype(F32) - dm).astype(F32)


def _block_error(xs, xhat, w):
    """sum(w * (x - xhat)^2) per super-block in float64: (B,). Summed over each sub-block's
    32 values in order, then over the 8 sub-blocks in order (the C loop order)."""
    diff = xs.astype(np.float64) - xhat.astype(np.float64)  # (B, 8, 32)
    e = w.astype(np.float64)[None] * (diff * diff)
    part = np.zeros(e.shape[:2])
    for i in range(32):
        part = part + e[:, :, i]
    acc = np.zeros(e.shape[0])
    for j in range(8):
        acc = acc + part[:, j]
    return acc


# ------------------------------------------------------------------ stage 1: llama.cpp

def _ggml_ref(xs, nmax, rmin, rdelta, nstep):
    """quantize_row_q{4,5}_K_ref. xs (B, 8, 32) -> d16, dmin16 (B,) float32 values, sc, m, q."""
    B = xs.shape[0]
    sub = xs.reshape(B * 8, 32)
    sum_x2 = seq_sum(sub * sub)
    av_x = np.sqrt(sum_x2 / F32(32))
    w = (av_x[:, None] + np.abs(sub)).astype(F32)
    scales, mins, L = make_qkx(sub, w, nmax, rmin, rdelta, nstep)
    scales = scales.reshape(B, 8)
    mins = mins.reshape(B, 8)
    max_scale = running_max(scales)
    max_min = running_max(mins)
    with np.errstate(all="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
    ls = np.minimum(63, nint(inv_scale[:, None] * scales) & 0xFF)
    lm = np.minimum(63, nint(inv_min[:, None] * mins) & 0xFF)
    return _finish(xs, max_scale / F32(63), max_min / F32(63), ls, lm, L.reshape(B, 8, 32), nmax)


def _ggml_imatrix(xs, qw, nmax, clamp_ls):
    """quantize_row_q{4,5}_K_impl with quant_weights. qw (256,) per column of the block."""
    B = xs.shape[0]
    flat = xs.reshape(B, QK_K)
    sum_x2 = seq_sum(flat * flat)
    sigma2 = (F32(2) * sum_x2 / F32(QK_K)).astype(F32)
    w = (qw.reshape(1, 8, 32) * np.sqrt(sigma2[:, None, None] + xs * xs)).astype(F32)
    sw = seq_sum(w)
    scales, mins, L = make_qkx(xs.reshape(B * 8, 32), w.reshape(B * 8, 32), nmax, -0.9, 0.05, 36)
    d_block, ls = make_qp(scales.reshape(B, 8), sw, 63)
    m_block, lm = make_qp(mins.reshape(B, 8), sw, 63)
    if clamp_ls:  # Q5_K clamps to 63 here, Q4_K does not (only matters if qp wrapped)
        ls = np.minimum(63, ls)
        lm = np.minimum(63, lm)
    return _finish(xs, d_block, m_block, ls, lm, L.reshape(B, 8, 32), nmax)


def _finish(xs, dsrc, msrc, ls, lm, L, nmax):
    packed = _pack_scales(ls, lm)
    sc, m = _unpack_scales(packed)
    d16 = fp16_round(dsrc)
    m16 = fp16_round(msrc)
    q = _requant(xs, d16, m16, sc, m, L, nmax)
    return dict(d=d16, dmin=m16, packed=packed, sc=sc, m=m, q=q)


# ------------------------------------------------------------------ stage 2: polish

def _combos(R: int):
    """Search order: the centre first, then row-major over the (2R+1)^2 square."""
    square = [(a, b) for a in range(-R, R + 1) for b in range(-R, R + 1)]
    return [(0, 0)] + [ab for ab in square if ab != (0, 0)]


def _search(xs, w, D, Mn, sc, m, R, nmax):
    """Per sub-block, try (sc+a, m+b) for |a|, |b| <= R with d, dmin fixed; keep the lowest
    float32 error sum(w * (x - xhat)^2) (first one on ties). xs (B, 8, 32), w (8, 32)."""
    fnmax = F32(nmax)
    combos = np.array(_combos(R), dtype=np.int32)            # (C, 2)
    s2 = sc[None] + combos[:, 0, None, None]                 # (C, B, 8)
    m2 = m[None] + combos[:, 1, None, None]
    ds = (D[None, :, None] * s2.astype(F32)).astype(F32)
    dm = (Mn[None, :, None] * m2.astype(F32)).astype(F32)
    with np.errstate(all="ignore"):
        inv = np.where(ds > 0, F32(1) / ds, F32(0)).astype(F32)
    q = clamp_rint((xs[None] + dm[..., None]) * inv[..., None], 0, fnmax)  # (C, B, 8, 32)
    diff = xs[None] - (ds[..., None] * q - dm[..., None])
    e = seq_sum(w * (diff * diff))                           # (C, B, 8)
    best, bsc, bm, bq = e[0], s2[0], m2[0], q[0]
    for c in range(1, len(combos)):
        take = (s2[c] >= 0) & (s2[c] <= 63) & (m2[c] >= 0) & (m2[c] <= 63) & (e[c] < best)
        best = np.where(take, e[c], best)
        bsc = np.where(take, s2[c], bsc)
        bm = np.where(take, m2[c], bm)
        bq = np.where(take[:, :, None], q[c], bq)
    return bsc, bm, bq.astype(np.int32)


def _refit(xs, w, D, Mn, sc, m, q):
    """Least-squares d, dmin for fixed sc, m, q (float64; sums over each sub-block in order,
    then over the sub-blocks in order), rounded to fp16. Degenerate lanes keep D, Mn."""
    B = xs.shape[0]
    ww = w.astype(np.float64)                                # (8, 32)
    Bv = m.astype(np.float64)                                # (B, 8)
    z = lambda: np.zeros((B, 8))
    saa, sab, sbb, sxa, sxb = z(), z(), z(), z(), z()
    for i in range(32):
        A = (sc * q[:, :, i]).astype(np.float64)
        x = xs[:, :, i].astype(np.float64)
        wa = ww[:, i] * A
        wb = ww[:, i] * Bv
        saa = saa + wa * A
        sab = sab + wa * Bv
        sbb = sbb + wb * Bv
        sxa = sxa + wa * x
        sxb = sxb + wb * x
    tot = []
    for part in (saa, sab, sbb, sxa, sxb):
        acc = np.zeros(B)
        for j in range(8):
            acc = acc + part[:, j]
        tot.append(acc)
    saa, sab, sbb, sxa, sxb = tot
    det = saa * sbb - sab * sab
    with np.errstate(all="ignore"):
        dn = (sxa * sbb - sab * sxb) / det
        en = (sab * sxa - saa * sxb) / det
        both = (det > 0) & (en >= 0)
        d_only = ~both & (saa > 0)
        dn = np.where(both, dn, np.where(d_only, (sxa + Mn.astype(np.float64) * sab) / saa, 0.0))
        en = np.where(both, en, Mn.astype(np.float64))
        d16 = fp16_round(dn.astype(F32))
        e16 = fp16_round(en.astype(F32))
    ok = (both | d_only) & np.isfinite(d16) & np.isfinite(e16) & (d16 > 0) & (e16 >= 0)
    return np.where(ok, d16, D).astype(F32), np.where(ok, e16, Mn).astype(F32)


def _polish(xs, w, r, radii, nmax):
    D, Mn, sc, m = r["d"], r["dmin"], r["sc"], r["m"]
    q = None
    for k, R in enumerate(radii):
        if k:
            D, Mn = _refit(xs, w, D, Mn, sc, m, q)
        sc, m, q = _search(xs, w, D, Mn, sc, m, R, nmax)
    return dict(d=D, dmin=Mn, packed=_pack_scales(sc, m), sc=sc, m=m, q=q)


def _guarded(xs, w, r0, r1):
    """Per super-block, the result with the lower float64 metric error (r0 on ties)."""
    e0 = _block_error(xs, _dequant(r0["d"], r0["dmin"], r0["sc"], r0["m"], r0["q"]), w)
    e1 = _block_error(xs, _dequant(r1["d"], r1["dmin"], r1["sc"], r1["m"], r1["q"]), w)
    take = e1 < e0
    out = {}
    for k in r0:
        t = take.reshape((-1,) + (1,) * (r0[k].ndim - 1))
        out[k] = np.where(t, r1[k], r0[k]).astype(r0[k].dtype)
    return out


# ------------------------------------------------------------------ the types

class _Q45K(QuantType):
    nmax: int          # largest quant (15 or 31)
    ref_args: tuple    # make_qkx2_quants (rmin, rdelta, nstep) without imatrix
    clamp_ls: bool     # llama.cpp's imatrix path clamps the qp levels to 63 (Q5_K only)
    radii: tuple       # polish: search radius of each round, a d/dmin refit between rounds

    @classmethod
    def _stage1(cls, xs, imatrix):
        if imatrix is None:
            return _ggml_ref(xs, cls.nmax, *cls.ref_args)
        return _ggml_imatrix(xs, imatrix, cls.nmax, cls.clamp_ls)

    @classmethod
    def _one_position(cls, xs, qw):
        """All super-blocks at one position in the row (same imatrix slice qw or None)."""
        r0 = cls._stage1(xs, qw)
        w = np.ones((8, 32), F32) if qw is None else qw.reshape(8, 32).astype(F32)
        if not cls.radii:
            return r0
        return _guarded(xs, w, r0, _polish(xs, w, r0, cls.radii, cls.nmax))

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        nb = n // QK_K
        xs = np.ascontiguousarray(x, dtype=F32).reshape(nrows * nb, 8, 32)
        qw = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=F32).reshape(nb, QK_K)
        out = []
        step = max(1, _CHUNK_BLOCKS // nb)                   # bound the temporaries
        for r0 in range(0, nrows, step):
            r1 = min(nrows, r0 + step)
            out.append(cls._quantize_blocks(xs[r0 * nb:r1 * nb], qw, nb))
        if not out:
            return np.empty((0, cls.row_bytes(n)), np.uint8)
        return np.concatenate(out).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def _quantize_blocks(cls, blk, qw, nb):
        """(B, 8, 32) blocks of whole rows (B a multiple of nb) -> (B, type_size) uint8."""
        if qw is None:
            r = cls._one_position(blk, None)
        else:
            # the imatrix differs per column: group the blocks by position in the row
            B = blk.shape[0]
            parts = {}
            for k in range(nb):
                parts[k] = cls._one_position(blk[k::nb], qw[k])
            r = {}
            for key in parts[0]:
                arr = np.empty((B,) + parts[0][key].shape[1:], parts[0][key].dtype)
                for k in range(nb):
                    arr[k::nb] = parts[k][key]
                r[key] = arr
        return cls._pack(r)

    @classmethod
    def _pack(cls, r):
        """d, dmin, the packed 6-bit scales and mins, qh (Q5_K: the 5th bits), qs."""
        q = r["q"].reshape(-1, QK_K)
        parts = [fp16_bytes(r["d"]), fp16_bytes(r["dmin"]), r["packed"]]
        if cls.nmax > 15:
            parts.append(pack_fields(q >> 4, 1, 32))
        parts.append(pack_fields(q, 4, 32))
        return np.concatenate(parts, axis=1)

    @classmethod
    def _unpack_q(cls, b):
        q = unpack_fields(b[:, -128:], 4, 32)
        if cls.nmax > 15:
            q = q | (unpack_fields(b[:, 16:48], 1, 32) << 4)
        return q.reshape(-1, 8, 32)

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, cls.type_size)
        d = fp16_value(b[:, 0:2])
        dmin = fp16_value(b[:, 2:4])
        sc, m = _unpack_scales(b[:, 4:16])
        return _dequant(d, dmin, sc, m, cls._unpack_q(b)).reshape(nrows, -1)


class Q4_K(_Q45K, qtype=T.Q4_K):
    """layout: d, dmin (fp16), scales[12], qs[128] (4-bit quants)"""
    nmax = 15
    ref_args = (-1.0, 0.1, 20)
    radii = (2, 2)
    clamp_ls = False


class Q5_K(_Q45K, qtype=T.Q5_K):
    """layout: d, dmin (fp16), scales[12], qh[32] (5th bits), qs[128] (low 4 bits)"""
    nmax = 31
    ref_args = (-0.5, 0.1, 15)
    radii = (3, 2)
    clamp_ls = True
