/* Stored floats (BF16, F16, F32) -> float32, and the largest |x| found on the way, in one
 * pass: the converter reads each tensor once and learns from that pass both that it is finite
 * and whether its values fit the output type's fp16 scales (numpy: ggtool/quants/floats.py).
 *
 * The largest |x| is taken on the bits: for IEEE values the order of |x| is the order of the
 * bits without the sign, so an integer max finds it exactly, and a NaN (bits above those of
 * inf) wins over everything, as numpy's max does. The result is returned as a float: NaN if
 * any value is NaN, else inf if any is infinite, else max |x| (0 for n == 0). */
#include "ggq.h"

/* -O2's cost model leaves these loops scalar (their trip count needs an epilogue); they are
 * integer moves and maxes, so vectorizing changes nothing but speed */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-loop-vectorize", "vect-cost-model=dynamic")
#endif

GGQ_INLINE float bf16_rows(const uint16_t *restrict src, float *restrict dst, int64_t n) {
    uint16_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t h = src[i];
        const uint16_t a = (uint16_t)(h & 0x7fffu);
        m = a > m ? a : m;
        dst[i] = ggq_bits_f32((uint32_t)h << 16);
    }
    return ggq_bits_f32((uint32_t)m << 16);
}

GGQ_INLINE float f32_rows(const float *restrict src, float *restrict dst, int64_t n) {
    const uint32_t *restrict u = (const uint32_t *)src;
    uint32_t m = 0;
    if (dst) {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t a = u[i] & 0x7fffffffu;
            m = a > m ? a : m;
            dst[i] = src[i];
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t a = u[i] & 0x7fffffffu;
            m = a > m ? a : m;
        }
    }
    return ggq_bits_f32(m);
}

/* fp16 -> fp32 is exact; the F16C copy (8 values per instruction) is picked where the CPU has
 * it, the portable one elsewhere (ggq_fp16_to_fp32: the same values). */
GGQ_INLINE uint16_t f16_max_abs(const uint16_t *restrict src, int64_t n) {
    uint16_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint16_t a = (uint16_t)(src[i] & 0x7fffu);
        m = a > m ? a : m;
    }
    return m;
}

static float f16_rows_base(const uint16_t *restrict src, float *restrict dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ggq_fp16_to_fp32(src[i]);
    return ggq_fp16_to_fp32(f16_max_abs(src, n));
}

#ifdef GGQ_DISPATCH
#include <immintrin.h>
__attribute__((target("avx2,f16c"))) static float f16_rows_f16c(const uint16_t *restrict src,
                                                                  float *restrict dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = ggq_fp16_to_fp32(src[i]);
    return ggq_fp16_to_fp32(f16_max_abs(src, n));
}

__attribute__((target("avx2"))) static float bf16_isa(const uint16_t *s, float *d, int64_t n) {
    return bf16_rows(s, d, n);
}
__attribute__((target("avx2"))) static float f32_isa(const float *s, float *d, int64_t n) {
    return f32_rows(s, d, n);
}
#endif

float ggq_widen_bf16(const uint16_t *src, float *dst, int64_t n) {
#ifdef GGQ_DISPATCH
    if (__builtin_cpu_supports("avx2")) return bf16_isa(src, dst, n);
#endif
    return bf16_rows(src, dst, n);
}

float ggq_widen_f16(const uint16_t *src, float *dst, int64_t n) {
#ifdef GGQ_DISPATCH
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) return f16_rows_f16c(src, dst, n);
#endif
    return f16_rows_base(src, dst, n);
}

/* dst may be NULL: only the scan */
float ggq_widen_f32(const float *src, float *dst, int64_t n) {
#ifdef GGQ_DISPATCH
    if (__builtin_cpu_supports("avx2")) return f32_isa(src, dst, n);
#endif
    return f32_rows(src, dst, n);
}
