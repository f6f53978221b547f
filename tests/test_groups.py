"""The study's group builders: valid, reproducible groups of the promised kind
(within one class, tails of a score, windows along a feature, clusters that
partition the points) and clear errors for bad arguments."""

import time
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.cluster.hierarchy import fcluster, linkage

from groupinf import groups as G


def _check_valid(groups, names, n):
    """Sorted, unique, in-range int64 index arrays with one str name each."""
    assert len(groups) == len(names) > 0
    assert all(isinstance(s, str) for s in names)
    for g in groups:
        assert g.dtype == np.int64 and g.ndim == 1 and g.size > 0
        assert np.all(np.diff(g) > 0)
        assert g[0] >= 0 and g[-1] < n
    G.as_matrix(groups, n)  # the library accepts them


def _same(a, b):
    return (
        len(a[0]) == len(b[0])
        and a[1] == b[1]
        and all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))
    )


def _by_k(groups, names, prefix, k):
    return [g for g, s in zip(groups, names) if s.startswith(f"{prefix} k={k} #")]


def _check_partition(parts, n):
    allidx = np.concatenate(parts)
    assert allidx.size == n
    assert np.array_equal(np.sort(allidx), np.arange(n))


def _as_sets(parts):
    return sorted(tuple(p) for p in parts)


def _blobs(rng, n, n_blobs, d, spread=0.05):
    centres = 10.0 * rng.standard_normal((n_blobs, d))
    truth = rng.integers(n_blobs, size=n)
    truth[:n_blobs] = np.arange(n_blobs)  # no blob left empty
    X = centres[truth] + spread * rng.standard_normal((n, d))
    return X, truth


def _blob_sets(truth):
    return _as_sets(np.flatnonzero(truth == b) for b in np.unique(truth))


# ---------------------------------------------------------------------------
# size_grid-driven builders
# ---------------------------------------------------------------------------


def test_random_within_class_is_pure_capped_and_cycles(rng):
    n = 2000
    y = np.repeat(np.array(["a", "b", "c"]), [1500, 480, 20])
    rng.shuffle(y)
    sizes = G.size_grid(n, 12)
    groups, names = G.random_within_class(y, sizes, seed=3)
    _check_valid(groups, names, n)
    assert len(groups) == sizes.size
    for g, (group, k) in enumerate(zip(groups, sizes)):
        labels = np.unique(y[group])
        assert labels.tolist() == [["a", "b", "c"][g % 3]]
        n_class = np.count_nonzero(y == labels[0])
        assert group.size == min(k, n_class - 1) < n_class
        assert names[g] == f"class={labels[0]} k={group.size}"
    assert _same(G.random_within_class(y, sizes, seed=3), (groups, names))
    other = G.random_within_class(y, sizes, seed=4)[0]
    assert not all(np.array_equal(a, b) for a, b in zip(groups, other))


def test_random_within_class_skips_single_point_classes():
    y = np.array([0, 0, 0, 1, 2, 2])
    groups, _ = G.random_within_class(y, [1, 1, 1, 1], seed=0)
    assert [np.unique(y[g]).tolist() for g in groups] == [[0], [2], [0], [2]]
    with pytest.raises(ValueError, match=r"^y has no class with two"):
        G.random_within_class(np.arange(5), [1], seed=0)


def test_sizes_span_the_grid(rng):
    n = 4000
    sizes = G.size_grid(n, 10)
    x = rng.standard_normal(n)
    y = rng.integers(2, size=n)
    built = [
        G.random_within_class(y, sizes, seed=0),
        G.influence_tails(x, sizes),
        G.feature_windows(x, sizes),
    ]
    for groups, names in built:
        _check_valid(groups, names, n)
        got = np.array([g.size for g in groups])
        assert got.min() == round(0.0025 * n) and got.max() == round(0.25 * n)
        assert set(got) <= set(sizes)


def test_influence_tails_are_the_extreme_scores(rng):
    n = 500
    scores = rng.standard_normal(n)
    sizes = [1, 7, 50, 125]
    groups, names = G.influence_tails(scores, sizes)
    _check_valid(groups, names, n)
    assert names == [f"pos-tail k={k}" for k in sizes] + [
        f"neg-tail k={k}" for k in sizes
    ]
    for group, k in zip(groups[:4], sizes):
        rest = np.setdiff1d(np.arange(n), group)
        assert group.size == k and scores[group].min() > scores[rest].max()
    for group, k in zip(groups[4:], sizes):
        rest = np.setdiff1d(np.arange(n), group)
        assert group.size == k and scores[group].max() < scores[rest].min()
    assert groups[0].tolist() == [int(np.argmax(scores))]
    assert groups[4].tolist() == [int(np.argmin(scores))]


def test_influence_tails_with_ties_are_reproducible():
    scores = np.array([1.0, 3.0, 3.0, 3.0, 0.0, 0.0])
    groups, _ = G.influence_tails(scores, [2])
    assert groups[0].tolist() == [2, 3] and groups[1].tolist() == [4, 5]
    assert _same(G.influence_tails(scores, [2]), G.influence_tails(scores, [2]))


def test_feature_windows_are_contiguous_runs_of_the_sorted_feature(rng):
    n = 1000
    x = np.round(rng.normal(40, 12, n))  # many ties, like an age column
    sizes = [3, 40, 250, n]
    groups, names = G.feature_windows(x, sizes, n_offsets=3, name="age")
    _check_valid(groups, names, n)
    order = np.argsort(x, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    starts = []
    for group, name in zip(groups, names):
        r = np.sort(rank[group])
        assert np.array_equal(r, np.arange(r[0], r[0] + group.size))
        assert name == f"window age[{x[group].min():.4g}..{x[group].max():.4g}]"
        starts.append((group.size, int(r[0])))
    # Low end, middle, high end; the whole-data window only once.
    assert starts[:3] == [(3, 0), (3, round(0.5 * (n - 3))), (3, n - 3)]
    assert starts[-1] == (n, 0) and len(groups) == 3 * 3 + 1


def test_feature_windows_single_offset_is_the_middle():
    x = np.arange(10.0)[::-1]
    groups, names = G.feature_windows(x, [4], n_offsets=1)
    assert np.sort(x[groups[0]]).tolist() == [3.0, 4.0, 5.0, 6.0]
    assert names == ["window x[3..6]"]


# ---------------------------------------------------------------------------
# Clusters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["kmeans", "hierarchical"])
def test_clusters_partition_the_points_for_each_k(rng, method):
    n = 700
    X = rng.standard_normal((n, 6))
    ks = [1, 2, 5, 40]
    groups, names = G.feature_clusters(X, ks, seed=1, method=method)
    _check_valid(groups, names, n)
    prefix = "kmeans" if method == "kmeans" else "ward"
    for k in ks:
        parts = _by_k(groups, names, prefix, k)
        assert len(parts) == k
        _check_partition(parts, n)
        # Ordered by first member, numbered from 0.
        assert [p[0] for p in parts] == sorted(p[0] for p in parts)
    assert names[1] == f"{prefix} k=2 #0"
    assert _same(G.feature_clusters(X, ks, seed=1, method=method), (groups, names))


def test_kmeans_depends_on_seed_and_k_only(rng):
    X = rng.standard_normal((600, 4))
    both = G.feature_clusters(X, [3, 8], seed=5)
    alone = G.feature_clusters(X, [8], seed=5)
    assert _as_sets(_by_k(*both, "kmeans", 8)) == _as_sets(alone[0])
    other = G.feature_clusters(X, [8], seed=6)
    assert _as_sets(other[0]) != _as_sets(alone[0])


def _inertia(X, parts):
    return sum(((X[p] - X[p].mean(axis=0)) ** 2).sum() for p in parts)


def test_more_kmeans_starts_never_do_worse(rng):
    X = rng.standard_normal((500, 3))
    one = G.feature_clusters(X, [7], seed=2)[0]
    four = G.feature_clusters(X, [7], seed=2, n_init=4)[0]
    assert _inertia(X, four) <= _inertia(X, one)
    g1 = G.gradient_clusters(X, [7], seed=2)[0]
    g4 = G.gradient_clusters(X, [7], seed=2, n_init=4)[0]
    assert _inertia(X, g4) <= _inertia(X, g1)


@pytest.mark.parametrize("method", ["kmeans", "hierarchical"])
def test_clusters_recover_separated_blobs(rng, method):
    X, truth = _blobs(rng, 3000, 6, 8)
    groups, _ = G.feature_clusters(X, [6], seed=0, method=method, n_prototypes=200)
    assert _as_sets(groups) == _blob_sets(truth)


def test_exact_ward_matches_scipy_on_few_points(rng):
    X = rng.standard_normal((300, 5))
    ks = [2, 3, 9, 30, 150]
    groups, names = G.feature_clusters(X, ks, method="hierarchical")
    tree = linkage(X, method="ward")
    for k in ks:
        labels = fcluster(tree, k, criterion="maxclust")
        want = _as_sets(np.flatnonzero(labels == c) for c in np.unique(labels))
        assert _as_sets(_by_k(groups, names, "ward", k)) == want


def test_ward_on_prototypes_is_nested_across_k(rng):
    n = 3000
    X = rng.standard_normal((n, 5))
    ks = [50, 10, 3]
    groups, names = G.feature_clusters(
        X, ks, seed=2, method="hierarchical", n_prototypes=120
    )
    fine, mid, coarse = (_by_k(groups, names, "ward", k) for k in ks)
    for parts, k in ((fine, 50), (mid, 10), (coarse, 3)):
        assert len(parts) == k
        _check_partition(parts, n)
    # Every finer cluster lies inside one coarser cluster: cuts of one tree.
    label = np.empty(n, dtype=np.int64)
    for c, p in enumerate(coarse):
        label[p] = c
    assert all(np.unique(label[p]).size == 1 for p in mid + fine)


def test_ward_on_sixty_thousand_points_needs_no_n_squared_memory():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60_000, 50))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        groups, names = G.feature_clusters(
            X, [4, 32, 256], seed=0, method="hierarchical"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    # X itself is 24 MB; one 60k x 60k float64 array would be 28.8 GB.
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MB"
    assert elapsed < 20, f"{elapsed:.1f} s"
    for k in (4, 32, 256):
        _check_partition(_by_k(groups, names, "ward", k), X.shape[0])


def test_sparse_X_is_clustered_on_its_principal_components(rng):
    # Documents of 4 topics: 30 words from the topic's own 50-word vocabulary
    # and 10 from a shared 1000-word background.
    n, n_topics = 800, 4
    topic = rng.integers(n_topics, size=n)
    rows = np.repeat(np.arange(n), 40)
    cols = np.where(
        np.arange(rows.size) % 40 < 30,
        topic[rows] * 50 + rng.integers(50, size=rows.size),
        200 + rng.integers(1000, size=rows.size),
    )
    X = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, 1200))
    assert X.shape[1] > 50
    for method in ("kmeans", "hierarchical"):
        groups, _ = G.feature_clusters(X, [4], seed=0, method=method, n_init=3)
        assert _as_sets(groups) == _blob_sets(topic)
        dense = G.feature_clusters(X.toarray(), [4], seed=0, method=method, n_init=3)
        assert _as_sets(dense[0]) == _as_sets(groups)
    assert _same(
        G.feature_clusters(X, [2, 7], seed=3), G.feature_clusters(X, [2, 7], seed=3)
    )


def test_more_clusters_than_distinct_rows_drops_the_empty_ones():
    X = np.repeat(np.eye(3), 10, axis=0)
    groups, names = G.feature_clusters(X, [5], seed=0)
    assert _as_sets(groups) == _as_sets(np.arange(30).reshape(3, 10))
    assert names == ["kmeans k=5 #0", "kmeans k=5 #1", "kmeans k=5 #2"]


def test_gradient_clusters_project_and_recover_directions(rng):
    n, p = 1200, 300
    grads, truth = _blobs(rng, n, 5, p, spread=0.5)
    groups, names = G.gradient_clusters(grads, [5, 20], seed=0, n_components=16)
    _check_valid(groups, names, n)
    assert _as_sets(_by_k(groups, names, "grad-kmeans", 5)) == _blob_sets(truth)
    _check_partition(_by_k(groups, names, "grad-kmeans", 20), n)
    assert _same(
        G.gradient_clusters(grads, [5, 20], seed=0, n_components=16), (groups, names)
    )


# ---------------------------------------------------------------------------
# GroupSet
# ---------------------------------------------------------------------------


def test_groupset_concatenates_selects_and_converts():
    n = 30
    y = np.arange(n) % 3
    rand = G.GroupSet.of("random", G.random_groups(n, [2, 5], seed=0))
    attr = G.GroupSet.of("attribute", *G.attribute_groups({"y": y}))
    tails = G.GroupSet.of("tails", *G.influence_tails(np.arange(n) * 1.0, [3]))
    gs = rand + attr + tails
    assert len(gs) == 2 + 3 + 2
    assert gs.kinds == ["random"] * 2 + ["attribute"] * 3 + ["tails"] * 2
    assert gs.names[:3] == ["k=2", "k=5", "y=0"]
    assert gs.sizes.tolist() == [2, 5, 10, 10, 10, 3, 3]
    assert G.GroupSet.concat([rand, attr, tails]).names == gs.names
    assert sum([rand, attr, tails]).names == gs.names
    sel = gs.select(["tails", "random"])
    assert sel.names == ["k=2", "k=5", "pos-tail k=3", "neg-tail k=3"]
    assert gs.select("nothing").groups == []
    M = gs.to_matrix(n)
    assert M.shape == (7, n) and M.sum() == gs.sizes.sum()
    with pytest.raises(ValueError, match="same length"):
        G.GroupSet([np.arange(3)], ["a", "b"], ["k"])


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


X_OK = np.random.default_rng(0).standard_normal((20, 3))
Y_OK = np.arange(20) % 2


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: G.feature_clusters(X_OK, [0]), r"^ks has 0; each must lie in"),
        (lambda: G.feature_clusters(X_OK, [3, 21]), r"^ks has 21; .*\[1, 20\]"),
        (lambda: G.feature_clusters(X_OK, []), r"^ks must be a non-empty"),
        (lambda: G.feature_clusters(X_OK, [2.5]), r"^ks must hold integers"),
        (lambda: G.gradient_clusters(X_OK, [-1]), r"^ks has -1"),
        (
            lambda: G.feature_clusters(X_OK, [3], method="ward"),
            r"^method must be 'kmeans' or 'hierarchical'",
        ),
        (
            lambda: G.feature_clusters(
                np.zeros((50, 2)), [30], method="hierarchical", n_prototypes=20
            ),
            r"^ks has k=30, more than n_prototypes=20",
        ),
        (lambda: G.random_within_class(Y_OK, [0]), r"^sizes has 0"),
        (lambda: G.random_within_class(Y_OK, [21]), r"^sizes has 21"),
        (lambda: G.influence_tails(np.ones(20), [25]), r"^sizes has 25"),
        (lambda: G.feature_windows(np.ones(20), [0]), r"^sizes has 0"),
        (
            lambda: G.random_within_class(np.zeros((20, 2)), [3]),
            r"^y must be 1-D, got shape \(20, 2\)",
        ),
        (
            lambda: G.influence_tails(np.ones((20, 1)), [3]),
            r"^point_influence must be a non-empty 1-D array",
        ),
        (
            lambda: G.influence_tails(np.array([1.0, np.nan, 2.0]), [1]),
            r"^point_influence contains NaN",
        ),
        (
            lambda: G.feature_windows(np.array([1.0, np.inf]), [1]),
            r"^x contains NaN",
        ),
        (lambda: G.feature_windows(np.ones(5), [1], n_offsets=0), r"^n_offsets"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("sparse", [False, True])
def test_nan_in_X_is_refused(sparse):
    X = X_OK.copy()
    X[4, 1] = np.nan
    X = sp.csr_matrix(X) if sparse else X
    with pytest.raises(ValueError, match=r"^X contains 1 NaN"):
        G.feature_clusters(X, [2])
    with pytest.raises(ValueError, match=r"^per_example_gradients contains 1 NaN"):
        G.gradient_clusters(X, [2])


def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match=r"^seed must be an int"):
        G.feature_clusters(X_OK, [2], seed=1.5)
