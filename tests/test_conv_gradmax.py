"""GradMax on convolutions inside the package's networks (issue 20): the auxiliary gradient
a site's record gives against autograd on explicitly added zero-fan-in channels, through
pooling, BatchNorm (train mode), the conv -> dense boundary, two consumers and a tied group.
"""

import copy
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sklearn_north import GrowingCNNClassifier
from sklearn_north.growth import (
    FireflyInit,
    GradientRecorder,
    GradientTrigger,
    GradMaxInit,
    NeSTInit,
    NewNeurons,
    add_neurons,
)
from sklearn_north.growth.gradients import ConvSiteGradients
from sklearn_north.growth.initializers import tied_fan_in
from sklearn_north.nn import GrowableCNN, GrowableWRN


def cnn(batch_norm):
    torch.manual_seed(0)
    return GrowableCNN((2, 7, 7), (4, 5), (True, True), (6,), 3, batch_norm=batch_norm)


def wrn():
    torch.manual_seed(0)
    return GrowableWRN((2, 8, 8), (3, 3, 4, 5), 3, n_blocks=2)


def batch(module, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, *module.input_shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return X, y


def train_mode_scale(site):
    """G's BatchNorm scale (the new entries' own) to the next training step's exact one."""
    if not site.norms:
        return 1.0
    eps = site.norms[0].eps
    return ((1 + eps) / eps) ** 0.5


def loss(module, X, y):
    return torch.nn.functional.cross_entropy(module(X), y)


def recorded(module, X, y):
    """The record of every site for one training step's forward and backward."""
    module.train()
    recorder = GradientRecorder().attach(module.growth_sites())
    module.zero_grad()
    loss(module, X, y).backward()
    snapshot = recorder.snapshot(module.growth_sites())
    recorder.detach()
    return snapshot


def brute_force_fan_in_grad(module, index, fan_out, X, y):
    """dL/d(new fan-in) with k explicit zero-fan-in channels whose fan-out is ``fan_out``."""
    grown = copy.deepcopy(module)
    site = grown.growth_sites()[index]
    k = fan_out[0].shape[1] // site.consumers[0].spatial
    new = NewNeurons(
        fan_in=site.producer.weight.new_zeros((k, *site.fan_in_shape)), fan_out=fan_out
    )
    g = torch.Generator().manual_seed(0)
    add_neurons(site, new, tied_fan_in=partial(tied_fan_in, generator=g))
    grown.train()
    grown.zero_grad()
    loss(grown, X, y).backward()
    return site.producer.weight.grad[-k:].reshape(k, -1)


def random_fan_out(site, k, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(site.fan_out_shape(c, k), generator=g, dtype=torch.float64)
        for c in site.consumers
    ]


CASES = {
    "conv -> pool -> conv": (partial(cnn, False), 0),
    "conv -> BN -> pool -> conv": (partial(cnn, True), 0),
    "conv -> pool -> flatten -> dense": (partial(cnn, False), 1),
    "conv -> BN -> pool -> flatten -> dense": (partial(cnn, True), 1),
    "WRN stem: BN, two consumers": (wrn, 0),
    "WRN group (tied, stride 2)": (wrn, 2),
}


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_auxiliary_gradient_equals_autograd_on_explicit_zero_channels(case, device):
    # On CUDA too: G reads a max-pool's backward at an all-zero channel as a fixed route
    # (each window's first element), which must be where the device's pooling sends it.
    make, index = CASES[case]
    module = make().double().to(device)
    X, y = (t.to(device) for t in batch(module))
    record = recorded(module, X, y)[index]
    assert isinstance(record, ConvSiteGradients)
    site = module.growth_sites()[index]
    fan_out = [f.to(device) for f in random_fan_out(site, 2)]
    expected = brute_force_fan_in_grad(module, index, fan_out, X, y)
    # G's rows: each consumer's (o, tap or map position), row-major; one column per new
    # channel is its fan-out slices flattened in that order.
    columns = torch.cat([_columns(f, c) for f, c in zip(fan_out, site.consumers)], dim=1)
    predicted = columns @ record.G * train_mode_scale(site)
    assert expected.abs().max() > 1e-6  # the new fan-in does get a gradient
    torch.testing.assert_close(predicted, expected, rtol=1e-8, atol=1e-10)


def _columns(block, consumer):
    # A consumer's fan-out block -> one row per new channel: (C_out, k, kh, kw) -> (k,
    # (o, u, v)); a dense consumer's (n_out, k * spatial) -> (k, (o, position)).
    k = block.shape[1] // consumer.spatial
    return block.reshape(block.shape[0], k, -1).movedim(1, 0).reshape(k, -1)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradmax_init_gives_the_top_singular_fan_out_and_preserves_the_function(case, mode):
    make, index = CASES[case]
    module = make().double()
    X, y = batch(module)
    record = recorded(module, X, y)
    site = module.growth_sites()[index]
    context = type("Context", (), {"gradients": lambda self, i: record[i]})()
    new = GradMaxInit()(index, site, 2, context, torch.Generator().manual_seed(0))
    assert torch.all(new.fan_in == 0)
    # Zero fan-in and non-zero fan-out: the new channels are 0 after a BatchNorm in train
    # mode (their batch mean is 0) and in eval mode (running mean 0), so the function holds.
    module.train(mode == "train")
    with torch.no_grad():
        before = module(X)
    grown = copy.deepcopy(module)
    grown_site = grown.growth_sites()[index]
    add_neurons(grown_site, new, tied_fan_in=partial(tied_fan_in, generator=torch.Generator()))
    grown.train(mode == "train")
    with torch.no_grad():
        torch.testing.assert_close(grown(X), before)
    # The fan-in gradient's norm is the top singular values of G (times the fan-out scale).
    s = torch.linalg.svdvals(record[index].G)
    grad = brute_force_fan_in_grad(module, index, new.fan_out, X, y)
    # Each new channel's fan-out (over all consumers) has the same norm, the scale.
    scale = sum(float(b.square().sum()) for b in new.fan_out) ** 0.5 / 2**0.5
    torch.testing.assert_close(
        grad.norm(dim=1), s[:2] * scale * train_mode_scale(site), rtol=1e-6, atol=1e-10
    )


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


@pytest.mark.parametrize("architecture", ["small", "wrn28"])
def test_gradmax_grows_conv_sites_in_a_fit(digits, architecture):
    widths = (4, 4, 8) if architecture == "small" else (2, 2, 2, 2)
    clf = GrowingCNNClassifier(
        architecture=architecture,
        strategy="gradmax",
        widths=widths,
        max_widths=tuple(4 * w for w in widths),
        max_epochs=2,
        batch_size=50,
        lr=3e-3,
        random_state=0,
    ).fit(*digits)
    grown = set(clf.growth_history_["layer"])
    assert grown & set(range(len(widths) if architecture == "wrn28" else 2))  # a conv site
    assert clf.widths_ == clf.module_.widths
    # It trains through the growth (2 epochs are too few for a tiny WRN's accuracy).
    assert np.isfinite(clf.loss_curve_).all() and clf.loss_curve_[-1] < clf.loss_curve_[0]


# -- Firefly and NeST on conv sites --------------------------------------------------------

NO_NORM_CASES = ["conv -> pool -> conv", "conv -> pool -> flatten -> dense"]


@pytest.mark.parametrize("case", NO_NORM_CASES)
def test_candidate_fan_out_gradients_equal_autograd(case):
    # Candidates with random filters added with zero fan-out: the loss gradient of their
    # fan-out slices (the consumers' weights for them) on the recorded batch.
    make, index = CASES[case]
    module = make().double()
    X, y = batch(module)
    record = recorded(module, X, y)[index]
    site = module.growth_sites()[index]
    g = torch.Generator().manual_seed(4)
    fan_in = torch.randn(3, *site.fan_in_shape, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    predicted = record.candidate_fan_out_gradients(site, fan_in, bias)
    grown = copy.deepcopy(module)
    grown_site = grown.growth_sites()[index]
    add_neurons(grown_site, NewNeurons(fan_in=fan_in, bias=bias))
    grown.train()
    grown.zero_grad()
    loss(grown, X, y).backward()
    consumer = grown_site.consumers[0]
    w = consumer.module.weight.grad
    new = w.unflatten(1, (grown_site.width, consumer.spatial))[:, -3:]  # (out, 3, spatial, ...)
    expected = new.movedim(1, -1).reshape(-1, 3)
    assert expected.abs().max() > 1e-8
    torch.testing.assert_close(predicted, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("case", [*NO_NORM_CASES, "WRN group (tied, stride 2)"])
def test_nest_on_conv_sites_lowers_the_loss_to_first_order(case):
    make, index = CASES[case]
    module = make().double()
    X, y = batch(module)
    record = recorded(module, X, y)
    site = module.growth_sites()[index]
    context = type("Context", (), {"gradients": lambda self, i: record[i]})()
    new = NeSTInit()(index, site, 2, context, torch.Generator().manual_seed(0))
    assert tuple(new.fan_in.shape[1:]) == site.fan_in_shape
    # The fan-out's first-order change of the loss, u . dL/du, is never positive.
    g = record[index].candidate_fan_out_gradients(site, new.fan_in, new.bias)
    u = torch.cat([_columns(b, c) for b, c in zip(new.fan_out, site.consumers)], dim=1)
    assert torch.all((u.T * g).sum(dim=0) <= 0)
    grown = copy.deepcopy(module)
    add_neurons(
        grown.growth_sites()[index],
        new,
        tied_fan_in=partial(tied_fan_in, generator=torch.Generator()),
    )
    assert grown.widths[index] == module.widths[index] + 2


@pytest.mark.parametrize("case", list(CASES))
def test_firefly_on_conv_sites_changes_the_function_by_its_noise_only(case):
    make, index = CASES[case]
    module = make().double()
    X, y = batch(module)
    record = recorded(module, X, y)
    module.eval()
    with torch.no_grad():
        before = module(X)
    site = module.growth_sites()[index]
    context = type("Context", (), {"gradients": lambda self, i: record[i]})()
    new = FireflyInit(noise=1e-6)(index, site, 3, context, torch.Generator().manual_seed(0))
    add_neurons(site, new, tied_fan_in=partial(tied_fan_in, generator=torch.Generator()))
    module.eval()
    with torch.no_grad():
        after = module(X)
    change = float((after - before).abs().max() / before.abs().max())
    assert 0 < change < 1e-4


@pytest.mark.parametrize("strategy", ["firefly", "nest"])
def test_firefly_and_nest_grow_conv_sites_in_a_fit(digits, strategy):
    clf = GrowingCNNClassifier(
        strategy=strategy,
        widths=(4, 4, 8),
        max_widths=(16, 16, 32),
        max_epochs=2,
        batch_size=50,
        lr=3e-3,
        random_state=0,
    ).fit(*digits)
    assert set(clf.growth_history_["layer"]) & {0, 1}
    assert clf.widths_ == clf.module_.widths
    # Neither changes the function by design: NeST's full-size fan-outs raise the loss while
    # the network grows at every step (on 1200 digits, 8 epochs, it reaches 0.90 accuracy).
    assert np.isfinite(clf.loss_curve_).all() and max(clf.loss_curve_) < 2 * np.log(10)


# -- the gradient trigger on conv sites ----------------------------------------------------


@pytest.mark.parametrize("case", ["conv -> BN -> pool -> conv", "WRN group (tied, stride 2)"])
def test_gradient_trigger_on_a_conv_site_is_its_closed_form(case):
    # T_grad: singular values of G above scale * sum over channels of (||dL/dw_in|| +
    # ||dL/dw_out||), the per-channel norms written out from the modules' gradients.
    make, index = CASES[case]
    module = make().double()
    X, y = batch(module)
    record = recorded(module, X, y)[index]
    site = module.growth_sites()[index]
    w_in = site.producer.weight.grad.reshape(site.width, -1)
    norms_in = w_in.norm(dim=1)
    if site.producer.bias is not None:
        norms_in = torch.hypot(norms_in, site.producer.bias.grad)
    sq_out = sum(
        c.module.weight.grad.unflatten(1, (site.width, c.spatial)).movedim(1, 0)
        .reshape(site.width, -1).square().sum(dim=1)
        for c in site.consumers
    )  # fmt: skip
    for scale in (1e-3, 1e-2, 0.1):
        trigger = GradientTrigger(norms="gradients", scale=scale)
        threshold = scale * float((norms_in + sq_out.sqrt()).sum())
        decision = trigger(index, site, type("C", (), {"gradients": lambda s, i: record})())
        assert decision.threshold == pytest.approx(threshold, rel=1e-10)
        s = torch.linalg.svdvals(record.G)
        assert decision.n_neurons == int((s > threshold).sum())
