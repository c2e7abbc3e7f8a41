"""Growth's promises checked where the user meets them: during a real fit through
``GrowingMLPClassifier`` (SPEC sections 4-5), not at the helpers.

An initializer wrapped in ``Probe`` (a custom ``(trigger, initializer)`` strategy, the
trigger replaced by a preset schedule or kept) records the network's output on a fixed
batch before every growth event and what it returned; the skorch callback ``Watch`` sees
the network after each step's growth and follows every new weight until its first
update. After the fit:

- each growth event left the output on the batch unchanged (function preservation);
- the new neurons were added exactly as the initializer built them: zero fan-out and zero
  bias for NORTH-Random/Select/Weight (Pre-activation's bias is part of its solve),
  zero fan-in and bias for GradMax;
- a new weight's first Adam update (at its first non-zero gradient) is ``lr`` in size,
  ``lr * |g| / (|g| + eps)``, as with a fresh Adam, not Adam's late-training ~3 lr;
- no optimizer entry is left waiting for its seed (``optim.PENDING_KEY``) once growth
  stopped more than ``PENDING_STEPS`` steps before the end.
"""

import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from skorch.callbacks import Callback

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import (
    ActivationTrigger,
    GradMaxInit,
    GrowthCallback,
    Initializer,
    PreActivationInit,
    RandomInit,
    SelectInit,
    WeightInit,
)
from sklearn_north.growth.optim import PENDING_KEY, PENDING_STEPS

#: Not the default 0.01: the estimator's epsilon must reach the initializers.
EPSILON = 0.037
LR = 1e-2


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:240] / 16.0).astype(np.float32), y[:240]


class Probe(Initializer):
    """``inner`` with a record of every call: the output on ``probe_X`` just before it
    (so before the event's surgery) and the new neurons it returned."""

    def __init__(self, inner, probe_X):
        self.inner = inner
        self.probe_X = probe_X

    @property
    def needs_activations(self):
        return self.inner.needs_activations

    @property
    def needs_gradients(self):
        return self.inner.needs_gradients

    @property
    def function_preserving(self):
        return self.inner.function_preserving

    def __call__(self, index, site, k, context, generator):
        module = context.module
        with torch.no_grad():  # no_grad: the gradient recorder's hooks stay quiet
            output = module(torch.as_tensor(self.probe_X)).clone()
        new = self.inner(index, site, k, context, generator)
        self.__dict__.setdefault("calls_", []).append(
            {
                "step": context.step,
                "index": index,
                "k": k,
                "width": site.width,
                "consumer_rows": [c.module.weight.shape[0] for c in site.consumers],
                "epsilon": context.epsilon,
                "output_before": output,
                "fan_in": new.fan_in.detach().clone(),
                "bias": None if new.bias is None else new.bias.detach().clone(),
                "fan_out": None if new.fan_out is None else [b.clone() for b in new.fan_out],
            }
        )
        return new


class Watch(Callback):
    """After each step's growth: the output on the probe batch and the new weights; and
    each new weight's first update (the step of its first non-zero gradient)."""

    def initialize(self):
        self.outputs_after_ = {}  # step -> output once the step's growth is done
        self.surgery_ = []  # per event: (call, fan-in rows, bias, fan-out blocks)
        self.first_updates_ = []  # (|delta|, expected |delta|, steps waited) per entry
        self._shapes = {}  # parameter name -> shape at the end of the last step
        self._waiting = {}  # parameter name -> (mask of new entries, step each was added)
        self._in_flight = {}  # parameter name -> (mask, values before, grads, steps waited)
        return self

    @staticmethod
    def _growth(net):
        return next(cb for _, cb in net.callbacks_ if isinstance(cb, GrowthCallback))

    def on_grad_computed(self, net, named_parameters=None, training=False, **kwargs):
        if not training:
            return
        step = self._growth(net).step_ + 1  # the step being taken
        for name, param in net.module_.named_parameters():
            if name not in self._waiting or param.grad is None:
                continue
            mask, added = self._waiting[name]
            hit = mask & (param.grad != 0)
            if hit.any():
                before = param.detach()[hit].clone()
                self._in_flight[name] = (hit, before, param.grad[hit].clone(), step - added[hit])
                mask &= ~hit

    def on_batch_end(self, net, training=False, **kwargs):
        if not training:
            return
        growth = self._growth(net)
        module = net.module_
        params = dict(module.named_parameters())
        group = net.optimizer_.param_groups[0]
        for name, (hit, before, grad, waited) in self._in_flight.items():
            old = params[name].detach()[tuple(slice(0, n) for n in hit.shape)]
            expected = group["lr"] * grad.abs() / (grad.abs() + group["eps"])
            self.first_updates_.append(((old[hit] - before).abs(), expected, waited))
        self._in_flight = {}

        probe = growth.initializer_
        calls = [c for c in getattr(probe, "calls_", []) if c["step"] == growth.step_]
        if calls:
            with torch.no_grad():
                self.outputs_after_[growth.step_] = module(torch.as_tensor(probe.probe_X))
        for call in calls:
            producer = module.layers[call["index"]]
            rows = slice(call["width"], call["width"] + call["k"])
            consumer = module.layers[call["index"] + 1]
            # Copies: the optimizer updates the parameters in place.
            fan_in = producer.weight.detach()[rows].clone()
            bias = producer.bias.detach()[rows].clone()
            fan_out = consumer.weight.detach()[: call["consumer_rows"][0], rows].clone()
            self.surgery_.append((call, fan_in, bias, fan_out))

        for name, param in params.items():
            shape = self._shapes.get(name, param.shape)
            if shape != param.shape:  # grown at this step: its new entries wait
                old = tuple(slice(0, n) for n in shape)
                mask = torch.ones(param.shape, dtype=torch.bool)
                added = torch.full(param.shape, growth.step_)
                mask[old] = False
                if name in self._waiting:  # earlier entries keep waiting
                    mask[old], added[old] = self._waiting[name]
                self._waiting[name] = (mask, added)
            self._shapes[name] = param.shape


def fit_with_probe(digits, initializer, trigger=None, activation="relu", **params):
    """Fit a 4-4 network (cap 8-8) on 240 digits for 3 epochs of 8 steps with ``initializer``
    wrapped in ``Probe``; growth follows a linear schedule over the first 30 % of the
    training (steps 1-8), or ``trigger`` where given. Returns the fitted estimator, the
    growth callback (its ``initializer_.calls_``: the probe's record) and the ``Watch``."""
    X, y = digits
    probe = Probe(initializer, X[:50].copy())
    settings = dict(
        hidden_layer_sizes=(4, 4),
        max_hidden_layer_sizes=(8, 8),
        epsilon=EPSILON,
        activation=activation,
        lr=LR,
        batch_size=30,
        max_epochs=3,
        n_iter_no_change=None,
        callbacks=[Watch()],
        random_state=0,
    )
    if trigger is None:
        settings.update(schedule="linear", schedule_end=0.3)
    settings.update(params)
    clf = GrowingMLPClassifier(strategy=(trigger or ActivationTrigger(), probe), **settings)
    clf.fit(X, y)
    growth = next(cb for _, cb in clf.net_.callbacks_ if isinstance(cb, GrowthCallback))
    watch = next(cb for _, cb in clf.net_.callbacks_ if isinstance(cb, Watch))
    return clf, growth, watch


FUNCTION_PRESERVING = {
    "random": RandomInit,
    "select": lambda: SelectInit(n_candidates=60),
    "preactivation": lambda: PreActivationInit(n_candidates=60),
    "weight": WeightInit,
    "gradmax": GradMaxInit,
}


def events_by_step(calls):
    steps = {}
    for call in calls:
        steps.setdefault(call["step"], []).append(call)
    return steps


# (initializer, activation, trigger): a linear schedule (None) or NORTH's T_act, which
# grows 4-4 to the 8-8 cap in the first two steps.
CASES = [
    *((name, "relu", None) for name in FUNCTION_PRESERVING),
    ("gradmax", "logistic", None),  # act(0) = 0.5: the consumers' biases compensate
    ("select", "relu", "activation"),
]


@pytest.mark.parametrize(("name", "activation", "trigger"), CASES)
def test_growth_events_preserve_the_function_and_add_what_the_initializer_built(
    digits, name, activation, trigger
):
    trigger = ActivationTrigger(epsilon=EPSILON) if trigger else None
    clf, growth, watch = fit_with_probe(
        digits, FUNCTION_PRESERVING[name](), trigger=trigger, activation=activation
    )
    calls = growth.initializer_.calls_
    assert clf.hidden_layer_sizes_ == (8, 8)
    assert {call["index"] for call in calls} == {0, 1}
    # The estimator's (or the custom trigger's) epsilon reaches the initializer.
    assert all(call["epsilon"] == EPSILON for call in calls)
    # Each event, and the step's growth as a whole, left the output on the batch as it was.
    for step, step_calls in events_by_step(calls).items():
        outputs = [call["output_before"] for call in step_calls] + [watch.outputs_after_[step]]
        for before, after in itertools.pairwise(outputs):
            torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)

    assert len(watch.surgery_) == len(calls)
    for call, fan_in, bias, fan_out in watch.surgery_:
        # The network holds exactly what the initializer returned (None: zeros) ...
        assert torch.equal(fan_in, call["fan_in"])
        assert torch.equal(bias, torch.zeros_like(bias) if call["bias"] is None else call["bias"])
        expected_out = torch.zeros_like(fan_out) if call["fan_out"] is None else call["fan_out"][0]
        assert torch.equal(fan_out, expected_out)
        # ... and what the initializer promises.
        if name == "gradmax":  # zero fan-in and bias, the fan-out carries the gradient
            assert torch.all(fan_in == 0) and torch.all(bias == 0)
            assert fan_out.abs().max() > 0
            continue
        assert fan_in.abs().max() > 0 and torch.all(fan_out == 0)
        if name != "preactivation":  # Pre-activation's bias is part of its solve
            assert torch.all(bias == 0)


@pytest.mark.parametrize(
    ("name", "trigger"), [("select", None), ("gradmax", None), ("select", "activation")]
)
def test_new_weights_first_adam_update_is_lr_and_nothing_stays_pending(digits, name, trigger):
    trigger = ActivationTrigger(epsilon=EPSILON) if trigger else None
    clf, growth, watch = fit_with_probe(digits, FUNCTION_PRESERVING[name](), trigger=trigger)
    last_growth = max(call["step"] for call in growth.initializer_.calls_)
    assert growth.step_ - last_growth > PENDING_STEPS  # every new entry had its chance
    # The moments of every new entry were seeded (or given up on): nothing waits.
    for state in clf.net_.optimizer_.state.values():
        assert PENDING_KEY not in state
    # Entries whose first non-zero gradient came while they waited for it (the others,
    # e.g. of a neuron inactive for PENDING_STEPS steps, keep zero moments by design).
    deltas, expected, waited = (torch.cat(column) for column in zip(*watch.first_updates_))
    in_time = waited <= PENDING_STEPS
    assert in_time.float().mean() > 0.9
    deltas, expected = deltas[in_time], expected[in_time]
    assert len(deltas) > 50
    # |update| = lr |g| / (|g| + eps): bias-corrected moments g and g^2, at any step
    # (unseeded zero moments would give 0.74 lr at step 2 and ~3 lr late in training).
    torch.testing.assert_close(deltas, expected, rtol=2e-3, atol=LR * 1e-4)
    assert expected.max() > 0.9 * LR
