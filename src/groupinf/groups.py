"""Groups of training points: parsing what users pass, and building the
standard kinds of group (random, by attribute value).

Internally a set of G groups is a sparse (G, n_samples) CSR matrix whose entry
(g, i) is the fraction of example i's weight that group g removes: 1 removes
the example, 0.5 halves its weight. Index lists and boolean masks become rows
of ones.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._validation import (
    _check_sparse_structure,
    check_labels,
    check_positive_int,
    check_X,
)


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
    groups = list(groups)
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
    _check_unique(M, groups)
    return M


def _check_unique(M, groups):
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
        hint = ""
        given = np.asarray(groups[g])
        if given.shape == (M.shape[1],) and np.all((given == 0) | (given == 1)):
            # A 0/1 vector of integers of length n is a mask in disguise.
            hint = (
                f" (it is a 0/1 vector of length {M.shape[1]}: to use it as "
                f"a mask, pass it as .astype(bool))"
            )
        raise ValueError(
            f"groups[{g}] lists index {int(M.indices[q])} more than once; "
            f"each index may appear once per group{hint}"
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
        hint = ""
        if arr.ndim == 1 and arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            # Float indices are refused as NumPy refuses them, but say how.
            hint = "; these floats are whole numbers: pass them as .astype(int)"
        raise TypeError(
            f"groups[{g}] must be a 1-D array of integer indices or a boolean "
            f"mask, got dtype {arr.dtype} and shape {arr.shape}{hint}"
        )
    # Compare before any cast: uint64 values above 2^63 would wrap negative.
    lo, hi = int(arr.min()), int(arr.max())
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
    return arr.astype(np.int64, copy=False)


def _check_matrix(M, n_samples):
    if M.dtype.kind not in "biuf":
        raise TypeError(
            f"groups matrix must hold real fractions in [0, 1], got dtype "
            f"{M.dtype}"
        )
    # Malformed index arrays would make the conversions below (and the
    # kernels) read out of bounds.
    _check_sparse_structure(M, "groups matrix")
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
            else f"all of class {classes[k].item()!r}"
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


def random_within_class(y, sizes, seed=0):
    """Uniformly random subsets of a single class, the classes taken in turn.

    Group ``g`` draws ``sizes[g]`` distinct points of one class; the classes
    are visited in sorted order, cycling. A class of ``c`` points gives at most
    ``c - 1`` of them, so no group removes a whole class (the model without
    it is undefined). Classes with a single point are skipped.

    Parameters
    ----------
    y : array of shape (n_samples,)
        Class labels.
    sizes : array of int of shape (n_groups,)
        Requested group sizes, each in ``[1, n_samples]``, e.g. from
        :func:`size_grid`.
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    groups : list of ndarray of int64, sorted
        ``n_groups`` index arrays.
    names : list of str
        Labels like ``"class=3 k=75"``; ``k`` is the size actually drawn.
    """
    y = check_labels(y)
    sizes = _check_counts(sizes, "sizes", y.shape[0])
    classes, codes = np.unique(y, return_inverse=True)
    members = [np.flatnonzero(codes == c) for c in range(classes.size)]
    usable = [c for c in range(classes.size) if members[c].size >= 2]
    if not usable:
        raise ValueError(
            "y has no class with two or more points, so no group can stay "
            "inside a class without removing all of it"
        )
    rng = np.random.default_rng(seed)
    groups, names = [], []
    for g, k in enumerate(sizes):
        c = usable[g % len(usable)]
        k = min(int(k), members[c].size - 1)
        groups.append(np.sort(rng.choice(members[c], k, replace=False)))
        names.append(f"class={classes[c]} k={k}")
    return groups, names


def influence_tails(point_influence, sizes):
    """The k points of largest and of smallest influence, for each size k.

    Parameters
    ----------
    point_influence : array of shape (n_samples,)
        One score per training point, e.g. each point's first-order effect
        on one test point's loss.
    sizes : array of int of shape (n_sizes,)
        Tail sizes, each in ``[1, n_samples]``.

    Returns
    -------
    groups : list of ndarray of int64, sorted
        ``2 * n_sizes`` index arrays: the positive tails (largest scores) for
        every size, then the negative tails (smallest scores).
    names : list of str
        ``"pos-tail k=75"``, ``"neg-tail k=75"``.

    Notes
    -----
    Ties are broken by index (a stable sort), so the result is reproducible
    but, among equal scores, arbitrary.
    """
    scores = _check_vector(point_influence, "point_influence")
    n = scores.size
    sizes = _check_counts(sizes, "sizes", n)
    order = np.argsort(scores, kind="stable")
    groups = [np.sort(order[n - k :]) for k in sizes]
    groups += [np.sort(order[:k]) for k in sizes]
    names = [f"pos-tail k={k}" for k in sizes] + [f"neg-tail k={k}" for k in sizes]
    return groups, names


def feature_windows(x, sizes, *, n_offsets=3, name="x"):
    """Runs of consecutive points along one feature.

    The points are sorted by ``x``; each window is a contiguous run of that
    order. Each size ``k`` gets ``n_offsets`` windows whose starts are evenly
    spaced over ``[0, n_samples - k]``: with the default 3, the k smallest
    values, the middle k and the k largest. A single offset gives the middle.

    Parameters
    ----------
    x : array of shape (n_samples,)
        The feature, e.g. ``X[:, j]`` or an attribute such as age.
    sizes : array of int of shape (n_sizes,)
        Window sizes, each in ``[1, n_samples]``.
    n_offsets : int
        Windows per size.
    name : str
        The feature's name in the labels.

    Returns
    -------
    groups : list of ndarray of int64, sorted
        Up to ``n_sizes * n_offsets`` index arrays (a window that would
        repeat an earlier one of the same size is left out).
    names : list of str
        ``"window x[a..b]"`` with ``a``, ``b`` the smallest and largest value
        of ``x`` in the window.

    Notes
    -----
    Ties in ``x`` are broken by index, so a window that starts or ends inside
    a run of equal values takes the lower-indexed of them.
    """
    x = _check_vector(x, "x")
    n = x.size
    sizes = _check_counts(sizes, "sizes", n)
    n_offsets = check_positive_int(n_offsets, "n_offsets")
    fractions = [0.5] if n_offsets == 1 else np.linspace(0.0, 1.0, n_offsets)
    order = np.argsort(x, kind="stable")
    groups, names = [], []
    for k in sizes:
        starts = dict.fromkeys(round(f * (n - k)) for f in fractions)
        for a in starts:
            run = order[a : a + k]
            groups.append(np.sort(run))
            names.append(f"window {name}[{x[run[0]]:.4g}..{x[run[-1]]:.4g}]")
    return groups, names


def feature_clusters(
    X,
    ks,
    seed=0,
    method="kmeans",
    *,
    n_components=50,
    n_prototypes=1000,
    max_iter=100,
    n_init=1,
):
    """Clusters of the training points in feature space, at several k.

    Each cluster is one group; the clusters of one k partition the points.

    Parameters
    ----------
    X : ndarray or sparse matrix of shape (n_samples, n_features)
        Distances are Euclidean on X as given: scale the columns first if
        they are not comparable.
    ks : array of int of shape (n_ks,)
        Numbers of clusters, each in ``[1, n_samples]`` (and at most
        ``n_prototypes`` for ``method="hierarchical"`` on more than
        ``n_prototypes`` points).
    seed : int
        Seeds the projection, the k-means initialisation and the prototypes.
        The clustering at one k depends only on ``seed`` and ``k``, not on
        the other entries of ``ks``.
    method : {"kmeans", "hierarchical"}
        Lloyd's k-means from a greedy k-means++ start, or Ward's agglomerative
        clustering cut at each k.
    n_components : int or None
        X with more columns than this is replaced by its projection on its
        top ``n_components`` principal components (see Notes). None clusters
        X itself (a sparse X is then densified).
    n_prototypes : int
        Ward's clustering starts from this many k-means prototypes (see
        Notes); its memory is O(n_prototypes ** 2).
    max_iter : int
        Maximum Lloyd iterations per k-means run.
    n_init : int
        k-means runs per k from different starts; the one with the smallest
        within-cluster sum of squares is kept. One run can end in a local
        minimum that merges two clusters and splits a third.

    Returns
    -------
    groups : list of ndarray of int64, sorted
        For each k in turn, its non-empty clusters in order of their first
        member.
    names : list of str
        ``"kmeans k=10 #3"`` or ``"ward k=10 #3"``: cluster 3 of 10.

    Notes
    -----
    *Projection.* With more than ``n_components`` columns, X is centred
    (implicitly: a sparse X stays sparse) and projected on its leading right
    singular vectors, found by a randomised range finder with a seeded
    Gaussian start and four power iterations (Halko, Martinsson and Tropp,
    2011). Its cost is a dozen products of X with an (n_features, ~60) block,
    bounded and independent of the spectrum; ARPACK (``svds``) was ~30 times
    slower on a flat-spectrum 20,000 x 17,000 bag of words. Where the
    spectrum is flat the subspace is approximate, which matters little for
    clustering.

    *Ward without O(n^2) memory.* When n_samples exceeds ``n_prototypes``,
    k-means first reduces the points to ``n_prototypes`` prototypes (fitted
    from a random start on a sample of 10 points per prototype, at most 20
    Lloyd iterations, then every point assigned to its nearest prototype;
    on 60,000 x 50 this takes ~1.5 s and ~75 MB). Ward's clustering of the
    prototypes, each weighted by its number of points, is exactly Ward's
    clustering of the points started from that partition rather than from
    singletons: merging clusters A and B costs
    ``|A| |B| / (|A| + |B|) * ||mean_A - mean_B||^2``, the increase in the
    within-cluster sum of squares. Each point takes its prototype's cluster.
    On at most ``n_prototypes`` points the clustering is exact Ward (the
    same partitions as ``scipy.cluster.hierarchy.linkage(X, "ward")`` cut by
    ``fcluster(..., criterion="maxclust")``).

    *k-means.* Lloyd's iterations stop when at most 0.1 % of the points
    change cluster or the within-cluster sum of squares falls by at most a
    relative 1e-4 (or after ``max_iter``); distances are computed in blocks
    of 2**22 entries, so memory is O(n_samples * n_components) for any k.

    *Sizes.* Clusters are not size-controlled: on real data one may hold
    more than 25 % of the points. Such clusters are kept, being real
    structure; filter on size if the study needs a bound. Empty clusters
    are dropped, so X with fewer than k distinct rows gives fewer than k
    groups.
    """
    X = check_X(X)
    n = X.shape[0]
    ks = _check_counts(ks, "ks", n)
    if method not in ("kmeans", "hierarchical"):
        raise ValueError(f"method must be 'kmeans' or 'hierarchical', got {method!r}")
    if n_components is not None:
        n_components = check_positive_int(n_components, "n_components")
    n_prototypes = check_positive_int(n_prototypes, "n_prototypes", minimum=2)
    max_iter = check_positive_int(max_iter, "max_iter")
    n_init = check_positive_int(n_init, "n_init")
    Z = _principal_scores(X, n_components, _stream(seed, 0))
    if method == "kmeans":
        return _kmeans_groups(Z, ks, seed, max_iter, n_init, "kmeans")
    if n > n_prototypes and ks.max() > n_prototypes:
        raise ValueError(
            f"ks has k={ks.max()}, more than n_prototypes={n_prototypes}; "
            f"raise n_prototypes to cut Ward's tree that fine"
        )
    return _ward_groups(Z, ks, seed, n_prototypes)


def gradient_clusters(
    per_example_gradients, ks, seed=0, *, n_components=64, max_iter=100, n_init=1
):
    """k-means clusters of the per-example loss gradients, at several k.

    Points whose gradients at theta_hat point the same way pull the fit the
    same way, so their group's removal effect adds up rather than cancels.

    Parameters
    ----------
    per_example_gradients : ndarray of shape (n_samples, n_params)
        Row i is the gradient of example i's loss at the fitted parameters.
    ks : array of int of shape (n_ks,)
        Numbers of clusters, each in ``[1, n_samples]``.
    seed : int
        Seeds the projection and the k-means initialisations.
    n_components : int
        Gradients with more columns are first multiplied by a seeded Gaussian
        matrix of shape (n_params, n_components), scaled by
        ``1 / sqrt(n_components)``, which preserves distances approximately
        (Johnson-Lindenstrauss).
    max_iter : int
        Maximum Lloyd iterations per k-means run.
    n_init : int
        k-means runs per k; the one with the smallest sum of squares is kept.

    Returns
    -------
    groups : list of ndarray of int64, sorted
        For each k in turn, its non-empty clusters in order of first member.
    names : list of str
        ``"grad-kmeans k=10 #3"``.
    """
    G = check_X(per_example_gradients, "per_example_gradients")
    n, p = G.shape
    ks = _check_counts(ks, "ks", n)
    n_components = check_positive_int(n_components, "n_components")
    max_iter = check_positive_int(max_iter, "max_iter")
    n_init = check_positive_int(n_init, "n_init")
    if p > n_components:
        R = _stream(seed, 0).standard_normal((p, n_components))
        Z = np.asarray(G @ R) / np.sqrt(n_components)
    else:
        Z = G.toarray() if sp.issparse(G) else G
    return _kmeans_groups(Z, ks, seed, max_iter, n_init, "grad-kmeans")


@dataclass
class GroupSet:
    """Groups with a short label and a kind each, to concatenate and filter.

    Parameters
    ----------
    groups : list of ndarray of int64
        Sorted index arrays.
    names : list of str
        One label per group, e.g. ``"pos-tail k=75"``.
    kinds : list of str
        One kind per group, e.g. ``"tails"``.

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> gs = GroupSet.of("random", random_groups(6, [2, 3])) + GroupSet.of(
    ...     "within-class", *random_within_class(y, [2, 3]))
    >>> len(gs), gs.select("random").names
    (4, ['k=2', 'k=3'])
    """

    groups: list
    names: list
    kinds: list

    def __post_init__(self):
        self.groups = list(self.groups)
        self.names = [str(v) for v in self.names]
        self.kinds = [str(v) for v in self.kinds]
        if not len(self.groups) == len(self.names) == len(self.kinds):
            raise ValueError(
                f"groups, names and kinds must have the same length, got "
                f"{len(self.groups)}, {len(self.names)} and {len(self.kinds)}"
            )

    @classmethod
    def of(cls, kind, groups, names=None):
        """One builder's output under one kind.

        ``names`` defaults to ``"k=<size>"``; tuples such as the
        ``(column, value)`` names of :func:`attribute_groups` become
        ``"column=value"``.
        """
        groups = list(groups)
        if names is None:
            names = [f"k={np.size(g)}" for g in groups]
        names = ["=".join(map(str, v)) if isinstance(v, tuple) else v for v in names]
        return cls(groups, names, [kind] * len(groups))

    @classmethod
    def concat(cls, sets):
        """All groups of ``sets``, in order."""
        out = cls([], [], [])
        for s in sets:
            out = out + s
        return out

    def __add__(self, other):
        if not isinstance(other, GroupSet):
            return NotImplemented
        return GroupSet(
            self.groups + other.groups,
            self.names + other.names,
            self.kinds + other.kinds,
        )

    def __radd__(self, other):
        # Lets sum(list_of_sets) start from 0.
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def __len__(self):
        return len(self.groups)

    @property
    def sizes(self):
        """Points per group, shape (n_groups,)."""
        return np.array([np.size(g) for g in self.groups], dtype=np.int64)

    def select(self, kind):
        """The groups of one kind (a str) or of several (a list of str)."""
        wanted = {kind} if isinstance(kind, str) else set(kind)
        keep = [i for i, k in enumerate(self.kinds) if k in wanted]
        return GroupSet(
            [self.groups[i] for i in keep],
            [self.names[i] for i in keep],
            [self.kinds[i] for i in keep],
        )

    def to_matrix(self, n_samples):
        """The groups as a (n_groups, n_samples) CSR matrix of ones."""
        return as_matrix(self.groups, n_samples)


# ---------------------------------------------------------------------------
# Builders: checks and clustering steps
# ---------------------------------------------------------------------------

# Distance blocks of at most this many entries (32 MB) keep k-means memory at
# O(n * d + block), whatever k is.
_BLOCK = 1 << 22

# Prototype k-means for Ward only has to summarise the points, not converge:
# it is fitted on a sample of this many points per prototype, for at most
# this many iterations, and then every point is assigned once.
_PROTOTYPE_SAMPLE = 10
_PROTOTYPE_ITER = 20

# Lloyd's iterations stop once at most this fraction of the points changes
# cluster, or the sum of squared distances falls by at most this relative
# amount: on a plateau each further full pass moves a few boundary points
# (unstructured data can crawl like that for a hundred passes).
_CHANGED_TOL = 1e-3
_INERTIA_RTOL = 1e-4

_POWER_ITER = 4
_OVERSAMPLE = 10


def _check_counts(values, name, n):
    """A non-empty 1-D int64 array of integers in [1, n]."""
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of integers")
    if arr.dtype.kind not in "iuf" or (
        arr.dtype.kind == "f" and not np.all(arr == np.round(arr))
    ):
        raise ValueError(f"{name} must hold integers, got {arr.tolist()[:5]}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 1 or hi > n:
        bad = lo if lo < 1 else hi
        raise ValueError(f"{name} has {bad}; each must lie in [1, {n}]")
    return arr


def _check_vector(v, name):
    arr = np.asarray(v)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _stream(seed, *key):
    """A generator for (seed, key), independent of the other keys' draws."""
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
    ):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _principal_scores(X, n_components, rng):
    """X itself (dense), or its top principal component scores (n, r)."""
    n, d = X.shape
    if n_components is None or d <= n_components:
        return X.toarray() if sp.issparse(X) else X
    r = min(n_components, n)
    mean = np.asarray(X.mean(axis=0)).ravel()

    # The centred X - 1 mean^T, applied without forming it.
    def A(V):
        return np.asarray(X @ V) - mean @ V

    def At(U):
        return np.asarray(X.T @ U) - np.multiply.outer(mean, U.sum(axis=0))

    # 1. Range finder: an orthonormal basis Q of A's dominant column space,
    #    sharpened by power iterations (QR between them for stability).
    width = min(r + _OVERSAMPLE, n, d)
    Q = np.linalg.qr(A(rng.standard_normal((d, width))))[0]
    for _ in range(_POWER_ITER):
        Q = np.linalg.qr(At(Q))[0]
        Q = np.linalg.qr(A(Q))[0]

    # 2. A ~ Q Q^T A; the SVD of the small Q^T A gives the scores U S.
    u, s, _ = np.linalg.svd(At(Q).T, full_matrices=False)
    r = min(r, s.size)
    return np.ascontiguousarray((Q @ u[:, :r]) * s[:r])


def _label_groups(labels):
    """Sorted index arrays of each non-empty label, by first member."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    parts = np.split(order, np.cumsum(counts[counts > 0])[:-1])
    parts.sort(key=lambda g: g[0])
    return [g.astype(np.int64) for g in parts]


def _kmeans_groups(Z, ks, seed, max_iter, n_init, label):
    groups, names = [], []
    for k in ks:
        runs = [
            _kmeans(Z, int(k), _stream(seed, 1, int(k), r), max_iter)
            for r in range(n_init)
        ]
        labels = min(runs, key=lambda run: run[2])[0]
        found = _label_groups(labels)
        groups += found
        names += [f"{label} k={k} #{j}" for j in range(len(found))]
    return groups, names


def _nearest(Z, sq, centres):
    """Nearest centre of each row and the squared distance to it."""
    n, k = Z.shape[0], centres.shape[0]
    csq = np.einsum("ij,ij->i", centres, centres)
    minus2c = -2.0 * centres
    labels = np.empty(n, dtype=np.int64)
    d2 = np.empty(n)
    step = max(1, _BLOCK // k)
    for a in range(0, n, step):
        b = min(n, a + step)
        # ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2; ||z||^2 does not change
        # the argmin, so it is added afterwards.
        D = Z[a:b] @ minus2c.T
        D += csq
        lab = D.argmin(axis=1)
        labels[a:b] = lab
        d2[a:b] = D[np.arange(b - a), lab] + sq[a:b]
    return labels, np.maximum(d2, 0.0, out=d2)


def _kmeanspp(Z, sq, k, rng):
    """Greedy k-means++ start (Arthur and Vassilvitskii, 2007).

    Each new centre is the best, for the sum of squared distances, of
    ``2 + log(k)`` candidates drawn with probability ~ D(z)^2; one candidate
    per step too often puts two centres in one cluster.
    """
    n = Z.shape[0]
    n_cand = 2 + int(np.log(k))
    idx = np.empty(k, dtype=np.int64)
    idx[0] = rng.integers(n)
    d2 = np.maximum(sq - 2.0 * (Z @ Z[idx[0]]) + sq[idx[0]], 0.0)
    for j in range(1, k):
        cum = np.cumsum(d2)
        if cum[-1] > 0:
            cand = np.searchsorted(cum, rng.random(n_cand) * cum[-1], "right")
            cand = np.minimum(cand, n - 1)
        else:  # every point sits on a centre already
            cand = rng.integers(n, size=1)
        dc = sq[:, None] - 2.0 * (Z @ Z[cand].T) + sq[cand]
        np.minimum(dc, d2[:, None], out=dc)
        best = int(np.maximum(dc, 0.0).sum(axis=0).argmin())
        idx[j] = cand[best]
        d2 = np.maximum(dc[:, best], 0.0)
    return Z[idx].copy()


def _kmeans(Z, k, rng, max_iter, init="k-means++"):
    """Lloyd's iterations: labels (n,), centres (k, d) and their sum of
    squared distances."""
    n = Z.shape[0]
    sq = np.einsum("ij,ij->i", Z, Z)
    if init == "k-means++":
        centres = _kmeanspp(Z, sq, k, rng)
    else:
        centres = Z[np.sort(rng.choice(n, k, replace=False))].copy()
    labels = np.full(n, -1, dtype=np.int64)
    inertia = np.inf
    for _ in range(max_iter):
        new, d2 = _nearest(Z, sq, centres)
        changed = np.count_nonzero(new != labels)
        previous, inertia = inertia, float(d2.sum())
        labels = new
        if changed <= _CHANGED_TOL * n or previous - inertia <= _INERTIA_RTOL * inertia:
            break

        # Means as one sparse (k, n) indicator product: O(n d), no n x k array.
        counts = np.bincount(labels, minlength=k)
        ind = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        sums = np.asarray(ind @ Z)
        full = counts > 0
        centres[full] = sums[full] / counts[full, None]

        # An empty cluster restarts at the points worst served so far.
        empty = np.flatnonzero(~full)
        if empty.size:
            far = np.argsort(d2, kind="stable")[::-1][: empty.size]
            centres[empty] = Z[far]
    return labels, centres, inertia


def _ward_merges(C, w):
    """Ward's agglomeration of weighted points C (m, d), weights w (m,).

    Returns the (m - 1, 2) pairs (i, j), i < j, in merge order; cluster j
    joins slot i. Memory O(m^2), time O(m^2 d) plus rescans.
    """
    m = C.shape[0]
    C = np.array(C, dtype=np.float64)
    w = np.array(w, dtype=np.float64)
    alive = np.ones(m, dtype=bool)

    # Merge cost w_a w_b / (w_a + w_b) ||c_a - c_b||^2, from direct
    # differences (the expanded form loses close pairs to cancellation).
    D = np.empty((m, m))
    step = max(1, _BLOCK // max(1, m * C.shape[1]))
    for a in range(0, m, step):
        diff = C[a : a + step, None, :] - C[None, :, :]
        wa = w[a : a + step, None]
        D[a : a + step] = wa * w / (wa + w) * np.einsum("abk,abk->ab", diff, diff)
    np.fill_diagonal(D, np.inf)
    nn = D.argmin(axis=1)
    nd = D[np.arange(m), nn]

    merges = np.empty((max(0, m - 1), 2), dtype=np.int64)
    for t in range(m - 1):
        i = int(nd.argmin())
        j = int(nn[i])
        i, j = min(i, j), max(i, j)
        merges[t] = i, j

        # 1. Cluster j joins slot i.
        C[i] = (w[i] * C[i] + w[j] * C[j]) / (w[i] + w[j])
        w[i] += w[j]
        alive[j] = False
        D[j, :] = np.inf
        D[:, j] = np.inf
        nd[j] = np.inf

        # 2. The new cluster's costs to all others.
        diff = C - C[i]
        row = w[i] * w / (w[i] + w) * np.einsum("ij,ij->i", diff, diff)
        row[~alive] = np.inf
        row[i] = np.inf
        D[i, :] = row
        D[:, i] = row

        # 3. Nearest neighbours: rows that pointed at i or j rescan; the rest
        #    only compare with the new cluster.
        stale = alive & ((nn == i) | (nn == j))
        stale[i] = True
        closer = ~stale & (row < nd)
        nn[closer] = i
        nd[closer] = row[closer]
        rows = np.flatnonzero(stale)
        nn[rows] = D[rows].argmin(axis=1)
        nd[rows] = D[rows, nn[rows]]
    return merges


def _ward_groups(Z, ks, seed, n_prototypes):
    n = Z.shape[0]

    # 1. Prototypes: the points themselves, or k-means cells weighted by size.
    if n <= n_prototypes:
        proto_of = np.arange(n)
        centres, weights = Z, np.ones(n)
    else:
        rng = _stream(seed, 2)
        size = min(n, _PROTOTYPE_SAMPLE * n_prototypes)
        sample = np.sort(rng.choice(n, size, replace=False))
        cells = _kmeans(Z[sample], n_prototypes, rng, _PROTOTYPE_ITER, "random")[1]
        sq = np.einsum("ij,ij->i", Z, Z)
        used, proto_of = np.unique(_nearest(Z, sq, cells)[0], return_inverse=True)
        weights = np.bincount(proto_of).astype(np.float64)
        ind = sp.csr_matrix(
            (np.ones(n), (proto_of, np.arange(n))), shape=(used.size, n)
        )
        centres = np.asarray(ind @ Z) / weights[:, None]

    # 2. Ward's tree on the prototypes; cutting at k clusters = applying the
    #    first m - k merges.
    m = centres.shape[0]
    merges = _ward_merges(centres, weights)
    cut_at = {}
    slot = np.arange(m)
    done = 0
    for k in sorted({int(k) for k in ks}, reverse=True):
        target = max(0, m - k)
        for i, j in merges[done:target]:
            slot[slot == j] = i
        done = max(done, target)
        cut_at[k] = slot.copy()

    # 3. Each point takes its prototype's cluster.
    groups, names = [], []
    for k in ks:
        found = _label_groups(cut_at[int(k)][proto_of])
        groups += found
        names += [f"ward k={k} #{j}" for j in range(len(found))]
    return groups, names
