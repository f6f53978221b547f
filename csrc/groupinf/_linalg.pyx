# Cholesky factorisation and batched solves for symmetric positive-definite H.
#
# Matrices are C-ordered and symmetric, so the same memory read as Fortran is
# the same matrix; LAPACK is always called with uplo = "L" on that memory.
# Right-hand sides are the *rows* of a C-ordered (nrhs, p) array, which is
# exactly the Fortran (p, nrhs) layout DPOTRS wants: no transposes, no copies.
#
# The nogil helpers return LAPACK's `info`; the Python wrappers turn it into
# an error that says which minor failed and what to do about it.

from scipy.linalg.cython_lapack cimport dpotrf, dpotrs

from groupinf._blas cimport blas_int


cdef int cholesky_inplace(double* A, Py_ssize_t p) noexcept nogil:
    cdef blas_int n = <blas_int> p, info = 0
    dpotrf(b"L", &n, A, &n, &info)
    return info


cdef int cho_solve_inplace(
    const double* L, Py_ssize_t p, double* B, Py_ssize_t nrhs
) noexcept nogil:
    cdef blas_int n = <blas_int> p, m = <blas_int> nrhs, info = 0
    if nrhs == 0:
        return 0
    dpotrs(b"L", &n, &m, <double*> L, &n, B, &n, &info)
    return info


def cholesky(A):
    """Factor the symmetric positive-definite A in place; returns LAPACK info.

    info == 0 on success; info = j > 0 means the leading minor of order j is
    not positive definite (the factor is then unusable).
    """
    cdef double[:, ::1] Av = A
    cdef int info
    if Av.shape[0] != Av.shape[1]:
        raise ValueError("A must be square")
    if Av.shape[0] == 0:
        return 0
    with nogil:
        info = cholesky_inplace(&Av[0, 0], Av.shape[0])
    return info


def cho_solve(L, B):
    """Solve A x = b in place for every row b of B, given A's factor L."""
    cdef const double[:, ::1] Lv = L
    cdef double[:, ::1] Bv = B
    cdef int info
    if Bv.shape[0] == 0:
        return 0
    if Bv.shape[1] != Lv.shape[0]:
        raise ValueError("right-hand sides have the wrong length")
    with nogil:
        info = cho_solve_inplace(&Lv[0, 0], Lv.shape[0], &Bv[0, 0], Bv.shape[0])
    return info
