/* ggtool quantization kernels. Each quantizes `nrows` rows of `n_per_row` float32 values
 * (row-major, contiguous) into `y` (nrows * row_size bytes, GGML block layout).
 * `imatrix` is NULL or n_per_row importance weights (per-column mean squared activation).
 * Returns 0 on success, GGQ_NOT_IMPLEMENTED if the kernel is a stub.
 * The numpy reference for each lives in ggtool/quants/ and must give identical bytes. */
#ifndef GGQ_H
#define GGQ_H
#include <stdint.h>
#include "ggq_common.h"

typedef int (*ggq_quantize_fn)(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row,
                               const float *imatrix);

/* q8_0.c */
int ggq_quantize_q8_0(const float *, uint8_t *, int64_t, int64_t, const float *);
/* q4_0_q4_1_q5_0_q5_1.c */
int ggq_quantize_q4_0(const float *, uint8_t *, int64_t, int64_t, const float *);
int ggq_quantize_q4_1(const float *, uint8_t *, int64_t, int64_t, const float *);
int ggq_quantize_q5_0(const float *, uint8_t *, int64_t, int64_t, const float *);
int ggq_quantize_q5_1(const float *, uint8_t *, int64_t, int64_t, const float *);
/* iq4_nl_iq4_xs.c */
int ggq_quantize_iq4_nl(const float *, uint8_t *, int64_t, int64_t, const float *);
int ggq_quantize_iq4_xs(const float *, uint8_t *, int64_t, int64_t, const float *);
/* q2_k_q3_k.c */
int ggq_quantize_q2_k(const float *, uint8_t *, int64_t, int64_t, const float *);
int ggq_quantize_q3_k(const float *, uint8_t *, int64_t, int64_t, const float *);
/* q4_k_q5_k.c */
int ggq_quantize_q4_k(const float *, uint8_t *, int64_t, int64_t, const float *);
int ggq_quantize_q5_k(const float *, uint8_t *, int64_t, int64_t, const float *);
/* q6_k.c */
int ggq_quantize_q6_k(const float *, uint8_t *, int64_t, int64_t, const float *);

/* widen.c: stored floats -> float32 (dst may be NULL for F32: only the scan); returns the
 * largest |x| (NaN if any NaN, else inf if any inf) */
float ggq_widen_bf16(const uint16_t *src, float *dst, int64_t n);
float ggq_widen_f16(const uint16_t *src, float *dst, int64_t n);
float ggq_widen_f32(const float *src, float *dst, int64_t n);

#endif
