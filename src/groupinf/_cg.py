"""Conjugate gradients for many right-hand sides at once, with honest reports.

``cg(matvec, B)`` solves A x_g = b_g for every row b_g of B, where A is
symmetric positive definite and only available through products. The G
systems run in lockstep so that one iteration applies A to all active
directions in a single call (a pair of GEMMs for the logistic Hessian, a
batched R-operator pass for an MLP); each system keeps its own step sizes
and stops on its own.

Why not ``scipy.sparse.linalg.cg``: it takes one right-hand side per call
(G calls, G times as many passes over the data), does not return the number
of iterations, and does not tell a stall from negative curvature. The
iteration here is the textbook preconditioned CG; what it adds is the
bookkeeping a user needs to trust the answer:

- the *true* relative residual ||b - A x|| / ||b|| of every returned x,
  recomputed with one final product (not the recursively updated one);
- when the recursive residual claims convergence but the true one does not
  (rounding on an ill-conditioned A), the system is restarted from its true
  residual while the iteration budget lasts;
- a direction with p^T A p <= 0 stops that system and flags
  ``negative_curvature``: A is not positive definite along it, and any
  "solution" would be garbage.

The caller decides what a non-converged system means (an error, or a flagged
result); :func:`raise_if_failed` is the error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ConvergenceError(RuntimeError):
    """An iterative solve did not reach its tolerance (or hit negative
    curvature); the message carries the numbers and the way out."""


@dataclass
class CGResult:
    """Solutions and per-system reports, each of length G.

    ``x`` (G, p); ``n_iter`` products spent on each system (restarts
    included); ``residual`` the true relative residual of ``x``;
    ``converged`` ``residual <= tol`` and no negative curvature;
    ``negative_curvature`` whether p^T A p <= 0 was met; ``tol`` and
    ``maxiter`` as used.
    """

    x: np.ndarray
    n_iter: np.ndarray
    residual: np.ndarray
    converged: np.ndarray
    negative_curvature: np.ndarray
    tol: float
    maxiter: int


def default_maxiter(p):
    """2 p (CG is exact after p steps in exact arithmetic), within [50, 10000]."""
    return int(min(max(2 * p, 50), 10_000))


def check_options(tol, maxiter, name_tol="cg_tol", name_maxiter="cg_maxiter"):
    """Validate a tolerance in (0, 1) and a positive integer budget (or None)."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating,
                                                     np.integer)):
        raise TypeError(f"{name_tol} must be a number, got {type(tol).__name__}")
    if not (np.isfinite(tol) and 0.0 < float(tol) < 1.0):
        raise ValueError(f"{name_tol} must lie in (0, 1), got {tol!r}")
    if maxiter is not None:
        if isinstance(maxiter, bool) or not isinstance(maxiter,
                                                       (int, np.integer)):
            raise TypeError(f"{name_maxiter} must be a positive integer or None, "
                            f"got {maxiter!r}")
        if maxiter < 1:
            raise ValueError(f"{name_maxiter} must be >= 1, got {maxiter}")
    return float(tol), (None if maxiter is None else int(maxiter))


def cg(matvec, B, *, tol=1e-10, maxiter=None, precond=None):
    """Preconditioned CG on every row of B.

    Parameters
    ----------
    matvec : callable (V, idx) -> A V
        ``V`` is (m, p), one direction per row, and ``idx`` the (m,) indices
        of the systems they belong to (so that each system may have its own
        operator, e.g. H - H_U for group U).
    B : ndarray of shape (G, p)
        Right-hand sides. A zero row gives x = 0, converged, in 0 iterations.
    tol : float
        Target for the relative residual ||b - A x|| / ||b||.
    maxiter : int, optional
        Products per system; default :func:`default_maxiter`.
    precond : callable (R, idx) -> M^-1 R, optional
        A symmetric positive-definite preconditioner (e.g. Jacobi).
    """
    B = np.atleast_2d(np.asarray(B, dtype=np.float64))
    G, p = B.shape
    maxiter = default_maxiter(p) if maxiter is None else int(maxiter)
    apply_m = (lambda R, idx: R.copy()) if precond is None else precond

    X = np.zeros_like(B)
    R = B.copy()
    bnorm = np.linalg.norm(B, axis=1)
    n_iter = np.zeros(G, dtype=np.int64)
    negative = np.zeros(G, dtype=bool)
    active = bnorm > 0
    if not np.all(np.isfinite(B)):
        raise ValueError("cg: the right-hand sides have non-finite entries")

    Z = apply_m(R, np.arange(G))
    P = Z.copy()
    rz = np.einsum("gp,gp->g", R, Z)

    while True:
        act = np.flatnonzero(active & (n_iter < maxiter))
        if act.size == 0:
            break
        AP = matvec(P[act], act)
        n_iter[act] += 1
        pap = np.einsum("gp,gp->g", P[act], AP)
        bad = ~(pap > 0) | ~np.isfinite(pap)
        if bad.any():
            negative[act[bad]] = True
            active[act[bad]] = False
        good = ~bad
        a, AP, pap = act[good], AP[good], pap[good]
        if a.size == 0:
            continue
        alpha = rz[a] / pap
        X[a] += alpha[:, None] * P[a]
        R[a] -= alpha[:, None] * AP

        # Systems whose recursive residual says "done": check the true one.
        rn = np.linalg.norm(R[a], axis=1)
        claim = rn <= tol * bnorm[a]
        if claim.any():
            c = a[claim]
            true_r = B[c] - matvec(X[c], c)
            n_iter[c] += 1
            ok = np.linalg.norm(true_r, axis=1) <= tol * bnorm[c]
            active[c[ok]] = False
            # Restart the others from their true residual.
            r = c[~ok]
            if r.size:
                R[r] = true_r[~ok]
                Z_r = apply_m(R[r], r)
                P[r] = Z_r
                rz[r] = np.einsum("gp,gp->g", R[r], Z_r)
            a = a[~claim]
        if a.size == 0:
            continue
        Z_a = apply_m(R[a], a)
        rz_new = np.einsum("gp,gp->g", R[a], Z_a)
        beta = rz_new / rz[a]
        P[a] = Z_a + beta[:, None] * P[a]
        rz[a] = rz_new

    # The reported residual is always the true one.
    residual = np.zeros(G)
    nz = np.flatnonzero(bnorm > 0)
    if nz.size:
        true_r = B[nz] - matvec(X[nz], nz)
        residual[nz] = np.linalg.norm(true_r, axis=1) / bnorm[nz]
    converged = (residual <= tol) & ~negative
    return CGResult(X, n_iter, residual, converged, negative, float(tol),
                    maxiter)


def raise_if_failed(result, what, remedy):
    """A :class:`ConvergenceError` naming the worst system, if any failed."""
    failed = np.flatnonzero(~result.converged)
    if failed.size == 0:
        return
    neg = np.flatnonzero(result.negative_curvature)
    if neg.size:
        g = int(neg[0])
        raise ConvergenceError(
            f"{what}: CG met negative curvature (p^T A p <= 0) for "
            f"{neg.size} of {result.x.shape[0]} systems (first: {g}, after "
            f"{result.n_iter[g]} iterations): the operator is not positive "
            f"definite there. {remedy}"
        )
    g = int(failed[np.argmax(result.residual[failed])])
    raise ConvergenceError(
        f"{what}: CG did not converge for {failed.size} of "
        f"{result.x.shape[0]} systems (worst: {g}, relative residual "
        f"{result.residual[g]:.3e} after {result.n_iter[g]} iterations, "
        f"target {result.tol:.1e}, budget {result.maxiter}). {remedy}"
    )
