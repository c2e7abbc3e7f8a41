"""The CUDA path: every strategy fits and grows on a GPU (the MLP's and the CNN's), the maths
there agrees with the CPU's, and a model fitted on a GPU loads and predicts on a machine
without one.

Skipped where torch sees no CUDA device (CI has none). On a GPU machine:
``python -m pytest tests/test_cuda.py``.
"""

import copy
import json
import os
import pickle
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sklearn_north import STRATEGIES, GrowingCNNClassifier, GrowingMLPClassifier
from sklearn_north._cnn import _DENSE_ONLY
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
from sklearn_north.nn import GrowableCNN

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


# -- the CNN ---------------------------------------------------------------------------------

# The small CNN at a few channels: its convs grow on digits within a few epochs.
CNN_INITIAL = (4, 4, 8)
CNN_GROWS = dict(widths=CNN_INITIAL, max_widths=(16, 16, 32), max_epochs=3, batch_size=64,
                 lr=1e-2, n_candidates=16, random_state=0)  # fmt: skip
CNN_STRATEGIES = [n for n in STRATEGIES if n != "static" and n not in _DENSE_ONLY]
#: Every activation source the CNN takes (its default may change).
CNN_SOURCES = sorted(GrowingCNNClassifier._parameter_constraints["activation_source"][0].options)


@contextmanager
def float32_convolutions():
    """cuDNN convolutions in float32 proper within the block: by default they may run in
    TF32 (a 10-bit mantissa), which the CPU's float32 results differ from by about 1e-3."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("activation_source", CNN_SOURCES)
@pytest.mark.parametrize("name", CNN_STRATEGIES)
def test_every_cnn_strategy_grows_on_cuda(digits, name, activation_source):
    X, y = digits
    clf = GrowingCNNClassifier(
        strategy=name, activation_source=activation_source, device="cuda", **CNN_GROWS
    ).fit(X, y)
    grown = set(clf.growth_history_["layer"])
    assert grown & {0, 1}  # a conv grew
    assert all(clf.widths_[site] > CNN_INITIAL[site] for site in grown)
    assert clf.widths_ == clf.module_.widths
    for p in clf.module_.parameters():
        assert p.device.type == "cuda"
        state = clf.net_.optimizer_.state[p]
        assert state["exp_avg"].shape == p.shape and state["exp_avg"].device == p.device
        assert state["exp_avg_sq"].shape == p.shape and state["exp_avg_sq"].device == p.device
    proba = clf.predict_proba(X)
    assert isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    # It learns (chance: 0.1; on the CPU these settings reach 0.6-0.85, seeds 0-2).
    assert clf.score(X, y) > 0.4


def test_cnn_static_and_schedule_on_cuda(digits):
    X, y = digits
    static = GrowingCNNClassifier(strategy="static", device="cuda", **CNN_GROWS).fit(X, y)
    assert static.widths_ == CNN_INITIAL and len(static.growth_history_) == 0
    target = (8, 10, 12)
    scheduled = GrowingCNNClassifier(
        strategy="north-random",
        schedule="linear",
        schedule_target=target,
        device="cuda",
        **CNN_GROWS,
    ).fit(X, y)
    assert scheduled.widths_ == target
    assert all(p.device.type == "cuda" for p in scheduled.module_.parameters())


CONV_INITIALIZERS = [RandomInit(), SelectInit(n_candidates=24), WeightInit()]


@pytest.mark.parametrize("initializer", CONV_INITIALIZERS, ids=lambda i: type(i).__name__)
def test_conv_growth_preserves_the_function_on_cuda(initializer):
    # conv -> BatchNorm -> conv, conv -> pool -> flatten -> dense, dense -> dense; the new
    # channels' parameters and Adam state on the GPU.
    torch.manual_seed(0)
    module = GrowableCNN((2, 8, 8), (4, 6), (True, True), (10,), 5, batch_norm=True).cuda()
    X = torch.randn(16, 2, 8, 8, generator=torch.Generator().manual_seed(1)).cuda()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(3):  # non-trivial weights, BatchNorm statistics and Adam state
        optimizer.zero_grad()
        module(X).square().mean().backward()
        optimizer.step()
    module.eval()
    with float32_convolutions():
        with torch.no_grad():
            before = module(X).clone()
        context = GrowthContext(module, X.flatten(1))
        for index in range(len(module.growth_sites())):
            site = module.growth_sites()[index]
            new = initializer(index, site, 3, context, torch.Generator().manual_seed(0))
            add_neurons(site, new, optimizer=optimizer)
            context.invalidate()
        with torch.no_grad():
            after = module(X)
    assert module.widths == (7, 9, 13)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for p in module.parameters():
        assert p.device.type == "cuda"
        assert optimizer.state[p]["exp_avg"].shape == p.shape
        assert optimizer.state[p]["exp_avg"].device == p.device


# -- fitted on a GPU, loaded where there is none ----------------------------------------------

#: Loads ``model.pkl`` of the folder it is given and prints, as one JSON line, whether it
#: sees CUDA, where the loaded network is, and its predictions on ``X.npy``.
CPU_ONLY_CHILD = """
import json, pickle, sys
from pathlib import Path

import numpy as np
import torch

folder = Path(sys.argv[1])
model = pickle.loads((folder / "model.pkl").read_bytes())
X = np.load(folder / "X.npy")
print(json.dumps({
    "cuda": torch.cuda.is_available(),
    "devices": sorted({p.device.type for p in model.module_.parameters()}),
    "widths": list(model.hidden_layer_sizes_),
    "proba": model.predict_proba(X).tolist(),
    "labels": model.predict(X).tolist(),
}))
"""


def cuda_model(kind):
    if kind == "mlp":
        return GrowingMLPClassifier(strategy="north-select", device="cuda", **GROWS)
    source = kind.removeprefix("cnn-")
    return GrowingCNNClassifier(activation_source=source, device="cuda", **CNN_GROWS)


@pytest.mark.parametrize("kind", ["mlp", *(f"cnn-{source}" for source in CNN_SOURCES)])
def test_cuda_model_loads_and_predicts_on_a_machine_without_cuda(digits, tmp_path, kind):
    X, y = digits
    clf = cuda_model(kind).fit(X, y)
    assert len(clf.growth_history_) > 0  # the growth state is part of what is pickled
    with float32_convolutions():
        expected = clf.predict_proba(X)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(clf))
    np.save(tmp_path / "X.npy", np.asarray(X, dtype=np.float32))
    child = subprocess.run(
        [sys.executable, "-c", CPU_ONLY_CHILD, str(tmp_path)],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["cuda"] is False and report["devices"] == ["cpu"]
    assert tuple(report["widths"]) == clf.hidden_layer_sizes_
    # The CPU's float32 against the GPU's (TF32 off): rounding apart, the same numbers.
    np.testing.assert_allclose(np.array(report["proba"]), expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(report["labels"], clf.classes_[expected.argmax(axis=1)])
    # The model in this process is untouched by pickling.
    assert all(p.device.type == "cuda" for p in clf.module_.parameters())


def test_cuda_cnn_predicts_as_its_network_on_the_cpu(digits):
    # The estimator's predictions on the GPU are its network's function: a copy of the
    # network moved to the CPU computes the same probabilities.
    X, y = digits
    clf = GrowingCNNClassifier(device="cuda", **CNN_GROWS).fit(X, y)
    with float32_convolutions():
        proba = clf.predict_proba(X)
    module = copy.deepcopy(clf.module_).cpu().eval()
    with torch.no_grad():
        logits = module(torch.as_tensor(X, dtype=torch.float32))
    np.testing.assert_allclose(proba, torch.softmax(logits, dim=1).numpy(), rtol=0, atol=1e-5)


def test_wrn28_grows_its_groups_on_cuda(digits):
    X, y = digits
    clf = GrowingCNNClassifier(
        architecture="wrn28",
        widths=(2, 2, 2, 2),
        max_widths=(6, 6, 6, 6),
        max_epochs=2,
        batch_size=64,
        lr=1e-2,
        n_candidates=8,
        random_state=0,
        device="cuda",
    ).fit(X, y)
    assert clf.widths_ != (2, 2, 2, 2) and clf.widths_ == clf.module_.widths
    for p in clf.module_.parameters():
        assert p.device.type == "cuda"
        assert clf.net_.optimizer_.state[p]["exp_avg"].shape == p.shape
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1, rtol=1e-5)
