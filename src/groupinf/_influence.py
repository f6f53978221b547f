"""`groupinf.influence`: predicted effects of removing groups.

First-order (the influence function, additive over points), for a group U
with removed weights w_i = s_i * c_Ui::

    g_U       = sum_{i in U} w_i grad l_i(theta_hat)
    d_theta   = H^-1 g_U                     (H regularised, at theta_hat)
    d_f       = grad f(theta_hat)^T d_theta  (test loss, test margin)
    self_loss = g_U^T H^-1 g_U  >= 0

All G groups share the cached Cholesky factor of H: the group gradients are
one sparse-times-dense product per logit and the G solves are one DPOTRS
call with G right-hand sides.
"""

from __future__ import annotations

import time

import numpy as np

from . import _newton
from ._context import group_weight, prepare
from ._objective import to_public
from ._results import GroupEffects

METHODS = ("first-order",)


def influence(model, X, y, groups, X_test=None, y_test=None, *,
              method="first-order"):
    """Predict the effect of removing each group from the training data.

    Parameters
    ----------
    model : LogisticModel
        From ``groupinf.fit(X, y, ...)``.
    X, y : the training data the model was fitted on (same rows, same order)
    groups : list of index arrays or boolean masks, or sparse (G, n) matrix
        Entries of a matrix are the fraction of each point's weight removed.
    X_test, y_test : optional test points whose loss (and, for binary
        models, margin) effects are wanted.
    method : {"first-order"}

    Returns
    -------
    GroupEffects
        ``params`` (G, p), ``self_loss`` (G,), ``test_loss`` (G, T),
        ``test_margin`` (G, T) for binary models (else None).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    t0 = time.perf_counter()
    ctx = prepare(model, X, y, groups, X_test, y_test)
    obj = ctx.objective

    # 1. Group gradients g_U (G, p) and parameter changes H^-1 g_U.
    GU = obj.weighted_rows_gradient(ctx.dloss, ctx.W)
    dtheta = obj.centre(_newton.solve(model.hessian_factor_, GU))

    # 2. Quantities: each is a dot product with d_theta.
    self_loss = np.einsum("gp,gp->g", dtheta, GU)
    test_loss = test_margin = None
    if ctx.X_test is not None:
        grads = obj.point_gradients(ctx.test_dloss, ctx.X_test)
        test_loss = dtheta @ grads.T
        if obj.binary:
            sign = 2 * ctx.y_test - 1
            test_margin = dtheta @ obj.point_gradients(sign, ctx.X_test).T

    return GroupEffects(
        method=method,
        params=to_public(dtheta, obj.n_logits, obj.n_features),
        self_loss=self_loss,
        test_loss=test_loss,
        test_margin=test_margin,
        group_weight=group_weight(ctx.W),
        timings={"total": time.perf_counter() - t0},
    )
