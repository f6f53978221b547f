"""`groupinf.fit`: exact L2-regularised logistic regression by Newton's method.

Minimises, over coef and intercept,

    F(theta) = sum_i s_i * l(y_i, x_i; theta) + l2_reg/2 * ||coef||_F^2

with the binary logistic loss (two classes, classes_[1] positive) or the
softmax loss over all K classes (K >= 3, intercepts centred to sum to zero).
The fitted model caches the Cholesky factor of the regularised Hessian at the
optimum, which `influence` reuses for every group.
"""

from __future__ import annotations

import numpy as np

from . import _newton, _validation
from ._objective import Objective, to_public

DEFAULT_TOL = 1e-13


class LogisticModel:
    """A fitted L2-regularised logistic regression.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted distinct training labels; ``classes_[1]`` is positive (binary).
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Softmax intercepts are centred (they sum to zero).
    params_ : ndarray of shape (n_params,)
        theta flattened as ``[coef_.ravel(), intercept_]``.
    l2_reg : float
    n_iter_ : int
        Newton steps taken.
    n_evaluations_ : int
        Objective and gradient evaluations, line-search trials included.
    n_factorizations_ : int
        Hessian factorisations (the Newton matrix is refreshed lazily).
    grad_norm_ : float
        ||grad F|| at the returned parameters (the convergence certificate).
    grad_tol_ : float
        The target ``tol * scale`` the fit was asked to reach.
    converged_ : bool
    n_samples_, n_features_in_ : int
    sample_weight_ : ndarray of shape (n_samples,)
    """

    def __init__(self, objective, theta, result, classes, sample_weight, tol,
                 hessian_factor):
        self._objective = objective
        self._theta = theta
        self._tol = tol
        self.hessian_factor_ = hessian_factor
        self.classes_ = classes
        self.l2_reg = objective.l2_reg
        self.n_iter_ = result.n_iter
        self.n_evaluations_ = result.n_evaluations
        self.n_factorizations_ = result.n_factorizations
        self.grad_norm_ = result.grad_norm
        self.grad_tol_ = result.tol_abs
        self.converged_ = result.converged
        self.n_samples_ = objective.n_samples
        self.n_features_in_ = objective.n_features
        self.sample_weight_ = sample_weight

        th = theta.reshape(objective.n_logits, objective.n_features + 1)
        self.coef_ = th[:, :-1].copy()
        self.intercept_ = th[:, -1].copy()
        self.params_ = to_public(theta, objective.n_logits, objective.n_features)

    @property
    def n_classes(self):
        return len(self.classes_)

    @property
    def n_params(self):
        return self._objective.n_params

    def __repr__(self):
        return (
            f"LogisticModel(n_classes={self.n_classes}, n_features="
            f"{self.n_features_in_}, l2_reg={self.l2_reg:.6g}, n_iter="
            f"{self.n_iter_}, grad_norm={self.grad_norm_:.3e})"
        )

    # -- prediction --------------------------------------------------------

    def _check_X(self, X, name="X"):
        return _validation.check_X(X, name, n_features=self.n_features_in_)

    def decision_function(self, X):
        """Logits z, shape (n,) for binary or (n, n_classes)."""
        return self._objective.logits(self._theta, self._check_X(X))

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes)."""
        z = self.decision_function(X)
        if self._objective.binary:
            p1 = np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))),
                          np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))
            return np.column_stack([1 - p1, p1])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        z = self.decision_function(X)
        if self._objective.binary:
            return self.classes_[(z > 0).astype(int)]
        return self.classes_[np.argmax(z, axis=1)]

    def loss(self, X, y):
        """Per-example loss l(y_i, x_i; theta_hat), shape (n,) (unweighted)."""
        X, codes = self._encode(X, y)
        return self._objective.pointwise(self._theta, X, codes)[0]

    def margin(self, X, y):
        """Per-example margin y~ z with y~ = +-1 (binary models only)."""
        if not self._objective.binary:
            raise ValueError("margin is defined for binary models only")
        X, codes = self._encode(X, y)
        return (2 * codes - 1) * self._objective.logits(self._theta, X)

    def hessian(self):
        """The regularised Hessian of F at theta_hat, public layout (p, p)."""
        obj = self._objective
        _, _, curv = obj.pointwise(self._theta)
        s = self.sample_weight_
        rows = np.flatnonzero(s > 0)
        H = obj.loss_hessian(curv, rows, s[rows])
        H[np.diag_indices_from(H)] += obj.reg_diag
        perm = _public_perm(obj)
        return H[np.ix_(perm, perm)]

    def _encode(self, X, y, x_name="X", y_name="y"):
        X = self._check_X(X, x_name)
        y = _validation.check_labels(y, y_name, n_samples=X.shape[0],
                                     x_name=x_name)
        codes = _validation.encode_labels(y, self.classes_, y_name)
        if self._objective.binary:
            return X, codes.astype(np.float64)
        return X, codes


def _public_perm(obj):
    from ._objective import public_permutation

    return public_permutation(obj.n_logits, obj.n_features)


def fit(X, y, l2_reg, sample_weight=None, *, tol=DEFAULT_TOL, max_iter=100,
        init=None):
    """Fit L2-regularised logistic regression exactly.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or scipy sparse matrix
    y : array-like of shape (n_samples,)
        Two distinct labels for the binary model, three or more for softmax.
    l2_reg : float
        lam > 0 in F; scikit-learn's ``C`` is ``1 / l2_reg``.
    sample_weight : array-like of shape (n_samples,), optional
        s_i >= 0 (default 1).
    tol : float, default 1e-13
        Relative gradient tolerance: stop when ||grad F|| <= tol * scale,
        scale being the sum of the gradient's absolute terms.
    max_iter : int, default 100
        Maximum Newton steps.
    init : LogisticModel or array-like of shape (n_params,), optional
        Starting parameters (public layout), e.g. a fit at a nearby l2_reg;
        the default starts from the intercept-only optimum.

    Returns
    -------
    LogisticModel

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` is reached or no step makes progress before the
        gradient norm reaches its target; the message gives both numbers.
    """
    l2_reg = _validation.check_l2_reg(l2_reg)
    tol = _validation.check_tol(tol)
    max_iter = _validation.check_positive_int(max_iter, "max_iter")
    X = _validation.check_X(X)
    y = _validation.check_labels(y, n_samples=X.shape[0])
    s = _validation.check_sample_weight(sample_weight, X.shape[0])
    classes, codes = _classes_and_codes(y, s)

    objective = Objective(X, codes, len(classes), l2_reg)
    theta0 = (_initial_theta(objective, codes, s) if init is None
              else _check_init(init, objective, classes))
    tol_abs = tol * objective.grad_scale(s)
    result = _newton.minimize(objective, s, theta0, tol_abs=tol_abs,
                              max_iter=max_iter)
    if not result.converged:
        _newton.warn_not_converged(
            "fit", result, "Increase max_iter or l2_reg, or loosen tol."
        )
    H = _newton.hessian_at(objective, result.theta, s)
    L = _newton.factor(H, "the Hessian at the fitted parameters")
    model = LogisticModel(objective, result.theta, result, classes, s, tol, L)
    model._hessian_reg = H
    return model


def _check_init(init, objective, classes):
    from ._objective import from_public

    if isinstance(init, LogisticModel):
        if not np.array_equal(init.classes_, classes):
            raise ValueError("init was fitted on other classes than y has")
        init = init.params_
    theta = np.asarray(init, dtype=np.float64)
    if theta.shape != (objective.n_params,):
        raise ValueError(
            f"init must have shape ({objective.n_params},), got {theta.shape}"
        )
    if not np.all(np.isfinite(theta)):
        raise ValueError("init contains NaN or infinite values")
    return from_public(theta, objective.n_logits, objective.n_features)


def _classes_and_codes(y, s):
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(
            f"y has a single class ({classes[0].item()!r}); at least two are needed"
        )
    codes = _validation.encode_labels(y, classes)
    weight = np.bincount(codes, weights=s, minlength=len(classes))
    if np.any(weight <= 0):
        empty = classes[weight <= 0].tolist()
        raise ValueError(
            f"class(es) {empty} have zero total sample_weight; drop them from "
            f"y or give them weight"
        )
    if len(classes) == 2:
        return classes, codes.astype(np.float64)
    return classes, codes


def _initial_theta(objective, codes, s):
    # Start from the intercept-only optimum (weighted class log-odds), which
    # is exact for coef = 0 and keeps the first Newton step well scaled.
    K, d1 = objective.n_logits, objective.n_features + 1
    theta = np.zeros((K, d1))
    if objective.binary:
        p = float(np.sum(s * codes) / np.sum(s))
        theta[0, -1] = np.log(p / (1 - p))
    else:
        freq = np.bincount(codes, weights=s, minlength=K) / np.sum(s)
        theta[:, -1] = np.log(freq) - np.mean(np.log(freq))
    return theta.ravel()
