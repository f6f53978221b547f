"""Newton's method with a lazily refreshed Cholesky factor: the driver of
`_linalg`, shared by `fit` (from a cold start) and `retrain` (warm-started at
theta_hat with the factor of H - H_U).

Each iteration solves L L^T step = -grad with the current factor and takes
the longest step 2^-j (j = 0, 1, ...) that satisfies Armijo's condition. The
factor is kept while it contracts the gradient norm at least fourfold per step
(then one step costs one gradient pass) and is rebuilt at the current iterate
otherwise, so the method is Newton's where Newton's is needed and a cheap
fixed-matrix iteration where the old matrix is good enough.

Stopping is on ||grad F|| <= tol * scale, with scale the sum of the
gradient's absolute terms: a gradient cannot be evaluated more accurately than
a few ulps of that, so tol ~ 1e-12 means "at round-off level". The scale
bounds every |dl/dz| by 1, so on a plateau where every point is classified
with a huge margin (separable data, tiny l2_reg) the gradient can pass it far
from the optimum; a fit is therefore certified only when, in addition, the
Newton step from the current factor is below ``STEP_RTOL`` of ||theta||: the
parameters themselves have stopped moving.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _linalg

_EPS = np.finfo(np.float64).eps
STEP_RTOL = 1e-9


class ConvergenceWarning(UserWarning):
    """A fit or refit stopped before its gradient norm reached the target."""


class SingularHessianError(ValueError):
    """The (regularised) Hessian is not numerically positive definite."""


def factor(H, what="the Hessian"):
    """Cholesky factor of a symmetric positive-definite matrix, or a clear error."""
    L = np.array(H, dtype=np.float64, order="C", copy=True)
    if not np.all(np.isfinite(L)):
        raise SingularHessianError(f"{what} has non-finite entries")
    info = _linalg.cholesky(L)
    if info > 0:
        raise SingularHessianError(
            f"{what} is not numerically positive definite (the Cholesky "
            f"factorisation failed at leading minor {info} of {L.shape[0]}). "
            f"The problem is too ill-conditioned at this regularisation: "
            f"increase l2_reg."
        )
    if info < 0:  # an argument error inside LAPACK would be our bug
        raise RuntimeError(f"dpotrf rejected argument {-info}")
    return L


def settled(L, g, theta):
    """Whether the Newton step -L^-T L^-1 g is negligible against theta."""
    step = solve(L, g)
    return bool(np.linalg.norm(step) <= STEP_RTOL * max(
        1.0, float(np.linalg.norm(theta))))


def solve(L, B):
    """Solve (L L^T) x = b for each row b of B (or a single vector).

    ``L`` may also be an object with a ``solve`` method (a Woodbury solver).
    """
    if hasattr(L, "solve"):
        return L.solve(B)
    B = np.asarray(B, dtype=np.float64)
    single = B.ndim == 1
    X = np.array(B.reshape(1, -1) if single else B, order="C", copy=True)
    info = _linalg.cho_solve(L, X)
    if info != 0:
        raise RuntimeError(f"dpotrs rejected argument {-info}")
    return X[0] if single else X


@dataclass
class NewtonResult:
    theta: np.ndarray
    objective: float
    grad_norm: float
    tol_abs: float
    n_iter: int
    n_factorizations: int
    converged: bool
    n_evaluations: int = 0  # objective/gradient evaluations (line-search trials)


def minimize(objective, s, theta0, *, tol_abs, max_iter, hessian_factor=None,
             work=None):
    """Minimise F(.; s) from theta0 (internal layout).

    Parameters
    ----------
    objective : Objective
    s : ndarray of shape (n_samples,)
        Per-example weights.
    theta0 : ndarray of shape (p,)
        Starting point.
    tol_abs : float
        Stop when ||grad F|| <= tol_abs.
    max_iter : int
        Newton steps (accepted or not) before giving up.
    hessian_factor : ndarray of shape (p, p), optional
        A Cholesky factor of an approximation to the Hessian at theta0;
        without it the first step assembles and factors the exact one.
    work : ndarray, optional
        A gradient work buffer from ``objective.workspace()``.
    """
    work = objective.workspace() if work is None else work
    theta = objective.centre(np.array(theta0, dtype=np.float64))
    f, g = objective.objgrad(theta, s, work)
    gn = float(np.linalg.norm(g))
    L, fresh = hessian_factor, False
    n_iter = n_fact = 0
    n_eval = 1
    col, s_total = objective.abs_col_sums(s), float(np.sum(s))
    p = objective.n_params
    keep_ratio = 0.25 if p ** 2 < 60 * objective.n_samples * objective.n_logits \
        else 0.6

    L_last, done, last_step, progress = L, False, np.inf, True
    damped = False  # whether L_last had to be shifted to be factored
    while n_iter < max_iter:
        if gn <= tol_abs:
            # The gradient test passed; certify only if the parameters have
            # stopped moving too (see the module docstring).
            if L_last is None:
                L_last, damped = _exact_factor(objective, theta, s)
                n_fact += 1
            step_norm = float(np.linalg.norm(solve(L_last, g)))
            if not damped and step_norm <= STEP_RTOL * max(
                    1.0, float(np.linalg.norm(theta))):
                done = True
                break
            if step_norm > 0.5 * last_step and not progress:
                # Exact Newton steps neither shrink nor lower F beyond its
                # rounding: the parameters are not determined more finely
                # than this in floating point.
                break
            last_step = step_norm
            L = None
        n_iter += 1
        if L is None:
            (L, damped), fresh = _exact_factor(objective, theta, s), True
            n_fact += 1
            L_last = L

        # 1. Direction from the current factor, kept off the flat direction.
        step = objective.centre(-solve(L, g))
        slope = float(g @ step)

        # 2. Backtracking. Near the optimum the change of F drowns in the
        #    rounding of its n-term sum (~ sqrt(n) eps |F|); there the
        #    gradient norm decides instead.
        noise = 8.0 * np.sqrt(objective.n_samples) * _EPS * (
            max(1.0, abs(f)) + _logit_scale(theta, col, s_total, objective))
        accepted, t = False, 1.0
        for _ in range(60):
            trial = theta + t * step
            f_new, g_new = objective.objgrad(trial, s, work)
            n_eval += 1
            gn_new = float(np.linalg.norm(g_new))
            if np.isfinite(f_new) and (
                f_new <= f + 1e-4 * t * slope
                or (f_new - f <= noise and gn_new < gn)
            ):
                accepted = True
                break
            if not fresh:
                break
            t *= 0.5
        if not accepted:
            if fresh:
                break  # no progress even with the exact Hessian: a floor
            L = None
            continue

        # 3. Keep the factor only while it contracts the gradient well
        #    enough for its cost: a wide model's factorisation costs many
        #    gradient passes, so slower contraction is still a bargain.
        ratio = gn_new / gn if gn > 0 else 0.0
        # Real progress: Armijo's decrease itself, not the round-off
        # allowance (which is how a rounding floor gets accepted).
        progress = bool(f_new < f and f_new <= f + 1e-4 * t * slope)
        theta, f, g, gn = objective.centre(trial), f_new, g_new, gn_new
        if ratio > keep_ratio:
            L = None
        fresh = False

    if not done and gn <= tol_abs and n_iter >= max_iter:
        if L_last is None:
            L_last, damped = _exact_factor(objective, theta, s)
        done = not damped and settled(L_last, g, theta)
    return NewtonResult(theta, f, gn, tol_abs, n_iter, n_fact, done, n_eval)


def _logit_scale(theta, col, s_total, objective):
    # An upper bound on sum_i s_i |z_i|: each loss softplus(z) - y z is
    # computed with an error of a few ulps of |z|, which can dwarf the loss
    # itself when logits are large and cancel.
    th = np.abs(theta).reshape(objective.n_logits, objective.n_features + 1)
    return float(np.sum(th[:, :-1] @ col) + s_total * np.sum(th[:, -1]))


def _exact_factor(objective, theta, s):
    """Factor of the Hessian at theta, and whether it had to be shifted.

    Where the exact Hessian is not numerically positive definite (every
    point saturated, l2_reg tiny) the step is taken with H + mu I, mu the
    smallest of 1e-14, 1e-13, ... times its largest diagonal entry that can
    be factored: a descent direction still, but no certificate — a point is
    certified only with an unshifted factor.
    """
    H = hessian_at(objective, theta, s)
    try:
        return factor(H), False
    except SingularHessianError as exc:
        first = exc
    scale = max(1.0, float(np.max(np.abs(np.diag(H)))))
    for k in range(-14, -3):
        try:
            return factor(H + (10.0 ** k * scale) * np.eye(H.shape[0])), True
        except SingularHessianError:
            continue
    raise first


def hessian_at(objective, theta, s):
    """Regularised Hessian of F(.; s) at theta, assembled over rows with s > 0."""
    _, _, curv = objective.pointwise(theta)
    rows = np.flatnonzero(s > 0)
    H = objective.loss_hessian(curv, rows, s[rows])
    return objective.regularised(H)


def warn_not_converged(what, result, remedy):
    warnings.warn(
        f"{what} did not converge: ||grad F|| = {result.grad_norm:.3e} after "
        f"{result.n_iter} Newton steps ({result.n_evaluations} line-search "
        f"evaluations, {result.n_factorizations} factorisations), target "
        f"{result.tol_abs:.3e}. {remedy}",
        ConvergenceWarning,
        stacklevel=3,
    )
