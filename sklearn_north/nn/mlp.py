"""A dense network whose hidden layers are growth sites."""

import itertools

import torch
from torch import nn

from ..growth.context import SiteActivations
from ..growth.sites import Consumer, GrowthSite
from .activations import ACTIVATIONS


class GrowableMLP(nn.Module):
    """``n_features -> hidden layers -> n_outputs`` with growable hidden layers.

    Weights are Glorot-uniform and biases zero (the reference code's Flux defaults, which
    the metric's ``epsilon`` was tuned with). The output is the last layer's logits.

    Parameters
    ----------
    n_features : int
    hidden_layer_sizes : sequence of int
        Initial widths.
    n_outputs : int
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
    max_hidden_layer_sizes : sequence of int or None
        Per-layer maximum widths (``None``: no cap).
    """

    def __init__(
        self,
        n_features,
        hidden_layer_sizes,
        n_outputs,
        activation="relu",
        max_hidden_layer_sizes=None,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}.")
        self.activation = activation
        sizes = [int(n_features), *map(int, hidden_layer_sizes), int(n_outputs)]
        self.layers = nn.ModuleList(
            nn.Linear(d_in, d_out) for d_in, d_out in itertools.pairwise(sizes)
        )
        for layer in self.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        n_hidden = len(sizes) - 2
        self.max_hidden_layer_sizes = (
            tuple(max_hidden_layer_sizes)
            if max_hidden_layer_sizes is not None
            else (None,) * n_hidden
        )

    @property
    def hidden_layer_sizes(self):
        """Current widths of the hidden layers."""
        return tuple(layer.out_features for layer in self.layers[:-1])

    def forward(self, X):
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            X = act(layer(X))
        return self.layers[-1](X)

    def growth_sites(self):
        """One ``GrowthSite`` per hidden layer, in forward order."""
        act = ACTIVATIONS[self.activation]
        return [
            GrowthSite(
                name=f"hidden{i}",
                producer=self.layers[i],
                consumers=[Consumer(self.layers[i + 1])],
                activation=act,
                max_width=self.max_hidden_layer_sizes[i],
            )
            for i in range(len(self.layers) - 1)
        ]

    @torch.no_grad()
    def site_activations(self, X, n_sites=None):
        """Input, pre- and post-activations of every hidden layer on ``X`` (of the first
        ``n_sites`` only, where given: the forward pass stops there)."""
        act = ACTIVATIONS[self.activation]
        out = []
        for layer in self.layers[:-1][:n_sites]:
            pre = layer(X)
            post = act(pre)
            out.append(SiteActivations(inputs=X, pre=pre, post=post))
            X = post
        return out
