"""Growth sites and the tensor surgery that adds neurons (SPEC sections 1 and 5).

A *growth site* is one growable hidden layer: the module that produces its neurons (a
``Linear`` or ``Conv2d``, whose fan-in rows are the neurons), the modules that consume its
output (whose input columns are the neurons' fan-out), and any normalisation layers in
between. ``add_neurons`` appends ``k`` neurons to a site in place.

A site may be *tied* to other channels that must grow with it, ``k`` at a time (a residual
group's stream and its blocks' inner widths, SPEC section 8): the site's own neurons get
the strategy's weights; the tied channels get a random fan-in and zero fan-out, so the
network's function is unchanged.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .optim import grow_parameter


@dataclass
class Consumer:
    """A module that reads a site's output.

    ``spatial`` is the number of input columns one neuron owns: 1 for a dense or conv
    consumer, ``H' * W'`` where a conv site is flattened into a dense layer.
    """

    module: nn.Module
    spatial: int = 1


@dataclass
class TiedChannels:
    """Channels that grow with a site, as many as it does, with zero fan-out.

    ``producers`` write them (each gets ``k`` output channels with a random fan-in, see
    ``add_neurons``: several producers add into one residual stream), ``consumers`` read
    them (zero input columns), ``norms`` normalise them (identity entries).
    """

    producers: list
    consumers: list
    norms: list = field(default_factory=list)


@dataclass
class GrowthSite:
    """One growable hidden layer.

    Parameters
    ----------
    name : str
    producer : nn.Linear or nn.Conv2d
        Its weight rows (output channels) are the site's neurons.
    consumers : list of Consumer
    activation : callable
        Maps the producer's pre-activations to the site's post-activations (used to score
        candidate neurons on the sample buffer).
    norms : list of nn.Module
        Normalisation layers (BatchNorm) over the site's neurons.
    max_width : int or None
        The width the site may not grow past.
    response : callable or None
        ``response(inputs, fan_in, bias)``: the post-activations that neurons with these
        fan-in weights ``(k, *fan_in_shape)`` and biases ``(k,)`` would have on
        ``inputs`` (the producer's input, as ``SiteActivations.inputs``), laid out as the
        site's ``SiteActivations.post`` (one row per sample, or per position of a sample
        for a conv site, one column per neuron). ``None``: a dense site's
        ``activation(inputs @ fan_in.T + bias)``. A conv site's network gives its own
        (the convolution, the normalisation and pooling between it and the activations
        the metric measures).
    tied : list of TiedChannels
        Channels that grow with the site, in the order they are grown: a producer's
        fan-in covers its input as grown by the site and the groups before it.
    pool : callable or None
        A conv site's spatial map from its activations to what its consumers read (a
        max-pool), applied per channel to ``(N, C, H, W)`` maps; ``None``: none. GradMax's
        auxiliary gradient goes back through it.
    """

    name: str
    producer: nn.Module
    consumers: list
    activation: Callable
    norms: list = field(default_factory=list)
    max_width: int | None = None
    response: Callable | None = None
    tied: list = field(default_factory=list)
    pool: Callable | None = None

    @property
    def is_conv(self):
        """Whether the site's neurons are the output channels of a convolution."""
        return isinstance(self.producer, nn.modules.conv._ConvNd)

    def candidate_post(self, inputs, fan_in, bias):
        """Post-activations of candidate neurons on ``inputs`` (see ``response``)."""
        if self.response is not None:
            return self.response(inputs, fan_in, bias)
        flat = fan_in.reshape(fan_in.shape[0], -1)
        return self.activation(torch.addmm(bias, inputs.reshape(inputs.shape[0], -1), flat.T))

    @property
    def width(self):
        """Current number of neurons (output channels)."""
        return self.producer.weight.shape[0]

    @property
    def fan_in_shape(self):
        """Shape of one neuron's fan-in weights."""
        return tuple(self.producer.weight.shape[1:])

    @property
    def room(self):
        """Neurons that may still be added before ``max_width``."""
        return float("inf") if self.max_width is None else max(self.max_width - self.width, 0)

    def fan_out_shape(self, consumer, k):
        """Shape of the fan-out block that ``k`` new neurons add to ``consumer``."""
        w = consumer.module.weight
        return (w.shape[0], k * consumer.spatial, *w.shape[2:])


@dataclass
class NewNeurons:
    """Weights of ``k`` neurons about to be added to a site.

    ``fan_out`` holds one block per consumer, shaped like ``GrowthSite.fan_out_shape``;
    ``None`` means all-zero fan-out (function-preserving growth). ``norm_sources``: for
    each new neuron, the existing neuron whose normalisation entries (affine parameters
    and running statistics) it copies, or -1 for identity entries (a split neuron must
    be normalised as the one it splits); ``None``: identity entries for all.
    """

    fan_in: torch.Tensor
    bias: torch.Tensor | None = None
    fan_out: list | None = None
    norm_sources: torch.Tensor | None = None

    @property
    def k(self):
        return self.fan_in.shape[0]


def add_neurons(site, new, optimizer=None, second_moment="gradient", tied_fan_in=None):
    """Append ``new.k`` neurons to ``site`` in place.

    Appends fan-in rows (and biases) to the producer, fan-out columns to every consumer and
    identity entries to every norm layer, updates the modules' size attributes, and pads the
    optimizer state of every touched parameter (see ``optim.grow_parameter``). A tied site
    then grows its ``tied`` channels by as many, each producer's fan-in given by
    ``tied_fan_in(producer, k)``, their fan-out zero.

    With zero fan-out (``new.fan_out is None``) the network's output is unchanged.
    """
    k = new.k
    if k == 0:
        return
    if tuple(new.fan_in.shape[1:]) != site.fan_in_shape:
        raise ValueError(
            f"fan_in has shape {tuple(new.fan_in.shape)}, expected (k, *{site.fan_in_shape})."
        )
    fan_out = new.fan_out if new.fan_out is not None else [None] * len(site.consumers)
    if len(fan_out) != len(site.consumers):
        raise ValueError(f"Expected {len(site.consumers)} fan-out blocks, got {len(fan_out)}.")
    if site.tied and tied_fan_in is None:
        raise ValueError(f"Site {site.name!r} is tied to other channels: pass tied_fan_in.")

    def grow(module, name, dim, values):
        grow_parameter(module, name, dim, values, optimizer, second_moment)

    _grow_outputs(site.producer, new.fan_in, new.bias, grow)
    _grow_inputs(site, site.consumers, fan_out, k, grow)
    for norm in site.norms:
        _grow_norm(norm, k, optimizer, second_moment, new.norm_sources)
    for group in site.tied:
        for producer in group.producers:
            _grow_outputs(producer, tied_fan_in(producer, k), None, grow)
        _grow_inputs(site, group.consumers, [None] * len(group.consumers), k, grow)
        for norm in group.norms:
            _grow_norm(norm, k, optimizer, second_moment)


def _grow_outputs(producer, fan_in, bias, grow):
    k = fan_in.shape[0]
    grow(producer, "weight", 0, fan_in)
    if producer.bias is not None:
        bias = bias if bias is not None else producer.bias.new_zeros(k)
        grow(producer, "bias", 0, bias.reshape(k))
    _set_size(producer, out=producer.weight.shape[0])


def _grow_inputs(site, consumers, blocks, k, grow):
    for consumer, block in zip(consumers, blocks, strict=True):
        shape = site.fan_out_shape(consumer, k)
        weight = consumer.module.weight
        block = weight.new_zeros(shape) if block is None else block.reshape(shape)
        grow(consumer.module, "weight", 1, block)
        _set_size(consumer.module, inp=consumer.module.weight.shape[1])


def _grow_norm(norm, k, optimizer, second_moment, sources=None):
    # Identity entries (weight 1, bias 0, running statistics of a standard normal), or
    # copies of the entries of the neurons in ``sources`` where it is >= 0.
    def entries(tensor, identity):
        values = tensor.detach().new_full((k,), identity)
        if sources is not None:
            src = sources.to(tensor.device)
            copied = src >= 0
            values[copied] = tensor.detach()[src[copied]]
        return values

    if norm.weight is not None:
        grow_parameter(norm, "weight", 0, entries(norm.weight, 1.0), optimizer, second_moment)
        grow_parameter(norm, "bias", 0, entries(norm.bias, 0.0), optimizer, second_moment)
    if getattr(norm, "running_mean", None) is not None:
        norm.running_mean = torch.cat([norm.running_mean, entries(norm.running_mean, 0.0)])
        norm.running_var = torch.cat([norm.running_var, entries(norm.running_var, 1.0)])
    norm.num_features += k


def _set_size(module, out=None, inp=None):
    # Keep the modules' size attributes (used by repr and by shape checks) truthful.
    if isinstance(module, nn.Linear):
        if out is not None:
            module.out_features = out
        if inp is not None:
            module.in_features = inp
    elif isinstance(module, nn.modules.conv._ConvNd):
        if out is not None:
            module.out_channels = out
        if inp is not None:
            module.in_channels = inp
