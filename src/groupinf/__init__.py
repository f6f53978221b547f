"""groupinf: what happens to a model if a whole group of its training data is
removed? Predicted by influence functions, measured by exact retraining.

L2-regularised logistic regression (binary and softmax), dense or CSR X::

    F(theta; s) = sum_i s_i * l(y_i, x_i; theta) + l2_reg/2 * ||coef||^2

Effects are new minus old for removing a group (its weights s_i -> 0).
"""

from . import datasets, groups, metrics
from ._cg import ConvergenceError
from ._config import get_options, options
from ._influence import influence
from ._model import LogisticModel, fit
from ._newton import ConvergenceWarning, SingularHessianError
from ._results import GroupEffects
from ._retrain import retrain
from .dependence import Dependence, dependence

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "ConvergenceWarning",
    "Dependence",
    "GroupEffects",
    "LogisticModel",
    "SingularHessianError",
    "datasets",
    "dependence",
    "fit",
    "get_options",
    "groups",
    "influence",
    "metrics",
    "options",
    "retrain",
]
