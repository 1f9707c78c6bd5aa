/* Q4_0, Q4_1, Q5_0, Q5_1: blocks of 32 with an fp16 scale (and fp16 min for _1).
 * Mirrors ggtool/quants/legacy.py byte for byte (see that module for the algorithm):
 * per block, candidates (llama.cpp's own scale/min first, then a scan with least-squares
 * refits) are evaluated on the stored fp16 values with quants re-rounded to the nearest
 * level, and the lowest error sum(w*(x - x_hat)^2) (w = imatrix or 1) is kept. */
#include <stdlib.h>
#include "ggq.h"

#define QK 32
#define GROUP_MAX_EPS 1e-15f

/* must match legacy.py SYM_STEPS / SYM_STEPS_FAST / ASYM_SCAN(_FAST) */
static const int sym_steps_fast[] = {-6, -3, 3, 6};
#define N_SYM_FAST 4
#define ASYM_RMIN (-1.0f)
#define ASYM_RDELTA 0.25f
#define ASYM_NSTEP 8

static const float ones32[QK] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

static inline float f16c(float v, uint16_t *bits) {
    if (v > 65504.0f) v = 65504.0f;
    if (v < -65504.0f) v = -65504.0f;
    *bits = ggq_fp32_to_fp16(v);
    return ggq_fp16_to_fp32(*bits);
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* value of the first element with the largest |x| (numpy argmax semantics) */
static inline float signed_absmax(const float *x) {
    float amax = fabsf(x[0]), max = x[0];
    for (int i = 1; i < QK; i++) {
        float a = fabsf(x[i]);
        if (a > amax) { amax = a; max = x[i]; }
    }
    return max;
}

/* sigma2 = mean x^2 of the row; w = imatrix * sqrt(sigma2 + x^2) (llama.cpp legacy weights) */
static void row_weights(const float *x, const float *im, int64_t n, float *w) {
    float s = 0.0f;
    for (int64_t j = 0; j < n; j++) s += x[j] * x[j];
    const float sigma2 = s / (float)n;
    for (int64_t j = 0; j < n; j++) w[j] = im[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* ------------------------------------------------------------------ symmetric (Q4_0, Q5_0) */

typedef struct { float d16; uint16_t bits; float err; int8_t l[QK]; } sym_cand;

static void sym_eval(const float *x, const float *w, float d, int nmax, sym_cand *c) {
    c->d16 = f16c(d, &c->bits);
    float err = 0.0f;
    if (c->d16 != 0.0f) {
        const float lo = (float)-nmax, hi = (float)(nmax - 1);
        for (int i = 0; i < QK; i++) {
            int l = ggq_nearest_int(clampf(x[i] / c->d16, lo, hi));
            c->l[i] = (int8_t)l;
            float diff = x[i] - c->d16 * (float)l;
            err += w[i] * (diff * diff);
        }
    } else {
        for (int i = 0; i < QK; i++) {
            c->l[i] = 0;
            float diff = x[i] - c->d16 * 0.0f;
            err += w[i] * (diff * diff);
        }
    }
    c->err = err;
}

static inline void keep_sym(sym_cand *best, const sym_cand *c) {
    if (c->err < best->err) *best = *c;
}

/* One block. wl = llama.cpp's weights (imatrix path) or NULL (reference path). */
static void quantize_sym_block(const float *x, const float *w, const float *wl, int nmax,
                               uint16_t *dbits, uint8_t *q) {
    const float fn = (float)nmax;
    const float mx = signed_absmax(x);
    sym_cand best, cand;

    /* scan trials; with an imatrix llama.cpp's make_qx_quants runs on the same trials */
    const float smx = fabsf(mx) < GROUP_MAX_EPS ? 1.0f : mx;
    float scan_d = 0.0f, scan_best = 0.0f;
    float llama_scale = 0.0f;
    if (wl) {
        /* make_qx_quants(32, nmax, x, L, 1, wl): first trial iscale = -nmax/max */
        const int zero = fabsf(mx) < GROUP_MAX_EPS;
        float lbest = 0.0f;
        for (int is = -10; is <= 9 && !zero; is++) {  /* -10 = make_qx's first trial */
            const float iscale = is == -10 ? -fn / mx : -(0.1f * (float)is + fn) / mx;
            if (is == 0) continue;
            float a = 0.0f, b = 0.0f, sa = 0.0f, sb = 0.0f;
            for (int i = 0; i < QK; i++) {
                float l = (float)clampi(ggq_nearest_int(iscale * x[i]), -nmax, nmax - 1);
                a += (wl[i] * x[i]) * l;
                b += (wl[i] * l) * l;
                sa += (w[i] * x[i]) * l;
                sb += (w[i] * l) * l;
            }
            if (is == -10) {
                llama_scale = b != 0.0f ? a / b : 0.0f;
                lbest = llama_scale * a;
                continue;
            }
            if (b > 0.0f && a * a > lbest * b) {
                llama_scale = a / b;
                lbest = llama_scale * a;
            }
            if (sb > 0.0f && sa * sa > scan_best * sb) {
                scan_d = sa / sb;
                scan_best = scan_d * sa;
            }
        }
        sym_eval(x, w, llama_scale, nmax, &best);
        sym_eval(x, w, mx / -fn, nmax, &cand);
        keep_sym(&best, &cand);
    } else {
        sym_eval(x, w, mx / -fn, nmax, &best);
        for (int k = 0; k < N_SYM_FAST; k++) {
            const float iscale = -(0.1f * (float)sym_steps_fast[k] + fn) / smx;
            float sa = 0.0f, sb = 0.0f;
            for (int i = 0; i < QK; i++) {
                float l = (float)clampi(ggq_nearest_int(iscale * x[i]), -nmax, nmax - 1);
                sa += (w[i] * x[i]) * l;
                sb += (w[i] * l) * l;
            }
            if (sb > 0.0f && sa * sa > scan_best * sb) {
                scan_d = sa / sb;
                scan_best = scan_d * sa;
            }
        }
    }
    sym_eval(x, w, scan_d, nmax, &cand);
    keep_sym(&best, &cand);

    /* least-squares refit on the best quants */
    float sa = 0.0f, sb = 0.0f;
    for (int i = 0; i < QK; i++) {
        float l = (float)best.l[i];
        sa += (w[i] * x[i]) * l;
        sb += (w[i] * l) * l;
    }
    sym_eval(x, w, sb > 0.0f ? sa / sb : 0.0f, nmax, &cand);
    keep_sym(&best, &cand);

    *dbits = best.bits;
    for (int i = 0; i < QK; i++) q[i] = (uint8_t)(best.l[i] + nmax);
}

/* ------------------------------------------------------------------ asymmetric (Q4_1, Q5_1) */

typedef struct { float d16, m16; uint16_t dbits, mbits; float err; uint8_t l[QK]; } asym_cand;

static void asym_eval(const float *x, const float *w, float d, float m, int nmax, asym_cand *c) {
    c->d16 = f16c(d, &c->dbits);
    c->m16 = f16c(m, &c->mbits);
    float err = 0.0f;
    const int ok = c->d16 != 0.0f;
    for (int i = 0; i < QK; i++) {
        int l = ok ? ggq_nearest_int(clampf((x[i] - c->m16) / c->d16, 0.0f, (float)nmax)) : 0;
        c->l[i] = (uint8_t)l;
        float diff = x[i] - (c->d16 * (float)l + c->m16);
        err += w[i] * (diff * diff);
    }
    c->err = err;
}

static inline void keep_asym(asym_cand *best, const asym_cand *c) {
    if (c->err < best->err) *best = *c;
}

/* weighted least squares x ~ d*l + m; returns 0 where singular */
static int asym_fit(const float *x, const float *w, const float *l, float sw, float sx,
                    float *d, float *m, float *gain) {
    float sl = 0.0f, sl2 = 0.0f, sxl = 0.0f;
    for (int i = 0; i < QK; i++) {
        float wli = w[i] * l[i];
        sl += wli;
        sl2 += wli * l[i];
        sxl += wli * x[i];
    }
    const float D = sw * sl2 - sl * sl;
    if (!(D > 0.0f)) return 0;
    *d = (sw * sxl - sx * sl) / D;
    *m = (sl2 * sx - sl * sxl) / D;
    *gain = *d * sxl + *m * sx;
    return 1;
}

/* llama.cpp make_qkx3_quants(32, nmax, x, w, ..., -0.9, 0.05, 36, false) -> scale, min */
static void make_qkx3(const float *x, const float *w, int nmax, float *scale_out, float *min_out) {
    const float fn = (float)nmax;
    float mn = x[0], mx = x[0];
    for (int i = 1; i < QK; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
    }
    if (mn > 0.0f) mn = 0.0f;
    mn += 0.0f;
    mx += 0.0f;
    float sum_w = 0.0f, sum_x = 0.0f;
    for (int i = 0; i < QK; i++) sum_w += w[i];
    for (int i = 0; i < QK; i++) sum_x += w[i] * x[i];
    if (mx <= mn || mx - mn < GROUP_MAX_EPS) {
        *scale_out = 0.0f;
        *min_out = mn;
        return;
    }
    const float rng = mx - mn;
    float iscale = fn / rng;
    float scale = 1.0f / iscale, min = mn;
    float best = 0.0f;
    for (int i = 0; i < QK; i++) {
        float l = (float)clampi(ggq_nearest_int(iscale * (x[i] - mn)), 0, nmax);
        float diff = (scale * l + mn) - x[i];
        best += w[i] * (diff * diff);
    }
    float lt[QK];
    for (int is = 0; is <= 36; is++) {
        iscale = ((-0.9f + 0.05f * (float)is) + fn) / rng;
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < QK; i++) {
            float l = (float)clampi(ggq_nearest_int(iscale * (x[i] - mn)), 0, nmax);
            lt[i] = l;
            float wli = w[i] * l;
            sum_l += wli;
            sum_l2 += wli * l;
            sum_xl += wli * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0.0f) {
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            float mad = 0.0f;
            for (int i = 0; i < QK; i++) {
                float diff = (this_scale * lt[i] + this_min) - x[i];
                mad += w[i] * (diff * diff);
            }
            if (mad < best) {
                best = mad;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *scale_out = scale;
    *min_out = min;
}

static void quantize_asym_block(const float *x, const float *w, const float *wl, int nmax,
                                uint16_t *dbits, uint16_t *mbits, uint8_t *q) {
    const float fn = (float)nmax;
    float mn = x[0], mx = x[0];
    for (int i = 1; i < QK; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
    }
    mn += 0.0f;
    mx += 0.0f;
    asym_cand best, cand;
    if (wl) {
        float s, m;
        make_qkx3(x, wl, nmax, &s, &m);
        asym_eval(x, w, s, m, nmax, &best);
        asym_eval(x, w, (mx - mn) / fn, mn, nmax, &cand);
        keep_asym(&best, &cand);
    } else {
        asym_eval(x, w, (mx - mn) / fn, mn, nmax, &best);
    }

    /* scan */
    float sw = 0.0f, sx = 0.0f;
    for (int i = 0; i < QK; i++) sw += w[i];
    for (int i = 0; i < QK; i++) sx += w[i] * x[i];
    const float rng = mx - mn >= GROUP_MAX_EPS ? mx - mn : 1.0f;
    float scan_d = (mx - mn) / fn, scan_m = mn, scan_best = -INFINITY;
    float lt[QK];
    for (int is = 0; is <= ASYM_NSTEP; is++) {
        const float iscale = ((ASYM_RMIN + ASYM_RDELTA * (float)is) + fn) / rng;
        for (int i = 0; i < QK; i++)
            lt[i] = (float)clampi(ggq_nearest_int(iscale * (x[i] - mn)), 0, nmax);
        float d, m, gain;
        if (asym_fit(x, w, lt, sw, sx, &d, &m, &gain) && gain > scan_best) {
            scan_best = gain;
            scan_d = d;
            scan_m = m;
        }
    }
    asym_eval(x, w, scan_d, scan_m, nmax, &cand);
    keep_asym(&best, &cand);

    /* least-squares refit on the best quants */
    for (int i = 0; i < QK; i++) lt[i] = (float)best.l[i];
    float d, m, gain;
    if (asym_fit(x, w, lt, sw, sx, &d, &m, &gain)) {
        asym_eval(x, w, d, m, nmax, &cand);
        keep_asym(&best, &cand);
    }

    *dbits = best.dbits;
    *mbits = best.mbits;
    memcpy(q, best.l, QK);
}

/* ------------------------------------------------------------------ packing and drivers */

static inline void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static void pack_nibbles(const uint8_t *q, uint8_t *qs) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

static void pack_qh(const uint8_t *q, uint8_t *qh) {
    uint32_t h = 0;
    for (int j = 0; j < QK; j++) h |= (uint32_t)((q[j] >> 4) & 1) << j;
    qh[0] = (uint8_t)h;
    qh[1] = (uint8_t)(h >> 8);
    qh[2] = (uint8_t)(h >> 16);
    qh[3] = (uint8_t)(h >> 24);
}

static int quantize_legacy(const float *x, uint8_t *y, int64_t nrows, int64_t n, const float *im,
                           int nmax, int asym, int five_bit) {
    if (nrows <= 0) return 0;
    const int64_t nb = n / QK;
    const int bsize = 2 + (asym ? 2 : 0) + (five_bit ? 4 : 0) + 16;
    float *wl = NULL;
    if (im) {
        wl = (float *)malloc((size_t)n * sizeof(float));
        if (!wl) return -1;
    }
    for (int64_t r = 0; r < nrows; r++) {
        const float *xr = x + r * n;
        if (im) row_weights(xr, im, n, wl);
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = xr + b * QK;
            const float *w = im ? im + b * QK : ones32;
            const float *wlb = im ? wl + b * QK : NULL;
            uint8_t *yb = y + (r * nb + b) * bsize;
            uint8_t q[QK];
            uint16_t dbits, mbits;
            if (asym) {
                quantize_asym_block(xb, w, wlb, nmax, &dbits, &mbits, q);
                put16(yb, dbits);
                put16(yb + 2, mbits);
                yb += 4;
            } else {
                quantize_sym_block(xb, w, wlb, nmax, &dbits, q);
                put16(yb, dbits);
                yb += 2;
            }
            if (five_bit) {
                pack_qh(q, yb);
                yb += 4;
            }
            pack_nibbles(q, yb);
        }
    }
    free(wl);
    return 0;
}

int ggq_quantize_q4_0(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 8, 0, 0);
}

int ggq_quantize_q4_1(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 15, 1, 0);
}

int ggq_quantize_q5_0(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 16, 0, 1);
}

int ggq_quantize_q5_1(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 31, 1, 1);
}
