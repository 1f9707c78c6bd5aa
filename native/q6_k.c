/* Q6_K: super-blocks of 256 = 16 sub-blocks of 16; x = d * sc[j] * (q - 32).
 * Layout (210 bytes): ql[128], qh[64], int8 scales[16], fp16 d.
 * Mirrors ggtool/quants/q6_k.py byte for byte: llama.cpp's result (make_qx_quants(16, 32)
 * per sub-block, int8 sub-block scales with d = max_scale/-128), then per sub-block the
 * neighbouring int8 scales are tried and the lowest error sum(w*(x - x_hat)^2) kept. */
#include "ggq.h"

#define QK_K 256
#define GROUP_MAX_EPS 1e-15f

/* must match q6_k.py SCALE_TWEAKS */
static const int scale_tweaks[] = {-1, 1, -2, 2, -3, 3, -4, 4};
#define N_TWEAKS ((int)(sizeof(scale_tweaks) / sizeof(scale_tweaks[0])))

static inline float f16_round_clamped(float v, uint16_t *bits) {
    if (v > 65504.0f) v = 65504.0f;
    if (v < -65504.0f) v = -65504.0f;
    *bits = ggq_fp32_to_fp16(v);
    return ggq_fp16_to_fp32(*bits);
}

/* llama.cpp make_qx_quants(16, 32, x, L, rmse_type=1, w); L in 0..63 */
static float make_qx_16(const float *x, const float *w, uint8_t *L) {
    float amax = fabsf(x[0]), max = x[0];
    for (int i = 1; i < 16; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, 16);
        return 0.0f;
    }
    float iscale = -32.0f / max;
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < 16; i++) {
        int l = ggq_nearest_int(iscale * x[i]);
        l = l < -32 ? -32 : (l > 31 ? 31 : l);
        L[i] = (uint8_t)(l + 32);
        float fl = (float)l;
        sumlx += (w[i] * x[i]) * fl;
        suml2 += (w[i] * fl) * fl;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(0.1f * (float)is + 32.0f) / max;
        int8_t lt[16];
        sumlx = suml2 = 0.0f;
        for (int i = 0; i < 16; i++) {
            int l = ggq_nearest_int(iscale * x[i]);
            l = l < -32 ? -32 : (l > 31 ? 31 : l);
            lt[i] = (int8_t)l;
            float fl = (float)l;
            sumlx += (w[i] * x[i]) * fl;
            suml2 += (w[i] * fl) * fl;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < 16; i++) L[i] = (uint8_t)(lt[i] + 32);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* levels for sub-block scale dsub (fallback Lqx when dsub == 0); returns the error */
static float eval_sub(const float *x, const float *wm, float dsub, const uint8_t *Lqx, uint8_t *L) {
    float err = 0.0f;
    if (dsub != 0.0f) {
        for (int i = 0; i < 16; i++) {
            float v = x[i] / dsub;
            v = v < -32.0f ? -32.0f : (v > 31.0f ? 31.0f : v);
            int l = ggq_nearest_int(v);
            L[i] = (uint8_t)(l + 32);
            float diff = x[i] - dsub * (float)l;
            err += wm[i] * (diff * diff);
        }
    } else {
        for (int i = 0; i < 16; i++) {
            L[i] = Lqx[i];
            float diff = x[i] - 0.0f;
            err += wm[i] * (diff * diff);
        }
    }
    return err;
}

static void quantize_block(const float *x, const float *qw, uint8_t *y) {
    static const float ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    uint8_t Lqx[QK_K], L[QK_K], Lt[16];
    float scales[16], w2[16];

    for (int ib = 0; ib < 16; ib++) {
        const float *xs = x + 16 * ib;
        const float *w;
        if (qw) {
            w = qw + 16 * ib;
        } else {
            for (int i = 0; i < 16; i++) w2[i] = xs[i] * xs[i];
            w = w2;
        }
        scales[ib] = make_qx_16(xs, w, Lqx + 16 * ib);
    }
    float max_abs = fabsf(scales[0]), max_scale = scales[0];
    for (int ib = 1; ib < 16; ib++) {
        float a = fabsf(scales[ib]);
        if (a > max_abs) { max_abs = a; max_scale = scales[ib]; }
    }
    if (max_abs < GROUP_MAX_EPS) {
        memset(y, 0, 210);
        return;
    }
    const float iscale = -128.0f / max_scale;
    uint16_t dbits;
    const float d16 = f16_round_clamped(1.0f / iscale, &dbits);
    int8_t sc[16];
    for (int ib = 0; ib < 16; ib++) {
        const float *xs = x + 16 * ib;
        const float *wm = qw ? qw + 16 * ib : ones;
        int s0 = ggq_nearest_int(iscale * scales[ib]);
        if (s0 > 127) s0 = 127;
        int best_s = s0;
        float best = eval_sub(xs, wm, d16 * (float)s0, Lqx + 16 * ib, L + 16 * ib);
        for (int t = 0; t < N_TWEAKS; t++) {
            int c = s0 + scale_tweaks[t];
            c = c < -128 ? -128 : (c > 127 ? 127 : c);
            float e = eval_sub(xs, wm, d16 * (float)c, Lqx + 16 * ib, Lt);
            if (e < best) {
                best = e;
                best_s = c;
                memcpy(L + 16 * ib, Lt, 16);
            }
        }
        sc[ib] = (int8_t)best_s;
    }

    uint8_t *ql = y, *qh = y + 128;
    for (int h = 0; h < 2; h++) {
        const uint8_t *Lh = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            ql[64 * h + l] = (uint8_t)((Lh[l] & 0xF) | ((Lh[l + 64] & 0xF) << 4));
            ql[64 * h + l + 32] = (uint8_t)((Lh[l + 32] & 0xF) | ((Lh[l + 96] & 0xF) << 4));
            qh[32 * h + l] = (uint8_t)((Lh[l] >> 4) | ((Lh[l + 32] >> 4) << 2) |
                                       ((Lh[l + 64] >> 4) << 4) | ((Lh[l + 96] >> 4) << 6));
        }
    }
    memcpy(y + 192, sc, 16);
    y[208] = (uint8_t)(dbits & 0xff);
    y[209] = (uint8_t)(dbits >> 8);
}

int ggq_quantize_q6_k(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row,
                      const float *imatrix) {
    const int64_t nb = n_per_row / QK_K;
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t b = 0; b < nb; b++) {
            quantize_block(x + r * n_per_row + b * QK_K, imatrix ? imatrix + b * QK_K : NULL,
                           y + (r * nb + b) * 210);
        }
    }
    return 0;
}
