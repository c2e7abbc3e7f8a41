"""The task-aware growth gate (``HeldOutGate``), beyond the paper, off by default."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import HeldOutGate


def gate_after(losses, grew, patience=2, tol=0.01):
    """A reset gate fed ``losses`` at steps 1, 2, ...; ``grew[i]`` lists the sites that
    grew before check ``i``. Returns the gate and what each check closed."""
    gate = HeldOutGate(patience=patience, tol=tol).reset()
    closed = []
    for step, (loss, sites) in enumerate(zip(losses, grew), start=1):
        for index in sites:
            gate.site_grew(index)
        closed.append(gate.update(loss, step))
    return gate, closed


def test_a_layer_that_grew_without_improvement_is_closed_after_patience_checks():
    # 1.0 is the best; 0.995 is not 1 % better. Site 0 grew since the best before checks
    # 2 and 3, site 1 before check 3 only.
    gate, closed = gate_after([1.0, 0.995, 1.2], [[0], [0], [1]])
    assert closed == [[], [], [0]]  # site 0: strikes at checks 2 and 3; site 1: one strike
    assert gate.strikes_ == {0: 2, 1: 1}
    assert gate.closed_ == {0: 3}
    assert not gate.is_open(0) and gate.is_open(1)
    assert gate.best_ == 1.0 and gate.losses_ == [1.0, 0.995, 1.2]


def test_an_improvement_clears_the_strikes_and_a_quiet_layer_is_not_blamed():
    # 0.98 is 2 % better than 1.0: strikes reset. Site 1 never grew: never struck.
    gate, closed = gate_after([1.0, 1.0, 0.98, 1.0, 1.0], [[0], [0], [0], [0], []])
    assert closed == [[], [], [], [], [0]]
    assert 1 not in gate.strikes_ and gate.is_open(1)
    # tol=0: any decrease counts as an improvement.
    gate, closed = gate_after([1.0, 0.999, 0.998], [[0]] * 3, tol=0.0)
    assert closed == [[], [], []] and gate.best_ == 0.998


def test_closed_layers_stay_closed():
    gate, _ = gate_after([1.0, 1.1, 1.1, 0.5, 0.4], [[0]] * 5, patience=1)
    assert gate.closed_ == {0: 2}
    assert not gate.is_open(0)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"validation_fraction": 0.0}, "validation_fraction"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"patience": 0}, "patience"),
        ({"patience": 1.5}, "patience"),
        ({"check_interval": 0}, "check_interval"),
        ({"tol": -0.1}, "tol"),
    ],
)
def test_invalid_gate_parameters_fail_before_training(params, match):
    X, y = noise_data(60)
    clf = GrowingMLPClassifier(growth_gate=HeldOutGate(**params), max_epochs=1)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def noise_data(n, seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(n, 16)).astype(np.float32), g.integers(0, 4, n)


def gated(**params):
    return GrowingMLPClassifier(
        hidden_layer_sizes=(8, 8), max_hidden_layer_sizes=160, batch_size=32, lr=3e-3,
        max_epochs=12, buffer_size=320, random_state=0, **params,
    )  # fmt: skip


def test_gate_stops_growth_on_noise_labels_far_below_the_cap():
    X, y = noise_data(600)
    free = gated().fit(X, y)
    gate = HeldOutGate(check_interval=5)
    held = gated(growth_gate=gate).fit(X, y)
    assert free.hidden_layer_sizes_ == (160, 160)  # without a gate: to the cap
    callback = dict(held.net_.callbacks_)["growth"]
    assert set(callback.gate_.closed_) == {0, 1}
    assert max(held.hidden_layer_sizes_) < 160 / 2
    # No growth event after a layer was closed.
    for layer, step in callback.gate_.closed_.items():
        events = held.growth_history_[held.growth_history_.layer == layer]
        assert (events.step <= step).all()
    # The checks ran every 5 steps on the held-out tenth, which was not trained on:
    # 540 training samples are 17 batches of 32 per epoch.
    assert callback.step_ == 12 * 17
    assert len(callback.gate_.losses_) == callback.step_ // 5
    X_held, y_held = callback.gate_data
    assert len(X_held) == 60
    # Stratified: each class keeps its share of the held-out tenth, to rounding.
    share = np.bincount(y_held, minlength=4) - np.bincount(y, minlength=4) / 10
    assert np.abs(share).max() <= 1
    assert "held_out_loss" in held.net_.history[-1]
    # The user's gate object is not modified by fit.
    assert not hasattr(gate, "closed_")


def test_gated_fit_is_deterministic_clones_and_pickles():
    X, y = noise_data(300, seed=1)
    clf = gated(growth_gate=HeldOutGate(check_interval=4))
    a = clone(clf).fit(X, y)
    b = pickle.loads(pickle.dumps(clone(clf).fit(X, y)))
    assert a.hidden_layer_sizes_ == b.hidden_layer_sizes_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert clone(clf).get_params()["growth_gate__check_interval"] == 4


def test_a_gate_needs_enough_samples_per_class():
    X, y = noise_data(40)
    y[:] = 0
    y[0] = 1  # one sample of class 1: no stratified hold-out keeps it in training
    with pytest.raises(ValueError, match="growth_gate holds out"):
        gated(growth_gate=HeldOutGate()).fit(X, y)


@pytest.mark.parametrize("strategy", ["north-select", "gradmax"])
def test_the_gate_checks_once_per_buffer_renewal_whatever_the_trigger(strategy):
    X, y = noise_data(300, seed=2)
    # 270 training samples: 9 batches of 32 per epoch; the default buffer of 2 x 160
    # samples is renewed every 320 // 32 = 10 steps, also for T_grad, which keeps none
    # and is evaluated at every step.
    clf = gated(strategy=strategy, growth_gate=HeldOutGate()).set_params(max_epochs=4).fit(X, y)
    callback = dict(clf.net_.callbacks_)["growth"]
    assert callback.step_ == 4 * 9
    assert len(callback.gate_.losses_) == callback.step_ // 10
