"""Q2_K and Q3_K: 256-value super-blocks of 16 sub-blocks of 16 values.

Q2_K  (84 bytes): scales[16] (low nibble scale, high nibble min), qs[64], d, dmin (fp16);
                  x = d*sc*q - dmin*m, q in 0..3.
Q3_K (110 bytes): hmask[32], qs[64], scales[12] (6-bit, stored +32), d (fp16);
                  x = d*(sc-32)*(q-4), q in 0..7 (low 2 bits in qs, third bit in hmask).

Algorithm: first exactly llama.cpp's (ggml-quants.c quantize_row_q{2,3}_K_ref without an
imatrix, quantize_row_q{2,3}_K_impl with one), then a refinement pass that only keeps a change
where it lowers the block's error sum(w*(x - x_hat)^2) (w = imatrix or 1), so the result is
never worse than libggml's. The C kernels (native/q2_k_q3_k.c) mirror this file byte for byte:
float32 in C's operation order, sequential sums, llama.cpp's nearest_int bit trick.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import QuantType
from .primitives import (F32, GROUP_MAX_EPS, QK_K, block_weights, clamp_rint, fp16_bytes,
                         fp16_round, fp16_value, lane_sum, nint, pack_fields, running_max, safe_inv,
                         seq_sum, signed_absmax, unpack_fields)
from .searches import make_qkx, make_qp, make_qx

F64 = np.float64


def _refine_inputs(x, imatrix):
    """The refinement's view of rows x (nrows, n): values and weights (imatrix, or 1), both
    (nb, 16, 16) float32."""
    nrows, n = x.shape
    nb = nrows * n // QK_K
    w = np.ones((nb, QK_K), F32) if imatrix is None else block_weights(imatrix, nrows, QK_K)
    return np.asarray(x, dtype=F32).reshape(nb, 16, 16), w.reshape(nb, 16, 16)


# ---------------------------------------------------------------- llama.cpp's make_q3_quants
# (the searches Q2_K and Q3_K share with other types are in searches.py)

def _make_q3(x, nmax):
    """make_q3_quants(do_rmse=true): symmetric, w = x^2, coordinate descent.

    -> (scale (S,), L (S, n) int32 in 0..2*nmax-1; all 0 for an all-zero sub-block)."""
    n = x.shape[1]
    mx = signed_absmax(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    W = x * x
    WX = W * x
    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / mx
        L = np.clip(nint(iscale[:, None] * x), -nmax, nmax - 1)
        Lf = L.astype(F32)
        sumlx = seq_sum(WX * Lf)
        suml2 = seq_sum((W * Lf) * Lf)
        for _ in range(5):
            changed = False
            for i in range(n):
                w, wx, xi = W[:, i], WX[:, i], x[:, i]
                Li = L[:, i]
                Lif = Li.astype(F32)
                slx = sumlx - wx * Lif
                sl2 = suml2 - (w * Lif) * Lif
                new = np.clip(nint((xi * sl2) / slx), -nmax, nmax - 1)
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


# ---------------------------------------------------------------- Q2_K

def _q2_requant(xb, L, sb, dval, mval):
    """Re-round every sub-block with its stored scale; a sub-block with d*sc == 0 keeps L.

    xb (nb, 16, 16), L (nb, 16, 16), sb (nb, 16) scale bytes, dval/mval (nb,) fp16 values."""
    dl = dval[:, None] * (sb & 0xF).astype(F32)       # (nb, 16)
    ml = mval[:, None] * (sb >> 4).astype(F32)
    with np.errstate(all="ignore"):
        new = np.clip(nint((xb + ml[..., None]) / dl[..., None]), 0, 3)
    return np.where((dl != 0)[..., None], new, L)


def q2_k_llama(x: np.ndarray, imatrix: np.ndarray | None):
    """llama.cpp's Q2_K -> (L (nb,16,16), scale bytes (nb,16), d (nb,), dmin (nb,)) with d, dmin
    as fp16-rounded float32."""
    nrows, n = x.shape
    xb = np.asarray(x, dtype=F32).reshape(-1, QK_K)      # (nb, 256)
    nb = xb.shape[0]
    xs = xb.reshape(nb * 16, 16)
    if imatrix is None:
        scales, mins, L = make_qkx(xs, np.abs(xs), 3, -0.5, 0.1, 15, True)
        scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
        max_scale, max_min = running_max(scales), running_max(mins)
        q4 = F32(15)
        with np.errstate(all="ignore"):
            ls = nint((q4 / max_scale)[:, None] * scales)
            lm = nint((q4 / max_min)[:, None] * mins)
            ps, pm = max_scale > 0, max_min > 0
            sb = np.where(ps[:, None], ls & 0xFF, 0) | np.where(pm[:, None], (lm << 4) & 0xFF, 0)
            d = np.where(ps, max_scale / q4, F32(0))
            dmin = np.where(pm, max_min / q4, F32(0))
    else:
        qw = block_weights(imatrix, nrows, QK_K)                     # (nb, 256)
        sumx2 = seq_sum(xb * xb)
        sigma2 = sumx2 / F32(QK_K)
        weight = (qw * np.sqrt(sigma2[:, None] + xb * xb)).reshape(nb * 16, 16)
        sw = seq_sum(weight).reshape(nb, 16)
        scales, mins, L = make_qkx(xs, weight, 3, -0.9, 0.05, 36, False)
        d, Ls = make_qp(scales.reshape(nb, 16), sw, 15)
        dmin, Lm = make_qp(mins.reshape(nb, 16), sw, 15)
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


def _err_f64(x, xh, w):
    """Block error in float64, 4 lanes over the 256 values: x, xh, w (nb, 256) -> (nb,)."""
    diff = x.astype(F64) - xh.astype(F64)
    return lane_sum((w.astype(F64) * diff) * diff, 4, F64)


def _q2_cand(x, w, dl, ml):
    """x, w (..., 16); dl, ml (...) -> (L (..., 16) float32 0..3, error (...) float32)."""
    with np.errstate(all="ignore"):
        L = clamp_rint((x + ml[..., None]) * safe_inv(dl)[..., None], 0, 3)
    d = x - (dl[..., None] * L - ml[..., None])
    return L, lane_sum((w * d) * d)


def _q3_cand(x, w, dl):
    """x, w (..., 16); dl (...) -> (q (..., 16) float32 -4..3, error (...) float32)."""
    with np.errstate(all="ignore"):
        q = clamp_rint(x * safe_inv(dl)[..., None], -4, 3)
    d = x - dl[..., None] * q
    return q, lane_sum((w * d) * d)


def _q2_refine(x, w, L, s, m, D, M):
    """x, w (nb,16,16) f32; L (nb,16,16) 0..3; s, m (nb,16) 0..15; D, M (nb,) fp16 values."""
    nb = x.shape[0]
    sf, mf, Lf = s.astype(F32), m.astype(F32), L.astype(F32)
    base = (Lf, sf, mf, D, M)
    xh = ((D[:, None] * sf)[..., None] * Lf - (M[:, None] * mf)[..., None])
    E0 = _err_f64(x.reshape(nb, QK_K), xh.reshape(nb, QK_K), w.reshape(nb, QK_K))
    E = lane_sum((w * (x - xh)) * (x - xh))
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
            return seq_sum(lane_sum(t)).astype(F64)

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
        u = seq_sum(E2) < seq_sum(E)
        Lf = np.where(u[:, None, None], L2, Lf)
        E = np.where(u[:, None], E2, E)
        D, M = np.where(u, D2, D), np.where(u, M2, M)
    xh = ((D[:, None] * sf)[..., None] * Lf - (M[:, None] * mf)[..., None])
    keep = _err_f64(x.reshape(nb, QK_K), xh.reshape(nb, QK_K), w.reshape(nb, QK_K)) < E0
    Lf, sf, mf, D, M = (np.where(keep.reshape((nb,) + (1,) * (a.ndim - 1)), a, b)
                        for a, b in zip((Lf, sf, mf, D, M), base))
    return Lf.astype(np.int32), sf.astype(np.int32), mf.astype(np.int32), D, M


def _q3_refine(x, w, q, s, D):
    """x, w (nb,16,16) f32; q (nb,16,16) -4..3; s (nb,16) -32..31; D (nb,) fp16 value."""
    nb = x.shape[0]
    sf, qf = s.astype(F32), q.astype(F32)
    base = (qf, sf, D)
    xh = (D[:, None] * sf)[..., None] * qf
    E0 = _err_f64(x.reshape(nb, QK_K), xh.reshape(nb, QK_K), w.reshape(nb, QK_K))
    E = lane_sum((w * (x - xh)) * (x - xh))
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
        Sxa = seq_sum(lane_sum((w * x) * A)).astype(F64)
        Saa = seq_sum(lane_sum((w * A) * A)).astype(F64)
        with np.errstate(all="ignore"):
            D2 = np.where(Saa > 0, Sxa / Saa, D.astype(F64))
            D2 = fp16_round(D2.astype(F32))
        q2, E2 = _q3_cand(x, w, D2[:, None] * sf)
        u = seq_sum(E2) < seq_sum(E)
        qf = np.where(u[:, None, None], q2, qf)
        E = np.where(u[:, None], E2, E)
        D = np.where(u, D2, D)
    xh = (D[:, None] * sf)[..., None] * qf
    keep = _err_f64(x.reshape(nb, QK_K), xh.reshape(nb, QK_K), w.reshape(nb, QK_K)) < E0
    qf, sf, D = (np.where(keep.reshape((nb,) + (1,) * (a.ndim - 1)), a, b)
                 for a, b in zip((qf, sf, D), base))
    return qf.astype(np.int32), sf.astype(np.int32), D


def q2_k_bytes(L, sc, m, d, dmin) -> np.ndarray:
    """L (nb,16,16) 0..3, sc/m (nb,16) 0..15, d/dmin (nb,) -> (nb, 84) Q2_K blocks."""
    nb = L.shape[0]
    out = np.empty((nb, 84), dtype=np.uint8)
    out[:, :16] = (sc | (m << 4)).astype(np.uint8)
    out[:, 16:80] = pack_fields(L.reshape(nb, QK_K), 2, 32)
    out[:, 80:82] = fp16_bytes(d)
    out[:, 82:84] = fp16_bytes(dmin)
    return out


class Q2_K(QuantType, qtype=T.Q2_K):
    uses_imatrix = True

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        L, sb, d, dmin = q2_k_llama(x, imatrix)
        xb, w = _refine_inputs(x, imatrix)
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
        L = unpack_fields(b[:, 16:80], 2, 32).reshape(-1, 16, 16).astype(F32)
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
        new = np.clip(nint(xb / dl[..., None]), -4, 3) + 4
    return np.where((dl != 0)[..., None], new, L)


def q3_k_llama(x: np.ndarray, imatrix: np.ndarray | None):
    """llama.cpp's Q3_K -> (L (nb,16,16) 0..7, stored scales (nb,16) 0..63, d (nb,) fp16 value)."""
    nrows, n = x.shape
    xb = np.asarray(x, dtype=F32).reshape(-1, QK_K)
    nb = xb.shape[0]
    xs = xb.reshape(nb * 16, 16)
    if imatrix is None:
        scales, L = _make_q3(xs, 4)
        scales = scales.reshape(nb, 16)
        max_scale = signed_absmax(scales)
        nz = max_scale != 0
        with np.errstate(all="ignore"):
            iscale = F32(-32) / max_scale
            l = nint(iscale[:, None] * scales)
            l = ((l + 128) & 0xFF) - 128                  # int8_t l = nearest_int(...)
            ls = np.where(nz[:, None], np.clip(l, -32, 31) + 32, 0)
            d = np.where(nz, F32(1) / iscale, F32(0))
    else:
        qw = block_weights(imatrix, nrows, QK_K)
        sumx2 = seq_sum(xb * xb)
        sigma2 = (F32(2) * sumx2) / F32(QK_K)
        weight = (qw * np.sqrt(sigma2[:, None] + xb * xb)).reshape(nb * 16, 16)
        sw = seq_sum(weight).reshape(nb, 16)
        scales, L = make_qx(xs, weight, 4)
        d, ls = make_qx(scales.reshape(nb, 16), sw, 32)
    d = fp16_round(d)
    # the stored 6-bit field decodes to ls - 32 (ls is 0..63 here)
    L = _q3_requant(xb.reshape(nb, 16, 16), L.reshape(nb, 16, 16), ls - 32, d)
    return L, ls, d



def q3_k_bytes(q, sc, d) -> np.ndarray:
    """q (nb,16,16) -4..3, sc (nb,16) -32..31, d (nb,) -> (nb, 110) Q3_K blocks."""
    nb = q.shape[0]
    L = (q + 4).reshape(nb, QK_K)
    hb = (L > 3).astype(np.uint8).reshape(nb, 8, 32)     # element 32k+l -> bit k of hmask[l]
    hmask = np.zeros((nb, 32), dtype=np.uint8)
    for k in range(8):
        hmask |= hb[:, k] << k
    out = np.empty((nb, 110), dtype=np.uint8)
    out[:, :32] = hmask
    out[:, 32:96] = pack_fields(L, 2, 32)
    out[:, 96:108] = _q3_pack_scales(sc + 32)
    out[:, 108:110] = fp16_bytes(d)
    return out


class Q3_K(QuantType, qtype=T.Q3_K):
    uses_imatrix = True

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        L, ls, d = q3_k_llama(x, imatrix)
        xb, w = _refine_inputs(x, imatrix)
        q, sc, d = _q3_refine(xb, w, L - 4, ls - 32, d)
        return q3_k_bytes(q, sc, d).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        nrows = q.shape[0]
        b = q.reshape(-1, 110)
        nb = b.shape[0]
        d = fp16_value(b[:, 108:110])
        dl = d[:, None] * _q3_unpack_scales(b[:, 96:108]).astype(F32)    # (nb, 16)
        low = unpack_fields(b[:, 32:96], 2, 32).astype(np.int32)
        hm = b[:, :32].reshape(nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
        high = (hm & 1).reshape(nb, QK_K).astype(np.int32)
        q = (low - 4 * (1 - high)).astype(F32).reshape(nb, 16, 16)
        return (dl[..., None] * q).reshape(nrows, -1)
