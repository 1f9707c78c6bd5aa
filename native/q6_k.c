/* Q6_K: super-blocks of 256 = 16 sub-blocks of 16; x = d * sc[j] * (q - 32).
 * Layout (210 bytes): ql[128], qh[64], int8 scales[16], fp16 d.
 * Mirrors ggtool/quants/q6_k.py byte for byte: llama.cpp's result (make_qx_quants(16, 32)
 * per sub-block, int8 sub-block scales with d = max_scale/-128), then per sub-block the
 * int8 scales sc-4..sc+4 are tried and the lowest error sum(w*(x - x_hat)^2) kept
 * (llama.cpp's first among equals). Candidate errors add in 8 lanes (lane_sum16). */
#include "ggq.h"
#include "ggq_search.h"

/* Let GCC vectorize the clamp selects: FP exception flags are never inspected here, and
 * values are unaffected (IEEE results do not depend on trapping assumptions). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#define QK_K GGQ_QK_K

/* must match q6_k.py SCALE_TWEAKS */
static const int scale_tweaks[] = {-1, 1, -2, 2, -3, 3, -4, 4};
#define N_TWEAKS ((int)(sizeof(scale_tweaks) / sizeof(scale_tweaks[0])))


/* 8 interleaved lanes, combined pairwise (numpy: primitives.lane_sum(.., 8)) */
GGQ_INLINE float lane_sum16(const float *restrict e) {
    float a[8];
    for (int k = 0; k < 8; k++) a[k] = (0.0f + e[k]) + e[k + 8];
    return ggq_lanes8(a);
}

/* levels for sub-block scale dsub (fallback Lqx when dsub == 0); returns the error */
GGQ_INLINE float eval_sub(const float *restrict x, const float *restrict wm, float dsub,
                          const uint8_t *restrict Lqx, float *restrict l) {
    float e[16];
    if (dsub != 0.0f) {
        for (int i = 0; i < 16; i++) {
            l[i] = ggq_rint_f(ggq_clampf(x[i] / dsub, -32.0f, 31.0f));
            const float diff = x[i] - dsub * l[i];
            e[i] = wm[i] * (diff * diff);
        }
    } else {
        for (int i = 0; i < 16; i++) {
            l[i] = (float)Lqx[i] - 32.0f;
            e[i] = wm[i] * (x[i] * x[i]);
        }
    }
    return lane_sum16(e);
}

/* The errors eval_sub would give for the 8 tweaked scales dc[0..7], computed side by side
 * (one vector lane per candidate, so no horizontal sums): the same float operations on the
 * same values, and each candidate's terms added in lane_sum16's order. */
GGQ_INLINE void tweak_errors(const float *restrict x, const float *restrict wm, const float *restrict dc,
                             float *restrict err) {
    float E[16][N_TWEAKS];
    for (int i = 0; i < 16; i++) {
        for (int k = 0; k < N_TWEAKS; k++) {
            const float d = dc[k];
            const float l = ggq_rint_f(ggq_clampf(x[i] / (d != 0.0f ? d : 1.0f), -32.0f, 31.0f));
            const float diff = x[i] - d * l;
            const float e1 = wm[i] * (diff * diff);
            const float e0 = wm[i] * (x[i] * x[i]);
            E[i][k] = d != 0.0f ? e1 : e0;
        }
    }
    float a[8][N_TWEAKS];
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < N_TWEAKS; k++) a[j][k] = (0.0f + E[j][k]) + E[j + 8][k];
    for (int k = 0; k < N_TWEAKS; k++)
        err[k] = ((a[0][k] + a[1][k]) + (a[2][k] + a[3][k])) + ((a[4][k] + a[5][k]) + (a[6][k] + a[7][k]));
}

GGQ_INLINE void quantize_block(const float *restrict x, const float *restrict qw,
                               uint8_t *restrict y) {
    static const float ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    uint8_t Lqx[QK_K], L[QK_K];
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
        scales[ib] = ggq_make_qx(16, 32, xs, w, Lqx + 16 * ib);
    }
    float max_abs;
    const float max_scale = ggq_signed_absmax(scales, 16, &max_abs);
    if (max_abs < GGQ_GROUP_MAX_EPS) {
        memset(y, 0, 210);
        return;
    }
    const float iscale = -128.0f / max_scale;
    uint16_t dbits;
    const float d16 = ggq_f16_round_clamped(1.0f / iscale, &dbits);
    int8_t sc[16];
    for (int ib = 0; ib < 16; ib++) {
        const float *xs = x + 16 * ib;
        const float *wm = qw ? qw + 16 * ib : ones;
        int s0 = ggq_nearest_int(iscale * scales[ib]);
        if (s0 > 127) s0 = 127;
        int best_s = s0;
        float lb[16];
        float best = eval_sub(xs, wm, d16 * (float)s0, Lqx + 16 * ib, lb);
        int cs[N_TWEAKS];
        float dc[N_TWEAKS], err[N_TWEAKS];
        for (int t = 0; t < N_TWEAKS; t++) {
            int c = s0 + scale_tweaks[t];
            cs[t] = c < -128 ? -128 : (c > 127 ? 127 : c);
            dc[t] = d16 * (float)cs[t];
        }
        tweak_errors(xs, wm, dc, err);
        int bt = -1;
        for (int t = 0; t < N_TWEAKS; t++) {
            if (err[t] < best) { /* llama.cpp's first among equals: strictly better only */
                best = err[t];
                bt = t;
            }
        }
        if (bt >= 0) {
            best_s = cs[bt];
            eval_sub(xs, wm, dc[bt], Lqx + 16 * ib, lb);
        }
        for (int i = 0; i < 16; i++) L[16 * ib + i] = (uint8_t)(int)(lb[i] + 32.0f);
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
    ggq_put16(y + 208, dbits);
}

GGQ_ROWS(q6_k) {
    (void)isa;
    const int64_t nb = n_per_row / QK_K;
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t b = 0; b < nb; b++) {
            quantize_block(x + r * n_per_row + b * QK_K, imatrix ? imatrix + b * QK_K : NULL,
                           y + (r * nb + b) * 210);
        }
    }
    return 0;
}

GGQ_KERNEL(q6_k)
