"""Group influence for a multilayer perceptron (the non-convex extension).

The model is a fully connected network with ``tanh`` (or ``relu``) hidden
layers and a softmax output, trained on the *sum* objective

    F(theta; s) = sum_i s_i * l(y_i, x_i; theta) + (l2_reg / 2) * sum_l ||W_l||_F^2

with ``l`` the softmax cross-entropy. Only the weight matrices ``W_l`` are
penalised; the biases are not (as the logistic model's intercept).
``theta`` is one flat vector ``[W_1 (d x h_1, row-major), b_1, W_2, b_2, ...,
W_L (h_{L-1} x K), b_L]``; :func:`layer_views` gives the per-layer views.

A non-convex F has no unique minimiser, so effects are defined around a fixed
trained ``theta_0`` and a randomness seed ``r`` (design.md section 2). For a
group U removing weights ``w_i = c_Ui`` (new minus old):

- *predicted* (:func:`influence`): d_theta = (C + damping I)^-1 g_U with
  ``g_U = sum_U w_i grad l_i(theta_0)`` and C the exact Hessian of F at
  theta_0 (or its Gauss-Newton matrix), solved by conjugate gradients on
  Hessian-vector products; d_f = grad f(theta_0)^T d_theta.
- *actual* (:func:`retrain`): theta_r = SGD(theta_0, data - U, r) for a fixed
  number of epochs and step size, where r fixes the mini-batch order (there is
  no dropout); ``plain``: f(theta_r) - f(theta_0); ``controlled``:
  f(theta_r) - f(SGD(theta_0, data, r)), which cancels the drift SGD shows
  even when nothing is removed.

Every product is a batched matrix product (NumPy GEMMs over BLAS): the
Hessian-vector products are the R-operator (a forward pass of directional
derivatives, then the backward pass differentiated along them) applied to
many directions at once, with the network's state at theta_0 cached.
"""

from __future__ import annotations

import numbers
import os
import time
from dataclasses import dataclass

import numpy as np

from . import groups as _groups
from ._cg import ConvergenceError, cg, check_options, raise_if_failed
from ._results import GroupEffects, Progress
from ._validation import check_X

__all__ = [
    "ConvergenceError",
    "Curvature",
    "Layout",
    "MLPEffects",
    "MLPModel",
    "SGDConfig",
    "assemble",
    "curvature",
    "fit",
    "influence",
    "layer_views",
    "loss_jvp",
    "min_eigenvalue",
    "retrain",
    "sgd_runs",
]

ACTIVATIONS = ("tanh", "relu")

# Directions per batched R-operator pass: bounds the (n, m, h_1) work arrays
# (800 x 32 x 128 doubles = 26 MB) without giving up the large GEMMs.
_BLOCK = 32


# ---------------------------------------------------------------------------
# Layout and the network's pieces
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Sizes ``(d, h_1, ..., K)`` and the offsets of each W_l and b_l."""

    sizes: tuple

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @property
    def offsets(self):
        out, pos = [], 0
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            out.append((pos, pos + a * b, pos + a * b + b))
            pos += a * b + b
        return out

    @property
    def n_params(self):
        return self.offsets[-1][2]

    def weight_mask(self):
        """1 on weight entries (penalised), 0 on biases, shape (n_params,)."""
        mask = np.zeros(self.n_params)
        for lo, mid, _ in self.offsets:
            mask[lo:mid] = 1.0
        return mask


def layer_views(theta, layout):
    """[(W_l, b_l)] as views into the flat ``theta`` (or into each row of a
    (m, n_params) stack, giving (m, a, b) and (m, b) views)."""
    out = []
    lead = theta.shape[:-1]
    for (lo, mid, hi), a, b in zip(layout.offsets, layout.sizes[:-1], layout.sizes[1:]):
        out.append((theta[..., lo:mid].reshape(lead + (a, b)), theta[..., mid:hi]))
    return out


def _act(name, Z):
    return np.tanh(Z) if name == "tanh" else np.maximum(Z, 0.0)


def _act_d1(name, Z, A):
    # tanh' = 1 - tanh^2; relu' = 1[z > 0] (0 at the kink).
    return 1.0 - A * A if name == "tanh" else (Z > 0).astype(np.float64)


def _act_d2(name, A, d1):
    # tanh'' = -2 tanh (1 - tanh^2); relu'' = 0 almost everywhere.
    return -2.0 * A * d1 if name == "tanh" else np.zeros_like(A)


def _forward(views, X, activation):
    """Activations [A_0 = X, A_1, ..., A_{L-1}], pre-activations and logits."""
    As, Zs = [X], []
    for l, (W, b) in enumerate(views):
        Z = As[-1] @ W
        Z += b
        Zs.append(Z)
        if l < len(views) - 1:
            As.append(_act(activation, Z))
    return As, Zs


def _softmax_loss(logits, y):
    """Per-example cross-entropy (n,) and softmax probabilities (n, K)."""
    m = logits.max(axis=1, keepdims=True)
    E = np.exp(logits - m)
    S = E.sum(axis=1, keepdims=True)
    P = E / S
    loss = (np.log(S[:, 0]) + m[:, 0]) - logits[np.arange(y.size), y]
    return loss, P


def _backward(views, As, Zs, D, activation, out):
    """Write sum_i grad of the per-example losses with output delta D into
    ``out`` (flat); return the hidden deltas [D_1, ..., D_L] and the
    back-propagated errors [E_1, ..., E_{L-1}] (E_l = D_{l+1} W_{l+1}^T)."""
    L = len(views)
    grads = layer_views(out, _layout_of(views))
    deltas, errors = [None] * L, [None] * (L - 1)
    for l in range(L - 1, -1, -1):
        W, _ = views[l]
        gW, gb = grads[l]
        deltas[l] = D
        np.matmul(As[l].T, D, out=gW)
        D.sum(axis=0, out=gb)
        if l > 0:
            E = D @ W.T
            errors[l - 1] = E
            D = E * _act_d1(activation, Zs[l - 1], As[l])
    return deltas, errors


def _layout_of(views):
    sizes = [views[0][0].shape[-2]] + [W.shape[-1] for W, _ in views]
    return Layout(tuple(sizes))


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@dataclass
class SGDConfig:
    """Plain SGD for retraining: ``epochs`` passes, each over a fresh random
    order of the kept points in mini-batches of ``batch_size``, every step

        theta <- theta - lr * [ (n_kept / (n |B|)) sum_{i in B} s_i grad l_i
                                + (l2_reg / n) * W ]

    i.e. a fixed step ``lr / n`` on an unbiased estimate of grad F(theta; s)
    (n the full training size, so the step is the same for every group).
    No momentum, no schedule.
    """

    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 50

    def check(self):
        _check_int(self.epochs, "epochs")
        _check_int(self.batch_size, "batch_size")
        _check_pos(self.lr, "lr")
        return self

    def horizon(self):
        """Sum-objective "time" lr * epochs / batch_size of a full-data run:
        a direction of curvature mu relaxes by a factor ~exp(-mu * horizon);
        damping ~ 1 / horizon matches what the run can resolve."""
        return self.lr * self.epochs / self.batch_size


class MLPModel:
    """A trained network: ``params_`` (flat theta_0) and what produced it.

    Attributes
    ----------
    sizes : tuple of int
        ``(n_features, h_1, ..., n_classes)``.
    activation : str
    l2_reg : float
    classes_ : ndarray of shape (n_classes,)
    params_ : ndarray of shape (n_params,)
    grad_norm_ : float
        ||grad F(theta_0)|| on the training data.
    train_info_ : dict
        Epochs, step sizes, seed and timings of the training.
    """

    def __init__(self, sizes, activation, l2_reg, classes, params, info=None):
        self.layout = Layout(tuple(int(s) for s in sizes))
        self.activation = activation
        self.l2_reg = float(l2_reg)
        self.classes_ = np.asarray(classes)
        self.params_ = np.ascontiguousarray(params, dtype=np.float64)
        self.train_info_ = dict(info or {})
        self.grad_norm_ = float(self.train_info_.get("grad_norm", np.nan))

    @property
    def sizes(self):
        return self.layout.sizes

    @property
    def n_params(self):
        return self.layout.n_params

    @property
    def n_classes(self):
        return self.classes_.size

    def views(self, theta=None):
        return layer_views(self.params_ if theta is None else theta, self.layout)

    def _check(self, X, y=None, x_name="X", y_name="y"):
        X = check_X(X, x_name, n_features=self.sizes[0])
        if y is None:
            return X, None
        return X, _encode(self.classes_, y, X.shape[0], y_name)

    def decision_function(self, X, theta=None):
        """Logits, shape (n_samples, n_classes)."""
        X, _ = self._check(X)
        return _forward(self.views(theta), X, self.activation)[1][-1]

    def predict_proba(self, X, theta=None):
        Z = self.decision_function(X, theta)
        return _softmax_loss(Z, np.zeros(Z.shape[0], dtype=np.int64))[1]

    def predict(self, X, theta=None):
        return self.classes_[np.argmax(self.decision_function(X, theta), axis=1)]

    def loss(self, X, y, theta=None):
        """Per-example cross-entropy, shape (n_samples,)."""
        X, yc = self._check(X, y)
        Z = _forward(self.views(theta), X, self.activation)[1][-1]
        return _softmax_loss(Z, yc)[0]

    def objective(self, X, y, theta=None):
        """F(theta) = sum of losses + (l2_reg / 2) ||weights||^2."""
        theta = self.params_ if theta is None else theta
        reg = sum(float(np.sum(W * W)) for W, _ in self.views(theta))
        return float(self.loss(X, y, theta).sum()) + 0.5 * self.l2_reg * reg

    def gradient(self, X, y, theta=None, sample_weight=None):
        """grad F(theta), shape (n_params,) (weights s_i, default 1)."""
        X, yc = self._check(X, y)
        theta = self.params_ if theta is None else np.asarray(theta, float)
        return _full_gradient(
            theta, self.layout, self.activation, self.l2_reg, X, yc, sample_weight
        )

    def __repr__(self):
        return (
            f"MLPModel(sizes={self.sizes}, activation={self.activation!r}, "
            f"l2_reg={self.l2_reg:g}, n_params={self.n_params})"
        )


def _full_gradient(theta, layout, activation, l2_reg, X, yc, s=None):
    views = layer_views(theta, layout)
    As, Zs = _forward(views, X, activation)
    _, P = _softmax_loss(Zs[-1], yc)
    D = P
    D[np.arange(yc.size), yc] -= 1.0
    if s is not None:
        D *= s[:, None]
    g = np.empty(layout.n_params)
    _backward(views, As, Zs, D, activation, g)
    g += l2_reg * layout.weight_mask() * theta
    return g


def _encode(classes, y, n, name):
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {y.shape}")
    codes = np.searchsorted(classes, y)
    codes = np.minimum(codes, classes.size - 1)
    bad = classes[codes] != y
    if np.any(bad):
        raise ValueError(
            f"{name} has label {y[np.argmax(bad)].item()!r}, not one of "
            f"the model's classes {classes.tolist()}"
        )
    return codes.astype(np.int64)


def _check_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def _check_pos(v, name, allow_zero=False):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {v!r}")
    v = float(v)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        what = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {what}, got {v!r}")
    return v


def _glorot(rng, layout):
    theta = np.zeros(layout.n_params)
    for W, _ in layer_views(theta, layout):
        a = np.sqrt(6.0 / (W.shape[0] + W.shape[1]))
        W[...] = rng.uniform(-a, a, size=W.shape)
    return theta


def fit(
    X,
    y,
    hidden=(128, 32),
    *,
    l2_reg=1.0,
    activation="tanh",
    epochs=100,
    lr=0.1,
    momentum=0.9,
    batch_size=50,
    polish_iter=300,
    seed=0,
):
    """Train an MLP from scratch (seeded) to give theta_0.

    Mini-batch SGD with heavy-ball momentum on the mean objective F / n
    (step ``lr`` decayed by a cosine to 0 over ``epochs``), from a Glorot
    uniform start; then up to ``polish_iter`` L-BFGS iterations on F itself,
    which bring ||grad F(theta_0)|| down so that theta_0 is close to a
    stationary point (influence is a statement about one).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : array of shape (n_samples,)
        Class labels (at least two classes).
    hidden : sequence of int
        Widths of the hidden layers.
    l2_reg : float
        Penalty on the weight matrices (not the biases), sum-objective scale.
    activation : {"tanh", "relu"}
    epochs, lr, momentum, batch_size : training settings.
    polish_iter : int
        L-BFGS iterations after SGD (0 skips).
    seed : int
        Seeds the initialisation and the batch order.

    Returns
    -------
    MLPModel
    """
    X = check_X(X)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
    classes, yc = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError("y has a single class; an MLP classifier needs two or more")
    hidden = tuple(hidden)
    if not hidden or any(
        isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1
        for h in hidden
    ):
        raise ValueError(
            f"hidden must be a non-empty list of positive integers, got {hidden!r}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    l2_reg = _check_pos(l2_reg, "l2_reg", allow_zero=True)
    epochs = _check_int(epochs, "epochs", minimum=0)
    batch_size = _check_int(batch_size, "batch_size")
    lr = _check_pos(lr, "lr")
    momentum = _check_pos(momentum, "momentum", allow_zero=True)
    if momentum >= 1:
        raise ValueError(f"momentum must be < 1, got {momentum}")
    polish_iter = _check_int(polish_iter, "polish_iter", minimum=0)
    _check_int(seed, "seed", minimum=0)

    layout = Layout((X.shape[1],) + hidden + (classes.size,))
    rng = np.random.default_rng(seed)
    theta = _glorot(rng, layout)
    n = X.shape[0]
    mask = layout.weight_mask()
    t0 = time.perf_counter()

    # 1. SGD with momentum and a cosine step schedule.
    vel = np.zeros_like(theta)
    g = np.empty_like(theta)
    Y = np.zeros((n, classes.size))
    Y[np.arange(n), yc] = 1.0
    steps = epochs * int(np.ceil(n / batch_size))
    k = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for a in range(0, n, batch_size):
            idx = order[a : a + batch_size]
            step = lr * 0.5 * (1 + np.cos(np.pi * k / steps))
            _batch_gradient(
                theta, layout, activation, X[idx], Y[idx], None, 1.0 / idx.size, g
            )
            g += (l2_reg / n) * mask * theta
            vel *= momentum
            vel -= step * g
            theta += vel
            k += 1
    t_sgd = time.perf_counter() - t0

    # 2. L-BFGS polish on F itself.
    n_polish = 0
    if polish_iter:

        def fun(th):
            views = layer_views(th, layout)
            As, Zs = _forward(views, X, activation)
            loss, P = _softmax_loss(Zs[-1], yc)
            P[np.arange(n), yc] -= 1.0
            grad = np.empty_like(th)
            _backward(views, As, Zs, P, activation, grad)
            grad += l2_reg * mask * th
            f = float(loss.sum()) + 0.5 * l2_reg * float(np.sum(mask * th * th))
            return f, grad

        theta, n_polish = _lbfgs(fun, theta, polish_iter)

    grad = _full_gradient(theta, layout, activation, l2_reg, X, yc)
    info = {
        "epochs": epochs,
        "lr": lr,
        "momentum": momentum,
        "batch_size": batch_size,
        "polish_iter": n_polish,
        "seed": seed,
        "sgd_seconds": t_sgd,
        "seconds": time.perf_counter() - t0,
        "grad_norm": float(np.linalg.norm(grad)),
    }
    return MLPModel(layout.sizes, activation, l2_reg, classes, theta, info)


def _lbfgs(fun, x, maxiter, memory=20, gtol=1e-10):
    """Plain L-BFGS (two-loop recursion, backtracking Armijo line search).

    SciPy's L-BFGS-B spends ~0.2-0.4 s of its own per iteration at 10^5
    parameters here (40x one gradient; measured with SciPy 1.17.1 on a bare
    quadratic, a known slowdown of its C translation since SciPy 1.15, see
    scipy/scipy#23191 and #26137), so the polish uses this instead. It is
    only a polish of theta_0: nothing downstream relies on it reaching an
    optimum (the influence is taken around theta_0 as it is, design.md s2).
    Returns (x, iterations).
    """
    f, g = fun(x)
    hist = []
    it = 0
    for it in range(1, maxiter + 1):
        # 1. Direction: the two-loop product of the inverse-Hessian estimate.
        q = -g
        alphas = []
        for s_, y_, rho in reversed(hist):
            a = rho * (s_ @ q)
            q = q - a * y_
            alphas.append(a)
        if hist:
            s_, y_, _ = hist[-1]
            q = q * ((s_ @ y_) / (y_ @ y_))
        else:
            q = q / max(1.0, float(np.linalg.norm(g)))
        for (s_, y_, rho), a in zip(hist, reversed(alphas)):
            q = q + (a - rho * (y_ @ q)) * s_
        slope = float(g @ q)
        if not slope < 0:
            hist.clear()
            q, slope = -g, -float(g @ g)

        # 2. Backtracking until the Armijo condition holds.
        t = 1.0
        while True:
            xn = x + t * q
            fn, gn = fun(xn)
            if np.isfinite(fn) and fn <= f + 1e-4 * t * slope:
                break
            t *= 0.5
            if t < 1e-12:
                return x, it
        s_, y_ = xn - x, gn - g
        sy = float(s_ @ y_)
        if sy > 1e-12 * float(np.linalg.norm(s_) * np.linalg.norm(y_)):
            hist.append((s_, y_, 1.0 / sy))
            if len(hist) > memory:
                hist.pop(0)
        x, f, g = xn, fn, gn
        if np.linalg.norm(g) <= gtol:
            break
    return x, it


def _batch_gradient(theta, layout, activation, Xb, Yb, sb, scale, out):
    """out <- scale * sum_{i in batch} s_i grad l_i (no penalty)."""
    views = layer_views(theta, layout)
    As, Zs = _forward(views, Xb, activation)
    logits = Zs[-1]
    logits -= logits.max(axis=1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(axis=1, keepdims=True)
    P -= Yb
    if sb is not None:
        P *= (scale * sb)[:, None]
    else:
        P *= scale
    _backward(views, As, Zs, P, activation, out)


# ---------------------------------------------------------------------------
# Curvature: exact Hessian-vector products (R-operator) and Gauss-Newton
# ---------------------------------------------------------------------------


def _shared_left(A, RW):
    """A (n, a) times every RW_m (m, a, b): (n, m, b) in one GEMM."""
    m, a, b = RW.shape
    return (A @ RW.transpose(1, 0, 2).reshape(a, m * b)).reshape(A.shape[0], m, b)


def _shared_right(R, W):
    """Every R_m (n, m, a) times W (a, b): (n, m, b) in one GEMM."""
    n, m, a = R.shape
    return (R.reshape(n * m, a) @ W).reshape(n, m, W.shape[1])


def _times_wt(D, RW):
    """D (n, b) times every RW_m^T (m, a, b): (n, m, a) in one GEMM."""
    m, a, b = RW.shape
    return (D @ RW.transpose(2, 0, 1).reshape(b, m * a)).reshape(D.shape[0], m, a)


def _outer_shared_left(A, R):
    """sum_i A_i (x) R_im for each m: A (n, a), R (n, m, b) -> (m, a, b)."""
    n, m, b = R.shape
    return (A.T @ R.reshape(n, m * b)).reshape(A.shape[1], m, b).transpose(1, 0, 2)


def _outer_shared_right(R, D):
    """sum_i R_im (x) D_i for each m: R (n, m, a), D (n, b) -> (m, a, b)."""
    n, m, a = R.shape
    return (R.reshape(n, m * a).T @ D).reshape(m, a, D.shape[1])


class Curvature:
    """The damped curvature C + damping I of F at theta_0, as products.

    ``kind="hessian"``: C = grad^2 F(theta_0) (exact, by the R-operator; may
    be indefinite away from a minimum). ``kind="gauss-newton"``: C = J^T
    H_out J + l2_reg * diag(weight mask), positive semi-definite. The state
    of the network at theta_0 (activations, probabilities, deltas) is
    computed once here and reused by every product.
    """

    def __init__(self, model, X, y, *, kind="hessian", damping=0.0):
        if kind not in ("hessian", "gauss-newton"):
            raise ValueError(
                f"curvature must be 'hessian' or 'gauss-newton', got {kind!r}"
            )
        self.model, self.kind = model, kind
        self.damping = _check_pos(damping, "damping", allow_zero=True)
        X, yc = model._check(X, y)
        self.X, self.yc = X, yc
        self.layout, self.activation = model.layout, model.activation
        views = self.views = model.views()
        As, Zs = _forward(views, X, self.activation)
        loss, P = _softmax_loss(Zs[-1], yc)
        self.As, self.Zs, self.P, self.losses = As, Zs, P, loss
        self.d1 = [
            _act_d1(self.activation, Zs[l], As[l + 1]) for l in range(len(views) - 1)
        ]
        self.d2 = [
            _act_d2(self.activation, As[l + 1], self.d1[l])
            for l in range(len(views) - 1)
        ]
        D = P.copy()
        D[np.arange(yc.size), yc] -= 1.0
        self.out_delta = D.copy()
        self.grad = np.empty(self.layout.n_params)
        self.deltas, self.errors = _backward(
            views, As, Zs, D, self.activation, self.grad
        )
        self.mask = self.layout.weight_mask()
        self.grad += model.l2_reg * self.mask * model.params_
        self.n_products = 0

    # -- forward tangents ---------------------------------------------------

    def _r_forward(self, V):
        """Tangents RZ_l (n, m, h_l) of every pre-activation along V (m, p)
        and of the hidden activations RA_l."""
        RV = layer_views(V, self.layout)
        RZs, RAs = [], [None]
        for l, (W, _) in enumerate(self.views):
            RW, Rb = RV[l]
            RZ = _shared_left(self.As[l], RW)
            if l > 0:
                RZ += _shared_right(RAs[l], W)
            RZ += Rb[None, :, :]
            RZs.append(RZ)
            if l < len(self.views) - 1:
                RAs.append(self.d1[l][:, None, :] * RZ)
        return RV, RZs, RAs

    def _output_hessian(self, RZ):
        """s_i (diag(P_i) - P_i P_i^T) RZ_i for every direction."""
        P = self.P[:, None, :]
        PR = P * RZ
        return PR - P * PR.sum(axis=2, keepdims=True)

    # -- products -----------------------------------------------------------

    def matvec(self, V, idx=None):
        """(C + damping I) V for V of shape (m, n_params)."""
        V = np.atleast_2d(np.asarray(V, dtype=np.float64))
        out = np.empty_like(V)
        for a in range(0, V.shape[0], _BLOCK):
            blk = np.ascontiguousarray(V[a : a + _BLOCK])
            if self.kind == "hessian":
                out[a : a + _BLOCK] = self._hvp(blk)
            else:
                out[a : a + _BLOCK] = self._gnvp(blk)
        out += (self.model.l2_reg * self.mask + self.damping) * V
        self.n_products += V.shape[0]
        return out

    def _hvp(self, V):
        m = V.shape[0]
        L = len(self.views)
        RV, RZs, RAs = self._r_forward(V)
        out = np.empty((m, self.layout.n_params))
        res = layer_views(out, self.layout)
        RD = self._output_hessian(RZs[-1])
        for l in range(L - 1, -1, -1):
            W, _ = self.views[l]
            RW, _ = RV[l]
            D = self.deltas[l]
            RgW = _outer_shared_left(self.As[l], RD)
            if l > 0:
                RgW = RgW + _outer_shared_right(RAs[l], D)
            res[l][0][...] = RgW
            res[l][1][...] = RD.sum(axis=0)
            if l > 0:
                # E = D W^T; R(E) = R(D) W^T + D R(W)^T; D_{l-1} = E * act'.
                RE = _shared_right(RD, W.T) + _times_wt(D, RW)
                RD = (
                    RE * self.d1[l - 1][:, None, :]
                    + (self.errors[l - 1] * self.d2[l - 1])[:, None, :] * RZs[l - 1]
                )
        return out

    def _gnvp(self, V):
        m = V.shape[0]
        L = len(self.views)
        _, RZs, _ = self._r_forward(V)
        out = np.empty((m, self.layout.n_params))
        res = layer_views(out, self.layout)
        U = self._output_hessian(RZs[-1])
        for l in range(L - 1, -1, -1):
            W, _ = self.views[l]
            res[l][0][...] = _outer_shared_left(self.As[l], U)
            res[l][1][...] = U.sum(axis=0)
            if l > 0:
                U = _shared_right(U, W.T) * self.d1[l - 1][:, None, :]
        return out

    def solve(self, B, *, tol=1e-6, maxiter=None):
        """CG on (C + damping I) X = B row by row; returns the CGResult."""
        tol, maxiter = check_options(tol, maxiter)
        return cg(lambda V, idx: self.matvec(V), B, tol=tol, maxiter=maxiter)

    def loss_jvp(self, V):
        """Directional derivatives grad l_i(theta_0)^T v_m, shape (n, m)."""
        V = np.atleast_2d(np.asarray(V, dtype=np.float64))
        out = np.empty((self.X.shape[0], V.shape[0]))
        for a in range(0, V.shape[0], _BLOCK):
            _, RZs, _ = self._r_forward(np.ascontiguousarray(V[a : a + _BLOCK]))
            out[:, a : a + _BLOCK] = np.einsum("nk,nmk->nm", self.out_delta, RZs[-1])
        return out

    def group_gradients(self, C):
        """g_U = sum_i C[g, i] grad l_i(theta_0) for each row of the CSR C,
        shape (G, n_params), by back-propagating the cached deltas of the
        group's rows only."""
        G = C.shape[0]
        out = np.zeros((G, self.layout.n_params))
        for g in range(G):
            lo, hi = C.indptr[g], C.indptr[g + 1]
            if hi == lo:
                continue
            rows, w = C.indices[lo:hi], C.data[lo:hi]
            out[g] = self._rows_gradient(rows, w)
        return out

    def _rows_gradient(self, rows, w):
        g = np.empty(self.layout.n_params)
        res = layer_views(g, self.layout)
        L = len(self.views)
        for l in range(L - 1, -1, -1):
            D = self.deltas[l][rows] * w[:, None]
            np.matmul(self.As[l][rows].T, D, out=res[l][0])
            D.sum(axis=0, out=res[l][1])
        return g


def curvature(model, X, y, *, kind="hessian", damping=0.0):
    """:class:`Curvature` of ``model`` on (X, y)."""
    return Curvature(model, X, y, kind=kind, damping=damping)


def loss_jvp(model, X, y, V):
    """grad l_i(theta_0)^T v for each example i and row v of V: (n, m)."""
    return Curvature(model, X, y).loss_jvp(V)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass
class MLPEffects(GroupEffects):
    """:class:`GroupEffects` with what the non-convex setting adds.

    Influence (``method`` ``"influence-hessian"`` / ``"influence-gauss-newton"``):
    ``solver="cg"``; ``solver_iterations``, ``solver_residual`` (true
    relative residual) and ``solver_converged`` per group; ``damping`` the
    damping used.

    Retraining (``method`` ``"retrain-plain"`` / ``"retrain-controlled"``):
    every effect field is the mean over the seeds; ``seeds`` lists them;
    ``self_loss_seeds`` (G, R), ``test_loss_seeds`` (G, R, T) and
    ``param_norm_seeds`` (G, R) are the per-seed effects; ``n_iter`` the SGD
    steps of each group's run; ``converged`` whether all its runs stayed
    finite.
    """

    damping: float | None = None
    seeds: np.ndarray | None = None
    self_loss_seeds: np.ndarray | None = None
    test_loss_seeds: np.ndarray | None = None
    param_norm_seeds: np.ndarray | None = None

    def seed_spread(self):
        """Max minus min over seeds of each actual effect: dict of arrays."""
        if self.self_loss_seeds is None:
            raise ValueError("seed_spread needs a retrain result")
        out = {
            "self_loss": np.ptp(self.self_loss_seeds, axis=1),
            "param_norm": np.ptp(self.param_norm_seeds, axis=1),
        }
        if self.test_loss_seeds is not None:
            out["test_loss"] = np.ptp(self.test_loss_seeds, axis=1)
        return out


# ---------------------------------------------------------------------------
# Predicted effects
# ---------------------------------------------------------------------------


def _check_inputs(model, X, y, groups, X_test, y_test):
    if not isinstance(model, MLPModel):
        raise TypeError(
            f"model must be an MLPModel (from groupinf.mlp.fit), got "
            f"{type(model).__name__}"
        )
    X, yc = model._check(X, y)
    C = _groups.as_matrix(groups, X.shape[0])
    if (X_test is None) != (y_test is None):
        raise ValueError("pass both X_test and y_test, or neither")
    Xt = yt = None
    if X_test is not None:
        Xt, yt = model._check(X_test, y_test, "X_test", "y_test")
    return X, yc, C, Xt, yt


def influence(
    model,
    X,
    y,
    groups,
    X_test=None,
    y_test=None,
    *,
    damping=0.0,
    curvature="hessian",
    cg_tol=1e-6,
    cg_maxiter=None,
    check_data=True,
):
    """Predicted (first-order) effects of removing each group, around theta_0.

    d_theta = (C + damping I)^-1 g_U, solved for all groups together by CG;
    d self_loss = g_U^T d_theta; d test_loss_t = grad l_t(theta_0)^T d_theta.

    Parameters
    ----------
    model : MLPModel
    X, y : the training data the model was trained on.
    groups : list of index arrays / boolean masks, or sparse (G, n) fractions.
    X_test, y_test : optional test points.
    damping : float >= 0
        Added to the curvature; must make it positive definite.
    curvature : {"hessian", "gauss-newton"}
    cg_tol, cg_maxiter : CG's relative-residual target and budget per group.
    check_data : bool
        Refuse data whose gradient at theta_0 is far larger than the model's
        recorded one (not the data it was trained on).

    Returns
    -------
    MLPEffects (method ``"influence-<curvature>"``).

    Raises
    ------
    ConvergenceError
        If CG meets negative curvature (the damped operator is not positive
        definite: raise ``damping`` or use ``curvature="gauss-newton"``) or
        misses ``cg_tol`` within its budget.
    """
    X, yc, C, Xt, yt = _check_inputs(model, X, y, groups, X_test, y_test)
    cg_tol, cg_maxiter = check_options(cg_tol, cg_maxiter)
    t0 = time.perf_counter()
    curv = Curvature(model, X, model.classes_[yc], kind=curvature, damping=damping)
    gnorm = float(np.linalg.norm(curv.grad))
    if (
        check_data
        and np.isfinite(model.grad_norm_)
        and gnorm > (10 * model.grad_norm_ + 1e-6 * X.shape[0])
    ):
        raise ValueError(
            f"X, y give ||grad F(theta_0)|| = {gnorm:.3g}, far above the "
            f"model's {model.grad_norm_:.3g}: they are not the data the model "
            f"was trained on (check_data=False skips this check)"
        )
    B = curv.group_gradients(C)
    res = curv.solve(B, tol=cg_tol, maxiter=cg_maxiter)
    raise_if_failed(
        res,
        f"influence ({curvature}, damping={curv.damping:g})",
        "Increase damping, or use curvature='gauss-newton' (positive "
        "semi-definite), or raise cg_maxiter."
        if curvature == "hessian"
        else "Increase damping or raise cg_maxiter.",
    )
    d_theta = res.x
    test_loss = None
    if Xt is not None:
        Gt = _test_gradients(model, Xt, yt)
        test_loss = d_theta @ Gt.T
    self_loss = np.einsum("gp,gp->g", B, d_theta)
    return MLPEffects(
        method=f"influence-{curvature}",
        params=d_theta,
        self_loss=self_loss,
        test_loss=test_loss,
        test_margin=None,
        group_weight=np.asarray(C.sum(axis=1)).ravel(),
        solver="cg",
        solver_iterations=res.n_iter,
        solver_residual=res.residual,
        solver_converged=res.converged,
        damping=curv.damping,
        timings={"seconds": time.perf_counter() - t0, "grad_norm_theta0": gnorm},
    )


def _test_gradients(model, Xt, yt):
    """Per-test-point loss gradients, shape (T, n_params)."""
    out = np.empty((Xt.shape[0], model.n_params))
    for t in range(Xt.shape[0]):
        out[t] = _full_gradient(
            model.params_,
            model.layout,
            model.activation,
            0.0,
            Xt[t : t + 1],
            yt[t : t + 1],
        )
    return out


# ---------------------------------------------------------------------------
# Actual effects: SGD from theta_0
# ---------------------------------------------------------------------------


def _sgd(theta0, layout, activation, l2_reg, X, Y, s, seed, cfg):
    """SGD(theta_0, data with weights s, seed): the final theta.

    Each epoch draws a permutation of *all* n points from the seed's stream
    and drops the removed ones (s_i = 0), so runs with and without a group
    visit the kept points in the same relative order: the controlled effect
    then compares like with like.
    """
    n = X.shape[0]
    theta = theta0.copy()
    # Weight decay (lr / n) * l2_reg * W, applied in place as a shrink.
    weights = [W for W, _ in layer_views(theta, layout)]
    shrink = 1.0 - cfg.lr * l2_reg / n
    kept_mask = s > 0
    n_kept = int(kept_mask.sum())
    frac = None if np.all(s[kept_mask] == 1.0) else s
    g = np.empty_like(theta)
    rng = np.random.default_rng(seed)
    steps = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(n)
        order = order[kept_mask[order]]
        for a in range(0, n_kept, cfg.batch_size):
            idx = order[a : a + cfg.batch_size]
            scale = cfg.lr * n_kept / (n * idx.size)
            _batch_gradient(
                theta,
                layout,
                activation,
                X[idx],
                Y[idx],
                None if frac is None else frac[idx],
                scale,
                g,
            )
            for W in weights:
                W *= shrink
            theta -= g
            steps += 1
    return theta, steps


class _Runner:
    """Everything a worker needs to run and evaluate SGD retrains."""

    def __init__(self, model, X, yc, Xt, yt, cfg):
        self.theta0 = model.params_
        self.layout, self.activation = model.layout, model.activation
        self.l2_reg = model.l2_reg
        self.X, self.yc, self.Xt, self.yt, self.cfg = X, yc, Xt, yt, cfg
        n = X.shape[0]
        self.Y = np.zeros((n, model.n_classes))
        self.Y[np.arange(n), yc] = 1.0
        self.train_loss0 = self.losses(self.theta0, X, yc)
        self.test_loss0 = None if Xt is None else self.losses(self.theta0, Xt, yt)

    def losses(self, theta, X, yc):
        Z = _forward(layer_views(theta, self.layout), X, self.activation)[1][-1]
        return _softmax_loss(Z, yc)[0]

    def run(self, weights, seed):
        return _sgd(
            self.theta0,
            self.layout,
            self.activation,
            self.l2_reg,
            self.X,
            self.Y,
            weights,
            seed,
            self.cfg,
        )


def _control_task(runner, seed):
    """SGD on the full data: final theta, train losses (n,), test losses."""
    theta, steps = runner.run(np.ones(runner.X.shape[0]), seed)
    tl = None if runner.Xt is None else runner.losses(theta, runner.Xt, runner.yt)
    return {
        "theta": theta,
        "train_loss": runner.losses(theta, runner.X, runner.yc),
        "test_loss": tl,
        "steps": steps,
    }


def _group_task(runner, rows, c, seeds, controls):
    """Every seed's run without one group: per-seed effects (both
    definitions) and the summed parameter changes."""
    n = runner.X.shape[0]
    s = np.ones(n)
    s[rows] -= c
    s[np.abs(s) < 1e-15] = 0.0
    R = len(seeds)
    T = 0 if runner.Xt is None else runner.Xt.shape[0]
    out = {
        k: np.zeros(R)
        for k in ("self_plain", "self_ctrl", "pnorm_plain", "pnorm_ctrl", "steps")
    }
    out["test_plain"] = np.zeros((R, T))
    out["test_ctrl"] = np.zeros((R, T))
    out["dtheta_plain"] = np.zeros(runner.theta0.size)
    out["dtheta_ctrl"] = np.zeros(runner.theta0.size)
    out["finite"] = True
    Xg, yg = runner.X[rows], runner.yc[rows]
    for j, seed in enumerate(seeds):
        theta, steps = runner.run(s, seed)
        out["finite"] &= bool(np.all(np.isfinite(theta)))
        own = runner.losses(theta, Xg, yg)
        out["self_plain"][j] = c @ (own - runner.train_loss0[rows])
        d = theta - runner.theta0
        out["pnorm_plain"][j] = np.linalg.norm(d)
        out["dtheta_plain"] += d
        out["steps"][j] = steps
        if T:
            tl = runner.losses(theta, runner.Xt, runner.yt)
            out["test_plain"][j] = tl - runner.test_loss0
        if controls is not None:
            ctl = controls[j]
            out["self_ctrl"][j] = c @ (own - ctl["train_loss"][rows])
            d = theta - ctl["theta"]
            out["pnorm_ctrl"][j] = np.linalg.norm(d)
            out["dtheta_ctrl"] += d
            if T:
                out["test_ctrl"][j] = tl - ctl["test_loss"]
    return out


# Worker processes keep one runner (set up once by the initializer).
_WORKER = {}


def _init_worker(runner, controls):
    _WORKER["blas"] = _limit_blas_threads(1)
    _WORKER["runner"] = runner
    _WORKER["controls"] = controls


def _limit_blas_threads(n):
    """Limit BLAS to n threads (a context manager; a no-op without
    threadpoolctl). On a shared 2-core machine OpenBLAS's second thread made
    the small GEMMs of an SGD step 6x slower, not faster."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(n)


def _worker_control(seed):
    return seed, _control_task(_WORKER["runner"], seed)


def _worker_group(args):
    g, rows, c, seeds = args
    controls = _WORKER["controls"]
    ctl = None if controls is None else [controls[s] for s in seeds]
    return g, _group_task(_WORKER["runner"], rows, c, seeds, ctl)


def _pool(n_jobs, runner, controls):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # fork shares X and theta_0 with the workers without pickling them; each
    # worker limits BLAS to one thread so that n_jobs workers use n_jobs cores.
    ctx = mp.get_context("fork")
    return ProcessPoolExecutor(
        n_jobs, mp_context=ctx, initializer=_init_worker, initargs=(runner, controls)
    )


def _resolve_jobs(n_jobs):
    if n_jobs is None:
        return max(1, min(2, os.cpu_count() or 1))
    return _check_int(n_jobs, "n_jobs")


def sgd_runs(
    model,
    X,
    y,
    groups,
    X_test=None,
    y_test=None,
    *,
    seeds=(0, 1, 2),
    sgd=None,
    n_jobs=None,
    progress=None,
    controlled=True,
    skip=(),
    on_group=None,
    on_controls=None,
    controls=None,
):
    """The raw retrains behind :func:`retrain`: controls, then every group.

    Returns ``(controls, per_group)``: ``controls`` maps seed -> dict
    (``theta``, ``train_loss``, ``test_loss``) of SGD on the full data (None
    unless ``controlled``); ``per_group`` maps group index -> dict of per-seed
    effects of both definitions (see :func:`_group_task`). ``skip`` lists
    groups not to run (already done); ``on_group(g, result)`` and
    ``on_controls(controls)`` are called as results arrive (the study saves
    them there); ``controls`` may be passed in when already computed.
    Parallel over groups in ``n_jobs`` processes (default: up to 2), each
    with single-threaded BLAS.
    """
    X, yc, C, Xt, yt = _check_inputs(model, X, y, groups, X_test, y_test)
    cfg = (sgd or SGDConfig()).check()
    seeds = _check_seeds(seeds)
    n_jobs = _resolve_jobs(n_jobs)
    runner = _Runner(model, X, yc, Xt, yt, cfg)
    skip = {int(g) for g in skip}
    todo = [g for g in range(C.shape[0]) if g not in skip]
    bar = Progress(
        len(seeds) * bool(controlled and controls is None) + len(todo),
        "retrain",
        enabled=progress,
    )

    # 1. Controls: full-data SGD from theta_0 for every seed.
    if controlled and controls is None:
        controls = {}
        if n_jobs == 1:
            for s in seeds:
                controls[s] = _control_task(runner, s)
                bar.update()
        else:
            with _pool(n_jobs, runner, None) as ex:
                for s, res in ex.map(_worker_control, seeds):
                    controls[s] = res
                    bar.update()
        if on_controls is not None:
            on_controls(controls)

    # 2. Groups, one task per group (all its seeds).
    tasks = []
    for g in todo:
        lo, hi = C.indptr[g], C.indptr[g + 1]
        tasks.append((g, C.indices[lo:hi].copy(), C.data[lo:hi].copy(), seeds))
    per_group = {}
    if n_jobs == 1 or len(tasks) <= 1:
        for g, rows, c, sd in tasks:
            ctl = None if not controlled else [controls[s] for s in sd]
            per_group[g] = _group_task(runner, rows, c, sd, ctl)
            if on_group is not None:
                on_group(g, per_group[g])
            bar.update()
    else:
        from concurrent.futures import as_completed

        with _pool(n_jobs, runner, controls if controlled else None) as ex:
            futs = [ex.submit(_worker_group, t) for t in tasks]
            for f in as_completed(futs):
                g, res = f.result()
                per_group[g] = res
                if on_group is not None:
                    on_group(g, res)
                bar.update()
    return controls, per_group


def _check_seeds(seeds):
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        seeds = range(_check_int(seeds, "seeds"))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    if min(seeds) < 0:
        raise ValueError(f"seeds must be >= 0, got {min(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct")
    return seeds


def assemble(per_group, n_groups, seeds, C, definition, n_params, n_test):
    """MLPEffects of one definition (``"plain"`` / ``"controlled"``) from
    :func:`sgd_runs` output (every group must be present)."""
    key = {"plain": "plain", "controlled": "ctrl"}[definition]
    R = len(seeds)
    self_s = np.zeros((n_groups, R))
    test_s = np.zeros((n_groups, R, n_test))
    pnorm_s = np.zeros((n_groups, R))
    params = np.zeros((n_groups, n_params))
    steps = np.zeros(n_groups, dtype=np.int64)
    finite = np.zeros(n_groups, dtype=bool)
    for g in range(n_groups):
        r = per_group[g]
        self_s[g] = r[f"self_{key}"]
        test_s[g] = r[f"test_{key}"]
        pnorm_s[g] = r[f"pnorm_{key}"]
        params[g] = r[f"dtheta_{key}"] / R
        steps[g] = int(np.max(r["steps"]))
        finite[g] = bool(r["finite"])
    return MLPEffects(
        method=f"retrain-{definition}",
        params=params,
        self_loss=self_s.mean(axis=1),
        test_loss=test_s.mean(axis=1) if n_test else None,
        test_margin=None,
        group_weight=np.asarray(C.sum(axis=1)).ravel(),
        n_iter=steps,
        converged=finite,
        seeds=np.asarray(seeds),
        self_loss_seeds=self_s,
        test_loss_seeds=test_s if n_test else None,
        param_norm_seeds=pnorm_s,
    )


def retrain(
    model,
    X,
    y,
    groups,
    X_test=None,
    y_test=None,
    *,
    seeds=(0, 1, 2),
    sgd=None,
    definition="controlled",
    n_jobs=None,
    progress=None,
):
    """Actual effects of removing each group: SGD from theta_0 without it.

    For every seed r, theta_r = SGD(theta_0, data - U, r) with the fixed
    settings of ``sgd`` (:class:`SGDConfig`). ``definition="plain"`` reports
    f(theta_r) - f(theta_0); ``"controlled"`` reports
    f(theta_r) - f(SGD(theta_0, data, r)) (R more runs on the full data).
    Every effect field is the mean over the seeds; the per-seed values are in
    ``*_seeds``; ``params`` is the mean change of theta.

    Parameters
    ----------
    seeds : int or sequence of int
        ``R`` (meaning ``range(R)``) or the seeds themselves.
    n_jobs : int, optional
        Processes (default: up to 2); results do not depend on it.

    Returns
    -------
    MLPEffects (method ``"retrain-plain"`` or ``"retrain-controlled"``).
    """
    if definition not in ("plain", "controlled"):
        raise ValueError(
            f"definition must be 'plain' or 'controlled', got {definition!r}"
        )
    seeds = _check_seeds(seeds)
    _, _, C, Xt, _ = _check_inputs(model, X, y, groups, X_test, y_test)
    t0 = time.perf_counter()
    _, per_group = sgd_runs(
        model,
        X,
        y,
        groups,
        X_test,
        y_test,
        seeds=seeds,
        sgd=sgd,
        n_jobs=n_jobs,
        progress=progress,
        controlled=definition == "controlled",
    )
    eff = assemble(
        per_group,
        C.shape[0],
        seeds,
        C,
        definition,
        model.n_params,
        0 if Xt is None else Xt.shape[0],
    )
    eff.timings = {"seconds": time.perf_counter() - t0}
    return eff


def min_eigenvalue(curv, *, k=1, tol=1e-3, maxiter=300, seed=0):
    """Smallest eigenvalue(s) of the damped curvature by Lanczos (ARPACK),
    for diagnostics: negative means the damped Hessian is indefinite."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    p = curv.layout.n_params
    op = LinearOperator(
        (p, p), matvec=lambda v: curv.matvec(v[None, :])[0], dtype=np.float64
    )
    v0 = np.random.default_rng(seed).standard_normal(p)
    vals = eigsh(
        op, k=k, which="SA", tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=False
    )
    return np.sort(vals)
