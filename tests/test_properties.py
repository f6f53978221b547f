"""Property tests: invariants of the math contract over random small problems.

Hypothesis draws the shape of a problem (n, d, classes, l2_reg, a seed for
the data, sample weights, groups); NumPy builds the data from the drawn seed.
Every run is derandomised and keeps no example database, so CI sees the same
examples every time. Properties:

- first-order effects are linear in the removed weights (additive over
  disjoint groups, proportional to removal fractions);
- 0 <= first-order self-loss <= Newton self-loss, and the leverage bound
  first-order >= (1 - leverage_max) * Newton;
- Newton's step is exact for a quadratic objective (the Woodbury solver and
  a fresh factor of H - H_U against NumPy's normal equations), and for the
  logistic loss its relative error vanishes with the removed fraction;
- permuting the training rows changes nothing but the group indices;
- scaling sample weights and l2_reg by the same c leaves theta_hat and every
  parameter change unchanged;
- retrain agrees with an independent SciPy minimisation of the same objective.
"""

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.optimize as sopt
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import expit, logsumexp

import groupinf
from groupinf import _newton
from groupinf._woodbury import GroupSolver

# Reproducible in CI: the same examples every run, nothing stored on disk.
PROPS = settings(max_examples=25, deadline=None, derandomize=True,
                 database=None, suppress_health_check=[HealthCheck.too_slow])

N_TEST = 5


# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------


class Problem:
    """Random training data with every class among the first K rows.

    Rows 0..K-1 hold one point of each class and never enter a group, so no
    group can remove a whole class.
    """

    def __init__(self, n, d, K, seed, l2_reg, weighted):
        rng = np.random.default_rng(seed)
        self.n, self.d, self.K, self.l2_reg = n, d, K, l2_reg
        self.seed = seed
        scale = rng.uniform(0.5, 2.0, size=d)
        X = rng.normal(size=(n + N_TEST, d)) * scale
        n_logits = 1 if K == 2 else K
        W = rng.normal(scale=1.0, size=(n_logits, d))
        b = rng.normal(scale=0.5, size=n_logits)
        Z = X @ W.T + b
        if K == 2:
            y = (rng.random(n + N_TEST) < expit(Z[:, 0])).astype(np.int64)
        else:
            P = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
            y = (rng.random(n + N_TEST)[:, None] > np.cumsum(P, axis=1)).sum(1)
            y = np.minimum(y, K - 1)
        y[:2 * K] = np.tile(np.arange(K), 2)
        self.X, self.y = np.ascontiguousarray(X[:n]), y[:n]
        self.X_test, self.y_test = np.ascontiguousarray(X[n:]), y[n:]
        self.s = rng.uniform(0.2, 3.0, size=n) if weighted else None

    def __repr__(self):
        return (f"Problem(n={self.n}, d={self.d}, K={self.K}, seed={self.seed}, "
                f"l2_reg={self.l2_reg!r}, weighted={self.s is not None})")

    def fit(self, **kw):
        kw.setdefault("l2_reg", self.l2_reg)
        kw.setdefault("sample_weight", self.s)
        return groupinf.fit(self.X, self.y, **kw)

    def influence(self, model, groups, X=None, y=None, **kw):
        X = self.X if X is None else X
        y = self.y if y is None else y
        return groupinf.influence(model, X, y, groups, self.X_test,
                                  self.y_test, **kw)

    def retrain(self, model, groups, X=None, y=None, **kw):
        X = self.X if X is None else X
        y = self.y if y is None else y
        kw.setdefault("n_jobs", 1)
        return groupinf.retrain(model, X, y, groups, self.X_test,
                                self.y_test, **kw)


@st.composite
def problems(draw, classes=(2, 3), max_n=80):
    K = draw(st.sampled_from(classes))
    n = draw(st.integers(6 * K, max_n))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    l2_reg = 10.0 ** draw(st.floats(-1.0, 1.0))
    weighted = draw(st.booleans())
    return Problem(n, d, K, seed, l2_reg, weighted)


def members(prob, min_size=1, max_frac=1.0):
    """Unique row indices drawn from the rows a group may hold (K..n-1)."""
    pool = prob.n - prob.K
    return st.lists(st.integers(prob.K, prob.n - 1), unique=True,
                    min_size=min_size,
                    max_size=max(min_size, int(max_frac * pool)))


def fraction_matrix(n, rows):
    """Sparse (G, n) removal fractions from a list of {index: fraction}."""
    M = sp.lil_matrix((len(rows), n))
    for g, row in enumerate(rows):
        for i, c in row.items():
            M[g, i] = c
    return M.tocsr()


# ---------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------


def rel_err(a, b, scale=None, elementwise=False):
    """max |a - b| relative to scale (default: the size of a and b).

    A 2-D array is one vector per row (one group per row) and each row is held
    to its own size; a 1-D array is one vector, or with ``elementwise`` one
    number per entry (e.g. one self-loss per group).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = np.abs(a - b)
    if scale is None:
        scale = np.maximum(np.abs(a), np.abs(b))
        if a.ndim == 2:
            scale = scale.max(axis=1)
        elif not elementwise:
            scale = scale.max()
    if a.ndim == 2:
        diff = diff.max(axis=1)
    scale = np.asarray(scale, dtype=np.float64)
    return float(np.max(diff / np.maximum(scale, 1e-300)))


def assert_close(a, b, rtol, what, scale=None, elementwise=False):
    err = rel_err(a, b, scale, elementwise)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.1e}"


def row_scale(*arrays):
    """Per-row max |entry| over several (G, m) arrays."""
    return np.max([np.abs(a).max(axis=1) for a in arrays], axis=0)


# ---------------------------------------------------------------------------
# 1. First-order effects are linear in the removed weights
# ---------------------------------------------------------------------------


@PROPS
@given(data=st.data(), prob=problems())
def test_first_order_additive_over_disjoint_groups(data, prob):
    idx = data.draw(members(prob, min_size=2), label="U+V")
    cut = data.draw(st.integers(1, len(idx) - 1), label="cut")
    U, V = np.array(idx[:cut]), np.array(idx[cut:])
    model = prob.fit()
    eff = prob.influence(model, [U, V, np.concatenate([U, V])])

    fields = ["params", "test_loss"] + (["test_margin"] if prob.K == 2 else [])
    for name in fields:
        a = getattr(eff, name)
        union, summed = a[2:3], a[0:1] + a[1:2]
        # Rounding is relative to the pieces: U and V may nearly cancel.
        assert_close(union, summed, 1e-10, name,
                     scale=row_scale(a[0:1], a[1:2], a[2:3]))
    assert eff.group_weight[2] == pytest.approx(
        eff.group_weight[0] + eff.group_weight[1], rel=1e-14)


@PROPS
@given(data=st.data(), prob=problems())
def test_first_order_linear_in_removed_fractions(data, prob):
    # Removing fraction a of U and b of V (disjoint) is a * U + b * V.
    idx = data.draw(members(prob, min_size=2), label="U+V")
    cut = data.draw(st.integers(1, len(idx) - 1), label="cut")
    a = data.draw(st.floats(0.01, 1.0), label="a")
    b = data.draw(st.floats(0.01, 1.0), label="b")
    U, V = idx[:cut], idx[cut:]
    C = fraction_matrix(prob.n, [dict.fromkeys(U, 1.0), dict.fromkeys(V, 1.0),
                                 {**dict.fromkeys(U, a), **dict.fromkeys(V, b)}])
    model = prob.fit()
    eff = prob.influence(model, C)

    fields = ["params", "test_loss"] + (["test_margin"] if prob.K == 2 else [])
    for name in fields:
        arr = getattr(eff, name)
        mixed, combo = arr[2:3], a * arr[0:1] + b * arr[1:2]
        assert_close(mixed, combo, 1e-10, name,
                     scale=row_scale(a * arr[0:1], b * arr[1:2], arr[2:3]))


@settings(PROPS, max_examples=10)
@given(data=st.data(), prob=problems())
def test_group_removing_a_class_is_refused(data, prob):
    # The strategies above keep rows 0..K-1 out of every group; a group that
    # does take all of one class (plus anything else) is an error, not a
    # number.
    k = data.draw(st.integers(0, prob.K - 1), label="class")
    extra = data.draw(members(prob, min_size=0), label="extra")
    group = np.union1d(np.flatnonzero(prob.y == k),
                       np.array(extra, dtype=np.int64))
    model = prob.fit()
    for run in (prob.influence, prob.retrain):
        with pytest.raises(ValueError, match="removes (all of class|every)"):
            run(model, [np.arange(prob.K, prob.n), group])


# ---------------------------------------------------------------------------
# 2. 0 <= first-order self-loss <= Newton self-loss
# ---------------------------------------------------------------------------


def _numpy_sums(model, X, y, w):
    """sum_i w_i grad l_i and sum_i w_i hess l_i at the fit, public layout.

    Plain NumPy from the model's probabilities: logit k of point i is
    coef_k . x_i + intercept_k, so its gradient in the public flattening
    [coef.ravel(), intercept] is x_i in block k and 1 at intercept k.
    """
    n, d = X.shape
    P = model.predict_proba(X)
    codes = np.searchsorted(model.classes_, y)
    if len(model.classes_) == 2:
        J = np.column_stack([X, np.ones(n)])[:, None, :]  # (n, 1, p)
        r = (P[:, 1] - codes)[:, None]
        C = (P[:, 1] * P[:, 0])[:, None, None]
    else:
        K = P.shape[1]
        J = np.zeros((n, K, K * (d + 1)))
        for k in range(K):
            J[:, k, k * d:(k + 1) * d] = X
            J[:, k, K * d + k] = 1.0
        r = P - np.eye(K)[codes]
        C = P[:, :, None] * np.eye(K)[None] - P[:, :, None] * P[:, None, :]
    g = np.einsum("i,ik,ikp->p", w, r, J)
    CJ = np.einsum("ikl,ilp->ikp", C, J)
    H = np.einsum("ikq,ikp->qp", w[:, None, None] * J, CJ)
    return g, H


def _complement_of_flat(model):
    # Softmax: a basis of the directions orthogonal to "add c to every
    # intercept", on which H is positive definite; binary: everything.
    p = model.params_.size
    if len(model.classes_) == 2:
        return np.eye(p)
    K = len(model.classes_)
    v = np.zeros(p)
    v[-K:] = 1.0
    Q = np.linalg.qr(np.column_stack([v, np.eye(p)]))[0]
    return Q[:, 1:p]


@PROPS
@given(data=st.data(), prob=problems())
def test_self_loss_between_zero_and_newton(data, prob):
    # Groups of at most half the rows keep H - H_U well away from singular.
    groups = [np.array(data.draw(members(prob, max_frac=0.5), label=f"g{k}"))
              for k in range(3)]
    model = prob.fit()
    first = prob.influence(model, groups, diagnostics=True)
    newton = prob.influence(model, groups, method="newton")

    fo, nt = first.self_loss, newton.self_loss
    assert np.all(fo > 0), fo
    # g^T H^-1 g <= g^T (H - H_U)^-1 g, up to rounding.
    assert np.all(fo <= nt * (1 + 1e-10)), (fo, nt)
    # README: first-order >= (1 - leverage_max) * Newton.
    lev = newton.leverage_max
    assert np.all((0 <= lev) & (lev < 1)), lev
    assert np.all(fo >= (1 - lev) * nt * (1 - 1e-10)), (fo, nt, lev)

    # The three numbers from scratch in NumPy, so the inequalities above do
    # not compare two wrong things.
    s = model.sample_weight_
    Q = _complement_of_flat(model)
    _, H_loss = _numpy_sums(model, prob.X, prob.y, s)
    H = Q.T @ (H_loss + np.diag(np.r_[np.full(model.coef_.size, prob.l2_reg),
                                      np.zeros(model.intercept_.size)])) @ Q
    for k, idx in enumerate(groups):
        g, H_U = _numpy_sums(model, prob.X[idx], prob.y[idx], s[idx])
        g, H_U = Q.T @ g, Q.T @ H_U @ Q
        assert fo[k] == pytest.approx(g @ np.linalg.solve(H, g), rel=1e-9)
        assert nt[k] == pytest.approx(g @ np.linalg.solve(H - H_U, g), rel=1e-9)
        top = sla.eigh(H_U, H, eigvals_only=True)[-1]
        assert lev[k] == pytest.approx(top, rel=1e-8, abs=1e-12)
        assert first.leverage_max[k] == pytest.approx(top, rel=1e-8, abs=1e-12)


# ---------------------------------------------------------------------------
# 3. Newton is exact for a quadratic objective ...
# ---------------------------------------------------------------------------


@PROPS
@given(m=st.integers(3, 60), p=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1), log_lam=st.floats(-1.0, 1.0),
       data=st.data())
def test_newton_step_exact_for_quadratic(m, p, seed, log_lam, data):
    # F(theta) = sum_i s_i (a_i^T theta - b_i)^2 / 2 + lam/2 ||theta||^2
    lam = 10.0 ** log_lam
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(m, p)) * rng.uniform(0.5, 2.0, size=p)
    b = rng.normal(size=m) + A @ rng.normal(size=p)
    s = rng.uniform(0.2, 3.0, size=m)
    U = np.array(data.draw(st.lists(st.integers(0, m - 1), unique=True,
                                    min_size=1, max_size=m), label="U"))
    keep = np.setdiff1d(np.arange(m), U)

    H = A.T @ (s[:, None] * A) + lam * np.eye(p)
    theta = np.linalg.solve(H, A.T @ (s * b))
    g_U = A[U].T @ (s[U] * (A[U] @ theta - b[U]))
    R = np.sqrt(s[U])[:, None] * A[U]  # R^T R = H_U

    # Ground truth: the normal equations without U, solved from scratch.
    H_keep = A[keep].T @ (s[keep, None] * A[keep]) + lam * np.eye(p)
    exact = np.linalg.solve(H_keep, A[keep].T @ (s[keep] * b[keep])) - theta

    L = _newton.factor(H)
    solver = GroupSolver(L, R, group=0)
    woodbury = solver.solve(g_U)
    dense = _newton.solve(_newton.factor(H - R.T @ R), g_U)
    cond = np.linalg.cond(H_keep)
    rtol = max(1e-11, 1e-14 * cond)
    assert_close(woodbury, exact, rtol, "Woodbury Newton step")
    assert_close(dense, exact, rtol, "dense Newton step")

    # Several right-hand sides at once give the rows' single solves.
    B = np.stack([g_U, rng.normal(size=p)])
    both = solver.solve(B)
    assert_close(both[0], woodbury, 1e-13, "batched row 0")
    assert_close(both[1], np.linalg.solve(H_keep, B[1]), rtol, "batched row 1")

    # The solver's leverage is the top eigenvalue of H^-1/2 H_U H^-1/2.
    top = sla.eigh(R.T @ R, H, eigvals_only=True)[-1]
    assert solver.leverage == pytest.approx(top, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------
# ... and for the logistic loss its relative error is O(removed fraction)
# ---------------------------------------------------------------------------


@settings(PROPS, max_examples=15)
@given(data=st.data(), prob=problems(max_n=60))
def test_newton_error_vanishes_with_removed_fraction(data, prob):
    idx = data.draw(members(prob, max_frac=0.5), label="U")
    eps = (0.1, 0.01)
    C = fraction_matrix(prob.n, [dict.fromkeys(idx, e) for e in eps])
    model = prob.fit()
    newton = prob.influence(model, C, method="newton").params
    act = prob.retrain(model, C)
    assert act.converged.all()
    rel = (np.linalg.norm(newton - act.params, axis=1)
           / np.linalg.norm(act.params, axis=1))
    # rel ~ c * eps: a tenth of the fraction, about a tenth of the error
    # (<= 0.15 allows for the next order); below 1e-9 the refit's own
    # round-off dominates.
    assert rel[1] <= max(0.15 * rel[0], 1e-9), rel
    assert rel[0] < 0.25, rel


# ---------------------------------------------------------------------------
# 4. Permuting the training rows
# ---------------------------------------------------------------------------


@settings(PROPS, max_examples=20)
@given(data=st.data(), prob=problems())
def test_permuting_rows_changes_nothing(data, prob):
    groups = [data.draw(members(prob, max_frac=0.5), label=f"g{k}")
              for k in range(2)]
    perm = np.random.default_rng(prob.seed ^ 0x5EED).permutation(prob.n)
    inv = np.argsort(perm)  # original row i sits at inv[i]
    Xp, yp = prob.X[perm], prob.y[perm]
    sp_ = None if prob.s is None else prob.s[perm]

    model = prob.fit()
    model_p = groupinf.fit(Xp, yp, prob.l2_reg, sample_weight=sp_)
    assert_close(model_p.params_, model.params_, 1e-9, "params_")
    assert_close(model_p.coef_, model.coef_, 1e-9, "coef_",
                 scale=np.abs(model.params_).max())
    assert_close(model_p.intercept_, model.intercept_, 1e-9, "intercept_",
                 scale=np.abs(model.params_).max())

    groups_p = [inv[np.array(g)] for g in groups]
    for method in ("first-order", "newton"):
        a = prob.influence(model, groups, method=method)
        b = prob.influence(model_p, groups_p, X=Xp, y=yp, method=method)
        for name in ("params", "test_loss", "self_loss"):
            assert_close(getattr(b, name), getattr(a, name), 1e-10,
                         f"{method} {name}", elementwise=True)
    a = prob.retrain(model, groups)
    b = prob.retrain(model_p, groups_p, X=Xp, y=yp)
    assert a.converged.all() and b.converged.all()
    for name in ("params", "test_loss", "self_loss"):
        assert_close(getattr(b, name), getattr(a, name), 1e-8,
                     f"retrain {name}", elementwise=True)


# ---------------------------------------------------------------------------
# 5. Scaling sample weights and l2_reg together
# ---------------------------------------------------------------------------


@settings(PROPS, max_examples=20)
@given(data=st.data(), prob=problems(), log_c=st.floats(-1.0, 1.0))
def test_scaling_weights_and_l2_reg_together(data, prob, log_c):
    c = 10.0 ** log_c
    groups = [data.draw(members(prob, max_frac=0.5), label=f"g{k}")
              for k in range(2)]
    s = np.ones(prob.n) if prob.s is None else prob.s

    model = prob.fit(sample_weight=s)
    model_c = prob.fit(l2_reg=c * prob.l2_reg, sample_weight=c * s)
    assert_close(model_c.params_, model.params_, 1e-9, "params_")

    # H and g_U both scale by c: the parameter change does not; the
    # (weighted) self-loss scales by c, test losses do not.
    for method in ("first-order", "newton"):
        a = prob.influence(model, groups, method=method)
        b = prob.influence(model_c, groups, method=method)
        assert_close(b.params, a.params, 1e-10, f"{method} params")
        assert_close(b.test_loss, a.test_loss, 1e-10, f"{method} test_loss")
        assert_close(b.self_loss, c * a.self_loss, 1e-10, f"{method} self_loss",
                     elementwise=True)
        assert_close(b.group_weight, c * a.group_weight, 1e-13,
                     f"{method} group_weight", elementwise=True)
    a = prob.retrain(model, groups)
    b = prob.retrain(model_c, groups)
    assert_close(b.params, a.params, 1e-8, "retrain params")
    assert_close(b.self_loss, c * a.self_loss, 1e-8, "retrain self_loss",
                 elementwise=True)


# ---------------------------------------------------------------------------
# 6. retrain against an independent SciPy refit
# ---------------------------------------------------------------------------


def _reference_fit(X, y, K, s, lam):
    """Minimise the sum objective with SciPy's trust-exact, NumPy only.

    Softmax fixes class 0's intercept at 0 (the objective is flat along
    "add c to every intercept") and centres the result afterwards. Returns
    public-layout parameters [coef.ravel(), intercept].
    """
    n, d = X.shape
    Xt = np.column_stack([X, np.ones(n)])
    if K == 2:
        def fun(t):
            z = Xt @ t
            f = s @ (np.logaddexp(0.0, z) - y * z) + lam / 2 * t[:d] @ t[:d]
            g = Xt.T @ (s * (expit(z) - y))
            g[:d] += lam * t[:d]
            return f, g

        def hess(t):
            q = expit(Xt @ t)
            Hm = Xt.T @ ((s * q * (1 - q))[:, None] * Xt)
            Hm[:d, :d] += lam * np.eye(d)
            return Hm

        res = _minimize(fun, hess, d + 1)
        return res

    Y = np.eye(K)[y]
    free = np.ones((K, d + 1), dtype=bool)
    free[0, -1] = False

    def unpack(t):
        T = np.zeros((K, d + 1))
        T[free] = t
        return T

    def fun(t):
        T = unpack(t)
        Z = Xt @ T.T
        lse = logsumexp(Z, axis=1)
        f = s @ (lse - np.sum(Y * Z, axis=1)) + lam / 2 * np.sum(T[:, :d] ** 2)
        P = np.exp(Z - lse[:, None])
        G = (s[:, None] * (P - Y)).T @ Xt
        G[:, :d] += lam * T[:, :d]
        return f, G[free]

    def hess(t):
        P = np.exp(Xt @ unpack(t).T - logsumexp(Xt @ unpack(t).T, axis=1,
                                                 keepdims=True))
        Hm = np.zeros((K, d + 1, K, d + 1))
        for k in range(K):
            for j in range(K):
                w = s * P[:, k] * ((k == j) - P[:, j])
                Hm[k, :, j, :] = Xt.T @ (w[:, None] * Xt)
            Hm[k, :d, k, :d] += lam * np.eye(d)
        Hm = Hm.reshape(K * (d + 1), K * (d + 1))
        f = free.ravel()
        return Hm[np.ix_(f, f)]

    T = unpack(_minimize(fun, hess, int(free.sum())))
    T[:, -1] -= T[:, -1].mean()
    return np.concatenate([T[:, :d].ravel(), T[:, -1]])


def _minimize(fun, hess, p):
    # trust-exact stops once F's decrease drowns in rounding; plain Newton
    # steps from there take the gradient to round-off level.
    res = sopt.minimize(fun, np.zeros(p), jac=True, hess=hess,
                        method="trust-exact", options={"gtol": 1e-8,
                                                       "maxiter": 500})
    t = res.x
    for _ in range(5):
        t = t - np.linalg.solve(hess(t), fun(t)[1])
    assert np.linalg.norm(fun(t)[1]) < 1e-11 * max(1.0, abs(fun(t)[0])), res
    return t


@settings(PROPS, max_examples=10)
@given(data=st.data(), prob=problems(max_n=50))
def test_retrain_matches_scipy_refit(data, prob):
    idx = np.array(data.draw(members(prob, max_frac=0.5), label="U"))
    frac = data.draw(st.sampled_from([1.0, 0.3]), label="fraction")
    s = np.ones(prob.n) if prob.s is None else prob.s
    model = prob.fit()
    act = prob.retrain(model, fraction_matrix(prob.n, [dict.fromkeys(idx, frac)]))
    assert act.converged.all()

    s_kept = s.copy()
    s_kept[idx] *= 1.0 - frac
    ref_full = _reference_fit(prob.X, prob.y, prob.K, s, prob.l2_reg)
    ref_kept = _reference_fit(prob.X, prob.y, prob.K, s_kept, prob.l2_reg)
    scale = np.abs(ref_full).max()
    assert_close(model.params_, ref_full, 1e-8, "fit vs SciPy", scale=scale)
    assert_close(model.params_ + act.params[0], ref_kept, 1e-8,
                 "refit vs SciPy", scale=scale)
    # The change itself, relative to its own size.
    assert_close(act.params[0], ref_kept - ref_full, 1e-8, "change vs SciPy")
