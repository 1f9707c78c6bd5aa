/* Q8_0: blocks of 32, fp16 d then 32 int8; x = q*d. Mirrors ggtool/quants/q8_0.py byte for byte. */
#include "ggq.h"

GGQ_ROWS(q8_0) {
    (void)imatrix; /* Q8_0 ignores importance weights, as llama.cpp does */
    (void)isa;
    const int64_t nb = nrows * (n_per_row / 32);
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = x + b * 32;
        uint8_t *yb = y + b * 34;
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float v = fabsf(xb[j]);
            if (v > amax) amax = v;
        }
        const float d = amax / 127.0f;
        float id = ggq_inv_or_0(d);
        if (!isfinite(id)) id = 0.0f; /* subnormal d: 1/d overflows; fp16(d) is 0 anyway */
        ggq_store_fp16(yb, d);
        for (int j = 0; j < 32; j++) {
            yb[2 + j] = (uint8_t)(int8_t)roundf(xb[j] * id);
        }
    }
    return 0;
}

GGQ_KERNEL(q8_0)
