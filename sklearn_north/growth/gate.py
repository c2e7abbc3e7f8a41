"""A task-aware gate on growth (beyond the paper, off by default).

The orthogonality metric does not look at the labels: on pure-noise labels a layer grows
as far as on clean ones, until the samples or the cap stop it. ``HeldOutGate`` closes a
layer for growth once its recent growth has not helped: the loss on a held-out slice of
the training data (kept out of training by the estimator) has not improved for
``patience`` consecutive checks while the layer grew. A layer that did not grow since the
last improvement is not blamed. The gate only ever closes layers; a closed layer keeps
training at its width.
"""

import math
import numbers

import torch
from scipy import sparse

from ._params import ParamsMixin


class HeldOutGate(ParamsMixin):
    """Stop growing a layer when the held-out loss stops improving while it grows.

    The held-out loss is measured every ``check_interval`` optimizer steps. An
    improvement is a loss below ``(1 - tol)`` times the best so far; at every check
    without one, each open layer that grew since the best loss counts one strike, and a
    layer with ``patience`` strikes is closed for good.

    Parameters
    ----------
    validation_fraction : float in (0, 1), default=0.1
        Share of the training data held out (stratified) to judge growth; the network is
        not trained on it. Used by the estimators (``growth_gate``), which do the split.
    patience : int, default=2
        Checks without improvement, while a layer grew, that close it.
    check_interval : int or None, default=None
        Optimizer steps between checks. ``None``: the steps in which the sample buffer is
        renewed (``buffer_size / batch_size``, the buffer's default size if the strategy
        keeps none), so that a layer that grows at every step is judged within a few
        buffers.
    tol : float, default=0.01
        Relative improvement of the held-out loss that counts.

    Notes
    -----
    A relative improvement per check is a blunt test: a network that learns slowly (a
    narrow one, or a small learning rate) may improve by less than ``tol`` per check while
    its growth does help, and be closed early. Digits, 40 epochs, lr 3e-4: from 64-64 the
    gate changes nothing (640-640, test accuracy 0.978 either way); from 16-16 it closes
    both layers near 24 neurons (0.818) where ``tol=0.005, patience=3`` lets them grow to
    the cap (0.960); pure-noise labels (1797 x 64 Gaussian inputs) stop near 180 neurons
    with the defaults but grow to the 640 cap with ``tol=0.005``.

    Attributes
    ----------
    best_ : float
        The best held-out loss so far.
    losses_ : list of float
        The held-out loss at each check.
    strikes_ : dict
        Site index -> checks without improvement while it grew.
    closed_ : dict
        Site index -> the optimizer step at which it was closed.
    """

    def __init__(self, validation_fraction=0.1, patience=2, check_interval=None, tol=0.01):
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.check_interval = check_interval
        self.tol = tol

    def check_params(self):
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}."
            )
        if not (isinstance(self.patience, numbers.Integral) and self.patience >= 1):
            raise ValueError(f"patience must be a positive int, got {self.patience!r}.")
        interval = self.check_interval
        if interval is not None and not (isinstance(interval, numbers.Integral) and interval >= 1):
            raise ValueError(f"check_interval must be a positive int or None, got {interval!r}.")
        if not (isinstance(self.tol, numbers.Real) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {self.tol!r}.")

    def reset(self):
        self.best_ = math.inf
        self.losses_ = []
        self.strikes_ = {}
        self.closed_ = {}
        self._grew = set()
        return self

    def is_open(self, index):
        """Whether site ``index`` may still grow."""
        return index not in self.__dict__.get("closed_", {})

    def site_grew(self, index):
        """Record that site ``index`` grew (since the last improvement)."""
        self.__dict__.setdefault("_grew", set()).add(index)

    def update(self, loss, step):
        """Judge growth on the held-out ``loss`` measured after ``step`` optimizer steps;
        return the indices of the sites closed by this check."""
        self.losses_.append(float(loss))
        if loss < (1 - self.tol) * self.best_:
            self.best_ = float(loss)
            self.strikes_ = {}
            self._grew = set()
            return []
        closed = []
        for index in sorted(self._grew):
            if not self.is_open(index):
                continue
            self.strikes_[index] = self.strikes_.get(index, 0) + 1
            if self.strikes_[index] >= self.patience:
                self.closed_[index] = step
                closed.append(index)
        return closed


def held_out_loss(net, X, y):
    """Mean loss of ``net``'s module on ``(X, y)`` under its criterion, in eval mode.

    ``X``: an array, a tensor or a SciPy sparse matrix (densified 1024 rows at a time).
    """
    module = net.module_
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            total, n = 0.0, 0
            n_samples = X.shape[0] if sparse.issparse(X) else len(X)  # sparse has no len
            for start in range(0, n_samples, 1024):
                Xb = X[start : start + 1024]
                Xb = torch.as_tensor(Xb.toarray() if sparse.issparse(Xb) else Xb, device=net.device)
                yb = torch.as_tensor(y[start : start + 1024], device=net.device)
                logits = module(Xb)
                total += float(net.criterion_(logits, yb)) * len(Xb)
                n += len(Xb)
    finally:
        module.train(was_training)
    return total / max(n, 1)
