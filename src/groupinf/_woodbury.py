"""Solves with H - H_U through the group's block of the hat matrix.

With H_U = A^T A (A has one row per point for binary models, K rows per point
for softmax) and Y = A H^-1, M = A H^-1 A^T (the group's block of the hat
matrix)::

    (H - A^T A)^-1 b = H^-1 b + Y^T (I - M)^-1 (A H^-1 b)

Building it costs m solves with the cached factor of H (m = rows of A) and
one m x m Cholesky factorisation; afterwards each solve is one solve with H's
factor plus two products with Y. It beats a fresh p x p factorisation when
m is small against p, and it yields the group's leverage (the largest
eigenvalue of M, equal to that of H^-1/2 H_U H^-1/2) for free.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from . import _newton


class GroupSolver:
    """(H - H_U)^-1 for one group, H given by its Cholesky factor ``L``."""

    def __init__(self, L, A, group=None, leverage=True):
        self.L = L
        self.A = A
        self.Y, M = hat_block(L, A)
        m = M.shape[0]
        # The leverage costs an eigenvalue problem of order m; without it,
        # the Cholesky factorisation of I - M is the positive-definiteness
        # check.
        self.leverage = None
        if leverage:
            self.leverage = top_eigenvalue(M)
            if self.leverage >= 1 - 1e-10:
                raise not_positive_definite(group, self.leverage)
        try:
            self._cho = sla.cho_factor(np.eye(m) - M, lower=True,
                                       check_finite=False)
        except np.linalg.LinAlgError:
            raise not_positive_definite(group, float("nan")) from None

    def solve(self, B):
        """(H - H_U)^-1 b for each row b of B (or a single vector)."""
        B = np.asarray(B, dtype=np.float64)
        U = _newton.solve(self.L, B)
        C = sla.cho_solve(self._cho, (U @ self.A.T).T, check_finite=False)
        return U + (self.Y.T @ C).T


def hat_block(L, A):
    """Y = A H^-1 and the group's hat-matrix block M = A H^-1 A^T."""
    Y = _newton.solve(L, A)
    M = A @ Y.T
    return Y, 0.5 * (M + M.T)


def top_eigenvalue(M):
    m = M.shape[0]
    return float(sla.eigvalsh(M, subset_by_index=[m - 1, m - 1])[0])


def woodbury_is_cheaper(objective, n_points):
    """Whether Woodbury beats a fresh factorisation for a group of n_points.

    Woodbury: m solves with H's factor (2 m p^2) plus M = A Y^T (m^2 p), with
    m = n_points * K' curvature rows; a fresh Cholesky: p^3 / 3.
    """
    m = n_points * objective.n_logits
    p = objective.n_params
    return 2.0 * m * p * p + float(m) * m * p < p ** 3 / 3.0


def not_positive_definite(group, leverage):
    where = f"groups[{group}]: " if group is not None else ""
    lev = "is >= 1" if leverage != leverage else f"is {leverage:.6g} >= 1"
    return _newton.SingularHessianError(
        f"{where}H - H_U is not positive definite (the largest eigenvalue of "
        f"H^-1/2 H_U H^-1/2 {lev}): removing the group "
        f"leaves the quadratic model without a minimum, so the one-step "
        f"Newton prediction does not exist for it; use retrain, or raise "
        f"l2_reg."
    )


def curvature_rows(objective, curv, idx, w):
    """A with A^T A = sum_r w_r hess l_{idx[r]} (internal layout).

    Binary: one row sqrt(w h) [x, 1] per point. Softmax: K rows per point,
    from diag(p) - p p^T = B B^T with B = diag(sqrt p) - p sqrt(p)^T.
    """
    X = objective.X[idx]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    Xt = np.column_stack([X, np.ones(len(idx))])
    if objective.binary:
        return np.sqrt(w * curv[idx])[:, None] * Xt
    P = curv[idx]
    K = P.shape[1]
    sq = np.sqrt(P)
    B = sq[:, :, None] * np.eye(K)[None] - P[:, :, None] * sq[:, None, :]
    # Row (i, m) of A is sqrt(w_i) * (B_i[:, m] kron xt_i).
    A = (np.sqrt(w)[:, None, None, None] * np.transpose(B, (0, 2, 1))[:, :, :, None]
         * Xt[:, None, None, :])
    return A.reshape(len(idx) * K, K * Xt.shape[1])
