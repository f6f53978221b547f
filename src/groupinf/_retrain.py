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

from . import _config, _loss, _newton, _validation
from ._context import group_rows, group_weight, prepare
from ._objective import to_public
from ._results import GroupEffects, Progress
from ._woodbury import GroupSolver, curvature_rows, woodbury_is_cheaper


def retrain(model, X, y, groups, X_test=None, y_test=None, *, n_jobs=None,
            tol=None, max_iter=100, progress=None, batch_size=None,
            executor=None, batch_groups=None, retries=2):
    """Measure the effect of removing each group by refitting the model.

    Parameters
    ----------
    model : LogisticModel
    X, y : the training data the model was fitted on
    groups : list of index arrays or boolean masks, or sparse (G, n) matrix
    X_test, y_test : optional test points
    n_jobs : int, optional
        Threads over groups; None means one per core (``os.cpu_count()``),
        or one thread for models with more than 500 parameters, whose refits
        already keep every core busy inside BLAS. While k > 1 threads run,
        BLAS gets cores // k threads each (through threadpoolctl, installed
        with scikit-learn), so threads never outnumber cores; without
        threadpoolctl the default is one thread.
    tol : float, optional
        Relative gradient tolerance of every refit (default: the model's).
    max_iter : int, default 100
        Newton steps per refit.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    batch_size : int, optional
        Binary dense data: groups whose refits advance together, sharing
        each pass over X as one GEMM (default: up to 64, keeping the (n, B)
        logit buffer near 32 MB). Changes speed and memory, not results.
    executor : concurrent.futures.Executor or distributed.Client, optional
        Run the refits there instead of in local threads: groups are split
        into tasks of ``batch_groups`` groups, each running this function on
        its batch (one thread per task); results come back in group order.
        A Dask client gets the model and data scattered to every worker once,
        and re-runs the tasks of a worker that dies; other executors get the
        data with every task (few, large tasks). See ``_distribute``.
    batch_groups : int, optional
        Groups per task with an executor (default: about four tasks per Dask
        worker, one task per executor worker otherwise).
    retries : int, default 2
        With an executor: times a failed task is re-run before its error
        propagates.

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
    _check_model(model)
    tol = model._tol if tol is None else _validation.check_tol(tol)
    max_iter = _validation.check_positive_int(max_iter, "max_iter")
    if batch_size is not None:
        batch_size = _validation.check_positive_int(batch_size, "batch_size")
    if n_jobs is not None:
        _check_n_jobs(n_jobs, None)
    ctx = prepare(model, X, y, groups, X_test, y_test)
    if executor is not None:
        return _on_executor(executor, model, X, y, ctx, X_test, y_test, tol,
                            max_iter, batch_size, batch_groups, retries,
                            progress, t0)
    obj = ctx.objective
    n_jobs = _check_n_jobs(n_jobs, obj)
    G = ctx.n_groups
    col_full = obj.abs_col_sums(ctx.s)

    def one(g):
        return _refit_group(model, ctx, g, tol, max_iter, col_full)

    bar = Progress(G, "retrain", enabled=progress)
    results = [None] * G
    if obj.binary and not obj.sparse:
        # Binary dense data: refits advance together, sharing each pass
        # over X as one GEMM (see _refit_batch); stragglers finish alone.
        size = batch_size or _batch_size(obj.n_samples)
        for lo in range(0, G, size):
            ids = np.arange(lo, min(G, lo + size))
            for g, res in zip(ids, _refit_batch(model, ctx, ids, tol, max_iter,
                                                col_full, n_jobs)):
                results[g] = res
            bar.update(len(ids))
    elif n_jobs == 1 or G == 1:
        for g in range(G):
            results[g] = one(g)
            bar.update()
    else:
        with _config.blas_threads_for(n_jobs), \
                ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for g, res in enumerate(pool.map(one, range(G))):
                results[g] = res
                bar.update()

    out = _collect(results, ctx, obj, model)
    out.timings = {"total": time.perf_counter() - t0}
    _warn_unconverged(out)
    return out


def _on_executor(executor, model, X, y, ctx, X_test, y_test, tol, max_iter,
                 batch_size, batch_groups, retries, progress, t0):
    from . import _distribute

    if not (_distribute.is_dask_client(executor)
            or callable(getattr(executor, "submit", None))):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor or a Dask "
            f"distributed Client, got {type(executor).__name__}")
    if batch_groups is not None:
        batch_groups = _validation.check_positive_int(batch_groups,
                                                      "batch_groups")
    retries = _validation.check_positive_int(retries, "retries", minimum=0)
    kwargs = {"tol": tol, "max_iter": max_iter, "n_jobs": 1,
              "batch_size": batch_size}
    out = _distribute.run(executor, model, X, y, ctx.C, X_test, y_test,
                          kwargs=kwargs, batch_groups=batch_groups,
                          retries=retries, progress=progress)
    out.timings["total"] = time.perf_counter() - t0
    _warn_unconverged(out)
    return out


def _warn_unconverged(out):
    n_bad = int(np.sum(~out.converged))
    if n_bad:
        worst = int(np.argmax(out.grad_norm / out.grad_tol))
        warnings.warn(
            f"{n_bad} of {out.n_groups} refits did not converge (worst: group "
            f"{worst}, ||grad F|| = {out.grad_norm[worst]:.3e}, target "
            f"{out.grad_tol[worst]:.3e}); see GroupEffects.converged. "
            f"Increase max_iter or l2_reg.",
            _newton.ConvergenceWarning,
            stacklevel=3,
        )


def _check_model(model):
    from ._model import LogisticModel

    if not isinstance(model, LogisticModel):
        raise TypeError(
            f"model must be a LogisticModel from groupinf.fit, got "
            f"{type(model).__name__}"
        )


def _check_n_jobs(n_jobs, objective):
    if n_jobs is None:
        # Wide models spend their time inside multithreaded BLAS (solves and
        # factorisations with p > 500); threads over groups on top of that
        # only oversubscribe the cores.
        if objective.n_params > 500 or not _config.have_threadpoolctl():
            return 1
        return max(1, os.cpu_count() or 1)
    return _validation.check_positive_int(n_jobs, "n_jobs")


def _setup_group(model, ctx, g, tol, col_full):
    """Weights without group g, its refit target and the factor of H - H_U."""
    obj = ctx.objective
    idx, frac = group_rows(ctx.C, g)
    s_g = ctx.s.copy()
    s_g[idx] *= 1.0 - frac
    removed = ctx.s[idx] * frac
    col = col_full - np.asarray(abs(obj.X[idx]).T @ removed).ravel()
    tol_abs = tol * obj.grad_scale(s_g, col)

    # H - H_U needs only the group's rows. If removing the group leaves it
    # indefinite in floating point, the refit starts with the exact Hessian.
    try:
        if obj.n_params > 500 and woodbury_is_cheaper(obj, idx.size):
            # Wide models, small groups: Woodbury through the group's
            # hat-matrix block instead of a fresh p x p factorisation.
            L = GroupSolver(model.hessian_factor_,
                            curvature_rows(obj, ctx.curv, idx, removed),
                            leverage=False)
        else:
            H_U = obj.loss_hessian(ctx.curv, idx, removed)
            L = _newton.factor(model._hessian_reg - H_U)
    except _newton.SingularHessianError:
        L = None
    return idx, removed, s_g, tol_abs, L


def _self_loss(ctx, idx, removed, theta):
    # The group's own weighted loss, after minus before, on its rows only.
    obj = ctx.objective
    new_loss = obj.pointwise(theta, obj.X[idx], obj.y[idx])[0]
    return float(removed @ (new_loss - ctx.loss[idx]))


def _empty_result(model, ctx):
    return (ctx.theta, 0.0, model.grad_norm_, 0, model.grad_tol_,
            model.converged_)


def _refit_group(model, ctx, g, tol, max_iter, col_full, theta0=None,
                 n_done=0, setup=None):
    """Refit without group g by `_newton.minimize`; returns its result tuple."""
    if ctx.C.indptr[g] == ctx.C.indptr[g + 1]:
        return _empty_result(model, ctx)
    idx, removed, s_g, tol_abs, L = setup or _setup_group(model, ctx, g, tol,
                                                          col_full)
    if theta0 is None:
        theta0 = ctx.theta
    else:
        L = None  # a straggler from the batch: restart with the exact Hessian
    res = _newton.minimize(ctx.objective, s_g, theta0, tol_abs=tol_abs,
                           max_iter=max(1, max_iter - n_done), hessian_factor=L)
    return (res.theta, _self_loss(ctx, idx, removed, res.theta), res.grad_norm,
            n_done + res.n_iter, tol_abs, res.converged)


def _batch_size(n_samples):
    # The (n, B) logit buffer stays near 32 MB; 64 columns make GEMM efficient.
    return int(max(1, min(64, 4_000_000 // max(1, n_samples))))


def _refit_batch(model, ctx, ids, tol, max_iter, col_full, n_jobs):
    """Refit the groups ``ids`` together with their fixed factors of H - H_U.

    Every iteration is one batched objective/gradient evaluation of all
    active trial points (two GEMMs over X). A group leaves the batch when it
    is certified, and is finished alone by `_refit_group` (exact Hessians)
    when its step is rejected or its gradient contracts less than fourfold.
    """
    obj = ctx.objective
    out = [None] * len(ids)
    setups = {}
    for j, g in enumerate(ids):
        if ctx.C.indptr[g] == ctx.C.indptr[g + 1]:
            out[j] = _empty_result(model, ctx)
        else:
            setups[j] = _setup_group(model, ctx, g, tol, col_full)
    active = [j for j in setups if setups[j][4] is not None]
    stragglers = [(j, None, 0) for j in setups if setups[j][4] is None]

    theta = {j: ctx.theta.copy() for j in active}
    f, grad = _batch_objgrad(ctx, ids, active, theta)
    noise_n = 8.0 * np.sqrt(obj.n_samples) * _newton._EPS
    s_total = float(np.sum(ctx.s))
    n_iter = dict.fromkeys(active, 0)
    while active:
        # 1. Certified groups leave; the rest take one step each.
        still = []
        for j in active:
            gn = float(np.linalg.norm(grad[j]))
            if gn <= setups[j][3] and not _newton.settled(setups[j][4], grad[j],
                                                          theta[j]):
                # The gradient test passed on a plateau: the exact path
                # (fresh Hessians) finishes it, with its own certificate.
                stragglers.append((j, theta[j], n_iter[j]))
            elif gn <= setups[j][3]:
                out[j] = _finish(ctx, setups[j], theta[j], gn, n_iter[j], True)
            elif n_iter[j] >= max_iter:
                out[j] = _finish(ctx, setups[j], theta[j], gn, n_iter[j], False)
            else:
                still.append(j)
        if not still:
            break
        trial = {}
        for j in still:
            step = -_newton.solve(setups[j][4], grad[j])
            trial[j] = theta[j] + step
        f_t, g_t = _batch_objgrad(ctx, ids, still, trial)

        # 2. Accept (Armijo, or gradient decrease within round-off of F);
        #    reject or slow contraction sends the group to the exact path.
        active = []
        for j in still:
            n_iter[j] += 1
            gn, gn_t = np.linalg.norm(grad[j]), np.linalg.norm(g_t[j])
            slope = float(grad[j] @ (trial[j] - theta[j]))
            ok = np.isfinite(f_t[j]) and (
                f_t[j] <= f[j] + 1e-4 * slope
                or (f_t[j] - f[j] <= noise_n * (max(1.0, abs(f[j])) + _newton
                    ._logit_scale(theta[j], col_full, s_total, obj)) and gn_t < gn)
            )
            if ok:
                theta[j], f[j], grad[j] = trial[j], f_t[j], g_t[j]
            if ok and (gn_t <= setups[j][3] or gn_t <= 0.25 * gn):
                active.append(j)
            else:
                stragglers.append((j, theta[j], n_iter[j]))

    def finish_alone(item):
        j, theta0, done = item
        return j, _refit_group(model, ctx, ids[j], tol, max_iter, col_full,
                               theta0=theta0, n_done=done, setup=setups[j])

    if stragglers:
        with _config.blas_threads_for(min(n_jobs, len(stragglers))), \
                ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for j, res in pool.map(finish_alone, stragglers):
                out[j] = res
    return out


def _finish(ctx, setup, theta, gn, n_iter, converged):
    idx, removed, _, tol_abs, _ = setup
    return (theta, _self_loss(ctx, idx, removed, theta), gn, n_iter, tol_abs,
            converged)


def _batch_objgrad(ctx, ids, members, theta):
    """F and grad F for the groups ``ids[members]`` at ``theta[member]``."""
    obj = ctx.objective
    if not members:
        return {}, {}
    sub = ctx.C[ids[members]]
    Th = np.ascontiguousarray([theta[j] for j in members])
    B = len(members)
    Z = np.empty((obj.n_samples, B))
    G = np.empty((B, obj.n_features + 1))
    F = np.empty(B)
    _loss.binary_objgrad_batch(
        obj.X, obj.y, ctx.s, Th, sub.indptr.astype(np.int32),
        sub.indices.astype(np.int32), np.ascontiguousarray(sub.data),
        obj.l2_reg, Z, G, F,
    )
    return ({j: float(F[k]) for k, j in enumerate(members)},
            {j: G[k] for k, j in enumerate(members)})


def _collect(results, ctx, obj, model):
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

    self_margin = None
    if obj.binary:
        sign = 2 * obj.y - 1
        z_new = obj.group_dots(ctx.W, thetas)[:, 0]
        z_old = obj.logits(ctx.theta)[ctx.W.indices]
        per_entry = ctx.W.data * sign[ctx.W.indices] * (z_new - z_old)
        self_margin = np.bincount(
            np.repeat(np.arange(G), np.diff(ctx.W.indptr)), weights=per_entry,
            minlength=G)

    return GroupEffects(
        method="retrain",
        params=to_public(dtheta, obj.n_logits, obj.n_features),
        self_margin=self_margin,
        param_norm_h=np.sqrt(np.maximum(0.0, np.einsum(
            "gp,gp->g", dtheta, dtheta @ model._hessian_reg))),
        self_loss=np.array([r[1] for r in results]),
        test_loss=test_loss,
        test_margin=test_margin,
        group_weight=group_weight(ctx.W),
        grad_norm=np.array([r[2] for r in results]),
        grad_tol=np.array([r[4] for r in results]),
        n_iter=np.array([r[3] for r in results], dtype=np.int64),
        converged=np.array([r[5] for r in results], dtype=bool),
    )
