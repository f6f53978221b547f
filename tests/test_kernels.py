"""The Cython kernels (_loss, _hessian, _linalg) against plain NumPy and
4th-order finite differences, binary and softmax, dense and CSR."""

import _reference as ref
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit, logsumexp

from groupinf import _hessian, _linalg, _loss, _newton
from groupinf._objective import Objective

N, D, K = 60, 5, 4


def _problem(rng, n_classes, n=N, d=D, density=0.6, scale=1.0):
    """Sparse-ish X (so CSR is meaningful), labels, weights with zeros, theta."""
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < density)
    if n_classes == 2:
        y = rng.integers(0, 2, n).astype(np.float64)
        theta = scale * rng.standard_normal((1, d + 1))
    else:
        y = rng.integers(0, n_classes, n).astype(np.int64)
        theta = scale * rng.standard_normal((n_classes, d + 1))
    s = rng.exponential(size=n) * (rng.random(n) < 0.8)
    return np.ascontiguousarray(X), y, s, theta


def _objgrad_kernel(X, y, s, theta, lam, csr=False):
    """Call the right objgrad kernel directly; theta in the internal layout."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    n, d = X.shape
    binary = theta.shape[0] == 1
    grad = np.full(theta.shape, np.nan)  # every entry must be written
    work = np.full(n if binary else (n, theta.shape[0]), np.nan)
    if binary:
        args = (y, s, theta[0], lam, work, grad[0])
    else:
        args = (y, s, theta, lam, work, grad)
    if csr:
        A = sp.csr_matrix(X)
        A.indices = A.indices.astype(np.int32)
        A.indptr = A.indptr.astype(np.int32)
        f = _loss.binary_objgrad_csr if binary else _loss.multinomial_objgrad_csr
        obj = f(A.data, A.indices, A.indptr, d, *args)
    else:
        f = _loss.binary_objgrad_dense if binary else _loss.multinomial_objgrad_dense
        obj = f(X, *args)
    return obj, grad


# ---------------------------------------------------------------------------
# Per-example quantities
# ---------------------------------------------------------------------------


def test_binary_pointwise_matches_numpy(rng):
    z = 6 * rng.standard_normal(200)
    y = rng.integers(0, 2, 200).astype(np.float64)
    loss, dloss, curv = np.empty(200), np.empty(200), np.empty(200)
    _loss.binary_pointwise(z, y, loss, dloss, curv)
    np.testing.assert_allclose(
        loss, ref.pointwise_loss(z[:, None], y, True), rtol=1e-13, atol=1e-15
    )
    np.testing.assert_allclose(dloss, expit(z) - y, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(curv, expit(z) * expit(-z), rtol=1e-13, atol=0)


def test_binary_pointwise_derivatives_are_finite_differences(rng):
    z = 3 * rng.standard_normal(50)
    y = rng.integers(0, 2, 50).astype(np.float64)

    def kernel(zz):
        out = [np.empty(50) for _ in range(3)]
        _loss.binary_pointwise(np.ascontiguousarray(zz), y, *out)
        return np.stack(out)

    h = 1e-3
    fd = (
        -kernel(z + 2 * h) + 8 * kernel(z + h) - 8 * kernel(z - h) + kernel(z - 2 * h)
    ) / (12 * h)
    _, dloss, curv = kernel(z)
    np.testing.assert_allclose(fd[0], dloss, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fd[1], curv, rtol=0, atol=1e-10)


def test_multinomial_pointwise_matches_numpy(rng):
    Z = 5 * rng.standard_normal((100, K))
    y = rng.integers(0, K, 100).astype(np.int64)
    loss, prob = np.empty(100), np.empty((100, K))
    _loss.multinomial_pointwise(Z, y, loss, prob)
    np.testing.assert_allclose(
        loss, logsumexp(Z, axis=1) - Z[np.arange(100), y], rtol=1e-13, atol=1e-14
    )
    np.testing.assert_allclose(
        prob, np.exp(Z - logsumexp(Z, axis=1)[:, None]), rtol=1e-13, atol=1e-300
    )
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-15)


def test_logits_dense_matches_numpy(rng):
    X = rng.standard_normal((37, D))
    for n_logits in (1, K):
        theta = rng.standard_normal((n_logits, D + 1))
        Z = np.full((37, n_logits), np.nan)
        _loss.logits_dense(X, theta, Z)
        np.testing.assert_allclose(
            Z, X @ theta[:, :-1].T + theta[:, -1], rtol=1e-13, atol=1e-14
        )


def test_logits_dense_rejects_mismatched_shapes(rng):
    X = rng.standard_normal((5, D))
    with pytest.raises(ValueError, match="shapes do not match"):
        _loss.logits_dense(X, np.zeros((2, D)), np.empty((5, 2)))
    with pytest.raises(ValueError, match="shapes do not match"):
        _loss.logits_dense(X, np.zeros((2, D + 1)), np.empty((4, 2)))


# ---------------------------------------------------------------------------
# Objective and gradient
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, K])
@pytest.mark.parametrize("csr", [False, True], ids=["dense", "csr"])
def test_objgrad_matches_numpy(rng, n_classes, csr):
    X, y, s, theta = _problem(rng, n_classes)
    lam = 0.7
    obj, grad = _objgrad_kernel(X, y, s, theta, lam, csr=csr)
    binary = n_classes == 2
    yy = y if binary else y.astype(np.int64)
    W, b = theta[:, :-1], theta[:, -1]
    assert obj == pytest.approx(ref.objective(X, yy, s, W, b, lam, binary), rel=1e-13)
    gW, gb = ref.gradient(X, yy, s, W, b, lam, binary)
    np.testing.assert_allclose(grad, np.column_stack([gW, gb]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_classes", [2, K])
@pytest.mark.parametrize("csr", [False, True], ids=["dense", "csr"])
def test_gradient_is_finite_difference_of_objective(rng, n_classes, csr):
    X, y, s, theta = _problem(rng, n_classes)
    lam = 1.3

    def F(t):
        return np.array(
            _objgrad_kernel(X, y, s, t.reshape(theta.shape), lam, csr=csr)[0]
        )

    fd = ref.fourth_order_derivative(F, theta.ravel(), 1e-3)
    _, grad = _objgrad_kernel(X, y, s, theta, lam, csr=csr)
    np.testing.assert_allclose(fd, grad.ravel(), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("n_classes", [2, K])
def test_csr_kernels_equal_dense_kernels(rng, n_classes):
    X, y, s, theta = _problem(rng, n_classes, n=300, d=8, density=0.3)
    obj_d, grad_d = _objgrad_kernel(X, y, s, theta, 0.5)
    obj_s, grad_s = _objgrad_kernel(X, y, s, theta, 0.5, csr=True)
    assert obj_s == pytest.approx(obj_d, rel=1e-14)
    np.testing.assert_allclose(grad_s, grad_d, rtol=1e-12, atol=1e-12)


def test_csr_kernel_handles_empty_rows_and_columns(rng):
    X, y, s, theta = _problem(rng, 2, n=30)
    X[::3] = 0.0  # empty rows
    X[:, 2] = 0.0  # an empty column
    obj_d, grad_d = _objgrad_kernel(X, y, s, theta, 0.5)
    obj_s, grad_s = _objgrad_kernel(X, y, s, theta, 0.5, csr=True)
    assert obj_s == pytest.approx(obj_d, rel=1e-14)
    np.testing.assert_allclose(grad_s, grad_d, rtol=1e-12, atol=1e-13)
    # Column 2 only sees the penalty.
    assert grad_s[0, 2] == pytest.approx(0.5 * theta[0, 2], rel=1e-14)


@pytest.mark.parametrize("n_classes", [2, K])
def test_objective_class_gradient_is_finite_difference(rng, n_classes):
    # The Python driver (Objective.objgrad), dense and CSR, against its own
    # objective: the layout glue between it and the kernels.
    X, y, s, theta = _problem(rng, n_classes)
    for Xin in (X, sp.csr_matrix(X)):
        if sp.issparse(Xin):
            Xin.indices = Xin.indices.astype(np.int32)
            Xin.indptr = Xin.indptr.astype(np.int32)
        obj = Objective(Xin, y, n_classes, 0.9)

        def F(t, obj=obj):
            return np.array(obj.objgrad(t, s)[0])

        fd = ref.fourth_order_derivative(F, theta.ravel(), 1e-3)
        np.testing.assert_allclose(
            fd, obj.objgrad(theta.ravel(), s)[1], rtol=1e-8, atol=1e-8
        )


# ---------------------------------------------------------------------------
# Hessians
# ---------------------------------------------------------------------------


def test_binary_hessian_kernel_rows_and_weights(rng):
    X = rng.standard_normal((50, D))
    # Repeated rows, arbitrary order, more rows than one work chunk (1024).
    rows = rng.integers(0, 50, 2500).astype(np.int64)
    coef = rng.exponential(size=rows.size)
    coef[::7] = 0.0
    H = np.full((D + 1, D + 1), np.nan)
    _hessian.binary_hessian(X, rows, coef, H)
    Xt = np.column_stack([X, np.ones(50)])[rows]
    expected = Xt.T @ (coef[:, None] * Xt)
    np.testing.assert_allclose(
        H, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max()
    )
    assert np.array_equal(H, H.T)


def test_multinomial_hessian_kernel_rows_and_weights(rng):
    X = rng.standard_normal((50, D))
    Z = 2 * rng.standard_normal((50, K))
    prob = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
    rows = rng.integers(0, 50, 1500).astype(np.int64)
    coef = rng.exponential(size=rows.size)
    H = np.full((K * (D + 1), K * (D + 1)), np.nan)
    _hessian.multinomial_hessian(X, rows, coef, prob, H)

    # Block (k, l) = sum_r c_r (p_k delta_kl - p_k p_l) xt xt^T.
    Xt = np.column_stack([X, np.ones(50)])[rows]
    P = prob[rows]
    Dkl = P[:, :, None] * np.eye(K) - P[:, :, None] * P[:, None, :]
    expected = np.einsum("r,rkl,ra,rb->kalb", coef, Dkl, Xt, Xt).reshape(
        K * (D + 1), K * (D + 1)
    )
    np.testing.assert_allclose(
        H, expected, rtol=1e-11, atol=1e-12 * np.abs(expected).max()
    )
    assert np.array_equal(H, H.T)


def test_hessian_kernels_on_no_rows_give_zero(rng):
    X = rng.standard_normal((10, D))
    rows, coef = np.empty(0, np.int64), np.empty(0)
    H = np.full((D + 1, D + 1), np.nan)
    _hessian.binary_hessian(X, rows, coef, H)
    assert np.array_equal(H, np.zeros_like(H))
    prob = np.full((10, K), 1.0 / K)
    H = np.full((K * (D + 1), K * (D + 1)), np.nan)
    _hessian.multinomial_hessian(X, rows, coef, prob, H)
    assert np.array_equal(H, np.zeros_like(H))


def test_hessian_kernels_reject_wrong_shapes(rng):
    X = rng.standard_normal((10, D))
    rows = np.arange(3, dtype=np.int64)
    with pytest.raises(ValueError, match="H_out must have shape"):
        _hessian.binary_hessian(X, rows, np.ones(3), np.empty((D, D)))
    with pytest.raises(ValueError, match="same length"):
        _hessian.binary_hessian(X, rows, np.ones(2), np.empty((D + 1, D + 1)))
    prob = np.full((10, K), 1.0 / K)
    with pytest.raises(ValueError, match="H_out must have shape"):
        _hessian.multinomial_hessian(
            X, rows, np.ones(3), prob, np.empty((D + 1, D + 1))
        )
    with pytest.raises(ValueError, match="same length"):
        _hessian.multinomial_hessian(
            X, rows, np.ones(4), prob, np.empty((K * (D + 1), K * (D + 1)))
        )


def _fd_hessian(obj, theta, s):
    return ref.fourth_order_derivative(
        lambda t: obj.objgrad(t, s)[1], theta.ravel(), 1e-4
    )


@pytest.mark.parametrize("n_classes", [2, K])
@pytest.mark.parametrize("csr", [False, True], ids=["dense", "csr"])
def test_loss_hessian_is_finite_difference_of_gradient(rng, n_classes, csr):
    X, y, s, theta = _problem(rng, n_classes)
    Xin = sp.csr_matrix(X) if csr else X
    obj = Objective(Xin, y, n_classes, 0.8)
    _, _, curv = obj.pointwise(theta.ravel())
    rows = np.flatnonzero(s > 0)
    H_loss = obj.loss_hessian(curv, rows, s[rows])
    H = H_loss + np.diag(obj.reg_diag)
    fd = _fd_hessian(obj, theta, s)
    np.testing.assert_allclose(H, fd, rtol=1e-7, atol=1e-7 * np.abs(H).max())
    if n_classes == 2:
        # Binary: regularised() adds the penalty and nothing else.
        np.testing.assert_array_equal(obj.regularised(H_loss), H)

    # ... and the NumPy Hessian.
    expected = ref.loss_hessian_internal(
        X, s, theta[:, :-1], theta[:, -1], n_classes == 2
    )
    np.testing.assert_allclose(
        H - np.diag(obj.reg_diag), expected, rtol=1e-11, atol=1e-12 * np.abs(H).max()
    )


def test_sparse_and_dense_hessian_paths_agree(rng):
    for n_classes in (2, K):
        X, y, _, theta = _problem(rng, n_classes, density=0.3)
        dense = Objective(X, y, n_classes, 1.0)
        csr = Objective(sp.csr_matrix(X), y, n_classes, 1.0)
        _, _, curv = dense.pointwise(theta.ravel())
        rows = np.array([0, 3, 3, 17, 42, 59], dtype=np.int64)
        coef = rng.exponential(size=rows.size)
        Hd = dense.loss_hessian(curv, rows, coef)
        Hs = csr.loss_hessian(curv, rows, coef)
        np.testing.assert_allclose(Hs, Hd, rtol=1e-12, atol=1e-13 * np.abs(Hd).max())


def test_binary_hessian_at_is_finite_difference_of_gradient(rng):
    X, y, s, theta = _problem(rng, 2)
    obj = Objective(X, y, 2, 0.5)
    H = _newton.hessian_at(obj, theta.ravel(), s)
    np.testing.assert_allclose(
        H, _fd_hessian(obj, theta, s), rtol=1e-7, atol=1e-7 * np.abs(H).max()
    )


def test_multinomial_hessian_at_adds_only_the_flat_direction(rng):
    # The softmax objective is flat along v = "add c to every intercept", so
    # the finite-difference Hessian is singular there; hessian_at adds c v v^T
    # and nothing else, which makes it positive definite.
    X, y, s, theta = _problem(rng, K)
    obj = Objective(X, y, K, 0.5)
    H = _newton.hessian_at(obj, theta.ravel(), s)
    fd = _fd_hessian(obj, theta, s)
    v = np.zeros((K, D + 1))
    v[:, -1] = 1.0 / np.sqrt(K)
    v = v.ravel()
    scale = np.abs(fd).max()
    np.testing.assert_allclose(fd @ v, 0.0, atol=1e-7 * scale)
    c = v @ H @ v
    assert c > 0
    np.testing.assert_allclose(H - c * np.outer(v, v), fd, rtol=1e-7, atol=1e-7 * scale)
    assert _linalg.cholesky(H.copy()) == 0


# ---------------------------------------------------------------------------
# Cholesky
# ---------------------------------------------------------------------------


def _spd(rng, p):
    M = rng.standard_normal((p, p))
    return M @ M.T + p * np.eye(p)


def test_cholesky_factor_and_solve(rng):
    p = 9
    A = _spd(rng, p)
    L = A.copy()
    assert _linalg.cholesky(L) == 0
    # The factor sits in the C-order upper triangle (LAPACK's lower one).
    U = np.triu(L)
    np.testing.assert_allclose(U.T @ U, A, rtol=1e-13, atol=1e-13 * p)
    np.testing.assert_allclose(U.T, np.linalg.cholesky(A), rtol=1e-12, atol=1e-13)

    B = rng.standard_normal((4, p))  # four right-hand sides as rows
    Xs = B.copy()
    assert _linalg.cho_solve(L, Xs) == 0
    np.testing.assert_allclose(Xs, np.linalg.solve(A, B.T).T, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(
        _newton.solve(L, B[0]), np.linalg.solve(A, B[0]), rtol=1e-11, atol=1e-13
    )


def test_cholesky_reports_the_failing_minor():
    A = np.diag([1.0, 2.0, -1.0, 3.0])
    assert _linalg.cholesky(A.copy()) == 3
    # Indefinite 2x2 leading block: minor 2 fails.
    B = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert _linalg.cholesky(B.copy()) == 2
    with pytest.raises(
        _newton.SingularHessianError, match="leading minor 2 of 3.*increase l2_reg"
    ):
        _newton.factor(B)
    with pytest.raises(_newton.SingularHessianError, match="non-finite"):
        _newton.factor(np.array([[1.0, np.nan], [np.nan, 1.0]]))


def test_cholesky_edge_cases(rng):
    assert _linalg.cholesky(np.empty((0, 0))) == 0
    with pytest.raises(ValueError, match="square"):
        _linalg.cholesky(np.eye(3)[:2].copy())
    L = _spd(rng, 3)
    _linalg.cholesky(L)
    assert _linalg.cho_solve(L, np.empty((0, 3))) == 0
    with pytest.raises(ValueError, match="wrong length"):
        _linalg.cho_solve(L, np.ones((2, 4)))


# ---------------------------------------------------------------------------
# Stability at extreme logits
# ---------------------------------------------------------------------------


def test_binary_pointwise_extreme_logits_are_exact():
    z = np.array([1e4, -1e4, 1e4, -1e4, 800.0, -800.0, 40.0, -40.0])
    y = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    loss, dloss, curv = np.empty(8), np.empty(8), np.empty(8)
    _loss.binary_pointwise(z, y, loss, dloss, curv)
    assert loss[0] == 1e4
    assert loss[1] == 0.0  # log1p(e^-1e4) underflows to exactly 0
    assert loss[2] == 0.0
    assert loss[3] == 1e4
    assert loss[4] == 800.0 and loss[5] == 800.0
    np.testing.assert_allclose(loss[6:], np.exp(-40.0), rtol=0, atol=1e-16)
    np.testing.assert_array_equal(dloss[:6], [1.0, 0.0, 0.0, -1.0, 1.0, -1.0])
    np.testing.assert_array_equal(curv[:6], 0.0)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(dloss))
    np.testing.assert_allclose(curv[6:], np.exp(-40.0), rtol=1e-12)


def test_multinomial_pointwise_extreme_logits_are_exact():
    Z = np.array([[1e4, 0.0, -1e4]] * 3 + [[-1e4, -1e4, -1e4]])
    y = np.array([0, 1, 2, 1], dtype=np.int64)
    loss, prob = np.empty(4), np.empty((4, 3))
    _loss.multinomial_pointwise(Z, y, loss, prob)
    np.testing.assert_array_equal(loss[:3], [0.0, 1e4, 2e4])
    assert loss[3] == pytest.approx(np.log(3.0), rel=1e-10)
    np.testing.assert_array_equal(prob[:3], [[1.0, 0.0, 0.0]] * 3)
    np.testing.assert_allclose(prob[3], 1.0 / 3.0, rtol=1e-15)


@pytest.mark.parametrize("n_classes", [2, K])
@pytest.mark.parametrize("csr", [False, True], ids=["dense", "csr"])
def test_objgrad_finite_at_extreme_logits(rng, n_classes, csr):
    # Logits of order 1e4: losses are huge but exact, gradients bounded.
    X, y, s, theta = _problem(rng, n_classes, density=1.0, scale=3e3)
    obj, grad = _objgrad_kernel(X, y, s, theta, 1e-3, csr=csr)
    binary = n_classes == 2
    W, b = theta[:, :-1], theta[:, -1]
    assert np.abs(ref.logits(X, W, b)).max() > 1e3
    assert np.isfinite(obj) and np.all(np.isfinite(grad))
    assert obj == pytest.approx(ref.objective(X, y, s, W, b, 1e-3, binary), rel=1e-12)
    gW, gb = ref.gradient(X, y, s, W, b, 1e-3, binary)
    np.testing.assert_allclose(grad, np.column_stack([gW, gb]), rtol=1e-10, atol=1e-9)


# ---------------------------------------------------------------------------
# Batched binary objective (many reweighted problems at once)
# ---------------------------------------------------------------------------


def test_binary_objgrad_batch_equals_one_problem_at_a_time(rng):
    n, d, B = 80, D, 6
    X, y, s, _ = _problem(rng, 2, n=n, d=d)
    theta = rng.standard_normal((B, d + 1))
    # Removal fractions per problem; problem 2 removes nothing.
    rm = sp.random(B, n, density=0.15, random_state=rng, format="csr")
    rm.data = rng.uniform(0.0, 1.0, rm.nnz)
    rm = sp.csr_matrix(sp.diags([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]) @ rm)
    rm.eliminate_zeros()
    assert rm[2].nnz == 0 and rm.nnz > 0
    Z = np.full((n, B), np.nan)
    grad, obj = np.full((B, d + 1), np.nan), np.full(B, np.nan)
    _loss.binary_objgrad_batch(
        X,
        y,
        s,
        theta,
        rm.indptr.astype(np.int32),
        rm.indices.astype(np.int32),
        rm.data,
        0.6,
        Z,
        grad,
        obj,
    )
    for b in range(B):
        s_b = s * (1.0 - rm[b].toarray().ravel())
        f, g = _objgrad_kernel(X, y, s_b, theta[b : b + 1], 0.6)
        assert obj[b] == pytest.approx(f, rel=1e-12), b
        np.testing.assert_allclose(grad[b], g[0], rtol=1e-11, atol=1e-12)


def test_binary_objgrad_batch_rejects_mismatched_shapes(rng):
    X, y, s, _ = _problem(rng, 2, n=10)
    theta = np.zeros((3, D + 1))
    indptr = np.zeros(4, dtype=np.int32)
    idx, frac = np.empty(0, np.int32), np.empty(0)
    args = (0.5, np.empty((10, 2)), np.empty((3, D + 1)), np.empty(3))
    with pytest.raises(ValueError, match="shapes do not match"):
        _loss.binary_objgrad_batch(X, y, s, theta, indptr, idx, frac, *args)
    with pytest.raises(ValueError, match="shapes do not match"):
        _loss.binary_objgrad_batch(
            X,
            y,
            s,
            theta,
            indptr[:3],
            idx,
            frac,
            0.5,
            np.empty((10, 3)),
            np.empty((3, D + 1)),
            np.empty(3),
        )


@pytest.mark.parametrize("with_obj", [True, False])
def test_batch_residuals_are_accurate_over_the_whole_logit_range(rng, with_obj):
    # The batched pass computes s_i (sigma(z) - y_i) with its own vectorised
    # exp where the CPU has AVX2 (see _loss.simd_residuals()); check it
    # against the scalar definition over logits from -800 to 800 (deep
    # saturation and subnormal results included), element by element, and
    # that a problem's numbers do not depend on its column in the batch.
    n, d = 4001, 1
    X = np.linspace(-800.0, 800.0, n)[:, None]
    y = (rng.random(n) < 0.5).astype(float)
    s = rng.uniform(0.5, 2.0, n)
    B = 5
    theta = np.tile([1.0, 0.0], (B, 1))
    theta[2] = [0.7, 0.3]
    empty = np.zeros(B + 1, dtype=np.int32)
    Z = np.empty((n, B))
    grad, obj = np.empty((B, d + 1)), np.empty(B)
    _loss.binary_objgrad_batch(X, y, s, theta, empty, np.zeros(0, np.int32),
                               np.zeros(0), 0.0, Z, grad, obj,
                               with_obj=with_obj)
    for b in (0, 2):
        z = X[:, 0] * theta[b, 0] + theta[b, 1]
        # sigma(z) - y without cancellation: -sigma(-z) for y = 1, each
        # sigma(t) as e^t / (1 + e^t) for t < 0 so that results in the
        # subnormal range are not flushed to 0 (scipy's expit flushes them).
        def sigma(t):
            e = np.exp(-np.abs(t))
            return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

        expect = s * np.where(y > 0.5, -sigma(-z), sigma(z))
        # Relative 1e-15 (a few ulps); subnormal results, which carry fewer
        # digits, to within a few of their spacing (2^-1074 = 4.9e-324).
        err = np.abs(Z[:, b] - expect)
        assert np.all(err <= 1e-15 * np.abs(expect) + 4 * 5e-324), \
            float(np.max(err / np.maximum(np.abs(expect), 1e-320)))
    # Columns 0, 1, 3 and 4 hold the same problem at different positions.
    for b in (1, 3, 4):
        np.testing.assert_array_equal(Z[:, b], Z[:, 0])
        np.testing.assert_array_equal(grad[b], grad[0])
