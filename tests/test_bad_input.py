"""Bad input gets a clear ValueError or TypeError that names the argument;
awkward but valid input (empty groups, near-degenerate groups) gets finite
numbers, never a NaN."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import groupinf


@pytest.fixture(scope="module")
def data(cancer):
    X, y = cancer
    return X[:200], y[:200]


@pytest.fixture(scope="module")
def model(data):
    return groupinf.fit(*data, 1.0)


@pytest.fixture(scope="module")
def softmax_model(digits_small):
    return groupinf.fit(*digits_small, 1.0)


BOTH = pytest.mark.parametrize(
    "effect", [groupinf.influence, groupinf.retrain], ids=["influence", "retrain"]
)


def _run(effect, model, X, y, groups, *args, **kw):
    if effect is groupinf.retrain:
        kw.setdefault("n_jobs", 1)
    return effect(model, X, y, groups, *args, **kw)


# ---------------------------------------------------------------------------
# fit: X and y
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(data, bad):
    X, y = data
    X = X.copy()
    X[3, 4] = bad
    X[7, 0] = bad
    with pytest.raises(ValueError, match=r"^X contains 2 NaN or infinite"):
        groupinf.fit(X, y, 1.0)
    with pytest.raises(ValueError, match=r"^X contains 2 NaN or infinite"):
        groupinf.fit(sp.csr_matrix(X), y, 1.0)


def test_X_of_the_wrong_kind(data):
    X, y = data
    with pytest.raises(ValueError, match=r"^X must be 2-D"):
        groupinf.fit(X[:, 0], y, 1.0)
    with pytest.raises(TypeError, match=r"^X must hold real numbers"):
        groupinf.fit(X.astype(str), y, 1.0)
    with pytest.raises(TypeError, match=r"^X must hold real numbers.*complex"):
        groupinf.fit(X + 0j, y, 1.0)
    with pytest.raises(TypeError, match=r"^X is required"):
        groupinf.fit(None, y, 1.0)
    with pytest.raises(ValueError, match=r"^X has no rows"):
        groupinf.fit(X[:0], y[:0], 1.0)
    with pytest.raises(ValueError, match=r"^X has no columns"):
        groupinf.fit(X[:, :0], y, 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_y(data, bad):
    X, y = data
    yy = y.astype(np.float64)
    yy[5] = bad
    with pytest.raises(ValueError, match=r"^y contains NaN or infinite"):
        groupinf.fit(X, yy, 1.0)


def test_missing_and_malformed_labels(data):
    X, y = data
    labels = np.array(["a", "b"], dtype=object)[y]
    labels[0] = None
    with pytest.raises(ValueError, match=r"^y contains missing \(None\)"):
        groupinf.fit(X, labels, 1.0)
    with pytest.raises(ValueError, match=r"^y must be 1-D"):
        groupinf.fit(X, np.column_stack([y, y]), 1.0)
    with pytest.raises(TypeError, match=r"^y is required"):
        groupinf.fit(X, None, 1.0)


def test_unorderable_labels_name_y(data):
    X, y = data
    labels = np.array(["a", 1], dtype=object)[y]
    with pytest.raises(TypeError, match=r"\by\b"):
        groupinf.fit(X, labels, 1.0)


def test_length_mismatch(data):
    X, y = data
    with pytest.raises(ValueError, match=r"^y has 199 labels but X has 200 rows"):
        groupinf.fit(X, y[:-1], 1.0)
    with pytest.raises(ValueError, match=r"^y has 200 labels but X has 199 rows"):
        groupinf.fit(X[:-1], y, 1.0)


def test_one_class_only(data):
    X, _ = data
    with pytest.raises(ValueError, match=r"^y has a single class.*at least two"):
        groupinf.fit(X, np.ones(X.shape[0]), 1.0)
    with pytest.raises(ValueError, match=r"^y has a single class \(.*'only'.*\)"):
        groupinf.fit(X, np.array(["only"] * X.shape[0]), 1.0)


def test_a_class_with_zero_weight(data):
    X, y = data
    with pytest.raises(
        ValueError,
        match=r"^class\(es\) .*1.* zero total "
        r"sample_weight",
    ):
        groupinf.fit(X, y, 1.0, sample_weight=(y == 0).astype(float))


# ---------------------------------------------------------------------------
# fit: l2_reg, sample_weight, tol, max_iter
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -1.0, -0.0, np.nan, np.inf, -np.inf])
def test_l2_reg_not_positive_finite(data, bad):
    with pytest.raises(ValueError, match=r"^l2_reg must be finite and > 0"):
        groupinf.fit(*data, bad)


@pytest.mark.parametrize("bad", ["1.0", None, True, 1j, np.array([1.0]), [1.0]])
def test_l2_reg_not_a_real_number(data, bad):
    with pytest.raises(TypeError, match=r"^l2_reg must be a real number, got "):
        groupinf.fit(*data, bad)


def test_l2_reg_numpy_scalars_are_fine(data, model):
    for lam in (np.float32(1.0), np.int64(1), 1):
        m = groupinf.fit(*data, lam)
        assert m.l2_reg == 1.0 and isinstance(m.l2_reg, float)
        np.testing.assert_array_equal(m.coef_, model.coef_)


def test_bad_sample_weight(data):
    X, y = data
    n = y.size
    with pytest.raises(ValueError, match=r"^sample_weight must be finite and >= 0"):
        groupinf.fit(X, y, 1.0, sample_weight=-np.ones(n))
    with pytest.raises(ValueError, match=r"^sample_weight must be finite and >= 0"):
        groupinf.fit(X, y, 1.0, sample_weight=np.r_[np.nan, np.ones(n - 1)])
    with pytest.raises(ValueError, match=r"^sample_weight must have shape \(200,\)"):
        groupinf.fit(X, y, 1.0, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"^sample_weight is zero everywhere"):
        groupinf.fit(X, y, 1.0, sample_weight=np.zeros(n))
    with pytest.raises(TypeError, match=r"^sample_weight must be numeric"):
        groupinf.fit(X, y, 1.0, sample_weight=np.array(["1"] * n))


def test_bad_tol_and_max_iter(data, model):
    X, y = data
    for bad in (0.0, -1e-3, np.nan):
        with pytest.raises(ValueError, match=r"^tol must be finite and > 0"):
            groupinf.fit(X, y, 1.0, tol=bad)
        with pytest.raises(ValueError, match=r"^tol must be finite and > 0"):
            groupinf.retrain(model, X, y, [[0]], tol=bad)
    with pytest.raises(TypeError, match=r"^tol must be a real number"):
        groupinf.fit(X, y, 1.0, tol="1e-8")
    with pytest.raises(ValueError, match=r"^max_iter must be >= 1, got 0"):
        groupinf.fit(X, y, 1.0, max_iter=0)
    with pytest.raises(TypeError, match=r"^max_iter must be an integer, got float"):
        groupinf.retrain(model, X, y, [[0]], max_iter=1.5)
    with pytest.raises(ValueError, match=r"^n_jobs must be >= 1, got 0"):
        groupinf.retrain(model, X, y, [[0]], n_jobs=0)


# ---------------------------------------------------------------------------
# Prediction-time input
# ---------------------------------------------------------------------------


def test_prediction_inputs(data, model):
    X, _ = data
    with pytest.raises(
        ValueError,
        match=r"^X has 3 features, but the model was "
        r"fitted with 30",
    ):
        model.predict(X[:, :3])
    Xn = X[:2].copy()
    Xn[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"^X contains 1 NaN"):
        model.predict_proba(Xn)
    with pytest.raises(
        ValueError,
        match=r"^y contains label\(s\) .*3.* not among "
        r"the training classes",
    ):
        model.loss(X[:2], [0, 3])


# ---------------------------------------------------------------------------
# influence / retrain: the model and the training data
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, "model", object(), 3.0])
def test_influence_needs_a_fitted_model(data, bad):
    with pytest.raises(
        TypeError,
        match=r"^model must be a LogisticModel from "
        r"groupinf.fit, got ",
    ):
        groupinf.influence(bad, *data, [[0]])


def test_sklearn_model_is_refused(data):
    from sklearn.linear_model import LogisticRegression

    sk = LogisticRegression().fit(*data)
    with pytest.raises(TypeError, match=r"got LogisticRegression"):
        groupinf.influence(sk, *data, [[0]])
    for tol in (None, 1e-10):
        with pytest.raises(TypeError, match=r"got LogisticRegression"):
            groupinf.retrain(sk, *data, [[0]], tol=tol)


@pytest.mark.parametrize("bad", [None, "model"])
def test_retrain_needs_a_fitted_model(data, bad):
    with pytest.raises(TypeError, match=r"^model must be a LogisticModel"):
        groupinf.retrain(bad, *data, [[0]])


@BOTH
def test_data_that_are_not_the_fitted_data(data, model, rng, effect):
    X, y = data
    msg = r"^X, y are not the data the model was fitted on"
    perm = rng.permutation(y.size)
    with pytest.raises(ValueError, match=msg):
        _run(effect, model, X[perm], y, [[0]])  # rows of X shuffled alone
    with pytest.raises(ValueError, match=msg):
        _run(effect, model, X + 0.01 * rng.standard_normal(X.shape), y, [[0]])
    y2 = y.copy()
    y2[0] = 1 - y2[0]
    with pytest.raises(ValueError, match=msg):
        _run(effect, model, X, y2, [[0]])
    with pytest.raises(
        ValueError,
        match=r"^X has 199 rows, but the model was "
        r"fitted on 200",
    ):
        _run(effect, model, X[:-1], y[:-1], [[0]])
    with pytest.raises(ValueError, match=r"^X has 29 features"):
        _run(effect, model, X[:, 1:], y, [[0]])
    with pytest.raises(ValueError, match=r"^y contains label\(s\) .*2"):
        _run(effect, model, X, np.where(y == 1, 2, 0), [[0]])


@BOTH
def test_shuffled_rows_with_weights_are_detected(data, rng, effect):
    # With non-uniform weights even a joint shuffle of X and y changes F.
    X, y = data
    s = rng.uniform(0.5, 2.0, y.size)
    m = groupinf.fit(X, y, 1.0, sample_weight=s)
    perm = rng.permutation(y.size)
    with pytest.raises(ValueError, match=r"^X, y are not the data the model"):
        _run(effect, m, X[perm], y[perm], [[0]])


# ---------------------------------------------------------------------------
# influence / retrain: groups
# ---------------------------------------------------------------------------


@BOTH
def test_group_index_out_of_range(data, model, effect):
    with pytest.raises(
        ValueError,
        match=r"^groups\[1\] has index 200, out of "
        r"range for 200 training rows",
    ):
        _run(effect, model, *data, [[0, 1], [5, 200]])


@BOTH
def test_group_negative_index(data, model, effect):
    with pytest.raises(ValueError, match=r"^groups\[1\] has negative index -1"):
        _run(effect, model, *data, [[0, 1], [-1, 4]])


@BOTH
def test_group_duplicated_index(data, model, effect):
    with pytest.raises(
        ValueError,
        match=r"^groups\[2\] lists index 3 more than "
        r"once",
    ):
        _run(effect, model, *data, [[3], [0, 3], [5, 3, 9, 3]])


@BOTH
def test_group_mask_of_wrong_length(data, model, effect):
    with pytest.raises(
        ValueError,
        match=r"^groups\[0\] is a boolean mask of "
        r"shape \(199,\); it must have shape "
        r"\(200,\)",
    ):
        _run(effect, model, *data, [np.ones(199, dtype=bool)])


@BOTH
def test_group_that_removes_a_whole_class(data, model, effect):
    X, y = data
    ones = np.flatnonzero(y == 1)
    with pytest.raises(
        ValueError,
        match=r"^groups\[1\] removes all of class "
        r".*1.*intercept diverges",
    ):
        _run(effect, model, X, y, [ones[:-1], ones])
    C = sp.csr_matrix((y == 0).astype(float)[None, :])
    with pytest.raises(
        ValueError,
        match=r"^groups\[0\] removes all of class "
        r".*0",
    ):
        _run(effect, model, X, y, C)


@BOTH
def test_group_that_removes_everything(data, model, effect):
    with pytest.raises(
        ValueError,
        match=r"^groups\[0\] removes every training "
        r"point",
    ):
        _run(effect, model, *data, [np.ones(200, dtype=bool)])


@BOTH
def test_softmax_group_that_removes_a_class(digits_small, softmax_model, effect):
    X, y = digits_small
    with pytest.raises(
        ValueError,
        match=r"^groups\[0\] removes all of class "
        r".*2",
    ):
        _run(effect, softmax_model, X, y, [np.flatnonzero(y == 2)])


@BOTH
def test_malformed_groups(data, model, effect):
    n = 200
    cases = [
        (None, TypeError, r"^groups is required"),
        (3, TypeError, r"^groups must be a list of index arrays"),
        (np.array([0, 1]), TypeError, r"^groups must be a list of index arrays"),
        ([], ValueError, r"^groups is empty"),
        (
            [[0.5, 1.0]],
            TypeError,
            (
                r"^groups\[0\] must be a 1-D array of integer indices or a "
                r"boolean mask, got dtype float64"
            ),
        ),
        ([np.array([[0, 1]])], TypeError, r"^groups\[0\] must be a 1-D array"),
        (
            sp.csr_matrix((2, n - 1)),
            ValueError,
            r"^groups matrix has shape \(2, 199\); it must be \(n_groups, 200\)",
        ),
        (sp.csr_matrix((0, n)), ValueError, r"^groups matrix has no rows"),
        (
            sp.csr_matrix(np.full((1, n), 1.5)),
            ValueError,
            r"^groups matrix entries .* must lie in \[0, 1\]",
        ),
        (
            sp.csr_matrix(np.full((1, n), -0.5)),
            ValueError,
            r"^groups matrix entries .* must lie in \[0, 1\]",
        ),
        (
            sp.csr_matrix(np.full((1, n), np.nan)),
            ValueError,
            r"^groups matrix contains NaN",
        ),
    ]
    for groups, err, msg in cases:
        with pytest.raises(err, match=msg):
            _run(effect, model, *data, groups)


# ---------------------------------------------------------------------------
# influence / retrain: test points
# ---------------------------------------------------------------------------


@BOTH
def test_test_points_of_the_wrong_width(data, model, effect):
    X, y = data
    with pytest.raises(
        ValueError,
        match=r"^X_test has 29 features, but the model "
        r"was fitted with 30",
    ):
        _run(effect, model, X, y, [[0]], X[:3, :-1], y[:3])


@BOTH
def test_y_test_with_an_unknown_label(data, model, effect):
    X, y = data
    with pytest.raises(
        ValueError,
        match=r"^y_test contains label\(s\) .*7.* not "
        r"among the training classes",
    ):
        _run(effect, model, X, y, [[0]], X[:3], np.array([0, 1, 7]))


@BOTH
def test_test_points_given_alone(data, model, effect):
    X, y = data
    with pytest.raises(
        ValueError,
        match=r"^X_test and y_test must be given "
        r"together",
    ):
        _run(effect, model, X, y, [[0]], X[:3])
    with pytest.raises(
        ValueError,
        match=r"^X_test and y_test must be given "
        r"together",
    ):
        _run(effect, model, X, y, [[0]], None, y[:3])


@BOTH
def test_non_finite_test_points(data, model, effect):
    X, y = data
    Xt = X[:3].copy()
    Xt[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"^X_test contains 1 NaN"):
        _run(effect, model, X, y, [[0]], Xt, y[:3])


@BOTH
def test_y_test_length_mismatch(data, model, effect):
    X, y = data
    with pytest.raises(ValueError, match=r"^y_test has 2 labels"):
        _run(effect, model, X, y, [[0]], X[:3], y[:2])


def test_y_test_length_mismatch_names_X_test(data, model):
    X, y = data
    with pytest.raises(
        ValueError,
        match=r"^y_test has 2 labels but X_test has 3 "
        r"rows",
    ):
        groupinf.influence(model, X, y, [[0]], X[:3], y[:2])


# ---------------------------------------------------------------------------
# Valid but awkward: zero effects and finite numbers
# ---------------------------------------------------------------------------


@BOTH
def test_empty_group_is_not_an_error(data, model, effect):
    X, y = data
    res = _run(effect, model, X, y, [[], np.zeros(200, bool)], X[:4], y[:4])
    for f in ("params", "self_loss", "test_loss", "test_margin"):
        assert np.all(getattr(res, f) == 0.0), f


@BOTH
def test_group_of_zero_weight_rows_has_zero_effect(data, rng, effect):
    X, y = data
    s = np.ones(200)
    s[:20] = 0.0
    m = groupinf.fit(X, y, 1.0, sample_weight=s)
    res = _run(effect, m, X, y, [np.arange(20), np.arange(15, 30)], X[:4], y[:4])
    np.testing.assert_array_equal(res.group_weight, [0.0, 10.0])
    for f in ("params", "self_loss", "test_loss", "test_margin"):
        assert np.all(getattr(res, f)[0] == 0.0), f
        assert np.any(getattr(res, f)[1] != 0.0), f


@BOTH
def test_near_degenerate_groups_give_finite_results(data, effect):
    # Groups that leave a single point of a class, at weak regularisation.
    X, y = data
    m = groupinf.fit(X, y, 1e-2)
    ones, zeros = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    groups = [ones[:-1], ones[1:], zeros[:-1], np.r_[zeros[:-1], ones[:-1]]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning either
        res = _run(effect, m, X, y, groups, X[:10], y[:10])
    for f in ("params", "self_loss", "test_loss", "test_margin"):
        assert np.all(np.isfinite(getattr(res, f))), f
    assert np.all(res.self_loss > 0)
    if effect is groupinf.retrain:
        assert np.all(res.converged) and np.all(res.grad_norm <= res.grad_tol)


@BOTH
def test_softmax_near_degenerate_groups_give_finite_results(
    digits_small, softmax_model, effect
):
    X, y = digits_small
    groups = [np.flatnonzero(y == k)[:-1] for k in range(4)]
    res = _run(effect, softmax_model, X, y, groups, X[:10], y[:10])
    for f in ("params", "self_loss", "test_loss"):
        assert np.all(np.isfinite(getattr(res, f))), f
    if effect is groupinf.retrain:
        assert np.all(res.converged)


# -- regressions from a new user's attack ------------------------------------


def test_malformed_sparse_matrix_is_refused_before_any_kernel(cancer):
    import scipy.sparse as sp

    X, y = cancer
    Xs = sp.csr_matrix(X)
    bad = Xs.indices.copy()
    bad[0] = 9999
    Xb = sp.csr_matrix((Xs.data, bad, Xs.indptr), shape=Xs.shape)
    with pytest.raises(ValueError, match="X is a malformed sparse matrix"):
        groupinf.fit(Xb, y, 1.0)
    Xc = sp.csc_matrix(X)
    badc = Xc.indices.copy()
    badc[0] = 10**6
    with pytest.raises(ValueError, match="malformed sparse"):
        groupinf.fit(sp.csc_matrix((Xc.data, badc, Xc.indptr), shape=Xc.shape), y,
                     1.0)


def test_continuous_target_is_refused(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match="y looks continuous"):
        groupinf.fit(X, X[:, 0] + 0.1, 1.0)


def test_unconverged_model_is_refused_by_influence_and_retrain(cancer):
    X, y = cancer
    with pytest.warns(groupinf.ConvergenceWarning):
        m = groupinf.fit(X, y, 1.0, max_iter=1)
    for fn in (groupinf.influence, groupinf.retrain):
        with pytest.raises(ValueError, match="model did not converge"):
            fn(m, X, y, [np.arange(5)])


def test_huge_values_get_a_clear_error(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match="Standardise the columns of X"):
        groupinf.fit(X * 1e200, y, 1.0)
    with pytest.raises(ValueError, match="sample_weight is too large"):
        groupinf.fit(X, y, 1.0, sample_weight=np.full(y.size, 1e300))


def test_fit_converges_when_large_logits_cancel():
    # Logits near +-1000 make each loss a difference of large numbers; the
    # line search must judge steps by the rounding of those, not of F.
    X = np.array([
        [19.7872526, -1.42075325, -179.033475],
        [-19.3941296, 0.400982878, 21.6248197],
        [4.96984622, 2.68500213, 317.256350],
        [-23.5023114, -0.938863650, 415.449361],
        [-9.98469423, 2.07310815, 387.419962],
        [29.3416007, -0.634146338, -44.5965932],
        [-14.9697579, -1.99307699, 360.074954],
        [-28.2338509, 0.338657976, -261.049895],
        [17.7091459, 0.160070558, 56.2740095],
    ])
    y = np.array([0, 1, 2, 3, 4, 1, 4, 4, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = groupinf.fit(X, y, 5.9831e-4)
    assert m.converged_ and m.grad_norm_ <= m.grad_tol_


def test_non_integer_float_labels_are_refused_even_when_few(cancer):
    X, y = cancer
    y = y.astype(float)
    y[0] = 0.5  # would otherwise become a third "class"
    with pytest.raises(ValueError, match=r"y looks continuous: 1 of .* 0\.5.*"
                                         r"pass them as strings"):
        groupinf.fit(X, y, 1.0)


def test_complex_sparse_X_is_refused_like_dense(cancer):
    X, y = cancer
    for Xc in (X + 1j * X, sp.csr_matrix(X + 1j * X)):
        with pytest.raises(TypeError, match="X must hold real numbers"):
            groupinf.fit(Xc, y, 1.0)
    m = groupinf.fit(X, y, 1.0)
    with pytest.raises(TypeError, match="X_test must hold real numbers"):
        groupinf.influence(m, X, y, [[0]], sp.csr_matrix(X[:3] + 1j), y[:3])
