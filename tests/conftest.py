"""Shared fixtures: seeded generators and small standardised data sets."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits


def _standardise(X):
    X = X[:, X.std(axis=0) > 0]
    return (X - X.mean(axis=0)) / X.std(axis=0)


@pytest.fixture
def rng(request):
    # One fixed seed per test, different between tests.
    seed = sum(map(ord, request.node.name)) % (2**32)
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def cancer():
    """Breast cancer, 569 x 30, binary, standardised."""
    X, y = load_breast_cancer(return_X_y=True)
    return np.ascontiguousarray(_standardise(X)), y


@pytest.fixture(scope="session")
def digits():
    """The first 400 digits, 10 classes, constant pixels dropped, standardised."""
    X, y = load_digits(return_X_y=True)
    return np.ascontiguousarray(_standardise(X[:400])), y[:400]


@pytest.fixture(scope="session")
def digits_small():
    """300 digits of classes 0-3 on 12 pixels: a small softmax problem."""
    X, y = load_digits(return_X_y=True)
    keep = np.flatnonzero(y < 4)[:300]
    X = _standardise(X[keep])
    return np.ascontiguousarray(X[:, ::4][:, :12]), y[keep]
