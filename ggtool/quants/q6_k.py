"""Q6_K: 256-element super-blocks of 16 sub-blocks of 16; x = d * sc[j] * (q - 32).

Layout (210 bytes): ql[128], qh[64], int8 scales[16], fp16 d. Mirrors native/q6_k.c byte
for byte (see primitives.py for the rules).

The quantizer starts from llama.cpp's exact result (make_qx_quants(16, 32) per sub-block
with weights x^2, or the imatrix itself; the sub-block scales go to int8 with
d = max_scale/-128; quants are nearest levels of the stored scales) and then, per
sub-block, also tries the int8 scales sc-4..sc+4, keeping the one with the lowest error
sum(w * (x - x_hat)^2), w = imatrix (or 1), llama.cpp's first among equals. Sub-blocks are
independent once d is fixed, so the result is never worse than llama.cpp's on any block.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .base import QuantType
from .primitives import (F32, GROUP_MAX_EPS, QK_K, block_weights, fp16_bytes, fp16_round,
                         fp16_value, lane_sum, pack_fields, signed_absmax, unpack_fields)
from .searches import make_qx

SCALE_TWEAKS = (-1, 1, -2, 2, -3, 3, -4, 4)  # int8 scale offsets tried after llama.cpp's (C: same)


def _llama_scales(sub, qw):
    """sub (nb*16, 16) -> (d16 (nb,), sc (nb, 16) int32, L (nb*16, 16) 0..63, zero (nb,))."""
    w = sub * sub if qw is None else qw
    scales, L = make_qx(sub, w, 32)
    scales = scales.reshape(-1, 16)
    max_scale = signed_absmax(scales)
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    max_scale = np.where(zero, F32(1), max_scale)
    iscale = F32(-128) / max_scale
    d16 = fp16_round(F32(1) / iscale, clamp=True)
    sc = np.minimum(127, np.rint(iscale[:, None] * scales)).astype(np.int32)
    d16[zero] = 0
    sc[zero] = 0
    return d16, sc, L, zero


def _eval(sub, wm, dsub, Lqx):
    """Levels 0..63 for sub-block scales dsub (nb*16,) and the error of each sub-block."""
    ok = dsub != 0
    v = sub / np.where(ok, dsub, F32(1))[:, None]
    L = (np.rint(np.clip(v, -32, 31)) + F32(32)).astype(np.int32)
    L[~ok] = Lqx[~ok]
    xh = dsub[:, None] * np.where(ok[:, None], L - 32, 0).astype(F32)
    diff = sub - xh
    return L, lane_sum(wm * (diff * diff), 8)


def quantize_blocks(blocks, imatrix_blocks):
    """(nb, 256) float32, imatrix (nb, 256) or None -> (nb, 210) uint8."""
    nb = blocks.shape[0]
    sub = blocks.reshape(-1, 16)
    qw = None if imatrix_blocks is None else imatrix_blocks.reshape(-1, 16)
    wm = np.ones_like(sub) if qw is None else qw
    d16, sc, Lqx, zero = _llama_scales(sub, qw)
    sc0 = sc = sc.reshape(-1)
    dd = np.repeat(d16, 16)
    L, err = _eval(sub, wm, dd * sc.astype(F32), Lqx)
    for t in SCALE_TWEAKS:
        c = np.clip(sc0 + t, -128, 127)
        Lc, e = _eval(sub, wm, dd * c.astype(F32), Lqx)
        take = e < err
        err = np.where(take, e, err)
        sc = np.where(take, c, sc)
        L = np.where(take[:, None], Lc, L)
    L = L.reshape(nb, 256)
    L[zero] = 0
    sc = sc.reshape(nb, 16)
    return _pack(L, sc, d16)


def _pack(L, sc, d16):
    nb = L.shape[0]
    out = np.zeros((nb, 210), np.uint8)
    out[:, :128] = pack_fields(L, 4, 64)                  # low 4 bits
    out[:, 128:192] = pack_fields(L >> 4, 2, 32)          # high 2 bits
    out[:, 192:208] = sc.astype(np.int8).view(np.uint8)
    out[:, 208:210] = fp16_bytes(d16)
    return out


class Q6_K(QuantType, qtype=T.Q6_K):
    uses_imatrix = True

    @classmethod
    def quantize_rows(cls, x, imatrix=None):
        nrows, n = x.shape
        blocks = np.asarray(x, dtype=F32).reshape(-1, QK_K)
        im = None
        if imatrix is not None:
            im = block_weights(imatrix, nrows, QK_K)
        return quantize_blocks(blocks, im).reshape(nrows, cls.row_bytes(n))

    @classmethod
    def dequantize_rows(cls, q):
        b = q.reshape(-1, 210)
        nb = b.shape[0]
        lv = (unpack_fields(b[:, :128], 4, 64) | (unpack_fields(b[:, 128:192], 2, 32) << 4))
        lv = lv.astype(np.int8) - np.int8(32)                 # (nb, 256)
        sc = b[:, 192:208].view(np.int8).astype(F32)
        d = fp16_value(b[:, 208:210])
        ds = (d[:, None] * sc).reshape(nb, 16, 1)
        vals = ds * lv.reshape(nb, 16, 16).astype(F32)
        return vals.reshape(q.shape[0], -1)


def llama_rows(x, imatrix=None):
    """llama.cpp's exact quantize_q6_K bytes for rows x (nrows, n) (test replica)."""
    nrows, n = x.shape
    blocks = np.asarray(x, dtype=F32).reshape(-1, QK_K)
    sub = blocks.reshape(-1, 16)
    qw = None
    if imatrix is not None:
        qw = block_weights(imatrix, nrows, QK_K).reshape(-1, 16)
    d16, sc, Lqx, zero = _llama_scales(sub, qw)
    dsub = np.repeat(d16, 16) * sc.reshape(-1).astype(F32)
    L, _ = _eval(sub, np.ones_like(sub), dsub, Lqx)
    L = L.reshape(-1, 256)
    L[zero] = 0
    return _pack(L, sc, d16).reshape(nrows, Q6_K.row_bytes(n))
