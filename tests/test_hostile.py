"""Hostile and degenerate inputs (issue 4), one section per item of the issue.

Every case either gives the right numbers, checked against an independent
computation, or a clear error that names the problem and the way out.
Ground truth is the plain-NumPy binary model below (`_ref_*`): Newton's method
on a loss written without cancellation (dl/dz = -sigma(-z) for a positive
label), so it stays accurate where the logits saturate, with a penalty
vector so badly scaled columns can be refitted in well-scaled coordinates.
Softmax checks use tests/_reference.py. Items already covered elsewhere are
named in their section; the tests here add the cases those leave out.
"""

import warnings

import _reference as ref
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit

import groupinf

METHODS = ("first-order", "newton", "second-order")
FIELDS = ("params", "self_loss", "test_loss", "test_margin")


# ---------------------------------------------------------------------------
# Independent reference: binary L2 logistic regression, public layout [w, b]
# ---------------------------------------------------------------------------


def _ref_parts(X, y, theta):
    """Per-example loss, dl/dz and curvature, without cancellation."""
    z = X @ theta[:-1] + theta[-1]
    pos = np.asarray(y) > 0.5
    loss = np.where(pos, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))
    dl = np.where(pos, -expit(-z), expit(z))
    return loss, dl, expit(z) * expit(-z)


def _xt(X):
    return np.column_stack([X, np.ones(X.shape[0])])


def _ref_objective(X, y, s, theta, pen):
    return float(s @ _ref_parts(X, y, theta)[0] + 0.5 * pen @ theta[:-1] ** 2)


def _ref_gradient(X, y, s, theta, pen):
    dl = _ref_parts(X, y, theta)[1]
    return _xt(X).T @ (s * dl) + np.r_[pen * theta[:-1], 0.0]


def _ref_hessian(X, y, s, theta, pen):
    Xt = _xt(X)
    H = Xt.T @ ((s * _ref_parts(X, y, theta)[2])[:, None] * Xt)
    H[np.diag_indices(X.shape[1])] += pen
    return H


def _ref_fit(X, y, pen, s=None, theta0=None):
    """argmin_theta sum_i s_i l_i + 1/2 sum_j pen_j w_j^2, by damped Newton."""
    n, d = X.shape
    s = np.ones(n) if s is None else np.asarray(s, dtype=float)
    pen = np.broadcast_to(np.asarray(pen, dtype=float), (d,))
    theta = np.zeros(d + 1) if theta0 is None else np.array(theta0, dtype=float)
    f = _ref_objective(X, y, s, theta, pen)
    for _ in range(200):
        g = _ref_gradient(X, y, s, theta, pen)
        step = -np.linalg.solve(_ref_hessian(X, y, s, theta, pen), g)
        if np.linalg.norm(step) <= 1e-15 * max(1.0, np.linalg.norm(theta)):
            break
        t = 1.0
        while t > 1e-12:
            f_new = _ref_objective(X, y, s, theta + t * step, pen)
            if f_new <= f + 1e-4 * t * (g @ step) or f_new - f <= 1e-15 * abs(f):
                break
            t /= 2
        theta, f = theta + t * step, f_new
    return theta


def _ref_effects(X, y, s, theta, pen, groups, X_test, y_test):
    """Every tier and the exact refit, per group, as {method: {field: (G, .)}}."""
    n, d = X.shape
    pen = np.broadcast_to(np.asarray(pen, dtype=float), (d,))
    Xt, Xtt = _xt(X), _xt(X_test)
    _, dl, curv = _ref_parts(X, y, theta)
    _, dl_test, _ = _ref_parts(X_test, y_test, theta)
    H = _ref_hessian(X, y, s, theta, pen)
    sign = 2.0 * np.asarray(y_test, dtype=float) - 1.0
    out = {m: {f: [] for f in FIELDS} for m in METHODS + ("retrain",)}
    for idx in groups:
        w = np.zeros(n)
        w[idx] = s[idx]
        gU = Xt.T @ (w * dl)
        HU = Xt.T @ ((w * curv)[:, None] * Xt)
        first = np.linalg.solve(H, gU)
        steps = {
            "first-order": first,
            "newton": np.linalg.solve(H - HU, gU),
            "second-order": first + np.linalg.solve(H, HU @ first),
        }
        for method, dt in steps.items():
            rec = out[method]
            rec["params"].append(dt)
            rec["self_loss"].append(gU @ dt)
            rec["test_loss"].append((dl_test[:, None] * Xtt) @ dt)
            rec["test_margin"].append((sign[:, None] * Xtt) @ dt)
        new = _ref_fit(X, y, pen, s - w, theta)
        rec = out["retrain"]
        rec["params"].append(new - theta)
        rec["self_loss"].append(
            w @ (_ref_parts(X, y, new)[0] - _ref_parts(X, y, theta)[0])
        )
        rec["test_loss"].append(
            _ref_parts(X_test, y_test, new)[0] - _ref_parts(X_test, y_test, theta)[0]
        )
        rec["test_margin"].append(sign * (Xtt @ (new - theta)))
    return {m: {f: np.array(v) for f, v in rec.items()} for m, rec in out.items()}


def _relative_stationarity(X, y, s, theta, l2_reg):
    """||grad F|| over the norm of its absolute terms, all without cancellation:
    ~1e-15 at an optimum, whatever the scale of the terms."""
    dl = _ref_parts(X, y, theta)[1]
    Xt = _xt(X)
    pen = np.r_[l2_reg * theta[:-1], 0.0]
    g = Xt.T @ (s * dl) + pen
    terms = np.abs(Xt).T @ np.abs(s * dl) + np.abs(pen)
    return np.linalg.norm(g) / np.linalg.norm(terms)


def _close(actual, expected, rtol, what=""):
    """Equal to rtol relative to the largest entry of expected."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.all(np.isfinite(actual)), what
    np.testing.assert_allclose(
        actual, expected, rtol=0, atol=rtol * np.abs(expected).max(), err_msg=what
    )


def _check_against_ref(
    model, X, y, groups, X_test, y_test, expected, rtol, map_params=None
):
    """influence (every tier) and retrain against `_ref_effects` output."""
    map_params = map_params or (lambda p: p)
    results = {
        m: groupinf.influence(model, X, y, groups, X_test, y_test, method=m)
        for m in METHODS
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", groupinf.ConvergenceWarning)
        results["retrain"] = groupinf.retrain(
            model, X, y, groups, X_test, y_test, n_jobs=1
        )
    assert np.all(results["retrain"].converged)
    for method, res in results.items():
        for f in FIELDS:
            got = getattr(res, f)
            _close(
                map_params(got) if f == "params" else got,
                expected[method][f],
                rtol,
                f"{method}: {f}",
            )


@pytest.fixture(scope="module")
def cancer_small(cancer):
    X, y = cancer
    return np.ascontiguousarray(X[:160, :6]), y[:160]


# ---------------------------------------------------------------------------
# (a) Perfectly separable data, tiny l2_reg, with and without duplicated
#     columns
# ---------------------------------------------------------------------------


def _separable(n=80, d=5, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) + 0.2 > 0).astype(int)
    return X, y


@pytest.mark.parametrize("duplicated", [False, True], ids=["plain", "duplicated"])
def test_a_separable_tiny_l2_fit_and_effects_match_reference(duplicated):
    X, y = _separable()
    lam, d = 1e-6, X.shape[1]
    # The same model in the original columns: duplicating every column splits
    # each weight equally, which is the original problem with l2_reg / 2.
    pen = lam / 2 if duplicated else lam
    Xfit = np.hstack([X, X]) if duplicated else X

    def to_original(p):  # (.., 2d + 1) -> (.., d + 1), halves summed
        p = np.asarray(p)
        if not duplicated:
            return p
        return np.concatenate([p[..., :d] + p[..., d : 2 * d], p[..., -1:]], -1)

    m = groupinf.fit(Xfit, y, lam)
    theta = _ref_fit(X, y, pen)
    assert np.linalg.norm(theta[:-1]) > 40  # the separable regime indeed
    assert m.converged_
    if duplicated:
        np.testing.assert_allclose(m.coef_[0, :d], m.coef_[0, d:], rtol=1e-12)
    _close(to_original(m.params_), theta, 1e-8, "fit")

    # A small group of boundary points, and one of a whole side's interior.
    margins = np.abs(X @ theta[:-1] + theta[-1])
    groups = [np.argsort(margins)[:3], np.flatnonzero(y == 1)[::3]]
    Xt, yt = X[:6] * 1.5, y[:6]
    expected = _ref_effects(X, y, np.ones(y.size), theta, pen, groups, Xt, yt)
    _check_against_ref(
        m,
        Xfit,
        y,
        groups,
        np.hstack([Xt, Xt]) if duplicated else Xt,
        yt,
        expected,
        rtol=1e-6,
        map_params=to_original,
    )


def test_a_separable_at_l2_1e_14_is_still_the_optimum():
    # At l2_reg = 1e-14 every point sits on the loss's plateau: the gradient
    # test alone passes far from the optimum, so the fit is certified only
    # once its Newton step is negligible too, and then it is stationary to
    # the gradient's own terms (the reference reaches 4e-10).
    X, y = _separable()
    with warnings.catch_warnings():
        warnings.simplefilter("error", groupinf.ConvergenceWarning)
        m = groupinf.fit(X, y, 1e-14)
    assert m.converged_
    assert _relative_stationarity(X, y, np.ones(y.size), m.params_, 1e-14) < 1e-8
    r = groupinf.retrain(m, X, y, [[0, 1, 2]])
    assert r.converged.all()
    s = np.ones(y.size)
    s[[0, 1, 2]] = 0.0
    assert _relative_stationarity(X, y, s, m.params_ + r.params[0], 1e-14) < 1e-8
    assert np.all(np.isfinite(groupinf.influence(m, X, y, [[0, 1, 2]]).params))
    # Duplicated columns at 1e-16: the Hessian cannot be factored on the way
    # (steps use a shifted factor) but can at the optimum, which certifies
    # it; the weight is split exactly between the copies.
    X2 = np.hstack([X, X])
    m2 = groupinf.fit(X2, y, 1e-16)
    assert m2.converged_
    np.testing.assert_allclose(m2.coef_[0, :5], m2.coef_[0, 5:], rtol=1e-12)
    assert _relative_stationarity(X2, y, np.ones(y.size), m2.params_,
                                  1e-16) < 1e-8


# ---------------------------------------------------------------------------
# (b) A constant feature, or one constant within a class: a flat direction
#     of H although X looks well conditioned
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, lam, rtol", [(1.0, 1e-6, 1e-9), (1e3, 1.0, 1e-6)])
def test_b_constant_column_is_the_model_without_it(cancer_small, value, lam, rtol):
    # A constant column c and the intercept move z alike; only the column is
    # penalised, so its weight is exactly 0 and nothing else changes.
    X, y = cancer_small
    Xc = np.column_stack([X, np.full(y.size, value)])
    m = groupinf.fit(Xc, y, lam)
    theta = _ref_fit(X, y, lam)
    assert abs(m.coef_[0, -1]) * value < 1e-8 * np.abs(theta).max()
    _close(np.delete(m.params_, X.shape[1]), theta, 1e-8, "fit")

    groups = [np.arange(4), np.arange(20, 70)]
    Xt, yt = X[100:106], y[100:106]
    Xct = np.column_stack([Xt, np.full(6, value)])
    expected = _ref_effects(X, y, np.ones(y.size), theta, lam, groups, Xt, yt)
    # c = 1e3 makes H's condition 1e13: the flat direction's share of the
    # effects is only good to ~1e-8 there.
    _check_against_ref(
        m,
        Xc,
        y,
        groups,
        Xct,
        yt,
        expected,
        rtol=rtol,
        map_params=lambda p: np.delete(p, X.shape[1], axis=-1),
    )


def test_b_constant_column_at_singular_precision_is_a_clear_error(cancer_small):
    # With l2_reg = 1e-6 the flat direction's curvature l2_reg / (1 + c^2)
    # is 1e-13 for c = 3e3: below the gradient's round-off, so the fit's
    # parameters are undetermined along it (by 1e-4 of their norm).
    # The fit sees its Newton steps stop shrinking without lowering F and
    # says so; influence and retrain then refuse the model, naming l2_reg.
    X, y = cancer_small
    Xc = np.column_stack([X, np.full(y.size, 3e3)])
    with pytest.warns(groupinf.ConvergenceWarning,
                      match=r"fit did not converge.*Increase max_iter or l2_reg"):
        m = groupinf.fit(Xc, y, 1e-6)
    assert not m.converged_
    for fn in (groupinf.influence, groupinf.retrain):
        with pytest.raises(ValueError,
                           match=r"model did not converge.*l2_reg"):
            fn(m, Xc, y, [np.arange(4)])
    # For c = 3e4 it is 1e-15: H is not positive definite to working
    # precision; the fit steps with a shifted factor, can never certify its
    # point, and says so.
    Xc[:, -1] = 3e4
    with pytest.warns(groupinf.ConvergenceWarning, match="did not converge"):
        m = groupinf.fit(Xc, y, 1e-6)
    with pytest.raises(ValueError, match=r"did not converge.*l2_reg"):
        groupinf.influence(m, Xc, y, [np.arange(4)])


@pytest.mark.parametrize("kind", ["indicator", "constant in class 1"])
def test_b_feature_constant_within_a_class(cancer_small, kind):
    # An indicator of the class separates perfectly (constant within each
    # class); a feature fixed at 2 in class 1 nearly does.
    X, y = cancer_small
    extra = (
        (y == 1).astype(float)
        if kind == "indicator"
        else np.where(y == 1, 2.0, X[:, 0])
    )
    Xc = np.column_stack([X, extra])
    lam = 1e-4
    m = groupinf.fit(Xc, y, lam)
    theta = _ref_fit(Xc, y, lam)
    assert abs(theta[-2]) > 10  # the flat-ish direction is used heavily
    _close(m.params_, theta, 1e-8, "fit")
    groups = [np.flatnonzero(y == 1)[:3], np.flatnonzero(y == 0)[::2]]
    Xt, yt = Xc[:6], y[:6]
    expected = _ref_effects(Xc, y, np.ones(y.size), theta, lam, groups, Xt, yt)
    _check_against_ref(m, Xc, y, groups, Xt, yt, expected, rtol=1e-6)


# ---------------------------------------------------------------------------
# (c) Fewer rows than parameters, overall or after removing a group
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n, d", [(15, 40), (60, 40)])
def test_c_fewer_rows_than_parameters(n, d):
    # Groups of 1 and 3 points go through Woodbury, larger ones through a
    # fresh Cholesky; for n = 60 the big group leaves 25 rows for 41 params.
    rng = np.random.default_rng(n + d)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    X_test, y_test = rng.standard_normal((5, d)), rng.integers(0, 2, 5)
    lam = 0.5
    m = groupinf.fit(X, y, lam)
    theta = _ref_fit(X, y, lam)
    _close(m.params_, theta, 1e-10, "fit")
    groups = [[2], [3, 5, 8], np.arange(2, 10)]
    if n > d:
        groups.append(np.arange(2, 37))
    expected = _ref_effects(X, y, np.ones(n), theta, lam, groups, X_test, y_test)
    _check_against_ref(m, X, y, groups, X_test, y_test, expected, rtol=1e-9)
    # Sparse X takes other kernels through the same cases.
    _check_against_ref(
        groupinf.fit(sp.csr_matrix(X), y, lam),
        sp.csr_matrix(X),
        y,
        groups,
        X_test,
        y_test,
        expected,
        rtol=1e-9,
    )


def test_c_softmax_with_fewer_rows_than_parameters(rng):
    # 24 rows, 3 classes, 12 features: 39 parameters.
    n, d, K = 24, 12, 3
    X = rng.standard_normal((n, d))
    y = np.arange(n) % K
    X_test, y_test = rng.standard_normal((4, d)), np.arange(4) % K
    lam = 0.5
    m = groupinf.fit(X, y, lam)
    groups = [[0], [1, 4], np.arange(3, 15)]
    W = np.zeros((len(groups), n))
    for g, idx in enumerate(groups):
        W[g, idx] = 1.0
    tiers = ref.influence_tiers(
        X, y, np.ones(n), m.coef_, m.intercept_, lam, False, W, X_test, y_test
    )
    # The fit itself: stationary by the reference gradient.
    gW, gb = ref.gradient(X, y, np.ones(n), m.coef_, m.intercept_, lam, False)
    assert np.linalg.norm(np.r_[gW.ravel(), gb]) <= 2 * m.grad_tol_
    for method in METHODS + ("basu-second-order",):
        res = groupinf.influence(m, X, y, groups, X_test, y_test, method=method)
        for f in ("params", "self_loss", "test_loss"):
            _close(getattr(res, f), tiers[method][f], 1e-11, f"{method}: {f}")
    act = groupinf.retrain(m, X, y, groups, X_test, y_test)
    for g, idx in enumerate(groups):
        s = np.ones(n)
        s[idx] = 0.0
        W_new, b_new = ref.split_public(m.params_ + act.params[g], K)
        gW, gb = ref.gradient(X, y, s, W_new, b_new, lam, False)
        assert np.linalg.norm(np.r_[gW.ravel(), gb]) <= 2 * act.grad_tol[g]
        assert abs(b_new.sum()) < 1e-12  # centred
        new = ref.pointwise_loss(ref.logits(X_test, W_new, b_new), y_test, False)
        _close(act.test_loss[g], new - m.loss(X_test, y_test), 1e-10)


# ---------------------------------------------------------------------------
# (d) Extreme feature scales and logits of +-1e4
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [1.0, 1e-3])
def test_d_columns_of_scales_1em8_and_1e8(cancer_small, lam):
    # In u = scale * w the problem is well scaled, with penalties
    # lam / scale^2 (1e16 and 1e-16): the reference solves it there.
    X, y = cancer_small
    scale = np.array([1e-8, 1e8, 1.0, 1.0, 1e-8, 1e8])
    Xs = X * scale
    pen = lam / scale**2
    m = groupinf.fit(Xs, y, lam)
    u = _ref_fit(X, y, pen)
    to_u = np.r_[scale, 1.0]
    _close(m.params_ * to_u, u, 1e-9, "fit")
    groups = [np.arange(5), np.arange(30, 90)]
    Xt, yt = X[100:106], y[100:106]
    expected = _ref_effects(X, y, np.ones(y.size), u, pen, groups, Xt, yt)
    _check_against_ref(
        m,
        Xs,
        y,
        groups,
        Xt * scale,
        yt,
        expected,
        rtol=1e-8,
        map_params=lambda p: p * to_u,
    )


@pytest.mark.parametrize("scale", [1e60, 1e-200])
def test_d_columns_far_beyond_that(cancer_small, scale):
    # A column of 1e60 is effectively unpenalised, one of 1e-200 effectively
    # absent; entries above 1e100 are refused (test_bad_input).
    X, y = cancer_small
    Xs = X.copy()
    Xs[:, 1] *= scale
    m = groupinf.fit(Xs, y, 1.0)
    pen = np.r_[1.0, 1.0 / scale**2 if scale > 1e-100 else 1e200, np.ones(4)]
    u = _ref_fit(X, y, pen)
    to_u = np.r_[1.0, scale, np.ones(5)]
    _close(m.params_ * to_u, u, 1e-9, "fit")
    groups = [np.arange(5)]
    expected = _ref_effects(X, y, np.ones(y.size), u, pen, groups, X[:4], y[:4])
    _check_against_ref(
        m,
        Xs,
        y,
        groups,
        Xs[:4],
        y[:4],
        expected,
        rtol=3e-9,
        map_params=lambda p: p * to_u,
    )


def test_d_logits_of_1e4_in_training_and_test_points(cancer_small):
    X, y = cancer_small
    lam = 1.0
    m0 = groupinf.fit(X, y, lam)
    z = m0.decision_function(X)
    right = int(np.argmax(np.abs(z) * ((z > 0) == y)))
    wrong = int(np.argmax(np.abs(z) * ((z > 0) != y)))
    # Two training rows stretched to logits of -1e4: one right, one wrong.
    Xb = X.copy()
    for i in (right, wrong):
        Xb[i] *= 1e4 / abs(z[i])
    # Test points with logits +-1e4, one on each side of its label.
    Xt = np.vstack([Xb[right], Xb[wrong], -Xb[right]])
    yt = y[[right, wrong, right]]
    m = groupinf.fit(Xb, y, lam)
    theta = _ref_fit(Xb, y, lam)
    _close(m.params_, theta, 1e-10, "fit")
    assert np.abs(m.decision_function(Xt)).max() > 1e3
    groups = [[right], [wrong], np.arange(10), [right, wrong]]
    expected = _ref_effects(Xb, y, np.ones(y.size), theta, lam, groups, Xt, yt)
    _check_against_ref(m, Xb, y, groups, Xt, yt, expected, rtol=1e-9)
    # Plug-in losses at logits of 1e4 stay finite as well.
    for method in METHODS:
        res = groupinf.influence(m, Xb, y, groups, Xt, yt, method=method, plugin=True)
        assert np.all(np.isfinite(res.test_loss))
        assert np.all(np.isfinite(res.self_loss))


# ---------------------------------------------------------------------------
# (e) Every input format gives the float64 C-ordered dense results
# ---------------------------------------------------------------------------


def _effects(model, X, y, groups, X_test, y_test):
    return (
        groupinf.influence(model, X, y, groups, X_test, y_test),
        groupinf.influence(model, X, y, groups, X_test, y_test, method="newton"),
        groupinf.retrain(model, X, y, groups, X_test, y_test, n_jobs=1),
    )


class _Base:
    """The float64 C-ordered results for one X (values exact in float32)."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        self.X_test, self.y_test = X[:7] + 0.5, y[:7]
        self.groups = [np.arange(3), np.arange(10, 60, 2), [70]]
        self.model = groupinf.fit(X, y, 1.0)
        self.effects = _effects(self.model, X, y, self.groups, self.X_test, self.y_test)

    def check(self, X, y=None, X_test=None, y_test=None, rtol=1e-12):
        y = self.y if y is None else y
        X_test = self.X_test if X_test is None else X_test
        y_test = self.y_test if y_test is None else y_test
        m = groupinf.fit(X, y, 1.0)
        _close(m.params_, self.model.params_, rtol, "fit")
        for got, want in zip(
            _effects(m, X, y, self.groups, X_test, y_test), self.effects
        ):
            for f in FIELDS:
                _close(getattr(got, f), getattr(want, f), rtol, f"{want.method}: {f}")


@pytest.fixture(scope="module")
def base(cancer_small):
    X, y = cancer_small
    return _Base(np.round(X * 4) / 4, y)  # quarters: exact in float32


@pytest.fixture(scope="module")
def base_int(cancer_small):
    X, y = cancer_small
    return _Base(np.clip(np.round(X * 2), -100, 100), y)


@pytest.mark.parametrize("fmt", ["float32", "F-order", "cols[::2]", "rows[::2]"])
def test_e_dense_dtypes_and_layouts(base, fmt):
    X = base.X
    if fmt == "float32":
        base.check(X.astype(np.float32), X_test=base.X_test.astype(np.float32))
    elif fmt == "F-order":
        base.check(np.asfortranarray(X), X_test=np.asfortranarray(base.X_test))
    elif fmt == "cols[::2]":
        wide = np.repeat(X, 2, axis=1)
        base.check(wide[:, ::2], X_test=np.repeat(base.X_test, 2, axis=1)[:, ::2])
    else:
        base.check(np.repeat(X, 2, axis=0)[::2])


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.int32])
def test_e_integer_X(base_int, dtype):
    base_int.check(base_int.X.astype(dtype))


def test_e_boolean_X(cancer_small):
    X, y = cancer_small
    b = _Base((X > 0).astype(np.float64), y)
    b.check(X > 0)
    b.check(sp.csr_matrix(X > 0), X_test=sp.csr_matrix(b.X_test))


def test_e_pandas_frames(base_int):
    pd = pytest.importorskip("pandas")
    X, y = base_int.X, base_int.y
    frame = pd.DataFrame(X, columns=[f"c{j}" for j in range(X.shape[1])])
    base_int.check(frame, y=pd.Series(y))
    # A non-default index on X and another on y: positions count, not labels.
    shuffled = np.random.default_rng(0).permutation(y.size) + 1000
    base_int.check(frame.set_axis(shuffled), y=pd.Series(y, index=shuffled[::-1]))
    # Mixed int / float / bool / nullable columns.
    mixed = frame.astype({"c0": np.int64, "c1": np.float32, "c2": "Int64"})
    base_int.check(mixed)
    Xb = X.copy()
    Xb[:, 3] = X[:, 3] > 0
    b = _Base(Xb, y)
    b.check(frame.assign(c3=X[:, 3] > 0).astype({"c0": np.int16}))
    # X_test as a frame, y_test as a Series with its own index.
    base_int.check(
        X,
        X_test=pd.DataFrame(base_int.X_test),
        y_test=pd.Series(base_int.y_test, index=np.arange(7)[::-1]),
    )


def test_e_pandas_frames_that_are_not_numbers_get_a_clear_error(base_int):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(base_int.X).assign(name="x")
    with pytest.raises(TypeError, match=r"column 'name' has dtype .*encode that"):
        groupinf.fit(frame, base_int.y, 1.0)
    frame = pd.DataFrame(base_int.X).astype({0: "Int64"})
    frame.iloc[3, 0] = pd.NA
    with pytest.raises(ValueError, match=r"^X contains 1 NaN"):
        groupinf.fit(frame, base_int.y, 1.0)


SPARSE = ["csr", "csc", "coo", "bsr", "lil", "dok", "dia"]


@pytest.mark.parametrize("kind", ["matrix", "array"])
@pytest.mark.parametrize("fmt", SPARSE)
def test_e_scipy_sparse_formats(base, fmt, kind):
    make = sp.csr_matrix if kind == "matrix" else sp.csr_array
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sp.SparseEfficiencyWarning)  # dia
        Xs = make(base.X).asformat(fmt)
        Xts = make(base.X_test).asformat(SPARSE[(SPARSE.index(fmt) + 1) % 7])
        assert Xs.format == fmt and sp.issparse(Xts)
        base.check(Xs, X_test=Xts)


def test_e_test_points_in_other_formats(base):
    base.check(base.X, X_test=sp.coo_matrix(base.X_test))
    base.check(base.X, X_test=base.X_test.tolist(), y_test=list(base.y_test))
    base.check(
        base.X,
        X_test=base.X_test.astype(np.float32),
        y_test=base.y_test.astype(np.int8),
    )
    base.check(sp.csr_matrix(base.X), X_test=np.asfortranarray(base.X_test))
    base.check(base.X, y=base.y.tolist())


# ---------------------------------------------------------------------------
# (f) Labels of any kind (test_fit covers the fit; here: the effects too)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, flip",
    [
        (np.array(["benign", "malignant"]), False),
        (np.array(["yes", "no"]), True),  # sorted: "no" < "yes"
        (np.array([-1, 1]), False),
        (np.array([0.0, 1.0]), False),
        (np.array([False, True]), False),
        (np.array(["a", "b"], dtype=object), False),
    ],
)
def test_f_labels_of_any_kind_give_the_same_effects(base, labels, flip):
    y, yt = labels[base.y], labels[base.y_test]
    m = groupinf.fit(base.X, y, 1.0)
    np.testing.assert_array_equal(m.classes_, np.sort(labels))
    sign = -1.0 if flip else 1.0
    # Flipped classes start Newton elsewhere: equal to the certificate only.
    rtol = 1e-9 if flip else 1e-12
    _close(m.params_, sign * base.model.params_, rtol, "fit")
    np.testing.assert_array_equal(
        m.predict(base.X[:20]), labels[base.model.predict(base.X[:20])]
    )
    for got, want in zip(
        _effects(m, base.X, y, base.groups, base.X_test, yt), base.effects
    ):
        for f in FIELDS:
            factor = sign if f == "params" else 1.0
            _close(getattr(got, f), factor * getattr(want, f), rtol, f)


def test_f_pandas_labels(base):
    pd = pytest.importorskip("pandas")
    names = np.array(["neg", "pos"])
    for y in (
        pd.Series(names[base.y], dtype="category"),
        pd.Series(names[base.y], dtype="string"),
        pd.Series(base.y, dtype="Int64"),
    ):
        m = groupinf.fit(base.X, y, 1.0)
        _close(m.params_, base.model.params_, 1e-12, str(y.dtype))
    y = pd.Series(names[base.y], dtype="string")
    y[5] = pd.NA
    with pytest.raises(ValueError, match=r"^y contains missing \(NaN or NA\)"):
        groupinf.fit(base.X, y, 1.0)


@pytest.mark.parametrize("effect", [groupinf.influence, groupinf.retrain])
def test_f_a_class_in_y_test_but_not_in_y_names_y_test(base, effect):
    names = np.array(["neg", "pos"])
    y = names[base.y]
    m = groupinf.fit(base.X, y, 1.0)
    cases = [
        (np.array(["neg", "pos", "maybe"]), r"\['maybe'\]"),
        (np.array([0, 1, 1]), r"\[0, 1\]"),  # codes instead of the labels
    ]
    for y_test, shown in cases:
        with pytest.raises(
            ValueError,
            match=r"^y_test contains label\(s\) "
            + shown
            + r".* not among the training classes \['neg', 'pos'\]",
        ):
            effect(m, base.X, y, [[0]], base.X_test[:3], y_test)


# ---------------------------------------------------------------------------
# (g) Groups. test_bad_input covers: out-of-range, negative and duplicated
#     indices, masks of the wrong length, a group removing a class or
#     everything, empty lists, matrices outside [0, 1] or with NaN.
# ---------------------------------------------------------------------------


def test_g_overlapping_groups_are_each_their_own(base):
    a, b = np.arange(0, 40), np.arange(20, 60)  # 20 points shared
    both = [a, b, np.intersect1d(a, b)]
    for method in METHODS:
        res = groupinf.influence(
            base.model, base.X, base.y, both, base.X_test, base.y_test, method=method
        )
        for g, idx in enumerate(both):
            alone = groupinf.influence(
                base.model,
                base.X,
                base.y,
                [idx],
                base.X_test,
                base.y_test,
                method=method,
            )
            for f in FIELDS:
                _close(getattr(res, f)[g], getattr(alone, f)[0], 1e-13, f)
    res = groupinf.retrain(base.model, base.X, base.y, both, base.X_test, base.y_test)
    expected = _ref_effects(
        base.X,
        base.y,
        np.ones(base.y.size),
        base.model.params_,
        1.0,
        both,
        base.X_test,
        base.y_test,
    )["retrain"]
    for f in FIELDS:
        _close(getattr(res, f), expected[f], 1e-10, f)


def test_g_masks_of_the_wrong_kind(base):
    n = base.y.size
    with pytest.raises(ValueError, match=r"boolean mask of shape \(159,\)"):
        groupinf.influence(base.model, base.X, base.y, np.zeros((2, n - 1), bool))
    # A 0/1 vector of integers is an index list with repeats; say so.
    mask = np.zeros(n, dtype=np.int64)
    mask[:5] = 1
    with pytest.raises(
        ValueError,
        match=r"lists index 0 more than once.*0/1 vector of length 160.*"
        r"\.astype\(bool\)",
    ):
        groupinf.influence(base.model, base.X, base.y, [mask])


def test_g_negative_and_huge_indices(base):
    # README: "Indices must be in range": negative ones are refused, never
    # read Python-style from the end.
    with pytest.raises(ValueError, match=r"groups\[0\] has negative index -3"):
        groupinf.retrain(base.model, base.X, base.y, [np.array([-3, 4], np.int8)])
    huge = np.array([2**63 + 5], dtype=np.uint64)
    with pytest.raises(
        ValueError,
        match=r"has index 9223372036854775813, out of range for 160 training",
    ):
        groupinf.influence(base.model, base.X, base.y, [huge])


def test_g_group_that_empties_a_class_through_sample_weights(base):
    X, y = base.X, base.y
    ones = np.flatnonzero(y == 1)
    s = np.ones(y.size)
    s[ones[2:]] = 0.0  # class 1 rests on two points
    m = groupinf.fit(X, y, 1.0, sample_weight=s)
    for fn in (groupinf.influence, groupinf.retrain):
        with pytest.raises(
            ValueError,
            match=r"groups\[1\] removes all of class 1.*intercept diverges",
        ):
            fn(m, X, y, [ones[1:], ones[:2]])
    # Removing all zero-weight points of the class, or one of the two others,
    # is fine: against the reference refit.
    groups = [ones[2:], ones[:1]]
    res = groupinf.retrain(m, X, y, groups)
    theta = _ref_fit(X, y, 1.0, s)
    _close(m.params_, theta, 1e-10, "fit")
    assert np.all(res.params[0] == 0.0) and res.converged.all()
    new = _ref_fit(
        X, y, 1.0, np.where(np.isin(np.arange(y.size), ones[:1]), 0, s), theta
    )
    _close(res.params[1], new - theta, 1e-9)


def test_g_all_but_one_point_and_all_but_two(base):
    X, y = base.X, base.y
    n = y.size
    for keep in ([0], [int(np.flatnonzero(y == 1)[0])]):
        for fn in (groupinf.influence, groupinf.retrain):
            with pytest.raises(ValueError, match=r"removes all of class"):
                fn(base.model, X, y, [np.setdiff1d(np.arange(n), keep)])
    # One point of each class left: the refit exists (l2_reg > 0).
    keep = [int(np.flatnonzero(y == 0)[0]), int(np.flatnonzero(y == 1)[0])]
    group = np.setdiff1d(np.arange(n), keep)
    res = groupinf.retrain(base.model, X, y, [group], base.X_test, base.y_test)
    expected = _ref_effects(
        X, y, np.ones(n), base.model.params_, 1.0, [group], base.X_test, base.y_test
    )["retrain"]
    for f in FIELDS:
        _close(getattr(res, f), expected[f], 1e-10, f)


def test_g_fractions_of_every_point_and_most_of_a_class(base):
    X, y = base.X, base.y
    n = y.size
    # Half of every point's weight: the fit at twice the l2_reg.
    half = sp.csr_matrix(np.full((1, n), 0.5))
    res = groupinf.retrain(base.model, X, y, half)
    _close(res.params[0], _ref_fit(X, y, 2.0) - base.model.params_, 1e-10)
    # 99.9 % of class 1's weight.
    ones = np.flatnonzero(y == 1)
    C = sp.csr_matrix(
        (np.full(ones.size, 0.999), (np.zeros(ones.size), ones)), shape=(1, n)
    )
    s = np.ones(n)
    s[ones] = 1 - 0.999
    res = groupinf.retrain(base.model, X, y, C)
    expected = _ref_fit(X, y, 1.0, s, base.model.params_) - base.model.params_
    assert np.abs(expected).max() > 3  # a large change
    _close(res.params[0], expected, 1e-10)
    # All of it through fractions of exactly 1 (and 1 - 1e-15 is rounding).
    for frac in (1.0, 1 - 1e-15):
        with pytest.raises(ValueError, match=r"removes all of class 1"):
            groupinf.retrain(base.model, X, y, C * (frac / 0.999))


def test_g_refit_leaving_a_class_almost_no_weight_is_right_or_says_so(base):
    X, y = base.X, base.y
    ones = np.flatnonzero(y == 1)
    frac = 1 - 1e-11  # 1 - 1e-12 is refused as removing the class
    C = sp.csr_matrix(
        (np.full(ones.size, frac), (np.zeros(ones.size), ones)), shape=(1, y.size)
    )
    s = np.ones(y.size)
    s[ones] -= frac
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", groupinf.ConvergenceWarning)
            res = groupinf.retrain(base.model, X, y, C)
    except (ValueError, groupinf.ConvergenceWarning):
        return
    theta = base.model.params_ + res.params[0]
    assert _relative_stationarity(X, y, s, theta, 1.0) < 1e-6


def test_g_duplicates_floats_and_empty_sets_of_groups(base):
    model, X, y = base.model, base.X, base.y
    n = y.size
    with pytest.raises(
        TypeError,
        match=r"got dtype float64.*whole numbers: pass them as \.astype\(int\)",
    ):
        groupinf.influence(model, X, y, [np.array([1.0, 2.0])])
    with pytest.raises(TypeError, match=r"dtype float64 and shape \(2,\)$"):
        groupinf.influence(model, X, y, [np.array([1.5, 2.0])])
    for empty in ((), [], np.zeros((0, n), dtype=bool)):
        with pytest.raises(ValueError, match=r"^groups is empty"):
            groupinf.retrain(model, X, y, empty)
    # Duplicate entries of a COO matrix add up, as SciPy defines them.
    coo = sp.coo_matrix(([0.25, 0.25, 1.0], ([0, 0, 0], [3, 3, 9])), shape=(1, n))
    plain = sp.csr_matrix(([0.5, 1.0], ([0, 0], [3, 9])), shape=(1, n))
    for fn in (groupinf.influence, groupinf.retrain):
        _close(fn(model, X, y, coo).params, fn(model, X, y, plain).params, 1e-14)
    coo = sp.coo_matrix(([0.7, 0.7], ([0, 0], [3, 3])), shape=(1, n))
    with pytest.raises(
        ValueError,
        match=r"must lie in \[0, 1\]; got range \[1.4, 1.4\]",
    ):
        groupinf.influence(model, X, y, coo)


def test_g_malformed_or_complex_group_matrices(base):
    model, X, y = base.model, base.X, base.y
    n = y.size
    M = sp.csr_matrix(np.r_[np.ones(3), np.zeros(n - 3)][None])
    for bad_index in (-5, n + 99):
        # Unchecked, either index array crashes SciPy's conversions
        # (a segmentation fault for the negative one).
        bad = sp.csr_matrix((M.data, M.indices.copy(), M.indptr), shape=M.shape)
        bad.indices[0] = bad_index
        for fn in (groupinf.influence, groupinf.retrain):
            with pytest.raises(
                ValueError,
                match=r"^groups matrix is a malformed sparse matrix",
            ):
                fn(model, X, y, bad)
    with pytest.raises(
        TypeError,
        match=r"groups matrix must hold real fractions.*complex128",
    ):
        groupinf.influence(model, X, y, M * (1 + 1j))
    for fmt in ("csr_array", "coo_array", "lil_matrix"):
        G = getattr(sp, fmt)(np.r_[np.full(3, 0.5), np.zeros(n - 3)][None])
        _close(
            groupinf.influence(model, X, y, G).params,
            0.5 * groupinf.influence(model, X, y, [np.arange(3)]).params,
            1e-14,
            fmt,
        )


def test_a_refit_on_a_saturated_plateau_matches_a_fresh_fit():
    # Removing the 100 lowest-margin of 200 separable points at l2_reg =
    # 1e-14: the Hessian at the warm start is singular to working precision
    # (every kept point saturated). The refit steps with a shifted factor
    # until an unshifted one certifies it, and equals a fit from scratch on
    # the kept rows (found by a new user; it used to raise).
    rng = np.random.default_rng(14)
    X = rng.standard_normal((200, 2))
    y = (X @ np.array([1.0, 0.5]) > 0).astype(int)
    m = groupinf.fit(X, y, 1e-14)
    z = np.c_[X, np.ones(len(y))] @ m.params_
    U = np.argsort(np.abs(z))[:100]
    r = groupinf.retrain(m, X, y, [U])
    assert r.converged.all()
    keep = np.setdiff1d(np.arange(len(y)), U)
    fresh = groupinf.fit(X[keep], y[keep], 1e-14)
    assert fresh.converged_
    _close(m.params_ + r.params[0], fresh.params_, 1e-8, "refit")
