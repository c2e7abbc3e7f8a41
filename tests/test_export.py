"""Exporting the grown network (``sklearn_north.export``), checked after real growing fits:
the exported module's softmax is ``predict_proba`` on held-out digits, it holds torch
classes only, loads and predicts in a process that cannot import ``sklearn_north``, holds
copies of the weights, its static architecture refits to the grown widths, and its ONNX
file predicts the same under onnxruntime.

Every architecture at a few units: the MLP with each activation, the small CNN with and
without BatchNorm, VGG-11 and WRN-28 (fits of a fraction of a second on 500 digits).
"""

import copy
import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from sklearn_north import GrowingCNNClassifier, GrowingMLPClassifier
from sklearn_north.export import static_architecture, to_onnx, to_torch

# Initial widths far below what digits grows them to, so that every fit grows.
ESTIMATORS = {
    **{
        f"mlp-{activation}": GrowingMLPClassifier(
            hidden_layer_sizes=(6, 6), activation=activation, n_candidates=20, max_epochs=2
        )
        for activation in ("relu", "tanh", "logistic", "identity")
    },
    "small": GrowingCNNClassifier(widths=(4, 4, 8), max_epochs=2),
    "small-bn": GrowingCNNClassifier(widths=(4, 4, 8), batch_norm=True, max_epochs=2),
    "vgg11": GrowingCNNClassifier(
        architecture="vgg11", widths=(2,) * 8 + (4, 4), max_widths=8, max_epochs=2
    ),
    "wrn28": GrowingCNNClassifier(
        architecture="wrn28", widths=(2, 2, 2, 2), max_widths=8, max_epochs=2
    ),
}
NAMES = list(ESTIMATORS)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    # Training rows, held-out rows.
    return (X[:500], y[:500]), (X[1000:1300], y[1000:1300])


@pytest.fixture(scope="module")
def fitted(digits):
    """name -> a grown estimator (fitted once per module; read only)."""
    (X, y), _ = digits
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = clone(ESTIMATORS[name]).set_params(random_state=0).fit(X, y)
        return cache[name]

    return get


def inputs(estimator, X):
    """What the exported module takes: rows (MLP) or images (CNN)."""
    if isinstance(estimator, GrowingCNNClassifier):
        X = X.reshape(-1, *estimator.input_shape_)
    return torch.from_numpy(np.ascontiguousarray(X))


def logits(module, X):
    with torch.no_grad():
        return module(X)


def initial_widths(estimator):
    return tuple(estimator._widths()[0])


@pytest.mark.parametrize("name", NAMES)
def test_softmax_of_the_export_is_predict_proba(fitted, digits, name):
    estimator = fitted(name)
    _, (X_test, _) = digits
    # A real growing fit: every site was given more units than it started with.
    assert estimator.hidden_layer_sizes_ != initial_widths(estimator)
    assert len(estimator.growth_history_) > 0
    module = to_torch(estimator)
    out = logits(module, inputs(estimator, X_test))
    assert out.shape == (len(X_test), len(estimator.classes_))
    proba = out.softmax(dim=1).numpy()
    np.testing.assert_allclose(proba, estimator.predict_proba(X_test), rtol=0, atol=1e-5)
    assert (estimator.classes_[out.argmax(dim=1).numpy()] == estimator.predict(X_test)).all()


def conv_and_linear_widths(module):
    """Output widths of the export's convs (WRN: each group's first conv, the sites' own
    neurons) and of its hidden Linear layers, in forward order."""
    if isinstance(module, torch.fx.GraphModule):
        return (
            module.stem.out_channels,
            *(getattr(module, f"group{g}").block1.conv1.out_channels for g in (1, 2, 3)),
        )
    widths = [m.out_channels for m in module if isinstance(m, nn.Conv2d)]
    widths += [m.out_features for m in module if isinstance(m, nn.Linear)][:-1]
    return tuple(widths)


@pytest.mark.parametrize("name", NAMES)
def test_export_holds_standard_torch_layers_of_the_grown_widths(fitted, name):
    estimator = fitted(name)
    module = to_torch(estimator)
    modules = {type(m).__module__ for m in module.modules()}
    assert all(m.startswith("torch.") for m in modules), modules
    assert not any(m.training for m in module.modules())
    assert all(p.device.type == "cpu" for p in module.parameters())
    assert conv_and_linear_widths(module) == estimator.hidden_layer_sizes_
    if name == "wrn28":
        assert isinstance(module, torch.fx.GraphModule)
        assert module.code.count(" + ") == 12  # one residual addition per block
    else:
        assert type(module) is nn.Sequential
    kinds = {type(m) for m in module.modules()}
    activation = {
        "mlp-relu": nn.ReLU,
        "mlp-tanh": nn.Tanh,
        "mlp-logistic": nn.Sigmoid,
    }.get(name, None if name == "mlp-identity" else nn.ReLU)
    if activation is not None:
        assert activation in kinds
    if name == "mlp-identity":
        assert kinds == {nn.Sequential, nn.Linear}
    assert (nn.BatchNorm2d in kinds) == (name in ("small-bn", "wrn28"))
    if name in ("small", "small-bn", "vgg11"):
        pools = [m for m in module if isinstance(m, nn.MaxPool2d)]
        assert len(pools) == sum(estimator.module_.pools)
        assert all(p.ceil_mode and p.kernel_size == 2 and p.stride == 2 for p in pools)


@pytest.mark.parametrize("name", NAMES)
def test_export_holds_copies_of_the_weights(fitted, name):
    estimator = fitted(name)
    module = to_torch(estimator)
    ours = {t.data_ptr() for t in [*module.parameters(), *module.buffers()] if t.numel()}
    theirs = {t.data_ptr() for t in [*estimator.module_.parameters(), *estimator.module_.buffers()]}
    assert not ours & theirs
    # Same values in the same tensors (BatchNorm running statistics included).
    mine = sorted(t.sum().item() for t in module.state_dict().values() if t.is_floating_point())
    source = sorted(
        t.sum().item() for t in estimator.module_.state_dict().values() if t.is_floating_point()
    )
    assert mine == source


@pytest.mark.parametrize("name", ["mlp-relu", "small-bn"])
def test_training_the_estimator_further_leaves_the_export_unchanged(fitted, digits, name):
    (X, y), (X_test, _) = digits
    estimator = copy.deepcopy(fitted(name))
    module = to_torch(estimator)
    before = logits(module, inputs(estimator, X_test)).clone()
    proba_before = estimator.predict_proba(X_test)
    estimator.partial_fit(X, y)
    assert np.abs(estimator.predict_proba(X_test) - proba_before).max() > 1e-4
    assert torch.equal(logits(module, inputs(estimator, X_test)), before)


CHILD = textwrap.dedent(
    """
    import pickle
    import sys

    sys.modules["sklearn_north"] = None  # any import of the package fails from here on
    try:
        import sklearn_north  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("sklearn_north could be imported")

    import torch

    names, folder = sys.argv[1].split(","), sys.argv[2]
    for name in names:
        X = torch.load(f"{folder}/{name}.X.pt")
        saved = torch.load(f"{folder}/{name}.pt", weights_only=False)
        with open(f"{folder}/{name}.pkl", "rb") as f:
            pickled = pickle.load(f)
        with torch.no_grad():
            torch.save([saved(X), pickled(X)], f"{folder}/{name}.out.pt")
    loaded = sorted(m for m in sys.modules if m.startswith("sklearn_north") and sys.modules[m])
    if loaded:
        raise SystemExit(f"loaded {loaded}")
    """
)


def test_export_loads_and_predicts_where_sklearn_north_cannot_be_imported(fitted, digits, tmp_path):
    _, (X_test, _) = digits
    expected = {}
    for name in NAMES:
        estimator = fitted(name)
        module = to_torch(estimator)
        X = inputs(estimator, X_test)
        torch.save(module, tmp_path / f"{name}.pt")
        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(module))
        torch.save(X, tmp_path / f"{name}.X.pt")
        expected[name] = (logits(module, X), estimator.predict_proba(X_test))
    # -I: no PYTHONPATH, no user site; the child's first lines block the (editable)
    # installed package; the working directory is not the repository.
    subprocess.run(
        [sys.executable, "-I", "-c", CHILD, ",".join(NAMES), str(tmp_path)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name, (out, proba) in expected.items():
        for got in torch.load(tmp_path / f"{name}.out.pt"):
            torch.testing.assert_close(got, out, rtol=0, atol=1e-5)
            np.testing.assert_allclose(got.softmax(dim=1).numpy(), proba, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_static_architecture_refits_to_the_grown_widths(fitted, digits, name):
    (X, y), _ = digits
    estimator = fitted(name)
    architecture = static_architecture(estimator)
    assert tuple(architecture["widths"]) == estimator.hidden_layer_sizes_
    assert len(architecture["sites"]) == len(architecture["widths"])
    assert architecture["n_outputs"] == len(estimator.classes_)
    if name.startswith("mlp"):
        assert architecture["input_shape"] == (X.shape[1],)
        assert architecture["activation"] == estimator.activation
    else:
        assert architecture["input_shape"] == estimator.input_shape_
    if name in ("small", "small-bn", "vgg11"):
        split = (*architecture["conv_widths"], *architecture["dense_widths"])
        assert split == estimator.hidden_layer_sizes_
        assert architecture["batch_norm"] == (name == "small-bn")
    if name == "wrn28":
        grown = estimator.hidden_layer_sizes_
        assert (architecture["stem_width"], *architecture["group_widths"]) == grown
        assert architecture["blocks_per_group"] == 4
    # Written as JSON and read back (lists for tuples), its parameters make a static
    # network of the grown widths.
    params = json.loads(json.dumps(architecture))["params"]
    width_names = ("hidden_layer_sizes", "max_hidden_layer_sizes")
    if name.startswith("mlp"):
        assert params["activation"] == estimator.activation
    else:
        width_names = ("widths", "max_widths")
        assert params["architecture"] == estimator.architecture
    # A static network, and a cap at those widths too.
    assert params["strategy"] == "static"
    assert [tuple(params[w]) for w in width_names] == [estimator.hidden_layer_sizes_] * 2
    static = clone(estimator).set_params(**params, max_epochs=1).fit(X, y)
    assert static.hidden_layer_sizes_ == estimator.hidden_layer_sizes_
    assert len(static.growth_history_) == 0
    shapes = {k: v.shape for k, v in to_torch(static).state_dict().items()}
    assert shapes == {k: v.shape for k, v in to_torch(estimator).state_dict().items()}


# The default run exports one network (the exporter's first call costs seconds).
ONNX_NAMES = [
    name if name == "small-bn" else pytest.param(name, marks=pytest.mark.slow) for name in NAMES
]


@pytest.mark.parametrize("name", ONNX_NAMES)
def test_onnx_predicts_as_the_estimator(fitted, digits, tmp_path, name):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    _, (X_test, _) = digits
    estimator = fitted(name)
    path = to_onnx(estimator, tmp_path / "net.onnx")
    assert path == tmp_path / "net.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    X = inputs(estimator, X_test).numpy()
    (out,) = session.run(["logits"], {"input": X})
    proba = torch.from_numpy(out).softmax(dim=1).numpy()
    np.testing.assert_allclose(proba, estimator.predict_proba(X_test), rtol=0, atol=1e-5)
    # The batch size is dynamic: a single sample predicts as in the batch.
    (one,) = session.run(["logits"], {"input": X[:1]})
    np.testing.assert_allclose(one, out[:1], rtol=0, atol=1e-5)


def test_to_torch_device_argument(fitted):
    estimator = fitted("small")
    module = to_torch(estimator, device=torch.device("cpu"))
    assert all(p.device == torch.device("cpu") for p in module.parameters())
    with pytest.raises(ValueError, match="device='not-a-device'"):
        to_torch(estimator, device="not-a-device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_to_torch_on_cuda_without_cuda_is_a_clear_error(fitted):
    # The estimators' own device check (InvalidParameterError, a ValueError).
    with pytest.raises(ValueError, match="CUDA is not available"):
        to_torch(fitted("mlp-relu"), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_of_a_gpu_fit_to_cpu_and_cuda(digits):
    (X, y), (X_test, _) = digits
    estimator = clone(ESTIMATORS["small-bn"]).set_params(device="cuda", random_state=0)
    estimator.fit(X, y)
    proba = estimator.predict_proba(X_test)
    for device in ("cpu", "cuda"):
        module = to_torch(estimator, device=device)
        assert all(p.device.type == device for p in module.parameters())
        out = logits(module, inputs(estimator, X_test).to(device))
        np.testing.assert_allclose(out.softmax(dim=1).cpu().numpy(), proba, atol=1e-5)


@pytest.mark.parametrize("export", [to_torch, static_architecture])
def test_what_cannot_be_exported_is_a_clear_error(export):
    with pytest.raises(NotFittedError):
        export(GrowingMLPClassifier())
    with pytest.raises(TypeError, match="GrowingMLPClassifier or GrowingCNNClassifier"):
        export(MLPClassifier())
    pipeline = make_pipeline(StandardScaler(), GrowingMLPClassifier())
    with pytest.raises(TypeError, match=r"pipeline\[-1\]"):
        export(pipeline)


def test_to_onnx_checks_opset_version(fitted, tmp_path):
    with pytest.raises(TypeError, match="opset_version"):
        to_onnx(fitted("mlp-relu"), tmp_path / "net.onnx", opset_version="17")
