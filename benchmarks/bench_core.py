"""Core benchmarks: groupinf against baselines on the same inputs, one process.

Prints ratios (baseline time / groupinf time, > 1 means groupinf is faster),
each from the median of repeated runs after a warm-up:

1. Hessian assembly (binary, Adult) against a bare DSYRK on the already
   scaled rows - the physical limit of the same flops.
2. retrain per group against scikit-learn's
   LogisticRegression(solver="newton-cholesky") refit on the kept rows to a
   gradient norm at least as small as groupinf's certificate.
3. influence for 1,000 groups against a per-group NumPy loop (group
   gradient, solve with the cached H, dot products), same outputs.

Run:  python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from _timing import timeit
from scipy.linalg import blas

import groupinf
from groupinf import _hessian
from groupinf.datasets import load_adult


def bench_hessian(X, model, repeat):
    n, d = X.shape
    _, _, curv = model._objective.pointwise(model._theta)
    rows = np.arange(n, dtype=np.int64)
    H = np.empty((d + 1, d + 1))
    t_ours = timeit(lambda: _hessian.binary_hessian(X, rows, curv, H), repeat)

    # Baseline: DSYRK alone on the pre-scaled augmented rows (Fortran order,
    # so no copy happens inside the call).
    A = np.asfortranarray(np.sqrt(curv)[:, None] * np.column_stack([X, np.ones(n)]))
    t_syrk = timeit(lambda: blas.dsyrk(1.0, A, trans=1, lower=0), repeat)
    ref = blas.dsyrk(1.0, A, trans=1, lower=0)
    ref = np.triu(ref) + np.triu(ref, 1).T
    err = float(np.abs(H - ref).max() / np.abs(ref).max())
    return t_ours, t_syrk, err


def bench_retrain(X, y, model, groups, n_sklearn):
    from sklearn.linear_model import LogisticRegression

    t = time.perf_counter()
    act = groupinf.retrain(model, X, y, groups, progress=False)
    t_ours = (time.perf_counter() - t) / len(groups)

    obj = model._objective
    n = X.shape[0]
    times, worst_ratio = [], 0.0
    for g in range(n_sklearn):
        keep = np.ones(n, dtype=bool)
        keep[groups[g]] = False
        sk = LogisticRegression(C=1.0 / model.l2_reg, solver="newton-cholesky",
                                tol=1e-12, max_iter=200)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk.fit(X[keep], y[keep])
        times.append(time.perf_counter() - t)
        theta = np.r_[sk.coef_.ravel(), sk.intercept_]
        gn = np.linalg.norm(obj.objgrad(theta, keep.astype(float))[1])
        worst_ratio = max(worst_ratio, gn / act.grad_norm[g])
    return t_ours, statistics.median(times), act, worst_ratio


def numpy_loop_influence(model, X, y, groups, X_test, y_test):
    """Per-group NumPy loop: the straightforward implementation."""
    theta = model.params_
    d = X.shape[1]
    H = model.hessian()
    Xt = np.column_stack([X, np.ones(X.shape[0])])
    Xtt = np.column_stack([X_test, np.ones(X_test.shape[0])])
    sig_t = 1 / (1 + np.exp(-(Xtt @ theta)))
    grad_test = (sig_t - y_test)[:, None] * Xtt
    out = np.empty((len(groups), X_test.shape[0] + 1))
    for g, idx in enumerate(groups):
        XU = Xt[idx]
        r = 1 / (1 + np.exp(-(XU @ theta))) - y[idx]
        gU = XU.T @ r
        dtheta = np.linalg.solve(H, gU)
        out[g, :-1] = grad_test @ dtheta
        out[g, -1] = gU @ dtheta
    assert d + 1 == theta.size
    return out


def numpy_naive_influence(model, X, y, groups, X_test, y_test):
    """Per group and per test point: one solve each, as influence is often
    written (influence of U on f_t = grad f_t^T H^-1 g_U, evaluated as a
    function of (U, t))."""
    theta = model.params_
    H = model.hessian()
    Xt = np.column_stack([X, np.ones(X.shape[0])])
    Xtt = np.column_stack([X_test, np.ones(X_test.shape[0])])
    out = np.empty((len(groups), X_test.shape[0] + 1))
    for g, idx in enumerate(groups):
        XU = Xt[idx]
        gU = XU.T @ (1 / (1 + np.exp(-(XU @ theta))) - y[idx])
        for t in range(X_test.shape[0]):
            grad_t = (1 / (1 + np.exp(-(Xtt[t] @ theta))) - y_test[t]) * Xtt[t]
            out[g, t] = np.linalg.solve(H, grad_t) @ gU
        out[g, -1] = gU @ np.linalg.solve(H, gU)
    return out


def bench_influence(model, X, y, groups, X_test, y_test, repeat):
    t_ours = timeit(lambda: groupinf.influence(model, X, y, groups, X_test, y_test),
                    repeat)
    t_loop = timeit(lambda: numpy_loop_influence(model, X, y, groups, X_test,
                                                 y_test), max(1, repeat // 2))
    t_naive = timeit(lambda: numpy_naive_influence(model, X, y, groups, X_test,
                                                   y_test), 1)
    ours = groupinf.influence(model, X, y, groups, X_test, y_test)
    err = 0.0
    for impl in (numpy_loop_influence, numpy_naive_influence):
        ref = impl(model, X, y, groups, X_test, y_test)
        err = max(err, float(np.abs(ours.test_loss - ref[:, :-1]).max()),
                  float(np.abs(ours.self_loss - ref[:, -1]).max()))
    return t_ours, t_loop, t_naive, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeat = 3 if args.quick else 7

    data = load_adult()
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    model = groupinf.fit(X, y, 3.0)
    print(f"Adult: n = {n}, d = {X.shape[1]}, l2_reg = 3.0")

    t_ours, t_syrk, err = bench_hessian(X, model, repeat)
    print(f"[hessian]   groupinf {t_ours * 1e3:7.2f} ms   bare dsyrk "
          f"{t_syrk * 1e3:7.2f} ms   rate ratio ours/dsyrk = "
          f"{t_syrk / t_ours:.2f}   (target >= 0.70; max rel diff {err:.1e})")

    sizes = groupinf.groups.size_grid(n, 40)
    groups = groupinf.groups.random_groups(n, sizes, seed=0)
    attr, _ = groupinf.groups.attribute_groups(data.groups_train)
    groups = groups + attr
    n_sk = 5 if args.quick else 20
    t_ours, t_sk, act, worst = bench_retrain(X, y, model, groups, n_sk)
    print(f"[retrain]   groupinf {t_ours * 1e3:7.2f} ms/group ({len(groups)} "
          f"groups)   sklearn newton-cholesky {t_sk * 1e3:7.2f} ms/group "
          f"({n_sk} groups)   speed-up = {t_sk / t_ours:.1f}x   (target >= 10x; "
          f"sklearn's ||grad|| / ours <= {worst:.2g})")

    G = 1000
    Xt, yt = data.X_test[:6], data.y_test[:6]
    for low, high in ((0.0025, 0.25), (0.0025, 0.025)):
        sizes = groupinf.groups.size_grid(n, G, low, high)
        groups = groupinf.groups.random_groups(n, sizes, seed=1)
        print(f"[influence] group sizes {low:.2%} .. {high:.2%} of n")
        _influence_row(model, X, y, groups, Xt, yt, repeat)


def _influence_row(model, X, y, groups, Xt, yt, repeat):
    G = len(groups)
    t_ours, t_loop, t_naive, err = bench_influence(model, X, y, groups, Xt, yt,
                                                   repeat)
    print(f"[influence] groupinf {t_ours * 1e3:7.1f} ms ({G} groups, 6 test "
          f"points, max abs diff to both loops {err:.1e})")
    print(f"            NumPy loop, one solve per group {t_loop * 1e3:9.1f} ms"
          f"   speed-up = {t_loop / t_ours:.1f}x")
    print(f"            NumPy loop, one solve per group per quantity "
          f"{t_naive * 1e3:9.1f} ms   speed-up = {t_naive / t_ours:.1f}x   "
          f"(target >= 50x)")


if __name__ == "__main__":
    main()
