"""The skorch callback that runs the paper's Algorithm 1.

After every optimizer step (every ``trigger_interval`` steps, or on the adaptive schedule of
``trigger_interval="auto"``), for each growth site: ask the trigger how many neurons to add,
cap that at the site's remaining room, let the initializer build them, add them (optimizer
state included) and record the event.
"""

import copy
import math
import numbers
import time
from functools import partial

import numpy as np
import torch
from scipy import sparse
from skorch.callbacks import Callback
from skorch.dataset import get_len
from torch import nn

from .activations import ActivationRecorder, ForwardRecorder
from .context import GrowthContext, SampleBuffer
from .gate import held_out_loss
from .gradients import GradientRecorder
from .initializers import tied_fan_in
from .optim import SECOND_MOMENT_MODES, seed_pending_moments
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

#: Where activation statistics come from (``activation_source``).
ACTIVATION_SOURCES = ("buffer", "training")
#: The adaptive evaluation schedule (``trigger_interval``).
AUTO_INTERVAL = "auto"


class GrowthCallback(Callback):
    """Grow the network of a skorch net during training.

    The module must provide ``growth_sites()`` (a list of ``GrowthSite``) and
    ``site_activations(X)`` (a list of ``SiteActivations``).

    Parameters
    ----------
    trigger : Trigger
        Copied at ``initialize``; the copy (``trigger_``) holds the baselines. Any object
        with the trigger protocol (see ``triggers``) works.
    initializer : Initializer or None
        ``None`` only with a trigger that never grows. Copied at ``initialize``.
    trigger_interval : int or "auto", default=1
        Evaluate the triggers every this many optimizer steps (1 = the paper). ``"auto"``:
        after every step while the network grows; after an evaluation at which nothing
        grew, the wait before the next one doubles, up to the steps the sample buffer
        takes to renew itself (``interval_cap_``: its capacity, or twice the largest
        maximum width, over the batch size); the first growth resets it to 1. A layer
        that grows is then watched as closely as by the paper's protocol, and a quiet
        network costs one evaluation per buffer renewal instead of one per step. Only
        triggers that measure activations on the buffer back off: preset schedules
        follow a plan, and gradient triggers judge each mini-batch anew, so they are
        evaluated after every step.
    buffer_size : int or None, default=None
        Samples kept for the activation statistics; ``None``: twice the largest maximum
        width. Must exceed every dense site's maximum width (the metric needs ``n > M``;
        ``ValueError`` otherwise). Ignored by triggers and initializers that do not use
        them.
    second_moment : {"gradient", "mean", "zero"}, default="gradient"
        How the optimizer state of new entries is filled (see ``optim``): ``"gradient"``
        starts Adam's moments from each entry's first non-zero gradient (its first update
        is ``lr * sign(g)``, as with a fresh Adam); ``"mean"`` seeds the second moment with
        the existing entries' mean; ``"zero"`` pads with zeros.
    random_state : int or None
        Seed of the generator used for the samples of the first buffer and for candidates.
    planned_epochs : int or None, default=None
        Epochs the training is planned for, which sets ``total_steps_``. ``None``: the
        net's ``max_epochs`` when training starts.
    activation_source : {"buffer", "training"}, default="buffer"
        Where activation statistics come from. ``"buffer"`` (the paper): a forward pass of
        the sample buffer with the current weights at every evaluation. ``"training"``
        (fast mode, an approximation): the inputs and pre-activations that the training
        forward passes computed for the last ``buffer_size`` training samples, kept by
        hooks (see ``activations.ActivationRecorder``); no extra forward pass. Rows are
        stale by up to ``buffer_size / batch_size`` steps; the first ones come from the
        untrained network on the first buffer.
    gate : HeldOutGate or None, default=None
        A task-aware gate (``gate.HeldOutGate``): every ``gate.check_interval`` steps the
        loss on ``gate_data`` is measured, and a site whose growth has not helped it is
        closed for growth. Copied at ``initialize`` (``gate_``). ``None``: no gate (the
        paper).
    gate_data : (X, y) or None, default=None
        The held-out samples (inputs, encoded labels) the gate judges growth on; kept out
        of training by whoever builds the net. Required with ``gate``.
    strict_buffer : bool, default=True
        ``False`` accepts a ``buffer_size`` no larger than a dense site's maximum width:
        the paper's CNN protocol measures the current mini-batch, which caps the rank of
        its dense layers' activations at the batch size (the paper's behaviour).
    training_set_size : int or None, default=None
        The number of training samples, where every training call sees the same ones
        (``fit``). When the buffer's capacity is at least that, the buffer holds the
        training set itself, each sample once, and is not extended: the last
        ``buffer_size`` samples would be the same samples repeated, which add nothing to
        the metric (a set repeated ``r`` times has the same normalised spectrum) and
        multiply the cost of every evaluation by ``r``. The auto interval still waits up
        to ``buffer_size / batch_size`` steps. ``None`` (``partial_fit``, whose later
        calls may bring new samples): the buffer rolls at its capacity.

    Attributes
    ----------
    events_ : list of dict
        One dict per growth event with the keys ``EVENT_COLUMNS``.
    step_ : int
        Optimizer steps seen (``context.step``).
    total_steps_ : int or None
        Optimizer steps the training is planned for (``context.total_steps``), set once,
        when training first starts: ``planned_steps(net, X, planned_epochs)``. Preset
        schedules measure the fraction of training against it.
    timings_ : dict
        Seconds spent in ``"trigger"`` and ``"initializer"`` (including the statistics
        each gathered and the tensor surgery).
    evaluations_ : int
        Growth evaluations run (each asks every site's trigger once).
    interval_cap_ : int
        With ``trigger_interval="auto"``, the longest wait between evaluations.
    """

    def __init__(
        self,
        trigger,
        initializer=None,
        trigger_interval=1,
        buffer_size=None,
        second_moment="gradient",
        random_state=None,
        planned_epochs=None,
        activation_source="buffer",
        gate=None,
        gate_data=None,
        strict_buffer=True,
        training_set_size=None,
    ):
        self.trigger = trigger
        self.initializer = initializer
        self.trigger_interval = trigger_interval
        self.buffer_size = buffer_size
        self.second_moment = second_moment
        self.random_state = random_state
        self.planned_epochs = planned_epochs
        self.activation_source = activation_source
        self.gate = gate
        self.gate_data = gate_data
        self.strict_buffer = strict_buffer
        self.training_set_size = training_set_size

    # -- skorch hooks -------------------------------------------------------------------

    def initialize(self):
        if self.activation_source not in ACTIVATION_SOURCES:
            raise ValueError(
                f"activation_source must be one of {ACTIVATION_SOURCES}, got "
                f"{self.activation_source!r}."
            )
        interval = self.trigger_interval
        if interval != AUTO_INTERVAL and not (
            isinstance(interval, numbers.Integral)
            and not isinstance(interval, bool)
            and interval >= 1
        ):
            raise ValueError(
                f"trigger_interval must be a positive int or {AUTO_INTERVAL!r}, got {interval!r}."
            )
        if self.second_moment not in SECOND_MOMENT_MODES:
            raise ValueError(
                f"second_moment must be one of {SECOND_MOMENT_MODES}, got {self.second_moment!r}."
            )
        # Copies: fit must not modify the objects it was given.
        self.trigger_ = copy.deepcopy(self.trigger)
        if hasattr(self.trigger_, "reset"):
            self.trigger_.reset()
        self.initializer_ = copy.deepcopy(self.initializer)
        if self._can_grow() and self.initializer_ is None:
            raise ValueError("A trigger that can grow needs an initializer.")
        self.gate_ = copy.deepcopy(self.gate)
        if self.gate_ is not None:
            if self.gate_data is None:
                raise ValueError("A gate needs gate_data, the held-out (X, y) it judges on.")
            self.gate_.reset()
        # Invalid options fail here, not at the first growth event epochs later.
        for part in (self.trigger_, self.initializer_, self.gate_):
            if hasattr(part, "check_params"):
                part.check_params()
        self.events_ = []
        self.step_ = 0
        self.total_steps_ = None
        self.buffer_ = None
        self._buffer_is_training_set = False  # set with the first buffer
        self.timings_ = {"trigger": 0.0, "initializer": 0.0}
        self.evaluations_ = 0
        self.interval_cap_ = 1
        self._renewal = 1  # steps in which the sample buffer is renewed
        self._wait = 1  # steps from one evaluation to the next
        self._next_evaluation = 1
        self._generator = torch.Generator().manual_seed(_seed(self.random_state))
        self._started = False
        self._detach_recorder()
        self._detach_activation_recorder()
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if not self._can_grow():
            return
        module = net.module_
        if not (hasattr(module, "growth_sites") and hasattr(module, "site_activations")):
            raise TypeError(
                "GrowthCallback needs a growable module, with growth_sites() and "
                "site_activations(X) (e.g. sklearn_north.nn.GrowableMLP); got "
                f"{type(module).__name__}."
            )
        sites = module.growth_sites()
        if self._uses_gradients():
            # Hooks keep the step's inputs and output gradients; removed at train end.
            self._detach_recorder()
            keep_updates = getattr(self.trigger_, "needs_updates", False)
            self._recorder = GradientRecorder(keep_updates).attach(sites)
        if self.buffer_ is not None:
            self.buffer_.to(net.device)  # (an unpickled model's buffer is on the CPU)
        if not self._started:
            if self._uses_samples():
                self._check_buffer_size(sites)
                self.buffer_ = self._first_buffer(X, sites, net.device)
            self.total_steps_ = planned_steps(net, X, self.planned_epochs)
            # The longest wait of trigger_interval="auto": the buffer's renewal, for
            # triggers that measure activations on it; every step for the others (a
            # schedule follows its plan; a gradient trigger judges each mini-batch anew,
            # so fewer evaluations would be fewer chances to fire, not a cheaper view).
            self._renewal = self._renewal_steps(net, sites)
            reads_buffer = getattr(self.trigger_, "needs_activations", False)
            self.interval_cap_ = self._renewal if reads_buffer else 1
            context = self._context(module)
            # Baselines on the untrained network and the first buffer (phi(f_0, l)).
            if hasattr(self.trigger_, "initialize"):
                self.trigger_.initialize(sites, context)
            self._started = True
        else:
            # A continuation may train on other samples: from now on the buffer rolls
            # (at the capacity it has) as for partial_fit.
            self._buffer_is_training_set = False
        if self._records_activations():
            # Seeded with the buffer's activations so that n > M from the first step.
            self._detach_activation_recorder()
            if hasattr(module, "recorded_site_activations"):
                recorder = ForwardRecorder(module).attach(sites)
            else:
                recorder = ActivationRecorder(self.buffer_.capacity).attach(sites)
                recorder.fill(self._context(module).activations_all())
            self._activation_recorder = recorder

    def on_grad_computed(self, net, named_parameters=None, training=False, **kwargs):
        # Between backward and the optimizer's update: new entries' Adam moments start
        # from their first non-zero gradient (second_moment="gradient", see optim).
        if training and self.second_moment == "gradient" and self.events_:
            seed_pending_moments(net.optimizer_)

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training or not self._can_grow():
            return
        self.step_ += 1
        if (
            self.buffer_ is not None
            and not self._records_activations()
            and not self._buffer_is_training_set
        ):
            self.buffer_.extend(_as_tensor(batch[0], net.device))
        if self.trigger_interval == AUTO_INTERVAL:
            if self.step_ >= self._next_evaluation:
                grew = self.grow(net)
                self._wait = 1 if grew else min(2 * self._wait, self.interval_cap_)
                self._next_evaluation = self.step_ + self._wait
        elif self.step_ % self.trigger_interval == 0:
            self.grow(net)
        gate = getattr(self, "gate_", None)
        if gate is not None and self.step_ % (gate.check_interval or self._renewal) == 0:
            gate.update(held_out_loss(net, *self.gate_data), self.step_)

    def on_epoch_end(self, net, **kwargs):
        widths = tuple(site.width for site in net.module_.growth_sites())
        net.history.record("widths", "-".join(map(str, widths)))
        # Neurons added in this epoch (its events carry the epoch's history row number).
        epoch = len(net.history)
        added = sum(e["n_added"] for e in getattr(self, "events_", []) if e["epoch"] == epoch)
        net.history.record("added", added)
        gate = getattr(self, "gate_", None)
        if gate is not None and gate.losses_:
            net.history.record("held_out_loss", gate.losses_[-1])

    def on_train_end(self, net, **kwargs):
        self._detach_recorder()
        self._detach_activation_recorder()

    # -- Algorithm 1 --------------------------------------------------------------------

    def grow(self, net):
        """Evaluate every site's trigger once and grow where it fires; return the number
        of neurons added."""
        self.evaluations_ += 1
        added = 0
        gate = getattr(self, "gate_", None)
        module = net.module_
        # Sites refer to modules, not parameters: they stay valid while the sites grow.
        sites = module.growth_sites()
        recorder = getattr(self, "_recorder", None)
        gradients = recorder.snapshot(sites) if recorder is not None else None
        # Sites at their cap (nothing a trigger says could change them) or closed by the
        # gate are not evaluated: the forward pass of the sample buffer stops after the
        # last site that is.
        watched = [
            i for i, s in enumerate(sites) if s.room > 0 and (gate is None or gate.is_open(i))
        ]
        if not watched:
            return 0
        context = self._context(module, gradients, n_sites=watched[-1] + 1)
        for index in watched:
            site = sites[index]
            if gradients is not None and gradients.is_stale(index):
                # A site that reads a conv site grown in this pass: its statistics are
                # not brought up to date; it is judged again after the next step.
                continue
            tic = time.perf_counter()
            decision = self.trigger_(index, site, context)
            k = int(min(decision.n_neurons, site.room))
            self.timings_["trigger"] += time.perf_counter() - tic
            if k <= 0:
                continue
            tic = time.perf_counter()
            new = self.initializer_(index, site, k, context, self._generator)
            add_neurons(
                site,
                new,
                optimizer=net.optimizer_,
                second_moment=self.second_moment,
                tied_fan_in=partial(tied_fan_in, generator=self._generator),
            )
            context.site_grew(index, new)
            if gate is not None:
                gate.site_grew(index)
            added += k
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
        return added

    # -- helpers ------------------------------------------------------------------------

    def _can_grow(self):
        return getattr(self.trigger_, "can_grow", True)

    def _uses_samples(self):
        return getattr(self.trigger_, "needs_activations", False) or getattr(
            self.initializer_, "needs_activations", False
        )

    def _uses_gradients(self):
        return getattr(self.trigger_, "needs_gradients", False) or getattr(
            self.initializer_, "needs_gradients", False
        )

    def _records_activations(self):
        return self.activation_source == "training" and self.buffer_ is not None

    def _detach_activation_recorder(self):
        recorder = self.__dict__.pop("_activation_recorder", None)
        if recorder is not None:
            recorder.detach()

    def _detach_recorder(self):
        recorder = self.__dict__.pop("_recorder", None)
        if recorder is not None:
            recorder.detach()

    def _buffer_capacity(self, sites):
        """Samples the buffer keeps: ``buffer_size``, or twice the largest maximum width."""
        if self.buffer_size is not None:
            return self.buffer_size
        return 2 * max(s.max_width if s.max_width else s.width for s in sites)

    def _renewal_steps(self, net, sites):
        """Optimizer steps in which the sample buffer is renewed (at least 1)."""
        batch_size = _train_batch_size(net)
        if batch_size is None:
            return 1
        return max(1, self._buffer_capacity(sites) // batch_size)

    def _check_buffer_size(self, sites):
        # The activations of M dense neurons on n samples have rank <= n: with n <= M the
        # metric is capped at n / M and the layer silently stops growing near n neurons.
        if self.buffer_size is None or not self.strict_buffer:
            return
        dense = [s.max_width or s.width for s in sites if isinstance(s.producer, nn.Linear)]
        if dense and self.buffer_size <= max(dense):
            raise ValueError(
                f"buffer_size={self.buffer_size} must be larger than the widest layer the "
                f"activation statistics are measured on ({max(dense)} neurons at its "
                f"maximum): on n samples a layer's activations have rank <= n, so it could "
                f"not grow much past {self.buffer_size} neurons. Use buffer_size > "
                f"{max(dense)}, or None for twice the largest maximum width."
            )

    def _first_buffer(self, X, sites, device):
        capacity = self._buffer_capacity(sites)
        size = self.training_set_size
        self._buffer_is_training_set = size is not None and capacity >= size
        if self._buffer_is_training_set:
            capacity = size
        buffer = SampleBuffer(capacity)
        n_samples = X.shape[0] if sparse.issparse(X) else len(X)  # sparse has no len
        rows = torch.randperm(n_samples, generator=self._generator)[: min(capacity, n_samples)]
        # Index before converting (or densifying): X may be the whole training set.
        rows = rows.to(X.device) if torch.is_tensor(X) else rows.numpy()
        buffer.extend(_as_tensor(X[rows], device))
        return buffer

    def _context(self, module, gradients=None, n_sites=None):
        samples = self.buffer_.samples() if self.buffer_ is not None else None
        epsilon = getattr(self.trigger_, "epsilon", 0.01)
        return GrowthContext(
            module,
            samples,
            epsilon=epsilon,
            step=self.step_,
            total_steps=self.total_steps_,
            gradients=gradients,
            recorder=getattr(self, "_activation_recorder", None),
            n_sites=n_sites,
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        # Hooks and tensors of a training run: never pickled.
        state.pop("_recorder", None)
        state.pop("_activation_recorder", None)
        buffer = state.get("buffer_")
        if buffer is not None and buffer.data is not None and buffer.data.device.type != "cpu":
            # A model trained on a GPU loads where there is none (skorch maps the module
            # and optimizer, not callbacks); on_train_begin moves it to the net's device.
            state["buffer_"] = copy.copy(buffer).to("cpu")
        if "_generator" in state:
            state["_generator"] = state["_generator"].get_state()
        return state

    def __setstate__(self, state):
        generator = state.get("_generator")
        if generator is not None:
            state["_generator"] = torch.Generator()
            state["_generator"].set_state(generator)
        self.__dict__.update(state)


def planned_steps(net, X, epochs=None):
    """Optimizer steps that training ``net`` on ``X`` for ``epochs`` epochs takes.

    ``epochs * steps_per_epoch`` with ``epochs=None`` meaning ``net.max_epochs``, and
    ``steps_per_epoch = ceil(n / batch_size)`` (the last, smaller batch is a step), or
    ``floor`` where the training iterator has ``drop_last=True``. ``batch_size`` is
    ``iterator_train__batch_size`` if set, else ``net.batch_size`` (``-1``: all samples).
    ``n = len(X)``: every sample is trained on, as in the estimators (``train_split=None``;
    with a validation split the plan overestimates). ``None`` when ``len(X)`` is unknown.
    """
    try:
        n = int(get_len(X))
    except (TypeError, ValueError):
        return None
    epochs = net.max_epochs if epochs is None else epochs
    batch_size = _train_batch_size(net)
    batch_size = n if batch_size is None else batch_size
    if n == 0 or batch_size < 1:
        return 0
    drop_last = net.get_params_for("iterator_train").get("drop_last", False)
    per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    return int(epochs) * per_epoch


def _train_batch_size(net):
    """The training iterator's batch size (``iterator_train__batch_size``, else
    ``net.batch_size``); ``None`` for ``-1``/``None`` (all samples in one batch)."""
    batch_size = net.get_params_for("iterator_train").get("batch_size", net.batch_size)
    return None if batch_size in (-1, None) else int(batch_size)


def _seed(random_state):
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return int(random_state)


def _as_tensor(X, device):
    """``X`` as a float32 tensor on ``device``; a SciPy sparse ``X`` is densified, so pass
    only the rows needed."""
    if sparse.issparse(X):
        X = X.toarray()
    if not torch.is_tensor(X):
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    return X.to(device=device, dtype=torch.float32)
