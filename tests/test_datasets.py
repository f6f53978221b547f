"""Tests for the bundled datasets (groupinf.datasets)."""

import itertools
import lzma

import numpy as np
import pytest

from groupinf import datasets

N_TRAIN = 30162
N_TEST = 15060
NUMERIC = ("age", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
)
GROUP_KEYS = (
    "workclass",
    "education",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native_country",
    "age_band",
)


@pytest.fixture(scope="module")
def adult():
    return datasets.load_adult()


@pytest.fixture
def fresh_cache():
    """Make sure a test sees (and leaves behind) an empty loader cache."""
    datasets._load_adult_cached.cache_clear()
    yield
    datasets._load_adult_cached.cache_clear()


def _block_columns(feature_names, column):
    prefix = column + "="
    return [i for i, f in enumerate(feature_names) if f.startswith(prefix)]


def test_shapes_and_dtypes(adult):
    n_features = len(adult.feature_names)
    print(f"adult: n_features={n_features}")
    assert adult.name == "adult"
    assert adult.X_train.shape == (N_TRAIN, n_features)
    assert adult.X_test.shape == (N_TEST, n_features)
    assert adult.y_train.shape == (N_TRAIN,)
    assert adult.y_test.shape == (N_TEST,)
    for X in (adult.X_train, adult.X_test):
        assert X.dtype == np.float64
        assert X.flags.c_contiguous
        assert np.isfinite(X).all()
    for y in (adult.y_train, adult.y_test):
        assert y.dtype == np.int64
        assert set(np.unique(y).tolist()) == {0, 1}
    assert isinstance(adult.feature_names, tuple)
    assert len(set(adult.feature_names)) == n_features
    assert "fnlwgt" not in " ".join(adult.feature_names)
    assert adult.feature_names[:5] == NUMERIC
    assert "sex=Male" in adult.feature_names
    assert "sex=Female" in adult.feature_names
    assert "adult" in adult.description.lower()
    assert "CC BY 4.0" in adult.description


def test_label_rates(adult):
    assert adult.y_train.mean() == pytest.approx(0.249, abs=0.001)
    assert adult.y_test.mean() == pytest.approx(0.246, abs=0.001)
    assert adult.y_train.sum() == 7508


def test_numeric_standardised_on_train(adult):
    idx = [adult.feature_names.index(c) for c in NUMERIC]
    block = adult.X_train[:, idx]
    np.testing.assert_allclose(block.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(block.std(axis=0), 1.0, rtol=1e-10)
    # Test split uses the train statistics, so it is close but not exact.
    test_mean = adult.X_test[:, idx].mean(axis=0)
    assert np.all(np.abs(test_mean) < 0.1)
    assert not np.allclose(test_mean, 0.0, atol=1e-10)


def test_one_hot_blocks(adult):
    covered = set(range(len(NUMERIC)))
    for column in CATEGORICAL:
        cols = _block_columns(adult.feature_names, column)
        assert cols, column
        levels = [adult.feature_names[i].split("=", 1)[1] for i in cols]
        assert levels == sorted(levels)
        assert cols == list(range(cols[0], cols[0] + len(cols)))
        block_train = adult.X_train[:, cols]
        assert set(np.unique(block_train).tolist()) <= {0.0, 1.0}
        np.testing.assert_array_equal(block_train.sum(axis=1), 1.0)
        # Test rows: one level set, or none if the level is unseen in train.
        assert set(np.unique(adult.X_test[:, cols].sum(axis=1)).tolist()) <= {0.0, 1.0}
        # One-hot encoding agrees with the raw group values.
        raw = adult.groups_train[column.replace("-", "_")]
        decoded = np.asarray(levels)[block_train.argmax(axis=1)]
        np.testing.assert_array_equal(decoded, raw)
        covered.update(cols)
    assert covered == set(range(len(adult.feature_names)))


def test_unseen_test_level_encodes_as_zeros():
    out = datasets._one_hot(np.array(["a", "zz", "c", "0"]), ("a", "b", "c"))
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]])


def test_groups(adult):
    assert adult.group_columns() == GROUP_KEYS
    assert tuple(adult.groups_test) == GROUP_KEYS
    for key in GROUP_KEYS:
        g_train = adult.groups_train[key]
        g_test = adult.groups_test[key]
        assert isinstance(g_train, np.ndarray) and g_train.dtype.kind == "U"
        assert g_train.shape == (N_TRAIN,)
        assert g_test.shape == (N_TEST,)
        assert "?" not in set(g_train.tolist())
    assert set(adult.groups_train["sex"].tolist()) == {"Female", "Male"}
    assert set(adult.groups_test["sex"].tolist()) == {"Female", "Male"}
    assert set(adult.groups_train["race"].tolist()) == {
        "Amer-Indian-Eskimo",
        "Asian-Pac-Islander",
        "Black",
        "Other",
        "White",
    }
    bands = ("17-24", "25-34", "35-44", "45-54", "55-64", "65+")
    assert set(adult.groups_train["age_band"].tolist()) == set(bands)


def test_age_band_matches_age(adult):
    # Standardisation is monotone, so the bands must be ordered by age.
    z = adult.X_train[:, adult.feature_names.index("age")]
    band = adult.groups_train["age_band"]
    bands = ("17-24", "25-34", "35-44", "45-54", "55-64", "65+")
    for lower, upper in itertools.pairwise(bands):
        assert z[band == lower].max() < z[band == upper].min()
    assert np.array_equal(
        datasets._age_band(np.array([17, 24, 25, 34, 35, 64, 65, 90])),
        ["17-24", "17-24", "25-34", "25-34", "35-44", "55-64", "65+", "65+"],
    )


def test_returned_arrays_do_not_alias_cache():
    first = datasets.load_adult()
    original = first.X_train[0, 0]
    first.X_train[0, 0] = 1e6
    first.y_train[:] = 0
    first.groups_train["sex"][:] = "X"
    first.groups_train.clear()
    second = datasets.load_adult()
    assert second.X_train[0, 0] == original
    assert second.y_train.sum() == 7508
    assert set(second.groups_train["sex"].tolist()) == {"Female", "Male"}


def test_dataset_is_frozen(adult):
    with pytest.raises(AttributeError):
        adult.name = "other"


def test_load_dataset_dispatch(adult):
    ds = datasets.load_dataset("adult")
    assert ds.name == "adult"
    np.testing.assert_array_equal(ds.X_train, adult.X_train)
    np.testing.assert_array_equal(ds.y_test, adult.y_test)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="adult") as excinfo:
        datasets.load_dataset("no-such-dataset")
    assert "no-such-dataset" in str(excinfo.value)


def test_truncated_xz_detected(monkeypatch, fresh_cache):
    real = datasets._read_packaged

    def truncated(filename):
        data = real(filename)
        return data[: len(data) // 2]

    monkeypatch.setattr(datasets, "_read_packaged", truncated)
    with pytest.raises(OSError, match="damaged") as excinfo:
        datasets.load_adult()
    assert "reinstall groupinf" in str(excinfo.value)


def test_checksum_mismatch_detected(monkeypatch, fresh_cache):
    real = datasets._read_packaged

    def tampered(filename):
        raw = lzma.decompress(real(filename))
        # A well-formed xz stream whose content lost its last data line.
        return lzma.compress(raw[: raw.rstrip().rfind(b"\n") + 1])

    monkeypatch.setattr(datasets, "_read_packaged", tampered)
    with pytest.raises(OSError, match="damaged") as excinfo:
        datasets.load_adult()
    message = str(excinfo.value)
    assert "sha256" in message
    assert "reinstall groupinf" in message


def test_missing_file_detected(monkeypatch, fresh_cache):
    def missing(filename):
        raise FileNotFoundError(filename)

    monkeypatch.setattr(datasets, "_read_packaged", missing)
    with pytest.raises(OSError, match="reinstall groupinf"):
        datasets.load_adult()
