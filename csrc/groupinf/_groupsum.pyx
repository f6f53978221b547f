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
# Rows are independent, so callers may split the groups across threads; the
# result does not depend on the split.

from scipy.linalg.cython_blas cimport ddot

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
