/* Q2_K and Q3_K: 256-value super-blocks of 16 sub-blocks of 16 values.
 * Mirrors ggtool/quants/q2_k_q3_k.py byte for byte: llama.cpp's algorithm (ggml-quants.c,
 * quantize_row_q{2,3}_K_ref without an imatrix, quantize_row_q{2,3}_K_impl with one), then a
 * refinement that keeps a change only where it lowers the block's weighted squared error. */
#include "ggq.h"
#include "ggq_search.h"

#define QK GGQ_QK_K

/* ------------------------------------------------------------ llama.cpp search routines
 * (the ones Q2_K and Q3_K share with other types are in ggq_search.h) */

/* make_q3_quants(do_rmse = true) for 16 values: symmetric, w = x^2, coordinate descent.
 * L = q + nmax. Element-wise work in loops of its own, sums sequential. */
GGQ_INLINE float make_q3_16(int nmax, const float *x, uint8_t *Lout) {
    float W[16], WX[16], Lf[16], t1[16], t2[16];
    int8_t L[16];
    float amax;
    const float max = ggq_signed_absmax(x, 16, &amax);
    if (amax < GGQ_GROUP_MAX_EPS) {
        for (int i = 0; i < 16; i++) Lout[i] = 0;
        return 0.f;
    }
    const float iscale = -nmax / max;
    for (int i = 0; i < 16; i++) {
        W[i] = x[i] * x[i];
        WX[i] = W[i] * x[i];
        Lf[i] = (float)ggq_nearest_int_clamped(iscale * x[i], -nmax, nmax - 1);
        t1[i] = WX[i] * Lf[i];
        t2[i] = W[i] * Lf[i] * Lf[i];
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < 16; i++) { sumlx += t1[i]; suml2 += t2[i]; }
    for (int i = 0; i < 16; i++) L[i] = (int8_t)Lf[i];
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < 16; i++) {
            float slx = sumlx - WX[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - W[i] * L[i] * L[i];
                int nl = ggq_nearest_int(x[i] * sl2 / slx);
                nl = ggq_clampi(nl, -nmax, nmax - 1);
                if (nl != L[i]) {
                    slx += WX[i] * nl;
                    sl2 += W[i] * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl; sumlx = slx; suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < 16; i++) Lout[i] = (uint8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

GGQ_INLINE void pack2(const float *L, uint8_t *qs) {
    for (int h = 0; h < 2; h++) {
        const float *l0 = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            qs[32 * h + l] = (uint8_t)((int)l0[l] | ((int)l0[l + 32] << 2) | ((int)l0[l + 64] << 4) | ((int)l0[l + 96] << 6));
        }
    }
}

/* The row loop over 256-value blocks (weights of 1 without an imatrix) and the entry point
 * (GGQ_KERNEL: compiled for the baseline and for AVX2, see ggq_common.h). */
#define KL_KERNEL(name, type_size)                                                             \
    GGQ_ROWS(name) {                                                                           \
        (void)isa;                                                                             \
        const int64_t nbr = n_per_row / QK;                                                    \
        float ones[QK];                                                                        \
        for (int i = 0; i < QK; i++) ones[i] = 1.f;                                            \
        for (int64_t r = 0; r < nrows; r++)                                                    \
            for (int64_t b = 0; b < nbr; b++)                                                  \
                name##_block(x + (r * nbr + b) * QK, imatrix ? imatrix + b * QK : NULL, ones,  \
                             y + (r * nbr + b) * (type_size));                                 \
        return 0;                                                                              \
    }                                                                                          \
    GGQ_KERNEL(name)

/* ------------------------------------------------------------ Q2_K */

/* Re-round sub-blocks with their stored scales; a sub-block with d*sc == 0 keeps its L. */
GGQ_INLINE void q2_requant(const float *x, float *L, const uint8_t *sb, float d, float dmin) {
    for (int j = 0; j < 16; j++) {
        const float dl = d * (sb[j] & 0xF);
        if (!dl) continue;
        const float ml = dmin * (sb[j] >> 4);
        const float *restrict xj = x + 16 * j;
        float *restrict Lj = L + 16 * j;
        for (int i = 0; i < 16; i++) Lj[i] = (float)ggq_nearest_int_clamped((xj[i] + ml) / dl, 0, 3);
    }
}

/* ------------------------------------------------------------ refinement (ours)
 * After llama.cpp's result, per block: (1) per sub-block, try nearby integer scales (and mins),
 * re-rounding the 16 values, keep the lowest error; (2) refit the fp16 super-block scale(s) by
 * weighted least squares, re-round everything, keep it if the error goes down; repeat.
 * The search is float32 with 4 interleaved partial sums (lane k: elements k, k+4, k+8, k+12,
 * then (l0+l1)+(l2+l3)), which the compiler vectorizes. A final float64 guard keeps llama.cpp's
 * block unless ours is strictly better. Error = sum(w*(x - x_hat)^2), x_hat as dequantized. */

#define REFINE_ROUNDS 2

/* float64 error of a whole block, 4 lanes */
GGQ_INLINE double err_f64(const float *x, const float *xh, const float *w) {
    double acc[4] = {0, 0, 0, 0};
    for (int g = 0; g < QK; g += 4) {
        for (int k = 0; k < 4; k++) {
            double diff = (double)x[g + k] - (double)xh[g + k];
            acc[k] += (double)w[g + k] * diff * diff;
        }
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* Sub-block candidates. For each value: v = (x + ml)*idl (Q2_K) or x*idl (Q3_K), clamp with
 * v = v > lo ? v : lo, v = v < hi ? v : hi, round l = (v + MAGIC) - MAGIC (half to even),
 * error term w*d*d with d = x - x_hat. SSE2 (maxps/minps are exactly those two selects) and
 * the plain C fallback give the same bits. */
#if defined(__SSE2__)
#include <emmintrin.h>

GGQ_INLINE float hsum_lanes(__m128 acc) {
    float a[4];
    _mm_storeu_ps(a, acc);
    return ggq_lanes4(a);
}

GGQ_INLINE float q2_cand(const float *x, const float *w, float dl, float ml, float *L) {
    const __m128 vdl = _mm_set1_ps(dl), vml = _mm_set1_ps(ml), vidl = _mm_set1_ps(ggq_inv_or_0(dl));
    const __m128 lo = _mm_setzero_ps(), hi = _mm_set1_ps(3.f), magic = _mm_set1_ps(GGQ_RINT_MAGIC);
    __m128 acc = _mm_setzero_ps();
    for (int g = 0; g < 16; g += 4) {
        const __m128 xv = _mm_loadu_ps(x + g);
        __m128 v = _mm_mul_ps(_mm_add_ps(xv, vml), vidl);
        v = _mm_min_ps(_mm_max_ps(v, lo), hi);
        v = _mm_sub_ps(_mm_add_ps(v, magic), magic);
        _mm_storeu_ps(L + g, v);
        const __m128 d = _mm_sub_ps(xv, _mm_sub_ps(_mm_mul_ps(vdl, v), vml));
        acc = _mm_add_ps(acc, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(w + g), d), d));
    }
    return hsum_lanes(acc);
}

GGQ_INLINE float q3_cand(const float *x, const float *w, float dl, float *q) {
    const __m128 vdl = _mm_set1_ps(dl), vidl = _mm_set1_ps(ggq_inv_or_0(dl));
    const __m128 lo = _mm_set1_ps(-4.f), hi = _mm_set1_ps(3.f), magic = _mm_set1_ps(GGQ_RINT_MAGIC);
    __m128 acc = _mm_setzero_ps();
    for (int g = 0; g < 16; g += 4) {
        const __m128 xv = _mm_loadu_ps(x + g);
        __m128 v = _mm_mul_ps(xv, vidl);
        v = _mm_min_ps(_mm_max_ps(v, lo), hi);
        v = _mm_sub_ps(_mm_add_ps(v, magic), magic);
        _mm_storeu_ps(q + g, v);
        const __m128 d = _mm_sub_ps(xv, _mm_mul_ps(vdl, v));
        acc = _mm_add_ps(acc, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(w + g), d), d));
    }
    return hsum_lanes(acc);
}

#else

GGQ_INLINE float q2_cand(const float *x, const float *w, float dl, float ml, float *L) {
    const float idl = ggq_inv_or_0(dl);
    float acc[4] = {0, 0, 0, 0};
    for (int g = 0; g < 16; g += 4) {
        for (int k = 0; k < 4; k++) {
            const float l = ggq_rint_f(ggq_clampf((x[g + k] + ml) * idl, 0.f, 3.f));
            L[g + k] = l;
            const float d = x[g + k] - (dl * l - ml);
            acc[k] += w[g + k] * d * d;
        }
    }
    return ggq_lanes4(acc);
}

GGQ_INLINE float q3_cand(const float *x, const float *w, float dl, float *q) {
    const float idl = ggq_inv_or_0(dl);
    float acc[4] = {0, 0, 0, 0};
    for (int g = 0; g < 16; g += 4) {
        for (int k = 0; k < 4; k++) {
            const float l = ggq_rint_f(ggq_clampf(x[g + k] * idl, -4.f, 3.f));
            q[g + k] = l;
            const float d = x[g + k] - dl * l;
            acc[k] += w[g + k] * d * d;
        }
    }
    return ggq_lanes4(acc);
}
#endif

/* per sub-block of 16, sum(w*(x - xh)^2) in 4 lanes */
GGQ_INLINE void sub_errors(const float *x, const float *w, const float *xh, float *E) {
    for (int j = 0; j < 16; j++) {
        float acc[4] = {0, 0, 0, 0};
        for (int g = 0; g < 16; g += 4) {
            for (int k = 0; k < 4; k++) {
                const int i = 16 * j + g + k;
                const float d = x[i] - xh[i];
                acc[k] += w[i] * d * d;
            }
        }
        E[j] = ggq_lanes4(acc);
    }
}

/* sums over 16 of w*a*b and of a*b, in lane order */
GGQ_INLINE float lanes_dot3(const float *restrict w, const float *restrict a, const float *restrict b) {
    float acc[4] = {0, 0, 0, 0};
    for (int g = 0; g < 16; g += 4)
        for (int k = 0; k < 4; k++) acc[k] += w[g + k] * a[g + k] * b[g + k];
    return ggq_lanes4(acc);
}

GGQ_INLINE float lanes_dot2(const float *restrict a, const float *restrict b) {
    float acc[4] = {0, 0, 0, 0};
    for (int g = 0; g < 16; g += 4)
        for (int k = 0; k < 4; k++) acc[k] += a[g + k] * b[g + k];
    return ggq_lanes4(acc);
}

/* Candidate steps per round (must match Q2_SEARCH / Q3_SEARCH in q2_k_q3_k.py). */
#define Q2_NCAND 8
static const float q2_steps[REFINE_ROUNDS][Q2_NCAND][2] = {
    {{-1, -1}, {-1, 0}, {-1, 1}, {0, -1}, {0, 1}, {1, -1}, {1, 0}, {1, 1}},
    {{-1, -1}, {-1, 0}, {-1, 1}, {0, -1}, {0, 1}, {1, -1}, {1, 0}, {1, 1}},
};
#define Q3_NCAND 4
static const float q3_steps[REFINE_ROUNDS][Q3_NCAND] = {{-2, -1, 1, 2}, {-2, -1, 1, 2}};

/* Q2_K: L (256, 0..3), sc and m (16 each, 0..15), d and dmin (fp16 values) refined in place.
 * w = importance (256), ones without an imatrix. */
GGQ_INLINE void q2_refine(const float *x, const float *w, float *Lout, int *sc, int *m, float *pd, float *pm) {
    float L[QK], L2[QK], xh[QK], A[QK], Bm[QK], wx[QK], E[16], E2[16], s[16], mm[16];
    float D = *pd, M = *pm;
    for (int j = 0; j < 16; j++) { s[j] = (float)sc[j]; mm[j] = (float)m[j]; }
    memcpy(L, Lout, sizeof L);
    for (int i = 0; i < QK; i++) wx[i] = w[i] * x[i];
    for (int j = 0; j < 16; j++) {
        const float dl = D * s[j], ml = M * mm[j];
        for (int i = 16 * j; i < 16 * j + 16; i++) xh[i] = dl * L[i] - ml;
    }
    sub_errors(x, w, xh, E);
    const double E0 = err_f64(x, xh, w);
    for (int rnd = 0; rnd < REFINE_ROUNDS; rnd++) {
        for (int j = 0; j < 16; j++) {
            const float s0 = s[j], m0 = mm[j];
            float s2[Q2_NCAND], m2[Q2_NCAND], dl[Q2_NCAND], ml[Q2_NCAND], err[Q2_NCAND];
            float Lc[Q2_NCAND][16];
            for (int c = 0; c < Q2_NCAND; c++) {
                s2[c] = ggq_clampf(s0 + q2_steps[rnd][c][0], 0.f, 15.f);
                m2[c] = ggq_clampf(m0 + q2_steps[rnd][c][1], 0.f, 15.f);
                dl[c] = D * s2[c];
                ml[c] = M * m2[c];
            }
            for (int c = 0; c < Q2_NCAND; c++) err[c] = q2_cand(x + 16 * j, w + 16 * j, dl[c], ml[c], Lc[c]);
            int best = -1;
            for (int c = 0; c < Q2_NCAND; c++) {
                if ((s2[c] != s0 || m2[c] != m0) && err[c] < E[j]) { E[j] = err[c]; best = c; }
            }
            if (best >= 0) {
                s[j] = s2[best]; mm[j] = m2[best];
                memcpy(L + 16 * j, Lc[best], sizeof Lc[best]);
            }
        }
        /* weighted least squares for (D, M): x_hat = D*A - M*B, A = sc*L, B = m */
        for (int j = 0; j < 16; j++)
            for (int i = 0; i < 16; i++) { A[16 * j + i] = s[j] * L[16 * j + i]; Bm[16 * j + i] = mm[j]; }
        float saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
        for (int j = 0; j < 16; j++) {
            const int o = 16 * j;
            saa += lanes_dot3(w + o, A + o, A + o);
            sab += lanes_dot3(w + o, A + o, Bm + o);
            sbb += lanes_dot3(w + o, Bm + o, Bm + o);
            sxa += lanes_dot2(wx + o, A + o);
            sxb += lanes_dot2(wx + o, Bm + o);
        }
        const double Saa = saa, Sab = sab, Sbb = sbb, Sxa = sxa, Sxb = sxb;
        const double det = Saa * Sbb - Sab * Sab;
        double D2, M2;
        if (det > 0) {
            D2 = (Sxa * Sbb - Sab * Sxb) / det;
            M2 = (Sab * Sxa - Saa * Sxb) / det;
        } else {
            D2 = Saa > 0 ? (Sxa + (double)M * Sab) / Saa : (double)D;
            M2 = (double)M;
        }
        const float Dn = ggq_fp16_round((float)D2);
        const float Mn = ggq_fp16_round((float)M2);
        float tot = 0, tot2 = 0;
        for (int j = 0; j < 16; j++) {
            E2[j] = q2_cand(x + 16 * j, w + 16 * j, Dn * s[j], Mn * mm[j], L2 + 16 * j);
            tot += E[j];
            tot2 += E2[j];
        }
        if (tot2 < tot) {
            memcpy(L, L2, sizeof L);
            memcpy(E, E2, sizeof E);
            D = Dn; M = Mn;
        }
    }
    for (int j = 0; j < 16; j++) {
        const float dl = D * s[j], ml = M * mm[j];
        for (int i = 0; i < 16; i++) xh[16 * j + i] = dl * L[16 * j + i] - ml;
    }
    if (err_f64(x, xh, w) < E0) {
        memcpy(Lout, L, sizeof L);
        for (int j = 0; j < 16; j++) { sc[j] = (int)s[j]; m[j] = (int)mm[j]; }
        *pd = D; *pm = M;
    }
}

/* Q3_K: q (256, -4..3), sc (16, -32..31), d (fp16 value) refined in place; w as above. */
GGQ_INLINE void q3_refine(const float *x, const float *w, float *qout, int *sc, float *pd) {
    float q[QK], q2[QK], xh[QK], A[QK], wx[QK], E[16], E2[16], s[16];
    float D = *pd;
    for (int j = 0; j < 16; j++) s[j] = (float)sc[j];
    memcpy(q, qout, sizeof q);
    for (int i = 0; i < QK; i++) wx[i] = w[i] * x[i];
    for (int j = 0; j < 16; j++) {
        const float dl = D * s[j];
        for (int i = 16 * j; i < 16 * j + 16; i++) xh[i] = dl * q[i];
    }
    sub_errors(x, w, xh, E);
    const double E0 = err_f64(x, xh, w);
    for (int rnd = 0; rnd < REFINE_ROUNDS; rnd++) {
        for (int j = 0; j < 16; j++) {
            const float s0 = s[j];
            float s2[Q3_NCAND], dl[Q3_NCAND], err[Q3_NCAND];
            float qc[Q3_NCAND][16];
            for (int c = 0; c < Q3_NCAND; c++) {
                s2[c] = ggq_clampf(s0 + q3_steps[rnd][c], -32.f, 31.f);
                dl[c] = D * s2[c];
            }
            for (int c = 0; c < Q3_NCAND; c++) err[c] = q3_cand(x + 16 * j, w + 16 * j, dl[c], qc[c]);
            int best = -1;
            for (int c = 0; c < Q3_NCAND; c++) {
                if (s2[c] != s0 && err[c] < E[j]) { E[j] = err[c]; best = c; }
            }
            if (best >= 0) {
                s[j] = s2[best];
                memcpy(q + 16 * j, qc[best], sizeof qc[best]);
            }
        }
        /* weighted least squares for D: x_hat = D*A, A = sc*q */
        for (int j = 0; j < 16; j++)
            for (int i = 0; i < 16; i++) A[16 * j + i] = s[j] * q[16 * j + i];
        float sxa = 0, saa = 0;
        for (int j = 0; j < 16; j++) {
            const int o = 16 * j;
            sxa += lanes_dot2(wx + o, A + o);
            saa += lanes_dot3(w + o, A + o, A + o);
        }
        const double D2 = saa > 0 ? (double)sxa / (double)saa : (double)D;
        const float Dn = ggq_fp16_round((float)D2);
        float tot = 0, tot2 = 0;
        for (int j = 0; j < 16; j++) {
            E2[j] = q3_cand(x + 16 * j, w + 16 * j, Dn * s[j], q2 + 16 * j);
            tot += E[j];
            tot2 += E2[j];
        }
        if (tot2 < tot) {
            memcpy(q, q2, sizeof q);
            memcpy(E, E2, sizeof E);
            D = Dn;
        }
    }
    for (int j = 0; j < 16; j++) {
        const float dl = D * s[j];
        for (int i = 0; i < 16; i++) xh[16 * j + i] = dl * q[16 * j + i];
    }
    if (err_f64(x, xh, w) < E0) {
        memcpy(qout, q, sizeof q);
        for (int j = 0; j < 16; j++) sc[j] = (int)s[j];
        *pd = D;
    }
}

/* llama.cpp's Q2_K for one block: L (256), scale bytes (16), d and dmin as fp16 values. */
GGQ_INLINE void q2_llama(const float *x, const float *qw, float *L, uint8_t *sb, float *pd, float *pm) {
    float scales[16], mins[16], weight[16];
    float d, dmin;
    if (!qw) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weight[l] = fabsf(x[16 * j + l]);
            scales[j] = ggq_make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, 1, 0);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float q4 = 15.f;
        for (int j = 0; j < 16; j++) sb[j] = 0;
        d = dmin = 0.f;
        if (max_scale > 0) {
            float iscale = q4 / max_scale;
            for (int j = 0; j < 16; j++) sb[j] = (uint8_t)ggq_nearest_int(iscale * scales[j]);
            d = max_scale / q4;
        }
        if (max_min > 0) {
            float iscale = q4 / max_min;
            for (int j = 0; j < 16; j++) sb[j] |= (uint8_t)(ggq_nearest_int(iscale * mins[j]) << 4);
            dmin = max_min / q4;
        }
    } else {
        float sw[16];
        uint8_t Ls[16], Lm[16];
        float sumx2 = 0;
        for (int j = 0; j < QK; j++) sumx2 += x[j] * x[j];
        float sigma2 = sumx2 / QK;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            float s = 0;
            for (int l = 0; l < 16; l++) s += weight[l];
            sw[j] = s;
            scales[j] = ggq_make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f, 0.05f, 36, 0, 0);
        }
        d = ggq_make_qp(16, 15, scales, Ls, sw);
        dmin = ggq_make_qp(16, 15, mins, Lm, sw);
        for (int j = 0; j < 16; j++) sb[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    }
    d = ggq_fp16_round(d);
    dmin = ggq_fp16_round(dmin);
    q2_requant(x, L, sb, d, dmin);
    *pd = d;
    *pm = dmin;
}

GGQ_INLINE void q2_k_block(const float *xb, const float *qw, const float *ones, uint8_t *yb) {
    float L[QK];
    float d, dmin;
    int sc[16], m[16];
    q2_llama(xb, qw, L, yb, &d, &dmin);
    for (int j = 0; j < 16; j++) { sc[j] = yb[j] & 0xF; m[j] = yb[j] >> 4; }
    q2_refine(xb, qw ? qw : ones, L, sc, m, &d, &dmin);
    for (int j = 0; j < 16; j++) yb[j] = (uint8_t)(sc[j] | (m[j] << 4));
    pack2(L, yb + 16);
    ggq_store_fp16(yb + 80, d);
    ggq_store_fp16(yb + 82, dmin);
}

KL_KERNEL(q2_k, 84)

/* ------------------------------------------------------------ Q3_K */

GGQ_INLINE void q3_requant(const float *x, float *q, const int *sc, float d) {
    for (int j = 0; j < 16; j++) {
        const float dl = d * sc[j];
        if (!dl) continue;
        const float *restrict xj = x + 16 * j;
        float *restrict qj = q + 16 * j;
        for (int i = 0; i < 16; i++) qj[i] = (float)ggq_nearest_int_clamped(xj[i] / dl, -4, 3);
    }
}

/* llama.cpp's Q3_K for one block: q (256, -4..3), stored 6-bit scales ls (16), d as fp16 value. */
GGQ_INLINE void q3_llama(const float *x, const float *qw, float *q, int *ls, float *pd) {
    uint8_t L[QK];
    float scales[16];
    float d;
    if (!qw) {
        for (int j = 0; j < 16; j++) scales[j] = make_q3_16(4, x + 16 * j, L + 16 * j);
        const float max_scale = ggq_signed_absmax(scales, 16, NULL);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                int8_t l = (int8_t)ggq_nearest_int(iscale * scales[j]);
                ls[j] = ggq_clampi(l, -32, 31) + 32;
            }
            d = 1 / iscale;
        } else {
            for (int j = 0; j < 16; j++) ls[j] = 0;
            d = 0.f;
        }
    } else {
        float weight[16], sw[16];
        uint8_t Ls[16];
        float sumx2 = 0;
        for (int j = 0; j < QK; j++) sumx2 += x[j] * x[j];
        float sigma2 = 2 * sumx2 / QK;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            float s = 0;
            for (int l = 0; l < 16; l++) s += weight[l];
            sw[j] = s;
            scales[j] = ggq_make_qx(16, 4, x + 16 * j, weight, L + 16 * j);
        }
        d = ggq_make_qx(16, 32, scales, sw, Ls);
        for (int j = 0; j < 16; j++) ls[j] = Ls[j];
    }
    d = ggq_fp16_round(d);
    int sc[16];
    for (int j = 0; j < 16; j++) sc[j] = ls[j] - 32;
    for (int i = 0; i < QK; i++) q[i] = (float)(L[i] - 4);
    q3_requant(x, q, sc, d);
    *pd = d;
}

GGQ_INLINE void q3_k_block(const float *xb, const float *qw, const float *ones, uint8_t *yb) {
    float q[QK], Lu[QK];
    int ls[16], sc[16];
    float d;
    q3_llama(xb, qw, q, ls, &d);
    for (int j = 0; j < 16; j++) sc[j] = ls[j] - 32;
    q3_refine(xb, qw ? qw : ones, q, sc, &d);
    for (int j = 0; j < 16; j++) ls[j] = sc[j] + 32;
    uint8_t *hmask = yb, *qs = yb + 32, *scb = yb + 96;
    memset(hmask, 0, 32);
    for (int k = 0; k < 8; k++) {
        for (int l = 0; l < 32; l++) {
            const int v = (int)q[32 * k + l] + 4;      /* 0..7: bit 2 -> hmask, low bits -> qs */
            hmask[l] |= (uint8_t)((v >> 2) << k);
            Lu[32 * k + l] = (float)(v & 3);
        }
    }
    pack2(Lu, qs);
    memset(scb, 0, 12);
    for (int j = 0; j < 16; j++) {
        const int l = ls[j];
        if (j < 8) scb[j] = (uint8_t)(l & 0xF);
        else scb[j - 8] |= (uint8_t)((l & 0xF) << 4);
        scb[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
    ggq_store_fp16(yb + 108, d);
}

KL_KERNEL(q3_k, 110)
