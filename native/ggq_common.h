/* Shared helpers for the ggtool quantization kernels: plain C99, no Python.h.
 *
 * Every kernel here must produce the same bytes as its numpy reference in ggtool/quants/.
 * Rules that make that possible:
 *   - float32 arithmetic only, in the order the numpy code does it (compiled with
 *     -ffp-contract=off so a*b+c is never fused);
 *   - reductions are sequential left-to-right loops (numpy side: explicit loops over the
 *     block axis, never np.sum, which is pairwise);
 *   - rounding: ggq_nearest_int == np.rint (half to even), roundf == the numpy helper
 *     round_half_away; fp16 conversion is round-to-nearest-even like ndarray.astype(float16).
 */
#ifndef GGQ_COMMON_H
#define GGQ_COMMON_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#define GGQ_NOT_IMPLEMENTED (-2)

#define GGQ_QK_K 256               /* values per K-type super-block (gguf: QK_K) */
#define GGQ_GROUP_MAX_EPS 1e-15f   /* llama.cpp: a block whose largest |x| is below is zero */
#define GGQ_RINT_MAGIC 12582912.0f /* 1.5 * 2^23: (v + MAGIC) rounds |v| < 2^22 half to even */

/* Force inlining: with GCC target_clones/target("avx2") callers, a plain static inline helper
 * is not inlined into the clone and each call costs far more than the work it does. */
#if defined(__GNUC__)
#define GGQ_INLINE static inline __attribute__((always_inline))
#else
#define GGQ_INLINE static inline
#endif

/* One dispatch style for every kernel: the hot code is written once, force-inlined, and on
 * x86 with GCC or Clang compiled twice, for the baseline and for AVX2, the copy picked at run
 * time from the CPU. Both run the same float operations in the same order (-ffp-contract=off:
 * no FMA), so they write the same bytes; AVX2 is only faster. Two granularities:
 *
 *   GGQ_ROWS(q6_k) { ...x, y, nrows, n_per_row, imatrix, isa...; return 0; }
 *   GGQ_KERNEL(q6_k)   -> int ggq_quantize_q6_k(x, y, nrows, n_per_row, imatrix)
 *       the whole row loop, with every GGQ_INLINE helper inlined into it (isa = 1 in the AVX2
 *       copy: a kernel may pick code that only pays with 256-bit vectors);
 *   GGQ_CLONE(search_lanes, (params...), (args...))
 *       one void helper `search_lanes` with the body search_lanes_body, where the row loop
 *       must stay out of line (Q4_K/Q5_K: their lane loops vectorize only in functions of
 *       their own; inlined into one large function they run several times slower). */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__)) && \
    !defined(GGQ_NO_CLONES)
#define GGQ_DISPATCH 1
#define GGQ_ISA "avx2"
#endif

#define GGQ_ROWS_PARAMS                                                                        \
    const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix
#define GGQ_ROWS(name) GGQ_INLINE int name##_rows(GGQ_ROWS_PARAMS, int isa)

#ifdef GGQ_DISPATCH
#define GGQ_KERNEL(name)                                                                       \
    __attribute__((target(GGQ_ISA))) static int name##_rows_isa(GGQ_ROWS_PARAMS) {             \
        return name##_rows(x, y, nrows, n_per_row, imatrix, 1);                                \
    }                                                                                          \
    static int name##_rows_base(GGQ_ROWS_PARAMS) {                                             \
        return name##_rows(x, y, nrows, n_per_row, imatrix, 0);                                \
    }                                                                                          \
    int ggq_quantize_##name(GGQ_ROWS_PARAMS) {                                                 \
        if (__builtin_cpu_supports(GGQ_ISA)) return name##_rows_isa(x, y, nrows, n_per_row, imatrix); \
        return name##_rows_base(x, y, nrows, n_per_row, imatrix);                              \
    }
#define GGQ_CLONE(name, params, args)                                                          \
    __attribute__((target(GGQ_ISA), noinline)) static void name##_isa params {                 \
        name##_body args;                                                                      \
    }                                                                                          \
    __attribute__((noinline)) static void name##_base params { name##_body args; }             \
    static void name params {                                                                  \
        if (__builtin_cpu_supports(GGQ_ISA))                                                   \
            name##_isa args;                                                                   \
        else                                                                                   \
            name##_base args;                                                                  \
    }
#else
#define GGQ_KERNEL(name)                                                                       \
    int ggq_quantize_##name(GGQ_ROWS_PARAMS) {                                                 \
        return name##_rows(x, y, nrows, n_per_row, imatrix, 0);                                \
    }
#define GGQ_CLONE(name, params, args)                                                          \
    static void name params { name##_body args; }
#endif

/* llama.cpp's nearest_int: round half to even for |x| < 2^22 through the 1.5*2^23 trick
 * (numpy: primitives.nint, the same integers for any input) */
GGQ_INLINE int ggq_nearest_int(float fval) {
    float val = fval + GGQ_RINT_MAGIC;
    int i;
    memcpy(&i, &val, sizeof(int));
    return (i & 0x007fffff) - 0x00400000;
}

GGQ_INLINE uint32_t ggq_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
GGQ_INLINE float ggq_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* float32 -> IEEE half, round to nearest even (same result as numpy astype(float16)) */
GGQ_INLINE uint16_t ggq_fp32_to_fp16(float f) {
    uint32_t x = ggq_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) { /* Inf or NaN */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
    }
    if (absx >= 0x477ff000u) { /* rounds to >= 65520 -> Inf */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (absx < 0x38800000u) { /* result is subnormal half (or zero) */
        if (absx < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to 0 */
        uint32_t mant = (absx & 0x007fffffu) | 0x00800000u;
        int e = (int)(absx >> 23);          /* 102..112 */
        int shift = 126 - e;                /* 14..24 */
        uint32_t q = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal */
    uint32_t q = (absx - 0x38000000u) >> 13;  /* rebias exponent 127 -> 15 */
    uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

GGQ_INLINE float ggq_fp16_to_fp32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0) {
        if (m == 0) return ggq_bits_f32(sign);
        /* subnormal: m * 2^-24 */
        float v = (float)m * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    if (e == 31) return ggq_bits_f32(sign | 0x7f800000u | (m << 13));
    return ggq_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

GGQ_INLINE void ggq_store_fp16(uint8_t *p, float f) {
    uint16_t h = ggq_fp32_to_fp16(f);
    p[0] = (uint8_t)(h & 0xff);
    p[1] = (uint8_t)(h >> 8);
}

GGQ_INLINE float ggq_load_fp16(const uint8_t *p) {
    return ggq_fp16_to_fp32((uint16_t)(p[0] | (p[1] << 8)));
}

/* the float32 value an fp16 store then load gives back (numpy: primitives.fp16_round) */
GGQ_INLINE float ggq_fp16_round(float v) { return ggq_fp16_to_fp32(ggq_fp32_to_fp16(v)); }

/* fp16 round trip with the value clamped to the finite fp16 range first, so that a stored
 * scale never becomes inf (numpy: fp16_round(v, clamp=True)); the bits go to *bits unless
 * bits is NULL. NaN stays NaN. */
GGQ_INLINE float ggq_f16_round_clamped(float v, uint16_t *bits) {
    if (v > 65504.0f) v = 65504.0f;
    if (v < -65504.0f) v = -65504.0f;
    const uint16_t h = ggq_fp32_to_fp16(v);
    if (bits) *bits = h;
    return ggq_fp16_to_fp32(h);
}

/* little-endian stores */
GGQ_INLINE void ggq_put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

GGQ_INLINE void ggq_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* round half to even as a float (|v| <= 2^22), == np.rint == llama.cpp nearest_int
 * (numpy: primitives.rint_f) */
GGQ_INLINE float ggq_rint_f(float v) { return (v + GGQ_RINT_MAGIC) - GGQ_RINT_MAGIC; }

/* v > lo ? v : lo, then v < hi ? v : hi: the two selects maxps/minps compute, so loops using
 * it vectorize; NaN -> lo (numpy: the clamp in primitives.clamp_rint) */
GGQ_INLINE float ggq_clampf(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

/* llama.cpp's nearest_int(v) clamped to [lo, hi], written so that the compiler vectorizes it */
GGQ_INLINE int ggq_nearest_int_clamped(float v, int lo, int hi) {
    int l = ggq_nearest_int(v);
    l = l < lo ? lo : l;
    return l > hi ? hi : l;
}

GGQ_INLINE int ggq_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* 1/v, or 0 for v == 0 */
GGQ_INLINE float ggq_inv_or_0(float v) { return v != 0.0f ? 1.0f / v : 0.0f; }

/* the value of the first element with the largest |x| (strict `>` from x[0]; numpy:
 * primitives.signed_absmax); *amax gets its |x| unless amax is NULL */
GGQ_INLINE float ggq_signed_absmax(const float *x, int n, float *amax) {
    float a = fabsf(x[0]), max = x[0];
    for (int i = 1; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > a) {
            a = ax;
            max = x[i];
        }
    }
    if (amax) *amax = a;
    return max;
}

/* Our own sums run in interleaved lanes (element j into lane j % k, summed in order) so that
 * the loops vectorize; the lanes are then combined pairwise (numpy: primitives.lane_sum). */
GGQ_INLINE float ggq_lanes4(const float *a) { return (a[0] + a[1]) + (a[2] + a[3]); }

GGQ_INLINE float ggq_lanes8(const float *a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

#endif
