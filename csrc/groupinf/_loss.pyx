# Losses, margins and gradients of L2-regularised logistic regression.
#
# Objective (a sum, with per-example weights s_i and lam = l2_reg):
#
#     F(theta; s) = sum_i s_i * l(y_i, x_i; theta) + lam/2 * ||coef||^2
#
# Parameters live in an internal (K', d + 1) C-ordered matrix Theta whose row k
# is [coef_k, intercept_k]; K' = 1 for binary problems and K' = K for softmax.
# The Python layer maps Theta to the public flattening of design.md.
#
# Every hot loop here is `noexcept nogil` so that retraining can run groups in
# threads; dense products go through SciPy's BLAS, CSR products are plain loops
# over the stored entries (X is never densified).
#
# Stability: softplus and the sigmoid are evaluated on the branch that never
# exponentiates a positive number, so |z| = 1e4 is exact, not inf or nan.

from libc.math cimport exp, log, log1p, fabs, sqrt, NAN
from libc.stdlib cimport malloc, free
from scipy.linalg.cython_blas cimport dgemv, dgemm

from groupinf._blas cimport blas_int

import numpy as np


cdef inline double _softplus(double z) noexcept nogil:
    # log(1 + e^z) without overflow for large z or loss of digits for small z.
    if z > 0:
        return z + log1p(exp(-z))
    return log1p(exp(z))


cdef inline double _bin_loss(double z, double y) noexcept nogil:
    # softplus(z) - y z for y in {0, 1}, written without the cancellation
    # of softplus(z) - z when y = 1 (a well-classified point keeps its
    # digits): softplus(-z) = softplus(z) - z.
    if y > 0.5:
        return _softplus(-z)
    return _softplus(z)


cdef inline double _bin_dloss(double z, double y) noexcept nogil:
    # sigma(z) - y for y in {0, 1}: sigma(z) - 1 = -sigma(-z), so a saturated
    # positive point gets -e^-z with full relative accuracy, not 0. With
    # t = z for y = 0 and t = -z for y = 1 this is +-sigma(t), one exponential.
    cdef double t = -z if y > 0.5 else z
    cdef double e = exp(-fabs(t)), sig
    sig = 1.0 / (1.0 + e) if t >= 0 else e / (1.0 + e)
    return -sig if y > 0.5 else sig


cdef inline double _bin_loss_dloss(double z, double y, double* dloss) noexcept nogil:
    # _bin_loss and _bin_dloss from one exponential (the same numbers, bit
    # for bit): with t = z for y = 0 and t = -z for y = 1, the loss is
    # softplus(t) = max(t, 0) + log1p(e^-|t|) and dl/dz = +-sigma(t), and
    # sigma(t) is 1 / (1 + e) or e / (1 + e) with the same e = e^-|t|.
    cdef double t = -z if y > 0.5 else z
    cdef double e = exp(-fabs(t)), sig
    sig = 1.0 / (1.0 + e) if t >= 0 else e / (1.0 + e)
    dloss[0] = -sig if y > 0.5 else sig
    return (t if t > 0 else 0.0) + log1p(e)


cdef inline double _sigmoid_curv(double z) noexcept nogil:
    # sigma(z) * (1 - sigma(z)) = e^-|z| / (1 + e^-|z|)^2, no cancellation.
    cdef double e = exp(-fabs(z))
    return e / ((1.0 + e) * (1.0 + e))


# ---------------------------------------------------------------------------
# Per-example quantities from given logits.
# ---------------------------------------------------------------------------

def binary_pointwise(
    const double[::1] z,
    const double[::1] y,
    double[::1] loss_out,
    double[::1] dloss_out,
    double[::1] d2loss_out,
):
    """Per-example loss, dloss/dz and d2loss/dz2 of the binary logistic loss.

    l = log(1 + e^z) - y * z with y in {0, 1}.
    """
    cdef Py_ssize_t i, n = z.shape[0]
    with nogil:
        for i in range(n):
            loss_out[i] = _bin_loss_dloss(z[i], y[i], &dloss_out[i])
            d2loss_out[i] = _sigmoid_curv(z[i])


cdef void _softmax_row(
    const double* zrow, Py_ssize_t n_classes, double* prob, double* lse
) noexcept nogil:
    # Shift by the row maximum so the largest exponent is e^0 = 1; the other
    # terms are summed apart, so log(total) = log1p(rest) keeps its digits
    # when the top class dominates.
    cdef Py_ssize_t k, kmax = 0
    cdef double zmax = zrow[0], total, rest = 0.0
    for k in range(1, n_classes):
        if zrow[k] > zmax:
            zmax = zrow[k]
            kmax = k
    for k in range(n_classes):
        prob[k] = exp(zrow[k] - zmax)
        if k != kmax:
            rest += prob[k]
    total = 1.0 + rest
    for k in range(n_classes):
        prob[k] /= total
    lse[0] = zmax + log1p(rest)


cdef inline void _true_class_residual(double* prob, Py_ssize_t n_classes,
                                      Py_ssize_t y) noexcept nogil:
    # p_y - 1 = -(sum of the other probabilities): no cancellation when the
    # true class is predicted with near certainty.
    cdef Py_ssize_t k
    cdef double others = 0.0
    for k in range(n_classes):
        if k != y:
            others += prob[k]
    prob[y] = -others


def multinomial_pointwise(
    const double[:, ::1] Z,
    const long long[::1] y,
    double[::1] loss_out,
    double[:, ::1] prob_out,
):
    """Per-example softmax loss logsumexp(z) - z_y and class probabilities."""
    cdef Py_ssize_t i, n = Z.shape[0], n_classes = Z.shape[1]
    cdef double lse
    with nogil:
        for i in range(n):
            _softmax_row(&Z[i, 0], n_classes, &prob_out[i, 0], &lse)
            loss_out[i] = lse - Z[i, y[i]]


# ---------------------------------------------------------------------------
# Objective and gradient, dense X.
# ---------------------------------------------------------------------------

cdef double _binary_objgrad_dense(
    const double[:, ::1] X,
    const double[::1] y,
    const double[::1] s,
    const double[::1] theta,
    double l2_reg,
    double[::1] z,
    double[::1] grad,
) noexcept nogil:
    # IN: X (n, d), theta = [coef (d), intercept]; OUT: grad (d + 1), returns F.
    cdef blas_int n = <blas_int> X.shape[0], d = <blas_int> X.shape[1], one = 1
    cdef double alpha = 1.0, beta = 0.0, obj = 0.0, r, gb = 0.0, b = theta[d]
    cdef Py_ssize_t i, j

    # 1. z = X @ coef (C-ordered X is the Fortran matrix X^T of shape (d, n)).
    dgemv(b"T", &d, &n, &alpha, <double*> &X[0, 0], &d,
          <double*> &theta[0], &one, &beta, &z[0], &one)

    # 2. Weighted loss; z is overwritten by the residual s_i * dl/dz_i.
    for i in range(n):
        z[i] += b
        obj += s[i] * _bin_loss_dloss(z[i], y[i], &r)
        r = s[i] * r
        gb += r
        z[i] = r

    # 3. grad_coef = X^T r, then the penalty on coef only.
    dgemv(b"N", &d, &n, &alpha, <double*> &X[0, 0], &d,
          &z[0], &one, &beta, &grad[0], &one)
    for j in range(d):
        grad[j] += l2_reg * theta[j]
        obj += 0.5 * l2_reg * theta[j] * theta[j]
    grad[d] = gb
    return obj


cdef double _multinomial_objgrad_dense(
    const double[:, ::1] X,
    const long long[::1] y,
    const double[::1] s,
    const double[:, ::1] theta,
    double l2_reg,
    double[:, ::1] Z,
    double[:, ::1] grad,
) noexcept nogil:
    # IN: X (n, d), theta (K, d + 1); WORK: Z (n, K); OUT: grad (K, d + 1).
    cdef blas_int n = <blas_int> X.shape[0], d = <blas_int> X.shape[1]
    cdef blas_int K = <blas_int> theta.shape[0], dp1 = d + 1
    cdef double alpha = 1.0, beta = 0.0, obj = 0.0, lse, w, zy
    cdef Py_ssize_t i, j, k

    # 1. Z = X @ coef^T + intercept. In Fortran terms Z^T (K, n) is
    #    Theta_F[:d]^T (K, d) times X_F (d, n), Theta_F = Theta^T with ld d + 1.
    dgemm(b"T", b"N", &K, &n, &d, &alpha, <double*> &theta[0, 0], &dp1,
          <double*> &X[0, 0], &d, &beta, &Z[0, 0], &K)

    # 2. Loss and residual R = s * (softmax(Z) - onehot(y)), in place in Z.
    for k in range(K):
        grad[k, d] = 0.0
    for i in range(n):
        for k in range(K):
            Z[i, k] += theta[k, d]
        w = s[i]
        zy = Z[i, y[i]]
        _softmax_row(&Z[i, 0], K, &Z[i, 0], &lse)
        obj += w * (lse - zy)
        _true_class_residual(&Z[i, 0], K, y[i])
        for k in range(K):
            Z[i, k] *= w
            grad[k, d] += Z[i, k]

    # 3. grad_coef (K, d) = R^T X; in Fortran terms (d, K) = X_F (d, n) R_F^T.
    dgemm(b"N", b"T", &d, &K, &n, &alpha, <double*> &X[0, 0], &d,
          &Z[0, 0], &K, &beta, &grad[0, 0], &dp1)
    for k in range(K):
        for j in range(d):
            grad[k, j] += l2_reg * theta[k, j]
            obj += 0.5 * l2_reg * theta[k, j] * theta[k, j]
    return obj


# ---------------------------------------------------------------------------
# Objective and gradient, CSR X (data, indices, indptr), never densified.
# ---------------------------------------------------------------------------

cdef double _binary_objgrad_csr(
    const double[::1] data,
    const int[::1] indices,
    const int[::1] indptr,
    Py_ssize_t d,
    const double[::1] y,
    const double[::1] s,
    const double[::1] theta,
    double l2_reg,
    double[::1] z,
    double[::1] grad,
) noexcept nogil:
    cdef Py_ssize_t n = indptr.shape[0] - 1, i, j, q
    cdef double obj = 0.0, r, acc

    for j in range(d + 1):
        grad[j] = 0.0
    for i in range(n):
        acc = theta[d]
        for q in range(indptr[i], indptr[i + 1]):
            acc += data[q] * theta[indices[q]]
        obj += s[i] * _bin_loss_dloss(acc, y[i], &r)
        r = s[i] * r
        z[i] = r
        grad[d] += r
        for q in range(indptr[i], indptr[i + 1]):
            grad[indices[q]] += data[q] * r
    for j in range(d):
        grad[j] += l2_reg * theta[j]
        obj += 0.5 * l2_reg * theta[j] * theta[j]
    return obj


cdef double _multinomial_objgrad_csr(
    const double[::1] data,
    const int[::1] indices,
    const int[::1] indptr,
    Py_ssize_t d,
    const long long[::1] y,
    const double[::1] s,
    const double[:, ::1] theta,
    double l2_reg,
    double[:, ::1] Z,
    double[:, ::1] grad,
) noexcept nogil:
    cdef Py_ssize_t n = indptr.shape[0] - 1, K = theta.shape[0], i, j, k, q
    cdef double obj = 0.0, lse, zy, w

    for k in range(K):
        for j in range(d + 1):
            grad[k, j] = 0.0
    for i in range(n):
        for k in range(K):
            Z[i, k] = theta[k, d]
        for q in range(indptr[i], indptr[i + 1]):
            for k in range(K):
                Z[i, k] += data[q] * theta[k, indices[q]]
        zy = Z[i, y[i]]
        w = s[i]
        _softmax_row(&Z[i, 0], K, &Z[i, 0], &lse)
        obj += w * (lse - zy)
        _true_class_residual(&Z[i, 0], K, y[i])
        for k in range(K):
            Z[i, k] *= w
            grad[k, d] += Z[i, k]
        for q in range(indptr[i], indptr[i + 1]):
            for k in range(K):
                grad[k, indices[q]] += data[q] * Z[i, k]
    for k in range(K):
        for j in range(d):
            grad[k, j] += l2_reg * theta[k, j]
            obj += 0.5 * l2_reg * theta[k, j] * theta[k, j]
    return obj


# ---------------------------------------------------------------------------
# Python entry points: validate shapes once, then run without the GIL.
# ---------------------------------------------------------------------------

def binary_objgrad_dense(X, y, s, theta, double l2_reg, z_work, grad_out):
    """Objective F and its gradient (into grad_out) for dense X, binary."""
    cdef const double[:, ::1] Xv = X
    cdef const double[::1] yv = y, sv = s, tv = theta
    cdef double[::1] zv = z_work, gv = grad_out
    cdef double obj
    if Xv.shape[0] == 0:
        raise ValueError("X has no rows")
    with nogil:
        obj = _binary_objgrad_dense(Xv, yv, sv, tv, l2_reg, zv, gv)
    return obj


def multinomial_objgrad_dense(X, y, s, theta, double l2_reg, Z_work, grad_out):
    """Objective F and its gradient (into grad_out) for dense X, softmax."""
    cdef const double[:, ::1] Xv = X, tv = theta
    cdef const long long[::1] yv = y
    cdef const double[::1] sv = s
    cdef double[:, ::1] Zv = Z_work, gv = grad_out
    cdef double obj
    if Xv.shape[0] == 0:
        raise ValueError("X has no rows")
    with nogil:
        obj = _multinomial_objgrad_dense(Xv, yv, sv, tv, l2_reg, Zv, gv)
    return obj


def binary_objgrad_csr(data, indices, indptr, Py_ssize_t d, y, s, theta,
                       double l2_reg, z_work, grad_out):
    """Objective F and its gradient for CSR X, binary."""
    cdef const double[::1] dv = data, yv = y, sv = s, tv = theta
    cdef const int[::1] iv = indices, pv = indptr
    cdef double[::1] zv = z_work, gv = grad_out
    cdef double obj
    with nogil:
        obj = _binary_objgrad_csr(dv, iv, pv, d, yv, sv, tv, l2_reg, zv, gv)
    return obj


def multinomial_objgrad_csr(data, indices, indptr, Py_ssize_t d, y, s, theta,
                            double l2_reg, Z_work, grad_out):
    """Objective F and its gradient for CSR X, softmax."""
    cdef const double[::1] dv = data, sv = s
    cdef const int[::1] iv = indices, pv = indptr
    cdef const long long[::1] yv = y
    cdef const double[:, ::1] tv = theta
    cdef double[:, ::1] Zv = Z_work, gv = grad_out
    cdef double obj
    with nogil:
        obj = _multinomial_objgrad_csr(dv, iv, pv, d, yv, sv, tv, l2_reg, Zv, gv)
    return obj


def logits_dense(X, theta, Z_out):
    """Z_out (n, K') = X @ theta[:, :d]^T + theta[:, d], through SciPy's BLAS.

    Kept here, rather than left to NumPy's matmul, so that the refit loop uses
    one BLAS library (and one thread pool) only.
    """
    cdef const double[:, ::1] Xv = X, tv = theta
    cdef double[:, ::1] Zv = Z_out
    cdef blas_int n = <blas_int> Xv.shape[0], d = <blas_int> Xv.shape[1]
    cdef blas_int K = <blas_int> tv.shape[0], dp1 = d + 1
    cdef double alpha = 1.0, beta = 0.0
    cdef Py_ssize_t i, k
    if tv.shape[1] != d + 1 or Zv.shape[0] != n or Zv.shape[1] != K:
        raise ValueError("logits_dense: shapes do not match")
    if n == 0:
        return
    with nogil:
        dgemm(b"T", b"N", &K, &n, &d, &alpha, <double*> &tv[0, 0], &dp1,
              <double*> &Xv[0, 0], &d, &beta, &Zv[0, 0], &K)
        for i in range(n):
            for k in range(K):
                Zv[i, k] += tv[k, d]


# ---------------------------------------------------------------------------
# The residuals of many refits in SIMD registers.
#
# A batched gradient pass spends about half its time on the elementwise
# residual s_i (sigma(t) or -sigma(t)) of every row and refit, one exp each:
# libm's exp is a scalar call. On x86-64 with AVX2 and FMA (checked at run
# time) the loop below runs four refits per instruction with its own
# exp(-a), a >= 0: a = k ln2 - r with k = round(a / ln2) (Cody-Waite split of
# ln2, so r is exact), exp(-r) by its degree-13 Taylor polynomial on
# |r| <= ln2 / 2 (truncation below 1e-17) and 2^-k applied as two exact
# power-of-two factors so that results down to the subnormals are rounded
# once. It is within 1 ulp of libm's exp, gives every lane the same
# operations (a refit's numbers do not depend on its position in the
# batch), keeps NaN as NaN and sends +-inf to the limits. Elsewhere the
# scalar libm loop runs.
# ---------------------------------------------------------------------------

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
    #define GI_HAVE_SIMD_RESID 1
    __attribute__((target("avx2,fma"), optimize("no-trapping-math")))
    static void gi_resid_avx2(long B, double* restrict z,
                              const double* restrict c, double sgn,
                              double ws) {
        for (long b = 0; b < B; b++) {
            double t = sgn * (z[b] + c[b]);
            double a = t < 0 ? -t : t;
            a = a < 746.0 ? a : 746.0;  /* exp(-746) is 0 in doubles */
            /* k = round(a / ln2) in the low bits of kd (shifter 1.5 2^52). */
            double kd = a * 1.4426950408889634 + 6755399441055744.0;
            uint64_t kb;
            memcpy(&kb, &kd, 8);
            double kf = kd - 6755399441055744.0;
            uint64_t k = kb - (uint64_t) 0x4338000000000000ULL;
            double r = (kf * 6.93147180369123816490e-01 - a)
                       + kf * 1.90821492927058770002e-10;
            double p = 1.0 / 6227020800.0;
            p = p * r + 1.0 / 479001600.0;
            p = p * r + 1.0 / 39916800.0;
            p = p * r + 1.0 / 3628800.0;
            p = p * r + 1.0 / 362880.0;
            p = p * r + 1.0 / 40320.0;
            p = p * r + 1.0 / 5040.0;
            p = p * r + 1.0 / 720.0;
            p = p * r + 1.0 / 120.0;
            p = p * r + 1.0 / 24.0;
            p = p * r + 1.0 / 6.0;
            p = p * r + 0.5;
            p = p * r + 1.0;
            p = p * r + 1.0;
            uint64_t k1 = k >> 1, k2 = k - k1;
            uint64_t b1 = (1023 - k1) << 52, b2 = (1023 - k2) << 52;
            double s1, s2;
            memcpy(&s1, &b1, 8);
            memcpy(&s2, &b2, 8);
            double e = (p * s1) * s2;
            /* sigma(t) = 1 / (1 + e) for t >= 0, e / (1 + e) below. */
            double num = t >= 0 ? 1.0 : e;
            double res = ws * (num / (1.0 + e));
            z[b] = (t != t) ? t : res;
        }
    }
    static int gi_simd_resid(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static void gi_resid_avx2(long B, double* z, const double* c, double sgn,
                              double ws) {}
    static int gi_simd_resid(void) { return 0; }
    #endif
    """
    void gi_resid_avx2(long B, double* z, const double* c, double sgn,
                       double ws) noexcept nogil
    int gi_simd_resid() noexcept nogil

cdef bint _SIMD_RESID = gi_simd_resid()


def simd_residuals():
    """Whether batched gradient passes use the AVX2 residual loop."""
    return bool(_SIMD_RESID)


# ---------------------------------------------------------------------------
# Many refits at once (binary, dense X): B parameter vectors, one weight
# vector each, share every pass over X. The B weight vectors are the base
# weights s with group b's rows scaled by (1 - frac): a CSR (B, n) matrix of
# removal fractions carries the difference, so no (n, B) weight matrix exists.
# ---------------------------------------------------------------------------

cdef void _binary_objgrad_batch(
    const double[:, ::1] X,
    const double[::1] y,
    const double[::1] s,
    const double[:, ::1] theta,
    const int[::1] rm_indptr,
    const int[::1] rm_indices,
    const double[::1] rm_frac,
    double l2_reg,
    double[:, ::1] Z,
    double[:, ::1] grad,
    double[::1] obj,
    bint with_obj,
) noexcept nogil:
    # IN: X (n, d), theta (B, d + 1); WORK: Z (n, B); OUT: grad (B, d+1), obj (B).
    # Without with_obj only the gradients are computed (obj is left as NaN):
    # the loss costs a log1p per entry, as much as the rest of the loop.
    cdef blas_int n = <blas_int> X.shape[0], d = <blas_int> X.shape[1]
    cdef blas_int B = <blas_int> theta.shape[0], dp1 = d + 1
    cdef double alpha = 1.0, beta = 0.0, z, w, r, sgn, nan = NAN
    cdef Py_ssize_t i, j, b, q
    cdef double* icpt = NULL

    # 1. Z = X @ coef^T + intercept: (n, B) in C order, one GEMM for all B.
    dgemm(b"T", b"N", &B, &n, &d, &alpha, <double*> &theta[0, 0], &dp1,
          <double*> &X[0, 0], &d, &beta, &Z[0, 0], &B)

    # 2. The removed rows' share of the loss, while Z still holds logits.
    for b in range(B):
        obj[b] = 0.0 if with_obj else nan
        grad[b, d] = 0.0
        if not with_obj:
            continue
        for q in range(rm_indptr[b], rm_indptr[b + 1]):
            i = rm_indices[q]
            z = Z[i, b] + theta[b, d]
            obj[b] -= rm_frac[q] * s[i] * _bin_loss(z, y[i])

    # 3. Full-weight loss and residuals s_i (sigma(z) - y_i), in place.
    if not with_obj and _SIMD_RESID:
        icpt = <double*> malloc(B * sizeof(double))
        if icpt != NULL:
            for b in range(B):
                icpt[b] = theta[b, d]
    if with_obj:
        for i in range(n):
            w = s[i]
            for b in range(B):
                obj[b] += w * _bin_loss_dloss(Z[i, b] + theta[b, d], y[i], &r)
                Z[i, b] = w * r
    elif _SIMD_RESID and icpt != NULL:
        for i in range(n):
            sgn = -1.0 if y[i] > 0.5 else 1.0
            gi_resid_avx2(B, &Z[i, 0], icpt, sgn, s[i] * sgn)
    else:
        for i in range(n):
            w = s[i]
            for b in range(B):
                Z[i, b] = w * _bin_dloss(Z[i, b] + theta[b, d], y[i])

    free(icpt)

    # 4. Scale the removed rows' residuals by (1 - frac).
    for b in range(B):
        for q in range(rm_indptr[b], rm_indptr[b + 1]):
            Z[rm_indices[q], b] *= 1.0 - rm_frac[q]
    for i in range(n):
        for b in range(B):
            grad[b, d] += Z[i, b]

    # 5. grad_coef (B, d) = R^T X, one GEMM; then the penalty.
    dgemm(b"N", b"T", &d, &B, &n, &alpha, <double*> &X[0, 0], &d,
          &Z[0, 0], &B, &beta, &grad[0, 0], &dp1)
    for b in range(B):
        for j in range(d):
            grad[b, j] += l2_reg * theta[b, j]
            if with_obj:
                obj[b] += 0.5 * l2_reg * theta[b, j] * theta[b, j]


def binary_objgrad_batch(X, y, s, theta, rm_indptr, rm_indices, rm_frac,
                         double l2_reg, Z_work, grad_out, obj_out,
                         bint with_obj=True):
    """Objectives and gradients of B reweighted binary problems at once.

    With ``with_obj=False`` only the gradients are computed and ``obj_out``
    is filled with NaN (about half the elementwise work).
    """
    cdef const double[:, ::1] Xv = X, tv = theta
    cdef const double[::1] yv = y, sv = s, fv = rm_frac
    cdef const int[::1] pv = rm_indptr, iv = rm_indices
    cdef double[:, ::1] Zv = Z_work, gv = grad_out
    cdef double[::1] ov = obj_out
    if (tv.shape[0] == 0 or Zv.shape[1] != tv.shape[0]
            or pv.shape[0] != tv.shape[0] + 1 or Zv.shape[0] != Xv.shape[0]):
        raise ValueError("binary_objgrad_batch: shapes do not match")
    with nogil:
        _binary_objgrad_batch(Xv, yv, sv, tv, pv, iv, fv, l2_reg, Zv, gv, ov,
                              with_obj)
