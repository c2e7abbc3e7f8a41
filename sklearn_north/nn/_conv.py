"""What the convolutional networks share: the metric's layout of a conv site's activations,
CPU pooling, and keeping the training forward's activations (``activation_source="training"``).

A conv site's activations are laid out one row per position of every sample,
``(N * H * W, C)``: every position is a sample of the metric (SPEC section 8).
"""

import torch
from torch.nn import functional as F

from ..growth.context import SiteActivations


def rows(T):
    """``(N, C, H, W)`` -> ``(N * H * W, C)``: every position of every sample is a row."""
    return T.permute(0, 2, 3, 1).reshape(-1, T.shape[1])


def activations_of(inputs, Z, H):
    """``SiteActivations`` of a conv site (4-D ``Z``: rows of positions) or a dense one."""
    if Z.ndim == 4:
        return SiteActivations(inputs=inputs, pre=rows(Z), post=rows(H))
    return SiteActivations(inputs=inputs, pre=Z, post=H)


def max_pool(H):
    """2x2 max-pool in ceil mode (a side of 1 stays 1)."""
    if H.device.type == "cpu":
        # torch's CPU max-pool is ~4x faster on channels-last tensors than on NCHW ones
        # (small CNN on MNIST, one thread: 14 ms -> 3 ms a batch, conversion included).
        H = H.contiguous(memory_format=torch.channels_last)
    return F.max_pool2d(H, 2, ceil_mode=True)


class RecordsSiteActivations:
    """Mixin of growable networks whose training forward keeps the current mini-batch's
    site activations while ``record_activations`` is set (the growth engine's
    ``ForwardRecorder``), so that measuring them costs no second forward pass.

    The network's ``forward`` calls ``_recording()`` first (which also drops the previous
    batch's activations before this batch's are made) and, when it returned True,
    ``_keep(images, kept)`` with one ``(inputs, Z, H)`` per site, as ``site_activations``
    lays them out. It needs ``widths``, ``_images(X)`` and ``_site_triples(images,
    n_sites)`` (those triples in the module's current mode).
    """

    #: Keep the current training mini-batch's activations (``recorded_site_activations``).
    record_activations = False
    _recorded = None
    #: The recorded batch measured anew with the current weights (eval mode), once a site
    #: grew: one ``(inputs, Z, H)`` per site, kept up to date through ``recorded_site_grew``.
    _measured = None

    def _recording(self):
        on = self.record_activations and self.training and torch.is_grad_enabled()
        if on:
            self._recorded = None
            self._measured = None
        return on

    def _keep(self, images, kept):
        self._recorded = (images.detach(), [tuple(t.detach() for t in k) for k in kept])

    def recorded_site_activations(self, n_sites=None):
        """``SiteActivations`` of the last training mini-batch (``record_activations``),
        as its forward pass computed them (train mode, the weights before that step's
        update); ``None`` if none was recorded. After a site grew they are measured anew
        on the same images with the current weights (``_measure``), once per step (see
        ``recorded_site_grew``)."""
        if self._recorded is None:
            return None
        images, kept = self._recorded
        widths = list(self.widths)
        if [Z.shape[1] for _, Z, _ in kept] == widths:
            return [activations_of(*k) for k in kept]
        if self._measured is None or [Z.shape[1] for _, Z, _ in self._measured] != widths:
            self._measured = self._measure(images)
        return [activations_of(*k) for k in self._measured[:n_sites]]

    def site_activations(self, X, n_sites=None):
        """``SiteActivations`` of the first ``n_sites`` sites on ``X`` (all where
        ``None``), computed in eval mode (BatchNorm's running statistics are read, not
        updated); the network's ``_site_triples`` says what each holds."""
        return [activations_of(*k) for k in self._measure(self._images(X), n_sites)]

    def _measure(self, images, n_sites=None):
        """``(inputs, Z, H)`` of the first ``n_sites`` sites on ``images``, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._site_triples(images, n_sites)
        finally:
            self.train(was_training)

    def recorded_site_grew(self, index, new):
        """Bring the measured batch up to date after ``new`` (``NewNeurons``) were added to
        site ``index``: with zero fan-out, only that site's columns and its readers' inputs
        change, by the new neurons' own activations (``_extend_measured``), so one
        measurement per step serves every site that grows after the first. Otherwise (a
        fan-out that changes the function, or a network without ``_extend_measured``)
        the batch is measured anew when next read."""
        measured, self._measured = self._measured, None
        if measured is None or not _function_preserving(new):
            return
        widths = [Z.shape[1] for _, Z, _ in measured]
        widths[index] += new.k
        if widths == list(self.widths):
            self._measured = self._extend_measured(measured, index, new)

    def _extend_measured(self, measured, index, new):
        """``measured`` with site ``index``'s new neurons; ``None``: measure anew."""
        return None

    def __getstate__(self):
        # A training batch's activations are never pickled nor deep-copied.
        return {**super().__getstate__(), "_recorded": None, "_measured": None}


def _function_preserving(new):
    if new.norm_sources is not None:
        return False
    return new.fan_out is None or all(not torch.any(block) for block in new.fan_out)
