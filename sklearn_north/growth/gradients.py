"""Per-step gradient statistics for ``T_grad``, GradMax, Firefly and NeST (SPEC sections 3-4).

The auxiliary gradient of the paper's eq. (6) is the gradient of the loss with respect to
an all-zero weight matrix bridging a site's input ``H_{l-1}`` directly to its consumers'
pre-activations ``Z_{l+1}``. Over a mini-batch, sample-major:

``G = delta^T @ inputs``, shape ``(n_out, fan_in)``

with ``inputs = H_{l-1}^T`` (n, fan_in), the producer's input, and
``delta = dL/dZ_{l+1}`` (n, n_out), the gradient of the loss with respect to the
consumer's output. Both are tensors the training step computes anyway; no auxiliary module
runs. ``GradientRecorder`` keeps them with hooks:

- a forward hook on each site's producer and consumer (one per module, whatever its
  roles) keeps a producer's input (a reference, no copy) and, on a consumer, registers a
  hook on its *output tensor*, which keeps the gradient that flows into it during
  ``backward``; with ``keep_updates`` it also copies the module's weights once per step.

Hooks record only in training mode with gradients enabled, so predictions, the sample
buffer's forward passes and validation do not overwrite the step's statistics.

``snapshot(sites)`` (called by the growth callback after the optimizer step) hands the
recorded tensors of the step that just happened to a ``GradientSnapshot``, together with
references to the parameters' ``.grad`` of that step (still the step's gradients:
skorch zeroes them at the start of the next step). It then forgets them, so statistics of
one step are never reused for another.

Dense sites (a ``Linear`` producer whose consumers are ``Linear`` modules reading one column
per neuron) and conv sites (a ``Conv2d`` producer whose consumers are convs, or a ``Linear``
reading the flattened maps) are supported. A conv site's ``G`` is GradMax's exact auxiliary
matrix (``conv_gradients.site_auxiliary_gradient``), formed only when read.
"""

import math
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from .conv_gradients import ConvGeometry, site_auxiliary_gradient
from .metrics import column_norms

__all__ = ["ConvSiteGradients", "GradientRecorder", "GradientSnapshot", "SiteGradients"]


@dataclass
class SiteGradients:
    """Gradient statistics of one site on the last training mini-batch, sample-major.

    Attributes
    ----------
    inputs : torch.Tensor of shape (n, fan_in)
        The producer's input ``H_{l-1}^T`` (detached).
    delta : torch.Tensor of shape (n, n_out)
        ``dL/dZ_{l+1}``: the gradient of the batch loss with respect to the consumers'
        outputs, the consumers' columns concatenated in ``site.consumers`` order.
    weight_grad : torch.Tensor of shape (M, fan_in)
        The producer's weight gradient (row ``m``: ``dL/dw_m^in`` without bias).
    bias_grad : torch.Tensor of shape (M,) or None
    fan_out_grad : torch.Tensor of shape (n_out, M)
        The consumers' weight gradients, stacked (column ``m``: ``dL/dw_m^out``).
    consumer_sizes : tuple of int
        Output sizes of the consumers, to split an ``n_out`` vector into per-consumer
        fan-out blocks.
    weight_update, bias_update, fan_out_update : torch.Tensor or None
        What the optimizer step changed in the same weights (``after - before``), shaped
        like the gradients above; recorded only by a ``GradientRecorder(keep_updates=True)``.
    """

    inputs: torch.Tensor
    delta: torch.Tensor
    weight_grad: torch.Tensor
    bias_grad: torch.Tensor | None
    fan_out_grad: torch.Tensor
    consumer_sizes: tuple
    weight_update: torch.Tensor | None = None
    bias_update: torch.Tensor | None = None
    fan_out_update: torch.Tensor | None = None
    _G: torch.Tensor | None = field(default=None, repr=False)
    _left_factor: torch.Tensor | None = field(default=None, repr=False)

    @property
    def n_samples(self):
        return self.inputs.shape[0]

    @property
    def G(self):
        """The auxiliary gradient ``delta^T @ inputs`` (n_out, fan_in) of eq. (6)."""
        if self._G is None:
            self._G = self.delta.T @ self.inputs
        return self._G

    @property
    def left_factor(self):
        """A matrix ``C`` with ``C C^T = G G^T``: ``G``'s singular values and left singular
        vectors, with at most as many columns as the batch has samples.

        ``G = delta^T X`` has rank at most ``n`` (the samples). When ``n`` is below ``G``'s
        shorter side, any ``L`` (n x n) with ``L L^T = X X^T`` gives ``C = delta^T L``:
        ``C C^T = delta^T X X^T delta = G G^T``. ``L`` is the Cholesky factor of the
        float64 ``X X^T`` (backward stable: as accurate as the float64 Gram of ``G``), or,
        where that is singular to working precision (a sample repeated in the batch, an
        all-zero row), ``R^T`` from a thin QR ``X^T = Q R``. On MNIST's first layer (``G``
        up to 784 x 784, batch 128) this turns a 784-column Gram and its factorisation
        into a 128-column one (float64). Otherwise ``C`` is ``G`` itself.
        """
        if self._left_factor is None:
            with torch.no_grad():
                n, n_out, fan_in = *self.inputs.shape, self.delta.shape[1]
                if n < min(n_out, fan_in):
                    X = self.inputs.detach().double()
                    L, info = torch.linalg.cholesky_ex(X @ X.T)
                    if int(info) != 0:
                        L = torch.linalg.qr(X.T, mode="r").R.T
                    self._left_factor = self.delta.detach().double().T @ L
                else:
                    self._left_factor = self.G
        return self._left_factor

    def fan_in_grad_norms(self, include_bias=True, updates=False):
        """``||dL/dw_m^in||`` per existing neuron (M,).

        With ``include_bias`` (default) the bias gradient is part of the fan-in, as in the
        paper's notation, where ``W_l`` carries the biases as an extra column. With
        ``updates`` the norms are those of the optimizer step's change instead.
        """
        weight, bias = (
            (self.weight_update, self.bias_update)
            if updates
            else (self.weight_grad, self.bias_grad)
        )
        if weight is None:
            raise RuntimeError("No weight updates were recorded (keep_updates=False).")
        norms = torch.linalg.vector_norm(weight, dim=1)
        if include_bias and bias is not None:
            norms = torch.hypot(norms, bias)  # the norm of the row with the bias appended
        return norms

    def fan_out_grad_norms(self, updates=False):
        """``||dL/dw_m^out||`` per existing neuron (M,), over all consumers (or the norms
        of the optimizer step's change with ``updates``)."""
        fan_out = self.fan_out_update if updates else self.fan_out_grad
        if fan_out is None:
            raise RuntimeError("No weight updates were recorded (keep_updates=False).")
        return column_norms(fan_out)

    def candidate_fan_out_gradients(self, site, fan_in, bias):
        """``dL/d(fan-out)`` of candidate neurons with fan-in ``fan_in`` ``(K, fan_in)`` and
        biases ``(K,)`` added with zero fan-out, on the recorded batch: ``(n_out, K)``, rows
        as ``G``'s (float64)."""
        with torch.no_grad():
            acts = site.activation(self.inputs @ fan_in.T + bias)
            return (self.delta.T @ acts).double()

    def split_fan_out(self, vectors):
        """Split ``(n_out, k)`` fan-out columns into one ``(out_c, k)`` block per consumer."""
        return list(torch.split(vectors, list(self.consumer_sizes), dim=0))


@dataclass
class ConvSiteGradients(SiteGradients):
    """``SiteGradients`` of a conv site: ``inputs`` are the producer's input images,
    ``deltas`` each consumer's output gradient (a dense consumer's as ``(n, n_out, 1, 1)``),
    ``fan_out_grad`` (and ``fan_out_update``) one row per fan-out coordinate of a channel
    (a consumer's output channel and kernel tap, or its output and map position), ``G``
    the auxiliary matrix ``(rows, C_in * kh * kw)`` with those rows, formed when read.

    Where a BatchNorm sits between the producer and the activation, ``G`` keeps its
    centring but takes the new entries' own scale, ``1 / sqrt(1 + eps)`` (running variance
    1), not the train-mode backward's ``1 / sqrt(eps)`` at a constant channel: that would
    make ``G``'s singular values ~316 times the existing channels' gradient norms and the
    gradient trigger fire at every step. GradMax's directions do not depend on the scale.
    ``G * sqrt((1 + eps) / eps)`` is the next training step's exact fan-in gradient map."""

    deltas: list | None = None
    geometry: tuple | None = None  # (producer, consumers' geometries, pool, norm_eps)

    def candidate_fan_out_gradients(self, site, fan_in, bias):
        """``dL/d(fan-out)`` of candidate channels (filters ``fan_in`` ``(K, C_in, kh, kw)``,
        biases ``(K,)``) added with zero fan-out, on the recorded batch: ``(rows, K)``, rows
        as ``G``'s (float64). The candidates' activations are ``site.candidate_post``'s
        (BatchNorm entries read as the identity, as in eval mode)."""
        _, consumers, _, _ = self.geometry
        with torch.no_grad():
            post = site.candidate_post(self.inputs, fan_in, bias)  # (N * H' * W', K)
            n = self.inputs.shape[0]
            size = self._map_size(site)
            acts = post.reshape(n, *size, -1).permute(0, 3, 1, 2)
            blocks = []
            for consumer, delta in zip(consumers, self.deltas):
                geometry = _as_geometry(consumer)
                g = torch.nn.grad.conv2d_weight(
                    acts,
                    (delta.shape[1], acts.shape[1], *geometry.kernel_size),
                    delta,
                    stride=geometry.stride,
                    padding=geometry.padding,
                )  # (C_out, K, kh, kw): rows (o, u, v) per candidate
                blocks.append(g.permute(0, 2, 3, 1).reshape(-1, acts.shape[1]))
            return torch.cat(blocks).double()

    def _map_size(self, site):
        return _map_size(site, self.inputs)

    @property
    def left_factor(self):
        # A conv site's G sums over map positions too: the batch does not bound its rank.
        return self.G

    @property
    def G(self):
        if self._G is None:
            producer, consumers, pool, norm_eps = self.geometry
            self._G = site_auxiliary_gradient(
                self.inputs,
                self.deltas,
                producer,
                consumers,
                pool=pool,
                norm_eps=norm_eps,
                norm_scale=None if norm_eps is None else 1 / math.sqrt(1 + norm_eps),
            )
        return self._G


class GradientSnapshot:
    """The ``SiteGradients`` of every site for one growth evaluation.

    When a site grows during the evaluation, ``site_grew`` keeps the others consistent:
    a site that reads the grown site's output gets the new neurons' activations on the
    recorded batch appended to its ``inputs`` (``act(inputs_l @ w_new^T + b_new)``) and
    the matching columns ``delta_l^T @ a_new`` appended to its weight gradient, i.e. what
    the step would have recorded had the new neurons been there. This is exact for
    function-preserving growth; a function-changing initializer's effect on downstream
    activations and gradients is only seen from the next step on. The grown site itself,
    and a site whose output the grown site reads, are marked out of date (their recorded
    shapes no longer match the network; they are not evaluated again in the same pass).
    """

    def __init__(self, records):
        self._records = dict(records)
        self._stale = set()

    def __getitem__(self, index):
        if index in self._stale:
            raise RuntimeError(
                f"The gradient statistics of site {index} are out of date: a site it "
                "depends on grew since the training step they were recorded on."
            )
        record = self._records.get(index)
        if record is None:
            raise RuntimeError(
                f"No gradient statistics were recorded for site {index}: gradients are "
                "captured during training steps only."
            )
        return record

    def is_stale(self, index):
        """Whether site ``index``'s statistics went out of date in this evaluation."""
        return index in self._stale

    def __contains__(self, index):
        return index in self._records and index not in self._stale

    def site_grew(self, index, sites, new):
        """Update the statistics after ``new`` neurons were added to ``sites[index]``.

        ``sites`` is the list of growth sites (``sites[index]`` already grown); ``new`` the
        ``NewNeurons`` that were added.
        """
        grown = sites[index]
        record = self._records.get(index) if index not in self._stale else None
        if isinstance(record, ConvSiteGradients):
            record = None  # the sites reading a conv site are not brought up to date
        self._stale.add(index)
        # Where each consumer's columns lie in the grown site's delta.
        slices, offset = {}, 0
        if record is not None:
            for consumer, size in zip(grown.consumers, record.consumer_sizes):
                slices[id(consumer.module)] = slice(offset, offset + size)
                offset += size
        consumers = {id(c.module) for c in grown.consumers}
        for j, site in enumerate(sites):
            if j == index or j not in self._records or j in self._stale:
                continue
            if id(site.producer) in consumers:
                if record is None or isinstance(self._records[j], ConvSiteGradients):
                    self._stale.add(j)
                else:
                    self._extend_inputs(j, grown, record, new, slices[id(site.producer)])
            elif any(c.module is grown.producer for c in site.consumers):
                self._stale.add(j)

    def _extend_inputs(self, j, grown, record, new, columns):
        down = self._records[j]
        like = record.inputs
        fan_in = new.fan_in.reshape(new.k, -1).to(device=like.device, dtype=like.dtype)
        bias = (
            new.bias.to(device=like.device, dtype=like.dtype)
            if new.bias is not None
            else like.new_zeros(new.k)
        )
        with torch.no_grad():
            a_new = grown.activation(like @ fan_in.T + bias)
            # dL/dW for the new input columns of site j's producer: its output gradient
            # (the grown site's delta, this consumer's columns) times their activations.
            new_grad = record.delta[:, columns].T @ a_new
        weight_update = down.weight_update
        if weight_update is not None:  # the new columns did not exist during the step
            weight_update = torch.cat(
                [weight_update, weight_update.new_zeros(len(new_grad), new.k)], 1
            )
        self._records[j] = SiteGradients(
            inputs=torch.cat([down.inputs, a_new.to(down.inputs.dtype)], dim=1),
            delta=down.delta,
            weight_grad=torch.cat([down.weight_grad, new_grad.to(down.weight_grad.dtype)], 1),
            bias_grad=down.bias_grad,
            fan_out_grad=down.fan_out_grad,
            consumer_sizes=down.consumer_sizes,
            weight_update=weight_update,
            bias_update=down.bias_update,
            fan_out_update=down.fan_out_update,
        )


class GradientRecorder:
    """Keeps the producer inputs and consumer-output gradients of the last training step.

    Usage: ``attach(sites)`` registers the hooks, ``snapshot(sites)`` returns (and
    forgets) what the last training step recorded, ``detach()`` removes the hooks.

    A recorder never pickles its hooks or tensors: its pickled state is empty and
    inactive (hooks left on a module pickled while attached then do nothing).

    Parameters
    ----------
    keep_updates : bool, default=False
        Also copy the sites' weights during the training forward pass, so that
        ``snapshot`` can report what the optimizer step changed (``SiteGradients.*_update``).
        Costs one copy of the sites' weights per step.
    """

    def __init__(self, keep_updates=False):
        self.keep_updates = keep_updates
        self._handles = []
        self._inputs = {}
        self._deltas = {}
        self._before = {}
        self.active = False

    # -- hooks --------------------------------------------------------------------------

    def attach(self, sites):
        """Register the hooks on ``sites``' producers and consumers (replacing old ones)."""
        self.detach()
        producers, consumers = {}, {}
        for site in sites:
            _check_supported(site)
            producers[id(site.producer)] = site.producer
            for c in site.consumers:
                consumers[id(c.module)] = c.module
        # One hook per module, whatever its roles: a layer that is one site's producer
        # and another's consumer has its weights copied once per step.
        for key, module in {**producers, **consumers}.items():
            hook = partial(self._record, producer=key in producers, consumer=key in consumers)
            self._handles.append(module.register_forward_hook(hook))
        self.active = True
        return self

    def detach(self):
        """Remove every hook and forget the recorded tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._inputs = {}
        self._deltas = {}
        self._before = {}
        self.active = False
        return self

    @property
    def n_hooks(self):
        return len(self._handles)

    @staticmethod
    def _recording(module):
        return module.training and torch.is_grad_enabled()

    def _record(self, module, args, output, producer, consumer):
        if not (self.active and self._recording(module)):
            return
        if producer:
            self._inputs[id(module)] = args[0].detach()
        if consumer:
            # A new forward pass: the previous pass's gradient no longer matches the
            # inputs being recorded (a forward without backward leaves no statistics).
            self._deltas.pop(id(module), None)
            if output.requires_grad:
                output.register_hook(partial(self._keep_delta, id(module)))
        if self.keep_updates:
            # The weights as the step's forward pass saw them, before the optimizer step.
            self._before[id(module)] = {
                name: (p, p.detach().clone()) for name, p in module.named_parameters(recurse=False)
            }

    def _keep_delta(self, key, grad):
        if self.active:
            self._deltas[key] = grad.detach()

    # -- statistics ---------------------------------------------------------------------

    def snapshot(self, sites):
        """``GradientSnapshot`` of the last training step for ``sites``; then forget it.

        Reads the parameters' current ``.grad`` (those of the last step). A site whose
        tensors were not all recorded has no entry.
        """
        records = {}
        changes = self._step_changes()
        for index, site in enumerate(sites):
            inputs = self._inputs.get(id(site.producer))
            deltas = [self._deltas.get(id(c.module)) for c in site.consumers]
            weight_grad = site.producer.weight.grad
            fan_out_grads = [c.module.weight.grad for c in site.consumers]
            if (
                inputs is None
                or weight_grad is None
                or any(d is None or d.shape[0] != inputs.shape[0] for d in deltas)
                or any(g is None for g in fan_out_grads)
            ):
                continue
            if site.is_conv:
                records[index] = self._conv_record(site, inputs, deltas, fan_out_grads, changes)
                continue
            bias = site.producer.bias
            records[index] = SiteGradients(
                inputs=inputs.reshape(inputs.shape[0], -1),
                delta=_joined(deltas, dim=1),
                weight_grad=weight_grad.reshape(weight_grad.shape[0], -1),
                bias_grad=bias.grad if bias is not None else None,
                fan_out_grad=_joined(fan_out_grads, dim=0),
                consumer_sizes=tuple(d.shape[1] for d in deltas),
                **self._updates(site, changes),
            )
        self._inputs = {}
        self._deltas = {}
        self._before = {}
        return GradientSnapshot(records)

    def _conv_record(self, site, inputs, deltas, fan_out_grads, changes):
        producer = site.producer
        consumers, shaped = [], []
        for consumer, delta in zip(site.consumers, deltas):
            if isinstance(consumer.module, nn.Conv2d):
                consumers.append(consumer.module)
                shaped.append(delta)
            else:  # a Linear reading the flattened maps: a conv whose kernel is the map
                consumers.append(ConvGeometry(_map_size(site, inputs)))
                shaped.append(delta.reshape(*delta.shape, 1, 1))
        width = site.width
        norm_eps = site.norms[0].eps if site.norms else None
        updates = self._updates(site, changes, conv=True)
        bias = producer.bias
        return ConvSiteGradients(
            inputs=inputs,
            delta=None,
            weight_grad=producer.weight.grad.reshape(width, -1),
            bias_grad=bias.grad if bias is not None else None,
            fan_out_grad=per_neuron_rows(fan_out_grads, width),
            consumer_sizes=tuple(per_neuron_rows([g], width).shape[0] for g in fan_out_grads),
            deltas=shaped,
            geometry=(producer, consumers, site.pool, norm_eps),
            **updates,
        )

    def _step_changes(self):
        """``after - before`` of the last step per recorded module and parameter name,
        each computed once (a layer that is one site's producer and another's consumer is
        read by both), in the memory of the copies, which are not needed again."""
        with torch.no_grad():
            return {
                key: {name: torch.sub(p, copy, out=copy) for name, (p, copy) in kept.items()}
                for key, kept in self._before.items()
            }

    @staticmethod
    def _updates(site, changes, conv=False):
        """The site's weights' ``_step_changes`` (empty if they were not kept)."""
        producer_changes = changes.get(id(site.producer))
        consumer_changes = [changes.get(id(c.module)) for c in site.consumers]
        if producer_changes is None or any(c is None for c in consumer_changes):
            return {}
        weight = producer_changes["weight"]
        fan_out = [c["weight"] for c in consumer_changes]
        fan_out = per_neuron_rows(fan_out, site.width) if conv else _joined(fan_out, dim=0)
        return {
            "weight_update": weight.reshape(weight.shape[0], -1),
            "bias_update": producer_changes.get("bias"),
            "fan_out_update": fan_out,
        }

    def __getstate__(self):
        return {
            "keep_updates": self.keep_updates,
            "_handles": [],
            "_inputs": {},
            "_deltas": {},
            "_before": {},
            "active": False,
        }


def _joined(tensors, dim):
    """The consumers' tensors joined along ``dim``; a single consumer's as it is (no copy)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


def per_neuron_rows(weights, width):
    """Consumers' weights (or gradients), ``(out, width * spatial, ...)`` each, as one column
    per neuron and one row per fan-out coordinate ``(o, tap or map position)``, row-major,
    the consumers' rows stacked: the rows of a conv site's ``G``."""
    return torch.cat(
        [w.reshape(w.shape[0], width, -1).movedim(1, 0).reshape(width, -1).T for w in weights]
    )


def _as_geometry(consumer):
    return consumer if isinstance(consumer, ConvGeometry) else ConvGeometry.from_module(consumer)


def _map_size(site, inputs):
    # The maps a dense consumer flattens: the producer's output, then the site's pooling.
    with torch.no_grad():
        out = site.producer(inputs[:1])
        return tuple((site.pool(out) if site.pool is not None else out).shape[2:])


def _check_supported(site):
    if site.is_conv:
        if not isinstance(site.producer, nn.Conv2d) or not all(
            isinstance(c.module, nn.Conv2d | nn.Linear) for c in site.consumers
        ):
            raise NotImplementedError(
                f"Gradient statistics of conv site {site.name!r} need a Conv2d producer "
                "and Conv2d or Linear consumers."
            )
        if not site.consumers:
            raise ValueError(f"Site {site.name!r} has no consumer: it has no fan-out gradient.")
        return
    _check_dense(site)


def _check_dense(site):
    if not isinstance(site.producer, nn.Linear) or not all(
        isinstance(c.module, nn.Linear) and c.spatial == 1 for c in site.consumers
    ):
        raise NotImplementedError(
            f"Gradient statistics are implemented for dense sites only (Linear producer "
            f"and consumers); site {site.name!r} is not one."
        )
    if not site.consumers:
        raise ValueError(f"Site {site.name!r} has no consumer: it has no fan-out gradient.")
