"""Result objects: predicted and actual group effects with the same fields."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, fields

import numpy as np


@dataclass
class GroupEffects:
    """Effects of removing each of G groups (new minus old).

    Attributes
    ----------
    method : str
        ``"first-order"`` for influence, ``"retrain"`` for exact refits.
    params : ndarray of shape (n_groups, n_params)
        Change of theta, flattened ``[coef.ravel(), intercept]``; softmax
        intercept changes are centred.
    self_loss : ndarray of shape (n_groups,)
        Change of the group's own total (weighted) training loss.
    test_loss : ndarray of shape (n_groups, n_test) or None
        Change of each test point's loss.
    test_margin : ndarray of shape (n_groups, n_test) or None
        Change of each test point's margin y~ z (binary models only).
    group_weight : ndarray of shape (n_groups,)
        Total training weight each group removes.
    self_margin : ndarray of shape (n_groups,) or None
        Change of the group's summed (weighted) margins (binary models).
    param_norm_h : ndarray of shape (n_groups,) or None
        ||d_theta||_H = sqrt(d_theta^T H d_theta), H at the fit.
    leverage_max : ndarray of shape (n_groups,) or None
        Largest eigenvalue of H^-1/2 H_U H^-1/2 (the group's block of the hat
        matrix): first-order self-loss >= (1 - leverage_max) * Newton's.
    grad_norm, n_iter, converged : ndarray of shape (n_groups,) or None
        Refit certificates (``retrain`` only): the final ||grad F|| of each
        refit, its Newton steps, and whether it reached its target.
    grad_tol : ndarray of shape (n_groups,) or None
        The target each refit had to reach.
    solver : str or None
        How the predicted effects' linear systems were solved
        (``"cholesky"`` or ``"cg"``; ``influence`` only).
    solver_iterations, solver_residual, solver_converged : ndarray or None
        Per group (``influence`` only): CG iterations (0 for direct solves),
        the true relative residual ||b - A x|| / ||b|| of the solve(s) behind
        the group's step (the larger one when a tier needs two), and whether
        it met the solver's target.
    """

    method: str
    params: np.ndarray
    self_loss: np.ndarray
    test_loss: np.ndarray | None
    test_margin: np.ndarray | None
    group_weight: np.ndarray
    self_margin: np.ndarray | None = None
    param_norm_h: np.ndarray | None = None
    leverage_max: np.ndarray | None = None
    grad_norm: np.ndarray | None = None
    grad_tol: np.ndarray | None = None
    n_iter: np.ndarray | None = None
    converged: np.ndarray | None = None
    solver: str | None = None
    solver_iterations: np.ndarray | None = None
    solver_residual: np.ndarray | None = None
    solver_converged: np.ndarray | None = None
    timings: dict = field(default_factory=dict)

    @property
    def n_groups(self):
        return self.params.shape[0]

    @property
    def param_norm(self):
        """||delta theta||_2 per group, shape (n_groups,)."""
        return np.linalg.norm(self.params, axis=1)

    def to_frame(self):
        """A pandas DataFrame with one row per group (requires pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ImportError(
                "to_frame needs pandas: pip install 'groupinf[frames]'"
            ) from exc
        cols = {"group_weight": self.group_weight, "self_loss": self.self_loss,
                "param_norm": self.param_norm}
        for name in ("self_margin", "param_norm_h", "leverage_max"):
            if getattr(self, name) is not None:
                cols[name] = getattr(self, name)
        for name in ("test_loss", "test_margin"):
            arr = getattr(self, name)
            if arr is not None:
                for t in range(arr.shape[1]):
                    cols[f"{name}_{t}"] = arr[:, t]
        for name in ("grad_norm", "grad_tol", "n_iter", "converged",
                     "solver_iterations", "solver_residual",
                     "solver_converged"):
            arr = getattr(self, name)
            if arr is not None:
                cols[name] = arr
        return pd.DataFrame(cols)

    def arrays(self):
        """The array fields as a dict (for ``np.savez``)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                out[f.name] = v
        return out


class Progress:
    """A one-line progress bar on a terminal; silent when not a terminal."""

    def __init__(self, total, desc, enabled=None, stream=None):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = bool(enabled) and total > 0
        self.total, self.desc, self.done = total, desc, 0
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, k=1):
        self.done += k
        now = time.perf_counter()
        if not self.enabled or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        self.stream.write(
            f"\r{self.desc}: [{bar:<30}] {self.done}/{self.total} "
            f"{now - self.start:6.1f}s"
        )
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()
