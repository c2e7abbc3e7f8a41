"""Fast mode: the ActivationRecorder keeps what the training forward computed."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import GrowthSite, NewNeurons, activations, add_neurons, metrics
from sklearn_north.growth.activations import MAX_SEGMENTS, ActivationRecorder, _PostGramRing
from sklearn_north.growth.context import GrowthContext, SiteActivations


def train_forward(module, X):
    """A forward pass as training runs it (train mode, gradients on)."""
    module.train()
    with torch.enable_grad():
        return module(X)


def test_records_training_forwards_only(make_mlp, inputs):
    module = make_mlp()
    recorder = ActivationRecorder(capacity=20).attach(module.growth_sites())
    X = inputs(8)
    with torch.no_grad():
        module(X)  # e.g. the buffer's forward pass or predict: not training
    module.eval()
    with torch.enable_grad():
        module(X)
    assert recorder._pre[0].size == 0
    train_forward(module, X)
    acts = recorder.site_activations()
    expected = module.site_activations(X)
    for got, want in zip(acts, expected):
        torch.testing.assert_close(got.inputs, want.inputs)
        torch.testing.assert_close(got.pre, want.pre)
        torch.testing.assert_close(got.post, want.post)
    recorder.detach()
    train_forward(module, inputs(4, seed=3))
    assert recorder._pre[0].size == 8  # no hooks left


def test_ring_keeps_the_most_recent_rows(make_mlp, inputs):
    module = make_mlp()
    recorder = ActivationRecorder(capacity=10).attach(module.growth_sites())
    batches = [inputs(4, seed=s) for s in range(4)]  # 16 rows through a ring of 10
    for X in batches:
        train_forward(module, X)
    kept = recorder.site_activations()[0].inputs
    assert kept.shape == (10, 6)
    recent = torch.cat(batches)[-10:]
    # Same rows (the order in the ring is irrelevant to every statistic).
    assert sorted(map(tuple, kept.tolist())) == sorted(map(tuple, recent.tolist()))
    assert metrics.gram(kept).allclose(metrics.gram(recent))


def test_growth_appends_exact_columns(make_mlp, inputs):
    module = make_mlp(trained=True)
    sites = module.growth_sites()
    recorder = ActivationRecorder(capacity=12).attach(sites)
    X = inputs(12)
    train_forward(module, X)
    generator = torch.Generator().manual_seed(5)
    new = NewNeurons(
        fan_in=torch.randn(2, 6, generator=generator), bias=torch.randn(2, generator=generator)
    )
    add_neurons(sites[0], new)  # zero fan-out: the function is unchanged
    recorder.site_grew(0, module.growth_sites(), new)
    # The weights did not change since the rows were recorded: the kept statistics equal a
    # fresh forward pass of the same samples through the grown network.
    fresh = module.site_activations(X)
    for got, want in zip(recorder.site_activations(), fresh):
        torch.testing.assert_close(got.inputs, want.inputs)
        torch.testing.assert_close(got.pre, want.pre)
    # The next training forward pushes rows of the new widths into the same rings.
    train_forward(module, inputs(3, seed=9))
    assert recorder.site_activations()[1].inputs.shape == (12, 7)


def test_context_reads_the_recorder(make_mlp, inputs):
    module = make_mlp()
    recorder = ActivationRecorder(capacity=16).attach(module.growth_sites())
    X = inputs(16)
    train_forward(module, X)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)  # the "optimizer step": the recorded rows are now stale
    context = GrowthContext(module, samples=None, recorder=recorder)
    stale = module.site_activations(X)  # what a buffer forward would see now
    assert not torch.allclose(context.activations(0).pre, stale[0].pre)
    recorded = context.activations(1).post
    torch.testing.assert_close(context.post_gram(1), metrics.gram(recorded))


def test_rejects_conv_sites():
    site = GrowthSite("conv", torch.nn.Conv2d(3, 4, 3), [], torch.relu)
    with pytest.raises(NotImplementedError, match="dense"):
        ActivationRecorder(4).attach([site])
    with pytest.raises(ValueError, match="capacity"):
        ActivationRecorder(0)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=300, n_features=12, n_informative=8, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


@pytest.mark.parametrize("strategy", ["north-select", "north-pre", "north-random"])
def test_fast_mode_estimator(data, strategy):
    X, y = data
    params = dict(
        strategy=strategy,
        hidden_layer_sizes=(4, 4),
        max_hidden_layer_sizes=(24, 24),
        trigger_rounding="floor_threshold",
        batch_size=32,
        max_epochs=3,
        random_state=0,
    )
    fast = GrowingMLPClassifier(activation_source="training", **params).fit(X, y)
    again = clone(fast).fit(X, y)
    assert fast.hidden_layer_sizes_ == again.hidden_layer_sizes_
    np.testing.assert_array_equal(fast.predict_proba(X), again.predict_proba(X))
    assert sum(fast.hidden_layer_sizes_) > 8  # it grew
    # The hooks are gone after fit: prediction does not touch the rings.
    growth = dict(fast.net_.callbacks_)["growth"]
    assert "_activation_recorder" not in growth.__dict__
    restored = pickle.loads(pickle.dumps(fast))
    np.testing.assert_array_equal(restored.predict(X), fast.predict(X))
    # Training continues in fast mode after unpickling (a new recorder from the buffer).
    restored.partial_fit(X, y)
    assert restored.n_iter_ == fast.n_iter_ + 1


def test_fast_mode_rejects_unknown_source(data):
    X, y = data
    with pytest.raises(ValueError, match="activation_source"):
        GrowingMLPClassifier(activation_source="batch").fit(X, y)


def test_post_activations_are_computed_once_and_only_when_read():
    calls = []

    def activation(pre):
        calls.append(1)
        return pre.clamp_min(0)

    pre = torch.tensor([[-1.0, 2.0]])
    acts = SiteActivations(inputs=None, pre=pre, activation=activation)
    assert not calls
    assert acts.post is acts.post and len(calls) == 1
    torch.testing.assert_close(acts.post, torch.tensor([[0.0, 2.0]]))
    with pytest.raises(ValueError, match="post or activation"):
        SiteActivations(inputs=None, pre=pre)


def test_a_site_at_its_maximum_stops_recording(make_mlp, inputs):
    module = make_mlp()
    sites = module.growth_sites()
    sites[0].max_width = sites[0].width  # full: never evaluated nor grown again
    recorder = ActivationRecorder(capacity=8).attach(sites)
    with torch.no_grad():
        recorder.fill(module.site_activations(inputs(8, seed=5)))  # as the callback does
    before = recorder.site_activations()[0].pre.clone()
    X = inputs(8)
    train_forward(module, X)
    torch.testing.assert_close(recorder.site_activations()[0].pre, before)  # not recorded
    # The site reading it keeps its own inputs: its statistics are those of X.
    expected = module.site_activations(X)[1]
    got = recorder.site_activations()[1]
    torch.testing.assert_close(got.inputs, expected.inputs)
    torch.testing.assert_close(got.post, expected.post)


# --- the post-activation Gram kept by the rings -------------------------------------------


@pytest.mark.parametrize("max_segments", [2, MAX_SEGMENTS])
def test_ring_gram_equals_a_fresh_gram_after_any_writes(monkeypatch, max_segments):
    # Two segments: merges join rows across the write head, so a write lands inside one.
    monkeypatch.setattr(activations, "MAX_SEGMENTS", max_segments)
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    capacity, width = 23, 5
    ring = _PostGramRing(capacity, torch.relu)
    for step in range(150):
        if step == 100:
            width += 2  # rows of another width (surgery outside the callback): start again
        size = int(rng.choice([1, 2, 3, 7, 8, 30]))
        ring.extend(torch.randn(size, width, generator=generator))
        if step % 17 == 16:
            # A grown site: a new column for every kept row.
            ring.append_columns(torch.randn(ring.size, 1, generator=generator))
            width += 1
        expected = metrics.gram(torch.relu(ring.samples()))
        torch.testing.assert_close(ring.post_gram(), expected, rtol=1e-12, atol=1e-12)
        # The segments are disjoint, cover the kept rows and stay few.
        spans = sorted((a, b) for a, b, _ in ring._segments)
        assert [a for a, _ in spans] == [0, *(b for _, b in spans[:-1])]
        assert spans[-1][1] == ring.size and len(spans) <= max_segments


def test_ring_gram_forms_only_the_rows_written_since(monkeypatch):
    # The MNIST protocol's shape, scaled down: 1568 = 3 * 512 + 32 rows, batches of 512.
    capacity, batch = 3 * 16 + 4, 16
    formed = []
    gram = metrics.gram

    def counting_gram(A):
        formed.append(A.shape[0])
        return gram(A)

    monkeypatch.setattr(metrics, "gram", counting_gram)
    ring = _PostGramRing(capacity, torch.relu)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        formed.clear()
        ring.extend(torch.randn(batch, 6, generator=generator))
        ring.post_gram()
        # This batch's rows, and what is left of the segment it overwrote in part.
        assert sum(formed) <= batch + capacity % batch
    assert ring.size == capacity
