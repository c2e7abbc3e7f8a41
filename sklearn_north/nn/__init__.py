"""Growable torch networks."""

from .activations import ACTIVATIONS
from .mlp import GrowableMLP

__all__ = ["ACTIVATIONS", "GrowableMLP"]
