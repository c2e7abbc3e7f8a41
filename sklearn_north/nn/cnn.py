"""Convolutional networks whose channels (and hidden dense layers) are growth sites.

A ``GrowableCNN`` is a stack of 3x3 convolutions (padding 1, bias, optional BatchNorm,
ReLU (the package's: slope 1 at 0, so that zero-fan-in channels learn), optional 2x2
max-pooling after a conv) followed by hidden dense layers and the
output layer: VGG-11 and the small default network are two configurations of it
(``ARCHITECTURES``). Every conv's output channels and every hidden dense layer's neurons
are one growth site (SPEC section 8): a conv site's consumers are the next conv (its input
channels) or, past the last conv, the first dense layer, where channel ``c`` owns the
``H' * W'`` consecutive input columns ``[c * H' * W', (c + 1) * H' * W')`` of NCHW
flattening. New channels are appended last, so their columns are appended at the end.

The activation metric of a conv site reads the post-activations after the conv's own
pooling, one row per position of every sample: ``(N * H' * W', C)``. With
``record_activations`` set (the growth engine's ``activation_source="training"``), the
training forward keeps the current mini-batch's activations for the metric (the authors'
CNN protocol), so that measuring them costs no second forward pass.
"""

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..growth.sites import Consumer, GrowthSite
from ._conv import RecordsSiteActivations, max_pool, rows
from .activations import relu

#: Architecture name -> standard widths of its conv sites and dense sites, and after which
#: convs a 2x2 max-pool follows.
ARCHITECTURES = {
    # Two conv blocks and one hidden dense layer: digits (8x8) or MNIST (28x28) in seconds.
    "small": {"conv": (32, 64), "pools": (True, True), "dense": (128,)},
    # VGG-11 "A" (the paper's): no BatchNorm, pools after convs 1, 2, 4, 6 and 8.
    "vgg11": {
        "conv": (64, 128, 256, 256, 512, 512, 512, 512),
        "pools": (True, True, False, True, False, True, False, True),
        "dense": (4096, 4096),
    },
}


def _pooled(size):
    # 2x2 max-pool, ceil mode: a side of 1 stays 1 (small images and 1-row "images").
    return math.ceil(size / 2)


class GrowableCNN(RecordsSiteActivations, nn.Module):
    """``input_shape -> convs -> flatten -> hidden dense layers -> n_outputs``.

    Weights are Glorot-uniform and biases zero, as in ``GrowableMLP``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one sample; the network takes flat rows of
        ``prod(input_shape)`` values (NCHW order) or images of that shape.
    conv_widths : sequence of int
        Initial output channels of each conv.
    pools : sequence of bool
        Whether a 2x2 max-pool (ceil mode) follows each conv.
    dense_widths : sequence of int
        Initial widths of the hidden dense layers.
    n_outputs : int
    max_widths : sequence of int or None
        Per-site maximum widths, convs first (``None``: no cap).
    batch_norm : bool, default=False
        A BatchNorm2d between each conv and its ReLU.
    """

    def __init__(
        self,
        input_shape,
        conv_widths,
        pools,
        dense_widths,
        n_outputs,
        max_widths=None,
        batch_norm=False,
    ):
        super().__init__()
        if len(pools) != len(conv_widths):
            raise ValueError(f"pools has {len(pools)} entries for {len(conv_widths)} convs.")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pools = tuple(bool(p) for p in pools)
        self.batch_norm = bool(batch_norm)
        channels, height, width = self.input_shape
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for out in conv_widths:
            self.convs.append(nn.Conv2d(channels, int(out), 3, padding=1))
            if self.batch_norm:
                self.norms.append(nn.BatchNorm2d(int(out)))
            channels = int(out)
        for pooled in self.pools:
            if pooled:
                height, width = _pooled(height), _pooled(width)
        self.spatial = height * width  # dense input columns one channel of the last conv owns
        sizes = [channels * self.spatial, *map(int, dense_widths), int(n_outputs)]
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        for layer in [*self.convs, *self.dense]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        n_sites = len(self.convs) + len(self.dense) - 1
        self.max_widths = tuple(max_widths) if max_widths is not None else (None,) * n_sites
        if len(self.max_widths) != n_sites:
            raise ValueError(f"max_widths has {len(self.max_widths)} entries for {n_sites} sites.")

    @property
    def widths(self):
        """Current widths of the sites: the convs' channels, then the hidden dense layers."""
        return tuple(site.width for site in self.growth_sites())

    def _images(self, X):
        return X.reshape(X.shape[0], *self.input_shape)

    def _conv_block(self, i, X):
        """Conv ``i``'s post-activations (before its pooling) and after its pooling."""
        Z = self.convs[i](X)
        if self.batch_norm:
            Z = self.norms[i](Z)
        H = relu(Z)
        return Z, (max_pool(H) if self.pools[i] else H)

    def forward(self, X):
        record = self._recording()
        images = X = self._images(X)
        kept = []
        for i in range(len(self.convs)):
            Z, H = self._conv_block(i, X)
            kept.append((X, Z, H))
            X = H
        X = X.flatten(1)
        for layer in self.dense[:-1]:
            Z = layer(X)
            H = relu(Z)
            kept.append((X, Z, H))
            X = H
        if record:
            self._keep(images, kept)
        return self.dense[-1](X)

    def growth_sites(self):
        """One ``GrowthSite`` per conv, then one per hidden dense layer, in forward order."""
        sites = []
        n_conv = len(self.convs)
        for i, conv in enumerate(self.convs):
            if i + 1 < n_conv:
                consumer = Consumer(self.convs[i + 1])
            else:
                consumer = Consumer(self.dense[0], spatial=self.spatial)
            sites.append(
                GrowthSite(
                    name=f"conv{i}",
                    producer=conv,
                    consumers=[consumer],
                    activation=relu,
                    norms=[self.norms[i]] if self.batch_norm else [],
                    max_width=self.max_widths[i],
                    response=self._conv_response(i),
                    pool=_pool_for_gradients if self.pools[i] else None,
                )
            )
        for j, layer in enumerate(self.dense[:-1]):
            sites.append(
                GrowthSite(
                    name=f"dense{j}",
                    producer=layer,
                    consumers=[Consumer(self.dense[j + 1])],
                    activation=relu,
                    max_width=self.max_widths[n_conv + j],
                )
            )
        return sites

    def _conv_response(self, i):
        conv, pooled = self.convs[i], self.pools[i]
        norm = self.norms[i] if self.batch_norm else None

        def response(inputs, fan_in, bias):
            # New channels as they will be once added: their BatchNorm entries are the
            # identity's (running mean 0, variance 1), read in eval mode as the metric is.
            Z = F.conv2d(inputs, fan_in, bias, conv.stride, conv.padding)
            if norm is not None:
                Z = Z / math.sqrt(1.0 + norm.eps)
            H = relu(Z)
            if pooled:
                H = max_pool(H)
            return rows(H)

        return response

    def _site_triples(self, X, n_sites=None):
        """``(inputs, Z, H)`` of the first ``n_sites`` sites on images ``X`` (all where
        ``None``), in the module's current mode. A conv site's ``inputs`` are images
        ``(N, C_in, H, W)``, ``Z`` the conv's (BatchNorm's) outputs and ``H`` the pooled
        post-activations; ``activations_of`` lays them out as rows ``(N * H * W, C)``."""
        n_sites = len(self.convs) + len(self.dense) - 1 if n_sites is None else n_sites
        out = []
        for i in range(len(self.convs)):
            if len(out) == n_sites:
                return out
            Z, H = self._conv_block(i, X)
            out.append((X, Z, H))
            X = H
        X = X.flatten(1)
        for layer in self.dense[:-1]:
            if len(out) == n_sites:
                return out
            Z = layer(X)
            H = relu(Z)
            out.append((X, Z, H))
            X = H
        return out

    @torch.no_grad()
    def _extend_measured(self, measured, index, new):
        # The new neurons as the eval-mode measurement sees them (identity BatchNorm
        # entries, as Select's candidate response); zero fan-out leaves every other
        # site's Z and H as they are.
        measured = list(measured)
        X, Z, H = measured[index]
        n_conv = len(self.convs)
        w = new.fan_in.to(Z.dtype)
        b = new.bias.to(Z.dtype) if new.bias is not None else None
        if index < n_conv:
            conv = self.convs[index]
            Z_new = F.conv2d(X, w, b, conv.stride, conv.padding)
            if self.batch_norm:
                Z_new = Z_new / math.sqrt(1.0 + self.norms[index].eps)
            H_new = relu(Z_new)
            if self.pools[index]:
                H_new = max_pool(H_new)
        else:
            Z_new = F.linear(X, w.reshape(w.shape[0], -1), b)
            H_new = relu(Z_new)
        H = torch.cat([H, H_new], dim=1)
        measured[index] = (X, torch.cat([Z, Z_new], dim=1), H)
        if index + 1 < len(measured):
            reader = H.flatten(1) if index + 1 == n_conv else H
            _, Z_next, H_next = measured[index + 1]
            measured[index + 1] = (reader, Z_next, H_next)
        return measured


def _pool_for_gradients(H):
    # The forward's pooling as autograd sees it (ties at all-zero new channels go to the
    # first element of each window, as in the training step's backward).
    return F.max_pool2d(H, 2, ceil_mode=True)


def build_cnn(architecture, input_shape, widths, n_outputs, max_widths=None, batch_norm=False):
    """A ``GrowableCNN`` of a named architecture (``ARCHITECTURES``) at the given site
    widths (convs first, then hidden dense layers)."""
    spec = ARCHITECTURES[architecture]
    n_conv = len(spec["conv"])
    widths = tuple(widths)
    return GrowableCNN(
        input_shape,
        widths[:n_conv],
        spec["pools"],
        widths[n_conv:],
        n_outputs,
        max_widths=max_widths,
        batch_norm=batch_norm,
    )
