"""Channel growth on convolutional networks (issue 19, first part): surgery, the conv
metric, the conv initializers and ``GrowingCNNClassifier``."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn
from torch.nn import functional as F

from sklearn_north import GrowingCNNClassifier
from sklearn_north.growth import ActivationTrigger, RandomInit, SelectInit, WeightInit, metrics
from sklearn_north.growth.context import GrowthContext
from sklearn_north.growth.optim import seed_pending_moments
from sklearn_north.growth.sites import NewNeurons, add_neurons
from sklearn_north.nn import GrowableCNN

INITIALIZERS = [RandomInit(), SelectInit(n_candidates=24), WeightInit()]


def make_cnn(batch_norm=False, widths=(4, 6), dense=(10,), pools=(True, True), shape=(2, 8, 8)):
    torch.manual_seed(0)
    return GrowableCNN(shape, widths, pools, dense, 5, batch_norm=batch_norm)


def images(n=16, shape=(2, 8, 8), seed=1):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def train_a_little(module, X):
    # Non-trivial BatchNorm statistics and weights.
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    module.train()
    for _ in range(3):
        opt.zero_grad()
        module(X).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("init", INITIALIZERS, ids=lambda i: type(i).__name__)
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_growing_any_site_preserves_the_function(init, batch_norm, mode):
    # conv -> (BN ->) conv, conv -> pool -> flatten -> dense, dense -> dense.
    module = make_cnn(batch_norm)
    X = images()
    train_a_little(module, X)
    module.train(mode == "train")
    with torch.no_grad():
        before = module(X)
    g = torch.Generator().manual_seed(0)
    for index in range(len(module.growth_sites())):
        site = module.growth_sites()[index]
        new = init(index, site, 3, GrowthContext(module, X.flatten(1)), g)
        add_neurons(site, new)
    assert module.widths == (7, 9, 13)
    with torch.no_grad():
        torch.testing.assert_close(module(X), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("init", INITIALIZERS, ids=lambda i: type(i).__name__)
def test_growth_keeps_the_parameters_dtype(init):
    module = make_cnn(batch_norm=True).double()
    X = images().double()
    train_a_little(module, X)
    module.eval()
    with torch.no_grad():
        before = module(X)
    g = torch.Generator().manual_seed(0)
    for index in range(len(module.growth_sites())):
        site = module.growth_sites()[index]
        add_neurons(site, init(index, site, 2, GrowthContext(module, X.flatten(1)), g))
    assert {p.dtype for p in module.parameters()} == {torch.float64}
    assert {b.dtype for b in module.buffers() if b.is_floating_point()} == {torch.float64}
    with torch.no_grad():
        torch.testing.assert_close(module(X), before, rtol=1e-12, atol=1e-12)


def test_surgery_equals_an_explicitly_built_wider_network():
    # A conv site grown with non-zero fan-in and fan-out equals the wider network built by
    # hand with those weights in place (NCHW: channel c owns H'W' consecutive columns).
    module = make_cnn(batch_norm=True, widths=(4, 6), pools=(True, False))
    X = images()
    train_a_little(module, X)
    module.eval()
    g = torch.Generator().manual_seed(3)
    site = module.growth_sites()[1]  # conv 1 -> flatten -> dense 0
    k, spatial = 2, module.spatial
    fan_in = torch.randn(k, 4, 3, 3, generator=g)
    bias = torch.randn(k, generator=g)
    fan_out = torch.randn(10, k * spatial, generator=g)
    wide = GrowableCNN((2, 8, 8), (4, 8), (True, False), (10,), 5, batch_norm=True)
    with torch.no_grad():
        sd = {name: p.clone() for name, p in module.state_dict().items()}
        sd["convs.1.weight"] = torch.cat([sd["convs.1.weight"], fan_in])
        sd["convs.1.bias"] = torch.cat([sd["convs.1.bias"], bias])
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0)):
            entry = f"norms.1.{name}"
            sd[entry] = torch.cat([sd[entry], torch.full((k,), fill)])
        sd["norms.1.running_var"] = torch.cat([sd["norms.1.running_var"], torch.ones(k)])
        sd["dense.0.weight"] = torch.cat([sd["dense.0.weight"], fan_out], dim=1)
    wide.load_state_dict(sd)
    wide.eval()
    add_neurons(site, NewNeurons(fan_in=fan_in, bias=bias, fan_out=[fan_out]))
    with torch.no_grad():
        torch.testing.assert_close(module(X), wide(X))
    assert module.widths == wide.widths


@pytest.mark.parametrize("pooled", [True, False])
def test_conv_metric_counts_the_svd_of_positions_by_channels(pooled):
    module = make_cnn(widths=(6, 5), pools=(pooled, True))
    X = images(n=12)
    acts = module.site_activations(X.flatten(1))[0]
    # Directly: the pooled post-activations, every position of every sample a row.
    with torch.no_grad():
        H = F.relu(module.convs[0](X))
        if pooled:
            H = F.max_pool2d(H, 2, ceil_mode=True)
    rows = H.permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(acts.post, rows)
    eps = 0.037
    s = torch.linalg.svdvals(rows.double() / rows.shape[0] ** 0.5)
    assert metrics.activation_rank(acts.post, eps) == int((s > eps).sum())
    W = module.convs[1].weight.detach().double().reshape(5, -1)
    s_w = torch.linalg.svdvals(W / W.shape[1] ** 0.5)
    assert metrics.weight_rank(module.convs[1].weight, eps) == int((s_w > eps).sum())


def test_conv_statistics_do_not_depend_on_repeated_samples():
    module = make_cnn()
    X = images(n=10).flatten(1)
    twice = torch.cat([X, X])
    trigger = ActivationTrigger(gamma=0.9, epsilon=0.03)
    sites = module.growth_sites()
    for index, site in enumerate(sites):
        once = trigger(index, site, GrowthContext(module, X, epsilon=0.03))
        again = trigger(index, site, GrowthContext(module, twice, epsilon=0.03))
        assert once.metric == again.metric
    chosen = [
        SelectInit(n_candidates=30)(0, sites[0], 3, GrowthContext(module, data), gen)
        for data, gen in (
            (X, torch.Generator().manual_seed(5)),
            (twice, torch.Generator().manual_seed(5)),
        )
    ]
    torch.testing.assert_close(chosen[0].fan_in, chosen[1].fan_in)


def test_select_filters_raise_the_conv_metric_more_than_random_ones():
    module = make_cnn(widths=(6, 6))
    X = images(n=20).flatten(1)
    site = module.growth_sites()[0]
    ctx = GrowthContext(module, X, epsilon=0.3)
    post = ctx.activations(0).post

    def residual(new):
        cand = site.candidate_post(
            ctx.activations(0).inputs,
            new.fan_in,
            new.bias if new.bias is not None else torch.zeros(new.k),
        )
        q, _ = torch.linalg.qr(post.double())
        c = cand.double()
        return float((c - q @ (q.T @ c)).norm())

    g = [torch.Generator().manual_seed(s) for s in range(5)]
    chosen = [residual(SelectInit(n_candidates=60)(0, site, 2, ctx, gi)) for gi in g]
    random = [residual(RandomInit()(0, site, 2, ctx, gi)) for gi in g]
    assert np.mean(chosen) > np.mean(random)


def test_weight_filters_are_orthogonal_to_the_existing_ones():
    module = make_cnn(widths=(4, 6))
    site = module.growth_sites()[1]  # 6 filters of 4 * 3 * 3 = 36 values
    new = WeightInit()(1, site, 5, None, torch.Generator().manual_seed(0))
    W = site.producer.weight.detach().reshape(6, -1).double()
    V = new.fan_in.reshape(5, -1).double()
    assert float((V @ W.T).abs().max()) < 1e-5 * float(V.norm() * W.norm())
    gram = V @ V.T
    torch.testing.assert_close(
        gram - torch.diag(gram.diagonal()),
        torch.zeros(5, 5).double(),
        atol=1e-4 * float(gram.diagonal().max()),
        rtol=0,
    )


def test_optimizer_state_after_a_conv_growth():
    module = make_cnn()
    X = images()
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    module(X).square().mean().backward()
    opt.step()
    old = module.convs[0].weight.detach().clone()
    moment = opt.state[module.convs[0].weight]["exp_avg"].clone()
    add_neurons(
        module.growth_sites()[0],
        RandomInit()(0, module.growth_sites()[0], 2, None, torch.Generator().manual_seed(0)),
        optimizer=opt,
    )
    w = module.convs[0].weight
    state = opt.state[w]
    assert state["exp_avg"].shape == w.shape == (6, 2, 3, 3)
    torch.testing.assert_close(state["exp_avg"][:4], moment)
    torch.testing.assert_close(w[:4].detach(), old)
    consumer = module.convs[1].weight
    assert opt.state[consumer]["exp_avg"].shape == consumer.shape == (6, 6, 3, 3)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {
        id(p) for p in module.parameters()
    }


@pytest.mark.parametrize("index", [0, 1], ids=["conv->conv", "conv->dense"])
def test_first_adam_update_of_new_fan_out_entries_is_a_fresh_adams(index):
    # The consumer's new input channels (a conv's, or the dense layer's H'*W' columns per
    # channel) start from their first gradient: |update| = lr, however long the rest of
    # the network was trained (SPEC section 5, second_moment="gradient").
    module = make_cnn(batch_norm=True)
    X = images()
    lr = 1e-3
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(30):
        opt.zero_grad()
        module(X).square().mean().backward()
        opt.step()
    site = module.growth_sites()[index]
    new = RandomInit()(index, site, 2, None, torch.Generator().manual_seed(0))
    add_neurons(site, new, optimizer=opt, second_moment="gradient")
    consumer = site.consumers[0].module.weight
    n_new = 2 * (1 if index == 0 else module.spatial)
    before = consumer.detach().clone()
    opt.zero_grad()
    module(X).square().mean().backward()
    grad = consumer.grad.clone()
    seed_pending_moments(opt)
    opt.step()
    new_cols = slice(consumer.shape[1] - n_new, None)
    moved = (consumer.detach() - before)[:, new_cols]
    g = grad[:, new_cols]
    assert (g != 0).float().mean() > 0.5
    torch.testing.assert_close(moved[g != 0], -lr * g.sign()[g != 0], rtol=1e-3, atol=0)
    assert int(opt.state[consumer]["step"]) == 31  # the step counter survived growth
    norm = module.norms[index] if index < len(module.norms) else None
    if norm is not None:
        assert opt.state[norm.weight]["exp_avg"].shape == norm.weight.shape


def test_lr_scheduler_drives_grown_conv_parameters():
    module = make_cnn(batch_norm=True)
    opt = torch.optim.SGD(module.parameters(), lr=0.4)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.25)
    site = module.growth_sites()[0]
    add_neurons(site, RandomInit()(0, site, 2, None, torch.Generator()), optimizer=opt)
    opt.step()  # (no gradients: a no-op, keeps the scheduler's order warning away)
    scheduler.step()
    grown = [module.convs[0].weight, module.norms[0].bias, module.convs[1].weight]
    before = [p.detach().clone() for p in grown]
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for p, b in zip(grown, before, strict=True):
        torch.testing.assert_close(p.detach(), b - 0.1)


# -- the estimator ---------------------------------------------------------------------

FAST = dict(
    widths=(4, 4, 8),
    max_widths=(16, 16, 32),
    max_epochs=2,
    batch_size=32,
    lr=3e-3,
    n_candidates=16,
    random_state=0,
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:400] / 16).astype(np.float32), y[:400]


def test_fit_grows_channels_and_reads_digits_as_8x8_images(digits):
    X, y = digits
    clf = GrowingCNNClassifier(**FAST).fit(X, y)
    assert clf.input_shape_ == (1, 8, 8)
    assert clf.widths_ == clf.hidden_layer_sizes_ == clf.module_.widths
    assert clf.widths_ > (4, 4, 8)  # it grew
    events = clf.growth_history_
    assert set(events["layer"]) <= {0, 1, 2} and (events["n_added"] > 0).all()
    four_d = clone(clf).fit(X.reshape(-1, 1, 8, 8), y)
    np.testing.assert_array_equal(
        four_d.predict_proba(X.reshape(-1, 1, 8, 8)), clf.predict_proba(X)
    )
    with pytest.raises(ValueError, match="images of shape"):
        four_d.predict(X.reshape(-1, 1, 4, 16))


def test_input_shape_errors(digits):
    X, y = digits
    with pytest.raises(ValueError, match="holds 48 values, but X has 64"):
        GrowingCNNClassifier(**FAST, input_shape=(3, 4, 4)).fit(X, y)
    with pytest.raises(ValueError, match="does not match"):
        GrowingCNNClassifier(**FAST, input_shape=(1, 4, 16)).fit(X.reshape(-1, 1, 8, 8), y)
    with pytest.raises(ValueError, match="images must be 4-D"):
        GrowingCNNClassifier(**FAST).fit(X.reshape(-1, 8, 8), y)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GrowingCNNClassifier(**FAST).fit(bad, y)
    with pytest.raises(ValueError, match="max_widths must be >= widths"):
        GrowingCNNClassifier(**{**FAST, "max_widths": (2, 16, 32)}).fit(X, y)


@pytest.mark.parametrize("strategy", ["north-pre"])
def test_dense_only_strategies_are_a_clear_error(digits, strategy):
    X, y = digits
    with pytest.raises(ValueError, match="dense layers only"):
        GrowingCNNClassifier(**FAST, strategy=strategy).fit(X, y)


def test_cnn_defaults_are_the_papers_cnn_protocol(digits):
    X, y = digits
    clf = GrowingCNNClassifier(max_epochs=1, random_state=0).fit(X, y)
    growth = dict(clf.net_.callbacks_)["growth"]
    assert growth.trigger_.gamma == 0.9 and growth.trigger_.baseline == "running_max"
    assert growth.buffer_.capacity == clf.batch_size  # the current mini-batch
    assert growth.initializer_.n_candidates == 100
    # 0.25x the small architecture's standard widths, capped at 2x.
    assert clf.module_.max_widths == (64, 128, 256)


def test_pickle_round_trip_predicts_and_continues_identically(digits):
    X, y = digits
    clf = GrowingCNNClassifier(**FAST, warm_start=True).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    clf.fit(X, y)
    copy.fit(X, y)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert copy.widths_ == clf.widths_


@parametrize_with_checks(
    [
        GrowingCNNClassifier(
            widths=(4, 4, 8),
            max_widths=(8, 8, 16),
            lr=3e-2,
            batch_size=32,
            max_epochs=10,
            n_candidates=8,
            random_state=0,
        )
    ],
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data": "float32 training vs an rtol of 1e-7",
        "check_sample_weight_equivalence_on_sparse_data": "float32 training vs an rtol of 1e-7",
    },
)
def test_sklearn_compatible_cnn(estimator, check):
    check(estimator)


def test_conv_site_knows_it_is_a_conv():
    module = make_cnn()
    kinds = [site.is_conv for site in module.growth_sites()]
    assert kinds == [True, True, False]
    assert isinstance(module.growth_sites()[1].consumers[0].module, nn.Linear)
    assert module.growth_sites()[1].consumers[0].spatial == module.spatial == 4


def test_vgg11_at_cifar_shapes_grows_every_site_preserving_the_function():
    # The paper's VGG-11 (8 convs, pools after 1, 2, 4, 6, 8; two hidden dense layers) on
    # 32x32 RGB images, at 1/32 of its widths so that it runs in a test.
    from sklearn_north.nn.cnn import ARCHITECTURES, build_cnn

    standard = (*ARCHITECTURES["vgg11"]["conv"], *ARCHITECTURES["vgg11"]["dense"])
    widths = tuple(max(1, w // 32) for w in standard)
    torch.manual_seed(0)
    module = build_cnn("vgg11", (3, 32, 32), widths, 10)
    assert module.spatial == 1  # five pools: 32 -> 1
    X = images(n=6, shape=(3, 32, 32)).flatten(1)
    module.eval()
    with torch.no_grad():
        before = module(X)
    g = torch.Generator().manual_seed(0)
    sites = module.growth_sites()
    assert len(sites) == 10 and [s.is_conv for s in sites] == [True] * 8 + [False] * 2
    for index in range(len(sites)):
        site = module.growth_sites()[index]
        add_neurons(site, SelectInit(n_candidates=8)(index, site, 2, GrowthContext(module, X), g))
    assert module.widths == tuple(w + 2 for w in widths)
    with torch.no_grad():
        torch.testing.assert_close(module(X), before, rtol=1e-5, atol=1e-5)


def test_vgg11_estimator_fits_cifar_shaped_images():
    rng = np.random.default_rng(0)
    X = rng.random((64, 3, 32, 32), dtype=np.float32)
    y = np.arange(64) % 4
    clf = GrowingCNNClassifier(
        architecture="vgg11",
        widths=1 / 32,
        max_widths=1 / 16,
        max_epochs=1,
        batch_size=32,
        n_candidates=8,
        random_state=0,
    ).fit(X, y)
    assert clf.input_shape_ == (3, 32, 32) and len(clf.widths_) == 10
    assert clf.module_.max_widths == (4, 8, 16, 16, 32, 32, 32, 32, 256, 256)
    assert clf.predict_proba(X).shape == (64, 4)


def test_preset_schedules_grow_to_the_standard_widths_in_a_quarter_of_training(digits):
    # The paper's CNN presets: the 1x widths (here 32-64-128 of the small CNN, from 0.25x)
    # by 25 % of training.
    X, y = digits
    clf = GrowingCNNClassifier(
        schedule="linear",
        strategy="north-random",
        max_epochs=4,
        batch_size=50,
        n_iter_no_change=None,
        random_state=0,
    ).fit(X, y)
    assert clf.widths_ == (32, 64, 128)
    steps = clf.n_iter_ * int(np.ceil(len(X) / 50))
    assert clf.growth_history_["step"].max() <= 0.25 * steps
    # Inside the bounds: a cap below 1x is the target.
    capped = GrowingCNNClassifier(
        schedule="linear", max_widths=(16, 64, 64), max_epochs=1, batch_size=50, random_state=0
    ).fit(X, y)
    assert capped.widths_ == (16, 64, 64)
