"""An independent plain-NumPy implementation of the objective, for the tests.

Nothing here calls groupinf: these functions are the second implementation the
kernels and the API are checked against. Parameters are a coefficient matrix
``W`` of shape (K', d) and intercepts ``b`` of shape (K',), with K' = 1 for
binary problems (one logit, classes_[1] positive) and K' = K for softmax::

    F(W, b; s) = sum_i s_i * l(y_i, W x_i + b) + lam/2 * ||W||_F^2

Two flattenings of (W, b) appear in groupinf: the internal one (row k of a
(K', d + 1) matrix is [W_k, b_k]) and the public one ([W.ravel(), b]).
"""

import numpy as np
from scipy.special import expit, logsumexp


def fourth_order_derivative(f, x, h):
    """d f / d x_j for every j by the 4th-order central difference.

    f maps a vector to an array; the result has shape f(x).shape + x.shape.
    """
    x = np.asarray(x, dtype=np.float64)
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e.flat[j] = h
        cols.append(
            (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
        )
    return np.stack(cols, axis=-1)


def split_internal(theta, n_features):
    """Internal flat theta -> (W, b)."""
    th = np.asarray(theta, dtype=np.float64).reshape(-1, n_features + 1)
    return th[:, :-1], th[:, -1]


def join_internal(W, b):
    return np.column_stack([W, b]).ravel()


def split_public(theta, n_logits):
    """Public flat theta [W.ravel(), b] -> (W, b)."""
    theta = np.asarray(theta, dtype=np.float64)
    return theta[:-n_logits].reshape(n_logits, -1), theta[-n_logits:]


def join_public(W, b):
    return np.concatenate([np.ravel(W), b])


def internal_to_public_index(n_logits, n_features):
    """perm with public[j] = internal[perm[j]], written out entry by entry."""
    d1 = n_features + 1
    perm = [k * d1 + j for k in range(n_logits) for j in range(n_features)]
    perm += [k * d1 + n_features for k in range(n_logits)]
    return np.array(perm)


def logits(X, W, b):
    return np.asarray(X @ W.T) + b


def pointwise_loss(Z, y, binary):
    """Per-example loss from logits Z of shape (n, K')."""
    if binary:
        z = Z[:, 0]
        # log(1 + e^z) - y z, written so neither branch overflows.
        return np.where(y > 0.5, np.logaddexp(0.0, -z), np.logaddexp(0.0, z))
    return logsumexp(Z, axis=1) - Z[np.arange(Z.shape[0]), y]


def dloss_dlogits(Z, y, binary):
    """d l / d z, shape (n, K')."""
    if binary:
        return (expit(Z[:, 0]) - y)[:, None]
    P = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
    P[np.arange(Z.shape[0]), y] -= 1.0
    return P


def objective(X, y, s, W, b, lam, binary):
    Z = logits(X, W, b)
    return float(s @ pointwise_loss(Z, y, binary) + 0.5 * lam * np.sum(W * W))


def gradient(X, y, s, W, b, lam, binary):
    """(dF/dW, dF/db)."""
    R = dloss_dlogits(logits(X, W, b), y, binary) * s[:, None]
    return np.asarray(R.T @ X) + lam * W, R.sum(axis=0)


def point_gradients_public(X, y, W, b, binary):
    """Unweighted per-example loss gradients, public layout, (n, p)."""
    R = dloss_dlogits(logits(X, W, b), y, binary)
    Xd = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    n = Xd.shape[0]
    return np.hstack([(R[:, :, None] * Xd[:, None, :]).reshape(n, -1), R])


def loss_hessian_internal(X, s, W, b, binary):
    """sum_i s_i * Hessian of l_i with respect to the internal theta."""
    Xd = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    Z = logits(Xd, W, b)
    Xt = np.column_stack([Xd, np.ones(Xd.shape[0])])
    if binary:
        P = expit(Z)
        D = (P * (1 - P))[:, :, None]
    else:
        P = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
        D = P[:, :, None] * np.eye(P.shape[1])[None] - P[:, :, None] * P[:, None, :]
    H = np.einsum("i,ikl,ia,ib->kalb", s, D, Xt, Xt)
    K1, d1 = D.shape[1], Xt.shape[1]
    return H.reshape(K1 * d1, K1 * d1)


def penalty_diag_public(n_logits, n_features, lam):
    return np.concatenate([np.full(n_logits * n_features, lam), np.zeros(n_logits)])


def hessian_public(X, s, W, b, lam, binary):
    """The regularised Hessian of F in the public layout (singular along the
    flat direction for softmax)."""
    n_logits, d = W.shape
    perm = internal_to_public_index(n_logits, d)
    H = loss_hessian_internal(X, s, W, b, binary)[np.ix_(perm, perm)]
    return H + np.diag(penalty_diag_public(n_logits, d, lam))


def first_order_influence(X, y, s, W, b, lam, binary, weights, X_test, y_test):
    """Dense first-order group effects, public layout.

    ``weights`` is a (G, n) array of removed weights w_Ui = s_i c_Ui. For
    softmax H is singular along "add c to every intercept"; the pseudo-inverse
    solves on the orthogonal complement, which yields centred changes.
    """
    H = hessian_public(X, s, W, b, lam, binary)
    grads = point_gradients_public(X, y, W, b, binary)
    GU = np.asarray(weights) @ grads
    if binary:
        dtheta = np.linalg.solve(H, GU.T).T
    else:
        dtheta = (np.linalg.pinv(H, rcond=1e-10, hermitian=True) @ GU.T).T
    out = {"params": dtheta, "self_loss": np.einsum("gp,gp->g", dtheta, GU)}
    if X_test is not None:
        out["test_loss"] = (
            dtheta @ point_gradients_public(X_test, y_test, W, b, binary).T
        )
        if binary:
            sign = 2.0 * y_test - 1.0
            Xt = np.column_stack([X_test, np.ones(X_test.shape[0])])
            out["test_margin"] = dtheta @ (sign[:, None] * Xt).T
    return out


def influence_tiers(X, y, s, W, b, lam, binary, weights, X_test, y_test):
    """Every prediction tier of design.md, dense, public layout.

    Returns {method: {"params", "self_loss", "test_loss", "plugin_test_loss",
    "plugin_self_loss", "param_norm_h"}} plus "leverage_max" and (binary)
    "self_margin" per method. Softmax solves use the pseudo-inverse on the
    complement of the flat direction, which the loss Hessians share.
    """
    weights = np.asarray(weights)
    n_logits, d = W.shape
    H = hessian_public(X, s, W, b, lam, binary)
    Hinv = np.linalg.pinv(H, rcond=1e-10, hermitian=True)
    grads = point_gradients_public(X, y, W, b, binary)
    perm = internal_to_public_index(n_logits, d)
    theta = join_public(W, b)
    q_all = weights.sum(axis=1) / s.sum()
    Xt = np.column_stack([X, np.ones(X.shape[0])])
    sign = 2.0 * y - 1.0 if binary else None
    loss_hat = pointwise_loss(logits(X, W, b), y, binary)
    test_hat = pointwise_loss(logits(X_test, W, b), y_test, binary)
    out = {}
    for g, w in enumerate(weights):
        gU = w @ grads
        HU = loss_hessian_internal(X, w, W, b, binary)[np.ix_(perm, perm)]
        first = Hinv @ gU
        corr = Hinv @ HU @ first
        q = q_all[g]
        steps = {
            "first-order": first,
            "newton": np.linalg.pinv(H - HU, rcond=1e-10, hermitian=True) @ gU,
            "second-order": first + corr,
            "basu-second-order": ((1 - 2 * q) * first + corr) / (1 - q) ** 2,
        }
        # Largest eigenvalue of H^-1/2 H_U H^-1/2 on the non-flat subspace.
        evals, evecs = np.linalg.eigh(H)
        keep = evals > 1e-10 * evals.max()
        R = evecs[:, keep] / np.sqrt(evals[keep])
        leverage = np.linalg.eigvalsh(R.T @ HU @ R).max()
        for method, dt in steps.items():
            Wn, bn = split_public(theta + dt, n_logits)
            rec = out.setdefault(method, {})
            new_loss = pointwise_loss(logits(X, Wn, bn), y, binary)
            new_test = pointwise_loss(logits(X_test, Wn, bn), y_test, binary)
            values = {
                "params": dt,
                "self_loss": gU @ dt,
                "test_loss": point_gradients_public(X_test, y_test, W, b, binary) @ dt,
                "plugin_self_loss": w @ (new_loss - loss_hat),
                "plugin_test_loss": new_test - test_hat,
                "param_norm_h": np.sqrt(dt @ H @ dt),
                "leverage_max": leverage,
            }
            if binary:
                values["self_margin"] = (w * sign) @ Xt @ dt
            for k, v in values.items():
                rec.setdefault(k, []).append(v)
    return {m: {k: np.array(v) for k, v in rec.items()} for m, rec in out.items()}
