"""The bit-exact numpy building blocks every quant type shares (C: native/ggq_common.h).

Byte-identity with the C kernels (native/) rests on three rules, which every numpy kernel
follows and every C kernel mirrors:
  * float32 everywhere, operations in the same order (C is built with -ffp-contract=off);
  * reductions over a block are sequential (`seq_sum`) or in the C loops' interleaved lanes
    (`lane_sum`), never np.sum (pairwise);
  * rounding: `nint` (llama.cpp's nearest_int bit trick), `rint_f` / `clamp_rint` (the same
    trick kept in float), `round_half_away` (C roundf); fp16 through `fp16_round`.

Block sizes come from gguf-py (`QK_K`, `GGML_QUANT_SIZES`), not from our own constants.
"""

from __future__ import annotations

import numpy as np
from gguf.constants import QK_K  # noqa: F401  (re-exported: the K types' super-block size)

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # llama.cpp: a block whose largest |x| is below this is all zero
FP16_MAX = F32(65504.0)     # the largest finite fp16
MAGIC = F32(12582912.0)     # 1.5 * 2^23: (v + MAGIC) rounds |v| < 2^22 half to even


# ---------------------------------------------------------------- sums

def seq_sum(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum along `axis` strictly left to right in float32 (what a C loop does)."""
    a = np.moveaxis(np.asarray(a, dtype=F32), axis, -1)
    acc = np.zeros(a.shape[:-1], dtype=F32)
    for j in range(a.shape[-1]):
        acc = acc + a[..., j]
    return acc


def lane_sum(a: np.ndarray, lanes: int = 4, dtype=F32) -> np.ndarray:
    """Sum over the last axis (a multiple of `lanes`) as the C kernels' vectorized loops do:
    element j goes into lane j % lanes, each lane sums in order from 0, then the lanes are
    combined pairwise, (l0 + l1) + (l2 + l3) for 4 and ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))
    for 8 (C: ggq_lanes4 / ggq_lanes8). dtype: float64 for the float64 guards."""
    a = np.asarray(a, dtype=dtype)
    g = a.reshape(*a.shape[:-1], -1, lanes)
    acc = np.zeros(g.shape[:-2] + (lanes,), dtype=dtype)
    for j in range(g.shape[-2]):
        acc = acc + g[..., j, :]
    while lanes > 1:
        lanes //= 2
        acc = acc[..., 0::2] + acc[..., 1::2]
    return acc[..., 0]


# ---------------------------------------------------------------- rounding

def nint(v: np.ndarray) -> np.ndarray:
    """llama.cpp nearest_int bit for bit (C: ggq_nearest_int): half to even for |v| < 2^22,
    and the same integers as C beyond that and for NaN and Inf. int32, shape of v."""
    with np.errstate(all="ignore"):
        t = np.add(np.asarray(v, dtype=F32), MAGIC, dtype=F32)
    return (np.asarray(t).view(np.int32) & 0x007FFFFF) - 0x00400000


def rint_f(v: np.ndarray) -> np.ndarray:
    """(v + MAGIC) - MAGIC in float32: half to even for |v| <= 2^22 (C: ggq_rint_f)."""
    return (np.asarray(v, dtype=F32) + MAGIC) - MAGIC


def clamp_rint(v: np.ndarray, lo, hi) -> np.ndarray:
    """v > lo ? v : lo, then v < hi ? v : hi (NaN -> lo), then rint_f (C: ggq_clampf +
    ggq_rint_f, the form maxps/minps compute)."""
    v = np.asarray(v, dtype=F32)
    v = np.where(v > F32(lo), v, F32(lo))
    v = np.where(v < F32(hi), v, F32(hi))
    return rint_f(v)


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C roundf: round half away from zero, exactly (no v+0.5 double rounding)."""
    v = np.asarray(v, dtype=F32)
    a = np.abs(v)
    r = np.floor(a)
    r = r + ((a - r) >= F32(0.5)).astype(F32)
    return np.copysign(r, v).astype(np.int32)


def safe_inv(d: np.ndarray) -> np.ndarray:
    """1/d where d != 0, else 0 (float32)."""
    d = np.asarray(d, dtype=F32)
    out = np.zeros_like(d)
    nz = d != 0
    with np.errstate(over="ignore"):
        out[nz] = F32(1) / d[nz]
    return out


def running_max(v: np.ndarray) -> np.ndarray:
    """(..., n) -> (...): `m = 0; for j: if (v[j] > m) m = v[j]` (the largest positive value, 0
    if none), as llama.cpp finds max_scale and max_min."""
    v = np.asarray(v, dtype=F32)
    m = np.zeros(v.shape[:-1], F32)
    for j in range(v.shape[-1]):
        m = np.where(v[..., j] > m, v[..., j], m)
    return m


def signed_absmax(x: np.ndarray) -> np.ndarray:
    """(..., n) -> (...): the value of the first element with the largest |x| (C: the strict
    `>` loop from x[0], ggq_signed_absmax)."""
    idx = np.argmax(np.abs(x), axis=-1)
    return np.take_along_axis(x, idx[..., None], axis=-1)[..., 0]


# ---------------------------------------------------------------- fp16

def fp16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 (...,) -> (..., 2) uint8 little-endian fp16 (round to nearest even)."""
    return np.asarray(v, dtype=F32).astype("<f2").reshape(*np.shape(v), 1).view(np.uint8)


def fp16_value(b: np.ndarray) -> np.ndarray:
    """(..., 2) uint8 -> (...,) float32."""
    return np.ascontiguousarray(b).view("<f2")[..., 0].astype(F32)


def fp16_round(v: np.ndarray, clamp: bool = False) -> np.ndarray:
    """The float32 value an fp16 store then load gives back (C: ggq_fp16_round).

    clamp: first clamp |v| to 65504, so that the stored scale stays finite where llama.cpp
    would write inf (C: ggq_f16_round_clamped); NaN stays NaN."""
    v = np.asarray(v, dtype=F32)
    if clamp:
        v = np.clip(v, -FP16_MAX, FP16_MAX)
    return v.astype(np.float16).astype(F32)


# ---------------------------------------------------------------- imatrix and bit packing

def block_weights(imatrix: np.ndarray, nrows: int, block: int) -> np.ndarray:
    """imatrix (n,) -> its slice for every block of `nrows` rows of n values:
    (nrows*n/block, block)."""
    im = np.asarray(imatrix, dtype=F32).reshape(-1, block)
    return np.tile(im, (nrows, 1))


def pack_fields(v: np.ndarray, bits: int, stride: int) -> np.ndarray:
    """Pack values of `bits` bits (1, 2 or 4) the way every GGML layout does: per group of
    stride * 8/bits values, byte l holds element l + k*stride at bit k*bits (k = 0, 1, ...).
    (..., n) -> (..., n*bits/8) uint8; values are masked to `bits` bits.

    bits=4, stride=16: Q4_0..Q5_1/IQ4 quants (element j low nibble, j+16 high nibble);
    stride=32: Q4_K/Q5_K; stride=64: Q6_K's low nibbles. bits=2, stride=32: Q2_K/Q3_K quants,
    Q6_K's high bits. bits=1, stride=32: Q3_K hmask, Q5_K qh; stride=1: Q5_0/Q5_1 qh."""
    per = 8 // bits
    v = np.asarray(v)
    g = v.reshape(*v.shape[:-1], -1, per, stride).astype(np.uint8) & np.uint8((1 << bits) - 1)
    out = g[..., 0, :].copy()
    for k in range(1, per):
        out |= g[..., k, :] << np.uint8(k * bits)
    return out.reshape(*v.shape[:-1], -1)


def unpack_fields(b: np.ndarray, bits: int, stride: int) -> np.ndarray:
    """The inverse of pack_fields: (..., nbytes) uint8 -> (..., nbytes*8/bits) uint8."""
    per = 8 // bits
    b = np.asarray(b, dtype=np.uint8)
    g = b.reshape(*b.shape[:-1], -1, 1, stride)
    shifts = (np.arange(per, dtype=np.uint8) * np.uint8(bits)).reshape(per, 1)
    return ((g >> shifts) & np.uint8((1 << bits) - 1)).reshape(*b.shape[:-1], -1)
