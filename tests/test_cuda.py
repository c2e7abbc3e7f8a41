"""The CUDA path: every strategy fits and grows on a GPU, and the maths there agrees with
the CPU's.

Skipped where torch sees no CUDA device (CI has none). On a GPU machine:
``python -m pytest tests/test_cuda.py``.
"""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sklearn_north import STRATEGIES, GrowingMLPClassifier
from sklearn_north.growth import (
    INITIALIZERS,
    ActivationTrigger,
    GradientTrigger,
    GrowthContext,
    PreActivationInit,
    RandomInit,
    SelectInit,
    WeightInit,
    add_neurons,
)
from sklearn_north.growth.metrics import activation_rank

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Digits grows north-select's both layers within a few epochs from (48, 48) (as in
# test_estimator.py's GROWING); the gradient strategies need the reference code's
# threshold to grow at this size (the paper's never fires from 48 neurons).
GROWS = dict(hidden_layer_sizes=(48, 48), max_hidden_layer_sizes=96, max_epochs=3, lr=1e-2,
             n_candidates=50, random_state=0)  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0)[:900], y[:900]


def strategy_that_grows(name):
    trigger, init = STRATEGIES[name]
    if trigger == "gradient":
        return (GradientTrigger(scale=0.5, norms="updates"), INITIALIZERS[init]())
    return name


@pytest.mark.parametrize("activation_source", ["buffer", "training"])
@pytest.mark.parametrize("name", [n for n in STRATEGIES if n != "static"])
def test_every_strategy_grows_on_cuda(digits, name, activation_source):
    X, y = digits
    clf = GrowingMLPClassifier(
        strategy=strategy_that_grows(name),
        activation_source=activation_source,
        trigger_rounding="floor_threshold",
        device="cuda",
        **GROWS,
    ).fit(X, y)
    assert len(clf.growth_history_) > 0
    assert sum(clf.hidden_layer_sizes_) > 96
    for p in clf.module_.parameters():
        assert p.device.type == "cuda"
    # Adam's state follows its parameters: same device, same (grown) shape.
    for p in clf.module_.parameters():
        state = clf.net_.optimizer_.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg"].device == p.device
        assert state["exp_avg_sq"].shape == p.shape
    proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert clf.score(X, y) > 0.8


def test_static_and_schedule_on_cuda(digits):
    X, y = digits
    static = GrowingMLPClassifier(strategy="static", device="cuda", **GROWS).fit(X, y)
    assert static.hidden_layer_sizes_ == (48, 48) and len(static.growth_history_) == 0
    scheduled = GrowingMLPClassifier(
        strategy="north-random", schedule="linear", schedule_target=80, device="cuda", **GROWS
    ).fit(X, y)
    assert scheduled.hidden_layer_sizes_ == (80, 80)


def test_pickled_cuda_model_predicts_the_same(digits):
    X, y = digits
    clf = GrowingMLPClassifier(strategy="north-select", device="cuda", **GROWS).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    assert again.hidden_layer_sizes_ == clf.hidden_layer_sizes_
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


NORTH_INITIALIZERS = [RandomInit(), SelectInit(n_candidates=50),
                      PreActivationInit(n_candidates=50), WeightInit()]  # fmt: skip


@pytest.mark.parametrize("initializer", NORTH_INITIALIZERS, ids=lambda i: type(i).__name__)
def test_north_initializers_preserve_the_function_on_cuda(make_mlp, initializer):
    module = make_mlp(n_features=12, hidden=(5, 4), n_outputs=3, trained=True).cuda()
    g = torch.Generator().manual_seed(2)
    buffer = torch.randn(80, 12, generator=g).cuda()
    X = torch.randn(50, 12, generator=g).cuda()
    with torch.no_grad():
        before = module(X).clone()
    context = GrowthContext(module, buffer)
    for index, site in enumerate(module.growth_sites()):
        new = initializer(index, site, 3, context, torch.Generator().manual_seed(0))
        add_neurons(site, new)
        context.invalidate()
    assert module.hidden_layer_sizes == (8, 7)
    assert all(p.device.type == "cuda" for p in module.parameters())
    with torch.no_grad():
        torch.testing.assert_close(module(X), before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["ldl", "eigh", "svd"])
@pytest.mark.parametrize("width", [40, 300])
def test_activation_rank_on_cuda_matches_the_cpu(width, method):
    g = torch.Generator().manual_seed(width)
    # Singular values of H / sqrt(n) from 1 down to 1e-4 (the threshold is 0.01), none
    # within 5 % of the threshold.
    n = 600
    s = torch.logspace(0, -4, width, dtype=torch.float64)
    s = s[(s / 0.01 - 1).abs() > 0.05]
    U = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(width, len(s), generator=g, dtype=torch.float64))[0]
    H = ((U * (s * n**0.5)) @ V.T).float()
    expected = activation_rank(H, method="svd")
    assert 0 < expected < width
    assert activation_rank(H.cuda(), method=method) == expected


def test_activation_trigger_decides_the_same_on_cuda(make_mlp):
    module = make_mlp(n_features=20, hidden=(30, 25), n_outputs=3, trained=True)
    buffer = torch.randn(200, 20, generator=torch.Generator().manual_seed(4))
    decisions = {}
    for device in ("cpu", "cuda"):
        m = module.to(device)
        context = GrowthContext(m, buffer.to(device))
        trigger = ActivationTrigger(gamma=0.97, rounding="floor_threshold")
        trigger.initialize(m.growth_sites(), context)
        # A later evaluation on other samples (the initial one sets the baseline).
        context = GrowthContext(m, 3 * buffer.to(device) - 1)
        decisions[device] = [trigger(i, s, context) for i, s in enumerate(m.growth_sites())]
    assert decisions["cuda"] == decisions["cpu"]
