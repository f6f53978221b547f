"""Agreement between predicted and actual effects.

Spearman's rho is the primary measure (influence is mostly used to rank
groups); Pearson's r, Kendall's tau, the least-squares slope of predicted on
actual through the origin (< 1 means influence underestimates; both effects
are exactly zero for an empty group, so the line is not given an intercept)
and the median relative error complete the picture.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def agreement(predicted, actual):
    """Correlations and slope between two effect vectors of equal length.

    Returns
    -------
    dict with keys spearman, pearson, kendall, slope, median_rel_error, n.
    A statistic that is undefined (fewer than 3 values, or a constant
    vector) is NaN and is reported as such, never silently 0.
    """
    p = np.asarray(predicted, dtype=np.float64).ravel()
    a = np.asarray(actual, dtype=np.float64).ravel()
    if p.shape != a.shape:
        raise ValueError(
            f"predicted and actual must have the same length, got {p.size} "
            f"and {a.size}"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(a))):
        raise ValueError("predicted and actual must be finite")
    out = {"n": int(p.size)}
    defined = p.size >= 3 and np.ptp(p) > 0 and np.ptp(a) > 0
    nan = float("nan")
    out["spearman"] = float(stats.spearmanr(p, a)[0]) if defined else nan
    out["pearson"] = float(stats.pearsonr(p, a)[0]) if defined else nan
    out["kendall"] = float(stats.kendalltau(p, a)[0]) if defined else nan
    denom = float(a @ a)
    out["slope"] = float(p @ a) / denom if denom > 0 else nan
    nz = a != 0
    out["median_rel_error"] = (
        float(np.median(np.abs(p[nz] - a[nz]) / np.abs(a[nz]))) if nz.any() else nan
    )
    return out
