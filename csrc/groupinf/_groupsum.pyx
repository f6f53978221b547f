# Per-group dot products over a group's own rows ("sampled" products).
#
# For G groups stored as a CSR (G, n) matrix and G parameter directions U_g
# (each K' x (d + 1) in the internal layout), compute for every stored entry
# (g, i) the K' numbers
#
#     out[q, k] = U_g[k, :d] . x_i + U_g[k, d]          (q = entry of (g, i))
#
# This is what second-order and Newton corrections, and plug-in self-losses,
# need: quantities along each group's own direction on each group's own rows,
# at a cost of nnz(C) * d instead of G * n * d.
#
# The transpose, sums of each group's rows weighted by per-entry values
# (group gradients, H_U u), is `rows_sum_dense`.
#
# Rows are independent, so callers may split the groups across threads; the
# result does not depend on the split.

from libc.math cimport fabs
from scipy.linalg.cython_blas cimport daxpy, ddot

from groupinf._blas cimport blas_int


def rows_dot_dense(indptr, indices, X, U, out, Py_ssize_t lo, Py_ssize_t hi):
    """out[q] for the entries of groups lo..hi-1, X dense (n, d)."""
    cdef const long long[::1] pv = indptr
    cdef const long long[::1] iv = indices
    cdef const double[:, ::1] Xv = X
    cdef const double[:, :, ::1] Uv = U
    cdef double[:, ::1] ov = out
    cdef Py_ssize_t g, q, k, K = Uv.shape[1], d = Xv.shape[1]
    cdef blas_int nd = <blas_int> d, one = 1
    if Uv.shape[2] != d + 1 or ov.shape[1] != K or hi > Uv.shape[0] or lo < 0:
        raise ValueError("rows_dot_dense: shapes do not match")
    if pv[hi] > ov.shape[0]:
        raise ValueError("rows_dot_dense: out is too short")
    with nogil:
        for g in range(lo, hi):
            for q in range(pv[g], pv[g + 1]):
                for k in range(K):
                    ov[q, k] = ddot(&nd, <double*> &Xv[iv[q], 0], &one,
                                    <double*> &Uv[g, k, 0], &one) + Uv[g, k, d]


def rows_dot_csr(indptr, indices, x_data, x_indices, x_indptr, U, out,
                 Py_ssize_t lo, Py_ssize_t hi):
    """out[q] for the entries of groups lo..hi-1, X in CSR form."""
    cdef const long long[::1] pv = indptr
    cdef const long long[::1] iv = indices
    cdef const double[::1] xd = x_data
    cdef const int[::1] xi = x_indices
    cdef const int[::1] xp = x_indptr
    cdef const double[:, :, ::1] Uv = U
    cdef double[:, ::1] ov = out
    cdef Py_ssize_t g, q, k, r, i, K = Uv.shape[1], d = Uv.shape[2] - 1
    cdef double acc
    if ov.shape[1] != K or hi > Uv.shape[0] or lo < 0 or pv[hi] > ov.shape[0]:
        raise ValueError("rows_dot_csr: shapes do not match")
    with nogil:
        for g in range(lo, hi):
            for q in range(pv[g], pv[g + 1]):
                i = iv[q]
                for k in range(K):
                    acc = Uv[g, k, d]
                    for r in range(xp[i], xp[i + 1]):
                        acc = acc + xd[r] * Uv[g, k, xi[r]]
                    ov[q, k] = acc


cdef extern from *:
    """
    #if defined(__GNUC__)
    #define GI_PREFETCH(p) __builtin_prefetch((const void*) (p), 0, 1)
    #else
    #define GI_PREFETCH(p) ((void) 0)
    #endif
    """
    void GI_PREFETCH(const void* p) noexcept nogil


def rows_sum_dense(indptr, indices, values, X, out, Py_ssize_t lo,
                   Py_ssize_t hi):
    """Group sums over stored entries, X dense (n, d), groups lo..hi-1.

    For every group g and logit k::

        out[g, k, :d] = sum_q values[q, k] * X[indices[q]]
        out[g, k, d]  = sum_q values[q, k]          (q in indptr[g]..)

    One AXPY per entry and logit: each row of X is read once per entry,
    which is the nnz * d floor of any sparse-times-dense product. The reads
    are what it costs (rows scattered over X come from memory, not cache),
    so the next entry's row is prefetched while this one is added.
    """
    cdef const long long[::1] pv = indptr
    cdef const long long[::1] iv = indices
    cdef const double[:, ::1] vv = values
    cdef const double[:, ::1] Xv = X
    cdef double[:, :, ::1] ov = out
    cdef Py_ssize_t g, q, k, j, K = ov.shape[1], d = Xv.shape[1], last
    cdef blas_int nd = <blas_int> d, one = 1
    cdef double v
    cdef const double* nxt
    if (ov.shape[2] != d + 1 or vv.shape[1] != K or hi > ov.shape[0]
            or lo < 0 or hi > pv.shape[0] - 1 or pv[hi] > vv.shape[0]):
        raise ValueError("rows_sum_dense: shapes do not match")
    with nogil:
        for g in range(lo, hi):
            for k in range(K):
                for j in range(d + 1):
                    ov[g, k, j] = 0.0
            last = pv[hi] - 1
            for q in range(pv[g], pv[g + 1]):
                if q < last:
                    nxt = &Xv[iv[q + 1], 0]
                    for j in range(0, d, 8):  # one 64-byte line per 8 doubles
                        GI_PREFETCH(nxt + j)
                for k in range(K):
                    v = vv[q, k]
                    daxpy(&nd, &v, <double*> &Xv[iv[q], 0], &one,
                          &ov[g, k, 0], &one)
                    ov[g, k, d] += v


def rows_abs_sum(X, rows, weights, out):
    """out[j] = sum_r weights[r] * |X[rows[r], j]|, X dense (n, d).

    A group's share of the gradient's scale (see ``Objective.grad_scale``)
    without gathering its rows.
    """
    cdef const double[:, ::1] Xv = X
    cdef const long long[::1] rv = rows
    cdef const double[::1] wv = weights
    cdef double[::1] ov = out
    cdef Py_ssize_t r, j, i, d = Xv.shape[1]
    cdef double w
    if ov.shape[0] != d or wv.shape[0] != rv.shape[0]:
        raise ValueError("rows_abs_sum: shapes do not match")
    with nogil:
        for j in range(d):
            ov[j] = 0.0
        for r in range(rv.shape[0]):
            i = rv[r]
            w = wv[r]
            for j in range(d):
                ov[j] += w * fabs(Xv[i, j])
