"""What `influence` and `retrain` both need: checked inputs and the fitted
model's per-example quantities at theta_hat, computed once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import groups as _groups
from ._objective import Objective

# A gradient at theta_hat larger than this fraction of its scale means the
# data passed are not the data the model was fitted on (a real mismatch gives
# ~1e-2; a certified fit gives ~1e-13).
_MISMATCH_RTOL = 1e-7

# One more Newton step from theta_hat, H^-1 grad F, estimates how far the
# fitted parameters are from the optimum. A certified gradient bounds that
# distance only through the smallest curvature of H, which can be as small as
# l2_reg or below (separable classes, constant or duplicated columns, a class
# with almost no weight): then the step is large although the gradient met
# its target, and every effect computed at theta_hat would be wrong. With the
# default tol the step must stay below this fraction of ||theta|| (certified
# fits give ~1e-10); a looser tol loosens it in proportion.
_UNDETERMINED_RTOL = 1e-6
_UNDETERMINED_TOL_REF = 1e-12


@dataclass
class Context:
    objective: Objective
    theta: np.ndarray  # internal layout, (p,)
    s: np.ndarray  # training weights
    C: sp.csr_matrix  # (G, n) fractions removed
    W: sp.csr_matrix  # (G, n) weights removed = C * s
    loss: np.ndarray  # training per-example loss at theta_hat
    dloss: np.ndarray
    curv: np.ndarray
    X_test: object
    y_test: np.ndarray | None
    test_loss: np.ndarray | None  # at theta_hat
    test_dloss: np.ndarray | None

    @property
    def n_groups(self):
        return self.C.shape[0]


def prepare(model, X, y, groups, X_test, y_test):
    """Validate everything against the model and evaluate it at theta_hat."""
    from ._model import LogisticModel

    if not isinstance(model, LogisticModel):
        raise TypeError(
            f"model must be a LogisticModel from groupinf.fit, got "
            f"{type(model).__name__}"
        )
    if not model.converged_:
        raise ValueError(
            f"model did not converge (||grad F|| = {model.grad_norm_:.3e}, "
            f"target {model.grad_tol_:.3e}): influence and retraining are "
            f"defined at an optimum. Refit with a larger max_iter or l2_reg."
        )
    X, codes = model._encode(X, y)
    if X.shape[0] != model.n_samples_:
        raise ValueError(
            f"X has {X.shape[0]} rows, but the model was fitted on "
            f"{model.n_samples_}"
        )
    obj = Objective(X, codes, model.n_classes, model.l2_reg)
    s = model.sample_weight_
    theta = model._theta
    g = _check_same_data(model, obj, theta, s)
    _check_determined(model, obj, theta, g)

    C = _groups.as_matrix(groups, X.shape[0])
    _groups.check_kept_classes(C, codes, s, model.classes_)
    W = sp.csr_matrix(C.multiply(s[None, :]))
    loss, dloss, curv = obj.pointwise(theta)

    test_loss = test_dloss = None
    if X_test is not None or y_test is not None:
        if X_test is None or y_test is None:
            raise ValueError("X_test and y_test must be given together")
        X_test, y_test = model._encode(X_test, y_test, "X_test", "y_test")
        test_loss, test_dloss, _ = obj.pointwise(theta, X_test, y_test)
    return Context(obj, theta, s, C, W, loss, dloss, curv, X_test, y_test,
                   test_loss, test_dloss)


def _check_same_data(model, obj, theta, s):
    _, g = obj.objgrad(theta, s)
    gn = float(np.linalg.norm(g))
    scale = obj.grad_scale(s)
    if gn > max(_MISMATCH_RTOL * scale, 10 * model.grad_norm_):
        raise ValueError(
            f"X, y are not the data the model was fitted on: the gradient of "
            f"the objective at the fitted parameters is {gn:.3e} on them "
            f"(the fit certified {model.grad_norm_:.3e}). Pass the training "
            f"data, in the same row order, that groupinf.fit received."
        )
    return g


def _check_determined(model, obj, theta, g):
    from ._newton import SingularHessianError, solve

    step = float(np.linalg.norm(obj.centre(solve(model.hessian_factor_, g))))
    size = max(1.0, float(np.linalg.norm(theta)))
    limit = _UNDETERMINED_RTOL * max(1.0, model._tol / _UNDETERMINED_TOL_REF)
    if not step <= limit * size:  # also catches a NaN step
        raise SingularHessianError(
            f"the fitted parameters are not determined to working precision: "
            f"one more Newton step from them moves theta by {step:.3e} "
            f"({step / size:.1e} of its norm, limit {limit:.0e}) although the "
            f"fit certified ||grad F|| = {model.grad_norm_:.3e}. The Hessian "
            f"is nearly singular along some direction (separable classes, a "
            f"constant, duplicated or badly scaled column, or a class with "
            f"almost no weight, at l2_reg = {model.l2_reg:.3g}), so effects "
            f"computed at these parameters would be wrong. Increase l2_reg, "
            f"or drop or standardise the offending columns of X."
        )


def group_rows(C, g):
    """Indices and removal fractions of group g."""
    lo, hi = C.indptr[g], C.indptr[g + 1]
    return C.indices[lo:hi].astype(np.int64), C.data[lo:hi]


def group_weight(W):
    return np.asarray(W.sum(axis=1)).ravel()
