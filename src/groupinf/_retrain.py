"""`groupinf.retrain`: actual effects of removing groups, by exact refits.

For each group U the weights become s_i (1 - c_Ui) and F is minimised again,
warm-started at theta_hat. The first Newton matrix is H - H_U at theta_hat:
H is cached by `fit` and H_U needs only the group's rows (one SYRK over |U|
rows), so a refit starts with one small assembly, one factorisation, and then
costs about one gradient pass per step. The factor is rebuilt at the current
iterate only when it stops contracting the gradient (see `_newton`). Every
refit ends with its own certificate ||grad F_-U|| <= tol * scale.

Groups run in threads; the kernels release the GIL, and each group's result
depends only on that group, so results do not depend on ``n_jobs``.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _newton, _validation
from ._context import group_rows, group_weight, prepare
from ._objective import to_public
from ._results import GroupEffects, Progress


def retrain(model, X, y, groups, X_test=None, y_test=None, *, n_jobs=None,
            tol=None, max_iter=100, progress=None):
    """Measure the effect of removing each group by refitting the model.

    Parameters
    ----------
    model : LogisticModel
    X, y : the training data the model was fitted on
    groups : list of index arrays or boolean masks, or sparse (G, n) matrix
    X_test, y_test : optional test points
    n_jobs : int, optional
        Threads over groups; None means one per core (``os.cpu_count()``).
    tol : float, optional
        Relative gradient tolerance of every refit (default: the model's).
    max_iter : int, default 100
        Newton steps per refit.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).

    Returns
    -------
    GroupEffects
        Same fields as :func:`influence`, plus ``grad_norm``, ``grad_tol``,
        ``n_iter`` and ``converged`` per group.

    Warns
    -----
    ConvergenceWarning
        If any refit misses its target; those groups have
        ``converged == False`` and their numbers should not be used.
    """
    t0 = time.perf_counter()
    tol = model._tol if tol is None else _validation.check_tol(tol)
    max_iter = _validation.check_positive_int(max_iter, "max_iter")
    n_jobs = _check_n_jobs(n_jobs)
    ctx = prepare(model, X, y, groups, X_test, y_test)
    obj = ctx.objective
    G = ctx.n_groups
    col_full = obj.abs_col_sums(ctx.s)

    def one(g):
        return _refit_group(model, ctx, g, tol, max_iter, col_full)

    bar = Progress(G, "retrain", enabled=progress)
    results = [None] * G
    if n_jobs == 1 or G == 1:
        for g in range(G):
            results[g] = one(g)
            bar.update()
    else:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for g, res in enumerate(pool.map(one, range(G))):
                results[g] = res
                bar.update()

    out = _collect(results, ctx, obj)
    out.timings = {"total": time.perf_counter() - t0}
    n_bad = int(np.sum(~out.converged))
    if n_bad:
        worst = int(np.argmax(out.grad_norm / out.grad_tol))
        warnings.warn(
            f"{n_bad} of {G} refits did not converge (worst: group {worst}, "
            f"||grad F|| = {out.grad_norm[worst]:.3e}, target "
            f"{out.grad_tol[worst]:.3e}); see GroupEffects.converged. "
            f"Increase max_iter or l2_reg.",
            _newton.ConvergenceWarning,
            stacklevel=2,
        )
    return out


def _check_n_jobs(n_jobs):
    if n_jobs is None:
        return max(1, os.cpu_count() or 1)
    return _validation.check_positive_int(n_jobs, "n_jobs")


def _refit_group(model, ctx, g, tol, max_iter, col_full):
    """Refit without group g; returns (theta, self_loss, certificate...)."""
    obj = ctx.objective
    idx, frac = group_rows(ctx.C, g)
    theta_hat = ctx.theta
    if idx.size == 0:
        return (theta_hat, 0.0, model.grad_norm_, 0, model.grad_tol_,
                model.converged_)

    # 1. Weights without the group and the refit target for them.
    s_g = ctx.s.copy()
    s_g[idx] *= 1.0 - frac
    removed = ctx.s[idx] * frac
    col = col_full - np.asarray(abs(obj.X[idx]).T @ removed).ravel()
    tol_abs = tol * obj.grad_scale(s_g, col)

    # 2. First Newton matrix H - H_U, from the group's rows only. If removing
    #    the group leaves it indefinite in floating point, start exactly.
    H_U = obj.loss_hessian(ctx.curv, idx, removed)
    try:
        L = _newton.factor(model._hessian_reg - H_U)
    except _newton.SingularHessianError:
        L = None
    res = _newton.minimize(obj, s_g, theta_hat, tol_abs=tol_abs,
                           max_iter=max_iter, hessian_factor=L)

    # 3. The group's own weighted loss, after minus before, on its rows.
    new_loss = obj.pointwise(res.theta, obj.X[idx], obj.y[idx])[0]
    self_loss = float(removed @ (new_loss - ctx.loss[idx]))
    return (res.theta, self_loss, res.grad_norm, res.n_iter, tol_abs,
            res.converged)


def _collect(results, ctx, obj):
    G = len(results)
    thetas = np.array([r[0] for r in results])
    dtheta = obj.centre(thetas - ctx.theta[None, :])

    test_loss = test_margin = None
    if ctx.X_test is not None:
        test_loss = np.array([
            obj.pointwise(thetas[g], ctx.X_test, ctx.y_test)[0]
            for g in range(G)
        ]) - ctx.test_loss[None, :]
        if obj.binary:
            sign = 2 * ctx.y_test - 1
            z_new = np.array([obj.logits(th, ctx.X_test) for th in thetas])
            z_hat = obj.logits(ctx.theta, ctx.X_test)
            test_margin = sign[None, :] * (z_new - z_hat[None, :])

    return GroupEffects(
        method="retrain",
        params=to_public(dtheta, obj.n_logits, obj.n_features),
        self_loss=np.array([r[1] for r in results]),
        test_loss=test_loss,
        test_margin=test_margin,
        group_weight=group_weight(ctx.W),
        grad_norm=np.array([r[2] for r in results]),
        grad_tol=np.array([r[4] for r in results]),
        n_iter=np.array([r[3] for r in results], dtype=np.int64),
        converged=np.array([r[5] for r in results], dtype=bool),
    )
