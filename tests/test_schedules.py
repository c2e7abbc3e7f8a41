"""Preset growth schedules (SPEC section 3): the exact plan, the training plan it is
measured against, every initializer, and the estimator's ``schedule`` parameters.

Digits subsets of 310 samples in batches of 32 make 10 optimizer steps per epoch (the last
batch has 22 samples and is a step): 4 epochs plan T = 40 steps.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier

from sklearn_north import STRATEGIES, GrowingMLPClassifier
from sklearn_north.growth import (
    INITIALIZERS,
    SCHEDULES,
    BatchedSchedule,
    GrowthContext,
    LinearSchedule,
    RandomInit,
    SelectInit,
    Trigger,
    TriggerDecision,
    make_strategy,
)
from sklearn_north.growth.callback import planned_steps
from sklearn_north.nn import GrowableMLP

N_SAMPLES, BATCH, EPOCHS = 310, 32, 4
STEPS_PER_EPOCH = math.ceil(N_SAMPLES / BATCH)  # 10
T = EPOCHS * STEPS_PER_EPOCH  # 40

BASE = dict(batch_size=BATCH, max_epochs=EPOCHS, lr=1e-2, random_state=0)


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:N_SAMPLES] / 16.0, y[:N_SAMPLES]


# -- the exact plans, written independently of the implementation ------------------------


def linear_width(initial, target, t, total, p):
    """min(S, I + ceil((S - I) t / (p T))), exactly (p read as the decimal it prints)."""
    horizon = Fraction(str(p)) * total
    if t >= horizon:
        return target
    return min(target, initial + math.ceil(Fraction((target - initial) * t) / horizon))


def batched_width(initial, target, t, total, p, n_stages=8):
    """I + floor(j (S - I) / 8) after j = min(8, floor(8 t / (p T))) stages."""
    horizon = Fraction(str(p)) * total
    done = min(n_stages, math.floor(Fraction(n_stages * t) / horizon))
    return initial + (target - initial) * done // n_stages


PLANS = {"linear": linear_width, "batched": batched_width}


def widths_per_step(history, initial, total):
    """widths[t, l]: width of layer l after optimizer step t (row 0: before training)."""
    widths = np.tile(np.asarray(initial), (total + 1, 1))
    for row in history.itertuples():
        widths[row.step :, row.layer] = row.width
    return widths


def assert_follows_plan(clf, schedule, initial, target, p, total=T, interval=1):
    history = clf.growth_history_
    widths = widths_per_step(history, initial, total)
    plan = PLANS[schedule]
    for layer, (i, s) in enumerate(zip(initial, target)):
        # The width after every evaluated step is exactly the plan's; between evaluations
        # it is that of the last evaluation.
        expected = [plan(i, s, t - t % interval, total, p) for t in range(total + 1)]
        np.testing.assert_array_equal(widths[:, layer], expected, err_msg=f"layer {layer}")
        events = history[history["layer"] == layer]
        assert (events["width"] <= s).all()  # never past the target
        assert events["n_added"].sum() == s - i
        assert widths[-1, layer] == s
        # Reached by the planned fraction of training.
        assert events["step"].max() <= math.ceil(p * total) + interval
    assert clf.hidden_layer_sizes_ == tuple(target)


# -- the plans through the estimator ---------------------------------------------------------


def test_linear_one_neuron_per_step_and_catch_up(data):
    X, y = data
    initial, target, maximum = (4, 6), (20, 46), (40, 48)
    clf = GrowingMLPClassifier(
        strategy="north-random", schedule="linear", hidden_layer_sizes=initial,
        max_hidden_layer_sizes=maximum, schedule_target=target, **BASE,
    ).fit(X, y)  # fmt: skip
    assert_follows_plan(clf, "linear", initial, target, 0.75)
    history = clf.growth_history_
    # Layer 0 rises 16 neurons over 30 steps: the paper's one neuron per step.
    assert set(history[history["layer"] == 0]["n_added"]) == {1}
    # Layer 1 rises 40 over 30 steps: some steps add two to keep up with the line.
    assert set(history[history["layer"] == 1]["n_added"]) == {1, 2}
    # Growth ends at 0.75 T = step 30 and the target is exactly reached there.
    assert history["step"].max() == 30
    assert (history["epoch"] <= 3).all()
    # The history's metric is the planned width, its threshold the width before.
    np.testing.assert_array_equal(history["metric"], history["width"])
    np.testing.assert_array_equal(history["threshold"], history["width"] - history["n_added"])


def test_batched_eight_equal_evenly_spaced_stages(data):
    X, y = data
    initial, target = (8, 4), (40, 31)  # 32 = 8 x 4 neurons; 27 = 3 x 3 + 5 x 4
    clf = GrowingMLPClassifier(
        strategy="north-random", schedule="batched", hidden_layer_sizes=initial,
        max_hidden_layer_sizes=48, schedule_target=target, **BASE,
    ).fit(X, y)  # fmt: skip
    assert_follows_plan(clf, "batched", initial, target, 0.75)
    history = clf.growth_history_
    horizon = Fraction(3, 4) * T  # 30 steps
    moments = [math.ceil(j * horizon / 8) for j in range(1, 9)]
    assert moments == [4, 8, 12, 15, 19, 23, 27, 30]
    for layer in (0, 1):
        events = history[history["layer"] == layer]
        assert len(events) == 8
        assert list(events["step"]) == moments
        # Evenly spaced: 30 / 8 = 3.75 steps apart, up to whole steps.
        assert set(np.diff(events["step"])) <= {3, 4}
    first = history[history["layer"] == 0]
    assert list(first["n_added"]) == [4] * 8  # equal stages of (S - I) / 8
    second = history[history["layer"] == 1]
    # 27 / 8 is not whole: the remainder is spread, stages differ by one at most.
    assert set(second["n_added"]) == {3, 4}
    assert list(second["width"]) == [4 + j * 27 // 8 for j in range(1, 9)]


@pytest.mark.parametrize("schedule", sorted(PLANS))
@pytest.mark.parametrize("p", [0.3, 1.0])
def test_schedule_end_fraction(data, schedule, p):
    X, y = data
    initial, target = (5,), (29,)
    clf = GrowingMLPClassifier(
        strategy="north-random", schedule=schedule, schedule_end=p, hidden_layer_sizes=initial,
        schedule_target=target, **BASE,
    ).fit(X, y)  # fmt: skip
    assert_follows_plan(clf, schedule, initial, target, p)
    last = clf.growth_history_["step"].max()
    if schedule == "batched":
        assert last == math.ceil(p * T)  # the last stage is at p T
    else:
        assert last <= math.ceil(p * T)  # the line reaches S within a step of p T
        assert last > p * T - 2


@pytest.mark.parametrize("schedule", sorted(PLANS))
def test_trigger_interval_catches_up_with_the_plan(data, schedule):
    X, y = data
    initial, target = (4, 6), (20, 46)
    clf = GrowingMLPClassifier(
        strategy="north-random", schedule=schedule, trigger_interval=3,
        hidden_layer_sizes=initial, max_hidden_layer_sizes=48, schedule_target=target, **BASE,
    ).fit(X, y)  # fmt: skip
    assert (clf.growth_history_["step"] % 3 == 0).all()
    assert_follows_plan(clf, schedule, initial, target, 0.75, interval=3)


def test_batched_with_fewer_neurons_than_stages(data):
    X, y = data
    clf = GrowingMLPClassifier(
        strategy="north-random", schedule="batched", hidden_layer_sizes=(6,),
        schedule_target=9, **BASE,
    ).fit(X, y)  # fmt: skip
    assert_follows_plan(clf, "batched", (6,), (9,), 0.75)
    assert list(clf.growth_history_["n_added"]) == [1, 1, 1]


def test_default_target_is_the_maximum_width(data):
    X, y = data
    clf = GrowingMLPClassifier(
        strategy="north-random", schedule="linear", hidden_layer_sizes=(4, 3),
        max_hidden_layer_sizes=(12, 30), **BASE,
    ).fit(X, y)  # fmt: skip
    assert_follows_plan(clf, "linear", (4, 3), (12, 30), 0.75)


@pytest.mark.parametrize("schedule", sorted(PLANS))
def test_continued_training_stays_at_the_target(data, schedule):
    X, y = data
    clf = GrowingMLPClassifier(
        strategy="north-random", schedule=schedule, hidden_layer_sizes=(4,),
        schedule_target=20, max_hidden_layer_sizes=40, warm_start=True, **BASE,
    ).fit(X, y)  # fmt: skip
    n_events = len(clf.growth_history_)
    clf.partial_fit(X, y)
    clf.fit(X, y)  # warm start: max_epochs more epochs
    assert clf.n_iter_ == 2 * EPOCHS + 1
    assert clf.hidden_layer_sizes_ == (20,)
    assert len(clf.growth_history_) == n_events


def test_partial_fit_plans_for_max_epochs(data):
    # Each partial_fit call is one epoch of the max_epochs the schedule plans for: calling
    # it max_epochs times follows the same plan as fit.
    X, y = data
    params = dict(
        strategy="north-random", schedule="linear", hidden_layer_sizes=(4, 6),
        schedule_target=(20, 46), max_hidden_layer_sizes=48, **BASE,
    )  # fmt: skip
    fitted = GrowingMLPClassifier(**params).fit(X, y)
    stepped = GrowingMLPClassifier(**params)
    for _ in range(EPOCHS):
        stepped.partial_fit(X, y, classes=np.unique(y))
    assert stepped.n_iter_ == EPOCHS
    np.testing.assert_array_equal(
        stepped.growth_history_[["step", "layer", "n_added", "width"]],
        fitted.growth_history_[["step", "layer", "n_added", "width"]],
    )


# -- every initializer, and every named strategy -------------------------------------------


def _small(cls):
    """An instance of initializer class ``cls`` with few candidates, if it has them."""
    params = {"n_candidates": 16} if "n_candidates" in cls._param_names() else {}
    return cls(**params)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("init_name", sorted(INITIALIZERS))
def test_schedules_pair_with_every_initializer(data, schedule, init_name):
    X, y = data
    initial, target = (8, 6), (24, 14)
    pair = (SCHEDULES[schedule](target=target), _small(INITIALIZERS[init_name]))
    clf = GrowingMLPClassifier(
        strategy=pair, hidden_layer_sizes=initial, max_hidden_layer_sizes=32, **BASE
    ).fit(X, y)
    assert_follows_plan(clf, schedule, initial, target, 0.75)
    assert np.isfinite(clf.predict_proba(X)).all()
    assert np.isfinite(clf.loss_curve_).all()


GROWING_STRATEGIES = sorted(name for name, (_, init) in STRATEGIES.items() if init is not None)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("strategy", GROWING_STRATEGIES)
def test_schedule_replaces_the_trigger_of_every_named_strategy(data, strategy, schedule):
    X, y = data
    initial, target = (8, 6), (20, 14)
    clf = GrowingMLPClassifier(
        strategy=strategy, schedule=schedule, schedule_target=target, hidden_layer_sizes=initial,
        max_hidden_layer_sizes=32, n_candidates=16, **BASE,
    ).fit(X, y)  # fmt: skip
    assert_follows_plan(clf, schedule, initial, target, 0.75)
    growth = dict(clf.net_.callbacks_)["growth"]
    assert type(growth.trigger_) is SCHEDULES[schedule]
    _, initializer = make_strategy(strategy)
    assert type(growth.initializer_) is type(initializer)  # the strategy's own


def test_make_strategy_with_a_schedule():
    trigger, initializer = make_strategy(
        "north-select", epsilon=0.05, n_candidates=7, schedule="batched",
        schedule_target=(10, 12), schedule_end=0.5,
    )  # fmt: skip
    assert isinstance(trigger, BatchedSchedule)
    assert trigger.get_params() == {
        "target": (10, 12), "end": 0.5, "n_stages": 8, "epsilon": 0.05,
    }  # fmt: skip
    assert isinstance(initializer, SelectInit)
    assert initializer.n_candidates == 7
    # The replaced trigger's epsilon is kept when none is given.
    trigger, _ = make_strategy("north-random", schedule="linear")
    assert isinstance(trigger, LinearSchedule)
    assert trigger.epsilon == 0.01
    assert trigger.end == 0.75
    assert trigger.target is None
    # Schedules are triggers (ParamsMixin): scikit-learn's clone rebuilds them.
    cloned = clone(trigger)
    assert cloned is not trigger
    assert cloned.get_params() == trigger.get_params()
    with pytest.raises(ValueError, match="initializer"):
        make_strategy("static", schedule="linear")
    with pytest.raises(ValueError, match="schedule"):
        make_strategy("north-random", schedule="cubic")


# -- the training plan -----------------------------------------------------------------------


class PlanSpy(Trigger):
    """Records the step and planned total of every evaluation; never grows."""

    def reset(self):
        self.seen_ = []
        return self

    def __call__(self, index, site, context):
        self.seen_.append((index, context.step, context.total_steps))
        return TriggerDecision(0)


@pytest.mark.parametrize("n_samples, batch_size", [(310, 32), (320, 32), (50, 64)])
def test_the_callback_plans_max_epochs_times_the_batches(data, n_samples, batch_size):
    X, y = data
    clf = GrowingMLPClassifier(
        strategy=(PlanSpy(), RandomInit()), hidden_layer_sizes=(4, 4),
        **{**BASE, "batch_size": batch_size},
    ).fit(X[:n_samples], y[:n_samples])  # fmt: skip
    total = EPOCHS * math.ceil(n_samples / batch_size)
    growth = dict(clf.net_.callbacks_)["growth"]
    assert growth.total_steps_ == total
    assert growth.step_ == total  # the plan is the steps actually taken
    seen = growth.trigger_.seen_
    assert [s for s in seen if s[0] == 0] == [(0, t, total) for t in range(1, total + 1)]
    assert len(seen) == 2 * total


def test_planned_steps_follows_the_iterator():
    X = np.zeros((103, 3), dtype=np.float32)

    def net(**kwargs):
        kwargs = {"batch_size": 10, "max_epochs": 3, **kwargs}
        return NeuralNetClassifier(GrowableMLP, **kwargs)

    assert planned_steps(net(), X) == 3 * 11  # the last batch of 3 is a step
    assert planned_steps(net(), X, epochs=5) == 5 * 11
    assert planned_steps(net(iterator_train__drop_last=True), X) == 3 * 10
    assert planned_steps(net(iterator_train__batch_size=50), X) == 3 * 3
    assert planned_steps(net(batch_size=-1), X) == 3
    assert planned_steps(net(), X[:0]) == 0


def test_a_schedule_without_a_plan_is_a_clear_error(make_mlp):
    module = make_mlp(hidden=(4,), max_hidden_layer_sizes=(8,))
    sites = module.growth_sites()
    schedule = LinearSchedule().reset()
    schedule.initialize(sites, GrowthContext(module))
    with pytest.raises(RuntimeError, match="total_steps"):
        schedule(0, sites[0], GrowthContext(module, step=1))
    # With a plan: the exact width, and never a negative count.
    decision = schedule(0, sites[0], GrowthContext(module, step=3, total_steps=8))
    assert decision.n_neurons == linear_width(4, 8, 3, 8, 0.75) - 4 == 2
    assert schedule(0, sites[0], GrowthContext(module, step=0, total_steps=8)).n_neurons == 0


@pytest.mark.parametrize(
    "params, match",
    [
        ({"target": 3}, "below its initial width"),
        ({"target": 9}, "exceeds its maximum width"),
        ({"target": (5, 6)}, "2 widths"),
        ({"end": 0.0}, "end"),
        ({"end": 1.5}, "end"),
    ],
)
def test_schedule_initialize_validates(make_mlp, params, match):
    module = make_mlp(hidden=(4,), max_hidden_layer_sizes=(8,))
    with pytest.raises(ValueError, match=match):
        LinearSchedule(**params).reset().initialize(module.growth_sites(), GrowthContext(module))


def test_schedule_needs_a_target_without_maximum(make_mlp):
    module = make_mlp(hidden=(4,))
    with pytest.raises(ValueError, match="target"):
        BatchedSchedule().reset().initialize(module.growth_sites(), GrowthContext(module))


# -- estimator parameter validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"strategy": "static", "schedule": "linear"}, "no initializer"),
        ({"schedule": "cubic"}, "schedule"),
        ({"schedule": "linear", "schedule_target": 4}, "schedule_target"),  # below initial
        ({"schedule": "linear", "schedule_target": (10, 17)}, "layer 1"),  # above maximum
        ({"schedule": "linear", "schedule_target": (10,)}, "entries"),
        ({"schedule": "linear", "schedule_target": (10, 0)}, "schedule_target"),
        ({"schedule": "linear", "schedule_end": 0}, "schedule_end"),
        ({"schedule": "linear", "schedule_end": 1.01}, "schedule_end"),
    ],
)
def test_invalid_schedule_parameters(data, params, match):
    X, y = data
    clf = GrowingMLPClassifier(
        **{"hidden_layer_sizes": (8, 8), "max_hidden_layer_sizes": 16, **BASE, **params}
    )
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_schedule_target_is_ignored_without_schedule(data):
    X, y = data
    clf = GrowingMLPClassifier(
        strategy="static", hidden_layer_sizes=(8,), schedule_target=(500, 3), **BASE
    ).fit(X, y)
    assert clf.hidden_layer_sizes_ == (8,)
