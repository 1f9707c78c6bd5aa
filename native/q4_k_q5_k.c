/* Q4_K and Q5_K: 256-value super-blocks, 8 sub-blocks of 32 with 6-bit scale and min.
 * Mirrors ggtool/quants/q4_k_q5_k.py byte for byte; the algorithm is described there:
 *   stage 1: llama.cpp's search, reproduced exactly (make_qkx2/qkx3 + make_qp_quants);
 *   stage 2: a polish (neighbouring 6-bit scale/min pairs, least-squares d/dmin) kept per
 *            super-block only when its float64 error is lower.
 *
 * Layout for speed: NSB super-blocks are handled together, one "lane" per sub-block
 * (NL = 8*NSB lanes), arrays transposed to [element][lane] so that every inner loop runs over
 * independent lanes (the compiler vectorizes it) while each lane's sums stay sequential,
 * exactly as in the numpy reference. */
#include "ggq.h"
#include "ggq_search.h"

#define QK_K GGQ_QK_K
#define NSB 4
#define NL (8 * NSB)

typedef struct {
    float d[NSB], dmin[NSB];
    int sc[NL], m[NL];
    uint8_t packed[NSB][12];
    float q[32][NL];
} kres_t;

/* ------------------------------------------------------------ llama.cpp's searches */

/* make_qkx2_quants / make_qkx3_quants (weights given, use_mad false) on every lane. */
GGQ_INLINE void make_qkx_lanes_body(const float x[32][NL], const float w[32][NL], int nmax,
                                    float rmin, float rdelta, int nstep, float scale[NL],
                                    float the_min[NL], float L[32][NL]) {
    float mn[NL], mx[NL], sum_w[NL], sum_x[NL], best[NL], isc[NL];
    float ts[NL], tm[NL], D[NL], a_l[NL], a_l2[NL], a_xl[NL], err[NL];
    float isc_best[NL], mn_best[NL];
    float La[32][NL];
    int flat[NL];
    const float fnmax = (float)nmax;
    for (int j = 0; j < NL; j++) {
        mn[j] = x[0][j];
        mx[j] = x[0][j];
        sum_w[j] = w[0][j];
        sum_x[j] = w[0][j] * x[0][j];
    }
    for (int i = 1; i < 32; i++) {
        for (int j = 0; j < NL; j++) {
            float xi = x[i][j];
            mn[j] = xi < mn[j] ? xi : mn[j];
            mx[j] = xi > mx[j] ? xi : mx[j];
            sum_w[j] += w[i][j];
            sum_x[j] += w[i][j] * xi;
        }
    }
    for (int j = 0; j < NL; j++) {
        mn[j] = mn[j] > 0 ? 0.0f : mn[j];
        flat[j] = mx[j] == mn[j];
        isc[j] = fnmax / (mx[j] - mn[j]);
        scale[j] = 1.0f / isc[j];
    }
    for (int j = 0; j < NL; j++) {
        isc_best[j] = isc[j];
        mn_best[j] = mn[j];
    }
    for (int j = 0; j < NL; j++) {
        float e = 0.0f;
        for (int i = 0; i < 32; i++) {
            float l = (float)ggq_nearest_int_clamped(isc[j] * (x[i][j] - mn[j]), 0, nmax);
            float diff = scale[j] * l + mn[j] - x[i][j];
            e += w[i][j] * (diff * diff);
        }
        best[j] = e;
    }
    for (int is = 0; is <= nstep; is++) {
        const float num = rmin + rdelta * (float)is + fnmax;
        for (int j = 0; j < NL; j++) isc[j] = num / (mx[j] - mn[j]);
        /* lane-outer loop nests: each lane's sums stay sequential over i, and the compiler
         * vectorizes across lanes with the accumulators in registers */
        for (int j = 0; j < NL; j++) {
            float sl = 0.0f, sl2 = 0.0f, sxl = 0.0f;
            for (int i = 0; i < 32; i++) {
                float l = (float)ggq_nearest_int_clamped(isc[j] * (x[i][j] - mn[j]), 0, nmax);
                La[i][j] = l;
                float wl = w[i][j] * l;
                sl += wl;
                sl2 += wl * l;
                sxl += wl * x[i][j];
            }
            a_l[j] = sl;
            a_l2[j] = sl2;
            a_xl[j] = sxl;
        }
        for (int j = 0; j < NL; j++) {
            D[j] = sum_w[j] * a_l2[j] - a_l[j] * a_l[j];
            float s = (sum_w[j] * a_xl[j] - sum_x[j] * a_l[j]) / D[j];
            float m = (a_l2[j] * sum_x[j] - a_l[j] * a_xl[j]) / D[j];
            float s0 = a_xl[j] / a_l2[j];  /* the fit with min = 0, used when m > 0 */
            ts[j] = m > 0 ? s0 : s;
            tm[j] = m > 0 ? 0.0f : m;
        }
        for (int j = 0; j < NL / 2; j++) {  /* two lanes per iteration: two chains */
            const int k = j + NL / 2;
            float e0 = 0.0f, e1 = 0.0f;
            for (int i = 0; i < 32; i++) {
                float d0 = ts[j] * La[i][j] + tm[j] - x[i][j];
                float d1 = ts[k] * La[i][k] + tm[k] - x[i][k];
                e0 += w[i][j] * (d0 * d0);
                e1 += w[i][k] * (d1 * d1);
            }
            err[j] = e0;
            err[k] = e1;
        }
        for (int j = 0; j < NL; j++) {
            /* remember the accepted candidate's (iscale, min): L is rebuilt from them at the end */
            const int t = (D[j] > 0) & (err[j] < best[j]);
            best[j] = t ? err[j] : best[j];
            scale[j] = t ? ts[j] : scale[j];
            isc_best[j] = t ? isc[j] : isc_best[j];
            mn_best[j] = t ? mn[j] : mn_best[j];
            mn[j] = t ? tm[j] : mn[j];
        }
    }
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < NL; j++)
            L[i][j] = (float)ggq_nearest_int_clamped(isc_best[j] * (x[i][j] - mn_best[j]), 0, nmax);
    /* max == min: llama.cpp returns scale 0 and L = 0 before searching (no candidate can
     * have been taken above: every l rounds to 0 there, so D == 0) */
    for (int j = 0; j < NL; j++) {
        scale[j] = flat[j] ? 0.0f : scale[j];
        the_min[j] = -mn[j];
    }
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < NL; j++)
            L[i][j] = flat[j] ? 0.0f : L[i][j];
}
GGQ_CLONE(make_qkx_lanes,
          (const float x[32][NL], const float w[32][NL], int nmax, float rmin, float rdelta,
           int nstep, float scale[NL], float the_min[NL], float L[32][NL]),
          (x, w, nmax, rmin, rdelta, nstep, scale, the_min, L))

/* ------------------------------------------------------------ packing */

/* llama.cpp's packing of 8 scales and 8 mins (ints as its uint8 holds them) into 12 bytes */
static void pack_scales(const int *ls, const int *lm, uint8_t *s) {
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)ls[j];
        s[j + 4] = (uint8_t)lm[j];
    }
    for (int j = 4; j < 8; j++) {
        s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
        s[j - 4] = (uint8_t)(s[j - 4] | ((ls[j] >> 4) << 6));
        s[j] = (uint8_t)(s[j] | ((lm[j] >> 4) << 6));
    }
}

static void unpack_scales(const uint8_t *s, int *sc, int *m) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* ------------------------------------------------------------ stage 1 */

/* shared tail of both llama.cpp paths: pack, fp16 d/dmin, requantize with what is stored */
static void finish_stage1(const float x[32][NL], int nmax, const float *dsrc, const float *msrc,
                          const int *ls, const int *lm, float L[32][NL], kres_t *r) {
    float d[NL], dm[NL];
    for (int b = 0; b < NSB; b++) {
        pack_scales(ls + 8 * b, lm + 8 * b, r->packed[b]);
        unpack_scales(r->packed[b], r->sc + 8 * b, r->m + 8 * b);
        r->d[b] = ggq_fp16_round(dsrc[b]);
        r->dmin[b] = ggq_fp16_round(msrc[b]);
    }
    for (int j = 0; j < NL; j++) {
        d[j] = r->d[j / 8] * (float)r->sc[j];
        dm[j] = r->dmin[j / 8] * (float)r->m[j];
    }
    for (int i = 0; i < 32; i++) {
        for (int j = 0; j < NL; j++) {
            float q = (float)ggq_nearest_int_clamped((x[i][j] + dm[j]) / d[j], 0, nmax);
            r->q[i][j] = d[j] != 0 ? q : L[i][j];
        }
    }
}

/* quantize_row_q{4,5}_K_ref */
static void stage1_ref(const float x[32][NL], int nmax, float rmin, float rdelta, int nstep,
                       kres_t *r) {
    float w[32][NL], L[32][NL];
    float sum_x2[NL], av_x[NL], scales[NL], mins[NL];
    float max_scale[NSB], max_min[NSB], dsrc[NSB], msrc[NSB];
    int ls[NL], lm[NL];
    for (int j = 0; j < NL; j++) sum_x2[j] = 0.0f;
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < NL; j++) sum_x2[j] += x[i][j] * x[i][j];
    for (int j = 0; j < NL; j++) av_x[j] = sqrtf(sum_x2[j] / 32.0f);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < NL; j++) w[i][j] = av_x[j] + fabsf(x[i][j]);
    make_qkx_lanes(x, w, nmax, rmin, rdelta, nstep, scales, mins, L);
    for (int b = 0; b < NSB; b++) {
        max_scale[b] = 0.0f;
        max_min[b] = 0.0f;
        for (int j = 8 * b; j < 8 * b + 8; j++) {
            if (scales[j] > max_scale[b]) max_scale[b] = scales[j];
            if (mins[j] > max_min[b]) max_min[b] = mins[j];
        }
        float inv_scale = max_scale[b] > 0 ? 63.0f / max_scale[b] : 0.0f;
        float inv_min = max_min[b] > 0 ? 63.0f / max_min[b] : 0.0f;
        for (int j = 8 * b; j < 8 * b + 8; j++) {
            int a = ggq_nearest_int(inv_scale * scales[j]) & 0xFF;
            int c = ggq_nearest_int(inv_min * mins[j]) & 0xFF;
            ls[j] = a < 63 ? a : 63;
            lm[j] = c < 63 ? c : 63;
        }
        dsrc[b] = max_scale[b] / 63.0f;
        msrc[b] = max_min[b] / 63.0f;
    }
    finish_stage1(x, nmax, dsrc, msrc, ls, lm, L, r);
}

/* quantize_row_q{4,5}_K_impl with quant_weights; xflat[b] = the super-block's 256 values in
 * memory order, qw[b] its imatrix slice */
static void stage1_imatrix(const float x[32][NL], const float *const *xflat,
                           const float *const *qw, int nmax, int clamp_ls, kres_t *r) {
    float w[32][NL], L[32][NL];
    float sigma2[NSB], sw[NL], scales[NL], mins[NL], dsrc[NSB], msrc[NSB];
    int ls[NL], lm[NL];
    for (int b = 0; b < NSB; b++) {
        float s = 0.0f;
        for (int l = 0; l < QK_K; l++) s += xflat[b][l] * xflat[b][l];
        sigma2[b] = 2.0f * s / (float)QK_K;
    }
    for (int i = 0; i < 32; i++) {
        for (int j = 0; j < NL; j++) {
            float xi = x[i][j];
            w[i][j] = qw[j / 8][32 * (j % 8) + i] * sqrtf(sigma2[j / 8] + xi * xi);
        }
    }
    for (int j = 0; j < NL; j++) sw[j] = 0.0f;
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < NL; j++) sw[j] += w[i][j];
    make_qkx_lanes(x, w, nmax, -0.9f, 0.05f, 36, scales, mins, L);
    for (int b = 0; b < NSB; b++) {
        uint8_t Ls[8], Lm[8];
        dsrc[b] = ggq_make_qp(8, 63, scales + 8 * b, Ls, sw + 8 * b);
        msrc[b] = ggq_make_qp(8, 63, mins + 8 * b, Lm, sw + 8 * b);
        for (int j = 0; j < 8; j++) {
            ls[8 * b + j] = Ls[j];
            lm[8 * b + j] = Lm[j];
        }
    }
    if (clamp_ls) {
        for (int j = 0; j < NL; j++) {
            ls[j] = ls[j] < 63 ? ls[j] : 63;
            lm[j] = lm[j] < 63 ? lm[j] : 63;
        }
    }
    finish_stage1(x, nmax, dsrc, msrc, ls, lm, L, r);
}

/* ------------------------------------------------------------ stage 2: polish */

/* q for every lane from (D, Mn, sc, m); the same rounding search_lanes measures */
static void quant_lanes(const float x[32][NL], const float *D, const float *Mn, const int *sc,
                        const int *m, int nmax, float q[32][NL]) {
    float ds[NL], dm[NL], inv[NL];
    const float fnmax = (float)nmax;
    for (int j = 0; j < NL; j++) {
        ds[j] = D[j] * (float)sc[j];
        dm[j] = Mn[j] * (float)m[j];
        inv[j] = ds[j] > 0 ? 1.0f / ds[j] : 0.0f;
    }
    for (int i = 0; i < 32; i++) {
        for (int j = 0; j < NL; j++) {
            float t = (x[i][j] + dm[j]) * inv[j];
            q[i][j] = ggq_rint_f(ggq_clampf(t, 0.0f, fnmax));
        }
    }
}

/* the float32 error of every lane for one (sc, m) candidate; with unit_w a literal 1 the
 * compiler drops the weight loads and products (w*v == v exactly when w == 1) */
static inline void search_errors(const float x[32][NL], const float w[32][NL], int unit_w,
                                 const float *ds, const float *dm, const float *inv,
                                 float fnmax, float *e) {
    /* lane-outer (see make_qkx_lanes), two lanes per iteration: two accumulator chains */
    for (int j = 0; j < NL / 2; j++) {
        const int k = j + NL / 2;
        float acc0 = 0.0f, acc1 = 0.0f;
        for (int i = 0; i < 32; i++) {
            float t0 = (x[i][j] + dm[j]) * inv[j];
            float t1 = (x[i][k] + dm[k]) * inv[k];
            float q0 = ggq_rint_f(ggq_clampf(t0, 0.0f, fnmax));
            float q1 = ggq_rint_f(ggq_clampf(t1, 0.0f, fnmax));
            float d0 = x[i][j] - (ds[j] * q0 - dm[j]);
            float d1 = x[i][k] - (ds[k] * q1 - dm[k]);
            acc0 += (unit_w ? 1.0f : w[i][j]) * (d0 * d0);
            acc1 += (unit_w ? 1.0f : w[i][k]) * (d1 * d1);
        }
        e[j] = acc0;
        e[k] = acc1;
    }
}

#define MAX_R 4 /* largest search radius in kparams_t.radii */

/* per lane, the (sc+a, m+b), |a|,|b| <= R, with the lowest float32 error: the centre first,
 * then row-major; ties keep the earlier one */
GGQ_INLINE void search_lanes_body(const float x[32][NL], const float w[32][NL], const float *D,
                                  const float *Mn, int *sc, int *m, int R, int nmax,
                                  int unit_w) {
    float best[NL], e[NL], ds[NL], dm[NL], inv[NL];
    int bsc[NL], bm[NL], s2[NL], m2[NL];
    int ca[(2 * MAX_R + 1) * (2 * MAX_R + 1)], cb[(2 * MAX_R + 1) * (2 * MAX_R + 1)];
    int nc = 1;
    const float fnmax = (float)nmax;
    ca[0] = cb[0] = 0;
    for (int a = -R; a <= R; a++)
        for (int b = -R; b <= R; b++)
            if (a || b) {
                ca[nc] = a;
                cb[nc] = b;
                nc++;
            }
    for (int c = 0; c < nc; c++) {
        for (int j = 0; j < NL; j++) {
            s2[j] = sc[j] + ca[c];
            m2[j] = m[j] + cb[c];
            ds[j] = D[j] * (float)s2[j];
            dm[j] = Mn[j] * (float)m2[j];
            inv[j] = 1.0f / ds[j];
            inv[j] = ds[j] > 0 ? inv[j] : 0.0f;
        }
        if (unit_w)
            search_errors(x, w, 1, ds, dm, inv, fnmax, e);
        else
            search_errors(x, w, 0, ds, dm, inv, fnmax, e);
        for (int j = 0; j < NL; j++) {
            int take = (c == 0) | ((s2[j] >= 0) & (s2[j] <= 63) & (m2[j] >= 0) & (m2[j] <= 63) &
                                   (e[j] < best[j]));
            best[j] = take ? e[j] : best[j];
            bsc[j] = take ? s2[j] : bsc[j];
            bm[j] = take ? m2[j] : bm[j];
        }
    }
    for (int j = 0; j < NL; j++) {
        sc[j] = bsc[j];
        m[j] = bm[j];
    }
}
GGQ_CLONE(search_lanes,
          (const float x[32][NL], const float w[32][NL], const float *D, const float *Mn, int *sc,
           int *m, int R, int nmax, int unit_w),
          (x, w, D, Mn, sc, m, R, nmax, unit_w))

/* least-squares d, dmin (float64) for fixed sc, m, q; rounded to fp16; degenerate fits keep
 * the old values. Sums run over each sub-block in order, then over the sub-blocks. */
static void refit(const float x[32][NL], const float w[32][NL], float *d, float *dmin,
                  const int *sc, const int *m, const float q[32][NL]) {
    double saa[NL], sab[NL], sbb[NL], sxa[NL], sxb[NL];
    for (int j = 0; j < NL; j++) saa[j] = sab[j] = sbb[j] = sxa[j] = sxb[j] = 0.0;
    for (int i = 0; i < 32; i++) {
        for (int j = 0; j < NL; j++) {
            double A = (double)(sc[j] * (int)q[i][j]);
            double Bv = (double)m[j];
            double xx = (double)x[i][j];
            double wa = (double)w[i][j] * A;
            double wb = (double)w[i][j] * Bv;
            saa[j] += wa * A;
            sab[j] += wa * Bv;
            sbb[j] += wb * Bv;
            sxa[j] += wa * xx;
            sxb[j] += wb * xx;
        }
    }
    for (int b = 0; b < NSB; b++) {
        double aa = 0.0, ab = 0.0, bb = 0.0, xa = 0.0, xb = 0.0;
        for (int j = 8 * b; j < 8 * b + 8; j++) {
            aa += saa[j];
            ab += sab[j];
            bb += sbb[j];
            xa += sxa[j];
            xb += sxb[j];
        }
        double det = aa * bb - ab * ab;
        double dn = (xa * bb - ab * xb) / det;
        double en = (ab * xa - aa * xb) / det;
        int both = det > 0 && en >= 0;
        int d_only = !both && aa > 0;
        if (!both) {
            dn = d_only ? (xa + (double)dmin[b] * ab) / aa : 0.0;
            en = (double)dmin[b];
        }
        float d16 = ggq_fp16_round((float)dn);
        float e16 = ggq_fp16_round((float)en);
        if ((both || d_only) && isfinite(d16) && isfinite(e16) && d16 > 0 && e16 >= 0) {
            d[b] = d16;
            dmin[b] = e16;
        }
    }
}

/* sum(w * (x - xhat)^2) per super-block in float64 (over each sub-block, then the 8) */
static void block_errors(const float x[32][NL], const float w[32][NL], const float *d,
                         const float *dmin, const int *sc, const int *m, const float q[32][NL],
                         double *err) {
    double part[NL];
    float ds[NL], dm[NL];
    for (int j = 0; j < NL; j++) {
        part[j] = 0.0;
        ds[j] = d[j / 8] * (float)sc[j];
        dm[j] = dmin[j / 8] * (float)m[j];
    }
    for (int i = 0; i < 32; i++) {
        for (int j = 0; j < NL; j++) {
            float xh = ds[j] * q[i][j] - dm[j];
            double diff = (double)x[i][j] - (double)xh;
            part[j] += (double)w[i][j] * (diff * diff);
        }
    }
    for (int b = 0; b < NSB; b++) {
        double acc = 0.0;
        for (int j = 8 * b; j < 8 * b + 8; j++) acc += part[j];
        err[b] = acc;
    }
}

/* stage 2 from stage 1's result r0 into r1 */
static void polish(const float x[32][NL], const float w[32][NL], int unit_w, const kres_t *r0,
                   const int *radii, int nradii, int nmax, kres_t *r1) {
    float D[NL], Mn[NL];
    *r1 = *r0;
    for (int k = 0; k < nradii; k++) {
        if (k) refit(x, w, r1->d, r1->dmin, r1->sc, r1->m, r1->q);
        for (int j = 0; j < NL; j++) {
            D[j] = r1->d[j / 8];
            Mn[j] = r1->dmin[j / 8];
        }
        search_lanes(x, w, D, Mn, r1->sc, r1->m, radii[k], nmax, unit_w);
        quant_lanes(x, D, Mn, r1->sc, r1->m, nmax, r1->q);
    }
    for (int b = 0; b < NSB; b++) pack_scales(r1->sc + 8 * b, r1->m + 8 * b, r1->packed[b]);
}

/* ------------------------------------------------------------ driver */

/* per type: llama.cpp's make_qkx2_quants arguments, and the polish rounds (search radius of
 * each, a d/dmin refit between them) - the same numbers as the numpy classes */
typedef struct {
    int nmax, nstep, clamp_ls, nradii, type_size;
    float rmin, rdelta;
    int radii[3];
} kparams_t;

static const kparams_t Q4K = {15, 20, 0, 2, 144, -1.0f, 0.1f, {2, 2, 0}};
static const kparams_t Q5K = {31, 15, 1, 2, 176, -0.5f, 0.1f, {3, 2, 0}};

static void write_block(const kparams_t *p, const kres_t *r, int b, uint8_t *y) {
    int q[QK_K];
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 32; i++) q[32 * j + i] = (int)r->q[i][8 * b + j];
    ggq_store_fp16(y, r->d[b]);
    ggq_store_fp16(y + 2, r->dmin[b]);
    memcpy(y + 4, r->packed[b], 12);
    if (p->nmax == 15) {
        uint8_t *qs = y + 16;
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    } else {
        uint8_t *qh = y + 16, *qs = y + 48;
        memset(qh, 0, 32);
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                int l1 = q[64 * c + l], l2 = q[64 * c + 32 + l];
                qh[l] |= (uint8_t)(((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1)));
                qs[32 * c + l] = (uint8_t)((l1 & 0xF) | ((l2 & 0xF) << 4));
            }
        }
    }
}

static int quantize_q45k(const kparams_t *p, const float *x, uint8_t *y, int64_t nrows,
                           int64_t n_per_row, const float *imatrix) {
    const int64_t nb_row = n_per_row / QK_K;
    const int64_t nsb = nrows * nb_row;
    static const float zeros[QK_K];
    float xt[32][NL], wt[32][NL];
    const float *xflat[NSB], *qw[NSB];
    kres_t r0, r1;
    double e0[NSB], e1[NSB];
    for (int64_t g = 0; g < nsb; g += NSB) {
        const int nact = (int)(nsb - g < NSB ? nsb - g : NSB);
        for (int b = 0; b < NSB; b++) {
            /* short group: pad with zero blocks, their results are dropped */
            xflat[b] = b < nact ? x + (g + b) * QK_K : zeros;
            qw[b] = imatrix ? imatrix + ((g + b) % nb_row) * QK_K : NULL;
        }
        for (int j = 0; j < NL; j++) {  /* transpose: lane j = sub-block j % 8 of block j / 8 */
            const float *xs = xflat[j / 8] + 32 * (j % 8);
            const float *ws = imatrix ? qw[j / 8] + 32 * (j % 8) : NULL;
            for (int i = 0; i < 32; i++) {
                xt[i][j] = xs[i];
                wt[i][j] = ws ? ws[i] : 1.0f;
            }
        }
        if (imatrix)
            stage1_imatrix(xt, xflat, qw, p->nmax, p->clamp_ls, &r0);
        else
            stage1_ref(xt, p->nmax, p->rmin, p->rdelta, p->nstep, &r0);
        polish(xt, wt, imatrix == NULL, &r0, p->radii, p->nradii, p->nmax, &r1);
        block_errors(xt, wt, r0.d, r0.dmin, r0.sc, r0.m, r0.q, e0);
        block_errors(xt, wt, r1.d, r1.dmin, r1.sc, r1.m, r1.q, e1);
        for (int b = 0; b < nact; b++)
            write_block(p, e1[b] < e0[b] ? &r1 : &r0, b, y + (g + b) * p->type_size);
    }
    return 0;
}

GGQ_ROWS(q4_k) {
    (void)isa;
    return quantize_q45k(&Q4K, x, y, nrows, n_per_row, imatrix);
}

GGQ_KERNEL(q4_k)

GGQ_ROWS(q5_k) {
    (void)isa;
    return quantize_q45k(&Q5K, x, y, nrows, n_per_row, imatrix);
}

GGQ_KERNEL(q5_k)
