"""groupinf.fit against scikit-learn's Newton-Cholesky solver, and the fitted
model's attributes, predictions, labels, weights and Hessian."""

import warnings

import _reference as ref
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.linear_model import LogisticRegression

import groupinf
from groupinf import datasets

RTOL = 1e-7


def _sklearn(X, y, l2_reg, sample_weight=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkConvergenceWarning)
        return LogisticRegression(
            C=1.0 / l2_reg, solver="newton-cholesky", tol=1e-12, max_iter=1000
        ).fit(X, y, sample_weight=sample_weight)


def _assert_close(actual, expected, rtol=RTOL):
    expected = np.asarray(expected)
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=rtol * max(1.0, np.abs(expected).max())
    )


def _centred(intercept):
    return intercept - intercept.mean()


def _grad_scale(X, s, n_logits):
    # sqrt(sum_j (sum_i s_i |x_ij|)^2 + (sum_i s_i)^2) per logit.
    col = np.abs(X).T @ s
    return np.sqrt(col @ col + s.sum() ** 2) * np.sqrt(n_logits)


@pytest.fixture(scope="module")
def cancer_model(cancer):
    X, y = cancer
    return groupinf.fit(X, y, 1.0)


@pytest.fixture(scope="module")
def digits_model(digits):
    X, y = digits
    return groupinf.fit(X, y, 1.0)


# ---------------------------------------------------------------------------
# Against scikit-learn
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("l2_reg", [0.05, 1.0, 30.0])
def test_binary_matches_sklearn(cancer, l2_reg):
    X, y = cancer
    model = groupinf.fit(X, y, l2_reg)
    sk = _sklearn(X, y, l2_reg)
    _assert_close(model.coef_, sk.coef_)
    _assert_close(model.intercept_, sk.intercept_)


def test_multiclass_matches_sklearn(digits, digits_model):
    X, y = digits
    sk = _sklearn(X, y, 1.0)
    _assert_close(digits_model.coef_, sk.coef_)
    _assert_close(digits_model.intercept_, _centred(sk.intercept_))


def test_binary_with_sample_weight_matches_sklearn(cancer, rng):
    X, y = cancer
    s = rng.exponential(size=y.size)
    s[rng.random(y.size) < 0.2] = 0.0
    model = groupinf.fit(X, y, 2.0, sample_weight=s)
    sk = _sklearn(X, y, 2.0, sample_weight=s)
    _assert_close(model.coef_, sk.coef_)
    _assert_close(model.intercept_, sk.intercept_)


def test_multiclass_with_sample_weight_matches_sklearn(digits_small, rng):
    X, y = digits_small
    s = rng.uniform(0.0, 3.0, size=y.size)
    model = groupinf.fit(X, y, 0.5, sample_weight=s)
    sk = _sklearn(X, y, 0.5, sample_weight=s)
    _assert_close(model.coef_, sk.coef_)
    _assert_close(model.intercept_, _centred(sk.intercept_))


def test_adult_matches_sklearn():
    # Real data: 30,162 x 103, one-hot blocks collinear with the intercept.
    ds = datasets.load_adult()
    model = groupinf.fit(ds.X_train, ds.y_train, 10.0)
    sk = _sklearn(ds.X_train, ds.y_train, 10.0)
    assert model.converged_
    assert model.grad_norm_ <= model.grad_tol_
    _assert_close(model.coef_, sk.coef_)
    _assert_close(model.intercept_, sk.intercept_)
    np.testing.assert_allclose(
        model.predict_proba(ds.X_test), sk.predict_proba(ds.X_test), rtol=0, atol=1e-9
    )


# ---------------------------------------------------------------------------
# Fitted attributes and certificates
# ---------------------------------------------------------------------------


def test_binary_fitted_attributes(cancer, cancer_model):
    X, _ = cancer
    m = cancer_model
    assert m.coef_.shape == (1, X.shape[1])
    assert m.intercept_.shape == (1,)
    np.testing.assert_array_equal(m.classes_, [0, 1])
    assert m.params_.shape == (X.shape[1] + 1,)
    np.testing.assert_array_equal(
        m.params_, np.concatenate([m.coef_.ravel(), m.intercept_])
    )
    assert m.n_samples_ == X.shape[0] and m.n_features_in_ == X.shape[1]
    assert isinstance(m.n_iter_, int) and 1 <= m.n_iter_ <= 100
    assert m.converged_ is True or m.converged_ == np.True_
    assert 0 <= m.grad_norm_ <= m.grad_tol_
    assert m.l2_reg == 1.0
    np.testing.assert_array_equal(m.sample_weight_, np.ones(X.shape[0]))


def test_multiclass_fitted_attributes(digits, digits_model):
    X, _ = digits
    m = digits_model
    K, d = 10, X.shape[1]
    assert m.coef_.shape == (K, d)
    assert m.intercept_.shape == (K,)
    np.testing.assert_array_equal(m.classes_, np.arange(K))
    np.testing.assert_array_equal(
        m.params_, np.concatenate([m.coef_.ravel(), m.intercept_])
    )
    assert m.converged_ and 0 <= m.grad_norm_ <= m.grad_tol_
    # Centred intercepts.
    assert abs(m.intercept_.sum()) <= 1e-12 * np.abs(m.intercept_).max()


@pytest.mark.parametrize("which", ["binary", "multiclass"])
def test_certificate_is_the_true_gradient_at_round_off(cancer, digits_small, which):
    X, y = cancer if which == "binary" else digits_small
    m = groupinf.fit(X, y, 1.0)
    binary = which == "binary"
    n_logits = 1 if binary else len(m.classes_)
    s = np.ones(y.size)
    # The target is tol (1e-13 by default) times the gradient's scale ...
    assert m.grad_tol_ == pytest.approx(1e-13 * _grad_scale(X, s, n_logits), rel=1e-10)
    # ... and the NumPy gradient at the returned parameters meets it too.
    gW, gb = ref.gradient(X, y, s, m.coef_, m.intercept_, 1.0, binary)
    assert np.linalg.norm(np.concatenate([gW.ravel(), gb])) <= 2 * m.grad_tol_
    assert m.grad_norm_ <= m.grad_tol_


def test_max_iter_reached_warns_with_the_numbers(cancer):
    X, y = cancer
    with pytest.warns(
        groupinf.ConvergenceWarning,
        match=r"fit did not converge: \|\|grad F\|\| = .* after "
        r"1 Newton steps \(\d+ line-search evaluations, 1 factorisations\), "
        r"target .*max_iter",
    ):
        m = groupinf.fit(X, y, 0.01, max_iter=1)
    assert not m.converged_
    assert m.grad_norm_ > m.grad_tol_
    assert m.n_iter_ == 1
    assert m.n_factorizations_ == 1 and m.n_evaluations_ >= 2


def test_line_search_work_is_reported(cancer, cancer_model):
    m = cancer_model
    assert m.converged_
    assert m.n_evaluations_ >= m.n_iter_ + 1
    assert 1 <= m.n_factorizations_ <= m.n_iter_


def test_looser_tol_gives_a_looser_certificate(cancer, cancer_model):
    X, y = cancer
    m = groupinf.fit(X, y, 1.0, tol=1e-6)
    assert m.grad_tol_ == pytest.approx(1e7 * cancer_model.grad_tol_, rel=1e-12)
    assert m.grad_norm_ <= m.grad_tol_
    assert m.n_iter_ <= cancer_model.n_iter_


# ---------------------------------------------------------------------------
# Weights, labels, input types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["binary", "multiclass"])
def test_integer_weights_equal_duplicated_rows(cancer, digits_small, rng, which):
    X, y = cancer if which == "binary" else digits_small
    counts = rng.integers(0, 4, size=y.size)
    weighted = groupinf.fit(X, y, 0.7, sample_weight=counts)
    duplicated = groupinf.fit(np.repeat(X, counts, axis=0), np.repeat(y, counts), 0.7)
    _assert_close(weighted.coef_, duplicated.coef_, rtol=1e-9)
    _assert_close(weighted.intercept_, duplicated.intercept_, rtol=1e-9)


def test_sparse_X_fits_like_dense(cancer, digits_small):
    for X, y in (cancer, digits_small):
        Xs = X.copy()
        Xs[np.abs(Xs) < 0.5] = 0.0
        dense = groupinf.fit(Xs, y, 1.0)
        csr = groupinf.fit(sp.csr_matrix(Xs), y, 1.0)
        _assert_close(csr.coef_, dense.coef_, rtol=1e-10)
        _assert_close(csr.intercept_, dense.intercept_, rtol=1e-10)
        assert csr.converged_
        np.testing.assert_allclose(
            csr.predict_proba(sp.csr_matrix(Xs[:20])),
            dense.predict_proba(Xs[:20]),
            atol=1e-12,
        )


def test_predictions_match_sklearn(cancer, digits, cancer_model, digits_model):
    for (X, y), m in ((cancer, cancer_model), (digits, digits_model)):
        sk = _sklearn(X, y, 1.0)
        P = m.predict_proba(X)
        assert P.shape == (y.size, len(m.classes_))
        np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-14)
        np.testing.assert_allclose(P, sk.predict_proba(X), rtol=0, atol=1e-9)
        # Labels may differ only where sklearn's own top two are tied.
        top2 = np.sort(sk.predict_proba(X), axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-6
        np.testing.assert_array_equal(m.predict(X)[clear], sk.predict(X)[clear])
        assert np.mean(m.predict(X) == y) > 0.9


def test_binary_decision_function_and_margin(cancer, cancer_model):
    X, y = cancer
    m = cancer_model
    z = m.decision_function(X[:50])
    np.testing.assert_allclose(
        z, X[:50] @ m.coef_[0] + m.intercept_[0], rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        m.margin(X[:50], y[:50]), (2 * y[:50] - 1) * z, rtol=1e-14
    )
    np.testing.assert_allclose(
        m.loss(X[:50], y[:50]),
        ref.pointwise_loss(z[:, None], y[:50], True),
        rtol=1e-12,
        atol=1e-15,
    )


def test_multiclass_loss_is_log_loss(digits, digits_model):
    X, y = digits
    P = digits_model.predict_proba(X)
    np.testing.assert_allclose(
        digits_model.loss(X, y),
        -np.log(P[np.arange(y.size), y]),
        rtol=1e-10,
        atol=1e-13,
    )
    with pytest.raises(ValueError, match="binary models only"):
        digits_model.margin(X, y)


@pytest.mark.parametrize(
    "labels, flip",
    [
        (np.array(["neg", "pos"]), False),
        (np.array(["yes", "no"]), True),  # sorted: "no" < "yes"
        (np.array([-1, 1]), False),
        (np.array([1.5, -2.0]), True),
        (np.array([False, True]), False),
    ],
)
def test_binary_labels_of_any_kind(cancer, cancer_model, labels, flip):
    # classes_ are the sorted labels and classes_[1] is the positive class.
    X, y = cancer
    m = groupinf.fit(X, labels[y], 1.0)
    np.testing.assert_array_equal(m.classes_, np.sort(labels))
    sign = -1.0 if flip else 1.0
    _assert_close(m.coef_, sign * cancer_model.coef_, rtol=1e-10)
    _assert_close(m.intercept_, sign * cancer_model.intercept_, rtol=1e-10)
    np.testing.assert_array_equal(m.predict(X), labels[cancer_model.predict(X)])
    P = m.predict_proba(X[:10])
    np.testing.assert_allclose(
        P[:, 1], 1 / (1 + np.exp(-m.decision_function(X[:10]))), rtol=1e-12
    )


def test_multiclass_string_labels(digits_small):
    X, y = digits_small
    names = np.array(["zero", "one", "two", "three"])
    m = groupinf.fit(X, names[y], 1.0)
    numeric = groupinf.fit(X, y, 1.0)
    np.testing.assert_array_equal(m.classes_, np.sort(names))
    # Rows of coef_ follow the sorted classes.
    order = [list(names).index(c) for c in m.classes_]
    _assert_close(m.coef_, numeric.coef_[order], rtol=1e-9)
    _assert_close(m.intercept_, numeric.intercept_[order], rtol=1e-9)
    np.testing.assert_array_equal(m.predict(X), names[numeric.predict(X)])


def test_pandas_inputs(cancer, cancer_model):
    pd = pytest.importorskip("pandas")
    X, y = cancer
    m = groupinf.fit(pd.DataFrame(X), pd.Series(y), 1.0)
    np.testing.assert_array_equal(m.coef_, cancer_model.coef_)


def test_three_classes_is_softmax_two_is_binary(digits_small):
    X, y = digits_small
    keep = y < 3
    m3 = groupinf.fit(X[keep], y[keep], 1.0)
    assert m3.coef_.shape == (3, X.shape[1])
    keep = y < 2
    m2 = groupinf.fit(X[keep], y[keep], 1.0)
    assert m2.coef_.shape == (1, X.shape[1])


# ---------------------------------------------------------------------------
# The Hessian in the public layout
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["binary", "multiclass"])
def test_hessian_is_finite_difference_of_gradient(cancer, digits_small, rng, which):
    X, y = cancer if which == "binary" else digits_small
    binary = which == "binary"
    s = rng.uniform(0.0, 2.0, size=y.size)
    s[::5] = 0.0
    m = groupinf.fit(X, y, 0.8, sample_weight=s)
    n_logits = 1 if binary else len(m.classes_)

    def grad(theta):
        W, b = ref.split_public(theta, n_logits)
        gW, gb = ref.gradient(X, y, s, W, b, 0.8, binary)
        return ref.join_public(gW, gb)

    H = m.hessian()
    p = n_logits * (X.shape[1] + 1)
    assert H.shape == (p, p)
    fd = ref.fourth_order_derivative(grad, m.params_, 1e-4)
    scale = np.abs(H).max()
    np.testing.assert_allclose(H, fd, rtol=1e-7, atol=1e-8 * scale)
    np.testing.assert_allclose(
        H,
        ref.hessian_public(X, s, m.coef_, m.intercept_, 0.8, binary),
        rtol=1e-11,
        atol=1e-12 * scale,
    )
    if not binary:
        # Singular along "add c to every intercept": the objective is flat.
        v = np.zeros(p)
        v[-n_logits:] = 1.0
        np.testing.assert_allclose(H @ v, 0.0, atol=1e-12 * scale)
