"""The CNN's ``activation_source="training"``: the metric on the current mini-batch's
activations as the training forward computed them (the authors' CNN protocol)."""

import copy
import pickle

import pytest
import torch
from sklearn.datasets import load_digits

from sklearn_north import GrowingCNNClassifier
from sklearn_north.growth import GrowthCallback, RandomInit, SelectInit
from sklearn_north.growth.context import GrowthContext
from sklearn_north.growth.sites import add_neurons
from sklearn_north.nn import GrowableCNN


def make_cnn(batch_norm=False):
    torch.manual_seed(0)
    return GrowableCNN((2, 8, 8), (4, 6), (True, True), (10,), 5, batch_norm=batch_norm)


def images(n=16, seed=1):
    return torch.randn(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


def training_forward(module, X):
    module.train()
    module(X).sum().backward()


def assert_same_activations(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a.inputs, b.inputs)
        torch.testing.assert_close(a.pre, b.pre)
        torch.testing.assert_close(a.post, b.post)


def test_the_training_forward_keeps_the_batchs_activations():
    module = make_cnn()
    module.record_activations = True
    X = images()
    training_forward(module, X)
    # Without BatchNorm, train and eval mode compute the same activations.
    assert_same_activations(module.recorded_site_activations(), module.site_activations(X))


def test_with_batch_norm_the_recorded_batch_is_normalised_by_its_own_statistics():
    module = make_cnn(batch_norm=True)
    module.record_activations = True
    X = images() * 3 + 2
    training_forward(module, X)
    pre = module.recorded_site_activations()[0].pre  # rows (N * H * W, C), after BN
    # Train-mode BN with weight 1 and bias 0: zero mean, unit (biased) variance per channel.
    torch.testing.assert_close(pre.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(pre.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    # Eval mode reads the running statistics instead: not what was recorded.
    assert not torch.allclose(module.site_activations(X)[0].pre, pre, atol=1e-2)


def test_only_training_forwards_with_gradients_are_recorded():
    module = make_cnn()
    assert module.recorded_site_activations() is None  # nothing recorded yet
    X, other = images(seed=1), images(seed=2)
    module(X).sum().backward()  # record_activations is off
    assert module.recorded_site_activations() is None
    module.record_activations = True
    training_forward(module, X)
    with torch.no_grad():
        module(other)
    module.eval()
    module(other)
    assert_same_activations(module.recorded_site_activations(), module.site_activations(X))


@pytest.mark.parametrize("init", [RandomInit(), SelectInit(n_candidates=8)], ids=type)
@pytest.mark.parametrize("index", [0, 1, 2])
def test_after_growth_the_batch_is_measured_with_the_new_widths(init, index):
    module = make_cnn()
    module.record_activations = True
    X = images()
    training_forward(module, X)
    site = module.growth_sites()[index]
    context = GrowthContext(module, X.flatten(1))
    add_neurons(site, init(index, site, 3, context, torch.Generator().manual_seed(0)))
    recorded = module.recorded_site_activations()
    assert recorded[index].post.shape[1] == module.widths[index] == site.width
    assert_same_activations(recorded, module.site_activations(X))


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("init", [RandomInit(), SelectInit(n_candidates=8)], ids=type)
def test_sites_that_grow_after_the_first_extend_its_measurement(init, batch_norm, monkeypatch):
    # One step in which every site grows in turn (after an optimizer step, so that the
    # recorded batch is stale): the first growth has the batch measured anew; each later
    # one extends that measurement by the new neurons' own activations instead of a new
    # forward pass, and equals what a new forward pass measures.
    module = make_cnn(batch_norm)
    module.record_activations = True
    X = images()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    training_forward(module, X)
    optimizer.step()
    measures = []
    original = GrowableCNN._measure
    monkeypatch.setattr(
        GrowableCNN,
        "_measure",
        lambda self, *args: measures.append(1) or original(self, *args),
    )
    recorded_measures = 0  # those of the recorded batch (site_activations measures too)
    g = torch.Generator().manual_seed(0)
    for index in range(3):  # conv -> conv, conv -> flatten -> dense, dense -> output
        site = module.growth_sites()[index]
        context = GrowthContext(module, X.flatten(1))
        new = init(index, site, 2 + index, context, g)
        add_neurons(site, new)
        module.recorded_site_grew(index, new)
        before = len(measures)
        recorded = module.recorded_site_activations()
        recorded_measures += len(measures) - before
        assert [a.post.shape[1] for a in recorded] == list(module.widths)
        assert_same_activations(recorded, module.site_activations(X))
    assert recorded_measures == 1  # one forward pass for the three growths


def test_a_growth_that_changes_the_function_has_the_batch_measured_anew():
    module = make_cnn()
    module.record_activations = True
    X = images()
    training_forward(module, X)
    site = module.growth_sites()[0]
    g = torch.Generator().manual_seed(0)
    first = RandomInit()(0, site, 2, GrowthContext(module, X.flatten(1)), g)
    add_neurons(site, first)
    module.recorded_site_grew(0, first)
    module.recorded_site_activations()  # measured once
    site = module.growth_sites()[1]
    changing = RandomInit()(1, site, 2, GrowthContext(module, X.flatten(1)), g)
    changing.fan_out = [torch.randn(site.fan_out_shape(c, 2), generator=g) for c in site.consumers]
    add_neurons(site, changing)  # non-zero fan-out: the dense layer's inputs change
    module.recorded_site_grew(1, changing)
    assert module._measured is None
    assert_same_activations(module.recorded_site_activations(), module.site_activations(X))


def test_the_recorded_batch_is_neither_pickled_nor_deep_copied():
    module = make_cnn()
    module.record_activations = True
    training_forward(module, images())
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        assert clone.recorded_site_activations() is None
    assert module.recorded_site_activations() is not None


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16, y[:400]


FAST = {"max_epochs": 3, "batch_size": 50, "n_candidates": 8, "random_state": 0}
#: Long enough for evaluations at which nothing grows.
QUIET_TOO = {**FAST, "max_epochs": 6}


def count_site_activation_passes(monkeypatch):
    calls = []
    original = GrowableCNN.site_activations

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GrowableCNN, "site_activations", counted)
    return calls


@pytest.mark.parametrize("source", ["training", "buffer"])
def test_training_source_measures_without_a_second_forward(digits, monkeypatch, source):
    calls = count_site_activation_passes(monkeypatch)
    evaluations = []  # (forward passes of the evaluation, neurons it added)
    grow = GrowthCallback.grow

    def watched(self, net):
        before = len(calls)
        added = grow(self, net)
        evaluations.append((len(calls) - before, added))
        return added

    monkeypatch.setattr(GrowthCallback, "grow", watched)
    clf = GrowingCNNClassifier(**QUIET_TOO, activation_source=source).fit(*digits)
    quiet = [passes for passes, added in evaluations if added == 0]
    grew = [passes for passes, added in evaluations if added > 0]
    assert quiet and grew
    if source == "buffer":
        assert min(quiet) == 1  # a forward pass of the buffer at every evaluation
    else:
        # The batch just trained on is measured as its forward computed it; only a
        # growth makes the next site's activations be computed anew.
        assert max(quiet) == 0
        assert all(passes < len(clf.widths_) for passes in grew)
    # Nothing of the last batch stays in the fitted model.
    assert not clf.module_.record_activations
    assert clf.module_.recorded_site_activations() is None


def test_the_cnn_default_is_the_current_mini_batch(digits):
    clf = GrowingCNNClassifier(**FAST).fit(*digits)
    growth = dict(clf.net_.callbacks_)["growth"]
    assert clf.activation_source == growth.activation_source == "training"


def test_a_buffer_size_with_the_training_source_is_an_error(digits):
    with pytest.raises(ValueError, match="buffer_size=64 is read by activation_source='buffer'"):
        GrowingCNNClassifier(**FAST, buffer_size=64).fit(*digits)
    clf = GrowingCNNClassifier(**FAST, buffer_size=64, activation_source="buffer").fit(*digits)
    assert dict(clf.net_.callbacks_)["growth"].buffer_.capacity == 64
