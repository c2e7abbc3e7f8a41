"""Growable torch networks."""

from .activations import ACTIVATIONS
from .cnn import ARCHITECTURES, GrowableCNN
from .mlp import GrowableMLP

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "GrowableCNN", "GrowableMLP"]
