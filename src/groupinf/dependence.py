"""A fitted model's dependence on a feature, as a differentiable function of
theta, so that group influence can trace it back to the training data.

Feature-importance methods explain a *fixed* model: perturb feature k on a
test set and measure how far the loss or the predictions move. Here the
perturbed test set is drawn once (seeded) and kept, which makes that measure
a smooth function of the parameters, one for each ``metric``::

    "loss":        D(theta) = mean_rt l(y_t, x~_rt; theta) - mean_t l(y_t, x_t; theta)
    "prediction":  D(theta) = mean_rt 1/2 ||p(x~_rt; theta) - p(x_t; theta)||^2

with x~_rt the test point t with feature k's columns replaced in repeat
r = 1..R. For a binary model the prediction metric is (p~_1 - p_1)^2, the
squared change of the positive-class probability. ``kind`` picks the
replacement:

- ``"permutation"``: the rows of the feature's block are permuted across the
  test set (the marginal distribution is kept exactly);
- ``"randomize"``: each row's block is drawn uniformly from the distinct
  values (rows of the block) seen in the test set, ignoring how frequent they
  are (for a one-hot group: a uniformly random level).

A feature is a column, or a group of columns such as the one-hot columns
``sex=Female``, ``sex=Male`` of an attribute, which are perturbed together so
that every row stays a valid one-hot code.

The first-order change of D when a group U is removed is
``grad D(theta_hat)^T d_theta`` with d_theta from `groupinf.influence`; the
actual change is ``D(theta_hat + d_theta_actual) - D(theta_hat)`` with
d_theta from `groupinf.retrain`. :func:`point_effects` gives the first-order
change for every single training point at the cost of one solve.

``groupinf.dependence`` is the function :func:`dependence`; the module's
other names come with ``from groupinf.dependence import ...``.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, logsumexp

from . import _newton
from ._context import prepare
from ._objective import from_public

KINDS = ("permutation", "randomize")
METRICS = ("loss", "prediction")


class Dependence:
    """The dependence D(theta) of a model on one feature (see the module).

    Attributes
    ----------
    feature : str
        A label for the feature (its name, or ``"x[j]"`` for indices).
    columns : ndarray of int64
        The columns of X that are perturbed together.
    kind, metric : str
    seed, n_repeats : int
    value : float
        D(theta_hat).
    gradient : ndarray of shape (n_params,)
        grad D(theta_hat) in the public layout ``[coef.ravel(), intercept]``.
    params : ndarray of shape (n_params,)
        theta_hat, public layout.
    X_perturbed : ndarray or CSR matrix of shape (n_repeats * n_test, n_features)
        The perturbed copies of the test set, repeat after repeat.
    """

    def __init__(self, model, X_test, codes, X_perturbed, columns, feature,
                 kind, metric, seed, n_repeats):
        self.feature = feature
        self.columns = columns
        self.kind, self.metric = kind, metric
        self.seed, self.n_repeats = seed, n_repeats
        self.binary = model.n_classes == 2
        self.n_logits = 1 if self.binary else model.n_classes
        self.n_features = model.n_features_in_
        self.params = model.params_.copy()
        self._X, self._codes = X_test, codes
        self._Xp = self.X_perturbed = X_perturbed
        self._codes_p = np.tile(codes, n_repeats)
        self.value = float(self.evaluate(self.params))
        self.gradient = self.gradient_at(self.params)

    def __repr__(self):
        return (f"Dependence(feature={self.feature!r}, kind={self.kind!r}, "
                f"metric={self.metric!r}, value={self.value:.6g})")

    # -- evaluation ------------------------------------------------------------

    def evaluate(self, params):
        """D at parameters of shape (n_params,) (a float) or (G, n_params)."""
        P = self._check_params(params)
        Z = self._logits(self._X, P)  # (T, G, K')
        Zp = self._logits(self._Xp, P)  # (R T, G, K')
        if self.metric == "loss":
            base = _losses(Z, self._codes).mean(axis=0)
            return self._shape(_losses(Zp, self._codes_p).mean(axis=0) - base,
                               params)
        diff = _probabilities(Zp) - np.tile(_probabilities(Z), (self.n_repeats,
                                                                1, 1))
        # 1/2 ||diff||^2; for binary models the two classes' changes are
        # equal and opposite, so this is (p~_1 - p_1)^2.
        sq = 0.5 * np.sum(diff * diff, axis=2)
        return self._shape(sq.mean(axis=0), params)

    def change(self, delta, linear=False):
        """New minus old D for parameter changes delta, shape (G, n_params).

        ``linear=True`` gives the first-order value ``grad D^T delta``;
        otherwise D is evaluated at ``theta_hat + delta``.
        """
        delta = np.asarray(delta, dtype=np.float64)
        if delta.ndim != 2 or delta.shape[1] != self.params.size:
            raise ValueError(
                f"delta must have shape (n_groups, {self.params.size}), got "
                f"{delta.shape}"
            )
        if linear:
            return delta @ self.gradient
        return self.evaluate(self.params[None, :] + delta) - self.value

    def gradient_at(self, params):
        """grad D at parameters of shape (n_params,), public layout."""
        P = self._check_params(params)
        if P.shape[0] != 1:
            raise ValueError("gradient_at takes one parameter vector")
        Z = self._logits(self._X, P)
        Zp = self._logits(self._Xp, P)
        m = Zp.shape[0]

        # 1. d D / d logits for every perturbed and every original row.
        if self.metric == "loss":
            dzp = _dloss(Zp[:, 0, :], self._codes_p) / m
            dz = -_dloss(Z[:, 0, :], self._codes) / Z.shape[0]
        else:
            pr, prp = _probabilities(Z), _probabilities(Zp)
            diff = prp[:, 0, :] - np.tile(pr[:, 0, :], (self.n_repeats, 1))
            if self.binary:
                s = prp[:, 0, 1]
                dzp = (2.0 * diff[:, 1] * s * (1 - s))[:, None] / m
                s0 = np.tile(pr[:, 0, 1], self.n_repeats)
                back = -(2.0 * diff[:, 1] * s0 * (1 - s0))[:, None] / m
            else:
                # 1/2 ||diff||^2 through the softmax Jacobian diag(p) - p p^T.
                q = prp[:, 0, :]
                dzp = (q * diff - q * np.sum(q * diff, axis=1, keepdims=True)) / m
                q0 = np.tile(pr[:, 0, :], (self.n_repeats, 1))
                back = -(q0 * diff - q0 * np.sum(q0 * diff, axis=1,
                                                 keepdims=True)) / m
            # Each original row appears once per repeat.
            dz = back.reshape(self.n_repeats, -1, self.n_logits).sum(axis=0)

        # 2. Chain rule through z = X coef^T + intercept.
        coef = _xt_dot(self._Xp, dzp) + _xt_dot(self._X, dz)  # (d, K')
        intercept = dzp.sum(axis=0) + dz.sum(axis=0)
        return np.concatenate([coef.T.ravel(), intercept])

    # -- helpers ---------------------------------------------------------------

    def _check_params(self, params):
        P = np.asarray(params, dtype=np.float64)
        P2 = P.reshape(1, -1) if P.ndim == 1 else P
        if P2.ndim != 2 or P2.shape[1] != self.params.size:
            raise ValueError(
                f"params must have shape ({self.params.size},) or (G, "
                f"{self.params.size}), got {P.shape}"
            )
        return P2

    def _shape(self, values, params):
        return float(values[0]) if np.ndim(params) == 1 else values

    def _logits(self, X, P):
        # P (G, p) public layout -> logits (rows, G, K').
        G, K, d = P.shape[0], self.n_logits, self.n_features
        W = P[:, : K * d].reshape(G * K, d)
        Z = np.asarray(X @ W.T) + P[:, K * d:].reshape(-1)
        return Z.reshape(X.shape[0], G, K)


def dependence(model, X_test, y_test, feature, *, kind="permutation",
               metric="loss", seed=0, n_repeats=1, feature_names=None):
    """The model's dependence on a feature, with its gradient in theta.

    Parameters
    ----------
    model : LogisticModel
    X_test : array-like of shape (n_test, n_features) or sparse matrix
    y_test : array-like of shape (n_test,)
    feature : int, str, or sequence of int or str
        A column index; a column name; the name of an attribute whose
        one-hot columns are called ``"<name>=<level>"`` (``"sex"`` means
        ``sex=Female`` and ``sex=Male``; ``-`` and ``_`` are the same); or
        several of these, perturbed together. Names need ``feature_names``.
    kind : {"permutation", "randomize"}
    metric : {"loss", "prediction"}
    seed : int, default 0
        Seed of the perturbation, drawn once.
    n_repeats : int, default 1
        Perturbed copies of the test set averaged over.
    feature_names : sequence of str, optional
        One name per column (e.g. ``Dataset.feature_names``).

    Returns
    -------
    Dependence
        ``value`` D(theta_hat), ``gradient`` (n_params,), and ``evaluate`` /
        ``change`` to re-measure D at other parameters.

    Raises
    ------
    ValueError
        For an unknown feature name, an index out of range, or an unknown
        ``kind`` or ``metric``; the message names the argument.
    """
    from ._model import LogisticModel

    if not isinstance(model, LogisticModel):
        raise TypeError(f"model must be a LogisticModel from groupinf.fit, got "
                        f"{type(model).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    seed = _check_int(seed, "seed", 0)
    n_repeats = _check_int(n_repeats, "n_repeats", 1)
    X, codes = model._encode(X_test, y_test, "X_test", "y_test")
    if X.shape[0] < 2:
        raise ValueError(f"X_test needs at least 2 rows to perturb a feature, "
                         f"got {X.shape[0]}")
    columns, label = resolve_feature(feature, model.n_features_in_, feature_names)
    rng = np.random.default_rng(seed)
    Xp = _stack([_perturb(X, columns, kind, rng) for _ in range(n_repeats)])
    codes = np.asarray(codes).astype(np.int64)
    return Dependence(model, X, codes, Xp, columns, label, kind, metric, seed,
                      n_repeats)


def resolve_feature(feature, n_features, feature_names=None):
    """Columns of a feature spec (see :func:`dependence`) and a label."""
    names = None if feature_names is None else [str(f) for f in feature_names]
    if names is not None and len(names) != n_features:
        raise ValueError(f"feature_names has {len(names)} names for "
                         f"{n_features} features")
    specs = ([feature] if isinstance(feature, (str, numbers.Integral))
             else list(feature) if hasattr(feature, "__iter__") else None)
    if not specs:
        raise TypeError(f"feature must be a column index, a name, or a list of "
                        f"them, got {feature!r}")
    cols, labels = [], []
    for spec in specs:
        if isinstance(spec, (bool, np.bool_)) or not isinstance(
                spec, (str, numbers.Integral)):
            raise TypeError(f"feature entries must be int or str, got {spec!r}")
        if isinstance(spec, str):
            cols.extend(_columns_by_name(spec, names))
            labels.append(spec)
        else:
            j = int(spec)
            if not 0 <= j < n_features:
                raise ValueError(f"feature index {j} is out of range for "
                                 f"{n_features} features")
            cols.append(j)
            labels.append(names[j] if names is not None else f"x[{j}]")
    columns = np.unique(np.asarray(cols, dtype=np.int64))
    return columns, "+".join(labels)


def _columns_by_name(name, names):
    if names is None:
        raise ValueError(f"feature {name!r} is a name, but no feature_names were "
                         f"given; pass feature_names or a column index")
    if name in names:
        return [names.index(name)]
    key = name.replace("-", "_")
    hits = [j for j, f in enumerate(names)
            if f.replace("-", "_").startswith(key + "=")]
    if hits:
        return hits
    bases = sorted({f.split("=", 1)[0] for f in names})
    near = [b for b in bases if key.lower() in b.replace("-", "_").lower()][:5]
    hint = (f"; did you mean {near}?" if near else
            f"; attributes and columns include {bases[:8]}")
    raise ValueError(f"feature {name!r} is neither a column name nor an "
                     f"attribute with one-hot columns '{name}=...'{hint}")


def _check_int(v, name, minimum):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


# ---------------------------------------------------------------------------
# Perturbation
# ---------------------------------------------------------------------------


def _perturb(X, columns, kind, rng):
    """X with the block X[:, columns] replaced row-wise (one draw)."""
    T = X.shape[0]
    block = X[:, columns]
    if kind == "permutation":
        rows = rng.permutation(T)
        new = block[rows]
    else:
        dense = block.toarray() if sp.issparse(block) else np.asarray(block)
        values = np.unique(dense, axis=0)
        new = values[rng.integers(0, values.shape[0], size=T)]
    if not sp.issparse(X):
        out = np.array(X, copy=True)
        out[:, columns] = new.toarray() if sp.issparse(new) else new
        return out
    # Sparse: subtract the old block and add the new one, each embedded in
    # the full width by a (k, d) selection matrix.
    E = sp.csr_matrix((np.ones(columns.size), (np.arange(columns.size), columns)),
                      shape=(columns.size, X.shape[1]))
    out = X - sp.csr_matrix(block) @ E + sp.csr_matrix(new) @ E
    out = sp.csr_matrix(out)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _stack(parts):
    if sp.issparse(parts[0]):
        return sp.csr_matrix(sp.vstack(parts, format="csr"))
    return np.ascontiguousarray(np.vstack(parts))


# ---------------------------------------------------------------------------
# Losses and probabilities from logits (rows, G, K')
# ---------------------------------------------------------------------------


def _losses(Z, codes):
    if Z.shape[2] == 1:
        z = Z[:, :, 0]
        return np.logaddexp(0.0, z) - codes[:, None] * z
    picked = np.take_along_axis(Z, codes[:, None, None], axis=2)[:, :, 0]
    return logsumexp(Z, axis=2) - picked


def _dloss(z, codes):
    # z (rows, K'): dl/dz per row, (rows, K').
    if z.shape[1] == 1:
        return expit(z) - codes[:, None]
    P = np.exp(z - logsumexp(z, axis=1, keepdims=True))
    P[np.arange(z.shape[0]), codes] -= 1.0
    return P


def _probabilities(Z):
    # Class probabilities (rows, G, K): for binary models [1 - s, s].
    if Z.shape[2] == 1:
        s = expit(Z[:, :, 0])
        return np.stack([1.0 - s, s], axis=2)
    return np.exp(Z - logsumexp(Z, axis=2, keepdims=True))


def _xt_dot(X, V):
    out = X.T @ V
    return np.asarray(out.toarray() if sp.issparse(out) else out)


# ---------------------------------------------------------------------------
# Per-point influence on any quantity
# ---------------------------------------------------------------------------


def point_effects(model, X, y, gradient):
    """First-order change of a quantity f when each training point is removed.

    For every training point i: ``grad f^T H^-1 (s_i grad l_i)`` (new minus
    old), with H the regularised Hessian at the fit and s_i its weight. One
    solve and one pass over X, never an (n, p) matrix.

    Parameters
    ----------
    model : LogisticModel
    X, y : the training data the model was fitted on
    gradient : array-like of shape (n_params,)
        grad f(theta_hat) in the public layout, e.g. ``Dependence.gradient``.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    ctx = prepare(model, X, y, [np.empty(0, dtype=np.int64)], None, None)
    obj = ctx.objective
    g = np.asarray(gradient, dtype=np.float64)
    if g.shape != (obj.n_params,):
        raise ValueError(f"gradient must have shape ({obj.n_params},), got "
                         f"{g.shape}")
    v = _newton.solve(model.hessian_factor_,
                      from_public(g, obj.n_logits, obj.n_features))
    Z = obj.logits(obj.centre(v)).reshape(ctx.s.size, -1)
    dl = ctx.dloss.reshape(ctx.s.size, -1)
    return ctx.s * np.sum(dl * Z, axis=1)
