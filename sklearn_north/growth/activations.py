"""Fast mode: activation statistics from the training forward pass (no extra forward).

The paper's protocol (the default, ``activation_source="buffer"``) recomputes every
site's activations on the sample buffer with the current weights at each evaluation: one
extra forward pass of ``buffer_size`` samples per step, about as costly as the training
step itself on MNIST. ``ActivationRecorder`` instead keeps what the training forward pass
already computed: for each site, the producer's input and pre-activations of the last
``capacity`` training samples, in a ring. Every statistic is then taken on those rows.

This is an approximation, off by default: a row is as stale as the step it was trained
at (up to ``capacity / batch_size`` steps old, computed before that step's optimizer
update), and the first rows come from the untrained network (the baseline's buffer). When
a site grows, the new neurons' columns are computed exactly on the kept rows: their
pre-activations from the kept inputs, and the same columns are appended to the inputs
kept for the sites that read the grown one.

Networks that can keep their training forward's activations themselves (convolutional
ones: a site's rows are positions of samples, and its post-activations are read after
pooling) get a ``ForwardRecorder`` instead: the metric is then measured on the current
mini-batch, the authors' CNN protocol.

The kept rows change by one batch per step, so the float64 Gram matrix of each site's
post-activations (the trigger's and Select's statistic) is kept per written segment of the
ring and only the new rows' part is formed (``_PostGramRing``): the same matrix as forming
it from all kept rows, up to the order of float64 sums.
"""

import torch

from . import metrics
from .context import SampleBuffer, SiteActivations

#: Most segments a ``_PostGramRing`` keeps a Gram matrix for: beyond it, the two shortest
#: neighbouring segments merge (small batches would otherwise leave one per row).
MAX_SEGMENTS = 8


class _Ring(SampleBuffer):
    """A ``SampleBuffer`` of one tensor of a site, whose columns can grow."""

    def extend(self, rows):
        if self.data is not None and self.data.shape[1:] != rows.shape[1:]:
            # The site's width changed without site_grew (e.g. surgery outside the
            # callback): the kept rows no longer match, start again.
            self._clear()
        super().extend(rows)

    def _clear(self):
        self.data, self.size, self._next = None, 0, 0

    def append_columns(self, columns):
        """Append ``columns`` (size x c), one row per kept row, in the kept rows' order."""
        grown = self.data.new_zeros((self.capacity, self.data.shape[1] + columns.shape[1]))
        grown[:, : self.data.shape[1]] = self.data
        grown[: self.size, self.data.shape[1] :] = columns
        self.data = grown


class _PostGramRing(_Ring):
    """The pre-activation ring of a site, with its post-activations' Gram matrix.

    The float64 Gram of the kept rows' post-activations is the sum of the Grams of the
    segments (runs of ring positions) the rows were written in, each formed once. A write
    forms the Gram of the rows it wrote and, where it overwrote part of an older segment,
    of that segment's remaining rows (never by subtraction, so no rounding accumulates):
    at batch 512 and 1568 rows, ~544 rows' worth per step instead of 1568.
    """

    def __init__(self, capacity, activation):
        super().__init__(capacity)
        self.activation = activation
        self._segments = []  # [start, stop, gram or None], disjoint, ordered by start

    def _write(self, start, stop, rows):
        super()._write(start, stop, rows)
        kept = []
        for a, b, g in self._segments:
            if b <= start or a >= stop:
                kept.append([a, b, g])
                continue
            # Overwritten in part: what is left is a new segment, its Gram formed anew.
            kept += [[a, start, None]] if a < start else []
            kept += [[stop, b, None]] if stop < b else []
        kept.append([start, stop, None])
        kept.sort(key=lambda segment: segment[0])
        while len(kept) > MAX_SEGMENTS:
            pairs = [i for i in range(len(kept) - 1) if kept[i][1] == kept[i + 1][0]]
            if not pairs:
                break
            i = min(pairs, key=lambda i: kept[i + 1][1] - kept[i][0])
            (a, _, g), (_, b, h) = kept[i], kept.pop(i + 1)
            kept[i] = [a, b, g + h if g is not None and h is not None else None]
        self._segments = kept

    def _clear(self):
        super()._clear()
        self._segments = []

    def append_columns(self, columns):
        super().append_columns(columns)
        for segment in self._segments:
            segment[2] = None

    def post_gram(self):
        """Float64 Gram matrix of the kept rows' post-activations (M x M)."""
        total = None
        for segment in self._segments:
            start, stop, g = segment
            if g is None:
                g = segment[2] = metrics.gram(self.activation(self.data[start:stop]))
            total = g.clone() if total is None else total.add_(g)
        if total is None:
            raise RuntimeError("The ring is empty.")
        return total


class ActivationRecorder:
    """Keeps each site's producer input and pre-activations from the training forward.

    Usage: ``attach(sites)`` registers forward hooks on the sites' producers (they record
    only forward passes in training mode with gradients enabled), ``fill(activations)``
    seeds the rings (e.g. with the baseline's activations), ``site_activations()`` returns
    one ``SiteActivations`` per site on the kept rows, ``site_grew(...)`` keeps them up to
    date after growth, ``detach()`` removes the hooks. Dense sites only.

    Parameters
    ----------
    capacity : int
        Rows kept per site (the sample buffer's size).
    """

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self._handles = []
        self._index = {}
        self._inputs = {}
        self._pre = {}
        self._sites = []

    def attach(self, sites):
        self.detach()
        self._sites = list(sites)
        for index, site in enumerate(self._sites):
            if len(site.fan_in_shape) != 1:
                raise NotImplementedError(
                    "activation_source='training' supports dense sites only, got fan-in "
                    f"shape {tuple(site.fan_in_shape)} for site {site.name!r}."
                )
            self._index[id(site.producer)] = index
            self._inputs.setdefault(index, _Ring(self.capacity))
            self._pre.setdefault(index, _PostGramRing(self.capacity, site.activation))
            self._pre[index].activation = site.activation
            self._handles.append(site.producer.register_forward_hook(self._record))
        return self

    def detach(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self

    def _record(self, module, args, output):
        if module.training and torch.is_grad_enabled():
            index = self._index[id(module)]
            if self._sites[index].room == 0:
                # A site at its maximum is never evaluated nor grown again: its rows are
                # not needed (a site reading it keeps its own inputs).
                return
            self._inputs[index].extend(args[0].reshape(args[0].shape[0], -1))
            self._pre[index].extend(output)

    def fill(self, activations):
        """Push ``SiteActivations`` (one per site, e.g. on the first buffer) into the rings."""
        for index, acts in enumerate(activations):
            self._inputs[index].extend(acts.inputs.reshape(acts.inputs.shape[0], -1))
            self._pre[index].extend(acts.pre)

    def site_activations(self):
        """One ``SiteActivations`` per site, on the kept rows."""
        out = []
        for index, site in enumerate(self._sites):
            inputs, pre = self._inputs[index], self._pre[index]
            if inputs.size != pre.size:
                raise RuntimeError("The recorded inputs and pre-activations are out of step.")
            out.append(
                SiteActivations(
                    inputs=inputs.samples(),
                    pre=pre.samples(),
                    activation=site.activation,
                    post_gram=pre.post_gram,
                )
            )
        return out

    def site_grew(self, index, sites, new):
        """Append the columns of ``new`` (``NewNeurons`` added to site ``index``)."""
        site = sites[index]
        inputs = self._inputs[index].samples()
        w = new.fan_in.reshape(new.fan_in.shape[0], -1).to(inputs.dtype)
        pre = inputs @ w.T
        if new.bias is not None:
            pre = pre + new.bias.to(pre.dtype)
        self._pre[index].append_columns(pre)
        readers = {id(c.module) for c in site.consumers}
        post = site.activation(pre)
        for module_id, reader in self._index.items():
            if module_id in readers:
                self._inputs[reader].append_columns(post)


class ForwardRecorder:
    """The current mini-batch's activations, kept by the network's own training forward.

    For networks with ``record_activations`` (a flag their forward reads) and
    ``recorded_site_activations()`` (``None`` before the first training batch; after a
    site grew, measured anew on the same batch with the current weights, and kept up to
    date through the network's ``recorded_site_grew`` for the sites that grow after it).
    Same usage as ``ActivationRecorder``; ``fill`` has nothing to do.
    """

    def __init__(self, module):
        self.module = module

    def attach(self, sites=None):
        self.module.record_activations = True
        return self

    def detach(self):
        self.module.record_activations = False
        self.module._recorded = None
        return self

    def fill(self, activations):
        return

    def site_activations(self):
        return self.module.recorded_site_activations()

    def site_grew(self, index, sites, new):
        self.module.recorded_site_grew(index, new)
