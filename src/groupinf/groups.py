"""Groups of training points: parsing what users pass, and building the
standard kinds of group (random, by attribute value).

Internally a set of G groups is a sparse (G, n_samples) CSR matrix whose entry
(g, i) is the fraction of example i's weight that group g removes: 1 removes
the example, 0.5 halves its weight. Index lists and boolean masks become rows
of ones.
"""

from __future__ import annotations


import numpy as np
import scipy.sparse as sp


def as_matrix(groups, n_samples):
    """Parse ``groups`` into a (G, n_samples) CSR matrix of removal fractions.

    Parameters
    ----------
    groups : list of index arrays or boolean masks, or sparse (G, n) matrix
        Indices must be in ``[0, n_samples)`` and unique within a group;
        masks must have length ``n_samples``; matrix entries must lie in
        ``[0, 1]``. An empty group is allowed (its effect is exactly zero).
    n_samples : int

    Returns
    -------
    scipy.sparse.csr_matrix of shape (G, n_samples)
    """
    if groups is None:
        raise TypeError("groups is required, got None")
    if sp.issparse(groups):
        return _check_matrix(groups, n_samples)
    if isinstance(groups, np.ndarray) and groups.ndim == 2 and groups.dtype == bool:
        groups = list(groups)
    if isinstance(groups, (np.ndarray, str, bytes)) or not hasattr(
        groups, "__iter__"
    ):
        raise TypeError(
            "groups must be a list of index arrays or boolean masks, or a "
            "sparse (n_groups, n_samples) matrix"
        )
    parts = [_group_indices(group, g, n_samples) for g, group in
             enumerate(groups)]
    if not parts:
        raise ValueError("groups is empty: pass at least one group")
    indptr = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([p.size for p in parts], out=indptr[1:])
    indices = np.concatenate(parts) if indptr[-1] else np.empty(0, np.int64)
    M = sp.csr_matrix((np.ones(indices.size), indices, indptr),
                      shape=(len(parts), n_samples))
    M.sort_indices()
    _check_unique(M)
    return M


def _check_unique(M):
    # After sorting each row, a repeated index is two equal neighbours that
    # belong to the same row.
    same = np.diff(M.indices) == 0
    if not same.any():
        return
    starts = np.zeros(M.indices.size, dtype=bool)
    starts[M.indptr[:-1][M.indptr[:-1] < M.indices.size]] = True
    dup = np.flatnonzero(same & ~starts[1:])
    if dup.size:
        q = int(dup[0])
        g = int(np.searchsorted(M.indptr, q, side="right") - 1)
        raise ValueError(
            f"groups[{g}] lists index {int(M.indices[q])} more than once; "
            f"each index may appear once per group"
        )


def _group_indices(group, g, n_samples):
    arr = np.asarray(group)
    if arr.dtype == bool:
        if arr.shape != (n_samples,):
            raise ValueError(
                f"groups[{g}] is a boolean mask of shape {arr.shape}; it must "
                f"have shape ({n_samples},)"
            )
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(
            f"groups[{g}] must be a 1-D array of integer indices or a boolean "
            f"mask, got dtype {arr.dtype} and shape {arr.shape}"
        )
    idx = arr.astype(np.int64, copy=False)
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0:
        raise ValueError(
            f"groups[{g}] has negative index {lo}; indices must lie in "
            f"[0, {n_samples})"
        )
    if hi >= n_samples:
        raise ValueError(
            f"groups[{g}] has index {hi}, out of range for {n_samples} "
            f"training rows"
        )
    return idx


def _check_matrix(M, n_samples):
    M = sp.csr_matrix(M, dtype=np.float64)
    M.sum_duplicates()
    if M.ndim != 2 or M.shape[1] != n_samples:
        raise ValueError(
            f"groups matrix has shape {M.shape}; it must be (n_groups, "
            f"{n_samples})"
        )
    if M.shape[0] == 0:
        raise ValueError("groups matrix has no rows: pass at least one group")
    if not np.all(np.isfinite(M.data)):
        raise ValueError("groups matrix contains NaN or infinite entries")
    if M.nnz and (M.data.min() < 0 or M.data.max() > 1):
        raise ValueError(
            "groups matrix entries are fractions of weight to remove and must "
            f"lie in [0, 1]; got range [{M.data.min():g}, {M.data.max():g}]"
        )
    M.eliminate_zeros()
    M.sort_indices()
    return M


def check_kept_classes(C, codes, sample_weight, classes):
    """Refuse groups whose removal leaves a class (or everything) without weight."""
    n_classes = len(classes)
    onehot = sp.csr_matrix(
        (sample_weight, (np.arange(codes.size), codes.astype(np.int64))),
        shape=(codes.size, n_classes),
    )
    total = np.asarray(onehot.sum(axis=0)).ravel()
    removed = np.asarray((C @ onehot).todense())
    kept = total[None, :] - removed
    # Relative cut-off: a class whose kept weight is rounding noise is gone.
    gone = kept <= 1e-12 * total[None, :]
    if np.any(gone):
        g, k = np.argwhere(gone)[0]
        what = (
            "every training point"
            if np.all(gone[g])
            else f"all of class {classes[k]!r}"
        )
        raise ValueError(
            f"groups[{g}] removes {what}; the model without it is undefined "
            f"(the intercept diverges). Remove fewer points."
        )


# ---------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------


def size_grid(n_samples, n_groups, low=0.0025, high=0.25):
    """Group sizes spread log-uniformly from low * n to high * n (at least 1)."""
    sizes = np.geomspace(max(1.0, low * n_samples), high * n_samples, n_groups)
    return np.maximum(1, np.round(sizes)).astype(np.int64)


def random_groups(n_samples, sizes, seed=0):
    """One group of uniformly random distinct indices per entry of ``sizes``."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n_samples, int(k), replace=False)) for k in sizes]


def attribute_groups(columns, min_size=1):
    """One group per distinct value of each categorical column.

    Parameters
    ----------
    columns : dict of str -> array of shape (n_samples,)
    min_size : int
        Values held by fewer rows are skipped.

    Returns
    -------
    groups : list of ndarray
    names : list of (column, value) tuples, aligned with ``groups``
    """
    groups, names = [], []
    for col, values in columns.items():
        values = np.asarray(values)
        for v in np.unique(values):
            idx = np.flatnonzero(values == v)
            if idx.size >= min_size:
                groups.append(idx)
                names.append((col, str(v)))
    return groups, names
