"""Growable torch networks."""

from .activations import ACTIVATIONS
from .cnn import ARCHITECTURES, GrowableCNN
from .mlp import GrowableMLP
from .wrn import GrowableWRN

__all__ = ["ACTIVATIONS", "ARCHITECTURES", "GrowableCNN", "GrowableMLP", "GrowableWRN"]
