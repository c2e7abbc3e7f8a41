"""sklearn-north: scikit-learn estimators whose neural networks grow themselves.

Implements the NORTH* neurogenesis strategies of Maile et al. (2022), "When, where, and how
to add new neurons to ANNs".
"""

from . import datasets, exceptions, export
from ._cnn import GrowingCNNClassifier
from ._display import GrowthDisplay
from ._mlp import GrowingMLPClassifier
from .growth import STRATEGIES

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "GrowingCNNClassifier",
    "GrowingMLPClassifier",
    "GrowthDisplay",
    "__version__",
    "datasets",
    "exceptions",
    "export",
]
