/* IQ4_NL (blocks of 32, 18 bytes: fp16 d, qs[16]) and IQ4_XS (super-blocks of 256, 136 bytes:
 * fp16 d, uint16 scales_h, scales_l[4], qs[128]); x_hat = d * (ls - 32) * KV[q] for IQ4_XS.
 * llama.cpp's search reproduced exactly, plus wider trials and a per-block choice among
 * candidates under the judging error sum(wm * (x - x_hat)^2), llama.cpp's own bytes first.
 * Mirrors ggtool/quants/iq4_nl_iq4_xs.py byte for byte: read that file for the algorithm. */
#include "ggq.h"

/* the table, KV = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113} */
/* MID2[i] = KV[i-1] + KV[i]: value a picks index i once 2a reaches it (MID2[0] unused) */
static const float MID2[16] = {0.f,  -231.f, -187.f, -148.f, -114.f, -84.f, -57.f, -32.f,
                               -9.f, 14.f,   38.f,   63.f,   91.f,   122.f, 158.f, 202.f};
/* trials k: inverse scale k / max (numpy LLAMA_TRIALS, EXTRA_TRIALS) */
#define N_LLAMA 15
#define N_EXTRA 19
static const int TRIALS[N_LLAMA + N_EXTRA] = {
    -134, -133, -132, -131, -130, -129, -128, -127, -126, -125, -124, -123, -122, -121, -120,
    -157, -151, -145, -139, -115, -109, -103, -97,
    83, 89, 95, 101, 107, 113, 119, 125, 131, 137, 143};

#define ONE8 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f
#define ONE64 ONE8, ONE8, ONE8, ONE8, ONE8, ONE8, ONE8, ONE8
static const float ONES[256] = {ONE64, ONE64, ONE64, ONE64}; /* wm without an imatrix */

GGQ_INLINE int best_index(float a) {
    const float a2 = a + a;
    int i = 0;
    i = a2 >= MID2[i + 8] ? i + 8 : i;
    i = a2 >= MID2[i + 4] ? i + 4 : i;
    i = a2 >= MID2[i + 2] ? i + 2 : i;
    i = a2 >= MID2[i + 1] ? i + 1 : i;
    return i;
}

/* KV[best_index(a)] without a table lookup (vectorizes): KV[0] plus the steps passed;
 * every partial sum is a small integer, so this is exact */
GGQ_INLINE float best_value(float a) {
    const float a2 = a + a;
    float v = -127.0f;
    v += a2 >= -231.0f ? 23.0f : 0.0f;
    v += a2 >= -187.0f ? 21.0f : 0.0f;
    v += a2 >= -148.0f ? 18.0f : 0.0f;
    v += a2 >= -114.0f ? 16.0f : 0.0f;
    v += a2 >= -84.0f ? 14.0f : 0.0f;
    v += a2 >= -57.0f ? 13.0f : 0.0f;
    v += a2 >= -32.0f ? 12.0f : 0.0f;
    v += a2 >= -9.0f ? 11.0f : 0.0f;
    v += a2 >= 14.0f ? 12.0f : 0.0f;
    v += a2 >= 38.0f ? 12.0f : 0.0f;
    v += a2 >= 63.0f ? 13.0f : 0.0f;
    v += a2 >= 91.0f ? 15.0f : 0.0f;
    v += a2 >= 122.0f ? 16.0f : 0.0f;
    v += a2 >= 158.0f ? 20.0f : 0.0f;
    v += a2 >= 202.0f ? 24.0f : 0.0f;
    return v;
}

/* our own sums run in 4 lanes (ggq_lanes4; numpy: lane_sum): four short chains instead of
 * one long one; vectorizes. */

/* sum(wm*(x - step*q)^2) over 32 values; NaN (inf * 0 weight) -> inf */
GGQ_INLINE float err_q(const float *xb, const float *wm, float step, const float *q) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int j = 0; j < 32; j += 4) {
        for (int k = 0; k < 4; k++) {
            const float e = xb[j + k] - step * q[j + k];
            acc[k] += wm[j + k] * e * e;
        }
    }
    const float err = ggq_lanes4(acc);
    return err != err ? INFINITY : err;
}

/* Candidates carry table values q (floats) rather than indices; best_index(q) == index. */

/* nearest table values for the inverse scale id */
GGQ_INLINE void block_values(const float *xb, float id, float *q) {
    for (int j = 0; j < 32; j++) q[j] = best_value(id * xb[j]);
}

/* nearest table values for the dequantized scale `step`, returns their error */
GGQ_INLINE float block_pick(const float *xb, const float *wm, float step, float *q) {
    block_values(xb, ggq_inv_or_0(step), q);
    return err_q(xb, wm, step, q);
}

GGQ_INLINE float block_refit(const float *xb, const float *wm, const float *qv) {
    float ax[4] = {0.0f, 0.0f, 0.0f, 0.0f}, a2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int j = 0; j < 32; j += 4) {
        for (int k = 0; k < 4; k++) {
            const float q = qv[j + k];
            const float wq = wm[j + k] * q;
            ax[k] += wq * xb[j + k];
            a2[k] += wq * q;
        }
    }
    const float sumqx = ggq_lanes4(ax), sumq2 = ggq_lanes4(a2);
    return sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
}

/* the least-squares scale sumqx/sumq2 of a trial: the first one sets (*d, *best), a later one
 * replaces them where it fits better (larger sumqx^2/sumq2), as llama.cpp chooses */
GGQ_INLINE void keep_ls_scale(int first, float sumqx, float sumq2, float *d, float *best) {
    if (first) {
        *d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
        *best = *d * sumqx;
    } else if (sumq2 > 0.0f && sumqx * sumqx > *best * sumq2) {
        *d = sumqx / sumq2;
        *best = *d * sumqx;
    }
}

/* llama.cpp's scale (its 16 trials under wl) and the best least-squares scale under wm */
GGQ_INLINE void block_search(const float *xb, const float *wl, const float *wm, float *d_ll,
                             float *d_m) {
    float amax;
    const float mx = ggq_signed_absmax(xb, 32, &amax);
    if (amax < GGQ_GROUP_MAX_EPS) {
        *d_ll = 0.0f;
        *d_m = 0.0f;
        return;
    }
    float q[32], wx[32];
    for (int j = 0; j < 32; j++) wx[j] = wm[j] * xb[j];
    float d = 0.0f, best = 0.0f, dm = 0.0f, bestm = 0.0f;
    for (int t = -1; t < N_LLAMA + N_EXTRA; t++) {
        float id;
        if (t < 0) {
            const float d0 = -mx / -127.0f;
            id = ggq_inv_or_0(d0);
        } else {
            id = (float)TRIALS[t] / mx;
        }
        block_values(xb, id, q);
        if (t < N_LLAMA) {
            float sumqx = 0.0f, sumq2 = 0.0f;
            for (int j = 0; j < 32; j++) {
                const float wq = wl[j] * q[j];
                sumqx += wq * xb[j];
                sumq2 += wq * q[j];
            }
            keep_ls_scale(t < 0, sumqx, sumq2, &d, &best);
        }
        float ax[4] = {0.0f, 0.0f, 0.0f, 0.0f}, a2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int j = 0; j < 32; j += 4) {
            for (int k = 0; k < 4; k++) {
                ax[k] += q[j + k] * wx[j + k];
                a2[k] += wm[j + k] * q[j + k] * q[j + k];
            }
        }
        const float mqx = ggq_lanes4(ax), mq2 = ggq_lanes4(a2);
        keep_ls_scale(t < 0, mqx, mq2, &dm, &bestm);
    }
    *d_ll = d;
    *d_m = dm;
}

/* llama.cpp weights for n values (sigma2 over all n) */
GGQ_INLINE void llama_weights(const float *x, const float *im, int n, float *wl) {
    if (!im) {
        for (int j = 0; j < n; j++) wl[j] = x[j] * x[j];
        return;
    }
    float sigma2 = 0.0f;
    for (int j = 0; j < n; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.0f / (float)n;
    for (int j = 0; j < n; j++) wl[j] = im[j] * sqrtf(sigma2 + x[j] * x[j]);
}

GGQ_INLINE void pack_nibbles(const float *q, uint8_t *qs) {
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(best_index(q[j]) | (best_index(q[j + 16]) << 4));
}

GGQ_ROWS(iq4_nl) {
    (void)isa;
    if (nrows <= 0) return 0;
    const int64_t nbr = n_per_row / 32;
    float wl[32];
    float Q[4][32];
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t ib = 0; ib < nbr; ib++) {
            const float *xb = x + r * n_per_row + ib * 32;
            const float *wm = imatrix ? imatrix + ib * 32 : ONES;
            uint8_t *yb = y + (r * nbr + ib) * 18;
            llama_weights(xb, imatrix ? imatrix + ib * 32 : NULL, 32, wl);
            float d_ll, d_m;
            block_search(xb, wl, wm, &d_ll, &d_m);
            /* 0: llama.cpp's bytes (indices from the unrounded scale) */
            const float s0 = ggq_fp16_round(d_ll);
            block_values(xb, ggq_inv_or_0(d_ll), Q[0]);
            float s[4];
            float e[4];
            s[0] = s0;
            e[0] = err_q(xb, wm, s0, Q[0]);
            /* 1: same scale, indices for the rounded one; 2: best wm scale; 3: 2 refitted */
            s[1] = ggq_f16_round_clamped(d_ll, NULL);
            e[1] = block_pick(xb, wm, s[1], Q[1]);
            s[2] = ggq_f16_round_clamped(d_m, NULL);
            e[2] = block_pick(xb, wm, s[2], Q[2]);
            s[3] = ggq_f16_round_clamped(block_refit(xb, wm, Q[2]), NULL);
            e[3] = block_pick(xb, wm, s[3], Q[3]);
            int k = 0;
            for (int c = 1; c < 4; c++)
                if (e[c] < e[k]) k = c;
            ggq_store_fp16(yb, s[k]);
            pack_nibbles(Q[k], yb + 2);
        }
    }
    return 0;
}

GGQ_KERNEL(iq4_nl)

/* ---------------------------------------------------------------- IQ4_XS */

typedef struct {
    float s;          /* stored (fp16-rounded) super-block scale */
    int l[8];         /* sub-block scales, -32..31 */
    float q[256];     /* table values */
    float err[8];
    float total;
} xs_cand;

GGQ_INLINE int sub_l(float d, float scale) {
    float v = ggq_inv_or_0(d) * scale;
    v = v < -40.0f ? -40.0f : (v > 40.0f ? 40.0f : v); /* np.clip: NaN stays NaN (-> 0) */
    return ggq_clampi(ggq_nearest_int(v), -32, 31);
}

/* d = max_scale/div (div < 0: -max_scale/-div), max_scale = the scale of largest |.| */
GGQ_INLINE float super_scale(const float *scales, int div) {
    const float mx = ggq_signed_absmax(scales, 8, NULL);
    return div > 0 ? mx / (float)div : -mx / (float)(-div);
}

/* Per sub-block: the best of (optional) option 0 and of l = bases[b][ib] + delta, delta in
 * {0} (ndeltas[b] == 1) or {-1, 0, 1} (ndeltas[b] == 3); ties keep the earlier option.
 * c->s and, when have_opt0, c->l / c->q / c->err already hold option 0. */
GGQ_INLINE void xs_choose(const float *xs, const float *wm, xs_cand *c, int have_opt0, int nbases,
                          const int (*bases)[8], const int *ndeltas) {
    float qt[32];
    for (int ib = 0; ib < 8; ib++) {
        const float *xb = xs + ib * 32;
        const float *wb = wm + ib * 32;
        int tried[16];
        int ntried = 0;
        int have = have_opt0;
        for (int b = 0; b < nbases; b++) {
            for (int di = 0; di < ndeltas[b]; di++) {
                const int delta = ndeltas[b] == 1 ? 0 : di - 1;
                const int lc = ggq_clampi(bases[b][ib] + delta, -32, 31);
                int dup = 0;
                for (int t = 0; t < ntried; t++) dup |= tried[t] == lc;
                if (dup) continue; /* same option again: same error, the first one wins */
                tried[ntried++] = lc;
                const float err = block_pick(xb, wb, c->s * (float)lc, qt);
                if (!have || err < c->err[ib]) {
                    have = 1;
                    c->err[ib] = err;
                    c->l[ib] = lc;
                    memcpy(c->q + ib * 32, qt, sizeof qt);
                }
            }
        }
    }
    float total = 0.0f;
    for (int ib = 0; ib < 8; ib++) total += c->err[ib];
    c->total = total;
}

GGQ_INLINE void xs_pack(const xs_cand *c, uint8_t *yb) {
    ggq_store_fp16(yb, c->s);
    uint16_t sh = 0;
    for (int ib = 0; ib < 8; ib++) {
        const int u = c->l[ib] + 32;
        sh |= (uint16_t)((u >> 4) << (2 * ib));
        if (ib % 2 == 0)
            yb[4 + ib / 2] = (uint8_t)(u & 0x0F);
        else
            yb[4 + ib / 2] |= (uint8_t)((u & 0x0F) << 4);
    }
    ggq_put16(yb + 2, sh);
    for (int ib = 0; ib < 8; ib++) pack_nibbles(c->q + ib * 32, yb + 8 + ib * 16);
}

GGQ_ROWS(iq4_xs) {
    (void)isa;
    if (nrows <= 0) return 0;
    const int64_t nbr = n_per_row / 256;
    float wl[256];
    xs_cand cand[4];
    static const int NDELTA_A[2] = {1, 3}, NDELTA_BC[1] = {3}, NDELTA_D[2] = {1, 3};
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t ibl = 0; ibl < nbr; ibl++) {
            const float *xs = x + r * n_per_row + ibl * 256;
            const float *im = imatrix ? imatrix + ibl * 256 : NULL;
            const float *wm = im ? im : ONES;
            uint8_t *yb = y + (r * nbr + ibl) * 136;
            llama_weights(xs, im, 256, wl);
            float d_ll[8], d_m[8];
            for (int ib = 0; ib < 8; ib++)
                block_search(xs + ib * 32, wl + ib * 32, wm + ib * 32, &d_ll[ib], &d_m[ib]);

            /* A: llama.cpp's super scale; option 0 = its own bytes */
            int bases[2][8];
            xs_cand *c = &cand[0];
            const float d = super_scale(d_ll, -32);
            c->s = ggq_f16_round_clamped(d, NULL);
            for (int ib = 0; ib < 8; ib++) {
                const int l = sub_l(d, d_ll[ib]);
                const float *xb = xs + ib * 32;
                block_values(xb, ggq_inv_or_0(d * (float)l), c->q + ib * 32);
                c->l[ib] = l;
                c->err[ib] = err_q(xb, wm + ib * 32, c->s * (float)l, c->q + ib * 32);
                bases[0][ib] = l;
                bases[1][ib] = sub_l(d, d_m[ib]);
            }
            xs_choose(xs, wm, c, 1, 2, (const int(*)[8])bases, NDELTA_A);

            /* B, C: super scale from the wm scales at l = -32 or l = +31 */
            for (int v = 0; v < 2; v++) {
                c = &cand[1 + v];
                const float dv = super_scale(d_m, v == 0 ? -32 : 31);
                c->s = ggq_f16_round_clamped(dv, NULL);
                for (int ib = 0; ib < 8; ib++) bases[0][ib] = sub_l(dv, d_m[ib]);
                xs_choose(xs, wm, c, 0, 1, (const int(*)[8])bases, NDELTA_BC);
            }

            /* D: the best so far, super scale refitted under wm */
            int k = 0;
            for (int i = 1; i < 3; i++)
                if (cand[i].total < cand[k].total) k = i;
            {
                const xs_cand *bst = &cand[k];
                float ax[4] = {0.0f, 0.0f, 0.0f, 0.0f}, a2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int j = 0; j < 256; j += 4) {
                    for (int m = 0; m < 4; m++) {
                        const float q = (float)bst->l[(j + m) / 32] * bst->q[j + m];
                        const float wq = wm[j + m] * q;
                        ax[m] += wq * xs[j + m];
                        a2[m] += wq * q;
                    }
                }
                const float sumqx = ggq_lanes4(ax), sumq2 = ggq_lanes4(a2);
                const float dr = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
                c = &cand[3];
                c->s = ggq_f16_round_clamped(dr, NULL);
                for (int ib = 0; ib < 8; ib++) {
                    bases[0][ib] = bst->l[ib];
                    bases[1][ib] = sub_l(dr, d_m[ib]);
                }
                xs_choose(xs, wm, c, 0, 2, (const int(*)[8])bases, NDELTA_D);
            }
            for (int i = 1; i < 4; i++)
                if (cand[i].total < cand[k].total) k = i;
            xs_pack(&cand[k], yb);
        }
    }
    return 0;
}

GGQ_KERNEL(iq4_xs)
