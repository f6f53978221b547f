"""`groupinf.retrain`: actual effects of removing groups, by exact refits.

For each group U the weights become s_i (1 - c_Ui) and F is minimised again,
warm-started at theta_hat. The first Newton matrix is H - H_U at theta_hat:
H is cached by `fit` and H_U needs only the group's rows (one SYRK over |U|
rows, or over the rows that stay when U holds most of them), so a refit
starts with one small assembly, one factorisation, and then costs about one
gradient pass per step. Binary dense refits advance in batches that share
every pass over X as one GEMM, with quasi-Newton steps on that factor (see
`_refit_batch`); other refits, and batch members whose steps stop
contracting, run Newton with the factor rebuilt at the current iterate when
it stops contracting the gradient (see `_newton`). Every refit ends with its
own certificate ||grad F_-U|| <= tol * scale.

Groups (or batches of groups) run in threads; the kernels release the GIL,
and BLAS gets cores // threads threads meanwhile. Each group's iterates
depend only on that group; the batch it shares a GEMM with can change the
last bits of its products, so results agree to rounding (tested to 1e-12)
for any ``n_jobs`` and ``batch_size``.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from . import _config, _groupsum, _loss, _newton, _validation
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
        buffer of each of the ``n_jobs`` concurrent batches at 32 MB or, for
        large n, all of them together within half the size of X). Changes
        speed and memory, not results (beyond rounding).
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
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got "
                        f"{progress!r}")
    if executor is None and batch_groups is not None:
        raise ValueError("batch_groups applies only with an executor; pass "
                         "executor=... or batch_size for local batches")
    ctx = prepare(model, X, y, groups, X_test, y_test)
    if executor is not None:
        return _on_executor(executor, model, X, y, ctx, X_test, y_test, tol,
                            max_iter, batch_size, batch_groups, retries,
                            progress, t0)
    obj = ctx.objective
    n_jobs = _check_n_jobs(n_jobs, obj)
    G = ctx.n_groups
    # The full data's column scales and gradient at theta_hat: a refit's
    # first gradient is the latter minus the group's part (its rows only),
    # which saves every refit one pass over X.
    full = _Full(obj.abs_col_sums(ctx.s), obj.objgrad(ctx.theta, ctx.s)[1])

    def one(g):
        return _refit_group(model, ctx, g, tol, max_iter, full)

    bar = Progress(G, "retrain", enabled=progress)
    results = [None] * G
    if obj.binary and not obj.sparse:
        # Binary dense data: refits advance together, sharing each pass
        # over X as one GEMM (see _refit_batch); stragglers finish alone.
        # With k threads, k batches run at once (BLAS at cores // k each),
        # so the elementwise work of a pass uses every core too.
        batches = _batches(G, batch_size or _batch_size(obj, G, n_jobs),
                           n_jobs)

        def run(ids):
            return ids, _refit_batch(model, ctx, ids, tol, max_iter, full,
                                     n_jobs if len(batches) == 1 else 1)

        workers = min(n_jobs, len(batches))
        with _config.blas_threads_for(workers), \
                ThreadPoolExecutor(max_workers=workers) as pool:
            done = pool.map(run, batches) if workers > 1 else map(run, batches)
            for ids, res in done:
                for g, r in zip(ids, res):
                    results[g] = r
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


class _Full(NamedTuple):
    col: np.ndarray  # sum_i s_i |x_ij|
    grad: np.ndarray  # grad F(theta_hat; s), internal layout


def _start_gradients(ctx, full, groups):
    """grad F_-U(theta_hat) = grad F(theta_hat) - g_U for the given groups,
    (len(groups), p): the group parts come from the groups' rows only."""
    part = ctx.objective.weighted_rows_gradient(ctx.dloss, ctx.W[groups])
    return full.grad[None, :] - part


def _setup_group(model, ctx, g, tol, full):
    """Weights without group g, its refit target and the factor of H - H_U."""
    obj = ctx.objective
    idx, frac = group_rows(ctx.C, g)
    s_g = ctx.s.copy()
    s_g[idx] *= 1.0 - frac
    removed = ctx.s[idx] * frac
    if obj.sparse:
        col = full.col - np.asarray(abs(obj.X[idx]).T @ removed).ravel()
    else:
        col = np.empty(obj.n_features)
        _groupsum.rows_abs_sum(obj.X, idx, removed, col)
        col = full.col - col
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
        elif obj.binary and 2 * idx.size > obj.n_samples:
            # A group holding most of the rows: the same matrix from the
            # rows that stay (fewer of them to assemble).
            rows = np.flatnonzero(s_g > 0)
            L = _newton.factor(obj.regularised(
                obj.loss_hessian(ctx.curv, rows, s_g[rows])))
        else:
            H_U = obj.loss_hessian(ctx.curv, idx, removed)
            L = _newton.factor(model._hessian_reg - H_U)
    except _newton.SingularHessianError:
        L = None
    return idx, removed, s_g, tol_abs, L


def _empty_result(model, ctx):
    return (ctx.theta, 0.0, model.grad_norm_, 0, model.grad_tol_,
            model.converged_)


def _refit_group(model, ctx, g, tol, max_iter, full, theta0=None,
                 n_done=0, setup=None):
    """Refit without group g; returns its result tuple.

    From theta_hat: quasi-Newton steps on the factor of H - H_U while they
    contract the gradient (`_QuasiNewton`, one objective/gradient pass per
    step, as in a batch), then, if needed, `_newton.minimize` from where
    they stopped. ``theta0`` (a straggler from a batch) starts the latter
    directly.
    """
    if ctx.C.indptr[g] == ctx.C.indptr[g + 1]:
        return _empty_result(model, ctx)
    setup = setup or _setup_group(model, ctx, g, tol, full)
    _, _, s_g, tol_abs, L = setup
    obj = ctx.objective
    if theta0 is None and L is not None:
        qn = _QuasiNewton(obj, setup, ctx.theta.copy(),
                          _start_gradients(ctx, full, [g])[0])
        work = obj.workspace()
        while True:
            state = qn.state(max_iter)
            if state == "step":
                if qn.update(obj.objgrad(qn.trial(), s_g, work)[1]):
                    continue
                state = "alone"
            if state != "alone":
                return _finish(ctx, setup, qn.theta, qn.grad_norm, qn.n_iter,
                               state == "certified")
            theta0, n_done = qn.theta, qn.n_iter
            break
    if theta0 is None:
        theta0 = ctx.theta  # H - H_U was not positive definite
    res = _newton.minimize(obj, s_g, theta0, tol_abs=tol_abs,
                           max_iter=max(1, max_iter - n_done))
    # The self-loss (slot 1) is computed for all groups at once in _collect.
    return (res.theta, None, res.grad_norm, n_done + res.n_iter, tol_abs,
            res.converged)


def _batch_size(obj, n_groups, n_jobs):
    # 64 columns make the GEMMs efficient. Each of the n_jobs concurrent
    # batches holds an (n, B) buffer: at most 32 MB, or half of X's size
    # shared between them when that is larger, so memory stays within a
    # fraction of X whatever n is.
    n = max(1, obj.n_samples)
    cap = max(4_000_000 // n, obj.n_features // (2 * n_jobs))
    return int(max(1, min(64, cap, -(-n_groups // n_jobs))))


def _batches(n_groups, size, n_jobs):
    """Consecutive group ids in batches of at most ``size``, their number a
    multiple of ``n_jobs`` where that keeps batches non-empty (so k threads
    get equal shares)."""
    n_batches = -(-n_groups // size)
    if n_jobs > 1 and n_groups >= n_jobs:
        n_batches = min(n_groups, n_jobs * -(-n_batches // n_jobs))
    cuts = np.linspace(0, n_groups, n_batches + 1).round().astype(int)
    return [np.arange(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _refit_batch(model, ctx, ids, tol, max_iter, full, n_jobs):
    """Refit the groups ``ids`` together from their factors of H - H_U.

    Every iteration is one batched gradient evaluation of all active trial
    points (two GEMMs over X, no objective); each group steps as
    `_QuasiNewton` says. A group leaves the batch when it is certified, and
    is finished alone by `_refit_group` (exact Hessians) when its step
    contracts the gradient too little.
    """
    obj = ctx.objective
    out = [None] * len(ids)
    setups = {}
    for j, g in enumerate(ids):
        if ctx.C.indptr[g] == ctx.C.indptr[g + 1]:
            out[j] = _empty_result(model, ctx)
        else:
            setups[j] = _setup_group(model, ctx, g, tol, full)
    active = [j for j in setups if setups[j][4] is not None]
    stragglers = [(j, None, 0) for j in setups if setups[j][4] is None]

    grads = _start_gradients(ctx, full, ids[active]) if active else []
    qn = {j: _QuasiNewton(obj, setups[j], ctx.theta.copy(), grads[k])
          for k, j in enumerate(active)}
    while active:
        # 1. Certified groups leave; the rest take one step each.
        still = []
        for j in active:
            state = qn[j].state(max_iter)
            if state == "alone":
                stragglers.append((j, qn[j].theta, qn[j].n_iter))
            elif state != "step":
                out[j] = _finish(ctx, setups[j], qn[j].theta, qn[j].grad_norm,
                                 qn[j].n_iter, state == "certified")
            else:
                still.append(j)
        if not still:
            break
        g_t = _batch_grad(ctx, ids, still, {j: qn[j].trial() for j in still})

        # 2. Keep the groups whose step contracted the gradient enough.
        active = []
        for j in still:
            if qn[j].update(g_t[j]):
                active.append(j)
            else:
                stragglers.append((j, qn[j].theta, qn[j].n_iter))

    def finish_alone(item):
        j, theta0, done = item
        return j, _refit_group(model, ctx, ids[j], tol, max_iter, full,
                               theta0=theta0, n_done=done, setup=setups[j])

    if stragglers:
        workers = max(1, min(n_jobs, len(stragglers)))
        with _config.blas_threads_for(workers), \
                ThreadPoolExecutor(max_workers=workers) as pool:
            for j, res in pool.map(finish_alone, stragglers):
                out[j] = res
    return out


class _QuasiNewton:
    """One refit's quasi-Newton iteration on the factor of H - H_U.

    Steps solve with the L-BFGS matrix whose initial matrix is L L^T (the
    factor of H - H_U at theta_hat) and whose pairs are the last
    ``MEMORY`` steps and gradient changes, which correct it for the
    curvature that changes along the way (about a quarter fewer passes over
    X than the fixed factor). A step is taken when it shrinks the gradient
    norm by the factor ``contraction`` (1/2: a fresh Hessian costs more
    passes over X than a few slower steps) or meets the target. F is
    strongly convex, so ||theta - theta*|| <= ||grad F|| / mu, and a
    geometric decrease of the gradient converges by itself; the objective
    (a log1p per row) is never needed. A step that contracts less hands the
    refit to the exact path, `_newton.minimize` (fresh Hessians, Armijo line
    search), from the trial point if the gradient decreased at all and from
    the current one otherwise.
    """

    MEMORY = 5

    def __init__(self, obj, setup, theta, grad):
        self.obj, self.L, self.tol_abs = obj, setup[4], setup[3]
        self.theta, self.grad = theta, grad
        self.grad_norm = float(np.linalg.norm(grad))
        self.pairs, self.n_iter, self._trial = [], 0, None
        # A wide model's factorisation costs even more passes (as in
        # `_newton.minimize`), so a slower contraction is still worth keeping.
        p = obj.n_params
        self.contraction = 0.5 if p ** 2 < 60 * obj.n_samples * obj.n_logits \
            else 0.6

    def state(self, max_iter):
        """"certified", "max_iter", "alone" (the exact path finishes it) or
        "step"."""
        if self.grad_norm <= self.tol_abs:
            if _newton.settled(self.L, self.grad, self.theta):
                return "certified"
            # The gradient test passed on a plateau: the exact path (fresh
            # Hessians) finishes it, with its own certificate.
            return "alone"
        if self.n_iter >= max_iter:
            return "max_iter"
        return "step"

    def trial(self):
        self._trial = self.obj.centre(self.theta - self._direction(self.grad))
        return self._trial

    def update(self, g_trial):
        """Take the trial point or not; False sends the refit to the exact
        path."""
        self.n_iter += 1
        gn_t = float(np.linalg.norm(g_trial))
        decreased = bool(np.isfinite(gn_t)) and gn_t < self.grad_norm
        keep = decreased and (gn_t <= self.tol_abs
                              or gn_t <= self.contraction * self.grad_norm)
        if keep:
            self._remember(self._trial - self.theta, g_trial - self.grad)
        if decreased:
            self.theta, self.grad, self.grad_norm = self._trial, g_trial, gn_t
        return keep

    def _remember(self, step, dgrad):
        # F is convex, so step . dgrad >= 0; a pair without positive
        # curvature in floating point carries no information and would break
        # the recursion's positive definiteness.
        sy = float(step @ dgrad)
        if sy > 1e-12 * float(np.linalg.norm(step) * np.linalg.norm(dgrad)):
            self.pairs.append((step, dgrad, 1.0 / sy))
            if len(self.pairs) > self.MEMORY:
                self.pairs.pop(0)

    def _direction(self, g):
        # The two-loop recursion with (L L^T)^-1 as the initial inverse;
        # without pairs, the fixed-factor Newton step.
        q = np.array(g, dtype=np.float64)
        alphas = []
        for s_k, y_k, rho in reversed(self.pairs):
            a = rho * float(s_k @ q)
            alphas.append(a)
            q -= a * y_k
        r = self.obj.centre(_newton.solve(self.L, q))
        for (s_k, y_k, rho), a in zip(self.pairs, reversed(alphas)):
            r += (a - rho * float(y_k @ r)) * s_k
        return r


def _finish(ctx, setup, theta, gn, n_iter, converged):
    return (theta, None, gn, n_iter, setup[3], converged)


def _batch_grad(ctx, ids, members, theta):
    """grad F for the groups ``ids[members]`` at ``theta[member]``."""
    obj = ctx.objective
    if not members:
        return {}
    sub = ctx.C[ids[members]]
    Th = np.ascontiguousarray([theta[j] for j in members])
    B = len(members)
    Z = np.empty((obj.n_samples, B))
    G = np.empty((B, obj.n_features + 1))
    F = np.empty(B)
    _loss.binary_objgrad_batch(
        obj.X, obj.y, ctx.s, Th, sub.indptr.astype(np.int32),
        sub.indices.astype(np.int32), np.ascontiguousarray(sub.data),
        obj.l2_reg, Z, G, F, False,
    )
    return {j: G[k] for k, j in enumerate(members)}


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

    # The groups' own rows at their new parameters, all groups at once:
    # self-loss sum_U w_i (l_i(theta_-U) - l_i(theta_hat)) and self-margin.
    Z = obj.group_dots(ctx.W, thetas)
    rows = ctx.W.indices
    entry_group = np.repeat(np.arange(G), np.diff(ctx.W.indptr))
    loss_new = np.empty(rows.size)
    if obj.binary:
        _loss.binary_pointwise(np.ascontiguousarray(Z[:, 0]), obj.y[rows],
                               loss_new, np.empty(rows.size),
                               np.empty(rows.size))
    else:
        _loss.multinomial_pointwise(Z, obj.y[rows], loss_new, np.empty_like(Z))
    self_loss = np.bincount(entry_group, minlength=G, weights=ctx.W.data * (
        loss_new - ctx.loss[rows]))
    self_margin = None
    if obj.binary:
        sign = 2 * obj.y - 1
        z_old = obj.logits(ctx.theta)[rows]
        per_entry = ctx.W.data * sign[rows] * (Z[:, 0] - z_old)
        self_margin = np.bincount(entry_group, weights=per_entry, minlength=G)

    return GroupEffects(
        method="retrain",
        params=to_public(dtheta, obj.n_logits, obj.n_features),
        self_margin=self_margin,
        param_norm_h=np.sqrt(np.maximum(0.0, np.einsum(
            "gp,gp->g", dtheta, dtheta @ model._hessian_reg))),
        self_loss=self_loss,
        test_loss=test_loss,
        test_margin=test_margin,
        group_weight=group_weight(ctx.W),
        grad_norm=np.array([r[2] for r in results]),
        grad_tol=np.array([r[4] for r in results]),
        n_iter=np.array([r[3] for r in results], dtype=np.int64),
        converged=np.array([r[5] for r in results], dtype=bool),
    )
