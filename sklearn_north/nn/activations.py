"""Activation functions by name, as in ``sklearn.neural_network``.

``"relu"`` is a ReLU whose derivative at 0 is 1 (SPEC section 4, common rules): its
backward pass lets the gradient through where ``x >= 0`` instead of ``x > 0``; the forward
pass is ``torch.relu``'s. It matters only where a pre-activation is exactly 0, which is
what zero-fan-in initializers (GradMax) create: with ``torch.relu`` such a neuron's fan-in
would get a zero gradient forever (its input to the ReLU is exactly 0), so it could never
learn.

``relu`` is computed as ``x.clamp_min(0)``, whose native backward is exactly that
(gradient where ``x >= 0``); a Python autograd function doing the same made a small
network's training ~10-25% slower.
"""

import torch


def relu(x):
    """``torch.relu`` forward; backward passes the gradient where ``x >= 0``."""
    return x.clamp_min(0)


#: Activation name -> elementwise torch function.
ACTIVATIONS = {
    "identity": lambda x: x,
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": relu,
}
