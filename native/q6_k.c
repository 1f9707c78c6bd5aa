/* STUB: replace with the real kernel (see ggq.h). */
#include "ggq.h"

int ggq_quantize_q6_k(const float *x, uint8_t *y, int64_t nrows, int64_t n_per_row, const float *imatrix) {
    (void)x; (void)y; (void)nrows; (void)n_per_row; (void)imatrix;
    return GGQ_NOT_IMPLEMENTED;
}

