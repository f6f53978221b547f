"""`groupinf.influence`: predicted effects of removing groups.

For a group U with removed weights w_i = s_i * c_Ui, at the fit theta_hat
(H the regularised Hessian of the full objective, all sums over U)::

    g_U   = sum w_i grad l_i          H_U = sum w_i hess l_i

    first-order           d_theta = H^-1 g_U
    newton                d_theta = (H - H_U)^-1 g_U
    second-order          d_theta = H^-1 g_U + H^-1 H_U H^-1 g_U
    basu-second-order     d_theta = [(1 - 2q) H^-1 g_U + H^-1 H_U H^-1 g_U]
                                    / (1 - q)^2,   q = (removed weight) / n_w

The last is the second-order group influence of Basu, You & Feizi (2020),
stated for a mean objective; its (1 - q) factors come from renormalising that
mean after the removal, so it approximates a slightly different change than
the sum objective here (whose penalty does not grow relative to the data
when rows go). It is offered for comparison with peers.

Second-order is the first two terms of the Neumann series of Newton's step.
Quantities: d_f = grad f(theta_hat)^T d_theta (test loss, test margin,
self-loss, self-margin); with ``plugin=True`` the true f is evaluated at
theta_hat + d_theta instead (margins are linear in theta, so they agree).

All groups share the cached Cholesky factor of H: group gradients are one
sparse-times-dense product per logit, H_U u products two passes over the
groups' own rows, and the solves are DPOTRS calls with G right-hand sides.
Newton needs one factorisation per group: by Woodbury through the group's
block of the hat matrix when the group has fewer curvature rows than
parameters, by a fresh Cholesky of H - H_U otherwise.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg as sla
from scipy.special import logsumexp

from . import _cg, _newton
from ._context import group_rows, group_weight, prepare
from ._objective import to_public
from ._results import GroupEffects
from ._woodbury import (GroupSolver, curvature_rows, hat_block,
                        not_positive_definite, top_eigenvalue,
                        woodbury_is_cheaper)

METHODS = ("first-order", "newton", "second-order", "basu-second-order")
SOLVERS = ("cholesky", "cg")


def influence(model, X, y, groups, X_test=None, y_test=None, *,
              method="first-order", plugin=False, diagnostics=False,
              solver="cholesky", cg_tol=1e-10, cg_maxiter=None,
              on_unconverged="raise"):
    """Predict the effect of removing each group from the training data.

    Parameters
    ----------
    model : LogisticModel
        From ``groupinf.fit(X, y, ...)``.
    X, y : the training data the model was fitted on (same rows, same order)
    groups : list of index arrays or boolean masks, or sparse (G, n) matrix
        Entries of a matrix are the fraction of each point's weight removed.
    X_test, y_test : optional test points whose loss (and, for binary
        models, margin) effects are wanted.
    method : {"first-order", "newton", "second-order", "basu-second-order"}
        The prediction tier (see the module docstring).
    plugin : bool, default False
        Evaluate losses at theta_hat + d_theta instead of linearising them.
    diagnostics : bool, default False
        Also compute ``leverage_max``, the largest eigenvalue of
        H^-1/2 H_U H^-1/2 per group (always computed for ``newton`` with
        the Cholesky solver).
    solver : {"cholesky", "cg"}, default "cholesky"
        ``"cholesky"`` uses the fit's cached factor of H (and, for Newton, a
        Woodbury update or a fresh factor of H - H_U). ``"cg"`` solves with
        conjugate gradients on exact Hessian-vector products (two GEMMs
        over X per iteration, Jacobi-preconditioned), never touching the
        factor: the independent route, and the one for problems where a
        p x p factor is the bottleneck.
    cg_tol : float, default 1e-10
        CG target for the true relative residual ||b - A x|| / ||b||.
    cg_maxiter : int, optional
        CG iterations per system; default 2 p within [50, 10000].
    on_unconverged : {"raise", "flag"}, default "raise"
        What a CG system that misses ``cg_tol`` (or meets negative
        curvature) means: a :class:`groupinf.ConvergenceError` naming the
        worst group, its residual and iterations, or a result whose
        ``solver_converged`` is False for those groups (their numbers are
        then the last iterate and must not be used as converged ones).

    Returns
    -------
    GroupEffects
        ``params`` (G, p), ``self_loss`` (G,), ``self_margin`` (G,) and
        ``test_margin`` (G, T) for binary models, ``test_loss`` (G, T),
        ``param_norm_h`` (G,) = ||d_theta||_H, and ``leverage_max`` (G,)
        when requested. ``newton`` raises if removing a group leaves
        H - H_U not positive definite. Every result carries the solve's
        report: ``solver_residual`` (true relative residual of each group's
        linear solve(s), the larger of two for second-order tiers),
        ``solver_iterations`` (CG iterations; 0 for direct solves) and
        ``solver_converged``.
    """
    _check_method(method)
    if not isinstance(plugin, bool) or not isinstance(diagnostics, bool):
        raise TypeError("plugin and diagnostics must be True or False")
    out = predict_all(model, X, y, groups, X_test, y_test, methods=(method,),
                      plugins=(plugin,), diagnostics=diagnostics,
                      solver=solver, cg_tol=cg_tol, cg_maxiter=cg_maxiter,
                      on_unconverged=on_unconverged)
    return out[method + ("+plugin" if plugin else "")]


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def predict_all(model, X, y, groups, X_test=None, y_test=None, *,
                methods=METHODS, plugins=(False, True), diagnostics=False,
                solver="cholesky", cg_tol=1e-10, cg_maxiter=None,
                on_unconverged="raise"):
    """Several tiers at once, sharing the checks, g_U and each tier's step.

    Returns a dict keyed ``method`` or ``method+plugin``.
    """
    for m in methods:
        _check_method(m)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if on_unconverged not in ("raise", "flag"):
        raise ValueError(f"on_unconverged must be 'raise' or 'flag', got "
                         f"{on_unconverged!r}")
    cg_tol, cg_maxiter = _cg.check_options(cg_tol, cg_maxiter)
    t0 = time.perf_counter()
    ctx = prepare(model, X, y, groups, X_test, y_test)
    obj = ctx.objective
    solves = _Solves(model, ctx, solver, cg_tol, cg_maxiter, on_unconverged)

    # 1. Group gradients g_U (binary: with the margins' group gradients, in
    #    the same pass over the groups' rows) and the first-order step.
    m_grad = None
    if obj.binary:
        GU, m_grad = obj.weighted_rows_gradients(
            [ctx.dloss, 2 * obj.y - 1], ctx.W)
    else:
        GU = obj.weighted_rows_gradient(ctx.dloss, ctx.W)
    if any(m != "newton" for m in methods):
        first, first_rep = solves.full(GU)
    corr = corr_rep = None
    shared = time.perf_counter() - t0

    results = {}
    for method in methods:
        t = time.perf_counter()

        # 2. The tier's parameter change.
        leverage = None
        if method == "first-order":
            dtheta, report = first, first_rep
        elif method == "newton":
            dtheta, leverage, report = solves.newton(GU)
        else:
            if corr is None:
                corr, corr_rep = solves.full(
                    obj.group_hessian_vec(ctx.W, ctx.curv, first))
            report = first_rep.combine(corr_rep)
            if method == "second-order":
                dtheta = first + corr
            else:
                q = group_weight(ctx.W) / float(np.sum(ctx.s))
                dtheta = (((1 - 2 * q)[:, None] * first + corr)
                          / ((1 - q) ** 2)[:, None])
        if diagnostics and leverage is None:
            leverage = _leverage(model, ctx)
        norm_h = np.sqrt(np.maximum(0.0, np.einsum(
            "gp,gp->g", dtheta, dtheta @ model._hessian_reg)))
        step_time = time.perf_counter() - t

        # 3. Quantities along d_theta, linearised and/or plugged in.
        for plugin in plugins:
            t = time.perf_counter()
            fields = _quantities(model, ctx, GU, m_grad, dtheta, plugin)
            key = method + ("+plugin" if plugin else "")
            results[key] = GroupEffects(
                method=key,
                params=to_public(dtheta, obj.n_logits, obj.n_features),
                group_weight=group_weight(ctx.W),
                param_norm_h=norm_h,
                leverage_max=leverage,
                solver=solver,
                solver_iterations=report.n_iter,
                solver_residual=report.residual,
                solver_converged=report.converged,
                timings={"shared": shared, "step": step_time,
                         "quantities": time.perf_counter() - t},
                **fields,
            )
    return results


def _quantities(model, ctx, GU, m_grad, dtheta, plugin):
    obj = ctx.objective
    out = {"test_loss": None, "test_margin": None, "self_margin": None}
    binary = obj.binary

    # Self-loss (and self-margin): linear, or the true loss on the group's
    # rows at theta_hat + d_theta (one pass over the groups' rows).
    if plugin:
        z_new = obj.group_dots(ctx.W, ctx.theta[None, :] + dtheta)
        y_rows = obj.y[ctx.W.indices]
        new = _loss_from_logits(obj, z_new, y_rows)
        per_entry = ctx.W.data * (new - ctx.loss[ctx.W.indices])
        out["self_loss"] = _row_sums(ctx.W, per_entry)
    else:
        out["self_loss"] = np.einsum("gp,gp->g", dtheta, GU)
    if binary:
        # m_grad: the groups' sums of margin gradients y~_i xt_i (weighted).
        out["self_margin"] = np.einsum("gp,gp->g", dtheta, m_grad)

    if ctx.X_test is None:
        return out
    if plugin:
        th = ctx.theta[None, :] + dtheta
        Z = np.stack([obj.logits(t, ctx.X_test) for t in th])
        out["test_loss"] = _test_losses(obj, Z, ctx.y_test) - ctx.test_loss[None, :]
    else:
        grads = obj.point_gradients(ctx.test_dloss, ctx.X_test)
        out["test_loss"] = dtheta @ grads.T
    if binary:
        sign = 2 * ctx.y_test - 1
        out["test_margin"] = dtheta @ obj.point_gradients(sign, ctx.X_test).T
    return out


def _loss_from_logits(obj, Z, y):
    # Z (m, K') logits with labels y (m,): per-example loss, stable.
    if obj.binary:
        z = Z[:, 0]
        return np.logaddexp(0.0, z) - y * z
    return logsumexp(Z, axis=1) - Z[np.arange(len(y)), y]


def _test_losses(obj, Z, y_test):
    # Z (G, T) binary or (G, T, K): loss of each test point under each theta.
    G = Z.shape[0]
    flat = Z.reshape(G * Z.shape[1], -1)
    return _loss_from_logits(obj, flat, np.tile(y_test, G)).reshape(G, -1)


def _row_sums(C, per_entry):
    out = np.zeros(C.shape[0])
    np.add.at(out, np.repeat(np.arange(C.shape[0]), np.diff(C.indptr)), per_entry)
    return out


# ---------------------------------------------------------------------------
# Linear solves with H and H - H_U, and their reports
# ---------------------------------------------------------------------------


class _Report:
    """Per-group solve report: iterations, true relative residual, converged."""

    def __init__(self, n_iter, residual, converged):
        self.n_iter, self.residual, self.converged = n_iter, residual, converged

    def combine(self, other):
        return _Report(self.n_iter + other.n_iter,
                       np.maximum(self.residual, other.residual),
                       self.converged & other.converged)


class _Solves:
    """H^-1 B and (H - H_U)^-1 g_U by the cached factor or by CG."""

    def __init__(self, model, ctx, solver, tol, maxiter, on_unconverged):
        self.model, self.ctx, self.obj = model, ctx, ctx.objective
        self.solver, self.tol, self.maxiter = solver, tol, maxiter
        self.on_unconverged = on_unconverged
        self._diag = None

    # -- operators -----------------------------------------------------------

    def _h(self, V):
        # H v for centred directions (the dense regularised H when the fit
        # has it, which is cheaper than two passes over X for small p).
        if self.solver == "cholesky":
            return V @ self.model._hessian_reg
        return self.obj.centre(self.obj.hessian_vec(self.ctx.curv,
                                                    self.ctx.s, V))

    def _h_minus_hu(self, V, idx):
        return self._h(V) - self.obj.group_hessian_vec(
            self.ctx.W[idx], self.ctx.curv, V)

    def _residual(self, B, X, apply):
        bn = np.linalg.norm(B, axis=1)
        r = np.linalg.norm(B - apply(X), axis=1)
        return np.divide(r, bn, out=np.zeros_like(r), where=bn > 0)

    def _precond(self, R, idx):
        if self._diag is None:
            self._diag = self.obj.hessian_diag(self.ctx.curv, self.ctx.s)
        return self.obj.centre(R / self._diag)

    def _cg(self, B, matvec, what, remedy):
        res = _cg.cg(matvec, B, tol=self.tol, maxiter=self.maxiter,
                     precond=self._precond)
        if self.on_unconverged == "raise":
            _cg.raise_if_failed(res, what, remedy)
        return self.obj.centre(res.x), _Report(res.n_iter, res.residual,
                                                res.converged)

    # -- solves --------------------------------------------------------------

    def full(self, B):
        """H^-1 b_g for every row (centred), with its report."""
        G = B.shape[0]
        if self.solver == "cg":
            return self._cg(
                B, lambda V, idx: self._h(V), "influence (H^-1 g)",
                "The Hessian is too ill-conditioned for this budget: increase "
                "cg_maxiter, loosen cg_tol, increase l2_reg, or use "
                "solver='cholesky'.")
        X = self.obj.centre(_newton.solve(self.model.hessian_factor_, B))
        return X, self._direct_report(B, X, self._h, "H")

    def newton(self, GU):
        """(H - H_U)^-1 g_U per group, the leverage (or None), the report."""
        if self.solver == "cg":
            dtheta, rep = self._cg(
                GU, self._h_minus_hu, "one-step Newton ((H - H_U)^-1 g_U)",
                "H - H_U is too ill-conditioned (or not positive definite) "
                "for this budget: increase cg_maxiter or l2_reg, or use "
                "solver='cholesky'.")
            # A small residual certifies the step only when H - H_U is not
            # nearly singular: its error is up to the residual times
            # 1 / (1 - leverage). Such groups are flagged (or raise).
            leverage = _leverage(self.model, self.ctx)
            near = ~(1.0 - leverage >= _NEWTON_CG_MIN_GAP)
            if near.any():
                rep.converged = rep.converged & ~near
                if self.on_unconverged == "raise":
                    g = int(np.flatnonzero(near)[0])
                    raise _cg.ConvergenceError(
                        f"one-step Newton with CG: H - H_U is nearly singular "
                        f"for {int(near.sum())} group(s) (first: {g}, 1 - "
                        f"leverage = {1.0 - leverage[g]:.1e}), so a small CG "
                        f"residual does not make the step accurate. Use "
                        f"solver='cholesky' (which reports whether the step "
                        f"exists), or increase l2_reg.")
            return dtheta, leverage, rep
        dtheta, leverage = _newton_steps(self.model, self.ctx, GU)
        rep = self._direct_report(
            GU, dtheta, lambda V: self._h_minus_hu(V, np.arange(V.shape[0])),
            "H - H_U")
        return dtheta, leverage, rep

    def _direct_report(self, B, X, apply, name):
        resid = self._residual(B, X, apply)
        ok = resid <= _DIRECT_RTOL
        if self.on_unconverged == "raise" and not ok.all():
            g = int(np.argmax(resid))
            raise _cg.ConvergenceError(
                f"the Cholesky solve with {name} lost its accuracy: relative "
                f"residual {resid[g]:.3e} for group {g} (limit "
                f"{_DIRECT_RTOL:.0e}); the matrix is too ill-conditioned at "
                f"this regularisation. Increase l2_reg, or pass "
                f"on_unconverged='flag' to get the numbers flagged.")
        return _Report(np.zeros(B.shape[0], dtype=np.int64), resid, ok)


# A direct solve whose residual exceeds this has lost its digits to the
# conditioning of the matrix; it is reported as not converged.
_DIRECT_RTOL = 1e-6
# Newton by CG: groups whose H - H_U has 1 - leverage below this are flagged.
_NEWTON_CG_MIN_GAP = 1e-6


# ---------------------------------------------------------------------------
# Newton steps and the group's leverage
# ---------------------------------------------------------------------------


def _newton_steps(model, ctx, GU):
    obj = ctx.objective
    dtheta = np.zeros_like(GU)
    leverage = np.zeros(GU.shape[0])
    sizes = np.diff(ctx.W.indptr)
    single = sizes == 1 if obj.binary else np.zeros(sizes.size, dtype=bool)
    if single.any():
        sel = np.flatnonzero(single)
        dtheta[sel], leverage[sel] = _newton_single_points(model, ctx, sel)
    for g in np.flatnonzero(~single):
        idx, w = group_rows(ctx.W, g)  # W holds removed weights s_i c_Ui
        if idx.size == 0:
            continue
        if woodbury_is_cheaper(obj, idx.size):
            solver = GroupSolver(model.hessian_factor_,
                                 curvature_rows(obj, ctx.curv, idx, w), group=g)
            dtheta[g], leverage[g] = solver.solve(GU[g]), solver.leverage
        else:
            H_U = obj.loss_hessian(ctx.curv, idx, w)
            leverage[g] = _leverage_dense(model, H_U)
            try:
                Lg = _newton.factor(model._hessian_reg - H_U)
            except _newton.SingularHessianError:
                raise not_positive_definite(g, leverage[g]) from None
            dtheta[g] = _newton.solve(Lg, GU[g])
    return obj.centre(dtheta), leverage


def _newton_single_points(model, ctx, sel):
    """Newton steps of the binary one-point groups ``sel``, all at once.

    With a = sqrt(w c) xt the point's curvature row, H_U = a a^T and
    Sherman-Morrison gives (H - a a^T)^-1 g = H^-1 g + H^-1 a (a . H^-1 g)
    / (1 - h), h = a . H^-1 a the point's leverage (its 1 x 1 hat-matrix
    block): the Woodbury solve of `GroupSolver` for m = 1. Both a and g_U =
    w dl/dz xt are multiples of xt, so all groups share one batched solve
    H^-1 xt with G right-hand sides.
    """
    obj, L = ctx.objective, model.hessian_factor_
    entry = ctx.W.indptr[sel]
    rows = ctx.W.indices[entry].astype(np.int64)
    w = ctx.W.data[entry]
    Xt = curvature_rows(obj, np.ones(obj.n_samples), rows, np.ones(rows.size))
    V = _newton.solve(L, Xt)
    a_scale = np.sqrt(w * ctx.curv[rows])
    Y, U = a_scale[:, None] * V, (w * ctx.dloss[rows])[:, None] * V
    h = a_scale ** 2 * np.einsum("gp,gp->g", Xt, V)
    bad = np.flatnonzero(~(h < 1 - 1e-10))
    if bad.size:
        raise not_positive_definite(int(sel[bad[0]]), float(h[bad[0]]))
    coef = a_scale * np.einsum("gp,gp->g", Xt, U) / (1.0 - h)
    return U + Y * coef[:, None], h


def _leverage_dense(model, H_U):
    # Largest eigenvalue of L^-1 H_U L^-T with L L^T = H, the spectrum of
    # H^-1/2 H_U H^-1/2. dpotrf("L") on C-ordered memory leaves R = L^T in
    # the upper triangle.
    L = np.triu(model.hessian_factor_).T
    if H_U.shape[0] > 1000:
        return _leverage_lanczos(L, H_U)
    S = sla.solve_triangular(L, H_U, lower=True)
    S = sla.solve_triangular(L, S.T, lower=True)
    S = 0.5 * (S + S.T)
    n = S.shape[0]
    return float(sla.eigvalsh(S, subset_by_index=[n - 1, n - 1])[0])


def _leverage_lanczos(L, H_U):
    # Wide models: the top eigenvalue by Lanczos on v -> L^-1 H_U L^-T v, two
    # triangular solves and one product per step instead of O(p^3) work.
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    L = np.asfortranarray(L)  # one copy, not one per Lanczos step

    def matvec(v):
        w = sla.solve_triangular(L, np.ravel(v), lower=True, trans="T",
                                 check_finite=False)
        return sla.solve_triangular(L, H_U @ w, lower=True, check_finite=False)

    op = LinearOperator(H_U.shape, matvec=matvec, dtype=np.float64)
    v0 = np.full(H_U.shape[0], 1.0 / np.sqrt(H_U.shape[0]))
    try:
        vals = eigsh(op, k=1, which="LA", tol=1e-8, v0=v0, maxiter=2000,
                     return_eigenvectors=False)
    except ArpackNoConvergence as exc:
        raise RuntimeError(
            "the group's leverage (largest eigenvalue of H^-1/2 H_U H^-1/2) "
            "did not converge in 2000 Lanczos iterations"
        ) from exc
    return float(vals[0])


def _leverage(model, ctx):
    obj = ctx.objective
    out = np.zeros(ctx.W.shape[0])
    for g in range(out.size):
        idx, w = group_rows(ctx.W, g)  # W holds removed weights s_i c_Ui
        if idx.size == 0:
            continue
        if woodbury_is_cheaper(obj, idx.size):
            A = curvature_rows(obj, ctx.curv, idx, w)
            out[g] = top_eigenvalue(hat_block(model.hessian_factor_, A)[1])
        else:
            out[g] = _leverage_dense(model, obj.loss_hessian(ctx.curv, idx, w))
    return out
