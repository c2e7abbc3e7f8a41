"""The skorch callback that runs Algorithm 1, and its sample buffer (SPEC sections 1-2)."""

import pickle

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier

from sklearn_north.growth import (
    EVENT_COLUMNS,
    ActivationTrigger,
    GrowthCallback,
    Never,
    RandomInit,
    SampleBuffer,
    SelectInit,
    Trigger,
    TriggerDecision,
)

# N_FEATURES and BATCH are the make_growth_net fixture's defaults (conftest.py).
N_SAMPLES, N_FEATURES, BATCH = 96, 6, 16
STEPS_PER_EPOCH = N_SAMPLES // BATCH


class FixedTrigger(Trigger):
    """Asks for ``n`` neurons at every evaluation and counts its evaluations."""

    def __init__(self, n=2):
        self.n = n

    def reset(self):
        super().reset()
        self.calls_ = []
        return self

    def __call__(self, index, site, context):
        self.calls_.append((index, site.width))
        return TriggerDecision(self.n, metric=0.5, threshold=0.25)


@pytest.fixture
def data():
    g = np.random.default_rng(0)
    X = g.normal(size=(N_SAMPLES, N_FEATURES)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return X, y


def growth_of(net):
    return dict(net.callbacks_)["growth"]


def test_events_and_cap(data, make_growth_net):
    X, y = data
    net = make_growth_net(GrowthCallback(FixedTrigger(n=2), RandomInit(), random_state=0))
    net.fit(X, y)
    cb = growth_of(net)
    module = net.module_

    assert module.hidden_layer_sizes == (6, 5)  # grown to the cap, not past it
    assert cb.events_
    widths = {0: 3, 1: 3}
    caps = {0: 6, 1: 5}
    for event in cb.events_:
        assert tuple(event) == EVENT_COLUMNS
        layer = event["layer"]
        assert event["n_added"] == min(2, caps[layer] - widths[layer])  # min(T, room)
        widths[layer] += event["n_added"]
        assert event["width"] == widths[layer] <= caps[layer]
        assert event["metric"] == 0.5 and event["threshold"] == 0.25
        assert 1 <= event["step"] <= 2 * STEPS_PER_EPOCH
        assert event["epoch"] in (1, 2)
    # 3 -> 5 -> 6 and 3 -> 5: the last event of the first layer is capped at 1.
    assert [e["n_added"] for e in cb.events_ if e["layer"] == 0] == [2, 1]
    assert [e["n_added"] for e in cb.events_ if e["layer"] == 1] == [2]
    # A site at its cap is no longer evaluated (nothing it says could change the network).
    assert cb.trigger_.calls_ == [(0, 3), (1, 3), (0, 5)]
    assert net.history[-1, "widths"] == "6-5"
    # The optimizer trains exactly the module's current parameters.
    optimized = [p for g in net.optimizer_.param_groups for p in g["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in module.parameters()}
    assert len(optimized) == len(list(module.parameters()))
    assert net.predict_proba(X).shape == (N_SAMPLES, 2)


def test_activation_trigger_never_grows_past_max_width(data, make_growth_net):
    X, y = data
    # gamma = 0: the trigger asks for as many neurons as the layer's rank, every step.
    callback = GrowthCallback(
        ActivationTrigger(gamma=0.0), SelectInit(n_candidates=20), random_state=0
    )
    net = make_growth_net(callback, hidden=(2, 2), max_hidden=(7, 4), max_epochs=1)
    net.fit(X, y)
    cb = growth_of(net)
    assert net.module_.hidden_layer_sizes == (7, 4)
    assert all(e["width"] <= (7, 4)[e["layer"]] for e in cb.events_)
    assert sum(e["n_added"] for e in cb.events_) == (7 - 2) + (4 - 2)
    for e in cb.events_:
        assert e["n_added"] > 0
        assert e["threshold"] == 0.0
        assert 0 < e["metric"] <= 1


@pytest.mark.parametrize("interval", [1, 3, 5, 12, 13])
def test_trigger_interval(data, interval, make_growth_net):
    X, y = data
    callback = GrowthCallback(
        FixedTrigger(n=1), RandomInit(), trigger_interval=interval, random_state=0
    )
    net = make_growth_net(callback, max_hidden=(None, None))
    net.fit(X, y)
    cb = growth_of(net)
    n_steps = 2 * STEPS_PER_EPOCH
    assert cb.step_ == n_steps
    n_evaluations = n_steps // interval
    assert len(cb.trigger_.calls_) == 2 * n_evaluations  # two sites per evaluation
    assert [index for index, _ in cb.trigger_.calls_] == [0, 1] * n_evaluations
    assert [e["step"] for e in cb.events_ if e["layer"] == 0] == [
        interval * (i + 1) for i in range(n_evaluations)
    ]
    assert net.module_.hidden_layer_sizes == (3 + n_evaluations, 3 + n_evaluations)


class ScriptedTrigger(Trigger):
    """Measures activations (so the adaptive schedule applies) and fires at given steps."""

    needs_activations = True

    def __init__(self, fire_at=()):
        self.fire_at = fire_at

    def reset(self):
        super().reset()
        self.steps_ = []
        return self

    def __call__(self, index, site, context):
        if index == 0:
            self.steps_.append(context.step)
        return TriggerDecision(int(index == 0 and context.step in self.fire_at))


def auto_schedule(n_steps, cap, fire_at):
    """The evaluation steps of ``trigger_interval="auto"`` by its definition: the wait
    starts at 1, doubles after an evaluation without growth (at most ``cap``) and is 1
    again after one with growth."""
    steps, step, wait = [], 1, 1
    while step <= n_steps:
        steps.append(step)
        wait = 1 if step in fire_at else min(2 * wait, cap)
        step += wait
    return steps


@pytest.mark.parametrize(
    ("buffer_size", "fire_at"), [(64, ()), (64, (7, 8, 20)), (96, (3,)), (17, (5,))]
)
def test_auto_interval_backs_off_while_nothing_grows(data, make_growth_net, buffer_size, fire_at):
    X, y = data
    callback = GrowthCallback(
        ScriptedTrigger(fire_at), RandomInit(), trigger_interval="auto", buffer_size=buffer_size
    )
    net = make_growth_net(callback, max_hidden=(None, None), max_epochs=4)
    net.fit(X, y)
    cb = growth_of(net)
    cap = buffer_size // BATCH  # the steps in which the buffer is renewed
    assert cb.interval_cap_ == max(1, cap)
    n_steps = 4 * STEPS_PER_EPOCH
    expected = auto_schedule(n_steps, max(1, cap), set(fire_at))
    assert cb.trigger_.steps_ == expected
    assert cb.evaluations_ == len(expected)
    assert [e["step"] for e in cb.events_] == [s for s in fire_at if s in expected]
    if not fire_at and cap > 1:
        assert len(expected) < n_steps / 2  # the point: fewer evaluations


class GradientReader(FixedTrigger):
    """A trigger that judges each step's gradients (as T_grad does)."""

    needs_gradients = True


@pytest.mark.parametrize("trigger", [FixedTrigger(n=0), GradientReader(n=0)])
def test_auto_interval_evaluates_schedules_and_gradient_triggers_every_step(
    data, make_growth_net, trigger
):
    X, y = data
    # Neither measures activations on the buffer: like a preset schedule (which follows
    # a plan) or T_grad (each mini-batch anew), they see every step.
    # A buffer that would take 4 steps to renew (64 / 16).
    callback = GrowthCallback(
        trigger, SelectInit(n_candidates=8), trigger_interval="auto", buffer_size=64
    )
    net = make_growth_net(callback, max_epochs=1)
    net.fit(X, y)
    cb = growth_of(net)
    assert cb.interval_cap_ == 1
    assert cb.evaluations_ == STEPS_PER_EPOCH


@pytest.mark.parametrize("interval", [0, -1, 2.5, "often", True])
def test_invalid_trigger_interval(data, make_growth_net, interval):
    X, y = data
    net = make_growth_net(GrowthCallback(FixedTrigger(), RandomInit(), trigger_interval=interval))
    with pytest.raises(ValueError, match="trigger_interval"):
        net.fit(X, y)


@pytest.mark.parametrize("second_max", [3, 6])
def test_the_buffer_forward_stops_after_the_last_watched_site(data, make_growth_net, second_max):
    X, y = data
    # gamma 2: never fires; the running-max baseline needs the metric at every step.
    trigger = ActivationTrigger(gamma=2.0, baseline="running_max")
    callback = GrowthCallback(trigger, RandomInit(), buffer_size=24)
    net = make_growth_net(callback, max_hidden=(6, second_max), max_epochs=1)
    net.initialize()
    calls = []
    net.module_.layers[1].register_forward_hook(lambda *args: calls.append(1))
    net.partial_fit(X, y)
    cb = growth_of(net)
    assert cb.evaluations_ == STEPS_PER_EPOCH
    # Training forwards layer 1 once a step, the baselines once; the evaluations too,
    # unless the second site is at its cap (3 of 3): then nothing reads past site 0.
    at_cap = second_max == 3
    assert len(calls) == STEPS_PER_EPOCH + 1 + (0 if at_cap else STEPS_PER_EPOCH)
    assert cb.events_ == []
    assert set(cb.trigger_.baselines_) == {0, 1}


def test_buffer_holds_the_most_recent_inputs(data, make_growth_net):
    X, y = data
    # A trigger that never fires, but needs the sample buffer.
    callback = GrowthCallback(ActivationTrigger(gamma=2.0), RandomInit(), buffer_size=24)
    net = make_growth_net(callback, max_epochs=1)
    net.fit(X, y)
    cb = growth_of(net)
    assert cb.events_ == []
    assert net.module_.hidden_layer_sizes == (3, 3)
    samples = cb.buffer_.samples().numpy()
    assert samples.shape == (24, N_FEATURES)
    assert sorted(map(tuple, samples)) == sorted(map(tuple, X[-24:]))


def test_default_buffer_size_and_first_buffer(data, make_growth_net):
    X, y = data
    callback = GrowthCallback(ActivationTrigger(gamma=2.0), RandomInit(), random_state=0)
    net = make_growth_net(callback, max_hidden=(6, 10), max_epochs=1)
    net.initialize()
    cb = growth_of(net)
    cb.on_train_begin(net, X=X, y=y)
    # Twice the largest maximum width, sampled from the training data.
    assert cb.buffer_.capacity == 20
    first = cb.buffer_.samples().numpy()
    assert len(first) == 20
    rows = {tuple(r) for r in X}
    assert all(tuple(r) in rows for r in first)
    assert len({tuple(r) for r in first}) == 20  # without replacement
    # Baselines measured on that first buffer.
    assert set(cb.trigger_.baselines_) == {0, 1}


class BufferSpy(ActivationTrigger):
    """Never fires (gamma 2); keeps the buffer's samples at every evaluation."""

    def __init__(self):
        super().__init__(gamma=2.0)
        self.seen_ = []

    def __call__(self, index, site, context):
        if index == 0:
            self.seen_.append(context.samples.numpy().copy())
        return super().__call__(index, site, context)


def fit_with_the_training_set_size(data, make_growth_net, trigger, epochs, **options):
    """A net fitted on ``data`` with a growth callback told the training set's size; its
    buffer, larger than that, holds the training set (capacity ``N_SAMPLES``)."""
    callback = GrowthCallback(trigger, RandomInit(), training_set_size=N_SAMPLES, **options)
    net = make_growth_net(callback, max_epochs=epochs)
    net.fit(*data)
    assert growth_of(net).buffer_.capacity == N_SAMPLES
    return net


def test_a_buffer_larger_than_the_training_set_is_the_training_set(data, make_growth_net):
    X, y = data
    net = fit_with_the_training_set_size(
        data, make_growth_net, BufferSpy(), 3, trigger_interval=1, buffer_size=200
    )
    cb = growth_of(net)
    training_set = sorted(map(tuple, X))
    # At every evaluation, each training sample once (the buffer is never extended).
    assert len(cb.trigger_.seen_) == 3 * STEPS_PER_EPOCH
    for samples in cb.trigger_.seen_:
        assert sorted(map(tuple, samples)) == training_set
    # Without training_set_size (partial_fit's case) it rolls: repeats of the samples.
    rolling = GrowthCallback(BufferSpy(), RandomInit(), trigger_interval=1, buffer_size=200)
    net = make_growth_net(rolling, max_epochs=3)
    net.fit(X, y)
    samples = growth_of(net).buffer_.samples().numpy()
    assert len(samples) == 200 and len({tuple(r) for r in samples}) == N_SAMPLES


def test_the_training_set_buffer_keeps_the_auto_interval_of_its_nominal_size(data, make_growth_net):
    net = fit_with_the_training_set_size(
        data, make_growth_net, ScriptedTrigger(()), 4, trigger_interval="auto", buffer_size=128
    )
    cb = growth_of(net)
    assert cb.interval_cap_ == 128 // BATCH
    assert cb.trigger_.steps_ == auto_schedule(4 * STEPS_PER_EPOCH, 128 // BATCH, set())


def test_a_continuation_rolls_new_samples_into_the_training_set_buffer(data, make_growth_net):
    X, y = data
    net = fit_with_the_training_set_size(
        data, make_growth_net, ActivationTrigger(gamma=2.0), 1, buffer_size=200
    )
    X_new = X[:32] + 100.0  # other samples, one epoch of them (2 steps)
    net.partial_fit(X_new, y[:32])
    samples = {tuple(r) for r in growth_of(net).buffer_.samples().numpy()}
    assert {tuple(r) for r in X_new} <= samples
    assert len(samples) == N_SAMPLES  # the 32 oldest rows made room


def test_fit_passes_the_training_set_size_and_partial_fit_does_not():
    from sklearn_north import GrowingMLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    params = dict(strategy="north-select", hidden_layer_sizes=(4,), max_hidden_layer_sizes=100,
                  max_epochs=3, random_state=0)  # fmt: skip
    fitted = GrowingMLPClassifier(**params).fit(X, y)  # 150 samples, a buffer of 200
    buffer = growth_of(fitted.net_).buffer_
    assert buffer.capacity == 150
    assert sorted(map(tuple, buffer.samples().numpy())) == sorted(map(tuple, X))
    partial = GrowingMLPClassifier(**params).partial_fit(X, y, classes=[0, 1])
    assert growth_of(partial.net_).buffer_.capacity == 200


@pytest.mark.parametrize("buffer_size, ok", [(5, False), (6, False), (7, True)])
def test_buffer_must_exceed_the_widest_dense_layer(data, make_growth_net, buffer_size, ok):
    # max_hidden=(6, 5): on n <= 6 samples the first layer's metric is capped at n / M.
    X, y = data
    callback = GrowthCallback(ActivationTrigger(), RandomInit(), buffer_size=buffer_size)
    net = make_growth_net(callback, max_epochs=1)
    if ok:
        net.fit(X, y)
        assert growth_of(net).buffer_.capacity == buffer_size
    else:
        with pytest.raises(ValueError, match=rf"buffer_size={buffer_size} must be larger.*\(6 "):
            net.fit(X, y)


def test_buffer_size_is_not_checked_where_no_activations_are_used(data, make_growth_net):
    X, y = data
    net = make_growth_net(GrowthCallback(FixedTrigger(n=1), RandomInit(), buffer_size=2))
    net.fit(X, y)
    assert growth_of(net).buffer_ is None


def test_static_network_does_nothing(data, make_growth_net):
    X, y = data
    net = make_growth_net(GrowthCallback(Never()))
    net.fit(X, y)
    cb = growth_of(net)
    assert cb.events_ == [] and cb.buffer_ is None
    assert net.module_.hidden_layer_sizes == (3, 3)


def test_a_module_that_cannot_grow_is_a_clear_error(data):
    X, y = data
    module = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    )
    net = NeuralNetClassifier(
        module, criterion=torch.nn.CrossEntropyLoss, max_epochs=1, train_split=None,
        callbacks=[("growth", GrowthCallback(ActivationTrigger(), RandomInit()))], verbose=0,
    )  # fmt: skip
    with pytest.raises(TypeError, match=r"needs a growable module.*got Sequential"):
        net.fit(X, y)


def test_growing_trigger_needs_an_initializer():
    with pytest.raises(ValueError, match="initializer"):
        GrowthCallback(FixedTrigger()).initialize()


def test_trigger_is_copied_and_reproducible(data, make_growth_net):
    X, y = data
    trigger = ActivationTrigger(gamma=0.5)

    def fit():
        net = make_growth_net(GrowthCallback(trigger, SelectInit(n_candidates=20), random_state=3))
        net.fit(X, y)
        return net

    first, second = fit(), fit()
    assert not hasattr(trigger, "baselines_")  # the user's object is left untouched
    assert growth_of(first).events_ == growth_of(second).events_
    assert growth_of(first).events_
    for a, b in zip(first.module_.parameters(), second.module_.parameters()):
        assert torch.equal(a, b)


def test_callback_pickles_with_its_generator(data, make_growth_net):
    X, y = data
    net = make_growth_net(GrowthCallback(FixedTrigger(n=1), RandomInit(), random_state=0))
    net.fit(X, y)
    cb = growth_of(net)
    clone = pickle.loads(pickle.dumps(cb))
    assert clone.events_ == cb.events_
    assert torch.equal(
        torch.rand(5, generator=clone._generator), torch.rand(5, generator=cb._generator)
    )


# --- SampleBuffer ------------------------------------------------------------------------


def rows_of(buffer):
    return sorted(buffer.samples()[:, 0].long().tolist())


def test_sample_buffer_fifo_with_wrap_around():
    buffer = SampleBuffer(5)
    with pytest.raises(RuntimeError):
        buffer.samples()

    def batch(start, stop):
        ids = torch.arange(start, stop, dtype=torch.float32)
        return torch.stack([ids, -ids], dim=1)

    buffer.extend(batch(0, 3))
    assert len(buffer) == 3 and rows_of(buffer) == [0, 1, 2]
    buffer.extend(batch(3, 6))  # wraps: 5 overwrites 0
    assert len(buffer) == 5 and rows_of(buffer) == [1, 2, 3, 4, 5]
    buffer.extend(batch(6, 7))
    assert rows_of(buffer) == [2, 3, 4, 5, 6]
    buffer.extend(batch(7, 14))  # more than the capacity at once
    assert rows_of(buffer) == [9, 10, 11, 12, 13]
    buffer.extend(batch(14, 16))
    assert rows_of(buffer) == [11, 12, 13, 14, 15]
    # Rows stay intact (both columns of a row move together).
    samples = buffer.samples()
    assert torch.equal(samples[:, 1], -samples[:, 0])


def test_sample_buffer_matches_a_reference_fifo():
    rng = np.random.default_rng(0)
    capacity = 7
    buffer, reference, next_id = SampleBuffer(capacity), [], 0
    for _ in range(100):
        size = int(rng.integers(1, 12))
        ids = list(range(next_id, next_id + size))
        next_id += size
        buffer.extend(torch.tensor(ids, dtype=torch.float64)[:, None].repeat(1, 3))
        reference = (reference + ids)[-capacity:]
        assert rows_of(buffer) == sorted(reference)
        assert buffer.samples().dtype == torch.float64


def test_sample_buffer_misc():
    with pytest.raises(ValueError):
        SampleBuffer(0)
    buffer = SampleBuffer(4)
    buffer.extend(torch.arange(3.0))  # 1-D: one feature per sample
    assert buffer.samples().shape == (3, 1)
    images = SampleBuffer(3)
    images.extend(torch.zeros(2, 1, 4, 4))  # any sample shape
    assert images.samples().shape == (2, 1, 4, 4)
