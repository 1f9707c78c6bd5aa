/* Q4_0, Q4_1, Q5_0, Q5_1: blocks of 32 with an fp16 scale (and fp16 min for _1).
 * Mirrors ggtool/quants/q4_0_q4_1_q5_0_q5_1.py byte for byte (see that module for the algorithm):
 * per block, candidates (llama.cpp's own scale/min first, then a scan with least-squares
 * refits) are evaluated on the stored fp16 values with quants re-rounded to the nearest
 * level, and the lowest error sum(w*(x - x_hat)^2) (w = imatrix or 1) is kept.
 *
 * Sums: llama.cpp's routines (make_qx_quants, make_qkx3_quants, the row sigma2) and the
 * scans add sequentially in element order, the scans' trials side by side
 * ([element][trial]) so the compiler vectorizes across trials; candidate errors and the
 * symmetric refit add in 8 interleaved lanes (numpy: primitives.lane_sum(.., 8)).
 *
 * With an imatrix one block runs at a time (quantize_sym_block / quantize_asym_block);
 * without one, 8 blocks run side by side, one per vector lane (quantize_plain). */
#include <stdlib.h>
#include "ggq.h"
#include "ggq_search.h"

/* Let GCC vectorize the clamp selects: FP exception flags are never inspected here, and
 * values are unaffected (IEEE results do not depend on trapping assumptions). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#define QK 32

static const float ones32[QK] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* must match q4_0_q4_1_q5_0_q5_1.py SYM_STEPS_PLAIN / ASYM_OFFSETS_PLAIN (no imatrix) */
static const float sym_steps_plain[] = {-8, -4, 4, 8};
#define N_SYM_PLAIN 4
static const float asym_offsets_plain[] = {-1.0f, -0.25f, 0.25f, 0.75f};
#define N_ASYM_PLAIN 4
/* must match q4_0_q4_1_q5_0_q5_1.py ASYM_SCAN (imatrix path) */
#define ASYM_RMIN (-1.0f)
#define ASYM_RDELTA 0.25f
#define ASYM_NSTEP 7


/* Our sums run in 8 interleaved lanes a[k] += e[8j + k], combined pairwise at the end
 * (ggq_lanes8; numpy: primitives.lane_sum(.., 8)); loops are written as j/k nests so they
 * vectorize. */

/* sigma2 = mean x^2 of the row; w = imatrix * sqrt(sigma2 + x^2) (llama.cpp legacy weights) */
GGQ_INLINE void row_weights(const float *restrict x, const float *restrict im, int64_t n,
                            float *restrict w) {
    float s = 0.0f;
    for (int64_t j = 0; j < n; j++) s += x[j] * x[j];
    const float sigma2 = s / (float)n;
    for (int64_t j = 0; j < n; j++) w[j] = im[j] * sqrtf(sigma2 + x[j] * x[j]);
}

/* ------------------------------------------------------------------ symmetric (Q4_0, Q5_0) */

typedef struct { float d16; uint16_t bits; float err; float l[QK]; } sym_cand;

GGQ_INLINE void sym_eval(const float *restrict x, const float *restrict w, float d, int nmax,
                         sym_cand *restrict c) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float d16 = ggq_f16_round_clamped(d, &c->bits);
    c->d16 = d16;
    if (d16 != 0.0f) {
        const float lo = (float)-nmax, hi = (float)(nmax - 1);
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                const float l = ggq_rint_f(ggq_clampf(x[j + k] / d16, lo, hi));
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
    c->err = ggq_lanes8(a);
}

/* evaluate scale d and keep it if strictly better; the same stored scale as the best
 * gives the same quants and error, so it is skipped (numpy evaluates it: same result) */
GGQ_INLINE void try_sym(const float *restrict x, const float *restrict w, float d, int nmax,
                        sym_cand *restrict best, sym_cand *restrict c) {
    uint16_t bits;
    (void)ggq_f16_round_clamped(d, &bits);
    if (bits == best->bits) return;
    sym_eval(x, w, d, nmax, c);
    if (c->err < best->err) *best = *c;
}

/* trial levels clamp(rint(iscale*x)) and the lane sums of w*x*l, w*l*l */
/* Scan trials side by side ([element][trial]) so the compiler vectorizes across trials;
 * each trial's sums run sequentially over the elements. With llama.cpp's weights wl the
 * same pass also gives make_qx_quants' sums (trial 0 is its first, iscale = -nmax/max). */
#define NT 24 /* make_qx_quants' 19 trials + our pads: a multiple of 8, no remainder loop */
GGQ_INLINE void sym_trials_llama(const float *restrict x, const float *restrict w,
                                 const float *restrict wl, const float *restrict iscale, float lo,
                                 float hi, float *restrict sa, float *restrict sb,
                                 float *restrict la, float *restrict lb) {
    for (int t = 0; t < NT; t++) sa[t] = sb[t] = la[t] = lb[t] = 0.0f;
    for (int i = 0; i < QK; i++) {
        const float wx = w[i] * x[i], wlx = wl[i] * x[i];
        for (int t = 0; t < NT; t++) {
            const float l = ggq_clampf(ggq_rint_f(iscale[t] * x[i]), lo, hi);
            sa[t] += wx * l;
            sb[t] += (w[i] * l) * l;
            la[t] += wlx * l;
            lb[t] += (wl[i] * l) * l;
        }
    }
}

GGQ_INLINE void sym_trials_plain(const float *restrict x, const float *restrict iscale, float lo,
                                 float hi, float *restrict sa, float *restrict sb) {
    for (int t = 0; t < N_SYM_PLAIN; t++) sa[t] = sb[t] = 0.0f;
    for (int i = 0; i < QK; i++) {
        for (int t = 0; t < N_SYM_PLAIN; t++) {
            const float l = ggq_clampf(ggq_rint_f(iscale[t] * x[i]), lo, hi);
            sa[t] += x[i] * l;
            sb[t] += l * l;
        }
    }
}

/* One block. w = imatrix and wl = llama.cpp's weights, or w = 1 and wl = NULL (no imatrix,
 * where the AVX2 lane kernel below is not used). */
GGQ_INLINE void quantize_sym_block(const float *restrict x, const float *restrict w,
                                   const float *restrict wl, int nmax, uint16_t *dbits,
                                   uint8_t *restrict q) {
    const float fn = (float)nmax, lo = -fn, hi = fn - 1.0f;
    const float mx = ggq_signed_absmax(x, QK, NULL);
    const float smx = fabsf(mx) < GGQ_GROUP_MAX_EPS ? 1.0f : mx;  /* ~zero block: no trial used */
    float iscale[NT], sa[NT], sb[NT], la[NT], lb[NT];
    int t0, t1;  /* our scan: trials t0..t1-1 */
    if (wl) {
        iscale[0] = -fn / smx;
        for (int t = 1; t < 19; t++) {
            const int is = t <= 9 ? t - 10 : t - 9;  /* -9..-1, 1..9 */
            iscale[t] = -(0.1f * (float)is + fn) / smx;
        }
        for (int t = 19; t < NT; t++) iscale[t] = iscale[0];  /* pad */
        sym_trials_llama(x, w, wl, iscale, lo, hi, sa, sb, la, lb);
        t0 = 1, t1 = 19;
    } else {
        for (int t = 0; t < N_SYM_PLAIN; t++) iscale[t] = -(0.1f * sym_steps_plain[t] + fn) / smx;
        sym_trials_plain(x, iscale, lo, hi, sa, sb);
        t0 = 0, t1 = N_SYM_PLAIN;
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
        if (fabsf(mx) >= GGQ_GROUP_MAX_EPS) {
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

    /* least-squares refit on the best quants (imatrix path only) */
    if (wl) {
        float a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                a[k] += (w[j + k] * x[j + k]) * best.l[j + k];
                b[k] += (w[j + k] * best.l[j + k]) * best.l[j + k];
            }
        }
        const float slx = ggq_lanes8(a), sl2 = ggq_lanes8(b);
        try_sym(x, w, sl2 > 0.0f ? slx / sl2 : 0.0f, nmax, &best, &cand);
    }

    *dbits = best.bits;
    for (int i = 0; i < QK; i++) q[i] = (uint8_t)((int)best.l[i] + nmax);
}

/* ------------------------------------------------------------------ asymmetric (Q4_1, Q5_1) */

typedef struct { float d16, m16; uint16_t dbits, mbits; float err; float l[QK]; } asym_cand;

GGQ_INLINE void asym_eval(const float *restrict x, const float *restrict w, float d, float m,
                          int nmax, asym_cand *restrict c) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const float d16 = ggq_f16_round_clamped(d, &c->dbits), m16 = ggq_f16_round_clamped(m, &c->mbits);
    c->d16 = d16;
    c->m16 = m16;
    if (d16 != 0.0f) {
        const float hi = (float)nmax;
        for (int j = 0; j < QK; j += 8) {
            for (int k = 0; k < 8; k++) {
                const float l = ggq_rint_f(ggq_clampf((x[j + k] - m16) / d16, 0.0f, hi));
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
    c->err = ggq_lanes8(a);
}

GGQ_INLINE void try_asym(const float *restrict x, const float *restrict w, float d, float m,
                         int nmax, asym_cand *restrict best, asym_cand *restrict c) {
    uint16_t db, mb;
    (void)ggq_f16_round_clamped(d, &db);
    (void)ggq_f16_round_clamped(m, &mb);
    if (db == best->dbits && mb == best->mbits) return;
    asym_eval(x, w, d, m, nmax, c);
    if (c->err < best->err) *best = *c;
}

/* weighted least squares x ~ d*l + m from the sums sl = sum w*l, sl2 = sum w*l*l,
 * sxl = sum w*l*x (sequential) and sw, sx; returns 0 where singular */
GGQ_INLINE int asym_solve(float sl, float sl2, float sxl, float sw, float sx,
                          float *restrict d, float *restrict m, float *restrict gain) {
    const float D = sw * sl2 - sl * sl;
    if (!(D > 0.0f)) return 0;
    *d = (sw * sxl - sx * sl) / D;
    *m = (sl2 * sx - sl * sxl) / D;
    *gain = *d * sxl + *m * sx;
    return 1;
}

#define NTA 8 /* ASYM_NSTEP + 1 trials (a multiple of 4; more would be pads) */

GGQ_INLINE void quantize_asym_block(const float *restrict x, const float *restrict w,
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
        /* llama.cpp make_qkx3_quants(32, nmax, x, wl, ..., -0.9, 0.05, 36), guarded form */
        float L[QK], the_min;
        const float s = ggq_make_qkx(QK, nmax, x, wl, L, &the_min, -0.9f, 0.05f, 36, 0, 1);
        asym_eval(x, w, s, -the_min, nmax, &best);
        try_asym(x, w, (mx - mn) / fn, mn, nmax, &best, &cand);
    } else {
        asym_eval(x, w, (mx - mn) / fn, mn, nmax, &best);
    }

    /* scan, trials side by side ([element][trial]); sums sequential per trial */
    float sw = 0.0f, sx = 0.0f;
    for (int i = 0; i < QK; i++) sw += w[i];
    for (int i = 0; i < QK; i++) sx += w[i] * x[i];
    const float rng = mx - mn >= GGQ_GROUP_MAX_EPS ? mx - mn : 1.0f;
    float iscale[NTA], sl[NTA], sl2[NTA], sxl[NTA];
    const int ntrials = wl ? ASYM_NSTEP + 1 : N_ASYM_PLAIN;
    for (int t = 0; t < NTA; t++) {
        const int is = t < ntrials ? t : 0;  /* pads repeat trial 0 */
        iscale[t] = wl ? ((ASYM_RMIN + ASYM_RDELTA * (float)is) + fn) / rng
                       : (asym_offsets_plain[is] + fn) / rng;
        sl[t] = sl2[t] = sxl[t] = 0.0f;
    }
    for (int i = 0; i < QK; i++) {
        const float xm = x[i] - mn;
        for (int t = 0; t < NTA; t++) {
            const float l = ggq_clampf(ggq_rint_f(iscale[t] * xm), 0.0f, fn);
            const float wli = w[i] * l;
            sl[t] += wli;
            sl2[t] += wli * l;
            sxl[t] += wli * x[i];
        }
    }
    float scan_d = (mx - mn) / fn, scan_m = mn, scan_best = -INFINITY;
    for (int t = 0; t < ntrials; t++) {
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

GGQ_INLINE void pack_nibbles(const uint8_t *restrict q, uint8_t *restrict qs) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

GGQ_INLINE void pack_qh(const uint8_t *restrict q, uint8_t *restrict qh) {
    uint32_t h = 0;
    for (int j = 0; j < QK; j++) h |= (uint32_t)((q[j] >> 4) & 1) << j;
    ggq_put32(qh, h);
}

#if defined(GGQ_DISPATCH) && defined(__GNUC__) && !defined(__clang__)
#define LG_LANES 1 /* the lane kernel runs in the AVX2 build of the row loop (isa); the baseline
                    * runs the scalar code (8-lane vectors split into SSE halves are slower) */
#define LG_HOT __attribute__((target(GGQ_ISA)))
#define LG_INLINE GGQ_INLINE
#pragma GCC diagnostic ignored "-Wpsabi" /* 32-byte vectors only pass between inlined helpers */

/* Without an imatrix (w = 1) the candidates run NB = 8 blocks at a time, one block per
 * vector lane (x transposed to X[element][block]): no branches, no horizontal sums. The
 * arithmetic per block is exactly the scalar code's with w[i] = 1 (1*v == v), sums in the
 * same orders: sequential for the scans and the asymmetric refit, 8 lanes (element 8j+k into
 * lane k, primitives.lane_sum(.., 8)) for the candidate errors. GNU C vector extension (GCC only);
 * min/max are written per element so the compiler emits vminps/vmaxps. */

#define NB 8
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));

LG_INLINE v8f vset(float a) { return (v8f){a, a, a, a, a, a, a, a}; }
LG_INLINE v8f vsel(v8i m, v8f a, v8f b) {
    v8f r;
    for (int k = 0; k < 8; k++) r[k] = m[k] ? a[k] : b[k];
    return r;
}
LG_INLINE v8u usel(v8i m, v8u a, v8u b) { return (v8u)((m & (v8i)a) | (~m & (v8i)b)); }
LG_INLINE v8f vabs(v8f v) { return (v8f)((v8u)v & 0x7fffffffu); }
/* ggq_clampf(v, lo, hi) per lane (written per element: the compiler emits max/min) */
LG_INLINE v8f vclamp(v8f v, v8f lo, v8f hi) {
    v8f r;
    for (int k = 0; k < 8; k++) r[k] = ggq_clampf(v[k], lo[k], hi[k]);
    return r;
}
LG_INLINE v8f vmin(v8f v, v8f hi) {
    v8f r;
    for (int k = 0; k < 8; k++) r[k] = v[k] < hi[k] ? v[k] : hi[k];
    return r;
}
LG_INLINE v8f vrint(v8f v) {
    const v8f magic = vset(GGQ_RINT_MAGIC);
    return (v + magic) - magic;
}
LG_INLINE v8f vlanes(const v8f *a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* ggq_f16_round_clamped() per lane: clamp to +-65504, round to the nearest even half; NaN stays NaN */
LG_INLINE v8f vf16(v8f v, v8u *bits) {
    const v8f big = vset(65504.0f);
    v = vsel(v > big, big, v);
    v = vsel(v < -big, -big, v);
    const v8u x = (v8u)v, sign = (x >> 16) & 0x8000u, sign32 = x & 0x80000000u;
    const v8u absx = x & 0x7fffffffu;
    v8u q = (absx - 0x38000000u) >> 13;  /* normal half */
    const v8u rem = absx & 0x1fffu;
    q -= (v8u)((rem > 0x1000u) | ((rem == 0x1000u) & ((q & 1u) != 0u)));
    const v8f sub = vrint(vabs(v) * 16777216.0f);  /* subnormal half: units of 2^-24 */
    const v8i norm = absx >= 0x38800000u, nan = v != v;
    v8u h = usel(norm, q, (v8u)__builtin_convertvector(sub, v8i));
    h = usel(nan, (v8u){0x7e00u, 0x7e00u, 0x7e00u, 0x7e00u, 0x7e00u, 0x7e00u, 0x7e00u, 0x7e00u}, h);
    *bits = h | sign;
    const v8f vn = (v8f)(((q << 13) + 0x38000000u) | sign32);
    const v8f vs = (v8f)((v8u)(sub * 5.9604644775390625e-08f) | sign32);
    return vsel(nan, v, vsel(norm, vn, vs));
}

typedef struct { v8f err; v8u dbits, mbits; v8f L[QK]; } lg_best;

/* symmetric candidate d per lane: stored fp16, nearest levels; kept where strictly better
 * (first: the initial best) */
LG_INLINE void vsym_try(const v8f *restrict X, v8f d, float fn, lg_best *restrict b, int first) {
    v8u bits;
    const v8f d16 = vf16(d, &bits), zero = vset(0.0f);
    const v8i ok = d16 != zero;
    const v8f dd = vsel(ok, d16, vset(INFINITY)), lo = vset(-fn), hi = vset(fn - 1.0f);
    v8f e[8] = {zero, zero, zero, zero, zero, zero, zero, zero}, Lc[QK];
    v8f *restrict L = first ? b->L : Lc;
    for (int i = 0; i < QK; i++) {
        const v8f v = vrint(vclamp(X[i] / dd, lo, hi));  /* d16 == 0: x/inf -> +0 */
        const v8f diff = X[i] - d16 * v;
        L[i] = v;
        e[i & 7] += diff * diff;
    }
    const v8f err = vlanes(e);
    if (first) {
        b->err = err;
        b->dbits = bits;
        return;
    }
    const v8i take = err < b->err;
    b->err = vsel(take, err, b->err);
    b->dbits = usel(take, bits, b->dbits);
    for (int i = 0; i < QK; i++) b->L[i] = vsel(take, L[i], b->L[i]);
}

LG_INLINE void vsym_group(const v8f *restrict X, int nmax, lg_best *restrict b) {
    const float fn = (float)nmax;
    const v8f zero = vset(0.0f), lo = vset(-fn), hi = vset(fn - 1.0f);
    v8f amax = vabs(X[0]), mx = X[0];
    for (int i = 1; i < QK; i++) {
        const v8f a = vabs(X[i]);
        const v8i gt = a > amax;
        amax = vsel(gt, a, amax);
        mx = vsel(gt, X[i], mx);
    }
    const v8f smx = vsel(vabs(mx) < vset(GGQ_GROUP_MAX_EPS), vset(1.0f), mx);
    v8f scan_d = zero, scan_best = zero;
    for (int t = 0; t < N_SYM_PLAIN; t += 2) {  /* two trials per pass: 4 sum chains */
        const v8f is0 = vset(-(0.1f * sym_steps_plain[t] + fn)) / smx;
        const v8f is1 = vset(-(0.1f * sym_steps_plain[t + 1] + fn)) / smx;
        v8f sa[2] = {zero, zero}, sb[2] = {zero, zero};
        for (int i = 0; i < QK; i++) {
            const v8f l0 = vclamp(vrint(is0 * X[i]), lo, hi);
            const v8f l1 = vclamp(vrint(is1 * X[i]), lo, hi);
            sa[0] += X[i] * l0;
            sb[0] += l0 * l0;
            sa[1] += X[i] * l1;
            sb[1] += l1 * l1;
        }
        for (int u = 0; u < 2; u++) {
            const v8i better = (sb[u] > zero) & (sa[u] * sa[u] > scan_best * sb[u]);
            const v8f d = sa[u] / vsel(better, sb[u], vset(1.0f));
            scan_d = vsel(better, d, scan_d);
            scan_best = vsel(better, d * sa[u], scan_best);
        }
    }
    vsym_try(X, mx / vset(-fn), fn, b, 1);
    vsym_try(X, scan_d, fn, b, 0);
}

/* asymmetric candidate (d, m) per lane; ok: lanes where it exists */
/* sums (optional): the refit sums of the kept levels, sum l, l*l, l*x (sequential) */
LG_INLINE void vasym_try(const v8f *restrict X, v8f d, v8f m, float fn, v8i ok_in,
                         lg_best *restrict b, int first, v8f *restrict sums) {
    v8u db, mb;
    const v8f d16 = vf16(d, &db), m16 = vf16(m, &mb), zero = vset(0.0f);
    const v8i ok = d16 != zero;
    const v8f dd = vsel(ok, d16, vset(INFINITY)), hi = vset(fn);
    v8f e[8] = {zero, zero, zero, zero, zero, zero, zero, zero}, Lc[QK];
    v8f *restrict L = first ? b->L : Lc;
    v8f s0 = zero, s1 = zero, s2 = zero;
    for (int i = 0; i < QK; i++) {
        const v8f v = vrint(vclamp((X[i] - m16) / dd, zero, hi));  /* d16 == 0: +0 */
        const v8f diff = X[i] - (d16 * v + m16);
        L[i] = v;
        e[i & 7] += diff * diff;
        if (sums) {
            s0 += v;
            s1 += v * v;
            s2 += v * X[i];
        }
    }
    const v8f err = vlanes(e);
    if (first) {
        b->err = err;
        b->dbits = db;
        b->mbits = mb;
        if (sums) sums[0] = s0, sums[1] = s1, sums[2] = s2;
        return;
    }
    const v8i take = ok_in & (err < b->err);
    if (sums) {
        sums[0] = vsel(take, s0, sums[0]);
        sums[1] = vsel(take, s1, sums[1]);
        sums[2] = vsel(take, s2, sums[2]);
    }
    b->err = vsel(take, err, b->err);
    b->dbits = usel(take, db, b->dbits);
    b->mbits = usel(take, mb, b->mbits);
    for (int i = 0; i < QK; i++) b->L[i] = vsel(take, L[i], b->L[i]);
}

/* asym_solve per lane */
LG_INLINE v8i vasym_solve(v8f sl, v8f sl2, v8f sxl, v8f sw, v8f sx, v8f *d, v8f *m, v8f *gain) {
    const v8f D = sw * sl2 - sl * sl;
    const v8i ok = D > vset(0.0f);
    const v8f Ds = vsel(ok, D, vset(1.0f));
    *d = (sw * sxl - sx * sl) / Ds;
    *m = (sl2 * sx - sl * sxl) / Ds;
    *gain = *d * sxl + *m * sx;
    return ok;
}

LG_INLINE void vasym_group(const v8f *restrict X, int nmax, lg_best *restrict b) {
    const float fn = (float)nmax;
    const v8f zero = vset(0.0f), top = vset(fn), all = (v8f)(v8i){-1, -1, -1, -1, -1, -1, -1, -1};
    v8f mn = X[0], mx = X[0], sx = zero;
    for (int i = 1; i < QK; i++) {
        mn = vsel(X[i] < mn, X[i], mn);
        mx = vsel(X[i] > mx, X[i], mx);
    }
    for (int i = 0; i < QK; i++) sx += X[i];
    mn += zero;
    mx += zero;
    const v8i yes = (v8i)all;
    v8f sums[3];
    vasym_try(X, (mx - mn) / top, mn, fn, yes, b, 1, sums);

    const v8f sw = vset((float)QK), span = mx - mn;
    const v8f rng = vsel(span >= vset(GGQ_GROUP_MAX_EPS), span, vset(1.0f));
    v8f xm[QK];
    for (int i = 0; i < QK; i++) xm[i] = X[i] - mn;
    v8f scan_d = (mx - mn) / top, scan_m = mn, scan_best = vset(-INFINITY);
    for (int t = 0; t < N_ASYM_PLAIN; t += 2) {  /* two trials per pass: 6 sum chains */
        const v8f is0 = vset(asym_offsets_plain[t] + fn) / rng;
        const v8f is1 = vset(asym_offsets_plain[t + 1] + fn) / rng;
        v8f a0 = zero, b0 = zero, c0 = zero, a1 = zero, b1 = zero, c1 = zero;
        for (int i = 0; i < QK; i++) {
            const v8f l0 = vmin(vrint(is0 * xm[i]), top);  /* >= +0 already */
            const v8f l1 = vmin(vrint(is1 * xm[i]), top);
            a0 += l0;
            b0 += l0 * l0;
            c0 += l0 * X[i];
            a1 += l1;
            b1 += l1 * l1;
            c1 += l1 * X[i];
        }
        v8f d, m, gain;
        v8i better = vasym_solve(a0, b0, c0, sw, sx, &d, &m, &gain) & (gain > scan_best);
        scan_best = vsel(better, gain, scan_best);
        scan_d = vsel(better, d, scan_d);
        scan_m = vsel(better, m, scan_m);
        better = vasym_solve(a1, b1, c1, sw, sx, &d, &m, &gain) & (gain > scan_best);
        scan_best = vsel(better, gain, scan_best);
        scan_d = vsel(better, d, scan_d);
        scan_m = vsel(better, m, scan_m);
    }
    vasym_try(X, scan_d, scan_m, fn, yes, b, 0, sums);
    /* least-squares refit on the best quants (their sums came with them) */
    v8f d, m, gain;
    const v8i ok = vasym_solve(sums[0], sums[1], sums[2], sw, sx, &d, &m, &gain);
    vasym_try(X, d, m, fn, ok, b, 0, NULL);
}

/* X[c + i][k] = x[k*QK + c + i], i, k < 8: an 8x8 transpose in three shuffle stages */
typedef float v8f_u __attribute__((vector_size(32), aligned(4), may_alias));
LG_INLINE void transpose8(const float *restrict x, v8f *restrict X) {
    v8f r[8], t[8], s[8];
    const v8i lo1 = {0, 8, 1, 9, 4, 12, 5, 13}, hi1 = {2, 10, 3, 11, 6, 14, 7, 15};
    const v8i lo2 = {0, 1, 8, 9, 4, 5, 12, 13}, hi2 = {2, 3, 10, 11, 6, 7, 14, 15};
    const v8i lo3 = {0, 1, 2, 3, 8, 9, 10, 11}, hi3 = {4, 5, 6, 7, 12, 13, 14, 15};
    for (int k = 0; k < 8; k++) r[k] = *(const v8f_u *)(x + k * QK);
    for (int k = 0; k < 8; k += 2) {
        t[k] = __builtin_shuffle(r[k], r[k + 1], lo1);
        t[k + 1] = __builtin_shuffle(r[k], r[k + 1], hi1);
    }
    for (int k = 0; k < 8; k += 4) {
        s[k] = __builtin_shuffle(t[k], t[k + 2], lo2);
        s[k + 1] = __builtin_shuffle(t[k], t[k + 2], hi2);
        s[k + 2] = __builtin_shuffle(t[k + 1], t[k + 3], lo2);
        s[k + 3] = __builtin_shuffle(t[k + 1], t[k + 3], hi2);
    }
    for (int k = 0; k < 4; k++) {
        X[k] = __builtin_shuffle(s[k], s[k + 4], lo3);
        X[k + 4] = __builtin_shuffle(s[k], s[k + 4], hi3);
    }
}

LG_HOT static void quantize_plain(const float *restrict x, uint8_t *restrict y, int64_t nblocks,
                                  int nmax, int asym, int five_bit) {
    const int bsize = 2 + (asym ? 2 : 0) + (five_bit ? 4 : 0) + 16;
    const float off = asym ? 0.0f : (float)nmax;
    for (int64_t g = 0; g < nblocks; g += NB) {
        const int nb = nblocks - g < NB ? (int)(nblocks - g) : NB;
        v8f X[QK];
        const float *xg = x + g * QK;
        float pad[NB * QK];
        if (nb < NB) {  /* the last group: zero blocks fill the lanes */
            for (int i = 0; i < NB * QK; i++) pad[i] = i < nb * QK ? xg[i] : 0.0f;
            xg = pad;
        }
        for (int c = 0; c < QK; c += 8) transpose8(xg + c, X + c);
        lg_best b;
        b.mbits = (v8u){0, 0, 0, 0, 0, 0, 0, 0};  /* symmetric types: unused */
        if (asym) vasym_group(X, nmax, &b);
        else vsym_group(X, nmax, &b);
        /* levels (+ nmax) -> qs as 4 little-endian words and qh (the 5th bits), per lane */
        uint32_t wt[4][NB] __attribute__((aligned(32))), ht[NB] __attribute__((aligned(32)));
        uint32_t dt[NB], mt[NB];
        const v8f vo = vset(off);
        v8u q[QK];
        for (int i = 0; i < QK; i++) q[i] = (v8u)__builtin_convertvector(b.L[i] + vo, v8i);
        for (int jj = 0; jj < 4; jj++) {
            v8u w = (v8u){0, 0, 0, 0, 0, 0, 0, 0};
            for (int u = 0; u < 4; u++) {
                const int j = 4 * jj + u;
                w |= ((q[j] & 15u) | ((q[j + 16] & 15u) << 4)) << (8u * (unsigned)u);
            }
            memcpy(wt[jj], &w, sizeof w);
        }
        if (five_bit) {
            v8u h = (v8u){0, 0, 0, 0, 0, 0, 0, 0};
            for (int i = 0; i < QK; i++) h |= ((q[i] >> 4) & 1u) << (unsigned)i;
            memcpy(ht, &h, sizeof h);
        }
        memcpy(dt, &b.dbits, sizeof dt);
        memcpy(mt, &b.mbits, sizeof mt);
        for (int k = 0; k < nb; k++) {
            uint8_t *yb = y + (g + k) * bsize;
            ggq_put16(yb, (uint16_t)dt[k]);
            yb += 2;
            if (asym) {
                ggq_put16(yb, (uint16_t)mt[k]);
                yb += 2;
            }
            if (five_bit) {
                ggq_put32(yb, ht[k]);
                yb += 4;
            }
            for (int jj = 0; jj < 4; jj++) ggq_put32(yb + 4 * jj, wt[jj][k]);
        }
    }
}

#endif /* LG_LANES */

GGQ_INLINE int quantize_legacy(const float *restrict x, uint8_t *restrict y, int64_t nrows,
                               int64_t n, const float *restrict im, int isa, int nmax, int asym,
                               int five_bit) {
    (void)isa;
    if (nrows <= 0) return 0;
    const int64_t nb = n / QK;
    const int bsize = 2 + (asym ? 2 : 0) + (five_bit ? 4 : 0) + 16;
#ifdef LG_LANES
    if (isa && !im) {
        quantize_plain(x, y, nrows * nb, nmax, asym, five_bit);
        return 0;
    }
#endif
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
                ggq_put16(yb, dbits);
                ggq_put16(yb + 2, mbits);
                yb += 4;
            } else {
                quantize_sym_block(xb, w, wlb, nmax, &dbits, q);
                ggq_put16(yb, dbits);
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

GGQ_ROWS(q4_0) { return quantize_legacy(x, y, nrows, n_per_row, imatrix, isa, 8, 0, 0); }
GGQ_KERNEL(q4_0)

GGQ_ROWS(q4_1) { return quantize_legacy(x, y, nrows, n_per_row, imatrix, isa, 15, 1, 0); }
GGQ_KERNEL(q4_1)

GGQ_ROWS(q5_0) { return quantize_legacy(x, y, nrows, n_per_row, imatrix, isa, 16, 0, 1); }
GGQ_KERNEL(q5_0)

GGQ_ROWS(q5_1) { return quantize_legacy(x, y, nrows, n_per_row, imatrix, isa, 31, 1, 1); }
GGQ_KERNEL(q5_1)
