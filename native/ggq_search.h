/* llama.cpp's per-block scale searches (ggml-quants.c), one copy each for every kernel
 * (numpy: ggtool/quants/searches.py, the same names without the prefix):
 *
 *   ggq_make_qx    make_qx_quants(rmse_type=1) with weights: symmetric (Q3_K, Q6_K)
 *   ggq_make_qkx   make_qkx2_quants / make_qkx3_quants: asymmetric scale + min
 *                  (Q2_K; Q4_1/Q5_1 with an imatrix, in the guarded form)
 *   ggq_make_qp    make_qp_quants: unsigned scales of the sub-block scales (Q2_K, Q4_K, Q5_K)
 *
 * Force-inlined, so that n and the flags are constants in each caller and the element loops
 * vectorize. Q4_K/Q5_K run the make_qkx search across vector lanes (q4_k_q5_k.c), and
 * Q4_0/Q5_0 fuse make_qx_quants' trials into their own scan (q4_0_q4_1_q5_0_q5_1.c): the
 * same arithmetic in another data layout. */
#ifndef GGQ_SEARCH_H
#define GGQ_SEARCH_H

#include "ggq_common.h"

#define GGQ_SEARCH_MAXN 32 /* the longest block a search runs on */

/* make_qx_quants(n, nmax, x, L, rmse_type=1, w); L = q + nmax in 0..2*nmax-1. Its 19 trials
 * (iscale = -nmax/max, then -(nmax + 0.1*is)/max, is = -9..9 but 0) run side by side,
 * [element][trial], so the compiler vectorizes across trials; each trial's sums still run
 * sequentially over the elements, as in llama.cpp. */
#define GGQ_QX_NT 24 /* 19 trials + 5 pads: a multiple of 8, so the AVX2 loop has no remainder */
GGQ_INLINE float ggq_make_qx(int n, int nmax, const float *restrict x, const float *restrict w,
                             uint8_t *restrict L) {
    float amax;
    const float max = ggq_signed_absmax(x, n, &amax);
    if (amax < GGQ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float fn = (float)nmax, lo = -fn, hi = fn - 1.0f;
    float iscale[GGQ_QX_NT], lt[GGQ_SEARCH_MAXN][GGQ_QX_NT], sa[GGQ_QX_NT], sb[GGQ_QX_NT];
    iscale[0] = -fn / max;
    for (int t = 1; t < 19; t++) {
        const int is = t <= 9 ? t - 10 : t - 9;
        iscale[t] = -(0.1f * (float)is + fn) / max;
    }
    for (int t = 19; t < GGQ_QX_NT; t++) iscale[t] = iscale[0]; /* pads */
    for (int t = 0; t < GGQ_QX_NT; t++) sa[t] = sb[t] = 0.0f;
    for (int i = 0; i < n; i++) {
        const float wx = w[i] * x[i];
        for (int t = 0; t < GGQ_QX_NT; t++) {
            const float l = ggq_clampf(ggq_rint_f(iscale[t] * x[i]), lo, hi);
            lt[i][t] = l;
            sa[t] += wx * l;
            sb[t] += (w[i] * l) * l;
        }
    }
    int tb = 0;
    float scale = sb[0] != 0.0f ? sa[0] / sb[0] : 0.0f;
    float best = scale * sa[0];
    for (int t = 1; t < 19; t++) {
        if (sb[t] > 0.0f && sa[t] * sa[t] > best * sb[t]) {
            scale = sa[t] / sb[t];
            best = scale * sa[t];
            tb = t;
        }
    }
    for (int i = 0; i < n; i++) L[i] = (uint8_t)(int)(lt[i][tb] + fn);
    return scale;
}

/* make_qkx's error of one candidate: the sum of w*(scale*L + min - x)^2, or of w*|...| with
 * use_mad, in element order (the terms in a loop of their own: it vectorizes) */
GGQ_INLINE float qkx_error(int n, const float *restrict x, const float *restrict w,
                           const float *restrict L, float scale, float min, int use_mad) {
    float t[GGQ_SEARCH_MAXN];
    for (int i = 0; i < n; i++) {
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        t[i] = w[i] * diff;
    }
    float e = 0;
    for (int i = 0; i < n; i++) e += t[i];
    return e;
}

/* make_qkx2_quants / make_qkx3_quants with weights, for n <= 32 values: x ~ scale*L - the_min.
 * Returns scale; L (0..nmax, as floats) and *the_min (= -min >= 0) are written. use_mad:
 * errors sum w*|diff| rather than w*diff^2. guarded: the form Q4_1/Q5_1 use (ggtool's guards,
 * not llama.cpp's): min and max +0.0, a block narrower than GROUP_MAX_EPS is flat and a trial
 * whose span is narrower is skipped, the weight sums start from 0, and levels round as floats
 * (rint, then clamp) so that no value of any size reaches the integer trick. As in llama.cpp,
 * a better candidate's min also moves the range of the next tries. The element-wise work sits
 * in loops of its own (they vectorize); the sums stay sequential. */
GGQ_INLINE float ggq_make_qkx(int n, int nmax, const float *restrict x, const float *restrict w,
                              float *restrict L, float *restrict the_min, float rmin, float rdelta,
                              int nstep, int use_mad, int guarded) {
    float Lf[GGQ_SEARCH_MAXN], La[GGQ_SEARCH_MAXN];
    float wl[GGQ_SEARCH_MAXN], wl2[GGQ_SEARCH_MAXN], wlx[GGQ_SEARCH_MAXN];
    const float fnmax = (float)nmax;
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    if (guarded) { /* 0 + w[0]: sums that start from 0 */
        sum_w += 0.0f;
        sum_x += 0.0f;
    }
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (guarded) {
        min += 0.0f;
        max += 0.0f;
    }
    if (max == min || (guarded && (max <= min || max - min < GGQ_GROUP_MAX_EPS))) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = fnmax / (max - min);
    float scale = 1 / iscale;
    for (int i = 0; i < n; i++) {
        const float v = iscale * (x[i] - min);
        Lf[i] = guarded ? ggq_clampf(ggq_rint_f(v), 0.0f, fnmax)
                        : (float)ggq_nearest_int_clamped(v, 0, nmax);
    }
    float best = qkx_error(n, x, w, Lf, scale, min, use_mad);
    for (int is = 0; is <= nstep; is++) {
        const float span = max - min;
        if (guarded && !(span >= GGQ_GROUP_MAX_EPS)) continue;
        const float isc = (rmin + rdelta * (float)is + fnmax) / span;
        for (int i = 0; i < n; i++) {
            const float v = isc * (x[i] - min);
            const float l = guarded ? ggq_clampf(ggq_rint_f(v), 0.0f, fnmax)
                                    : (float)ggq_nearest_int_clamped(v, 0, nmax);
            La[i] = l;
            wl[i] = w[i] * l;
            wl2[i] = wl[i] * l;
            wlx[i] = wl[i] * x[i];
        }
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            sl += wl[i];
            sl2 += wl2[i];
            sxl += wlx[i];
        }
        const float D = sum_w * sl2 - sl * sl;
        if (D > 0) {
            float this_scale = (sum_w * sxl - sum_x * sl) / D;
            float this_min = (sl2 * sum_x - sl * sxl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sxl / sl2;
            }
            const float cur = qkx_error(n, x, w, La, this_scale, this_min, use_mad);
            if (cur < best) {
                memcpy(Lf, La, (size_t)n * sizeof(float));
                best = cur;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    memcpy(L, Lf, (size_t)n * sizeof(float));
    *the_min = -min;
    return scale;
}

/* make_qp_quants(n, nmax, x, L, w) on non-negative values (the sub-block scales or mins); L
 * holds what llama.cpp's uint8 array holds. */
GGQ_INLINE float ggq_make_qp(int n, int nmax, const float *restrict x, uint8_t *restrict L,
                             const float *restrict w) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max < GGQ_GROUP_MAX_EPS) {
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
            int l = ggq_nearest_int(isc * x[i]);
            l = l < nmax ? l : nmax;
            float diff = x[i] - sc * l;
            mse += w[i] * diff * diff;
        }
        if (mse < best) {
            best = mse;
            iscale = isc;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = ggq_nearest_int(iscale * x[i]);
        l = l < nmax ? l : nmax;
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
                int nl = ggq_nearest_int(x[i] * sl2 / slx);
                nl = nl < nmax ? nl : nmax;
                if (nl != L[i]) {
                    slx += w[i] * x[i] * nl;
                    sl2 += w[i] * nl * nl;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

#endif
