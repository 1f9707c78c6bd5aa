/* Q8_0: blocks of 32, fp16 d then 32 int8; x = q*d. Mirrors ggtool/quants/q8_0.py byte for byte.
 *
 * Written so that both loops vectorize (8 values per AVX2 instruction): the largest |x| is
 * taken on the bits (for finite values the order of |x| is that of the bits without the sign;
 * callers never pass NaN: quants.quantize refuses it), and C's roundf (half away from zero) is
 * computed as truncate, then step away when the dropped part is >= 0.5: exact for |v| < 2^31
 * (v - trunc(v) is exact), and here |v| <= 127.5. */
#include "ggq.h"

GGQ_INLINE int8_t round_away(float v) {
    const int i = (int)v;                /* truncates toward zero */
    const float f = v - (float)i;        /* exact */
    return (int8_t)(i + (f >= 0.5f) - (f <= -0.5f));
}

GGQ_ROWS(q8_0) {
    (void)imatrix; /* Q8_0 ignores importance weights, as llama.cpp does */
    (void)isa;
    const int64_t nb = nrows * (n_per_row / 32);
    for (int64_t b = 0; b < nb; b++) {
        const float *restrict xb = x + b * 32;
        uint8_t *restrict yb = y + b * 34;
        uint32_t m = 0;
        for (int j = 0; j < 32; j++) {
            uint32_t u;
            memcpy(&u, xb + j, 4);
            u &= 0x7fffffffu;
            m = u > m ? u : m;
        }
        const float amax = ggq_bits_f32(m);
        const float d = amax / 127.0f;
        float id = ggq_inv_or_0(d);
        if (!isfinite(id)) id = 0.0f; /* subnormal d: 1/d overflows; fp16(d) is 0 anyway */
        ggq_store_fp16(yb, d);
        int8_t q[32];
        for (int j = 0; j < 32; j++) q[j] = round_away(xb[j] * id);
        memcpy(yb + 2, q, 32);
    }
    return 0;
}

GGQ_KERNEL(q8_0)
