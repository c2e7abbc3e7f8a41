"""Activation functions by name, as in ``sklearn.neural_network``."""

import torch

#: Activation name -> elementwise torch function.
ACTIVATIONS = {
    "identity": lambda x: x,
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}
