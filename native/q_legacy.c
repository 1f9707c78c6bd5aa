/* Q4_0, Q4_1, Q5_0, Q5_1: blocks of 32 with an fp16 scale (and fp16 min for _1).
 * Mirrors ggtool/quants/legacy.py byte for byte (see that module for the algorithm):
 * per block, candidates (llama.cpp's own scale/min first, then a scan with least-squares
 * refits) are evaluated on the stored fp16 values with quants re-rounded to the nearest
 * level, and the lowest error sum(w*(x - x_hat)^2) (w = imatrix or 1) is kept.
 *
 * Sums: llama.cpp's routines (make_qx_quants, make_qkx3_quants, the row sigma2) and the
 * scans add sequentially in element order, the scans' trials side by side
 * ([element][trial]) so the compiler vectorizes across trials; candidate errors and the
 * symmetric refit add in 8 interleaved lanes (numpy: legacy._lane_sum). */
#include <stdlib.h>
#include "ggq.h"

/* Let GCC vectorize the clamp selects: FP exception flags are never inspected here, and
 * values are unaffected (IEEE results do not depend on trapping assumptions). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#define QK 32
#define GROUP_MAX_EPS 1e-15f

/* must match legacy.py SYM_STEPS_FAST / ASYM_SCAN */
static const int sym_steps_fast[] = {-6, -3, 3, 6};
#define N_SYM_FAST 4
#define ASYM_RMIN (-1.0f)
#define ASYM_RDELTA 0.25f
#define ASYM_NSTEP 7

static const float ones32[QK] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

static inline float f16c(float v, uint16_t *bits) {
    if (v > 65504.0f) v = 65504.0f;
    if (v < -65504.0f) v = -65504.0f;
    *bits = ggq_fp32_to_fp16(v);
    return ggq_fp16_to_fp32(*bits);
}

/* round half to even as a float (|v| <= 2^22), == np.rint == llama.cpp nearest_int */
static inline float rint_f(float v) { return (v + 12582912.0f) - 12582912.0f; }
static inline float clampf(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

/* Our sums run in 8 interleaved lanes a[k] += e[8j + k], combined pairwise at the end
 * (numpy: legacy._lane_sum); loops are written as j/k nests so they vectorize. */
static inline float lanes(const float *restrict a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* value of the first element with the largest |x| (numpy argmax semantics) */
static inline float signed_absmax(const float *restrict x) {
    float amax = fabsf(x[0]), max = x[0];
    for (int i = 1; i < QK; i++) {
        float a = fabsf(x[i]);
        if (a > amax) { amax = a; max = x[i]; }
    }
    return max;
}

/* sigma2 = mean x^2 of the row; w = imatrix * sqrt(sigma2 + x^2) (llama.cpp legacy weights) */
static void row_weights(const float *restrict x, const float *restrict im, int64_t n,
                        float *restrict w) {
    float s = 0.0f;
    for (int64_t j = 0; j < n; j++) s += x[j] * x[j];
    const float sigma2 = s / (float)n;
    for (int64_t j = 0; j < n; j++) w[j] = im[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* ------------------------------------------------------------------ symmetric (Q4_0, Q5_0) */

typedef struct { float d16; uint16_t bits; float err; float l[QK]; } sym_cand;

static void sym_eval(const float *restrict x, const float *restrict w, float d, int nmax,
                     sym_cand *restrict c) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float d16 = f16c(d, &c->bits);
    c->d16 = d16;
    if (d16 != 0.0f) {
        const float lo = (float)-nmax, hi = (float)(nmax - 1);
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                const float l = rint_f(clampf(x[j + k] / d16, lo, hi));
                const float diff = x[j + k] - d16 * l;
                c->l[j + k] = l;
                a[k] += w[j + k] * (diff * diff);
            }
        }
    } else {
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                c->l[j + k] = 0.0f;
                a[k] += w[j + k] * (x[j + k] * x[j + k]);
            }
        }
    }
    c->err = lanes(a);
}

/* evaluate scale d and keep it if strictly better; the same stored scale as the best
 * gives the same quants and error, so it is skipped (numpy evaluates it: same result) */
static inline void try_sym(const float *restrict x, const float *restrict w, float d, int nmax,
                           sym_cand *restrict best, sym_cand *restrict c) {
    uint16_t bits;
    (void)f16c(d, &bits);
    if (bits == best->bits) return;
    sym_eval(x, w, d, nmax, c);
    if (c->err < best->err) *best = *c;
}

/* trial levels clamp(rint(iscale*x)) and the lane sums of w*x*l, w*l*l */
/* Scan trials side by side ([element][trial]) so the compiler vectorizes across trials;
 * each trial's sums run sequentially over the elements. With llama.cpp's weights wl the
 * same pass also gives make_qx_quants' sums (trial 0 is its first, iscale = -nmax/max). */
#define NT 20
static void sym_trials_llama(const float *restrict x, const float *restrict w,
                             const float *restrict wl, const float *restrict iscale, float lo,
                             float hi, float *restrict sa, float *restrict sb,
                             float *restrict la, float *restrict lb) {
    for (int t = 0; t < NT; t++) sa[t] = sb[t] = la[t] = lb[t] = 0.0f;
    for (int i = 0; i < QK; i++) {
        const float wx = w[i] * x[i], wlx = wl[i] * x[i];
        for (int t = 0; t < NT; t++) {
            const float l = clampf(rint_f(iscale[t] * x[i]), lo, hi);
            sa[t] += wx * l;
            sb[t] += (w[i] * l) * l;
            la[t] += wlx * l;
            lb[t] += (wl[i] * l) * l;
        }
    }
}

static void sym_trials_fast(const float *restrict x, const float *restrict w,
                            const float *restrict iscale, float lo, float hi,
                            float *restrict sa, float *restrict sb) {
    for (int t = 0; t < N_SYM_FAST; t++) sa[t] = sb[t] = 0.0f;
    for (int i = 0; i < QK; i++) {
        const float wx = w[i] * x[i];
        for (int t = 0; t < N_SYM_FAST; t++) {
            const float l = clampf(rint_f(iscale[t] * x[i]), lo, hi);
            sa[t] += wx * l;
            sb[t] += (w[i] * l) * l;
        }
    }
}

/* One block. wl = llama.cpp's weights (imatrix path) or NULL (reference path). */
static void quantize_sym_block(const float *restrict x, const float *restrict w,
                               const float *restrict wl, int nmax, uint16_t *dbits,
                               uint8_t *restrict q) {
    const float fn = (float)nmax, lo = -fn, hi = fn - 1.0f;
    const float mx = signed_absmax(x);
    const float smx = fabsf(mx) < GROUP_MAX_EPS ? 1.0f : mx;  /* ~zero block: no trial used */
    float iscale[NT], sa[NT], sb[NT], la[NT], lb[NT];
    int t0, t1;  /* our scan: trials t0..t1-1 */
    if (wl) {
        iscale[0] = -fn / smx;
        for (int t = 1; t < 19; t++) {
            const int is = t <= 9 ? t - 10 : t - 9;  /* -9..-1, 1..9 */
            iscale[t] = -(0.1f * (float)is + fn) / smx;
        }
        t0 = 1, t1 = 19;
    } else {
        for (int t = 0; t < N_SYM_FAST; t++)
            iscale[t] = -(0.1f * (float)sym_steps_fast[t] + fn) / smx;
        t0 = 0, t1 = N_SYM_FAST;
    }
    if (wl) {
        for (int t = t1; t < NT; t++) iscale[t] = iscale[0];  /* pad */
        sym_trials_llama(x, w, wl, iscale, lo, hi, sa, sb, la, lb);
    } else {
        sym_trials_fast(x, w, iscale, lo, hi, sa, sb);
    }

    float scan_d = 0.0f, scan_best = 0.0f;
    for (int t = t0; t < t1; t++) {
        if (sb[t] > 0.0f && sa[t] * sa[t] > scan_best * sb[t]) {
            scan_d = sa[t] / sb[t];
            scan_best = scan_d * sa[t];
        }
    }
    sym_cand best, cand;
    if (wl) {
        /* llama.cpp make_qx_quants(32, nmax, x, L, 1, wl) */
        float llama_scale = 0.0f;
        if (fabsf(mx) >= GROUP_MAX_EPS) {
            llama_scale = lb[0] != 0.0f ? la[0] / lb[0] : 0.0f;
            float lbest = llama_scale * la[0];
            for (int t = 1; t < 19; t++) {
                if (lb[t] > 0.0f && la[t] * la[t] > lbest * lb[t]) {
                    llama_scale = la[t] / lb[t];
                    lbest = llama_scale * la[t];
                }
            }
        }
        sym_eval(x, w, llama_scale, nmax, &best);
        try_sym(x, w, mx / -fn, nmax, &best, &cand);
    } else {
        sym_eval(x, w, mx / -fn, nmax, &best);
    }
    try_sym(x, w, scan_d, nmax, &best, &cand);

    /* least-squares refit on the best quants */
    {
        float a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                a[k] += (w[j + k] * x[j + k]) * best.l[j + k];
                b[k] += (w[j + k] * best.l[j + k]) * best.l[j + k];
            }
        }
        const float slx = lanes(a), sl2 = lanes(b);
        try_sym(x, w, sl2 > 0.0f ? slx / sl2 : 0.0f, nmax, &best, &cand);
    }

    *dbits = best.bits;
    for (int i = 0; i < QK; i++) q[i] = (uint8_t)((int)best.l[i] + nmax);
}

/* ------------------------------------------------------------------ asymmetric (Q4_1, Q5_1) */

typedef struct { float d16, m16; uint16_t dbits, mbits; float err; float l[QK]; } asym_cand;

static void asym_eval(const float *restrict x, const float *restrict w, float d, float m,
                      int nmax, asym_cand *restrict c) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float d16 = f16c(d, &c->dbits), m16 = f16c(m, &c->mbits);
    c->d16 = d16;
    c->m16 = m16;
    if (d16 != 0.0f) {
        const float hi = (float)nmax;
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                const float l = rint_f(clampf((x[j + k] - m16) / d16, 0.0f, hi));
                const float diff = x[j + k] - (d16 * l + m16);
                c->l[j + k] = l;
                a[k] += w[j + k] * (diff * diff);
            }
        }
    } else {
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                const float diff = x[j + k] - (d16 * 0.0f + m16);
                c->l[j + k] = 0.0f;
                a[k] += w[j + k] * (diff * diff);
            }
        }
    }
    c->err = lanes(a);
}

static inline void try_asym(const float *restrict x, const float *restrict w, float d, float m,
                            int nmax, asym_cand *restrict best, asym_cand *restrict c) {
    uint16_t db, mb;
    (void)f16c(d, &db);
    (void)f16c(m, &mb);
    if (db == best->dbits && mb == best->mbits) return;
    asym_eval(x, w, d, m, nmax, c);
    if (c->err < best->err) *best = *c;
}

/* weighted least squares x ~ d*l + m from the sums sl = sum w*l, sl2 = sum w*l*l,
 * sxl = sum w*l*x (sequential) and sw, sx; returns 0 where singular */
static inline int asym_solve(float sl, float sl2, float sxl, float sw, float sx,
                             float *restrict d, float *restrict m, float *restrict gain) {
    const float D = sw * sl2 - sl * sl;
    if (!(D > 0.0f)) return 0;
    *d = (sw * sxl - sx * sl) / D;
    *m = (sl2 * sx - sl * sxl) / D;
    *gain = *d * sxl + *m * sx;
    return 1;
}

#define NTA 8 /* ASYM_NSTEP + 1 trials (a multiple of 4; more would be pads) */

/* llama.cpp make_qkx3_quants(32, nmax, x, w, ..., -0.9, 0.05, 36, false) -> scale, min
 * (sequential sums, as llama.cpp) */
static void make_qkx3(const float *restrict x, const float *restrict w, int nmax,
                      float *restrict scale_out, float *restrict min_out) {
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
    float l[QK];
    for (int i = 0; i < QK; i++) l[i] = clampf(rint_f(iscale * (x[i] - mn)), 0.0f, fn);
    float best = 0.0f;
    for (int i = 0; i < QK; i++) {
        const float diff = (scale * l[i] + mn) - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= 36; is++) {
        /* llama.cpp reuses `min`: each trial is taken from the best min so far */
        const float span = mx - min;
        if (!(span >= GROUP_MAX_EPS)) continue;  /* ggtool: a degenerate span skips it */
        iscale = ((-0.9f + 0.05f * (float)is) + fn) / span;
        for (int i = 0; i < QK; i++) l[i] = clampf(rint_f(iscale * (x[i] - min)), 0.0f, fn);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < QK; i++) {
            const float wli = w[i] * l[i];
            sum_l += wli;
            sum_l2 += wli * l[i];
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
                const float diff = (this_scale * l[i] + this_min) - x[i];
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

static void quantize_asym_block(const float *restrict x, const float *restrict w,
                                const float *restrict wl, int nmax, uint16_t *dbits,
                                uint16_t *mbits, uint8_t *restrict q) {
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
        try_asym(x, w, (mx - mn) / fn, mn, nmax, &best, &cand);
    } else {
        asym_eval(x, w, (mx - mn) / fn, mn, nmax, &best);
    }

    /* scan, trials side by side ([element][trial]); sums sequential per trial */
    float sw = 0.0f, sx = 0.0f;
    for (int i = 0; i < QK; i++) sw += w[i];
    for (int i = 0; i < QK; i++) sx += w[i] * x[i];
    const float rng = mx - mn >= GROUP_MAX_EPS ? mx - mn : 1.0f;
    float iscale[NTA], sl[NTA], sl2[NTA], sxl[NTA];
    for (int t = 0; t < NTA; t++) {
        const int is = t <= ASYM_NSTEP ? t : 0;  /* pads repeat trial 0 */
        iscale[t] = ((ASYM_RMIN + ASYM_RDELTA * (float)is) + fn) / rng;
        sl[t] = sl2[t] = sxl[t] = 0.0f;
    }
    for (int i = 0; i < QK; i++) {
        const float xm = x[i] - mn;
        for (int t = 0; t < NTA; t++) {
            const float l = clampf(rint_f(iscale[t] * xm), 0.0f, fn);
            const float wli = w[i] * l;
            sl[t] += wli;
            sl2[t] += wli * l;
            sxl[t] += wli * x[i];
        }
    }
    float scan_d = (mx - mn) / fn, scan_m = mn, scan_best = -INFINITY;
    for (int t = 0; t <= ASYM_NSTEP; t++) {
        float d, m, gain;
        if (asym_solve(sl[t], sl2[t], sxl[t], sw, sx, &d, &m, &gain) && gain > scan_best) {
            scan_best = gain;
            scan_d = d;
            scan_m = m;
        }
    }
    try_asym(x, w, scan_d, scan_m, nmax, &best, &cand);

    /* least-squares refit on the best quants */
    {
        float a = 0.0f, b = 0.0f, c = 0.0f, d, m, gain;
        for (int i = 0; i < QK; i++) {
            const float wli = w[i] * best.l[i];
            a += wli;
            b += wli * best.l[i];
            c += wli * x[i];
        }
        if (asym_solve(a, b, c, sw, sx, &d, &m, &gain)) try_asym(x, w, d, m, nmax, &best, &cand);
    }

    *dbits = best.dbits;
    *mbits = best.mbits;
    for (int i = 0; i < QK; i++) q[i] = (uint8_t)(int)best.l[i];
}

/* ------------------------------------------------------------------ packing and drivers */

static inline void put16(uint8_t *restrict p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static void pack_nibbles(const uint8_t *restrict q, uint8_t *restrict qs) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

static void pack_qh(const uint8_t *restrict q, uint8_t *restrict qh) {
    uint32_t h = 0;
    for (int j = 0; j < QK; j++) h |= (uint32_t)((q[j] >> 4) & 1) << j;
    qh[0] = (uint8_t)h;
    qh[1] = (uint8_t)(h >> 8);
    qh[2] = (uint8_t)(h >> 16);
    qh[3] = (uint8_t)(h >> 24);
}

static int quantize_legacy(const float *restrict x, uint8_t *restrict y, int64_t nrows,
                           int64_t n, const float *restrict im, int nmax, int asym,
                           int five_bit) {
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

int ggq_quantize_q4_0(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row,
                      const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 8, 0, 0);
}

int ggq_quantize_q4_1(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row,
                      const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 15, 1, 0);
}

int ggq_quantize_q5_0(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row,
                      const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 16, 0, 1);
}

int ggq_quantize_q5_1(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row,
                      const float *imatrix) {
    return quantize_legacy(x, y, nrows, n_per_row, imatrix, 31, 1, 1);
}
