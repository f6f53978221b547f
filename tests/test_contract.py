"""The numerical contract: solver reports, iterative-solver failures, results
that do not depend on how the work is split, and cache files that are never
trusted blindly."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import threadpoolctl

import groupinf
from groupinf import _cg, _influence, study
from groupinf._results import GroupEffects

TIERS = ("first-order", "newton", "second-order", "basu-second-order")


def _rel(a, b):
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(
        np.max(np.abs(a)))


@pytest.fixture(scope="module")
def binary():
    X, y = _cancer()
    return X, y, groupinf.fit(X, y, l2_reg=0.5)


@pytest.fixture(scope="module")
def softmax():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X[:400] / 16.0
    y = y[:400]
    return X, y, groupinf.fit(X, y, l2_reg=1.0)


def _cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return X, y


def _groups(n, seed=0, sizes=(3, 10, 40, 120)):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=k, replace=False) for k in sizes]


# ---------------------------------------------------------------------------
# The CG solver on its own
# ---------------------------------------------------------------------------


def _spd(rng, p, cond):
    Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return (Q * np.geomspace(1.0, cond, p)) @ Q.T


@pytest.mark.parametrize("precond", [False, True])
def test_cg_solves_like_a_dense_solve(rng, precond):
    A = _spd(rng, 40, 1e4)
    B = rng.standard_normal((6, 40))
    B[2] = 0.0
    diag = np.diag(A).copy()
    pc = (lambda R, idx: R / diag) if precond else None
    res = _cg.cg(lambda V, idx: V @ A, B, tol=1e-11, maxiter=1000, precond=pc)
    exact = np.linalg.solve(A, B.T).T
    assert res.converged.all()
    assert _rel(res.x, exact) < 1e-8
    true = np.linalg.norm(B - res.x @ A, axis=1)
    bn = np.linalg.norm(B, axis=1)
    nz = bn > 0
    np.testing.assert_allclose(res.residual[nz], true[nz] / bn[nz],
                               rtol=1e-6, atol=1e-18)
    assert res.n_iter[2] == 0 and res.residual[2] == 0 and np.all(res.x[2] == 0)
    assert np.all(res.n_iter[bn > 0] > 0)


def test_cg_each_system_has_its_own_operator(rng):
    mats = [_spd(rng, 15, 10.0 ** k) for k in range(4)]
    B = rng.standard_normal((4, 15))

    def matvec(V, idx):
        return np.stack([V[j] @ mats[g] for j, g in enumerate(idx)])

    res = _cg.cg(matvec, B, tol=1e-12)
    for g in range(4):
        np.testing.assert_allclose(res.x[g], np.linalg.solve(mats[g], B[g]),
                                   rtol=1e-8)


def test_cg_detects_negative_curvature(rng):
    A = np.diag([1.0, 2.0, -3.0, 4.0])
    B = np.ones((2, 4))
    B[1] = [1.0, 1.0, 0.0, 1.0]  # orthogonal to the negative direction
    res = _cg.cg(lambda V, idx: V @ A, B, tol=1e-12)
    assert res.negative_curvature.tolist() == [True, False]
    assert res.converged.tolist() == [False, True]
    with pytest.raises(groupinf.ConvergenceError,
                       match=r"negative curvature .* not positive definite"):
        _cg.raise_if_failed(res, "test", "Increase the damping.")


def test_cg_reports_the_budget_it_ran_out_of(rng):
    A = _spd(rng, 200, 1e12)
    B = rng.standard_normal((3, 200))
    res = _cg.cg(lambda V, idx: V @ A, B, tol=1e-10, maxiter=15)
    assert not res.converged.any()
    assert np.all(res.n_iter >= 15)
    true = np.linalg.norm(B - res.x @ A, axis=1) / np.linalg.norm(B, axis=1)
    np.testing.assert_allclose(res.residual, true, rtol=1e-8)
    with pytest.raises(groupinf.ConvergenceError,
                       match=r"did not converge for 3 of 3 .* relative residual"
                             r" .* after \d+ iterations.*budget 15\)\. Do X"):
        _cg.raise_if_failed(res, "test", "Do X.")


def test_cg_never_claims_a_residual_it_did_not_reach(rng):
    # A tolerance below what rounding allows on an ill-conditioned matrix:
    # the recursive residual may claim it, the reported true one must not.
    A = _spd(rng, 60, 1e13)
    B = rng.standard_normal((2, 60))
    res = _cg.cg(lambda V, idx: V @ A, B, tol=1e-15, maxiter=400)
    true = np.linalg.norm(B - res.x @ A, axis=1) / np.linalg.norm(B, axis=1)
    np.testing.assert_allclose(res.residual, true, rtol=1e-8)
    assert np.array_equal(res.converged, true <= 1e-15)


@pytest.mark.parametrize("tol, maxiter, match", [
    (0.0, None, "cg_tol must lie in"), (1.5, None, "cg_tol must lie in"),
    (float("nan"), None, "cg_tol must lie in"), ("1e-8", None, "cg_tol must be"),
    (1e-8, 0, "cg_maxiter must be >= 1"), (1e-8, 2.5, "cg_maxiter must be"),
    (1e-8, True, "cg_maxiter must be"),
])
def test_cg_options_are_checked(binary, tol, maxiter, match):
    X, y, m = binary
    with pytest.raises((TypeError, ValueError), match=match):
        groupinf.influence(m, X, y, [[0]], solver="cg", cg_tol=tol,
                           cg_maxiter=maxiter)


def test_unknown_solver_and_policy_are_refused(binary):
    X, y, m = binary
    with pytest.raises(ValueError, match="solver must be one of"):
        groupinf.influence(m, X, y, [[0]], solver="lu")
    with pytest.raises(ValueError, match="on_unconverged must be"):
        groupinf.influence(m, X, y, [[0]], on_unconverged="ignore")


# ---------------------------------------------------------------------------
# influence(solver="cg") against the Cholesky route
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["binary", "softmax"])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("method", TIERS)
def test_cg_influence_matches_cholesky(request, which, sparse, method):
    X, y, m = request.getfixturevalue(which)
    Xa = sp.csr_matrix(X) if sparse else X
    groups = _groups(len(y))
    kw = dict(method=method)
    a = groupinf.influence(m, Xa, y, groups, X[:5], y[:5], **kw)
    b = groupinf.influence(m, Xa, y, groups, X[:5], y[:5], solver="cg", **kw)
    assert a.solver == "cholesky" and b.solver == "cg"
    assert _rel(b.params, a.params) < 1e-7
    assert _rel(b.test_loss, a.test_loss) < 1e-7
    assert _rel(b.self_loss, a.self_loss) < 1e-7
    assert np.all(a.solver_iterations == 0) and np.all(a.solver_residual < 1e-12)
    assert np.all(b.solver_iterations > 0) and np.all(b.solver_residual <= 1e-10)
    assert a.solver_converged.all() and b.solver_converged.all()


def test_reported_residual_is_the_true_one(binary):
    # Independent check: the public Hessian and group gradients from NumPy.
    X, y, m = binary
    groups = _groups(len(y))
    eff = groupinf.influence(m, X, y, groups, solver="cg", cg_tol=1e-6)
    H = m.hessian()
    Xt = np.hstack([X, np.ones((len(y), 1))])
    p = 1.0 / (1.0 + np.exp(-(Xt @ m.params_)))
    for g, idx in enumerate(groups):
        gU = Xt[idx].T @ (p[idx] - y[idx])
        r = np.linalg.norm(gU - H @ eff.params[g]) / np.linalg.norm(gU)
        assert r == pytest.approx(eff.solver_residual[g], rel=1e-5)
        assert eff.solver_residual[g] <= 1e-6


# ---------------------------------------------------------------------------
# (h) An ill-conditioned Hessian on which CG runs out of budget
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ill_conditioned():
    # Ten near copies of each of 12 columns (well scaled, so Jacobi
    # preconditioning does not help) and a tiny l2_reg: cond(H) ~ 1e6 with a
    # spread spectrum, which the Cholesky route solves to ~1e-14 but 30 CG
    # iterations cannot (CG needs ~275 here).
    rng = np.random.default_rng(3)
    n, d = 400, 120
    base = rng.standard_normal((n, 12))
    X = np.repeat(base, 10, axis=1) + rng.standard_normal((n, d)) * np.geomspace(
        1e-1, 1e-4, d)
    y = base @ rng.standard_normal(12) + rng.standard_normal(n) > 0
    m = groupinf.fit(X, y, l2_reg=1e-6)
    return X, y.astype(int), m


def test_h_cg_out_of_budget_is_an_error_with_the_way_out(ill_conditioned):
    X, y, m = ill_conditioned
    groups = _groups(len(y), sizes=(5, 50))
    with pytest.raises(groupinf.ConvergenceError,
                       match=r"did not converge .* relative residual .* after "
                             r"\d+ iterations.*increase cg_maxiter.*increase "
                             r"l2_reg.*solver='cholesky'"):
        groupinf.influence(m, X, y, groups, solver="cg", cg_maxiter=30)
    for method in ("newton", "second-order"):
        with pytest.raises(groupinf.ConvergenceError, match="did not converge"):
            groupinf.influence(m, X, y, groups, method=method, solver="cg",
                               cg_maxiter=30)


def test_h_cg_out_of_budget_can_be_flagged_instead(ill_conditioned):
    X, y, m = ill_conditioned
    groups = _groups(len(y), sizes=(5, 50))
    eff = groupinf.influence(m, X, y, groups, solver="cg", cg_maxiter=30,
                             on_unconverged="flag")
    assert not eff.solver_converged.any()
    assert np.all(eff.solver_residual > 1e-10)
    assert np.all(eff.solver_iterations >= 30)
    assert np.all(np.isfinite(eff.params))
    # The same problem is solved correctly by the direct route, and by CG
    # given a budget (checked against a dense NumPy solve).
    chol = groupinf.influence(m, X, y, groups)
    assert chol.solver_converged.all()
    H = m.hessian()
    Xt = np.hstack([X, np.ones((len(y), 1))])
    p = 1.0 / (1.0 + np.exp(-(Xt @ m.params_)))
    for g, idx in enumerate(groups):
        gU = Xt[idx].T @ (p[idx] - y[idx])
        exact = np.linalg.solve(H, gU)
        assert _rel(chol.params[g], exact) < 1e-5
    cg = groupinf.influence(m, X, y, groups, solver="cg", cg_maxiter=5000,
                            cg_tol=1e-10)
    assert cg.solver_converged.all() and np.all(cg.solver_iterations > 30)
    assert _rel(cg.params, chol.params) < 1e-4


def test_a_direct_solve_that_loses_its_digits_is_reported(binary, monkeypatch):
    X, y, m = binary
    monkeypatch.setattr(_influence, "_DIRECT_RTOL", 1e-30)
    with pytest.raises(groupinf.ConvergenceError, match="lost its accuracy"):
        groupinf.influence(m, X, y, [[0, 1, 2]])
    with pytest.raises(groupinf.ConvergenceError, match="lost its accuracy"):
        groupinf.influence(m, X, y, [[0, 1, 2]], method="newton")
    eff = groupinf.influence(m, X, y, [[0, 1, 2]], on_unconverged="flag")
    assert not eff.solver_converged.any()


# ---------------------------------------------------------------------------
# Identical results for any chunk size, thread count or group order
# ---------------------------------------------------------------------------


def _everything(X, y, groups, solver="cholesky", **retrain_kw):
    m = groupinf.fit(X, y, l2_reg=0.5)
    out = [m.params_]
    for method in TIERS:
        e = groupinf.influence(m, X, y, groups, X[:6], y[:6], method=method,
                               solver=solver)
        out += [e.params, e.test_loss, e.self_loss]
    r = groupinf.retrain(m, X, y, groups, X[:6], y[:6], **retrain_kw)
    assert r.converged.all()
    out += [r.params, r.test_loss, r.self_loss]
    return out


def _assert_same(a, b, rtol=1e-12):
    for u, v in zip(a, b):
        assert _rel(u, v) <= rtol


@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_results_do_not_depend_on_chunk_sizes(request, which):
    X, y, _ = request.getfixturevalue(which)
    groups = _groups(len(y), sizes=(3, 30))
    base = _everything(X, y, groups)
    for rows in (1, 7, 10 ** 6):
        with groupinf.options(chunk_rows=rows):
            _assert_same(_everything(X, y, groups), base)


def test_results_do_not_depend_on_retrain_batch_size(binary):
    X, y, _ = binary
    groups = _groups(len(y), sizes=(3, 10, 30, 60, 90))
    base = _everything(X, y, groups)
    for size in (1, 2, 64):
        _assert_same(_everything(X, y, groups, batch_size=size), base)


@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_results_do_not_depend_on_thread_counts(request, which):
    X, y, _ = request.getfixturevalue(which)
    groups = _groups(len(y), sizes=(3, 30))
    with threadpoolctl.threadpool_limits(1):
        one = _everything(X, y, groups, n_jobs=1)
    with threadpoolctl.threadpool_limits(2):
        two = _everything(X, y, groups, n_jobs=2)
    _assert_same(one, two)


@pytest.mark.parametrize("which", ["binary", "softmax"])
def test_results_do_not_depend_on_group_order_or_company(request, which):
    X, y, m = request.getfixturevalue(which)
    groups = _groups(len(y), sizes=(3, 10, 30, 60))
    order = [2, 0, 3, 1]
    for method in TIERS:
        for solver in ("cholesky", "cg"):
            kw = dict(method=method, solver=solver)
            full = groupinf.influence(m, X, y, groups, X[:4], y[:4], **kw)
            perm = groupinf.influence(m, X, y, [groups[g] for g in order],
                                      X[:4], y[:4], **kw)
            alone = groupinf.influence(m, X, y, groups[1:2], X[:4], y[:4], **kw)
            # CG iterates amplify last-bit differences of BLAS products whose
            # shape depends on the batch; its results agree to the accuracy
            # it certifies (the README's contract says so).
            rtol = 1e-12 if solver == "cholesky" else 1e-8
            _assert_same([perm.params, perm.test_loss],
                         [full.params[order], full.test_loss[order]], rtol)
            _assert_same([alone.params[0], alone.test_loss[0]],
                         [full.params[1], full.test_loss[1]], rtol)
    full = groupinf.retrain(m, X, y, groups, X[:4], y[:4])
    perm = groupinf.retrain(m, X, y, [groups[g] for g in order], X[:4], y[:4])
    _assert_same([perm.params, perm.test_loss],
                 [full.params[order], full.test_loss[order]])


def test_options_are_checked_and_restored():
    before = groupinf.get_options()
    with pytest.raises(TypeError, match="unknown option 'chunk'"):
        with groupinf.options(chunk=3):
            pass
    with pytest.raises(ValueError, match="chunk_rows must be in"):
        with groupinf.options(chunk_rows=0):
            pass
    with pytest.raises(TypeError, match="chunk_rows must be an integer"):
        with groupinf.options(chunk_rows=2.0):
            pass
    with pytest.raises(RuntimeError, match="inside"):
        with groupinf.options(chunk_rows=5) as now:
            assert now["chunk_rows"] == 5
            raise RuntimeError("inside")
    assert groupinf.get_options() == before


def test_retrain_batch_size_is_checked(binary):
    X, y, m = binary
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        groupinf.retrain(m, X, y, [[0]], batch_size=0)


# ---------------------------------------------------------------------------
# A refit or solve that missed its target is never averaged in
# ---------------------------------------------------------------------------


def _effects(values, **extra):
    v = np.asarray(values, dtype=float)
    return GroupEffects(method="x", params=v[:, None], self_loss=v,
                        test_loss=None, test_margin=None,
                        group_weight=np.ones(v.size), **extra)


def test_unconverged_refits_are_left_out_of_the_statistics():
    kinds = ["a"] * 6
    pred = _effects([1, 2, 3, 4, 5, 6])
    good = _effects([1, 2, 3, 4, 5, -100.0],
                    converged=np.array([True] * 5 + [False]))
    table = study.agreement({"first-order": pred}, good, kinds)
    row = table["first-order"]["self_loss"]["all"]
    assert row["excluded"] == 1 and row["n"] == 5
    assert row["spearman"] == pytest.approx(1.0)
    # Unflagged, the same numbers would have entered (and spoilt) the statistic.
    bad = _effects([1, 2, 3, 4, 5, -100.0])
    assert study.agreement({"first-order": pred}, bad, kinds)[
        "first-order"]["self_loss"]["all"]["spearman"] < 1.0


def test_unconverged_solves_are_left_out_of_the_statistics():
    kinds = ["a", "a", "b", "b", "b", "b"]
    pred = _effects([1, 2, 3, 4, 5, 60.0],
                    solver_converged=np.array([True] * 5 + [False]))
    actual = _effects([1, 2, 3, 4, 5, -6.0])
    row = study.agreement({"t": pred}, actual, kinds)["t"]["self_loss"]
    assert row["all"]["excluded"] == 1 and row["b"]["excluded"] == 1
    assert row["a"]["excluded"] == 0
    assert row["all"]["spearman"] == pytest.approx(1.0)


def test_retrain_that_misses_its_target_is_flagged(binary):
    X, y, m = binary
    with pytest.warns(groupinf.ConvergenceWarning, match="did not converge"):
        r = groupinf.retrain(m, X, y, _groups(len(y)), max_iter=1)
    assert not r.converged.all()
    bad = ~r.converged
    assert np.all(r.grad_norm[bad] > r.grad_tol[bad])
    assert np.all(r.grad_norm[~bad] <= r.grad_tol[~bad])


# ---------------------------------------------------------------------------
# Saved results are checked, never trusted
# ---------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path, binary):
    X, y, m = binary
    eff = groupinf.influence(m, X, y, _groups(len(y)), X[:3], y[:3])
    path = str(tmp_path / "pred.npz")
    study._save_effects(path, eff, "fp-1")
    return path, eff


def test_saved_effects_round_trip(saved):
    path, eff = saved
    back, _ = study._load_effects(path, "fp-1")
    for name, arr in eff.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), arr)
    assert study._load_effects(path, "fp-2") == (None, None)


def _damage(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "flip_byte":
        # Inside the first array's payload (npz members are stored
        # uncompressed, so the zip CRC-32 is what catches this).
        data[len(data) // 4] ^= 0xFF
    elif how == "empty":
        data = b""
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip_byte", "empty"])
def test_damaged_saved_effects_are_detected(saved, how):
    path, _ = saved
    _damage(path, how)
    with pytest.warns(UserWarning, match="ignoring damaged file"):
        assert study._load_effects(path, "fp-1") == (None, None)


def _resave(path, arrays, checksum):
    arrays = dict(arrays)
    arrays.pop("_checksum", None)
    if checksum:
        arrays["_checksum"] = np.array(study._checksum(arrays))
    np.savez(path, **arrays)


def _saved_arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("checksum", [False, True])
@pytest.mark.parametrize("bad", ["object", "short", "missing_params",
                                 "missing_test_loss", "unknown", "nan",
                                 "float32", "converged_int"])
def test_saved_effects_that_were_altered_are_refused(saved, bad, checksum):
    # Without a matching checksum any edit is caught by it; with one
    # recomputed (a consistent but wrong file), the structural checks are.
    path, eff = saved
    arrays = _saved_arrays(path)
    if bad == "object":
        arrays["self_loss"] = np.array([{"x": 1}] * eff.n_groups, dtype=object)
    elif bad == "short":
        arrays["self_loss"] = arrays["self_loss"][:-1]
    elif bad == "missing_params":
        del arrays["params"]
    elif bad == "missing_test_loss":
        del arrays["test_loss"]
    elif bad == "unknown":
        arrays["surprise"] = np.zeros(eff.n_groups)
    elif bad == "nan":
        arrays["self_loss"] = arrays["self_loss"].copy()
        arrays["self_loss"][0] = np.nan
    elif bad == "float32":
        arrays["params"] = arrays["params"].astype(np.float32)
    else:
        arrays["solver_converged"] = arrays["solver_converged"].astype(int)
    if bad == "object":
        np.savez(path, **arrays)  # cannot even be read without pickle
    else:
        _resave(path, arrays, checksum)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = study._load_effects(path, "fp-1")
    if bad == "missing_test_loss" and checksum:
        # A consistent file without test points is a valid file: the
        # checksum is what protects a file that had them.
        assert out[0] is not None and out[0].test_loss is None
        return
    assert out == (None, None)
    assert any("ignoring damaged file" in str(w.message) for w in caught)


def test_refit_certificates_that_contradict_themselves_are_refused(tmp_path,
                                                                   binary):
    X, y, m = binary
    r = groupinf.retrain(m, X, y, _groups(len(y)))
    path = str(tmp_path / "actual.npz")
    study._save_effects(path, r, "fp", done=np.ones(r.n_groups, dtype=bool))
    arrays = _saved_arrays(path)
    arrays["grad_norm"] = arrays["grad_norm"].copy()
    arrays["grad_norm"][0] = 1e3  # "converged" with a huge gradient
    _resave(path, arrays, checksum=True)
    with pytest.warns(UserWarning, match="certificates are inconsistent"):
        assert study._load_effects(path, "fp") == (None, None)


@pytest.mark.parametrize("how", ["directory", "not_npy", "done_float"])
def test_saved_effects_of_the_wrong_kind_are_refused(saved, how):
    import shutil
    import zipfile

    path, _ = saved
    if how == "directory":
        import os

        os.remove(path)
        os.mkdir(path)
    elif how == "not_npy":
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("extra.txt", b"hello")
    else:
        arrays = _saved_arrays(path)
        arrays["_done"] = np.ones(3)
        _resave(path, arrays, checksum=True)
    with pytest.warns(UserWarning, match="ignoring damaged file"):
        assert study._load_effects(path, "fp-1") == (None, None)
    if how == "directory":
        shutil.rmtree(path)


def test_newton_by_cg_flags_a_nearly_singular_h_minus_hu():
    # Removing the 150 lowest-margin of 200 points at a small l2_reg leaves
    # H - H_U nearly singular (1 - leverage ~ 1e-13): CG's small residual
    # would hide a step that is wrong by ~100 % (found by a new user).
    rng = np.random.default_rng(80)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + 0.2 * X[:, 1] > 0).astype(int)
    m = groupinf.fit(X, y, l2_reg=1e-2)
    z = np.c_[X, np.ones(200)] @ m.params_
    U = np.argsort(np.abs(z))[:150]
    with pytest.raises(groupinf.ConvergenceError,
                       match=r"nearly singular .* solver='cholesky'"):
        groupinf.influence(m, X, y, [U], method="newton", solver="cg")
    eff = groupinf.influence(m, X, y, [U, U[:3]], method="newton",
                             solver="cg", on_unconverged="flag")
    assert eff.solver_converged.tolist() == [False, True]
    assert eff.leverage_max is not None and eff.leverage_max[0] > 1 - 1e-6


def test_a_saved_file_of_another_tier_is_refused(tmp_path, binary):
    # pred_first-order.npz copied over pred_newton.npz must not pass for
    # Newton's numbers (found by a new user).
    X, y, m = binary
    eff = groupinf.influence(m, X, y, _groups(len(y)))
    path = str(tmp_path / "pred_newton.npz")
    study._save_effects(path, eff, "fp")  # holds "first-order" effects
    with pytest.warns(UserWarning, match="holds 'first-order' effects, not "
                                         "'newton'"):
        assert study._load_effects(path, "fp", method="newton") == (None, None)
    assert study._load_effects(path, "fp", method="first-order")[0] is not None
