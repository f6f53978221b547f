"""The logistic objective on one training set: the Python driver of `_loss`
and `_hessian`.

Objective (a sum, per-example weights s, lam = l2_reg)::

    F(theta; s) = sum_i s_i * l(y_i, x_i; theta) + lam/2 * ||coef||_F^2

Internally theta is a C-ordered ``(K', d + 1)`` matrix whose row ``k`` is
``[coef_k, intercept_k]`` (``K' = 1`` for binary problems), flattened to
``p = K' (d + 1)`` numbers. :func:`to_public` and :func:`from_public` convert
to and from the public flattening of the design contract,
``[coef (K' x d, row-major), intercept (K')]``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import _config, _groupsum, _hessian, _loss


class Objective:
    """Loss, gradient and Hessian of one (X, y) with a fixed l2_reg.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features) or CSR matrix
        Validated design matrix (float64, C-contiguous or canonical CSR).
    y : ndarray of shape (n_samples,)
        Encoded labels: float 0/1 for binary, int64 class codes otherwise.
    n_classes : int
        Number of classes (2 means binary, one logit per example).
    l2_reg : float
        Strength of the penalty on coef (the intercept is not penalised).
    """

    def __init__(self, X, y, n_classes, l2_reg):
        self.X = X
        self.sparse = sp.issparse(X)
        self.n_samples, self.n_features = X.shape
        self.n_classes = int(n_classes)
        self.binary = self.n_classes == 2
        self.n_logits = 1 if self.binary else self.n_classes
        self.n_params = self.n_logits * (self.n_features + 1)
        self.l2_reg = float(l2_reg)
        self.y = y
        # The penalty's diagonal in the internal layout: lam on coef, 0 on
        # the intercepts.
        reg = np.full((self.n_logits, self.n_features + 1), self.l2_reg)
        reg[:, -1] = 0.0
        self.reg_diag = reg.ravel()
        self._flat = None if self.binary else _flat_direction(self)

    # -- objective and gradient ----------------------------------------------

    def workspace(self):
        """A work buffer for :meth:`objgrad` (one per thread)."""
        if self.binary:
            return np.empty(self.n_samples)
        return np.empty((self.n_samples, self.n_logits))

    def objgrad(self, theta, s, work=None):
        """F(theta; s) and its gradient, both in the internal layout."""
        work = self.workspace() if work is None else work
        grad = np.empty((self.n_logits, self.n_features + 1))
        theta = np.ascontiguousarray(theta).reshape(grad.shape)
        if self.binary:
            args = (self.y, s, theta[0], self.l2_reg, work, grad[0])
            if self.sparse:
                X = self.X
                obj = _loss.binary_objgrad_csr(
                    X.data, X.indices, X.indptr, self.n_features, *args
                )
            else:
                obj = _loss.binary_objgrad_dense(self.X, *args)
        else:
            args = (self.y, s, theta, self.l2_reg, work, grad)
            if self.sparse:
                X = self.X
                obj = _loss.multinomial_objgrad_csr(
                    X.data, X.indices, X.indptr, self.n_features, *args
                )
            else:
                obj = _loss.multinomial_objgrad_dense(self.X, *args)
        return obj, grad.ravel()

    def abs_col_sums(self, s):
        """sum_i s_i |x_ij| per feature, shape (d,)."""
        if self.sparse:
            return np.asarray(abs(self.X).T @ s).ravel()
        # Dense X: one pass, without a copy of |X|.
        out = np.empty(self.n_features)
        _groupsum.rows_abs_sum(self.X, np.arange(self.n_samples, dtype=np.int64),
                               np.ascontiguousarray(s, dtype=np.float64), out)
        return out

    def grad_scale(self, s, col=None):
        """An upper bound on sum_i s_i |grad l_i| (its 2-norm).

        Every |dl/dz| is at most 1, so the gradient's terms are bounded by
        |x_ij| per coordinate: the gradient norm cannot be computed more
        accurately than a few ulps of this number. ``col`` may carry
        :meth:`abs_col_sums` of ``s`` when the caller has it.
        """
        col = self.abs_col_sums(s) if col is None else col
        per_logit = float(np.sqrt(np.dot(col, col) + float(np.sum(s)) ** 2))
        return per_logit * np.sqrt(self.n_logits)

    # -- per-example quantities ------------------------------------------------

    def logits(self, theta, X=None):
        """z = X coef^T + intercept, shape (n,) binary or (n, K) softmax."""
        X = self.X if X is None else X
        th = np.ascontiguousarray(theta, dtype=np.float64).reshape(
            self.n_logits, self.n_features + 1
        )
        if sp.issparse(X):
            Z = np.asarray(X @ th[:, :-1].T) + th[:, -1]
        else:
            X = np.ascontiguousarray(X, dtype=np.float64)
            Z = np.empty((X.shape[0], self.n_logits))
            _loss.logits_dense(X, th, Z)
        return Z[:, 0] if self.binary else Z

    def pointwise(self, theta, X=None, y=None):
        """Per-example loss, dl/dz and curvature (binary) or probabilities.

        Returns (loss, dloss, curv): binary dloss = sigma(z) - y and curv =
        sigma(z)(1 - sigma(z)), shape (n,); softmax dloss = p - onehot(y) and
        curv = p, shape (n, K).
        """
        y = self.y if y is None else y
        Z = np.ascontiguousarray(self.logits(theta, X), dtype=np.float64)
        n = Z.shape[0]
        loss = np.empty(n)
        if self.binary:
            dloss, curv = np.empty(n), np.empty(n)
            _loss.binary_pointwise(Z, y, loss, dloss, curv)
            return loss, dloss, curv
        prob = np.empty_like(Z)
        _loss.multinomial_pointwise(Z, y, loss, prob)
        dloss = prob.copy()
        # p_y - 1 as minus the other probabilities: no cancellation.
        rows = np.arange(n)
        dloss[rows, y] = 0.0
        dloss[rows, y] = -dloss.sum(axis=1)
        return loss, dloss, prob

    def weighted_rows_gradient(self, dloss, C):
        """Rows sum_i C[g, i] * grad l_i for a (G, n) CSR matrix C, (G, p).

        ``dloss`` is the per-example derivative with respect to the logits.
        """
        dl = dloss.reshape(dloss.shape[0], -1)
        return self.entry_sums(C, C.data[:, None] * dl[C.indices])

    def weighted_rows_gradients(self, dlosses, C):
        """:meth:`weighted_rows_gradient` for several binary derivatives
        (each of shape (n,)) in one pass over the groups' rows (dense X)."""
        if not self.binary or self.sparse:
            return [self.weighted_rows_gradient(dl, C) for dl in dlosses]
        vals = np.empty((C.nnz, len(dlosses)))
        for k, dl in enumerate(dlosses):
            np.multiply(C.data, dl[C.indices], out=vals[:, k])
        out = np.empty((C.shape[0], len(dlosses), self.n_features + 1))
        _dense_entry_sums(self.X, C, vals, out)
        return [out[:, k] for k in range(len(dlosses))]

    def entry_sums(self, C, values):
        """Rows sum_q values[q] (x) xt_{i_q} over the stored entries of C.

        ``values`` has one row of K' numbers per stored entry q = (g, i) of
        the CSR matrix C; the result is (G, p) in the internal layout. Dense
        X: one AXPY per entry and logit, reading each group's rows once (see
        `_dense_entry_sums`); CSR X: one sparse-times-sparse product per
        logit. Never a Python loop over groups.
        """
        G = C.shape[0]
        out = np.empty((G, self.n_logits, self.n_features + 1))
        values = np.asarray(values).reshape(C.nnz, self.n_logits)
        if not self.sparse:
            _dense_entry_sums(self.X, C, np.ascontiguousarray(values,
                                                              dtype=np.float64),
                              out)
            return out.reshape(G, -1)
        for k in range(self.n_logits):
            V = sp.csr_matrix((values[:, k], C.indices, C.indptr), shape=C.shape)
            prod = V @ self.X if V.nnz else 0.0
            out[:, k, :-1] = prod.toarray() if sp.issparse(prod) else prod
            out[:, k, -1] = np.asarray(V.sum(axis=1)).ravel()
        return out.reshape(G, -1)

    def group_dots(self, C, U):
        """xt_i . u_g (per logit) for every stored entry (g, i) of C.

        ``U`` is (G, p) internal layout; returns (nnz, K').
        """
        U = np.ascontiguousarray(U, dtype=np.float64).reshape(
            C.shape[0], self.n_logits, self.n_features + 1)
        indptr = C.indptr.astype(np.int64)
        indices = C.indices.astype(np.int64)
        out = np.empty((C.nnz, self.n_logits))
        G = C.shape[0]
        if self.sparse:
            X = self.X
            _groupsum.rows_dot_csr(indptr, indices, X.data, X.indices,
                                   X.indptr, U, out, 0, G)
        else:
            _groupsum.rows_dot_dense(indptr, indices, self.X, U, out, 0, G)
        return out

    def group_hessian_vec(self, W, curv, U):
        """H_U u_g for every group at once, (G, p) internal layout.

        ``W`` is the (G, n) CSR matrix of removed weights, ``curv`` the
        per-example curvature (binary) or probabilities (softmax) at the fit,
        ``U`` the (G, p) directions. Cost: two passes over the groups' rows.
        """
        Z = self.group_dots(W, U)
        w = W.data[:, None]
        if self.binary:
            vals = w * curv[W.indices][:, None] * Z
        else:
            P = curv[W.indices]
            vals = w * (P * Z - P * np.sum(P * Z, axis=1, keepdims=True))
        return self.entry_sums(W, vals)

    def hessian_vec(self, curv, s, U, chunk=None):
        """(H_loss + penalty) u_g for G directions, without forming H.

        ``curv`` and ``s`` as in :meth:`loss_hessian` (every row, weights
        s); ``U`` is (G, p) internal layout. Two GEMMs (X U^T, then X^T of
        the scaled logits) per chunk of directions; ``chunk`` bounds the
        (n, chunk, K') work array (default: about 32 MB of it). The flat
        softmax direction gets no curvature here: callers keep directions
        centred (see :meth:`centre`). A direction's result can differ in
        the last bits with the number of directions multiplied alongside
        it (BLAS kernels change with matrix shapes).
        """
        U = np.ascontiguousarray(U, dtype=np.float64)
        G = U.shape[0]
        K, d1 = self.n_logits, self.n_features + 1
        if chunk is None:
            chunk = max(1, (1 << 22) // max(1, self.n_samples * K))
        out = np.empty_like(U)
        for lo in range(0, G, chunk):
            V = U[lo:lo + chunk].reshape(-1, K, d1)
            m = V.shape[0]
            coef = V[:, :, :-1].reshape(m * K, d1 - 1)
            Z = np.asarray(self.X @ coef.T).reshape(self.n_samples, m, K)
            Z += V[:, :, -1][None, :, :]
            if self.binary:
                A = (s * curv)[:, None, None] * Z
            else:
                P = curv[:, None, :]
                A = P * Z
                A -= P * np.sum(A, axis=2, keepdims=True)
                A *= s[:, None, None]
            A2 = A.reshape(self.n_samples, m * K)
            res = np.empty((m, K, d1))
            res[:, :, :-1] = np.asarray(self.X.T @ A2).T.reshape(m, K, d1 - 1)
            res[:, :, -1] = A.sum(axis=0)
            out[lo:lo + m] = res.reshape(m, -1)
        out += self.reg_diag * U
        return out

    def hessian_diag(self, curv, s):
        """The diagonal of H_loss + penalty (a Jacobi preconditioner), (p,)."""
        X2 = self.X.multiply(self.X) if self.sparse else self.X * self.X
        if self.binary:
            c = (s * curv)[:, None]
        else:
            c = s[:, None] * curv * (1.0 - curv)
        out = np.empty((self.n_logits, self.n_features + 1))
        out[:, :-1] = np.asarray(X2.T @ c).T
        out[:, -1] = c.sum(axis=0)
        return out.ravel() + self.reg_diag

    def point_gradients(self, dloss, X):
        """Per-example loss gradients as rows, shape (n_points, p)."""
        dl = dloss.reshape(dloss.shape[0], -1)
        Xd = X.toarray() if sp.issparse(X) else X
        out = np.empty((Xd.shape[0], self.n_logits, self.n_features + 1))
        out[:, :, :-1] = dl[:, :, None] * Xd[:, None, :]
        out[:, :, -1] = dl
        return out.reshape(Xd.shape[0], -1)

    # -- Hessians --------------------------------------------------------------

    def loss_hessian(self, curv, rows, coef):
        """sum_{r} coef[r] * Hessian of l_{rows[r]}, internal layout (p, p).

        ``curv`` is the per-example curvature from :meth:`pointwise` (binary)
        or the class probabilities (softmax), for every training row.
        """
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        H = np.empty((self.n_params, self.n_params))
        if self.sparse:
            return _sparse_hessian(self, curv, rows, coef)
        chunk = _config.get("chunk_rows")
        if self.binary:
            scaled = coef * curv[rows]

            def assemble(lo, hi, out):
                _hessian.binary_hessian(self.X, rows[lo:hi], scaled[lo:hi],
                                        out, chunk)
        else:
            def assemble(lo, hi, out):
                _hessian.multinomial_hessian(self.X, rows[lo:hi], coef[lo:hi],
                                             curv, out, chunk)

        _assemble_in_parts(assemble, rows.size, H, chunk)
        return H

    def regularised(self, H_loss, scale=None):
        """H_loss + the penalty, plus (softmax) a term on the flat direction.

        With unpenalised intercepts the softmax objective is flat along
        "add c to every intercept" (direction v). Adding c v v^T makes the
        matrix positive definite without changing any solve whose right-hand
        side is orthogonal to v, which every gradient is.
        """
        H = H_loss.copy()
        H[np.diag_indices_from(H)] += self.reg_diag
        if self._flat is not None:
            v = self._flat
            idx = np.flatnonzero(v)
            c = scale if scale is not None else _intercept_curvature(H, idx)
            H[np.ix_(idx, idx)] += c * np.outer(v[idx], v[idx])
        return H

    def centre(self, theta):
        """Project out the flat direction (softmax); a no-op for binary."""
        if self._flat is None:
            return theta
        th = np.array(theta, dtype=np.float64).reshape(-1, self.n_logits,
                                                       self.n_features + 1)
        th[:, :, -1] -= th[:, :, -1].mean(axis=1, keepdims=True)
        return th.reshape(np.shape(theta))


# Group sums over dense X split the groups across one thread per core when
# there are at least this many stored entries (below it, threads cost more
# than they save).
_THREAD_MIN_NNZ = 200_000


def _dense_entry_sums(X, C, values, out):
    """out[g, k] = sum_q values[q, k] [x_{i_q}, 1] over group g's entries.

    ``X`` dense (n, d), ``C`` (G, n) CSR, ``values`` (nnz, m), ``out``
    (G, m, d + 1). `_groupsum.rows_sum_dense` does one AXPY per entry and
    column, in one thread per core over runs of groups with equal shares of
    the entries (BLAS kept to one thread each). A dense (groups x n) block
    times X by GEMM was tried for groups holding a large share of the rows;
    on this kind of machine it was slower than the AXPYs even at 25 %.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    indptr = C.indptr.astype(np.int64)
    indices = C.indices.astype(np.int64)
    G = C.shape[0]
    cores = os.cpu_count() or 1
    n_parts = cores if C.nnz >= _THREAD_MIN_NNZ else 1
    cuts = np.searchsorted(indptr, np.linspace(0, indptr[-1], n_parts + 1))
    cuts[0], cuts[-1] = 0, G
    spans = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def run(span):
        _groupsum.rows_sum_dense(indptr, indices, values, X, out, *span)

    if len(spans) <= 1:
        for span in spans:
            run(span)
        return
    with _config.blas_threads_for(len(spans)), \
            ThreadPoolExecutor(max_workers=len(spans)) as pool:
        list(pool.map(run, spans))


# A Hessian with at least this many multiply-adds (rows x p^2 / 2) is
# assembled in one thread per BLAS thread over contiguous blocks of rows,
# each block by one single-threaded SYRK per chunk, and the partial sums are
# added in block order. Two BLAS threads inside one SYRK leave the row
# scaling before it on one core and split a 1,024-row SYRK badly; blocks use
# every core for both. Below it, thread start-up costs more than it saves.
_PARALLEL_HESSIAN_WORK = 2.5e8
_BLAS = None


def _blas_threads():
    """BLAS threads currently allowed (1 without threadpoolctl)."""
    global _BLAS
    if not _config.have_threadpoolctl():
        return 1
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController().select(user_api="blas")
    counts = [lib["num_threads"] for lib in _BLAS.info()]
    return max(1, min(counts)) if counts else 1


def _assemble_in_parts(assemble, n_rows, H, chunk):
    """H = sum over row blocks of assemble(lo, hi, H_block) (see above)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    p = H.shape[0]
    if n_rows * p * p / 2 < _PARALLEL_HESSIAN_WORK:
        assemble(0, n_rows, H)
        return
    parts = min(_blas_threads(), os.cpu_count() or 1,
                max(1, n_rows // (4 * chunk)))
    if parts < 2:
        assemble(0, n_rows, H)
        return
    cuts = np.linspace(0, n_rows, parts + 1).round().astype(int)
    blocks = [H] + [np.empty_like(H) for _ in range(parts - 1)]
    with _config.blas_threads_for(parts), \
            ThreadPoolExecutor(max_workers=parts) as pool:
        list(pool.map(lambda k: assemble(cuts[k], cuts[k + 1], blocks[k]),
                      range(parts)))
    for B in blocks[1:]:
        H += B


def _flat_direction(obj):
    v = np.zeros((obj.n_logits, obj.n_features + 1))
    v[:, -1] = 1.0 / np.sqrt(obj.n_logits)
    return v.ravel()


def _intercept_curvature(H, idx):
    # The curvature scale along the intercepts: their mean diagonal entry,
    # floored so a saturated model still gets a usable positive number.
    c = float(np.mean(np.diag(H)[idx]))
    return c if c > 0 else 1.0


def _sparse_hessian(obj, curv, rows, coef):
    X = obj.X[rows]
    n_rows = X.shape[0]
    Xt = sp.hstack([X, np.ones((n_rows, 1))], format="csr")
    p1 = obj.n_features + 1
    if obj.binary:
        D = sp.diags(coef * curv[rows])
        return np.asarray((Xt.T @ D @ Xt).toarray())
    P = curv[rows]
    K = obj.n_logits
    H = np.empty((obj.n_params, obj.n_params))
    for k in range(K):
        for m in range(k, K):
            w = coef * (P[:, k] * (k == m) - P[:, k] * P[:, m])
            B = (Xt.T @ sp.diags(w) @ Xt).toarray()
            H[k * p1:(k + 1) * p1, m * p1:(m + 1) * p1] = B
            H[m * p1:(m + 1) * p1, k * p1:(k + 1) * p1] = B.T
    return H


def public_permutation(n_logits, n_features):
    """perm with public[j] = internal[perm[j]] (see the module docstring)."""
    d1 = n_features + 1
    grid = np.arange(n_logits * d1).reshape(n_logits, d1)
    return np.concatenate([grid[:, :-1].ravel(), grid[:, -1]])


def to_public(theta_internal, n_logits, n_features):
    """Internal (..., p) rows to the public flattening."""
    perm = public_permutation(n_logits, n_features)
    return np.asarray(theta_internal)[..., perm]


def from_public(theta_public, n_logits, n_features):
    """Public flattening (..., p) back to the internal layout."""
    perm = public_permutation(n_logits, n_features)
    out = np.empty_like(np.asarray(theta_public, dtype=np.float64))
    out[..., perm] = theta_public
    return out
