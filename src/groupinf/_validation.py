"""Input checks shared by fit, influence and retrain.

Every error names the argument and the problem; nothing downstream of these
checks can see a NaN, a wrong shape or an unknown label.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp


def check_X(X, name="X", n_features=None):
    """Return X as float64 C-contiguous ndarray or canonical float64 CSR."""
    if X is None:
        raise TypeError(f"{name} is required, got None")
    if sp.issparse(X):
        if X.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must hold real numbers, got a sparse matrix of dtype "
                f"{X.dtype}"
            )
        _check_sparse_structure(X, name)
        X = sp.csr_matrix(X, dtype=np.float64)
        X.sum_duplicates()
        X.sort_indices()
        X.indices = X.indices.astype(np.int32, copy=False)
        X.indptr = X.indptr.astype(np.int32, copy=False)
        data = X.data
    else:
        if hasattr(X, "columns") and hasattr(X, "dtypes"):
            X = _frame_to_array(X, name)
        elif hasattr(X, "to_numpy"):  # other pandas objects
            X = X.to_numpy()
        arr = np.asarray(X)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                f"{name} must hold real numbers, got dtype {arr.dtype}"
            )
        X = np.ascontiguousarray(arr, dtype=np.float64)
        data = X
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got "
                         f"{X.ndim}-D")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has no columns")
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    # The largest magnitude without an |X|-sized temporary.
    big = max(float(np.max(data)), -float(np.min(data))) if np.size(data) \
        else 0.0
    if big > 1e100:
        raise ValueError(
            f"{name} has entries as large as {big:.3g}; products of such "
            f"values overflow float64 in the Hessian. Standardise the columns "
            f"of {name} first."
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features, but the model was fitted with "
            f"{n_features}"
        )
    return X


def _frame_to_array(frame, name):
    # A DataFrame mixing bool, integer, float or nullable columns converts
    # to an object array, so each column's kind is checked instead and the
    # whole frame is converted to float64 at once (pd.NA becomes NaN, which
    # the finiteness check then reports).
    for col, dtype in zip(frame.columns, frame.dtypes):
        kind = getattr(dtype, "kind", "O")
        categories = getattr(dtype, "categories", None)
        if categories is not None:  # categorical: its values' kind counts
            kind = getattr(categories.dtype, "kind", "O")
        if kind not in "biuf":
            raise TypeError(
                f"{name} must hold real numbers, but its column {col!r} has "
                f"dtype {dtype}; encode that column numerically (e.g. one-hot) "
                f"or drop it"
            )
    try:
        return frame.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        # Some extension types (categoricals) refuse na_value: column by column.
        columns = [np.asarray(frame.iloc[:, j], dtype=np.float64)
                   for j in range(frame.shape[1])]
        return np.column_stack(columns) if columns else np.empty(frame.shape)


def _check_sparse_structure(X, name):
    # A malformed index array makes SciPy's own conversions (and any kernel)
    # read and write out of bounds, so the structure is checked first.
    try:
        if X.format in ("csr", "csc", "bsr"):
            X.check_format(full_check=True)
        elif X.format == "coo":
            rows, cols = X.coords if hasattr(X, "coords") else (X.row, X.col)
            if rows.size and (rows.min() < 0 or rows.max() >= X.shape[0]
                              or cols.min() < 0 or cols.max() >= X.shape[1]):
                raise ValueError("index out of range")
    except ValueError as exc:
        raise ValueError(
            f"{name} is a malformed sparse matrix ({exc}); its index arrays "
            f"do not describe a valid {X.shape} matrix"
        ) from None


def check_labels(y, name="y", n_samples=None, x_name="X"):
    """Return y as a 1-D array (any dtype with an ordering), checked."""
    if y is None:
        raise TypeError(f"{name} is required, got None")
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if y.dtype.kind == "O" and any(v is None for v in y):
        raise ValueError(f"{name} contains missing (None) labels")
    if y.dtype.kind == "O" and any(map(_is_missing, y)):
        # pandas turns missing strings into NaN and missing nullable values
        # into pd.NA; without this they would surface as unorderable types.
        raise ValueError(
            f"{name} contains missing (NaN or NA) labels; drop those rows or "
            f"give them a label"
        )
    if y.dtype.kind not in "biufUSO":
        raise TypeError(f"{name} has unsupported dtype {y.dtype}")
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {y.shape[0]} labels but {x_name} has {n_samples} rows"
        )
    if y.dtype.kind == "f" and np.any(y != np.round(y)) and np.unique(
            y).size > 2:
        # Two distinct values are a binary problem whatever they are; more,
        # with fractional parts, look like a regression target (as
        # scikit-learn says; the file loaders say the same).
        frac = y[y != np.round(y)]
        n_distinct = np.unique(y).size
        raise ValueError(
            f"{name} looks continuous: {frac.size} of {y.size} labels are "
            f"non-integer floats (e.g. {float(frac[0])!r}; {n_distinct} "
            f"distinct values); class labels are needed. If such values "
            f"really are classes, pass them as strings."
        )
    if y.dtype.kind == "O":
        try:
            np.unique(y)
        except TypeError as exc:
            raise TypeError(
                f"{name} mixes label types that cannot be ordered ({exc}); use "
                f"labels of one type"
            ) from None
    return y


def _is_missing(value):
    if isinstance(value, float):
        return bool(np.isnan(value))
    return type(value).__name__ == "NAType"  # pandas.NA, without pandas


def encode_labels(y, classes, name="y"):
    """Codes of y in the sorted classes; unknown labels are an error."""
    codes = np.searchsorted(classes, y)
    codes = np.clip(codes, 0, len(classes) - 1)
    unknown = classes[codes] != y
    if np.any(unknown):
        bad = np.unique(y[unknown])[:5]
        raise ValueError(
            f"{name} contains label(s) {bad.tolist()} that are not among the "
            f"training classes {classes.tolist()}"
        )
    return codes.astype(np.int64)


def check_l2_reg(l2_reg):
    if isinstance(l2_reg, bool) or not isinstance(l2_reg, numbers.Real):
        raise TypeError(f"l2_reg must be a real number, got {type(l2_reg).__name__}")
    l2_reg = float(l2_reg)
    if not np.isfinite(l2_reg) or l2_reg <= 0:
        raise ValueError(f"l2_reg must be finite and > 0, got {l2_reg}")
    return l2_reg


def check_sample_weight(sample_weight, n_samples):
    if sample_weight is None:
        return np.ones(n_samples)
    s = np.asarray(sample_weight)
    if s.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {s.dtype}")
    s = np.ascontiguousarray(s, dtype=np.float64)
    if s.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), got {s.shape}"
        )
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sample_weight must be finite and >= 0")
    if not np.any(s > 0):
        raise ValueError("sample_weight is zero everywhere")
    if not np.isfinite(np.sum(s)) or np.sum(s) > 1e200:
        raise ValueError(
            "sample_weight is too large: its sum overflows float64; rescale "
            "the weights (and l2_reg with them)"
        )
    return s


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_tol(tol):
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number, got {type(tol).__name__}")
    tol = float(tol)
    if not np.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be finite and > 0, got {tol}")
    return tol
