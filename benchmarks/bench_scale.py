"""Scale benchmarks (issue 7): groupinf and its baselines on the same inputs.

Every ratio is baseline time / groupinf time (> 1 means groupinf is faster),
both measured in this process on the same arrays, each the median of
repeated runs after a warm-up unless a line says otherwise. Sections
(``--only a,b``):

hessian
    Hessian assembly as fit and retrain run it (``Objective.loss_hessian``:
    chunked, row-scaled SYRK over [X, 1], in row blocks on every allowed
    BLAS thread when it is large) against a bare
    DSYRK on the already scaled, already augmented Fortran-ordered rows:
    the physical limit of the same multiply-adds (and DPOTRF, the other half
    of a Newton step). n from 1,000 to 1,000,000, d = 32 and 128, with one
    and with two BLAS threads.
retrain
    Exact refits per group against scikit-learn's LogisticRegression refit
    on the kept rows (newton-cholesky and lbfgs, cold and warm-started at
    the full-data fit, one and two BLAS threads; C = 1 / l2_reg), each run
    at the loosest ``tol`` of a ladder whose final gradient (of groupinf's
    sum objective, measured by groupinf) is at most groupinf's certified
    gradient for the same group, and against a per-group NumPy Newton refit
    (warm start, exact Hessian) to the same target. Adult (30,162 x 103)
    and a synthetic 100,000 x 32 set; the cost of groupinf's refits vs n.
influence
    10,000 groups on 20,000 x 128 (the target: under a second) against a
    per-group NumPy loop (group gradient, solve with the cached factor,
    dot products; same outputs, compared); cost vs G, n and p.
statsmodels
    Single-point influence: statsmodels' GLM(Binomial) ``get_influence()``
    (``d_params``: one-step parameter changes for deleting each point;
    ``cooks_distance``) against groupinf's ``newton`` tier on n one-point
    groups, which is the same one-step change (Sherman-Morrison), at a
    negligible l2_reg so the two definitions coincide; numbers compared.
million
    1,000,000 x 100: fit, and influence for 10,000 groups, in a child
    process whose peak resident memory (``resource.getrusage``) and NumPy
    peak allocation per phase (``tracemalloc``) are reported.

BLAS threads. On a machine whose cores are shared with other jobs, OpenBLAS
with two threads can be many times slower than with one on small calls (a
thread waits for a descheduled partner; measured here up to 10x). Each
measurement therefore says which setting it ran under: ``blas_threads=1``
or ``2`` through threadpoolctl, or the library's default (groupinf's
``retrain`` runs one thread per core, each with one BLAS thread).

Run:  python benchmarks/bench_scale.py [--only SECTIONS] [--json PATH]
      python benchmarks/bench_scale.py --plot PATH   (figures from saved JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp
from _timing import timeit
from scipy.linalg import blas, lapack
from threadpoolctl import threadpool_limits

import groupinf
from groupinf._objective import Objective
from groupinf.datasets import load_adult

FIGURES = os.path.join(os.path.dirname(__file__), "..", "docs", "figures")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------




def paired(fa, fb, repeat=7, warmup=1):
    """Median times of fa and fb run alternately (so that changes of the
    machine's load hit both), and the median of the per-pair ratios
    t_b / t_a."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for r in range(repeat):
        for f, acc in ((fa, ta), (fb, tb)) if r % 2 == 0 else ((fb, tb),
                                                               (fa, ta)):
            t = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t)
    ratio = statistics.median([b / a for a, b in zip(ta, tb)])
    return statistics.median(ta), statistics.median(tb), ratio


def once(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def make_data(n, d, seed=0):
    """Gaussian features, labels from a logistic model (not separable)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d) * (1.5 / np.sqrt(d))
    z = X @ w + 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return X, y


def random_groups(n, sizes, seed=1):
    """Uniformly random distinct indices per size, sorted (O(size) each)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in sizes:
        k = int(k)
        u = np.unique(rng.integers(0, n, k + k // 8 + 16))
        while u.size < k:
            u = np.union1d(u, rng.integers(0, n, k))
        out.append(np.sort(rng.choice(u, k, replace=False)))
    return out


def log(msg):
    print(msg, flush=True)


def machine_line():
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} "
            f"{load[1]:.2f} {load[2]:.2f} at start")


# ---------------------------------------------------------------------------
# 1. Hessian assembly vs bare DSYRK
# ---------------------------------------------------------------------------


def bench_hessian(results, quick):
    log("\n== hessian: chunked row-scaled SYRK vs bare dsyrk (rate ratio "
        "ours/dsyrk = median over alternating runs of t_dsyrk / t_ours; "
        "target >= 0.80) ==")
    rows_out = []
    sizes = [(1_000, 32), (1_000, 128), (10_000, 32), (10_000, 128),
             (100_000, 32), (100_000, 128), (1_000_000, 32), (1_000_000, 128)]
    if quick:
        sizes = sizes[:4]
    for n, d in sizes:
        X, y = make_data(n, d, seed=n + d)
        obj = Objective(X, y, 2, 1.0)
        # Curvatures sigma(z)(1 - sigma(z)) at some parameters: the cost of
        # assembly does not depend on their values.
        z = X @ np.random.default_rng(0).standard_normal(d) / np.sqrt(d)
        curv = np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))) ** 2
        rows = np.arange(n, dtype=np.int64)
        ones = np.ones(n)
        A = np.asfortranarray(np.sqrt(curv)[:, None] * np.column_stack(
            [X, np.ones(n)]))
        repeat = 7 if n <= 100_000 else 3
        # Two BLAS threads only up to 100,000 rows: on this shared machine
        # they can be 10-70x slower than one (see the module docstring).
        for threads in (1, 2) if n <= 100_000 else (1,):
            with threadpool_limits(threads, user_api="blas"):
                # What fit and retrain call: Objective.loss_hessian. Three
                # warm-up pairs: a second core that was idle takes a few
                # calls to come up to speed on this virtual machine.
                t_ours, t_syrk, ratio = paired(
                    lambda: obj.loss_hessian(curv, rows, ones),
                    lambda: blas.dsyrk(1.0, A, trans=1, lower=0), repeat,
                    warmup=3)
                H = obj.loss_hessian(curv, rows, ones)
                Hr = H + np.eye(d + 1)
                t_potrf = timeit(lambda: lapack.dpotrf(Hr, lower=1), repeat)
            ref = blas.dsyrk(1.0, A, trans=1, lower=0)
            ref = np.triu(ref) + np.triu(ref, 1).T
            err = float(np.abs(H - ref).max() / np.abs(ref).max())
            log(f"[hessian] n={n:>9,} d={d:>3} blas_threads={threads}  "
                f"groupinf {t_ours * 1e3:9.2f} ms  bare dsyrk "
                f"{t_syrk * 1e3:9.2f} ms  ratio {ratio:5.2f}  (dpotrf "
                f"{t_potrf * 1e3:.2f} ms; max rel diff {err:.1e})")
            rows_out.append(dict(n=n, d=d, threads=threads, ours=t_ours,
                                 dsyrk=t_syrk, dpotrf=t_potrf, ratio=ratio,
                                 err=err))
        X = A = obj = None  # free before the next size
    results["hessian"] = rows_out


# ---------------------------------------------------------------------------
# 2. Retrain vs scikit-learn and a per-group NumPy Newton refit
# ---------------------------------------------------------------------------

TOLS = (1e-4, 1e-6, 1e-8, 1e-10, 1e-12, 1e-14)


def _sk_refit(X, y, keep, l2_reg, solver, warm, tol, model):
    from sklearn.linear_model import LogisticRegression

    sk = LogisticRegression(C=1.0 / l2_reg, solver=solver, tol=tol,
                            max_iter=100_000, warm_start=warm)
    if warm:
        sk.coef_ = model.coef_.copy()
        sk.intercept_ = model.intercept_.copy()
        sk.classes_ = model.classes_
    Xk, yk = X[keep], y[keep]  # outside the timed region
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, _ = once(lambda: sk.fit(Xk, yk))
    theta = np.r_[sk.coef_.ravel(), sk.intercept_]
    return t, theta


def _grad_norm(model, theta, keep):
    return float(np.linalg.norm(model._objective.objgrad(
        theta, keep.astype(np.float64))[1]))


def _numpy_newton_refit(X, y, keep, l2_reg, theta0, target, max_iter=30):
    """Per-group refit in plain NumPy: Newton from theta_hat with the exact
    Hessian of the kept rows (full steps: the start is close), to ||grad||
    <= target (groupinf's certificate for the group) or until the gradient
    stops decreasing."""
    Xk = np.column_stack([X[keep], np.ones(int(keep.sum()))])
    yk = y[keep]
    pen = np.full(Xk.shape[1], l2_reg)
    pen[-1] = 0.0

    def grad(th):
        p = 1.0 / (1.0 + np.exp(-(Xk @ th)))
        return Xk.T @ (p - yk) + pen * th, p

    th = theta0.copy()
    g, p = grad(th)
    gn = np.linalg.norm(g)
    for _ in range(max_iter):
        if gn <= target:
            break
        H = (Xk * (p * (1 - p))[:, None]).T @ Xk + np.diag(pen)
        th_new = th - np.linalg.solve(H, g)
        g_new, p_new = grad(th_new)
        gn_new = np.linalg.norm(g_new)
        if not gn_new < gn:
            break
        th, g, p, gn = th_new, g_new, p_new, gn_new
    return th


def _choose_tol(X, y, keep, l2_reg, solver, warm, model, target, threads):
    """The loosest tol whose refit reaches ||grad F|| <= target; else the
    tightest (and what it reached)."""
    best = None
    for tol in TOLS:
        with threadpool_limits(threads):
            t, theta = _sk_refit(X, y, keep, l2_reg, solver, warm, tol, model)
        gn = _grad_norm(model, theta, keep)
        if gn <= target:
            return tol, gn, True
        if solver == "lbfgs" and best is not None and gn >= 0.5 * best[1]:
            # A tighter tol no longer helps: the solver stalls (lbfgs stops
            # on its own objective-decrease test first).
            return best[0], best[1], False
        best = (tol, gn, t)
    return best[0], best[1], False


def bench_retrain_on(name, X, y, l2_reg, groups, n_sk, results, lbfgs_groups,
                     repeat=3):
    n = X.shape[0]
    model = groupinf.fit(X, y, l2_reg)
    times = []
    for _ in range(repeat):
        t, act = once(lambda: groupinf.retrain(model, X, y, groups,
                                               progress=False))
        times.append(t / len(groups))
    t_ours = statistics.median(times)
    assert act.converged.all()
    log(f"[retrain:{name}] n={n:,} d={X.shape[1]} l2_reg={l2_reg}: groupinf "
        f"{t_ours * 1e3:.2f} ms/group over {len(groups)} groups (median of "
        f"{repeat} runs; runs {', '.join(f'{x * 1e3:.2f}' for x in times)}); "
        f"its certified ||grad F|| <= {act.grad_norm.max():.2e}")

    # Baseline groups: spread over the sizes.
    pick = np.linspace(0, len(groups) - 1, n_sk).round().astype(int)
    keeps = []
    for g in pick:
        keep = np.ones(n, dtype=bool)
        keep[groups[g]] = False
        keeps.append(keep)

    configs = [("newton-cholesky", False), ("newton-cholesky", True),
               ("lbfgs", False), ("lbfgs", True)]
    out = {"n": n, "d": X.shape[1], "groups": len(groups), "ours": t_ours,
           "ours_runs": times, "baselines": {}}
    for solver, warm in configs:
        for threads in (1, 2):
            if solver == "lbfgs" and threads == 2:
                continue  # lbfgs' cost is its iteration count, not BLAS
            # lbfgs is slow, and two BLAS threads slower still here: fewer
            # groups for those.
            subset = range(len(pick)) if solver == "newton-cholesky" and \
                threads == 1 else range(min(lbfgs_groups, len(pick)))
            # Calibrate tol on the first (smallest) baseline group.
            g0 = pick[0]
            tol, gn0, reached = _choose_tol(
                X, y, keeps[0], l2_reg, solver, warm, model, act.grad_norm[g0],
                threads)
            ts, worst = [], 0.0
            reached_all = reached
            for k in subset:
                g = pick[k]
                with threadpool_limits(threads):
                    t, theta = _sk_refit(X, y, keeps[k], l2_reg, solver, warm,
                                         tol, model)
                gn = _grad_norm(model, theta, keeps[k])
                ts.append(t)
                worst = max(worst, gn / act.grad_norm[g])
                reached_all &= gn <= act.grad_norm[g]
            t_med = statistics.median(ts)
            key = f"{solver}{'-warm' if warm else ''}-t{threads}"
            out["baselines"][key] = dict(time=t_med, tol=tol, worst=worst,
                                         reached=bool(reached_all),
                                         n_groups=len(ts))
            log(f"[retrain:{name}] sklearn {solver:<15} "
                f"{'warm' if warm else 'cold'} blas_threads={threads} tol={tol:g}"
                f"  {t_med * 1e3:9.1f} ms/group ({len(ts)} groups)  speed-up "
                f"{t_med / t_ours:6.1f}x  its ||grad|| / ours <= {worst:.2g}"
                f"{'' if reached_all else '  (DID NOT reach our accuracy)'}")

    # Per-group NumPy Newton (same target per group), one BLAS thread (two
    # are slower here, as for scikit-learn above).
    ts, worst = [], 0.0
    for k, g in enumerate(pick):
        with threadpool_limits(1):
            t, th = once(lambda: _numpy_newton_refit(
                X, y, keeps[k], l2_reg, model._theta, act.grad_norm[g]))
        ts.append(t)
        worst = max(worst, _grad_norm(model, th, keeps[k]) / act.grad_norm[g])
    t_np = statistics.median(ts)
    out["baselines"]["numpy-newton"] = dict(time=t_np, worst=worst,
                                            reached=bool(worst <= 1.0),
                                            n_groups=len(ts))
    log(f"[retrain:{name}] NumPy per-group Newton refit blas_threads=1 "
        f"{t_np * 1e3:9.1f} ms/group ({len(ts)} groups)  speed-up "
        f"{t_np / t_ours:6.1f}x  its ||grad|| / ours <= {worst:.2g}")

    # groupinf again, after the baselines: the load of the machine moves.
    for _ in range(repeat):
        t, _ = once(lambda: groupinf.retrain(model, X, y, groups,
                                             progress=False))
        times.append(t / len(groups))
    t_ours = out["ours"] = statistics.median(times)
    out["ours_runs"] = times
    log(f"[retrain:{name}] groupinf again after the baselines: median of all "
        f"{len(times)} runs {t_ours * 1e3:.2f} ms/group (runs "
        f"{', '.join(f'{x * 1e3:.2f}' for x in times)})")

    eligible = {k: v for k, v in out["baselines"].items()
                if v["reached"] and k != "numpy-newton"}
    if eligible:
        best = min(eligible, key=lambda k: eligible[k]["time"])
        out["best_sklearn"] = best
        log(f"[retrain:{name}] best scikit-learn refit at equal accuracy: "
            f"{best}, {eligible[best]['time'] * 1e3:.1f} ms/group -> "
            f"speed-up {eligible[best]['time'] / t_ours:.1f}x (target >= 20x)")
    results.setdefault("retrain", {})[name] = out


def bench_retrain(results, quick):
    log("\n== retrain: exact refits per group vs scikit-learn at equal "
        "gradient norm, and a per-group NumPy Newton refit ==")
    data = load_adult()
    X, y = data.X_train, data.y_train
    n = X.shape[0]
    sizes = groupinf.groups.size_grid(n, 40)
    groups = groupinf.groups.random_groups(n, sizes, seed=0)
    attr, _ = groupinf.groups.attribute_groups(data.groups_train)
    groups = groups + attr
    bench_retrain_on("adult", X, y, 3.0, groups, 4 if quick else 8, results,
                     lbfgs_groups=1 if quick else 2)
    if quick:
        return
    X, y = make_data(100_000, 32, seed=7)
    groups = random_groups(100_000, groupinf.groups.size_grid(
        100_000, 128, 0.0025, 0.025), seed=8)
    bench_retrain_on("synthetic-100k", X, y, 1.0, groups, 6, results,
                     lbfgs_groups=2)

    # Cost of groupinf's refits vs n (the plot), 64 groups of 0.25-2.5 %.
    curve = []
    for n in (1_000, 10_000, 100_000, 1_000_000):
        X, y = make_data(n, 32, seed=n)
        model = groupinf.fit(X, y, 1.0)
        groups = random_groups(n, groupinf.groups.size_grid(n, 64, 0.0025,
                                                            0.025), seed=3)
        reps = 3 if n < 1_000_000 else 1
        t = timeit(lambda: groupinf.retrain(model, X, y, groups,
                                            progress=False), reps, warmup=0)
        curve.append(dict(n=n, d=32, per_group=t / len(groups)))
        log(f"[retrain:vs-n] n={n:>9,} d=32  {t / len(groups) * 1e3:8.2f} "
            f"ms/group (64 groups of 0.25-2.5 %)")
        X = None  # free before the next size
    results["retrain_vs_n"] = curve


# ---------------------------------------------------------------------------
# 3. Influence vs a per-group NumPy loop
# ---------------------------------------------------------------------------


def numpy_loop_influence(model, X, y, groups, X_test, y_test):
    """Per group: gradient over its rows, a solve with the cached factor of
    H, dot products: params, self-loss, self-margin, test loss and margin."""
    from scipy.linalg import cho_solve

    theta = model.params_
    H = model.hessian()
    cho = (np.linalg.cholesky(H), True)
    Xtt = np.column_stack([X_test, np.ones(X_test.shape[0])])
    sig_t = 1 / (1 + np.exp(-(Xtt @ theta)))
    grad_test = (sig_t - y_test)[:, None] * Xtt
    marg_test = (2 * y_test - 1)[:, None] * Xtt
    G = len(groups)
    out = {"params": np.empty((G, theta.size)), "self_loss": np.empty(G),
           "self_margin": np.empty(G),
           "test_loss": np.empty((G, X_test.shape[0])),
           "test_margin": np.empty((G, X_test.shape[0]))}
    for g, idx in enumerate(groups):
        XU = np.column_stack([X[idx], np.ones(len(idx))])
        r = 1 / (1 + np.exp(-(XU @ theta))) - y[idx]
        gU = XU.T @ r
        dtheta = cho_solve(cho, gU)
        out["params"][g] = dtheta
        out["self_loss"][g] = gU @ dtheta
        out["self_margin"][g] = ((2 * y[idx] - 1) @ XU) @ dtheta
        out["test_loss"][g] = grad_test @ dtheta
        out["test_margin"][g] = marg_test @ dtheta
    return out


def _compare(ours, ref):
    err = 0.0
    for f, v in ref.items():
        a = getattr(ours, f)
        err = max(err, float(np.abs(a - v).max() / max(1e-300, np.abs(v).max())))
    return err


def bench_influence(results, quick):
    log("\n== influence: first-order effects of G groups (params, self-loss, "
        "self-margin, 6 test points' loss and margin) vs a per-group NumPy "
        "loop ==")
    res = {"target": [], "vs_G": [], "vs_n": [], "vs_p": []}

    def run(n, d, G, low, high, loop=True, repeat=3, threads=1):
        X, y = make_data(n, d, seed=n * 7 + d)
        model = groupinf.fit(X, y, 1.0)
        groups = random_groups(n, groupinf.groups.size_grid(n, G, low, high),
                               seed=G)
        Xt, yt = X[:6], y[:6]
        nnz = sum(len(g) for g in groups)
        with threadpool_limits(threads, user_api="blas"):
            t_ours = timeit(lambda: groupinf.influence(model, X, y, groups, Xt,
                                                       yt), repeat)
        ours = groupinf.influence(model, X, y, groups, Xt, yt)
        row = dict(n=n, d=d, G=G, low=low, high=high, nnz=nnz, ours=t_ours,
                   threads=threads)
        msg = (f"[influence] n={n:>9,} d={d:>3} G={G:>6,} sizes {low:.2%}-"
               f"{high:.2%} (nnz {nnz:,}) blas_threads={threads}: groupinf "
               f"{t_ours * 1e3:8.1f} ms")
        if loop:
            with threadpool_limits(threads, user_api="blas"):
                t_loop, ref = once(lambda: numpy_loop_influence(
                    model, X, y, groups, Xt, yt))
            err = _compare(ours, ref)
            row.update(loop=t_loop, err=err)
            msg += (f"   NumPy loop {t_loop * 1e3:9.1f} ms   speed-up "
                    f"{t_loop / t_ours:5.1f}x   (max rel diff {err:.1e})")
        log(msg)
        return row

    # The target: 10,000 groups on 20,000 x 128 in under a second.
    for low, high in ((0.0025, 0.025), (0.0025, 0.25)):
        for threads in (1, 2):
            row = run(20_000, 128, 10_000, low, high, repeat=5, threads=threads)
            log(f"[influence] target: 10,000 groups on 20,000 x 128 in "
                f"{row['ours']:.3f} s (target < 1 s) -> "
                f"{'met' if row['ours'] < 1 else 'MISSED'}")
            res["target"].append(row)
    if quick:
        results["influence"] = res
        return
    for G in (10, 100, 1_000, 10_000):
        res["vs_G"].append(run(20_000, 128, G, 0.0025, 0.025, loop=G <= 1000))
    for n in (1_000, 10_000, 100_000, 1_000_000):
        res["vs_n"].append(run(n, 32, 1_000, 0.0025, 0.025, loop=n <= 100_000,
                               repeat=3 if n < 1_000_000 else 1))
    for d in (16, 32, 64, 128, 256):
        res["vs_p"].append(run(20_000, d, 1_000, 0.0025, 0.025))
    results["influence"] = res


# ---------------------------------------------------------------------------
# 4. statsmodels GLM influence for single points
# ---------------------------------------------------------------------------


def bench_statsmodels(results, quick):
    import statsmodels.api as sm

    log("\n== statsmodels: one-step deletion effects of every single point "
        "(GLM Binomial get_influence) vs groupinf newton tier on n one-point "
        "groups ==")
    rows = []
    for n, d in ((2_000, 10), (20_000, 30)) if not quick else ((2_000, 10),):
        X, y = make_data(n, d, seed=11 + n)
        # A negligible penalty: H is X^T W X to 1e-9 relative.
        l2_reg = 1e-8
        model = groupinf.fit(X, y, l2_reg)
        groups = [np.array([i]) for i in range(n)]
        eye = sp.identity(n, format="csr")  # the same groups as a matrix
        exog = sm.add_constant(X, prepend=False)  # [x, 1] like groupinf

        def sm_all():
            fit = sm.GLM(y, exog, family=sm.families.Binomial()).fit()
            infl = fit.get_influence()
            return fit, infl.d_params, infl.cooks_distance[0]

        def sm_influence_only(fit):
            infl = fit.get_influence()
            return infl.d_params, infl.cooks_distance[0]

        t_sm_fit, (fit, d_params, cooks) = once(sm_all)
        with threadpool_limits(1, user_api="blas"):
            t_ours, t_sm, ratio = paired(
                lambda: groupinf.influence(model, X, y, eye, method="newton"),
                lambda: sm_influence_only(fit), 5)
            t_list = timeit(lambda: groupinf.influence(model, X, y, groups,
                                                       method="newton"), 3)
            t_first = timeit(lambda: groupinf.influence(model, X, y, eye), 3)
        ours = groupinf.influence(model, X, y, eye, method="newton")
        # statsmodels' d_params is old minus new (theta_hat - theta_(-i));
        # groupinf's params are new minus old.
        diff = float(np.abs(ours.params + d_params).max()
                     / np.abs(d_params).max())
        t_gfit = timeit(lambda: groupinf.fit(X, y, l2_reg), 3)
        log(f"[statsmodels] n={n:,} d={d}: statsmodels get_influence "
            f"(d_params + cooks_distance) {t_sm * 1e3:8.1f} ms; groupinf "
            f"newton tier on the {n:,} one-point groups (sparse identity) "
            f"{t_ours * 1e3:8.1f} ms -> speed-up {ratio:.1f}x; max rel diff "
            f"of the parameter changes {diff:.1e}")
        log(f"[statsmodels]   (same groups as {n:,} index arrays "
            f"{t_list * 1e3:.1f} ms; first-order tier {t_first * 1e3:.1f} ms; "
            f"fits: statsmodels IRLS + influence once {t_sm_fit * 1e3:.1f} ms, "
            f"groupinf.fit {t_gfit * 1e3:.1f} ms)")
        rows.append(dict(n=n, d=d, statsmodels=t_sm, statsmodels_fit=t_sm_fit,
                         ours=t_ours, ratio=ratio, list=t_list, first=t_first,
                         fit=t_gfit, diff=diff))
    results["statsmodels"] = rows


# ---------------------------------------------------------------------------
# 5. 1,000,000 x 100: fit and influence for 10,000 groups, peak memory
# ---------------------------------------------------------------------------


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def million_child():
    import tracemalloc

    n, d, G = 1_000_000, 100, 10_000
    out = {"n": n, "d": d, "G": G, "rss_start": _rss_mib()}
    X, y = make_data(n, d, seed=5)
    out["X_mib"] = X.nbytes / 2 ** 20
    groups = random_groups(n, groupinf.groups.size_grid(n, G, 0.0025, 0.025),
                           seed=6)
    out["nnz"] = int(sum(len(g) for g in groups))
    out["groups_mib"] = sum(g.nbytes for g in groups) / 2 ** 20
    out["rss_data"] = _rss_mib()

    tracemalloc.start()
    t, model = once(lambda: groupinf.fit(X, y, 1.0))
    out["fit_s"] = t
    out["fit_iter"] = model.n_iter_
    out["fit_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
    out["rss_fit"] = _rss_mib()
    tracemalloc.reset_peak()
    t, res = once(lambda: groupinf.influence(model, X, y, groups))
    out["influence_s"] = t
    out["influence_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
    out["rss_influence"] = _rss_mib()
    tracemalloc.stop()
    out["max_solver_residual"] = float(res.solver_residual.max())

    # Hessian assembly at this size against bare dsyrk.
    _, _, curv = model._objective.pointwise(model._theta)
    rows = np.arange(n, dtype=np.int64)
    ones = np.ones(n)
    res = groups = None  # free them before the copy A
    A = np.asfortranarray(np.sqrt(curv)[:, None] * np.column_stack(
        [X, np.ones(n)]))
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            t_ours, t_syrk, ratio = paired(
                lambda: model._objective.loss_hessian(curv, rows, ones),
                lambda: blas.dsyrk(1.0, A, trans=1, lower=0), 5, warmup=3)
        out[f"hessian_t{threads}"] = dict(ours=t_ours, dsyrk=t_syrk,
                                          ratio=ratio)
    print("JSON " + json.dumps(out), flush=True)


def bench_million(results, quick):
    log("\n== million: 1,000,000 x 100 binary fit and influence for 10,000 "
        "groups (0.25-2.5 % of n each), in a child process ==")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, __file__, "--only", "million-child"],
                          capture_output=True, text=True, env=env, check=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON ")][-1]
    out = json.loads(line[5:])
    log(f"[million] X {out['X_mib']:.0f} MiB; groups: {out['nnz']:,} indices "
        f"({out['groups_mib']:.0f} MiB as int64 arrays)")
    log(f"[million] fit {out['fit_s']:.1f} s ({out['fit_iter']} Newton steps), "
        f"NumPy peak during fit {out['fit_peak_mib']:.0f} MiB (tracemalloc)")
    log(f"[million] influence for {out['G']:,} groups {out['influence_s']:.1f} "
        f"s, NumPy peak during influence {out['influence_peak_mib']:.0f} MiB; "
        f"max solver residual {out['max_solver_residual']:.1e}")
    log(f"[million] peak resident set of the process (getrusage ru_maxrss): "
        f"after data {out['rss_data']:.0f} MiB, after fit {out['rss_fit']:.0f} "
        f"MiB, after influence {out['rss_influence']:.0f} MiB (limit 24 GiB "
        f"= 24576 MiB)")
    for threads in (1, 2):
        h = out[f"hessian_t{threads}"]
        log(f"[million] hessian n=1,000,000 d=100 blas_threads={threads}: "
            f"groupinf {h['ours'] * 1e3:.1f} ms, bare dsyrk "
            f"{h['dsyrk'] * 1e3:.1f} ms, ratio {h['ratio']:.2f}")
    results["million"] = out


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def plot(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(FIGURES, exist_ok=True)
    inf = results.get("influence", {})

    def loglog(ax, ys, xlabel, title):
        for label, (xx, yy, style) in ys.items():
            ax.loglog(xx, yy, style, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    # Cost vs n.
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ys = {}
    h = [r for r in results.get("hessian", []) if r["d"] == 32
         and r["threads"] == 1]
    if h:
        ys["Hessian assembly, d=32, 1 BLAS thread"] = (
            [r["n"] for r in h], [r["ours"] for r in h], "o-")
        ys["bare dsyrk, d=32, 1 BLAS thread"] = (
            [r["n"] for r in h], [r["dsyrk"] for r in h], "x--")
    rv = results.get("retrain_vs_n", [])
    if rv:
        ys["retrain, per group, d=32"] = ([r["n"] for r in rv],
                                          [r["per_group"] for r in rv], "s-")
    vn = inf.get("vs_n", [])
    if vn:
        ys["influence, 1,000 groups, d=32"] = (
            [r["n"] for r in vn], [r["ours"] for r in vn], "^-")
        withloop = [r for r in vn if "loop" in r]
        ys["NumPy loop influence, 1,000 groups"] = (
            [r["n"] for r in withloop], [r["loop"] for r in withloop], "^:")
    loglog(ax, ys, "n (rows)", "groupinf cost vs n")
    fig.tight_layout()
    fig.savefig(os.path.join(FIGURES, "scale-n.png"), dpi=120)
    plt.close(fig)

    # Cost vs p.
    fig, ax = plt.subplots(figsize=(6, 4.2))
    vp = inf.get("vs_p", [])
    ys = {}
    if vp:
        ys["influence, 1,000 groups, n=20,000 (groupinf)"] = (
            [r["d"] + 1 for r in vp], [r["ours"] for r in vp], "^-")
        ys["NumPy loop"] = ([r["d"] + 1 for r in vp], [r["loop"] for r in vp],
                            "^:")
    hp = {}
    for r in results.get("hessian", []):
        if r["n"] == 100_000 and r["threads"] == 1:
            hp[r["d"] + 1] = r["ours"]
    if hp:
        ys["Hessian assembly, n=100,000, 1 BLAS thread"] = (
            sorted(hp), [hp[k] for k in sorted(hp)], "o-")
    loglog(ax, ys, "p (parameters)", "groupinf cost vs p")
    ticks = sorted({r["d"] + 1 for r in vp} | set(hp))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    fig.tight_layout()
    fig.savefig(os.path.join(FIGURES, "scale-p.png"), dpi=120)
    plt.close(fig)

    # Cost vs G.
    fig, ax = plt.subplots(figsize=(6, 4.2))
    vg = inf.get("vs_G", [])
    ys = {}
    if vg:
        ys["influence, n=20,000, d=128 (groupinf)"] = (
            [r["G"] for r in vg], [r["ours"] for r in vg], "^-")
        wl = [r for r in vg if "loop" in r]
        ys["NumPy loop"] = ([r["G"] for r in wl], [r["loop"] for r in wl], "^:")
    loglog(ax, ys, "G (groups)", "groupinf influence cost vs G (groups of "
           "0.25-2.5 % of n)")
    fig.tight_layout()
    fig.savefig(os.path.join(FIGURES, "scale-G.png"), dpi=120)
    plt.close(fig)
    log(f"figures written to {os.path.abspath(FIGURES)}/scale-{{n,p,G}}.png")


# ---------------------------------------------------------------------------


SECTIONS = {"hessian": bench_hessian, "retrain": bench_retrain,
            "influence": bench_influence, "statsmodels": bench_statsmodels,
            "million": bench_million}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="merge this run's numbers into this file")
    ap.add_argument("--plot", help="write the figures from this JSON file")
    args = ap.parse_args()
    if args.only == "million-child":
        million_child()
        return
    if args.plot:
        with open(args.plot) as fh:
            plot(json.load(fh))
        return
    log(machine_line())
    log(f"groupinf {groupinf.__file__}; numpy {np.__version__}")
    results = {}
    for name in args.only.split(","):
        SECTIONS[name](results, args.quick)
    log("\n" + machine_line().replace("at start", "at end"))
    if args.json:
        old = {}
        if os.path.exists(args.json):
            with open(args.json) as fh:
                old = json.load(fh)
        old.update(results)
        with open(args.json, "w") as fh:
            json.dump(old, fh, indent=1)


if __name__ == "__main__":
    main()
