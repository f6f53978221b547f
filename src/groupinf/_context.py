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
    _check_same_data(model, obj, theta, s)

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


def group_rows(C, g):
    """Indices and removal fractions of group g."""
    lo, hi = C.indptr[g], C.indptr[g + 1]
    return C.indices[lo:hi].astype(np.int64), C.data[lo:hi]


def group_weight(W):
    return np.asarray(W.sum(axis=1)).ravel()
