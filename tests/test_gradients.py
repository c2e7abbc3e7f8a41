"""Gradient statistics captured by hooks, the ReLU with derivative 1 at 0, and ``T_grad``
(SPEC sections 3-4, paper eq. 6)."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sklearn_north.growth import (
    GradientRecorder,
    GradientTrigger,
    GradMaxInit,
    GrowthCallback,
    GrowthContext,
    NewNeurons,
    RandomInit,
    add_neurons,
    metrics,
    triggers,
)
from sklearn_north.nn import ACTIVATIONS
from sklearn_north.nn.activations import relu


def batch(n=40, n_features=6, n_classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n_features, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return X, y


def recorded_step(module, X, y):
    """One training forward/backward recorded by hooks; the snapshot of its statistics."""
    recorder = GradientRecorder().attach(module.growth_sites())
    module.train()
    module.zero_grad()
    F.cross_entropy(module(X), y).backward()
    snapshot = recorder.snapshot(module.growth_sites())
    recorder.detach()
    return snapshot


def auxiliary_gradient(module, X, y, index):
    """Brute force ``G``: the gradient of the loss with respect to an explicit all-zero
    ``Linear`` that bridges layer ``index``'s input to layer ``index + 1``'s
    pre-activation."""
    module = copy.deepcopy(module)
    act = ACTIVATIONS[module.activation]
    layers = module.layers
    aux = nn.Linear(layers[index].in_features, layers[index + 1].out_features, bias=False)
    nn.init.zeros_(aux.weight)
    h = X
    for i, layer in enumerate(layers):
        if i == index:
            bridged = h
        z = layer(h)
        if i == index + 1:
            z = z + aux(bridged)
        h = act(z) if i < len(layers) - 1 else z
    F.cross_entropy(h, y).backward()
    return aux.weight.grad


def eq6_trigger(**params):
    """``GradientTrigger`` with eq. 6's threshold (gradient norms at scale 1) unless
    ``params`` say otherwise; the package's default is the authors' (update norms, 0.5)."""
    return GradientTrigger(**{"norms": "gradients", "scale": 1.0, **params})


def direct_threshold(module, index, include_bias=True, reduction="sum"):
    """``sum_m ||dL/dw_m^in|| + ||dL/dw_m^out||`` (or the mean over ``m``) from the
    parameters' ``.grad``."""
    producer, consumer = module.layers[index], module.layers[index + 1]
    fan_in = producer.weight.grad.double()
    if include_bias:
        fan_in = torch.cat([fan_in, producer.bias.grad.double()[:, None]], dim=1)
    fan_out = consumer.weight.grad.double()
    per_neuron = fan_in.norm(dim=1) + fan_out.norm(dim=0)
    return float(per_neuron.sum() if reduction == "sum" else per_neuron.mean())


# --- G against an explicit auxiliary layer -----------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("index", [0, 1])
def test_G_is_the_gradient_of_an_explicit_zero_auxiliary_layer(make_mlp, activation, index):
    module = make_mlp(n_features=6, hidden=(5, 4), activation=activation, trained=True)
    X, y = batch()
    grads = recorded_step(module, X, y)[index]
    brute = auxiliary_gradient(module, X, y, index)

    layers = module.layers
    assert (
        grads.G.shape == brute.shape == (layers[index + 1].out_features, layers[index].in_features)
    )
    torch.testing.assert_close(grads.G, brute, rtol=1e-5, atol=1e-7)
    assert brute.abs().max() > 1e-3  # not trivially zero
    s_hooks = torch.linalg.svdvals(grads.G.double())
    s_brute = torch.linalg.svdvals(brute.double())
    torch.testing.assert_close(s_hooks, s_brute, rtol=1e-5, atol=1e-8)
    # The step's parameter gradients are those of the same backward pass.
    assert grads.weight_grad.data_ptr() == module.layers[index].weight.grad.data_ptr()
    torch.testing.assert_close(grads.fan_out_grad, module.layers[index + 1].weight.grad)


@pytest.mark.parametrize("index", [0, 1])
def test_gradmax_fan_out_is_the_top_left_singular_vectors_of_G(make_mlp, index):
    module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=4, trained=True)
    X, y = batch(n=50, n_features=8, n_classes=4)
    context = GrowthContext(module, gradients=recorded_step(module, X, y))
    site = module.growth_sites()[index]
    k = 3
    new = GradMaxInit()(index, site, k, context, torch.Generator().manual_seed(0))

    U, s, _ = np.linalg.svd(auxiliary_gradient(module, X, y, index).double().numpy())
    assert np.all(s[:k] > 1.05 * s[1 : k + 1])  # distinct: the directions are determined
    fan_out = torch.cat(new.fan_out).double().numpy()  # (n_out, k)
    cos = np.abs(np.sum(fan_out * U[:, :k], axis=0)) / np.linalg.norm(fan_out, axis=0)
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    # Zero fan-in and bias; fan-out rescaled to the mean fan-out norm of existing neurons.
    assert torch.all(new.fan_in == 0) and torch.all(new.bias == 0)
    w_out = module.layers[index + 1].weight.detach()
    np.testing.assert_allclose(
        np.linalg.norm(fan_out, axis=0), float(w_out.norm(dim=0).mean()), rtol=1e-5
    )
    # Sign convention: the entry of largest magnitude is positive.
    assert np.all(fan_out[np.abs(fan_out).argmax(axis=0), np.arange(k)] > 0)


# --- T_grad ------------------------------------------------------------------------------


def test_trigger_counts_singular_values_above_the_gradient_norm_sum(make_mlp):
    # Narrow layers (few neurons in the threshold's sum) so that some values are above.
    module = make_mlp(n_features=10, hidden=(3, 2), n_outputs=6, trained=0.5)
    counts = []
    for index in (0, 1):
        for seed in range(4):
            X, y = batch(n=64, n_features=10, n_classes=6, seed=seed)
            context = GrowthContext(module, gradients=recorded_step(module, X, y))
            G = auxiliary_gradient(module, X, y, index).double()
            s = np.linalg.svd(G.numpy(), compute_uv=False)
            base = direct_threshold(module, index)
            for scale in (1.0, 0.5, 0.15, 0.05):
                decision = eq6_trigger(scale=scale)(index, module.growth_sites()[index], context)
                assert decision.threshold == pytest.approx(scale * base, rel=1e-5)
                expected = int(np.sum(s > scale * base))
                assert decision.n_neurons == expected
                if expected:
                    assert decision.metric == pytest.approx(s[0], rel=1e-5)
                counts.append(expected)
    # The cases cover both sides of the threshold.
    assert min(counts) == 0 and max(counts) >= 2, counts


def test_trigger_skips_the_count_below_the_frobenius_bound(make_mlp, monkeypatch):
    # sigma_max(G) <= ||G||_F: with the threshold above ||G||_F nothing can fire, and the
    # Gram matrix is not formed; just above sigma_max it is formed and counts 0.
    module = make_mlp(n_features=10, hidden=(3, 6), n_outputs=6, trained=0.5)
    X, y = batch(n=64, n_features=10, n_classes=6)
    context = GrowthContext(module, gradients=recorded_step(module, X, y))
    site = module.growth_sites()[0]
    G = context.gradients(0).G.double()
    frobenius, sigma_max = float(G.norm()), float(torch.linalg.matrix_norm(G, ord=2))
    base = eq6_trigger().threshold(context.gradients(0))
    calls = []
    original = metrics.gram

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(metrics, "gram", counting)
    above = eq6_trigger(scale=1.01 * frobenius / base)(0, site, context)
    assert above.n_neurons == 0 and not calls
    between = eq6_trigger(scale=1.01 * sigma_max / base)(0, site, context)
    assert sigma_max < frobenius / 1.01  # a rank > 1 G: the two bounds differ
    assert between.n_neurons == 0 and len(calls) == 1
    below = eq6_trigger(scale=0.99 * sigma_max / base)(0, site, context)
    assert below.n_neurons >= 1 and len(calls) == 2
    # sigma_max, reported when the trigger fires, from the count's Gram: no second SVD.
    assert below.metric == pytest.approx(sigma_max, rel=1e-9)
    for method in ("eigh", "svd"):
        again = eq6_trigger(scale=0.99 * sigma_max / base, method=method)(0, site, context)
        assert again.n_neurons == below.n_neurons
        assert again.metric == pytest.approx(sigma_max, rel=1e-9)


def test_trigger_skips_G_below_a_bound_that_does_not_need_it(make_mlp, monkeypatch):
    # sigma_max(delta^T X) <= sigma_max(delta) ||X||_F and sigma_max(delta)^2 <= the largest
    # absolute row sum of delta^T delta: above that bound the step's G is never formed
    # (where the consumers are at most half as wide as the input: site 0 here, once G's
    # size no longer makes forming it the cheaper test).
    monkeypatch.setattr(triggers, "SMALL_G", 0)
    module = make_mlp(n_features=20, hidden=(4, 6), n_outputs=3, trained=0.5)
    for index in (0, 1):
        site = module.growth_sites()[index]
        for seed in range(4):
            X, y = batch(n=64, n_features=20, n_classes=3, seed=seed)
            grads = recorded_step(module, X, y)
            record = grads[index]
            bound = triggers._sigma_max_bound_without_G(record)
            delta, inputs = record.delta.double(), record.inputs.double()
            expected = float((delta.T @ delta).abs().sum(1).max().sqrt() * inputs.norm())
            assert bound == pytest.approx(expected, rel=1e-3)
            sigma_max = float(torch.linalg.matrix_norm(delta.T @ inputs, ord=2))
            assert sigma_max < bound
            base = eq6_trigger().threshold(record)
            above = eq6_trigger(scale=1.001 * bound / base)
            assert above(index, site, GrowthContext(module, gradients=grads)).n_neurons == 0
            # Site 1's consumers (3) are wider than half its input (4): G is formed anyway.
            assert (record._G is None) == (index == 0)
            eq6_trigger(scale=0.999 * bound / base)(
                index, site, GrowthContext(module, gradients=grads)
            )
            assert record._G is not None


def test_the_bound_uses_the_sample_gram_when_the_batch_is_smaller(make_mlp, monkeypatch):
    # n = 8 samples, 30 consumers: the bound's S is delta delta^T (8 x 8), whose non-zero
    # eigenvalues are delta^T delta's; G (30 x 100) is never formed above the bound.
    monkeypatch.setattr(triggers, "SMALL_G", 0)
    module = make_mlp(n_features=100, hidden=(40, 30), n_outputs=3, trained=0.5)
    site = module.growth_sites()[0]
    for seed in range(4):
        X, y = batch(n=8, n_features=100, n_classes=3, seed=seed)
        grads = recorded_step(module, X, y)
        record = grads[0]
        bound = triggers._sigma_max_bound_without_G(record)
        delta, inputs = record.delta.double(), record.inputs.double()
        expected = float((delta @ delta.T).abs().sum(1).max().sqrt() * inputs.norm())
        assert bound == pytest.approx(expected, rel=1e-3)
        assert float(torch.linalg.matrix_norm(delta.T @ inputs, ord=2)) < bound
        base = eq6_trigger().threshold(record)
        assert (
            eq6_trigger(scale=1.001 * bound / base)(
                0, site, GrowthContext(module, gradients=grads)
            ).n_neurons
            == 0
        )
        assert record._G is None and record._left_factor is None


def test_small_G_is_formed_without_the_bound_and_decides_the_same(make_mlp, monkeypatch):
    module = make_mlp(n_features=20, hidden=(4, 6), n_outputs=3, trained=0.5)
    site = module.growth_sites()[0]
    X, y = batch(n=64, n_features=20, n_classes=3)
    grads = recorded_step(module, X, y)
    record = grads[0]
    assert record.n_samples * record.delta.shape[1] * 20 <= triggers.SMALL_G
    base = eq6_trigger().threshold(record)
    bound = triggers._sigma_max_bound_without_G(record)
    scales = (2.0 * bound / base, 1e-3 * bound / base)  # ruled out by the bound; fires
    decisions = {}
    for small_g in (0, triggers.SMALL_G):
        monkeypatch.setattr(triggers, "SMALL_G", small_g)
        calls = []
        original = triggers._sigma_max_bound_without_G

        def counting(grads, original=original, calls=calls):
            calls.append(1)
            return original(grads)

        monkeypatch.setattr(triggers, "_sigma_max_bound_without_G", counting)
        for scale in scales:
            context = GrowthContext(module, gradients=recorded_step(module, X, y))
            decisions[small_g, scale] = eq6_trigger(scale=scale)(0, site, context).n_neurons
        monkeypatch.setattr(triggers, "_sigma_max_bound_without_G", original)
        # The bound is only consulted where G is large enough to be worth avoiding.
        assert bool(calls) == (small_g == 0)
    assert decisions[0, scales[0]] == decisions[triggers.SMALL_G, scales[0]] == 0
    assert decisions[0, scales[1]] == decisions[triggers.SMALL_G, scales[1]] >= 1


def bound_trials(make_mlp, monkeypatch):
    """A site where T_grad tries its bound (``SMALL_G`` 0); ``unit``, the eq. 6 scale at
    which the threshold equals the bound; and ``evaluate(trigger)``, one evaluation on a
    fresh recorded step, returning ``(n_neurons, whether the bound was tried)``."""
    monkeypatch.setattr(triggers, "SMALL_G", 0)
    module = make_mlp(n_features=20, hidden=(4, 6), n_outputs=3, trained=0.5)
    site = module.growth_sites()[0]
    X, y = batch(n=64, n_features=20, n_classes=3)
    record = recorded_step(module, X, y)[0]
    original = triggers._sigma_max_bound_without_G
    unit = original(record) / eq6_trigger().threshold(record)
    calls = []

    def counting(grads):
        calls.append(1)
        return original(grads)

    monkeypatch.setattr(triggers, "_sigma_max_bound_without_G", counting)

    def evaluate(trigger):
        before = len(calls)
        context = GrowthContext(module, gradients=recorded_step(module, X, y))
        return trigger(0, site, context).n_neurons, len(calls) > before

    return unit, evaluate


def test_a_bound_that_rules_nothing_out_is_tried_ever_less_often(make_mlp, monkeypatch):
    # After a try that rules nothing out the site skips the bound for 1, 2, 4, ... steps;
    # a try that rules the step out resets that. The decisions are those of the count.
    unit, evaluate = bound_trials(make_mlp, monkeypatch)
    low, high = 1e-3 * unit, 2.0 * unit  # fires; ruled out by the bound
    trigger = eq6_trigger(scale=low)
    scales = [low] * 5 + [high] * 2 + [low] * 14
    decisions, tries = [], []
    for step, scale in enumerate(scales):
        trigger.scale = scale
        n_neurons, tried = evaluate(trigger)
        decisions.append(n_neurons)
        if tried:
            tries.append(step)
    # low: tried at 0, skips 1, tried at 2, skips 2; high: tried at 5 (rules out: reset)
    # and 6; low again: tried at 7, skips 1, 2, 4, tried at 9, 12 and 17.
    assert tries == [0, 2, 5, 6, 7, 9, 12, 17]
    monkeypatch.setattr(triggers, "SMALL_G", 1 << 40)  # the count alone
    assert [evaluate(eq6_trigger(scale=scale)) for scale in scales] == [
        (decided, False) for decided in decisions
    ]
    assert decisions[5:7] == [0, 0] and min(decisions[:5] + decisions[7:]) >= 1


def test_the_bound_skips_no_more_than_the_cap_and_reset_forgets_them(make_mlp, monkeypatch):
    monkeypatch.setattr(triggers, "BOUND_MAX_SKIP", 2)
    unit, evaluate = bound_trials(make_mlp, monkeypatch)
    trigger = eq6_trigger(scale=1e-3 * unit)
    tries = [step for step in range(12) if evaluate(trigger)[1]]
    # Skips of 1, then 2, 2, ... (the cap), never 4.
    assert tries == [0, 2, 5, 8, 11]
    assert trigger.bound_skips_ == {0: (2, 2)}
    trigger.reset()  # a new fit starts without skips
    assert trigger.bound_skips_ == {}
    assert evaluate(trigger)[1]


def test_scale_halves_the_threshold_and_bias_is_part_of_the_fan_in(make_mlp):
    module = make_mlp(trained=True)
    X, y = batch()
    context = GrowthContext(module, gradients=recorded_step(module, X, y))
    site = module.growth_sites()[0]
    full = eq6_trigger()(0, site, context).threshold
    half = eq6_trigger(scale=0.5)(0, site, context).threshold
    assert half == pytest.approx(full / 2, rel=1e-12)
    assert full == pytest.approx(direct_threshold(module, 0), rel=1e-5)
    no_bias = eq6_trigger(include_bias=False)(0, site, context).threshold
    assert no_bias == pytest.approx(direct_threshold(module, 0, include_bias=False), rel=1e-5)
    assert no_bias < full


@pytest.mark.parametrize("index", [0, 1])
def test_mean_reduction_is_the_per_neuron_mean_of_the_norms(make_mlp, index):
    module = make_mlp(hidden=(5, 3), trained=True)
    X, y = batch()
    context = GrowthContext(module, gradients=recorded_step(module, X, y))
    site = module.growth_sites()[index]
    for scale in (1.0, 0.37):
        mean = eq6_trigger(scale=scale, reduction="mean")(index, site, context).threshold
        expected = scale * direct_threshold(module, index, reduction="mean")
        assert mean == pytest.approx(expected, rel=1e-5)
        total = eq6_trigger(scale=scale)(index, site, context).threshold
        assert total == pytest.approx(site.width * mean, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        GradientTrigger(reduction="max").threshold(context.gradients(index))


def test_flags_and_registries():
    from sklearn_north.growth import INITIALIZERS, STRATEGIES, TRIGGERS, make_strategy
    from sklearn_north.growth.initializers import Initializer
    from sklearn_north.growth.triggers import ActivationTrigger, Trigger

    assert TRIGGERS["gradient"] is GradientTrigger
    assert GradientTrigger.needs_gradients and not GradientTrigger.needs_activations
    assert not Trigger.needs_gradients and not ActivationTrigger.needs_gradients
    assert not Initializer.needs_gradients
    for name in ("gradmax", "firefly", "nest"):
        assert STRATEGIES[name] == ("gradient", name)
        assert INITIALIZERS[name].needs_gradients
        # The estimator's gamma/epsilon do not apply to T_grad (it has no such parameter).
        trigger, initializer = make_strategy(name, gamma=0.5, epsilon=0.02, n_candidates=7)
        assert isinstance(trigger, GradientTrigger)
        # The authors' threshold (the paper's figures): half the sum of update norms.
        assert (trigger.scale, trigger.norms, trigger.reduction) == (0.5, "updates", "sum")
        assert isinstance(initializer, INITIALIZERS[name])
    assert INITIALIZERS["gradmax"].function_preserving
    assert not INITIALIZERS["firefly"].function_preserving  # up to its noise
    assert not INITIALIZERS["nest"].function_preserving


# --- the recorder --------------------------------------------------------------------------


def test_only_training_steps_are_recorded(make_mlp):
    module = make_mlp()
    recorder = GradientRecorder().attach(module.growth_sites())
    X, y = batch()
    module.train()
    module.zero_grad()
    F.cross_entropy(module(X), y).backward()
    other = torch.randn(len(X), 6)  # same size: only the recording rules tell them apart
    module.eval()
    with torch.no_grad():
        module(other)  # prediction
    module.train()
    with torch.no_grad():
        module.site_activations(other)  # the sample buffer's statistics
    module(other)  # a training-mode forward without backward: no delta
    snapshot = recorder.snapshot(module.growth_sites())
    assert 0 not in snapshot and 1 not in snapshot  # inputs and deltas no longer match
    F.cross_entropy(module(X), y).backward()
    snapshot = recorder.snapshot(module.growth_sites())
    assert torch.equal(snapshot[0].inputs, X)
    # A snapshot hands the step over: the next one has nothing until the next step.
    with pytest.raises(RuntimeError, match="training steps"):
        recorder.snapshot(module.growth_sites())[0]
    recorder.detach()
    assert recorder.n_hooks == 0
    assert all(not m._forward_hooks for m in module.modules())


def test_a_module_pickled_with_hooks_attached_carries_no_statistics(make_mlp):
    # E.g. a net pickled by a callback during training: the hooks go along, inert.
    module = make_mlp()
    recorder = GradientRecorder().attach(module.growth_sites())
    X, y = batch()
    F.cross_entropy(module(X), y).backward()
    loaded = pickle.loads(pickle.dumps(module))
    loaded_recorder = next(iter(loaded.layers[0]._forward_hooks.values())).func.__self__
    assert loaded_recorder is not recorder
    assert not loaded_recorder.active and loaded_recorder.n_hooks == 0
    assert loaded_recorder._inputs == {} and loaded_recorder._deltas == {}
    F.cross_entropy(loaded(X), y).backward()  # trains as usual, records nothing
    assert loaded_recorder._inputs == {} and loaded_recorder._deltas == {}
    recorder.detach()


def test_snapshot_follows_growth_of_an_upstream_site(make_mlp):
    # RandomInit: non-zero fan-in, zero fan-out: function-preserving with non-zero new
    # activations, so the extended statistics must equal a fresh recording exactly.
    module = make_mlp(n_features=6, hidden=(5, 4), trained=True)
    X, y = batch()
    snapshot = recorded_step(module, X, y)
    context = GrowthContext(module, gradients=snapshot)
    site = module.growth_sites()[0]
    new = RandomInit()(0, site, 3, context, torch.Generator().manual_seed(0))
    add_neurons(site, new)
    context.site_grew(0, new)
    with pytest.raises(RuntimeError, match="out of date"):
        context.gradients(0)
    fresh = recorded_step(module, X, y)[1]
    extended = context.gradients(1)
    assert extended.inputs.shape == (len(X), 8)
    torch.testing.assert_close(extended.inputs, fresh.inputs)
    torch.testing.assert_close(extended.weight_grad, fresh.weight_grad)
    torch.testing.assert_close(extended.G, fresh.G)
    assert extended.weight_grad[:, 5:].abs().max() > 0
    # The trigger reads it without complaint.
    eq6_trigger()(1, module.growth_sites()[1], context)


# --- ReLU with derivative 1 at 0 ---------------------------------------------------------


def test_relu_forward_and_backward():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], requires_grad=True)
    y = relu(x)
    assert torch.equal(y, torch.relu(x.detach()))
    y.backward(torch.full_like(x, 2.0))
    assert torch.equal(x.grad, torch.tensor([0.0, 2.0, 2.0, 2.0, 2.0]))


def test_mlp_relu_is_the_one_with_gradient_at_zero():
    assert ACTIVATIONS["relu"] is relu


def _zero_fan_in_step(make_mlp):
    """Grow a zero-fan-in neuron with non-zero fan-out into hidden layer 0, take one Adam
    step; return the new neuron's fan-in gradient and its fan-in after the step."""
    module = make_mlp(n_features=6, hidden=(5, 4), trained=True)
    site = module.growth_sites()[0]
    g = torch.Generator().manual_seed(0)
    fan_out = torch.randn(4, 1, generator=g)
    add_neurons(site, NewNeurons(fan_in=torch.zeros(1, 6), bias=torch.zeros(1), fan_out=[fan_out]))
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    X, y = batch()
    optimizer.zero_grad()
    F.cross_entropy(module(X), y).backward()
    grad = module.layers[0].weight.grad[-1].clone()
    optimizer.step()
    return grad, module.layers[0].weight.detach()[-1]


def test_zero_fan_in_neuron_learns_with_the_package_relu(make_mlp, monkeypatch):
    grad, fan_in = _zero_fan_in_step(make_mlp)
    assert grad.abs().max() > 1e-4
    assert fan_in.abs().max() > 1e-3  # it moved on the next step
    # With torch.relu (derivative 0 at 0) it would never learn.
    monkeypatch.setitem(ACTIVATIONS, "relu", torch.relu)
    grad, fan_in = _zero_fan_in_step(make_mlp)
    assert torch.all(grad == 0) and torch.all(fan_in == 0)


# --- in the callback ---------------------------------------------------------------------


class SpyTrigger(GradientTrigger):
    """``T_grad`` that keeps what it saw (the batch's inputs and the step's gradients)."""

    def reset(self):
        super().reset()
        self.seen_ = []
        return self

    def __call__(self, index, site, context):
        grads = context.gradients(index)
        if index == 0:
            self.seen_.append(
                (
                    grads.inputs.clone(),
                    grads.weight_grad.clone(),
                    site.producer.weight.grad.clone(),
                )
            )
        return super().__call__(index, site, context)


@pytest.fixture
def data():
    g = np.random.default_rng(0)
    X = g.normal(size=(96, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    return X, y


def test_callback_uses_the_current_steps_batch_and_gradients(data, make_growth_net):
    X, y = data
    net = make_growth_net(
        GrowthCallback(SpyTrigger(scale=1e6, norms="gradients"), GradMaxInit(), random_state=0),
        hidden=(2, 2),
        max_hidden=(6, 6),
        max_epochs=1,
    )  # never fires
    net.fit(X, y)
    seen = dict(net.callbacks_)["growth"].trigger_.seen_
    assert len(seen) == 6  # one evaluation per step
    for step, (inputs, weight_grad, param_grad) in enumerate(seen):
        np.testing.assert_array_equal(inputs.numpy(), X[16 * step : 16 * (step + 1)])
        assert torch.equal(weight_grad, param_grad)  # the step's .grad, not a later one


def test_hooks_live_only_during_training_and_are_never_pickled(data, make_growth_net):
    X, y = data
    net = make_growth_net(
        GrowthCallback(GradientTrigger(scale=0.1), GradMaxInit(), random_state=0),
        hidden=(2, 2),
        max_hidden=(6, 6),
    )
    net.initialize()
    cb = dict(net.callbacks_)["growth"]
    cb.on_train_begin(net, X=X, y=y)
    # One hook on each producer or consumer: layers 0 (a producer), 1 (both) and 2.
    assert cb._recorder.n_hooks == 3
    assert [len(m._forward_hooks) for m in net.module_.layers] == [1, 1, 1]
    assert b"GradientRecorder" not in pickle.dumps(cb)
    cb.on_train_end(net)
    assert all(not m._forward_hooks for m in net.module_.modules())

    net.fit(X, y)
    assert dict(net.callbacks_)["growth"].events_  # it grew
    assert all(not m._forward_hooks for m in net.module_.modules())
    assert b"GradientRecorder" not in pickle.dumps(net)


# --- the reference code's threshold: norms of the optimizer step ------------------------


def optimizer_step_snapshot(module, X, y, optimizer):
    """One recorded training step *with* its optimizer step; the snapshot (with updates)."""
    recorder = GradientRecorder(keep_updates=True).attach(module.growth_sites())
    module.train()
    optimizer.zero_grad()
    F.cross_entropy(module(X), y).backward()
    optimizer.step()
    snapshot = recorder.snapshot(module.growth_sites())
    recorder.detach()
    return snapshot


def test_recorder_keeps_what_the_optimizer_step_changed(make_mlp):
    module = make_mlp(hidden=(5, 4), trained=True)
    X, y = batch()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    snapshot = optimizer_step_snapshot(module, X, y, optimizer)
    for index in (0, 1):
        record = snapshot[index]
        producer, consumer = f"layers.{index}", f"layers.{index + 1}"
        delta_w = module.get_parameter(f"{producer}.weight") - before[f"{producer}.weight"]
        delta_b = module.get_parameter(f"{producer}.bias") - before[f"{producer}.bias"]
        delta_out = module.get_parameter(f"{consumer}.weight") - before[f"{consumer}.weight"]
        assert torch.equal(record.weight_update, delta_w)
        assert torch.equal(record.bias_update, delta_b)
        assert torch.equal(record.fan_out_update, delta_out)
        # An Adam step is about lr per entry, nothing like the gradient.
        assert not torch.allclose(record.weight_update.abs(), record.weight_grad.abs())
    # Without keep_updates nothing is copied, and asking for update norms is an error.
    plain = recorded_step(module, X, y)
    assert plain[0].weight_update is None
    with pytest.raises(RuntimeError, match="keep_updates"):
        GradientTrigger(norms="updates").threshold(plain[0])


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_update_norms_threshold(make_mlp, scale):
    module = make_mlp(hidden=(5, 4), trained=True)
    X, y = batch()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    record = optimizer_step_snapshot(module, X, y, optimizer)[0]
    # Plain SGD: the step is -lr * gradient, so the update threshold is lr times the
    # gradient threshold.
    by_updates = GradientTrigger(scale=scale, norms="updates").threshold(record)
    by_gradients = eq6_trigger(scale=scale).threshold(record)
    assert by_updates == pytest.approx(0.1 * by_gradients, rel=1e-5)
    assert GradientTrigger().needs_updates  # the default
    assert not GradientTrigger(norms="gradients").needs_updates
    with pytest.raises(ValueError, match="norms"):
        GradientTrigger(norms="steps").threshold(record)


def test_update_norms_make_the_trigger_fire_where_gradients_do_not(make_mlp):
    # With Adam at a small learning rate the updates are far smaller than the gradients
    # summed over the layer, so the reference threshold is much lower.
    X, y = batch(n=200, n_features=12, n_classes=4)
    counts = {}
    for norms in ("gradients", "updates"):
        module = make_mlp(n_features=12, hidden=(32, 32), n_outputs=4, seed=3)
        optimizer = torch.optim.Adam(module.parameters(), lr=3e-4)
        snapshot = optimizer_step_snapshot(module, X, y, optimizer)
        context = GrowthContext(module, gradients=snapshot)
        trigger = GradientTrigger(scale=0.5, norms=norms)
        counts[norms] = trigger(0, module.growth_sites()[0], context).n_neurons
    assert counts["gradients"] == 0
    assert counts["updates"] > 0


def test_default_gradient_strategies_grow_where_eq6_does_not():
    from sklearn.datasets import load_digits

    from sklearn_north import GrowingMLPClassifier

    X, y = load_digits(return_X_y=True)
    X, y = X[:400] / 16, y[:400]
    params = dict(hidden_layer_sizes=(32, 32), max_hidden_layer_sizes=64, max_epochs=2,
                  random_state=0)  # fmt: skip
    eq6 = GrowingMLPClassifier(strategy=(eq6_trigger(), GradMaxInit()), **params).fit(X, y)
    default = GrowingMLPClassifier(strategy="gradmax", **params).fit(X, y)
    assert eq6.hidden_layer_sizes_ == (32, 32)
    assert all(w > 32 for w in default.hidden_layer_sizes_)
    trigger = dict(default.net_.callbacks_)["growth"].trigger_
    assert (trigger.norms, trigger.scale) == ("updates", 0.5)


# --- G's left factor: fewer columns than G when the batch is small ------------------------


def _small_batch_case(make_mlp):
    """A batch of 8 samples through a 30-input, 25-20 network: ``G`` of site 0 is 20 x 30
    with rank <= 8, so its left factor needs 8 columns."""
    module = make_mlp(n_features=30, hidden=(25, 20), n_outputs=4, trained=0.5)
    X, y = batch(n=8, n_features=30, n_classes=4, seed=3)
    return module, X, y


def test_left_factor_keeps_G_s_spectrum_and_left_vectors_in_a_batch_s_columns(make_mlp):
    module, X, y = _small_batch_case(make_mlp)
    grads = recorded_step(module, X, y)[0]
    G = auxiliary_gradient(module, X, y, 0).double()
    C = grads.left_factor
    assert C.dtype == torch.float64 and C.shape == (20, 8)
    torch.testing.assert_close(C @ C.T, G @ G.T, rtol=1e-5, atol=1e-9)
    s_C, s_G = torch.linalg.svdvals(C), torch.linalg.svdvals(G)
    torch.testing.assert_close(s_C, s_G[:8], rtol=1e-5, atol=1e-9)
    assert torch.all(s_G[8:] < 1e-5 * s_G[0])  # G's rank is the batch's
    # Where the batch is not smaller than G's shorter side the factor is G itself.
    wide = recorded_step(module, *batch(n=40, n_features=30, n_classes=4))[0]
    assert wide.left_factor is wide.G


def test_left_factor_falls_back_to_a_qr_where_the_batch_gram_is_singular(make_mlp, monkeypatch):
    module, X, y = _small_batch_case(make_mlp)
    X[3] = 0.0  # an all-zero sample: X X^T has a zero row, no Cholesky factor
    qr_calls = []
    qr = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda *a, **k: qr_calls.append(1) or qr(*a, **k))
    grads = recorded_step(module, X, y)[0]
    G = auxiliary_gradient(module, X, y, 0).double()
    C = grads.left_factor
    assert qr_calls and C.shape == (20, 8)
    torch.testing.assert_close(C @ C.T, G @ G.T, rtol=1e-5, atol=1e-9)
    # A regular batch takes the Cholesky factor.
    qr_calls.clear()
    grads = recorded_step(module, *_small_batch_case(make_mlp)[1:])[0]
    assert grads.left_factor.shape == (20, 8) and not qr_calls


def test_gradmax_and_trigger_on_the_left_factor_match_G_s_svd(make_mlp):
    module, X, y = _small_batch_case(make_mlp)
    context = GrowthContext(module, gradients=recorded_step(module, X, y))
    site = module.growth_sites()[0]
    U, s, _ = np.linalg.svd(auxiliary_gradient(module, X, y, 0).double().numpy())
    k = 3
    assert np.all(s[:k] > 1.05 * s[1 : k + 1])
    new = GradMaxInit()(0, site, k, context, torch.Generator().manual_seed(0))
    fan_out = torch.cat(new.fan_out).double().numpy()
    cos = np.abs(np.sum(fan_out * U[:, :k], axis=0)) / np.linalg.norm(fan_out, axis=0)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)
    counts = _trigger_counts_are_svds(context, site, s, (1.01, 0.99, 0.5, 0.2, 0.05), 1e-6)
    assert counts[0] == 0 and counts[1] == 1 and max(counts) >= 3, counts


def _trigger_counts_are_svds(context, site, s, fractions, rel):
    """GradientTrigger's decisions on site 0 with its threshold at each fraction of
    ``s[0]``, ``s`` the singular values of G: the count is theirs above the threshold,
    the metric ``s[0]`` where it fires. Returns the counts."""
    counts = []
    for fraction in fractions:
        trigger = GradientTrigger(norms="gradients")
        trigger.scale = fraction * s[0] / (trigger.threshold(context.gradients(0)) / 0.5)
        decision = trigger(0, site, context)
        assert decision.n_neurons == int(np.sum(s > decision.threshold))
        if decision.n_neurons:
            assert decision.metric == pytest.approx(s[0], rel=rel)
        counts.append(decision.n_neurons)
    return counts


def test_the_trigger_counts_on_G_where_its_left_factor_costs_more(make_mlp):
    # 19 samples against G's 20 x 30: a batch barely narrower than G, whose left factor
    # (X X^T and delta^T L in float64) costs more than G. The trigger reads G's own
    # spectrum and never forms the factor; its counts are G's singular values'.
    from sklearn_north.growth.triggers import _left_factor_pays

    module = make_mlp(n_features=30, hidden=(25, 20), n_outputs=4, trained=0.5)
    X, y = batch(n=19, n_features=30, n_classes=4, seed=3)
    context = GrowthContext(module, gradients=recorded_step(module, X, y))
    site = module.growth_sites()[0]
    assert not _left_factor_pays(19, 20, 30) and _left_factor_pays(8, 20, 30)
    s = np.linalg.svd(auxiliary_gradient(module, X, y, 0).double().numpy(), compute_uv=False)
    counts = _trigger_counts_are_svds(context, site, s, (1.01, 0.99, 0.5, 0.2), 1e-5)
    assert counts[0] == 0 and counts[1] == 1 and counts[-1] >= 3, counts
    assert context.gradients(0)._left_factor is None


def test_left_factor_pays_where_the_batch_is_far_below_G_s_shorter_side():
    from sklearn_north.growth.triggers import _left_factor_pays

    # Never where the batch is not below G's shorter side (the factor is G itself).
    assert not any(_left_factor_pays(n, 300, 784) for n in (300, 512, 1000))
    assert not _left_factor_pays(128, 100, 784)
    # MNIST's first layer at batch 128 (measured: 1.3 ms against 3.4 with the count),
    # and at batch 512 with a 719-wide consumer (measured: 14 ms against 4 to form).
    assert _left_factor_pays(128, 385, 784) and _left_factor_pays(128, 640, 640)
    assert not _left_factor_pays(512, 719, 784)
    # Wider G, same batch: the factor pays sooner.
    assert [_left_factor_pays(256, w, 784) for w in (300, 640)] == [False, True]


def test_a_gradmax_fit_grows_the_same_on_the_left_factor_as_on_G(monkeypatch):
    from sklearn_north import GrowingMLPClassifier
    from sklearn_north.growth.gradients import SiteGradients

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 60)).astype(np.float32)
    y = (X[:, :5].sum(axis=1) > 0).astype(int) + 2 * (X[:, 5] > 0)
    params = dict(strategy="gradmax", hidden_layer_sizes=(24, 24), max_hidden_layer_sizes=80,
                  batch_size=16, max_epochs=3, random_state=0)  # fmt: skip
    reduced = GrowingMLPClassifier(**params).fit(X, y)
    monkeypatch.setattr(SiteGradients, "left_factor", property(lambda g: g.G))
    plain = GrowingMLPClassifier(**params).fit(X, y)
    columns = ["step", "layer", "n_added"]
    assert len(reduced.growth_history_) > 10
    assert reduced.growth_history_[columns].equals(plain.growth_history_[columns])
    np.testing.assert_allclose(
        reduced.growth_history_["metric"], plain.growth_history_["metric"], rtol=1e-4
    )
    assert reduced.hidden_layer_sizes_[0] > 24 + 16  # grown past the batch size
    np.testing.assert_allclose(
        reduced.predict_proba(X), plain.predict_proba(X), rtol=1e-4, atol=1e-5
    )
