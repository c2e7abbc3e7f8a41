"""WideResNet-28 with residual groups that grow together (issue 20, SPEC section 8)."""

import pickle
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch.nn import functional as F

from sklearn_north import GrowingCNNClassifier
from sklearn_north.growth import RandomInit, SelectInit, WeightInit, metrics
from sklearn_north.growth.context import GrowthContext
from sklearn_north.growth.initializers import tied_fan_in
from sklearn_north.growth.sites import add_neurons
from sklearn_north.nn import GrowableWRN

INITIALIZERS = [RandomInit(), SelectInit(n_candidates=12), WeightInit()]
WIDTHS = (4, 4, 6, 8)


def make_wrn(widths=WIDTHS, shape=(3, 8, 8), n_blocks=4):
    torch.manual_seed(0)
    return GrowableWRN(shape, widths, 5, n_blocks=n_blocks)


def images(n=12, shape=(3, 8, 8), seed=1):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def train_a_little(module, X, optimizer=None):
    # Non-trivial BatchNorm statistics and weights (and optimizer state).
    optimizer = optimizer or torch.optim.SGD(module.parameters(), lr=0.05)
    module.train()
    for _ in range(3):
        optimizer.zero_grad()
        module(X).square().mean().backward()
        optimizer.step()
    return optimizer


def grow(module, index, k, init, X, optimizer=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    site = module.growth_sites()[index]
    new = init(index, site, k, GrowthContext(module, X.flatten(1)), g)
    add_neurons(site, new, optimizer=optimizer, tied_fan_in=partial(tied_fan_in, generator=g))


@pytest.mark.parametrize("init", INITIALIZERS, ids=lambda i: type(i).__name__)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_growth_of_the_whole_wrn28_preserves_the_function(init, mode):
    module = make_wrn()
    X = images()
    train_a_little(module, X)
    module.train(mode == "train")
    with torch.no_grad():
        before = module(X)
    for index in range(4):
        grow(module, index, 3, init, X)
        with torch.no_grad():
            torch.testing.assert_close(module(X), before, rtol=1e-5, atol=1e-5)
    assert module.widths == tuple(w + 3 for w in WIDTHS)


def test_a_group_grows_every_conv_and_norm_of_its_stream_and_blocks():
    module = make_wrn()
    X = images()
    grow(module, 2, 5, RandomInit(), X)  # group 2: 6 -> 11 channels
    g1, g2, g3 = module.groups
    for b, block in enumerate(g2):
        assert block.conv1.weight.shape[0] == 11
        assert tuple(block.conv2.weight.shape[:2]) == (11, 11)
        assert block.bn2.num_features == block.bn2.weight.shape[0] == 11
        assert block.bn1.num_features == (4 if b == 0 else 11)  # group 1's stream, or its own
    assert tuple(g2[0].proj.weight.shape[:2]) == (11, 4)
    # The next group reads the grown stream: its BN, first conv and projection.
    assert g3[0].bn1.num_features == 11
    assert g3[0].conv1.weight.shape[1] == g3[0].proj.weight.shape[1] == 11
    # Nothing else changed.
    assert all(block.conv1.weight.shape[0] == 4 for block in g1)
    assert all(block.conv2.weight.shape[0] == 8 for block in g3)
    assert module.fc.weight.shape == (5, 8)
    assert module.widths == (4, 4, 11, 8)


def test_the_last_group_grows_the_head():
    module = make_wrn()
    grow(module, 3, 2, RandomInit(), images())
    assert module.head_bn.num_features == 10 and module.fc.weight.shape == (5, 10)
    assert torch.all(module.fc.weight[:, 8:] == 0)


def test_tied_channels_have_random_fan_in_and_zero_fan_out():
    module = make_wrn()
    X = images()
    train_a_little(module, X)
    group = module.groups[1]
    old_norm = float(group[2].conv2.weight.detach().reshape(6, -1).norm(dim=1).mean())
    grow(module, 2, 2, RandomInit(), X)
    for block in group:
        # Rows of the new stream channels: random, at the producer's mean filter norm.
        rows = block.conv2.weight.detach()[6:].reshape(2, -1)
        assert torch.all(rows.norm(dim=1) > 0)
        assert torch.all(block.conv2.weight.detach()[:6, 6:] == 0)  # new inner: no fan-out
    rows = group[2].conv2.weight.detach()[6:].reshape(2, -1)
    torch.testing.assert_close(rows.norm(dim=1), torch.full((2,), old_norm), rtol=1e-5, atol=0)
    for block in group[1:]:
        assert torch.all(block.conv1.weight.detach()[:, 6:] == 0)  # the stream's readers
    nxt = module.groups[2][0]
    assert torch.all(nxt.conv1.weight.detach()[:, 6:] == 0)
    assert torch.all(nxt.proj.weight.detach()[:, 6:] == 0)
    for norm in [group[1].bn1, group[0].bn2, nxt.bn1]:
        assert torch.all(norm.weight.detach()[6:] == 1) and torch.all(norm.bias.detach()[6:] == 0)
        assert torch.all(norm.running_mean[6:] == 0) and torch.all(norm.running_var[6:] == 1)


def test_optimizer_state_covers_every_grown_parameter():
    module = make_wrn()
    X = images()
    opt = train_a_little(module, X, torch.optim.Adam(module.parameters(), lr=1e-3))
    before = {
        name: (p.shape, opt.state[p]["exp_avg"].clone()) for name, p in module.named_parameters()
    }
    for index in range(4):
        grow(module, index, 2, RandomInit(), X, optimizer=opt)
    params = dict(module.named_parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in params.values()
    }
    grown = 0
    for name, p in params.items():
        shape, moment = before[name]
        state = opt.state[p]
        assert state["exp_avg"].shape == state["exp_avg_sq"].shape == p.shape, name
        # The old entries' moments carried over exactly, the new ones zero.
        old = tuple(slice(0, n) for n in shape)
        torch.testing.assert_close(state["exp_avg"][old], moment)
        grown += p.shape != shape
    # Every conv, BatchNorm and the output layer grew (the output layer's bias did not).
    assert grown == len(params) - 1
    train_a_little(module, X, opt)  # and training goes on


def test_add_neurons_needs_the_tied_fan_in():
    module = make_wrn()
    site = module.growth_sites()[1]
    new = RandomInit()(1, site, 2, None, torch.Generator())
    with pytest.raises(ValueError, match="tied to other channels"):
        add_neurons(site, new)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_site_metric_is_the_svd_of_bn_relu_rows(index):
    module = make_wrn()
    X = images()
    train_a_little(module, X)
    module.eval()
    acts = module.site_activations(X)[index]
    with torch.no_grad():
        if index == 0:
            H = F.relu(module.groups[0][0].bn1(module.stem(X)))
        else:
            x = module.stem(X)
            for blocks in module.groups[: index - 1]:
                for block in blocks:
                    x = block(x)
            head = module.groups[index - 1][0]
            H = F.relu(head.bn2(head.conv1(F.relu(head.bn1(x)))))
    rows = H.permute(0, 2, 3, 1).reshape(-1, H.shape[1])
    torch.testing.assert_close(acts.post, rows)
    s = torch.linalg.svdvals(rows.double() / rows.shape[0] ** 0.5)
    assert metrics.activation_rank(acts.post, 0.05) == int((s > 0.05).sum())
    # Select's candidates are scored as they would be once added, with identity BatchNorm
    # entries: on a fresh network (whose entries are all identities) an existing filter
    # scores as its own channel.
    fresh = make_wrn()
    fresh.eval()
    acts = fresh.site_activations(X)[index]
    site = fresh.growth_sites()[index]
    fan_in = site.producer.weight.detach()[:2]
    torch.testing.assert_close(
        site.candidate_post(acts.inputs, fan_in, torch.zeros(2)), acts.post[:, :2]
    )


def test_recorded_batch_matches_the_network_after_group_growth():
    module = make_wrn()
    module.record_activations = True
    X = images()
    module.train()
    module(X).sum().backward()
    recorded = module.recorded_site_activations()
    assert [a.post.shape[1] for a in recorded] == list(WIDTHS)
    grow(module, 2, 2, RandomInit(), X)
    recorded = module.recorded_site_activations()
    expected = module.site_activations(X)
    assert [a.post.shape[1] for a in recorded] == [4, 4, 8, 8]
    for a, b in zip(recorded, expected, strict=True):
        torch.testing.assert_close(a.post, b.post)


# -- the estimator ---------------------------------------------------------------------

TINY = dict(
    architecture="wrn28",
    widths=(2, 2, 2, 2),
    max_widths=(6, 6, 6, 6),
    max_epochs=2,
    batch_size=50,
    lr=3e-3,
    n_candidates=8,
    random_state=0,
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


def test_wrn28_estimator_grows_and_its_defaults_are_the_papers(digits):
    X, y = digits
    clf = GrowingCNNClassifier(**TINY).fit(X, y)
    assert isinstance(clf.module_, GrowableWRN)
    assert clf.widths_ == clf.module_.widths and clf.widths_ != (2, 2, 2, 2)
    assert all(w <= 6 for w in clf.widths_)
    assert set(clf.growth_history_["layer"]) <= {0, 1, 2, 3}
    default = GrowingCNNClassifier(architecture="wrn28")
    initial, maximum = default._widths()
    assert initial == (4, 4, 8, 16) and maximum == (96, 96, 192, 384)  # 0.25x -> 6x
    assert clf.predict_proba(X).shape == (300, 10)


def test_wrn28_is_built_with_batch_norm(digits):
    with pytest.raises(ValueError, match="batch_norm=False"):
        GrowingCNNClassifier(**{**TINY, "batch_norm": False}).fit(*digits)
    clf = GrowingCNNClassifier(**{**TINY, "batch_norm": True, "max_epochs": 1}).fit(*digits)
    assert isinstance(clf.module_, GrowableWRN)


def test_wrn28_pickles_and_clones(digits):
    X, y = digits
    clf = GrowingCNNClassifier(**TINY, warm_start=True).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    clf.fit(X, y)
    copy.fit(X, y)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert clone(clf).get_params() == clf.get_params()


def test_wrn28_in_a_pipeline_under_grid_search(digits):
    X, y = digits
    pipe = make_pipeline(
        MinMaxScaler(), GrowingCNNClassifier(**{**TINY, "max_epochs": 1}, input_shape=(1, 8, 8))
    )
    search = GridSearchCV(pipe, {"growingcnnclassifier__lr": [3e-3, 1e-2]}, cv=2)
    search.fit(X, y)
    assert search.best_estimator_[-1].input_shape_ == (1, 8, 8)
    assert 0 <= search.best_score_ <= 1


@parametrize_with_checks(
    [GrowingCNNClassifier(**{**TINY, "max_epochs": 10, "lr": 1e-2, "batch_size": 32})],
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data": "float32 training vs an rtol of 1e-7",
        "check_sample_weight_equivalence_on_sparse_data": "float32 training vs an rtol of 1e-7",
    },
)
def test_sklearn_compatible_wrn28(estimator, check):
    check(estimator)
