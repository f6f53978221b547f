"""Choosing l2_reg by cross-validation on held-out log-loss.

The grid is on lam / n (the penalty per training example), the scale on which
a good value barely moves as n grows; folds are shuffled with a seed.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _validation
from ._model import fit

DEFAULT_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def cross_validate_l2(X, y, grid=DEFAULT_GRID, *, n_folds=3, seed=0):
    """Pick l2_reg = n * best(lam/n) by K-fold mean held-out log-loss.

    Parameters
    ----------
    X, y : training data
    grid : sequence of float
        Candidate values of lam / n (all > 0).
    n_folds : int, default 3
    seed : int, default 0
        Seed of the fold shuffle.

    Returns
    -------
    l2_reg : float
        The chosen lam for the full training set.
    scores : dict
        ``{"grid": [...], "mean_logloss": [...], "best": lam_over_n}``.
    """
    X = _validation.check_X(X)
    y = _validation.check_labels(y, n_samples=X.shape[0])
    n_folds = _validation.check_positive_int(n_folds, "n_folds", minimum=2)
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or np.any(~np.isfinite(grid)) or np.any(
        grid <= 0
    ):
        raise ValueError("grid must be a non-empty list of finite values > 0")
    n = X.shape[0]
    if n < 2 * n_folds:
        raise ValueError(f"n_folds={n_folds} is too many for {n} rows")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), n_folds)

    # From the strongest penalty down, each fold's fit warm-started at the
    # previous value's; held-out losses need ~6 digits, not round-off.
    order = np.argsort(-grid, kind="stable")
    warm = [None] * n_folds
    mean_loss = [0.0] * grid.size
    for gi in order:
        losses = []
        for k in range(n_folds):
            test = folds[k]
            train = np.concatenate([folds[j] for j in range(n_folds) if j != k])
            if len(np.unique(y[train])) < len(np.unique(y)):
                raise ValueError("a fold's training part misses a class; "
                                 "use fewer folds")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = fit(X[train], y[train], grid[gi] * train.size, tol=1e-9,
                        init=warm[k])
            warm[k] = m
            known = np.isin(y[test], m.classes_)
            losses.append(float(np.mean(m.loss(X[test][known], y[test][known]))))
        mean_loss[gi] = float(np.mean(losses))
    best_i = int(np.argmin(mean_loss))
    best = float(grid[best_i])
    if grid.size > 1 and grid[best_i] in (grid.min(), grid.max()):
        warnings.warn(
            f"the best l2_reg / n ({best:g}) is at the edge of the grid "
            f"[{grid.min():g}, {grid.max():g}]; a value beyond it may be "
            f"better: extend the grid",
            UserWarning,
            stacklevel=2,
        )
    return best * n, {"grid": grid.tolist(), "mean_logloss": mean_loss,
                      "best": best}
