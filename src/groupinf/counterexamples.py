"""Synthetic data on which first-order group influence ranks groups wrongly
while the one-step Newton prediction stays right.

First-order influence scores a group by H^-1 g_U: it ignores that removing
the group also removes its share H_U of the curvature. Newton's step
(H - H_U)^-1 g_U does not. The two disagree most when groups take away very
different shares of the curvature in the directions they move, which is what
both generators arrange:

- ``curvature``: 2-D data. Cluster A varies along axis 1 on a small scale, so
  the penalty dominates that axis and removing A's points barely changes the
  curvature there; cluster B varies along axis 2 on a large scale, so B's
  points *are* that axis's curvature and removing a share f of them amplifies
  the true effect by about 1 / (1 - f). First-order effects of A- and B-groups
  are comparable; actual ones are not.
- ``gaussian``: two Gaussian classes in many dimensions with few points per
  dimension (large leverage everywhere, different per group), with test
  points chosen, among candidates, to make the first-order and Newton
  rankings of the groups disagree most.

Each returns a :class:`groupinf.datasets.Dataset` whose ``groups_train``
holds the columns the study builds groups from.
"""

from __future__ import annotations

import numpy as np

from .datasets import Dataset

NAMES = ("counterexample-curvature", "counterexample-gaussian")

# The penalty the constructions are tuned for (cross-validation would pick a
# weaker one on the curvature data and let axis 1 be data-dominated too).
L2_REG = {"counterexample-curvature": 1.0, "counterexample-gaussian": 1.0}


def load_counterexample(name, seed=0):
    """Generate a counterexample data set by name (see module docstring)."""
    if name == "counterexample-curvature":
        return curvature(seed=seed)
    if name == "counterexample-gaussian":
        return gaussian(seed=seed)
    raise ValueError(f"unknown counterexample {name!r}; choose from {NAMES}")


def curvature(n_a=400, n_pairs=400, n_signal=40, scale_a=0.15, scale_b=3.0,
              noise=0.15, seed=0):
    """2-D data whose two axes have very different curvature.

    Cluster A varies along axis 1 on a small scale (the penalty dominates
    that axis). Along axis 2 lie ``n_pairs`` pairs of identical points with
    opposite labels - their gradients cancel, their curvature adds - and
    ``n_signal`` ordinary points. The designed groups (see
    :func:`designed_groups`) are the signal points plus a growing number of
    pairs: their first-order effects are all the same, their true effects
    grow with every pair removed.

    Parameters
    ----------
    n_a, n_pairs, n_signal : int
    scale_a, scale_b : float
        Feature scales along axis 1 and axis 2.
    noise : float
        Label-flip probability of cluster A and the signal points.
    seed : int
    """
    rng = np.random.default_rng(seed)

    def labelled(t, axis, scale):
        X = np.zeros((t.size, 2))
        X[:, axis] = scale * t
        y = (t > 0).astype(np.int64)
        flip = rng.random(t.size) < noise
        y[flip] = 1 - y[flip]
        return X, y

    Xa, ya = labelled(rng.normal(size=n_a), 0, scale_a)
    Xs, ys = labelled(rng.normal(size=n_signal), 1, scale_b)
    tp = rng.normal(size=n_pairs)
    Xp = np.zeros((2 * n_pairs, 2))
    Xp[:, 1] = scale_b * np.repeat(tp, 2)
    yp = np.tile([0, 1], n_pairs)
    X = np.vstack([Xa, Xs, Xp])
    y = np.concatenate([ya, ys, yp])
    role = np.array(["A"] * n_a + ["signal"] * n_signal + ["pair"] * (2 * n_pairs))
    pair_id = np.concatenate([np.full(n_a + n_signal, -1),
                              np.repeat(np.arange(n_pairs), 2)])
    X_test = np.array([[scale_a, scale_b], [-scale_a, scale_b],
                       [scale_a, -scale_b], [2 * scale_a, 0.5 * scale_b]])
    y_test = np.array([1, 0, 1, 1])
    return Dataset(
        name="counterexample-curvature",
        X_train=X, y_train=y, X_test=X_test, y_test=y_test,
        feature_names=("x1", "x2"),
        groups_train={"role": role, "pair_id": pair_id.astype(str)},
        groups_test={"role": np.array(["test"] * len(y_test))},
        description="2-D data: axis 1 penalty-dominated, axis 2 data-dominated",
    )


def designed_groups(data, n_groups=16, seed=0):
    """The groups a counterexample is built around, as (groups, names).

    ``counterexample-curvature``: the signal points plus k label-balanced
    pairs for k spread over 1 .. n_pairs, and random subsets of cluster A of
    the same sizes. Other data sets have none.
    """
    if data.name != "counterexample-curvature":
        return [], []
    role = data.groups_train["role"]
    pair_id = data.groups_train["pair_id"].astype(np.int64)
    signal = np.flatnonzero(role == "signal")
    a_rows = np.flatnonzero(role == "A")
    n_pairs = int(pair_id.max()) + 1
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_pairs)
    groups, names = [], []
    for k in np.unique(np.geomspace(1, n_pairs, n_groups).astype(int)):
        pairs = np.flatnonzero(np.isin(pair_id, order[:k]))
        groups.append(np.sort(np.concatenate([signal, pairs])))
        names.append(f"signal+{k} pairs")
        size = min(a_rows.size - 1, groups[-1].size)
        groups.append(np.sort(rng.choice(a_rows, size, replace=False)))
        names.append(f"A random {size}")
    return groups, names


def gaussian(n=400, d=150, shift=0.6, n_candidates=60, seed=0):
    """Two Gaussian classes N(+-shift/sqrt(d) * 1, I) with d close to n.

    ``X_test`` holds ``n_candidates`` candidate test points from the same
    distribution; the study picks among them with
    :func:`adversarial_test_points` those on which first-order and Newton
    rank the groups most differently.
    """
    rng = np.random.default_rng(seed)
    mu = shift * np.ones(d) / np.sqrt(d) * 3.0
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) + np.where(y[:, None] == 1, mu, -mu)
    yt = rng.integers(0, 2, n_candidates)
    Xt = rng.normal(size=(n_candidates, d)) + np.where(yt[:, None] == 1, mu, -mu)
    halves = np.where(X[:, 0] > 0, "x0+", "x0-")
    return Dataset(
        name="counterexample-gaussian",
        X_train=X, y_train=y.astype(np.int64), X_test=Xt,
        y_test=yt.astype(np.int64),
        feature_names=tuple(f"x{j}" for j in range(d)),
        groups_train={"class": y.astype(str), "x0_sign": halves},
        groups_test={"class": yt.astype(str)},
        description=f"two Gaussians, n={n}, d={d}",
    )


def adversarial_test_points(model, X, y, groups, X_cand, y_cand, k=3):
    """Indices of the k candidate test points whose group ranking differs
    most between first-order and Newton predictions (lowest Spearman)."""
    from scipy.stats import spearmanr

    from ._influence import influence

    fo = influence(model, X, y, groups, X_cand, y_cand)
    nw = influence(model, X, y, groups, X_cand, y_cand, method="newton")
    rho = np.array([
        spearmanr(fo.test_loss[:, t], nw.test_loss[:, t])[0]
        for t in range(X_cand.shape[0])
    ])
    rho = np.nan_to_num(rho, nan=1.0)
    return np.argsort(rho, kind="stable")[:k], rho
