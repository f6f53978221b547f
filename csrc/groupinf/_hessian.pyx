# Hessian assembly for logistic and softmax losses as row-scaled SYRK.
#
# For a set of rows R with non-negative coefficients c_r the binary loss part is
#
#     H = sum_{r in R} c_r * xt_r xt_r^T,      xt = [x, 1],
#
# which is A^T A for A with rows sqrt(c_r) * xt_r: one DSYRK per chunk of rows.
# The softmax Hessian has K(K+1)/2 class-pair blocks (internal layout: block k
# holds [coef_k, intercept_k]); block (k, l) is sum_r c_r (p_k delta_kl - p_k p_l)
# xt_r xt_r^T. Each coefficient has one sign per block (p_k(1-p_k) >= 0,
# -p_k p_l <= 0), so every block is again one SYRK with alpha = +1 or -1.
#
# Rows are gathered in chunks into a (chunk, d + 1) buffer, so memory stays
# O(chunk * d) whatever n is, and a group's Hessian H_U is the same call on the
# group's rows only. No Python loop ever runs over examples. The chunk length
# (default 1024 rows) changes only the order of the floating-point sums.

from libc.math cimport sqrt
from libc.stdlib cimport malloc, free
from scipy.linalg.cython_blas cimport dsyrk

from groupinf._blas cimport blas_int



cdef void _fill_chunk(
    const double[:, ::1] X, const long long[::1] rows, Py_ssize_t start,
    Py_ssize_t m, const double* scale, double* work,
) noexcept nogil:
    # work[t] = scale[t] * [X[rows[start + t]], 1]
    cdef Py_ssize_t t, j, d = X.shape[1], i
    cdef double c
    for t in range(m):
        i = rows[start + t]
        c = scale[t]
        for j in range(d):
            work[t * (d + 1) + j] = c * X[i, j]
        work[t * (d + 1) + d] = c


cdef void _symmetrize_block(
    double* H, Py_ssize_t ld, Py_ssize_t r0, Py_ssize_t c0, Py_ssize_t m,
    bint mirror,
) noexcept nogil:
    # The SYRK filled the lower triangle of block (r0, c0) in C order; copy it
    # to the upper one and, for an off-diagonal block, to block (c0, r0).
    cdef Py_ssize_t a, b
    for b in range(m):
        for a in range(b):
            H[(r0 + a) * ld + c0 + b] = H[(r0 + b) * ld + c0 + a]
    if mirror:
        for b in range(m):
            for a in range(m):
                H[(c0 + a) * ld + r0 + b] = H[(r0 + b) * ld + c0 + a]


cdef int _binary_hessian(
    const double[:, ::1] X, const long long[::1] rows, const double[::1] coef,
    double[:, ::1] H, Py_ssize_t CHUNK,
) noexcept nogil:
    cdef Py_ssize_t n_rows = rows.shape[0], d = X.shape[1], start, m, t, j
    cdef blas_int dp1 = <blas_int> (d + 1), k
    cdef double alpha = 1.0, beta = 0.0
    cdef double* work = <double*> malloc(CHUNK * (d + 1) * sizeof(double))
    cdef double* scale = <double*> malloc(CHUNK * sizeof(double))
    if work == NULL or scale == NULL:
        free(work)
        free(scale)
        return -1

    for t in range(d + 1):
        for j in range(d + 1):
            H[t, j] = 0.0
    start = 0
    while start < n_rows:
        m = min(CHUNK, n_rows - start)
        for t in range(m):
            scale[t] = sqrt(coef[start + t])
        _fill_chunk(X, rows, start, m, scale, work)
        # H_F (d+1, d+1) += work_F (d+1, m) work_F^T; work_F = work^T.
        k = <blas_int> m
        beta = 1.0
        dsyrk(b"U", b"N", &dp1, &k, &alpha, work, &dp1, &beta, &H[0, 0], &dp1)
        start += m
    _symmetrize_block(&H[0, 0], d + 1, 0, 0, d + 1, False)
    free(work)
    free(scale)
    return 0


cdef int _multinomial_hessian(
    const double[:, ::1] X, const long long[::1] rows, const double[::1] coef,
    const double[:, ::1] prob, double[:, ::1] H, Py_ssize_t CHUNK,
) noexcept nogil:
    cdef Py_ssize_t n_rows = rows.shape[0], d = X.shape[1], K = prob.shape[1]
    cdef Py_ssize_t p = K * (d + 1), start, m, t, j, k, l, i
    cdef blas_int dp1 = <blas_int> (d + 1), ldh = <blas_int> p, kk
    cdef double alpha, beta = 1.0, v
    cdef double* work = <double*> malloc(CHUNK * (d + 1) * sizeof(double))
    cdef double* scale = <double*> malloc(CHUNK * sizeof(double))
    if work == NULL or scale == NULL:
        free(work)
        free(scale)
        return -1

    for t in range(p):
        for j in range(p):
            H[t, j] = 0.0
    start = 0
    while start < n_rows:
        m = min(CHUNK, n_rows - start)
        kk = <blas_int> m
        for k in range(K):
            for l in range(k, K):
                # 1. Row scales for block (k, l): sqrt(|c_r D_kl|).
                for t in range(m):
                    i = rows[start + t]
                    if k == l:
                        v = prob[i, k] * (1.0 - prob[i, k])
                    else:
                        v = prob[i, k] * prob[i, l]
                    scale[t] = sqrt(coef[start + t] * v)
                alpha = 1.0 if k == l else -1.0

                # 2. One SYRK into the block; Fortran (a, b) of the block
                #    pointer is C element [k(d+1) + b, l(d+1) + a].
                _fill_chunk(X, rows, start, m, scale, work)
                dsyrk(b"U", b"N", &dp1, &kk, &alpha, work, &dp1, &beta,
                      &H[k * (d + 1), l * (d + 1)], &ldh)
        start += m
    for k in range(K):
        for l in range(k, K):
            _symmetrize_block(&H[0, 0], p, k * (d + 1), l * (d + 1), d + 1, k != l)
    free(work)
    free(scale)
    return 0


def binary_hessian(X, rows, coef, H_out, Py_ssize_t chunk=1024):
    """H_out = sum_r coef[r] * xt_{rows[r]} xt_{rows[r]}^T, xt = [x, 1]."""
    cdef const double[:, ::1] Xv = X
    cdef const long long[::1] rv = rows
    cdef const double[::1] cv = coef
    cdef double[:, ::1] Hv = H_out
    cdef int status
    if Hv.shape[0] != Xv.shape[1] + 1 or Hv.shape[1] != Xv.shape[1] + 1:
        raise ValueError("H_out must have shape (d + 1, d + 1)")
    if cv.shape[0] != rv.shape[0]:
        raise ValueError("rows and coef must have the same length")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    with nogil:
        status = _binary_hessian(Xv, rv, cv, Hv, chunk)
    if status != 0:
        raise MemoryError("could not allocate the Hessian work buffer")


def multinomial_hessian(X, rows, coef, prob, H_out, Py_ssize_t chunk=1024):
    """Softmax Hessian of the loss over the given rows, internal layout."""
    cdef const double[:, ::1] Xv = X, pv = prob
    cdef const long long[::1] rv = rows
    cdef const double[::1] cv = coef
    cdef double[:, ::1] Hv = H_out
    cdef Py_ssize_t p = pv.shape[1] * (Xv.shape[1] + 1)
    cdef int status
    if Hv.shape[0] != p or Hv.shape[1] != p:
        raise ValueError("H_out must have shape (K (d + 1), K (d + 1))")
    if cv.shape[0] != rv.shape[0]:
        raise ValueError("rows and coef must have the same length")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    with nogil:
        status = _multinomial_hessian(Xv, rv, cv, pv, Hv, chunk)
    if status != 0:
        raise MemoryError("could not allocate the Hessian work buffer")
