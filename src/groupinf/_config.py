"""Process-wide knobs that change how work is split, never what is computed.

``groupinf.options(chunk_rows=...)`` is a context manager (and
``groupinf.get_options()`` reads the current values):

- ``chunk_rows`` (default 1024): rows per SYRK in Hessian assembly, so the
  work buffer is O(chunk_rows * d) whatever n is.

Results agree to rounding (only the order of floating-point sums changes)
for any value; the test suite checks 1e-12 relative agreement. The settings
are global to the process (not per thread).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

_DEFAULTS = {"chunk_rows": 1024}
_OPTIONS = dict(_DEFAULTS)


def get_options():
    """The current option values (a copy)."""
    return dict(_OPTIONS)


def get(name):
    return _OPTIONS[name]


def _check(name, value):
    if name not in _DEFAULTS:
        raise TypeError(f"unknown option {name!r}; known: {sorted(_DEFAULTS)}")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1 or value > 2 ** 31 - 1:
        raise ValueError(f"{name} must be in [1, 2**31 - 1], got {value}")
    return int(value)


@contextmanager
def options(**kwargs):
    """Temporarily set options, e.g. ``with groupinf.options(chunk_rows=256):``."""
    new = {k: _check(k, v) for k, v in kwargs.items()}
    old = dict(_OPTIONS)
    _OPTIONS.update(new)
    try:
        yield get_options()
    finally:
        _OPTIONS.clear()
        _OPTIONS.update(old)


def have_threadpoolctl():
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def blas_threads_for(n_workers):
    """While ``n_workers`` groupinf threads run, give BLAS the remaining
    cores (cores // n_workers each, at least 1), so the two together never
    exceed the machine. Needs threadpoolctl (installed with scikit-learn);
    without it nothing is changed, and groupinf's own default is one thread
    (see ``retrain``'s ``n_jobs``)."""
    if n_workers <= 1 or not have_threadpoolctl():
        yield
        return
    from threadpoolctl import threadpool_limits

    cores = os.cpu_count() or 1
    with threadpool_limits(limits=max(1, cores // n_workers), user_api="blas"):
        yield
