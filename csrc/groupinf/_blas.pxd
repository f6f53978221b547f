# The one place that knows how SciPy spells the BLAS/LAPACK integer type.
#
# scipy.linalg.cython_blas declares its routines with plain C `int`; a SciPy
# built for 64-bit BLAS integers would change this single line.

ctypedef int blas_int
