"""groupinf.influence (predicted) and groupinf.retrain (actual) effects.

Ground truths: exact refits with groupinf.fit on the kept rows, a dense NumPy
first-order implementation, and the definition of the influence function as
the derivative of the actual effect at zero removed weight.
"""

import _reference as ref
import numpy as np
import pytest
import scipy.sparse as sp

import groupinf

L2 = 1.0
FIELDS = ("params", "self_loss", "test_loss", "test_margin")


class Problem:
    """A fitted model with its training data, test points and groups."""

    def __init__(self, X, y, X_test, y_test, l2_reg=L2, sample_weight=None):
        self.X, self.y, self.X_test, self.y_test = X, y, X_test, y_test
        self.l2_reg = l2_reg
        self.model = groupinf.fit(X, y, l2_reg, sample_weight=sample_weight)
        self.s = self.model.sample_weight_
        self.binary = len(self.model.classes_) == 2
        self.n_logits = 1 if self.binary else len(self.model.classes_)

    def influence(self, groups, **kw):
        return groupinf.influence(
            self.model, self.X, self.y, groups, self.X_test, self.y_test, **kw
        )

    def retrain(self, groups, **kw):
        kw.setdefault("n_jobs", 1)
        return groupinf.retrain(
            self.model, self.X, self.y, groups, self.X_test, self.y_test, **kw
        )


def _split(X, y, n_test):
    return X[:-n_test], y[:-n_test], X[-n_test:], y[-n_test:]


@pytest.fixture(scope="module")
def binary(cancer):
    return Problem(*_split(*cancer, 69))


@pytest.fixture(scope="module")
def softmax(digits_small):
    return Problem(*_split(*digits_small, 40))


@pytest.fixture(scope="module")
def softmax10(digits):
    return Problem(*_split(*digits, 50))


@pytest.fixture(params=["binary", "softmax"])
def problem(request, binary, softmax):
    return binary if request.param == "binary" else softmax


def _random_groups(rng, n, sizes):
    return [np.sort(rng.choice(n, k, replace=False)) for k in sizes]


def _matrix(groups, n, value=1.0):
    rows = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    cols = np.concatenate(groups)
    vals = np.broadcast_to(value, cols.shape) if np.ndim(value) == 0 else value
    return sp.csr_matrix((vals, (rows, cols)), shape=(len(groups), n))


def _fields(effects, binary):
    return FIELDS if binary else ("params", "self_loss", "test_loss")


# ---------------------------------------------------------------------------
# First order is the derivative of the actual effect
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["binary", "softmax10"])
def test_first_order_is_derivative_of_retrain(request, rng, which):
    pb = request.getfixturevalue(which)
    groups = _random_groups(rng, pb.y.size, (1, 5, 20, 60))
    errors = {f: [] for f in _fields(None, pb.binary)}
    epsilons = (1e-2, 1e-3, 1e-4)
    for eps in epsilons:
        C = _matrix(groups, pb.y.size, eps)
        act, pred = pb.retrain(C), pb.influence(C)
        assert np.all(act.converged)
        for f, err in errors.items():
            # Params and test quantities are O(eps), the self-loss O(eps^2).
            power = 2 if f == "self_loss" else 1
            a = getattr(act, f) / eps**power
            p = getattr(pred, f) / eps**power
            err.append(np.abs(a - p).max() / np.abs(p).max())
    for f, err in errors.items():
        err = np.array(err)
        # The gap shrinks like eps: tenfold per decade (allow 5x).
        assert np.all(err[1:] < 0.2 * err[:-1]), (f, err)
        assert err[-1] < 1e-3, (f, err)


# ---------------------------------------------------------------------------
# First order against an independent dense NumPy implementation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_influence_matches_dense_numpy(cancer, digits_small, rng, which):
    X, y = cancer if which == "binary" else digits_small
    X, y, Xt, yt = _split(X, y, 30)
    s = rng.uniform(0.2, 2.0, size=y.size)
    pb = Problem(X, y, Xt, yt, l2_reg=0.5, sample_weight=s)
    groups = _random_groups(rng, y.size, (1, 3, 17, 80))
    C = _matrix(groups, y.size, rng.uniform(0.1, 1.0, sum(map(len, groups))))
    pred = pb.influence(C)

    m = pb.model
    dense = ref.first_order_influence(
        X, y, s, m.coef_, m.intercept_, 0.5, pb.binary, C.toarray() * s[None, :], Xt, yt
    )
    for f in _fields(pred, pb.binary):
        expected = dense[f]
        np.testing.assert_allclose(
            getattr(pred, f),
            expected,
            rtol=1e-8,
            atol=1e-10 * np.abs(expected).max(),
            err_msg=f,
        )
    np.testing.assert_allclose(pred.group_weight, C @ s, rtol=1e-14)


@pytest.mark.parametrize(
    "method", ["first-order", "newton", "second-order", "basu-second-order"]
)
@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_influence_tiers_match_dense_numpy(cancer, digits_small, rng, which, method):
    # Small groups go through Woodbury, large ones through a fresh Cholesky.
    X, y = cancer if which == "binary" else digits_small
    X, y, Xt, yt = _split(X, y, 30)
    s = rng.uniform(0.2, 2.0, size=y.size)
    pb = Problem(X, y, Xt, yt, l2_reg=0.5, sample_weight=s)
    groups = _random_groups(rng, y.size, (1, 3, 17, 80))
    C = _matrix(groups, y.size, rng.uniform(0.1, 1.0, sum(map(len, groups))))
    m = pb.model
    dense = ref.influence_tiers(
        X, y, s, m.coef_, m.intercept_, 0.5, pb.binary, C.toarray() * s[None, :], Xt, yt
    )[method]
    pred = pb.influence(C, method=method, diagnostics=True)
    plug = pb.influence(C, method=method, plugin=True)
    checks = [
        (pred.params, "params"),
        (pred.self_loss, "self_loss"),
        (pred.test_loss, "test_loss"),
        (pred.param_norm_h, "param_norm_h"),
        (pred.leverage_max, "leverage_max"),
        (plug.self_loss, "plugin_self_loss"),
        (plug.test_loss, "plugin_test_loss"),
        (plug.params, "params"),
    ]
    if pb.binary:
        checks.append((pred.self_margin, "self_margin"))
        np.testing.assert_allclose(
            plug.test_margin, pred.test_margin, rtol=1e-12, atol=1e-15
        )
    for actual, key in checks:
        expected = dense[key]
        np.testing.assert_allclose(
            actual,
            expected,
            rtol=1e-7,
            atol=1e-9 * np.abs(expected).max(),
            err_msg=f"{method}: {key}",
        )
    assert pred.method == method and plug.method == method + "+plugin"


def test_first_order_is_additive_and_linear(problem, rng):
    idx = np.sort(rng.choice(problem.y.size, 12, replace=False))
    whole = problem.influence([idx])
    singles = problem.influence([[i] for i in idx])
    for f in ("params", "test_loss"):
        np.testing.assert_allclose(
            getattr(singles, f).sum(axis=0),
            getattr(whole, f)[0],
            rtol=1e-9,
            atol=1e-12 * np.abs(getattr(whole, f)).max(),
        )
    half = problem.influence(_matrix([idx], problem.y.size, 0.5))
    np.testing.assert_allclose(half.params, 0.5 * whole.params, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(half.self_loss, 0.25 * whole.self_loss, rtol=1e-12)


# ---------------------------------------------------------------------------
# retrain is an exact refit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_retrain_equals_independent_refit(request, rng, which):
    pb = request.getfixturevalue(which)
    m = pb.model
    groups = _random_groups(rng, pb.y.size, (1, 10, 100))
    act = pb.retrain(groups)
    for g, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(pb.y.size), idx)
        refit = groupinf.fit(pb.X[keep], pb.y[keep], pb.l2_reg)
        expected = refit.params_ - m.params_
        np.testing.assert_allclose(act.params[g], expected, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(
            act.test_loss[g],
            refit.loss(pb.X_test, pb.y_test) - m.loss(pb.X_test, pb.y_test),
            rtol=1e-6,
            atol=1e-8,
        )
        self_loss = np.sum(
            refit.loss(pb.X[idx], pb.y[idx]) - m.loss(pb.X[idx], pb.y[idx])
        )
        assert act.self_loss[g] == pytest.approx(self_loss, rel=1e-6, abs=1e-8)
        if pb.binary:
            np.testing.assert_allclose(
                act.test_margin[g],
                refit.margin(pb.X_test, pb.y_test) - m.margin(pb.X_test, pb.y_test),
                rtol=1e-6,
                atol=1e-8,
            )


def test_fractional_retrain_equals_weighted_refit(problem, rng):
    n = problem.y.size
    idx = np.sort(rng.choice(n, 40, replace=False))
    frac = rng.uniform(0.1, 1.0, idx.size)
    act = problem.retrain(_matrix([idx], n, frac))
    s = np.ones(n)
    s[idx] -= frac
    refit = groupinf.fit(problem.X, problem.y, problem.l2_reg, sample_weight=s)
    np.testing.assert_allclose(
        act.params[0], refit.params_ - problem.model.params_, rtol=1e-7, atol=1e-8
    )
    np.testing.assert_allclose(act.group_weight, [frac.sum()], rtol=1e-14)


def test_retrain_certificates(problem, rng):
    n = problem.y.size
    groups = _random_groups(rng, n, (1, 7, 50, n // 2))
    act = problem.retrain(groups)
    assert act.converged.dtype == bool and np.all(act.converged)
    assert np.all(act.grad_norm <= act.grad_tol)
    assert np.all(act.n_iter >= 1)
    X, m = problem.X, problem.model
    for g, idx in enumerate(groups):
        s = np.ones(n)
        s[idx] = 0.0
        col = np.abs(X).T @ s
        scale = np.sqrt(col @ col + s.sum() ** 2) * np.sqrt(problem.n_logits)
        # The target is at round-off level ...
        assert act.grad_tol[g] / scale == pytest.approx(1e-13, rel=1e-9)
        # ... and the NumPy gradient at the refit parameters meets it.
        W, b = ref.split_public(m.params_ + act.params[g], problem.n_logits)
        gW, gb = ref.gradient(X, problem.y, s, W, b, problem.l2_reg, problem.binary)
        assert np.linalg.norm(np.concatenate([gW.ravel(), gb])) <= 2 * act.grad_tol[g]


def test_retrain_tol_is_relative(binary, rng):
    groups = _random_groups(rng, binary.y.size, (5, 30))
    loose = binary.retrain(groups, tol=1e-8)
    tight = binary.retrain(groups)
    np.testing.assert_allclose(loose.grad_tol, 1e5 * tight.grad_tol, rtol=1e-12)
    assert np.all(loose.grad_norm <= loose.grad_tol)


def test_retrain_does_not_depend_on_n_jobs_or_group_order(problem, rng):
    n = problem.y.size
    groups = _random_groups(rng, n, (1, 4, 16, 64, 128))
    one = problem.retrain(groups, n_jobs=1)
    two = problem.retrain(groups, n_jobs=2)
    perm = rng.permutation(len(groups))
    permuted = problem.retrain([groups[i] for i in perm], n_jobs=2)
    names = _fields(one, problem.binary) + (
        "grad_norm",
        "grad_tol",
        "n_iter",
        "converged",
        "group_weight",
    )
    for f in names:
        np.testing.assert_array_equal(getattr(two, f), getattr(one, f), err_msg=f)
        np.testing.assert_array_equal(
            getattr(permuted, f), getattr(one, f)[perm], err_msg=f
        )


def test_retrain_many_groups_across_batches(binary, rng):
    # More groups than one batch of simultaneous refits, permuted: each
    # group's refit must not depend on its neighbours.
    n = binary.y.size
    sizes = rng.integers(1, n // 4, size=150)
    groups = _random_groups(rng, n, sizes)
    groups[7] = np.array([], dtype=np.int64)
    base = binary.retrain(groups, n_jobs=2)
    assert np.all(base.converged) and np.all(base.grad_norm <= base.grad_tol)
    perm = rng.permutation(len(groups))
    permuted = binary.retrain([groups[i] for i in perm], n_jobs=1)
    for f in FIELDS:
        a, b = getattr(permuted, f), getattr(base, f)[perm]
        np.testing.assert_allclose(
            a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max(), err_msg=f
        )
    assert np.all(base.params[7] == 0.0)
    # A few of them against independent refits.
    for g in (0, 77, 149):
        keep = np.setdiff1d(np.arange(n), groups[g])
        refit = groupinf.fit(binary.X[keep], binary.y[keep], binary.l2_reg)
        np.testing.assert_allclose(
            base.params[g], refit.params_ - binary.model.params_, rtol=1e-7, atol=1e-8
        )


@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_retrain_of_large_changes_equals_independent_refit(request, which):
    # Groups that leave a class nearly empty move theta far from theta_hat,
    # where the factor of H - H_U is a poor model: the exact-Newton path.
    pb = request.getfixturevalue(which)
    n, m = pb.y.size, pb.model
    groups = [np.flatnonzero(pb.y == k)[:-2] for k in np.unique(pb.y)[:2]]
    groups.append(np.arange(0, n, 2))
    act = pb.retrain(groups)
    assert np.all(act.converged)
    for g, idx in enumerate(groups):
        keep = np.setdiff1d(np.arange(n), idx)
        refit = groupinf.fit(pb.X[keep], pb.y[keep], pb.l2_reg)
        expected = refit.params_ - m.params_
        assert np.abs(expected).max() > 0.1  # a large change indeed
        np.testing.assert_allclose(
            act.params[g],
            expected,
            rtol=1e-7,
            atol=1e-8 * max(1.0, np.abs(expected).max()),
        )


def test_influence_group_order_permutes_results(problem, rng):
    groups = _random_groups(rng, problem.y.size, (1, 4, 16, 64))
    base = problem.influence(groups)
    perm = rng.permutation(len(groups))
    permuted = problem.influence([groups[i] for i in perm])
    for f in _fields(base, problem.binary):
        np.testing.assert_allclose(
            getattr(permuted, f),
            getattr(base, f)[perm],
            rtol=1e-12,
            atol=1e-16,
            err_msg=f,
        )


# ---------------------------------------------------------------------------
# Group formats, empty groups, centring, signs
# ---------------------------------------------------------------------------


def test_group_formats_agree(problem, rng):
    n = problem.y.size
    groups = _random_groups(rng, n, (1, 9, 33))
    masks = []
    for g in groups:
        mask = np.zeros(n, dtype=bool)
        mask[g] = True
        masks.append(mask)
    shuffled = [rng.permutation(g).astype(np.int32) for g in groups]
    formats = {
        "lists": [list(map(int, g)) for g in groups],
        "shuffled int32": shuffled,
        "masks": masks,
        "2-D mask": np.array(masks),
        "sparse": _matrix(groups, n),
        "sparse coo": _matrix(groups, n).tocoo(),
    }
    for fn in (problem.influence, problem.retrain):
        base = fn(groups)
        for name, fmt in formats.items():
            res = fn(fmt)
            for f in _fields(base, problem.binary) + ("group_weight",):
                np.testing.assert_allclose(
                    getattr(res, f),
                    getattr(base, f),
                    rtol=1e-13,
                    atol=0,
                    err_msg=f"{name}: {f}",
                )


def test_empty_group_has_exactly_zero_effect(problem, rng):
    n = problem.y.size
    other = np.sort(rng.choice(n, 10, replace=False))
    for empty in ([], np.array([], dtype=np.int64), np.zeros(n, dtype=bool)):
        for res in (problem.influence([empty, other]), problem.retrain([empty, other])):
            for f in _fields(res, problem.binary):
                value = getattr(res, f)[0]
                assert np.all(value == 0.0), f
                assert np.any(getattr(res, f)[1] != 0.0), f
            assert res.group_weight[0] == 0.0
    C = _matrix([np.array([], dtype=np.int64), other], n)
    assert C.shape == (2, n) and C[0].nnz == 0
    res = problem.retrain(C)
    assert np.all(res.params[0] == 0.0) and res.converged[0]
    assert res.grad_norm[0] <= res.grad_tol[0]
    res = problem.influence(C)
    assert np.all(res.params[0] == 0.0) and res.self_loss[0] == 0.0


def test_multiclass_changes_are_centred_and_finite(softmax, rng):
    n = softmax.y.size
    K = softmax.n_logits
    groups = _random_groups(rng, n, (1, 20, 150))
    # A group holding most of one class stresses the intercepts.
    cls = np.flatnonzero(softmax.y == 2)
    groups.append(cls[:-3])
    for res in (softmax.influence(groups), softmax.retrain(groups)):
        assert res.params.shape == (len(groups), K * (softmax.X.shape[1] + 1))
        assert res.test_margin is None
        for f in ("params", "self_loss", "test_loss"):
            assert np.all(np.isfinite(getattr(res, f))), f
        d_intercept = res.params[:, -K:]
        np.testing.assert_allclose(
            d_intercept.sum(axis=1), 0.0, atol=1e-12 * np.abs(d_intercept).max()
        )


def test_self_loss_first_order_is_nonnegative_and_actual_too(problem, rng):
    n = problem.y.size
    groups = _random_groups(rng, n, (1, 2, 5, 25, 125, n // 2))
    pred, act = problem.influence(groups), problem.retrain(groups)
    assert np.all(pred.self_loss > 0)
    # Exactly too: minimising F_-U and F = F_-U + L_U gives
    # L_U(theta_-U) - L_U(theta_hat) >= 0.
    assert np.all(act.self_loss > 0)
    # First order underestimates the actual group self-loss here.
    assert np.all(pred.self_loss <= act.self_loss * (1 + 1e-6))


def test_self_loss_first_order_nonnegative_random_groups(binary, softmax, rng):
    # Many random groups of random sizes and removal fractions, one call.
    for pb in (binary, softmax):
        n = pb.y.size
        sizes = rng.integers(1, n // 3, size=40)
        groups = _random_groups(rng, n, sizes)
        fracs = rng.uniform(1e-6, 1.0, size=len(groups))
        C = sp.diags(fracs) @ _matrix(groups, n)
        res = pb.influence(C)
        assert np.all(res.self_loss > 0)
        assert np.all(np.isfinite(res.params))


def test_result_shapes_and_frame(binary, rng):
    groups = _random_groups(rng, binary.y.size, (3, 8))
    T = binary.y_test.size
    p = binary.X.shape[1] + 1
    for res, method in (
        (binary.influence(groups), "first-order"),
        (binary.retrain(groups), "retrain"),
    ):
        assert res.method == method
        assert res.n_groups == 2
        assert res.params.shape == (2, p)
        assert res.self_loss.shape == (2,)
        assert res.test_loss.shape == (2, T) and res.test_margin.shape == (2, T)
        np.testing.assert_array_equal(res.group_weight, [3.0, 8.0])
        np.testing.assert_allclose(res.param_norm, np.linalg.norm(res.params, axis=1))
        frame = res.to_frame()
        assert len(frame) == 2
        np.testing.assert_array_equal(frame["self_loss"], res.self_loss)
        assert f"test_loss_{T - 1}" in frame and f"test_margin_{T - 1}" in frame
    assert binary.influence(groups).grad_norm is None
    no_test = groupinf.influence(binary.model, binary.X, binary.y, groups)
    assert no_test.test_loss is None and no_test.test_margin is None
    np.testing.assert_array_equal(no_test.params, binary.influence(groups).params)


def _sparse_pair(cancer):
    X, y = cancer
    X = X.copy()
    X[np.abs(X) < 0.7] = 0.0
    X, y, Xt, yt = _split(X, y, 20)
    return Problem(X, y, Xt, yt), Problem(sp.csr_matrix(X), y, sp.csr_matrix(Xt), yt)


def _assert_same_effects(a, b, what):
    for f in FIELDS:
        np.testing.assert_allclose(
            getattr(b, f), getattr(a, f), rtol=1e-7, atol=1e-9, err_msg=f"{what}: {f}"
        )


def test_sparse_training_data_retrain_gives_the_dense_effects(cancer, rng):
    dense, csr = _sparse_pair(cancer)
    groups = _random_groups(rng, dense.y.size, (2, 30))
    _assert_same_effects(dense.retrain(groups), csr.retrain(groups), "retrain")


def test_sparse_training_data_influence_gives_the_dense_effects(cancer, rng):
    dense, csr = _sparse_pair(cancer)
    groups = _random_groups(rng, dense.y.size, (2, 30))
    _assert_same_effects(dense.influence(groups), csr.influence(groups), "influence")


def test_sparse_test_points_give_the_dense_effects(binary, rng):
    groups = _random_groups(rng, binary.y.size, (2, 30))
    Xt = sp.csr_matrix(binary.X_test)
    for fn in (groupinf.influence, groupinf.retrain):
        a = fn(binary.model, binary.X, binary.y, groups, binary.X_test, binary.y_test)
        b = fn(binary.model, binary.X, binary.y, groups, Xt, binary.y_test)
        _assert_same_effects(a, b, fn.__name__)


def test_unknown_method_is_refused(binary):
    with pytest.raises(ValueError, match="method must be one of"):
        binary.influence([[0]], method="second-order-typo")
