"""The skorch callback that runs the paper's Algorithm 1.

After every optimizer step (every ``trigger_interval`` steps), for each growth site: ask the
trigger how many neurons to add, cap that at the site's remaining room, let the initializer
build them, add them (optimizer state included) and record the event.
"""

import copy
import time

import numpy as np
import torch
from skorch.callbacks import Callback

from .context import GrowthContext, SampleBuffer
from .sites import add_neurons

#: Columns of the growth history, one row per growth event, and their dtypes.
EVENT_DTYPES = {
    "step": "int64",
    "epoch": "int64",
    "layer": "int64",
    "n_added": "int64",
    "width": "int64",
    "metric": "float64",
    "threshold": "float64",
}
EVENT_COLUMNS = tuple(EVENT_DTYPES)


class GrowthCallback(Callback):
    """Grow the network of a skorch net during training.

    The module must provide ``growth_sites()`` (a list of ``GrowthSite``) and
    ``site_activations(X)`` (a list of ``SiteActivations``).

    Parameters
    ----------
    trigger : Trigger
        Copied at ``initialize``; the copy (``trigger_``) holds the baselines.
    initializer : Initializer or None
        ``None`` only with a trigger that never grows.
    trigger_interval : int, default=1
        Evaluate the triggers every this many optimizer steps (1 = the paper).
    buffer_size : int or None, default=None
        Samples kept for the activation statistics; ``None``: twice the largest maximum
        width (needs ``n > M``). Ignored by triggers and initializers that do not use them.
    second_moment : {"mean", "zero"}, default="mean"
        How new entries of Adam-like second-moment state are filled (see ``optim``).
    random_state : int or None
        Seed of the generator used for the samples of the first buffer and for candidates.

    Attributes
    ----------
    events_ : list of dict
        One dict per growth event with the keys ``EVENT_COLUMNS``.
    step_ : int
        Optimizer steps seen.
    timings_ : dict
        Seconds spent in ``"trigger"`` and ``"initializer"`` (including the statistics
        each gathered and the tensor surgery).
    """

    def __init__(
        self,
        trigger,
        initializer=None,
        trigger_interval=1,
        buffer_size=None,
        second_moment="mean",
        random_state=None,
    ):
        self.trigger = trigger
        self.initializer = initializer
        self.trigger_interval = trigger_interval
        self.buffer_size = buffer_size
        self.second_moment = second_moment
        self.random_state = random_state

    # -- skorch hooks -------------------------------------------------------------------

    def initialize(self):
        self.trigger_ = copy.deepcopy(self.trigger).reset()
        self.initializer_ = copy.deepcopy(self.initializer)
        if self.trigger_.can_grow and self.initializer_ is None:
            raise ValueError("A trigger that can grow needs an initializer.")
        self.events_ = []
        self.step_ = 0
        self.buffer_ = None
        self.timings_ = {"trigger": 0.0, "initializer": 0.0}
        self._generator = torch.Generator().manual_seed(_seed(self.random_state))
        self._started = False
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if self._started or not self.trigger_.can_grow:
            return
        module = net.module_
        sites = module.growth_sites()
        if self._uses_samples():
            self.buffer_ = self._first_buffer(X, sites, net.device)
        context = self._context(module)
        # Baselines on the untrained network and the first buffer (phi(f_0, l)).
        self.trigger_.initialize(sites, context)
        self._started = True

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training or not self.trigger_.can_grow:
            return
        self.step_ += 1
        if self.buffer_ is not None:
            self.buffer_.extend(_as_tensor(batch[0], net.device))
        if self.step_ % self.trigger_interval == 0:
            self.grow(net)

    def on_epoch_end(self, net, **kwargs):
        widths = tuple(site.width for site in net.module_.growth_sites())
        net.history.record("widths", "-".join(map(str, widths)))

    # -- Algorithm 1 --------------------------------------------------------------------

    def grow(self, net):
        """Evaluate every site's trigger once and grow where it fires."""
        module = net.module_
        context = self._context(module)
        for index, site in enumerate(module.growth_sites()):
            if site.room == 0:
                continue  # nothing it could say would change the network
            tic = time.perf_counter()
            decision = self.trigger_(index, site, context)
            k = int(min(decision.n_neurons, site.room))
            self.timings_["trigger"] += time.perf_counter() - tic
            if k <= 0:
                continue
            tic = time.perf_counter()
            new = self.initializer_(index, site, k, context, self._generator)
            add_neurons(site, new, optimizer=net.optimizer_, second_moment=self.second_moment)
            context.invalidate()
            self.timings_["initializer"] += time.perf_counter() - tic
            self.events_.append(
                {
                    "step": self.step_,
                    "epoch": len(net.history),
                    "layer": index,
                    "n_added": k,
                    "width": site.width,
                    "metric": float(decision.metric),
                    "threshold": float(decision.threshold),
                }
            )

    # -- helpers ------------------------------------------------------------------------

    def _uses_samples(self):
        return self.trigger_.needs_activations or getattr(
            self.initializer_, "needs_activations", False
        )

    def _first_buffer(self, X, sites, device):
        if self.buffer_size is not None:
            capacity = self.buffer_size
        else:
            capacity = 2 * max(s.max_width if s.max_width else s.width for s in sites)
        buffer = SampleBuffer(capacity)
        n = min(capacity, len(X))
        rows = torch.randperm(len(X), generator=self._generator)[:n]
        # Index before converting: X may be the whole training set.
        rows = rows.to(X.device) if torch.is_tensor(X) else rows.numpy()
        buffer.extend(_as_tensor(X[rows], device))
        return buffer

    def _context(self, module):
        samples = self.buffer_.samples() if self.buffer_ is not None else None
        epsilon = getattr(self.trigger_, "epsilon", 0.01)
        return GrowthContext(module, samples, epsilon=epsilon)

    def __getstate__(self):
        state = self.__dict__.copy()
        if "_generator" in state:
            state["_generator"] = state["_generator"].get_state()
        return state

    def __setstate__(self, state):
        generator = state.get("_generator")
        if generator is not None:
            state["_generator"] = torch.Generator()
            state["_generator"].set_state(generator)
        self.__dict__.update(state)


def _seed(random_state):
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(random_state)


def _as_tensor(X, device):
    if not torch.is_tensor(X):
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    return X.to(device=device, dtype=torch.float32)
