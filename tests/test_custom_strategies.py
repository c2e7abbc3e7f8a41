"""Custom strategies: ``strategy=(trigger, initializer)`` with user-written objects.

The objects are either subclasses of ``Trigger`` / ``Initializer`` or plain classes with
the documented protocols. They must survive ``clone``, ``set_params``, pickling and
``GridSearchCV``, and fit must never modify them.
"""

import copy
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import (
    ActivationTrigger,
    GradientTrigger,
    Never,
    NewNeurons,
    PreActivationInit,
    RandomInit,
    SelectInit,
    Trigger,
    TriggerDecision,
)

BASE = dict(hidden_layer_sizes=(6, 6), batch_size=32, max_epochs=3, lr=1e-2, random_state=0)
N_SAMPLES = 300  # 10 steps per epoch, 30 in all


# -- custom objects (module level: picklable) ---------------------------------------------


class EveryKSteps(Trigger):
    """Adds ``n_neurons`` to every layer every ``k`` optimizer steps; counts its calls."""

    def __init__(self, k=5, n_neurons=2):
        self.k = k
        self.n_neurons = n_neurons

    def reset(self):
        self.calls_ = 0
        return self

    def __call__(self, index, site, context):
        self.calls_ += 1
        return TriggerDecision(self.n_neurons if context.step % self.k == 0 else 0)


class FirstLayerEvery:
    """A duck-typed trigger: no base class, no reset/initialize, no attributes."""

    def __init__(self, every=4):
        self.every = every

    def __call__(self, index, site, context):
        return TriggerDecision(int(index == 0 and context.step % self.every == 0))


class CopyInit:
    """A duck-typed initializer: copies of random existing neurons' fan-in, zero fan-out."""

    def __call__(self, index, site, k, context, generator):
        weight = site.producer.weight.detach()
        rows = torch.randint(0, site.width, (k,), generator=generator)
        return NewNeurons(fan_in=weight[rows.to(weight.device)].clone())


#: Training steps started, appended to by ``_StepCounter`` (module level: the estimator
#: deep-copies its callbacks, so the list cannot live on the instance).
STEPS_STARTED = []


class _StepCounter(Callback):
    """Records every training step that starts in ``STEPS_STARTED``."""

    def on_batch_begin(self, net, training=False, **kwargs):
        STEPS_STARTED.append(training)


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return X[:N_SAMPLES] / 16.0, y[:N_SAMPLES]


def growth_of(clf):
    return dict(clf.net_.callbacks_)["growth"]


def state(obj):
    return copy.deepcopy(vars(obj))


# -- custom pairs grow as written ---------------------------------------------------------------


def test_custom_trigger_subclass_decides_growth(data):
    X, y = data
    clf = GrowingMLPClassifier(
        strategy=(EveryKSteps(k=5, n_neurons=2), RandomInit()), max_hidden_layer_sizes=16, **BASE
    ).fit(X, y)
    history = clf.growth_history_
    # Steps 5, 10, ..., 30 add 2 neurons to each layer until the maximum (16) is reached.
    for layer in (0, 1):
        events = history[history["layer"] == layer]
        assert list(events["step"]) == [5, 10, 15, 20, 25]
        assert list(events["n_added"]) == [2, 2, 2, 2, 2]
    assert clf.hidden_layer_sizes_ == (16, 16)
    assert growth_of(clf).trigger_.calls_ > 0


def test_duck_typed_protocol_objects(data):
    X, y = data
    clf = GrowingMLPClassifier(strategy=(FirstLayerEvery(every=4), CopyInit()), **BASE).fit(X, y)
    history = clf.growth_history_
    assert set(history["layer"]) == {0}
    assert list(history["step"]) == list(range(4, 31, 4))
    assert clf.hidden_layer_sizes_ == (6 + 7, 6)
    assert np.isfinite(clf.predict_proba(X)).all()


def test_static_custom_pair(data):
    X, y = data
    clf = GrowingMLPClassifier(strategy=(Never(), None), **BASE).fit(X, y)
    assert clf.hidden_layer_sizes_ == (6, 6)
    assert clf.growth_history_.empty


def test_named_strategy_parameters_do_not_apply_to_custom_objects(data):
    X, y = data
    pair = (ActivationTrigger(gamma=0.9), SelectInit(n_candidates=20))
    clf = GrowingMLPClassifier(strategy=pair, gamma=0.5, epsilon=0.2, n_candidates=3, **BASE).fit(
        X, y
    )
    growth = growth_of(clf)
    assert growth.trigger_.gamma == 0.9
    assert growth.trigger_.epsilon == 0.01
    assert growth.initializer_.n_candidates == 20


def test_schedule_replaces_a_custom_trigger_and_keeps_its_initializer(data):
    X, y = data
    clf = GrowingMLPClassifier(
        strategy=(FirstLayerEvery(), CopyInit()), schedule="batched", schedule_target=(14, 10),
        **BASE,
    ).fit(X, y)  # fmt: skip
    growth = growth_of(clf)
    assert type(growth.trigger_).__name__ == "BatchedSchedule"
    assert isinstance(growth.initializer_, CopyInit)
    assert clf.hidden_layer_sizes_ == (14, 10)


# -- the user's objects are never modified -------------------------------------------------


def test_fit_does_not_modify_the_users_objects(data):
    X, y = data
    trigger, initializer = EveryKSteps(k=3, n_neurons=1), SelectInit(n_candidates=16)
    pair = (trigger, initializer)
    before = (state(trigger), state(initializer))
    clf = GrowingMLPClassifier(strategy=pair, **BASE).fit(X, y)
    clf.partial_fit(X, y)
    # The estimator keeps the very objects it was given as its parameter...
    assert clf.strategy is pair
    assert clf.get_params()["strategy"] is pair
    # ...unchanged: the callback worked on copies, which did change.
    assert (state(trigger), state(initializer)) == before
    assert not hasattr(trigger, "calls_")
    growth = growth_of(clf)
    assert growth.trigger_ is not trigger
    assert growth.trigger is not trigger
    assert growth.initializer_ is not initializer
    assert growth.trigger_.calls_ > 0
    assert len(clf.growth_history_) > 0


# -- clone, set_params, pickling, grid search -------------------------------------------------


def test_clone_and_set_params(data):
    X, y = data
    pair = (EveryKSteps(k=4, n_neurons=3), CopyInit())
    clf = GrowingMLPClassifier(strategy=pair, **BASE)
    cloned = clone(clf)
    new_pair = cloned.get_params()["strategy"]
    assert isinstance(new_pair, tuple)
    assert len(new_pair) == 2
    # Rebuilt from get_params (a Trigger) or deep-copied (a plain object): new objects.
    assert new_pair[0] is not pair[0]
    assert new_pair[1] is not pair[1]
    assert type(new_pair[0]) is EveryKSteps
    assert new_pair[0].get_params() == {"k": 4, "n_neurons": 3}
    assert type(new_pair[1]) is CopyInit
    # The clone fits like the original.
    a, b = clf.fit(X, y), cloned.fit(X, y)
    pd.testing.assert_frame_equal(a.growth_history_, b.growth_history_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    # set_params with a new pair; the next fit uses it.
    other = (FirstLayerEvery(every=10), RandomInit())
    clf.set_params(strategy=other)
    assert clf.strategy is other
    clf.fit(X, y)
    assert list(clf.growth_history_["step"]) == [10, 20, 30]
    assert isinstance(growth_of(clf).trigger_, FirstLayerEvery)


@pytest.mark.parametrize(
    "pair",
    [(EveryKSteps(k=5), SelectInit(n_candidates=16)), (FirstLayerEvery(every=3), CopyInit())],
    ids=["subclasses", "duck-typed"],
)
def test_pickled_fitted_estimator_predicts_identically(data, pair):
    X, y = data
    clf = GrowingMLPClassifier(strategy=pair, **BASE).fit(X, y)
    assert len(clf.growth_history_) > 0
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.hidden_layer_sizes_ == clf.hidden_layer_sizes_
    pd.testing.assert_frame_equal(loaded.growth_history_, clf.growth_history_)
    assert [type(o) for o in loaded.strategy] == [type(o) for o in pair]
    # The unpickled model keeps growing like the original.
    clf.partial_fit(X, y)
    loaded.partial_fit(X, y)
    pd.testing.assert_frame_equal(loaded.growth_history_, clf.growth_history_)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_grid_search_over_custom_pairs(data):
    X, y = data
    slow = (EveryKSteps(k=15, n_neurons=1), RandomInit())
    fast = (FirstLayerEvery(every=2), CopyInit())
    before = [state(obj) for obj in (*slow, *fast)]
    search = GridSearchCV(
        GrowingMLPClassifier(**BASE), {"strategy": [slow, fast]}, cv=2, error_score="raise"
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 2
    assert [p["strategy"] for p in search.cv_results_["params"]] == [slow, fast]
    assert list(search.cv_results_["param_strategy"]) == [slow, fast]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_params_["strategy"] in (slow, fast)
    # The refitted best estimator grew with (copies of) the best pair's objects.
    best = search.best_estimator_
    best_trigger = search.best_params_["strategy"][0]
    assert type(growth_of(best).trigger_) is type(best_trigger)
    expected_steps = [15, 30] if best_trigger is slow[0] else list(range(2, 31, 2))
    assert sorted(set(best.growth_history_["step"])) == expected_steps
    assert search.predict(X).shape == y.shape
    # No fit touched the objects of the grid.
    assert [state(obj) for obj in (*slow, *fast)] == before


# -- malformed strategies -------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy, error, match",
    [
        ((EveryKSteps(),), ValueError, "length 1"),
        ((EveryKSteps(), RandomInit(), RandomInit()), ValueError, "length 3"),
        (("north-select", RandomInit()), TypeError, "trigger .* callable"),
        ((EveryKSteps(), 5), TypeError, "initializer .* callable"),
        ((EveryKSteps, RandomInit()), TypeError, "instance"),
        ((EveryKSteps(), RandomInit), TypeError, "instance"),
        ((EveryKSteps(), None), ValueError, "None only"),
        ([EveryKSteps(), RandomInit()], ValueError, "strategy"),  # a list is not a pair
        (5, ValueError, "strategy"),
    ],
)
def test_malformed_strategy_is_a_clear_error_at_fit(data, strategy, error, match):
    X, y = data
    clf = GrowingMLPClassifier(strategy=strategy, **BASE)  # nothing is checked here
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


@pytest.mark.parametrize(
    "strategy, match",
    [
        ((ActivationTrigger(rounding="nearest"), RandomInit()), "rounding must be one of"),
        ((ActivationTrigger(baseline="mean"), RandomInit()), "baseline must be one of"),
        ((ActivationTrigger(method="qr"), RandomInit()), "method must be one of"),
        ((ActivationTrigger(), PreActivationInit(inverse_cutoff="svd")), "inverse_cutoff"),
        ((GradientTrigger(norms="steps"), RandomInit()), "norms must be one of"),
        ((GradientTrigger(method="qr"), RandomInit()), "method must be one of"),
    ],
)
def test_invalid_options_of_custom_objects_fail_before_training(data, strategy, match):
    X, y = data
    STEPS_STARTED.clear()
    GrowingMLPClassifier(callbacks=[("count", _StepCounter())], **BASE).fit(X, y)
    assert STEPS_STARTED  # the counter sees training steps
    STEPS_STARTED.clear()
    clf = GrowingMLPClassifier(strategy=strategy, callbacks=[("count", _StepCounter())], **BASE)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert STEPS_STARTED == []  # raised before the first training step
    assert not hasattr(clf, "net_")
