/* Q2_K and Q3_K: 256-value super-blocks of 16 sub-blocks of 16 values.
 * Mirrors ggtool/quants/k_low.py byte for byte: llama.cpp's algorithm (ggml-quants.c,
 * quantize_row_q{2,3}_K_ref without an imatrix, quantize_row_q{2,3}_K_impl with one), then a
 * refinement that keeps a change only where it lowers the block's weighted squared error. */
#include "ggq.h"

#define QK 256
#define EPS 1e-15f /* llama.cpp GROUP_MAX_EPS */

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* ------------------------------------------------------------ llama.cpp search routines */

/* make_qkx2_quants / make_qkx3_quants with weights: asymmetric scale + min search. */
static float make_qkx(int n, int nmax, const float *x, const float *w, uint8_t *L,
                      float *the_min, float rmin, float rdelta, int nstep, int use_mad) {
    uint8_t Laux[16];
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        int l = ggq_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        float isc = (rmin + rdelta * is + nmax) / (max - min);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = ggq_nearest_int(isc * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            float wl = w[i] * l;
            sl += wl;
            sl2 += wl * l;
            sxl += wl * x[i];
        }
        float D = sum_w * sl2 - sl * sl;
        if (D > 0) {
            float this_scale = (sum_w * sxl - sum_x * sl) / D;
            float this_min = (sl2 * sum_x - sl * sxl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sxl / sl2;
            }
            float cur = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur += w[i] * diff;
            }
            if (cur < best) {
                memcpy(L, Laux, (size_t)n);
                best = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* make_q3_quants(do_rmse = true): symmetric, w = x^2, coordinate descent. L = q + nmax. */
static float make_q3(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = ggq_nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int nl = ggq_nearest_int(x[i] * sl2 / slx);
                nl = imax(-nmax, imin(nmax - 1, nl));
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl; sumlx = slx; suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* make_qx_quants(rmse_type = 1) with weights: symmetric, 18 extra scale tries. L = q + nmax. */
static float make_qx(int n, int nmax, const float *x, const float *w, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = ggq_nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = ggq_nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            sumlx += w[i] * x[i] * l;
            suml2 += w[i] * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = ggq_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* make_qp_quants: unsigned quantization of the sub-block scales (or mins). */
static float make_qp(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max < EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)ggq_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale * L[i];
        best += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        float isc = (0.1f * is + nmax) / max;
        float sc = 1 / isc;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            int l = imin(nmax, ggq_nearest_int(isc * x[i]));
            float diff = x[i] - sc * l;
            mse += w[i] * diff * diff;
        }
        if (mse < best) { best = mse; iscale = isc; }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = imin(nmax, ggq_nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * L[i];
            float sl2 = suml2 - w[i] * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int nl = imin(nmax, ggq_nearest_int(x[i] * sl2 / slx));
                if (nl != L[i]) {
                    slx += w[i] * x[i] * nl;
                    sl2 += w[i] * nl * nl;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)nl; sumlx = slx; suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

static void pack2(const uint8_t *L, uint8_t *qs) {
    for (int h = 0; h < 2; h++) {
        const uint8_t *l0 = L + 128 * h;
        for (int l = 0; l < 32; l++) {
            qs[32 * h + l] = (uint8_t)(l0[l] | (l0[l + 32] << 2) | (l0[l + 64] << 4) | (l0[l + 96] << 6));
        }
    }
}

/* ------------------------------------------------------------ Q2_K */

/* Re-round sub-blocks with their stored scales; a sub-block with d*sc == 0 keeps its L. */
static void q2_requant(const float *x, uint8_t *L, const uint8_t *sb, float d, float dmin) {
    for (int j = 0; j < 16; j++) {
        const float dl = d * (sb[j] & 0xF);
        if (!dl) continue;
        const float ml = dmin * (sb[j] >> 4);
        for (int i = 0; i < 16; i++) {
            int l = ggq_nearest_int((x[16 * j + i] + ml) / dl);
            L[16 * j + i] = (uint8_t)imax(0, imin(3, l));
        }
    }
}

/* ------------------------------------------------------------ refinement (ours)
 * Per sub-block, try nearby integer scales (re-rounding the values), then refit the fp16
 * super-block scale(s) by weighted least squares; keep a change only if the float64 error
 * sum(w*(x - x_hat)^2), x_hat exactly as dequantized, goes strictly down. */

#ifndef REFINE_ROUNDS
#define REFINE_ROUNDS 2
#endif

static inline float inv_or_0(float v) { return v != 0 ? 1.f / v : 0.f; }

/* error of one Q2_K sub-block (16 values) */
static double q2_err16(const float *x, const float *w, const uint8_t *L, float dl, float ml) {
    double e = 0;
    for (int i = 0; i < 16; i++) {
        float xh = dl * L[i] - ml;
        double diff = (double)x[i] - (double)xh;
        e += w ? (double)w[i] * diff * diff : diff * diff;
    }
    return e;
}

static void q2_round16(const float *x, uint8_t *L, float dl, float ml) {
    const float idl = inv_or_0(dl);
    for (int i = 0; i < 16; i++) L[i] = (uint8_t)imax(0, imin(3, ggq_nearest_int((x[i] + ml) * idl)));
}

/* L (256), sc and m (16 each, 0..15), d and dmin (fp16 values) in *pd, *pm;
 * w = importance (256) or NULL */
static void q2_refine(const float *x, const float *w, uint8_t *L, int *sc, int *m, float *pd, float *pm) {
    double E[16], E2[16];
    uint8_t L2[QK];
    float D = *pd, M = *pm;
    for (int j = 0; j < 16; j++)
        E[j] = q2_err16(x + 16 * j, w ? w + 16 * j : NULL, L + 16 * j, D * sc[j], M * m[j]);
    for (int rnd = 0; rnd < REFINE_ROUNDS; rnd++) {
        for (int j = 0; j < 16; j++) {
            const float *xj = x + 16 * j;
            const float *wj = w ? w + 16 * j : NULL;
            const int s0 = sc[j], m0 = m[j];
            uint8_t Lc[16];
            for (int a = -1; a <= 1; a++) {
                for (int b = -1; b <= 1; b++) {
                    int s2 = imax(0, imin(15, s0 + a)), m2 = imax(0, imin(15, m0 + b));
                    if (s2 == s0 && m2 == m0) continue;
                    float dl = D * s2, ml = M * m2;
                    q2_round16(xj, Lc, dl, ml);
                    double e = q2_err16(xj, wj, Lc, dl, ml);
                    if (e < E[j]) {
                        E[j] = e; sc[j] = s2; m[j] = m2;
                        memcpy(L + 16 * j, Lc, 16);
                    }
                }
            }
        }
        /* weighted least squares for (D, M), x_hat = D*a - M*b, a = sc*L, b = m */
        double Saa = 0, Sab = 0, Sbb = 0, Sxa = 0, Sxb = 0;
        for (int j = 0; j < 16; j++) {
            double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
            const double bj = (double)m[j];
            for (int i = 0; i < 16; i++) {
                const double wi = w ? (double)w[16 * j + i] : 1.0;
                const double a = (double)(sc[j] * L[16 * j + i]);
                const double xi = (double)x[16 * j + i];
                saa += wi * a * a;
                sab += wi * a * bj;
                sbb += wi * bj * bj;
                sxa += wi * xi * a;
                sxb += wi * xi * bj;
            }
            Saa += saa; Sab += sab; Sbb += sbb; Sxa += sxa; Sxb += sxb;
        }
        const double det = Saa * Sbb - Sab * Sab;
        double D2, M2;
        if (det > 0) {
            D2 = (Sxa * Sbb - Sab * Sxb) / det;
            M2 = (Sab * Sxa - Saa * Sxb) / det;
        } else {
            D2 = Saa > 0 ? (Sxa + (double)M * Sab) / Saa : (double)D;
            M2 = (double)M;
        }
        const float Dn = ggq_fp16_to_fp32(ggq_fp32_to_fp16((float)D2));
        const float Mn = ggq_fp16_to_fp32(ggq_fp32_to_fp16((float)M2));
        double tot = 0, tot2 = 0;
        for (int j = 0; j < 16; j++) {
            const float dl = Dn * sc[j], ml = Mn * m[j];
            q2_round16(x + 16 * j, L2 + 16 * j, dl, ml);
            E2[j] = q2_err16(x + 16 * j, w ? w + 16 * j : NULL, L2 + 16 * j, dl, ml);
            tot += E[j];
            tot2 += E2[j];
        }
        if (tot2 < tot) {
            memcpy(L, L2, QK);
            memcpy(E, E2, sizeof E);
            D = Dn; M = Mn;
        }
    }
    *pd = D; *pm = M;
}

/* llama.cpp's Q2_K for one block: L (256), scale bytes (16), d and dmin as fp16 values. */
static void q2_llama(const float *x, const float *qw, uint8_t *L, uint8_t *sb, float *pd, float *pm) {
    float scales[16], mins[16], weight[16];
    float d, dmin;
    if (!qw) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weight[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, 1);
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
            scales[j] = make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f, 0.05f, 36, 0);
        }
        d = make_qp(16, 15, scales, Ls, sw);
        dmin = make_qp(16, 15, mins, Lm, sw);
        for (int j = 0; j < 16; j++) sb[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    }
    d = ggq_fp16_to_fp32(ggq_fp32_to_fp16(d));
    dmin = ggq_fp16_to_fp32(ggq_fp32_to_fp16(dmin));
    q2_requant(x, L, sb, d, dmin);
    *pd = d;
    *pm = dmin;
}

int ggq_quantize_q2_k(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    const int64_t nbr = n_per_row / QK;
    uint8_t L[QK];
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t b = 0; b < nbr; b++) {
            const float *xb = x + (r * nbr + b) * QK;
            const float *qw = imatrix ? imatrix + b * QK : NULL;
            uint8_t *yb = y + (r * nbr + b) * 84;
            float d, dmin;
            int sc[16], m[16];
            q2_llama(xb, qw, L, yb, &d, &dmin);
            for (int j = 0; j < 16; j++) { sc[j] = yb[j] & 0xF; m[j] = yb[j] >> 4; }
            q2_refine(xb, qw, L, sc, m, &d, &dmin);
            for (int j = 0; j < 16; j++) yb[j] = (uint8_t)(sc[j] | (m[j] << 4));
            pack2(L, yb + 16);
            ggq_store_fp16(yb + 80, d);
            ggq_store_fp16(yb + 82, dmin);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ Q3_K */

static void q3_requant(const float *x, int8_t *L, const int *sc, float d) {
    for (int j = 0; j < 16; j++) {
        const float dl = d * sc[j];
        if (!dl) continue;
        for (int i = 0; i < 16; i++) {
            int l = ggq_nearest_int(x[16 * j + i] / dl);
            L[16 * j + i] = (int8_t)(imax(-4, imin(3, l)) + 4);
        }
    }
}

static double q3_err16(const float *x, const float *w, const int8_t *q, float dl) {
    double e = 0;
    for (int i = 0; i < 16; i++) {
        float xh = dl * q[i];
        double diff = (double)x[i] - (double)xh;
        e += w ? (double)w[i] * diff * diff : diff * diff;
    }
    return e;
}

static void q3_round16(const float *x, int8_t *q, float dl) {
    const float idl = inv_or_0(dl);
    for (int i = 0; i < 16; i++) q[i] = (int8_t)imax(-4, imin(3, ggq_nearest_int(x[i] * idl)));
}

/* q (256, -4..3), sc (16, -32..31), *pd fp16 value; w = importance (256) or NULL */
static void q3_refine(const float *x, const float *w, int8_t *q, int *sc, float *pd) {
    static const int search[4] = {-2, -1, 1, 2};
    double E[16], E2[16];
    int8_t q2[QK];
    float D = *pd;
    for (int j = 0; j < 16; j++) E[j] = q3_err16(x + 16 * j, w ? w + 16 * j : NULL, q + 16 * j, D * sc[j]);
    for (int rnd = 0; rnd < REFINE_ROUNDS; rnd++) {
        for (int j = 0; j < 16; j++) {
            const float *xj = x + 16 * j;
            const float *wj = w ? w + 16 * j : NULL;
            const int s0 = sc[j];
            int8_t qc[16];
            for (int k = 0; k < 4; k++) {
                int s2 = imax(-32, imin(31, s0 + search[k]));
                if (s2 == s0) continue;
                float dl = D * s2;
                q3_round16(xj, qc, dl);
                double e = q3_err16(xj, wj, qc, dl);
                if (e < E[j]) {
                    E[j] = e; sc[j] = s2;
                    memcpy(q + 16 * j, qc, 16);
                }
            }
        }
        /* weighted least squares for D, x_hat = D*a, a = sc*q */
        double Sxa = 0, Saa = 0;
        for (int j = 0; j < 16; j++) {
            double sxa = 0, saa = 0;
            for (int i = 0; i < 16; i++) {
                const double wi = w ? (double)w[16 * j + i] : 1.0;
                const double a = (double)(sc[j] * q[16 * j + i]);
                sxa += wi * (double)x[16 * j + i] * a;
                saa += wi * a * a;
            }
            Sxa += sxa; Saa += saa;
        }
        const double D2 = Saa > 0 ? Sxa / Saa : (double)D;
        const float Dn = ggq_fp16_to_fp32(ggq_fp32_to_fp16((float)D2));
        double tot = 0, tot2 = 0;
        for (int j = 0; j < 16; j++) {
            const float dl = Dn * sc[j];
            q3_round16(x + 16 * j, q2 + 16 * j, dl);
            E2[j] = q3_err16(x + 16 * j, w ? w + 16 * j : NULL, q2 + 16 * j, dl);
            tot += E[j];
            tot2 += E2[j];
        }
        if (tot2 < tot) {
            memcpy(q, q2, QK);
            memcpy(E, E2, sizeof E);
            D = Dn;
        }
    }
    *pd = D;
}

/* llama.cpp's Q3_K for one block: L (256, q+4), stored 6-bit scales ls (16), d as fp16 value. */
static void q3_llama(const float *x, const float *qw, int8_t *L, int *ls, float *pd) {
    float scales[16];
    float d;
    if (!qw) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = make_q3(16, 4, x + 16 * j, L + 16 * j);
            float a = fabsf(scales[j]);
            if (a > amax) { amax = a; max_scale = scales[j]; }
        }
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                int8_t l = (int8_t)ggq_nearest_int(iscale * scales[j]);
                ls[j] = imax(-32, imin(31, l)) + 32;
            }
            d = 1 / iscale;
        } else {
            for (int j = 0; j < 16; j++) ls[j] = 0;
            d = 0.f;
        }
    } else {
        float weight[16], sw[16];
        int8_t Ls[16];
        float sumx2 = 0;
        for (int j = 0; j < QK; j++) sumx2 += x[j] * x[j];
        float sigma2 = 2 * sumx2 / QK;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
            float s = 0;
            for (int l = 0; l < 16; l++) s += weight[l];
            sw[j] = s;
            scales[j] = make_qx(16, 4, x + 16 * j, weight, L + 16 * j);
        }
        d = make_qx(16, 32, scales, sw, Ls);
        for (int j = 0; j < 16; j++) ls[j] = Ls[j];
    }
    d = ggq_fp16_to_fp32(ggq_fp32_to_fp16(d));
    int sc[16];
    for (int j = 0; j < 16; j++) sc[j] = ls[j] - 32;
    q3_requant(x, L, sc, d);
    *pd = d;
}

int ggq_quantize_q3_k(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    const int64_t nbr = n_per_row / QK;
    int8_t L[QK];
    uint8_t Lu[QK];
    int ls[16];
    for (int64_t r = 0; r < nrows; r++) {
        for (int64_t b = 0; b < nbr; b++) {
            const float *xb = x + (r * nbr + b) * QK;
            const float *qw = imatrix ? imatrix + b * QK : NULL;
            uint8_t *yb = y + (r * nbr + b) * 110;
            float d;
            int sc[16];
            q3_llama(xb, qw, L, ls, &d);
            for (int j = 0; j < 16; j++) sc[j] = ls[j] - 32;
            for (int j = 0; j < QK; j++) L[j] = (int8_t)(L[j] - 4);
            q3_refine(xb, qw, L, sc, &d);
            for (int j = 0; j < 16; j++) ls[j] = sc[j] + 32;
            for (int j = 0; j < QK; j++) L[j] = (int8_t)(L[j] + 4);
            uint8_t *hmask = yb, *qs = yb + 32, *scb = yb + 96;
            memset(hmask, 0, 32);
            for (int j = 0; j < QK; j++) {
                int l = L[j];
                if (l > 3) { hmask[j % 32] |= (uint8_t)(1u << (j / 32)); l -= 4; }
                Lu[j] = (uint8_t)l;
            }
            pack2(Lu, qs);
            memset(scb, 0, 12);
            for (int j = 0; j < 16; j++) {
                int l = ls[j];
                if (j < 8) scb[j] = (uint8_t)(l & 0xF);
                else scb[j - 8] |= (uint8_t)((l & 0xF) << 4);
                scb[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            ggq_store_fp16(yb + 108, d);
        }
    }
    return 0;
}
