"""``MLPClassifier``'s stopping rule, for a network that grows.

Training stops once more than ``n_iter_no_change`` consecutive epochs failed to improve
the training loss (or, under early stopping, the validation accuracy) by ``tol``. Under
early stopping the network of the best epoch is kept and put back at the end: since the
network may have grown after that epoch, the copy is the whole network (its widths, its
weights), its optimizer's state and the growth callback's state, not only the weights.
"""

import copy
import math
from collections import OrderedDict

from skorch.callbacks import Callback

# torch.nn.Module's hook registries: a copy of the network must not take the training
# run's hooks (the growth callback's recorders) with it.
_HOOK_REGISTRIES = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


class ConvergenceStop(Callback):
    """Stop training as ``MLPClassifier`` does, and keep the best network under early
    stopping.

    Parameters
    ----------
    tol : float
    n_iter_no_change : int or None
        ``None``: never stop.
    early_stopping : bool
        Judge the epochs by ``valid_acc`` (higher is better) instead of ``train_loss``,
        and put the best epoch's network back at the end of training (``restore_best``).
    growth : str
        Name of the growth callback in the net, copied with the network.

    Attributes
    ----------
    best_loss_ : float
        Lowest training loss so far (``inf`` before the first epoch).
    validation_scores_ : list of float
        ``valid_acc`` of every epoch trained under early stopping.
    best_validation_score_ : float
        Highest of them (``-inf`` before the first).
    """

    def __init__(self, tol=1e-4, n_iter_no_change=10, early_stopping=False, growth="growth"):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.growth = growth
        self.best_loss_ = math.inf
        self.validation_scores_ = []
        self.best_validation_score_ = -math.inf
        self.active = True
        self._misses = 0
        self._best = None

    def start(self, active, tol, n_iter_no_change, early_stopping):
        """Begin a fit (``active``) or a ``partial_fit`` (inactive: never stops), with
        the estimator's current parameters. The count of epochs without improvement and
        the best network start over; the best values so far are kept."""
        self.active = active
        self.tol, self.n_iter_no_change = tol, n_iter_no_change
        self.early_stopping = early_stopping and active
        self._misses = 0
        self._best = None
        self._best_score = -math.inf

    def on_epoch_end(self, net, **kwargs):
        loss = net.history[-1, "train_loss"]
        improved = loss <= self.best_loss_ - self.tol
        self.best_loss_ = min(self.best_loss_, loss)
        if self.early_stopping:
            score = net.history[-1, "valid_acc"]
            self.validation_scores_.append(score)
            improved = score >= self._best_score + self.tol
            if score > self._best_score:
                self._best_score = score
                self._best = copy_network(net, self.growth)
            self.best_validation_score_ = max(self.best_validation_score_, score)
        self._misses = 0 if improved else self._misses + 1
        if self.active and self.n_iter_no_change is not None:
            if self._misses > self.n_iter_no_change:
                net.stop_request_ = "converged"

    def restore_best(self, net):
        """Put the best epoch's network (widths, weights, optimizer and growth state)
        back into ``net``; nothing without early stopping. Call after training."""
        if self._best is None:
            return
        module, optimizer, growth = self._best
        self._best = None
        net.module_ = module
        net.optimizer_ = optimizer
        net.callbacks_ = [
            (name, growth if name == self.growth else cb) for name, cb in net.callbacks_
        ]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_best"] = None  # a training run's copy, not part of the fitted model
        return state


def copy_network(net, growth="growth"):
    """Copies of ``net``'s module, optimizer (its state referring to the copied
    parameters) and growth callback, without the hooks of the training run."""
    module = net.module_
    stripped = []
    for m in module.modules():
        for registry in _HOOK_REGISTRIES:
            hooks = getattr(m, registry, None)
            if hooks:
                stripped.append((m, registry, hooks))
                setattr(m, registry, OrderedDict())
    try:
        # One memo: the optimizer's parameters are the copied module's.
        module, optimizer = copy.deepcopy((module, net.optimizer_))
    finally:
        for m, registry, hooks in stripped:
            setattr(m, registry, hooks)
    callback = copy.deepcopy(dict(net.callbacks_)[growth])
    return module, optimizer, callback
