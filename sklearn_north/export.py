"""Export a fitted growing estimator's network: a plain torch module, its widths as a static
architecture, and ONNX.

The grown network of ``GrowingMLPClassifier`` and ``GrowingCNNClassifier`` is made of
growable modules of this package (growth sites, activation recording). After ``fit`` it
is an ordinary network of fixed widths; the functions here hand it over to code that
knows nothing of this package:

- ``to_torch``: a torch module of standard layers with copies of the trained weights,
  whose outputs are the estimator's logits. It needs torch only, so it can be pickled or
  ``torch.save``-d and loaded where ``sklearn_north`` is not installed.
- ``static_architecture``: the grown widths as a static architecture (a JSON-ready
  dict), with ``set_params``-ready parameters of a static estimator of those widths.
- ``to_onnx``: the same network as an ONNX file, through ``torch.onnx.export``.

Inputs of the exported network
------------------------------
- MLP: rows ``(n_samples, n_features)``, as the estimator takes them.
- CNN: images ``(n_samples, channels, height, width)``, ``input_shape_`` being
  ``(channels, height, width)``; rows as the estimator takes them become images with
  ``X.reshape(-1, *estimator.input_shape_)``. Images, not rows, because that is what
  torch's conv layers, torchvision-style pipelines and ONNX consumers pass around, and
  the ONNX graph's input then declares the image shape. A network that takes rows is one
  line away: ``nn.Sequential(nn.Unflatten(1, estimator.input_shape_), exported)``.

Inputs are ``float32`` tensors (``torch.from_numpy(X.astype(np.float32))``), preprocessed
as the estimator's were: a ``Pipeline``'s transforms are not part of the export (pass the
estimator, ``pipeline[-1]``, and apply ``pipeline[:-1].transform`` to the inputs).

Outputs are the logits of the estimator's network: ``logits.softmax(dim=1)`` is
``predict_proba`` (columns in the order of ``classes_``) and
``estimator.classes_[logits.argmax(dim=1)]`` is ``predict``.

Saving and loading
------------------
``torch.save(module, path)`` pickles the whole module; ``torch.load(path,
weights_only=False)`` loads it with torch alone (``weights_only=True``, torch's default,
refuses whole modules; like any pickle, load only files you trust). To load the weights
only, rebuild the same layers from ``static_architecture`` and load a ``state_dict``.
"""

import warnings
from numbers import Integral

import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._base import BaseGrowingClassifier, _check_device
from .nn.cnn import GrowableCNN
from .nn.mlp import GrowableMLP
from .nn.wrn import GrowableWRN

__all__ = ["static_architecture", "to_onnx", "to_torch"]

#: The package's activation names -> the standard torch layer computing the same forward
#: (the package's "relu", ``x.clamp_min(0)``, differs from ``torch.relu`` only in its
#: gradient at 0). ``"identity"`` adds no layer.
_ACTIVATION_LAYERS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid, "identity": None}


def to_torch(estimator, *, device="cpu"):
    """The fitted estimator's grown network as a torch module that needs torch only.

    The module is built from standard torch layers holding copies of the trained weights
    (BatchNorm running statistics included), in eval mode:

    - ``GrowingMLPClassifier``: ``nn.Sequential`` of ``Linear`` layers, each hidden one
      followed by its activation (``ReLU``, ``Tanh``, ``Sigmoid``; none for
      ``"identity"``).
    - ``GrowingCNNClassifier`` with ``architecture="small"`` or ``"vgg11"``:
      ``nn.Sequential`` of ``Conv2d`` (3x3, padding 1), ``BatchNorm2d`` (with
      ``batch_norm=True``), ``ReLU``, ``MaxPool2d(2, ceil_mode=True)`` where the
      architecture pools, then ``Flatten`` and ``Linear`` / ``ReLU`` layers.
    - ``architecture="wrn28"``: residual additions cannot be written as an
      ``nn.Sequential``; the module is a ``torch.fx.GraphModule`` whose submodules are
      standard layers (``BatchNorm2d``, ``ReLU``, ``Conv2d``, ``AdaptiveAvgPool2d``,
      ``Flatten``, ``Linear``) and whose ``forward`` is generated Python code calling them
      (``print(module.code)`` shows it). It pickles and loads with torch alone, trains,
      and exports to ONNX like any module. (``torch.jit.script`` is deprecated in torch
      2.13, and a ``torch.export`` program is not a trainable module.)

    Parameters
    ----------
    estimator : GrowingMLPClassifier or GrowingCNNClassifier
        A fitted estimator.
    device : str or torch.device, default="cpu"
        Where the exported module's weights are.

    Returns
    -------
    module : torch.nn.Module
        Takes ``float32`` rows ``(n_samples, n_features_in_)`` (MLP) or images
        ``(n_samples, *input_shape_)`` (CNN) and returns the logits
        ``(n_samples, n_classes)``; ``softmax(dim=1)`` of them is ``predict_proba``. The
        weights are copies: training the estimator further does not change them.

    Examples
    --------
    >>> import torch
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_north import GrowingMLPClassifier
    >>> from sklearn_north.export import to_torch
    >>> X, y = load_digits(return_X_y=True)
    >>> X = (X / 16).astype("float32")
    >>> clf = GrowingMLPClassifier(hidden_layer_sizes=(8,), max_epochs=2,
    ...                            random_state=0).fit(X, y)
    >>> module = to_torch(clf)
    >>> with torch.no_grad():
    ...     proba = module(torch.from_numpy(X)).softmax(dim=1).numpy()
    >>> bool(abs(proba - clf.predict_proba(X)).max() < 1e-5)
    True
    """
    module = _fitted_module(estimator)
    _check_device(device)  # the estimators' own check (InvalidParameterError: a ValueError)
    device = torch.device(device)
    if isinstance(module, GrowableMLP):
        exported = _mlp(module, device)
    elif isinstance(module, GrowableCNN):
        exported = _cnn(module, device)
    elif isinstance(module, GrowableWRN):
        exported = _wrn(module, device)
    else:
        raise TypeError(
            f"estimator: cannot export a network of type {type(module).__name__}; "
            f"to_torch knows GrowableMLP, GrowableCNN and GrowableWRN."
        )
    return exported.eval()


def static_architecture(estimator):
    """The fitted estimator's grown widths as a static architecture, to retrain elsewhere.

    Parameters
    ----------
    estimator : GrowingMLPClassifier or GrowingCNNClassifier
        A fitted estimator.

    Returns
    -------
    architecture : dict
        Plain Python values (``json.dumps`` writes it as it is):

        - ``"estimator"``: the estimator's class name.
        - ``"architecture"``: ``"mlp"``, or the CNN's ``"small"``, ``"vgg11"``,
          ``"wrn28"``.
        - ``"input_shape"``: ``(n_features,)`` (MLP) or ``(channels, height, width)``.
        - ``"n_outputs"``: the number of classes (the output layer's width).
        - ``"sites"``, ``"widths"``: the growth sites' names and grown widths, in the
          order of ``hidden_layer_sizes_`` (``widths_``).
        - MLP: ``"activation"``. ``"small"``/``"vgg11"``: ``"conv_widths"``,
          ``"dense_widths"``, ``"pools"`` (whether a 2x2 max-pool, ceil mode, follows
          each 3x3 conv) and ``"batch_norm"``. ``"wrn28"``: ``"stem_width"``,
          ``"group_widths"`` and ``"blocks_per_group"``.
        - ``"params"``: parameters that make a clone of the estimator a static network
          of these widths: ``strategy="static"``, no schedule and no growth gate, the
          widths as both the initial and the maximum widths, and the architecture's
          parameters (``activation``; ``architecture``, ``batch_norm``,
          ``input_shape``). Its other parameters (optimizer, epochs, ...) are the
          estimator's.

    Examples
    --------
    >>> from sklearn.base import clone
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_north import GrowingMLPClassifier
    >>> from sklearn_north.export import static_architecture
    >>> X, y = load_digits(return_X_y=True)
    >>> grown = GrowingMLPClassifier(hidden_layer_sizes=(8,), max_epochs=2,
    ...                              random_state=0).fit(X / 16, y)
    >>> params = static_architecture(grown)["params"]
    >>> static = clone(grown).set_params(**params).fit(X / 16, y)
    >>> static.hidden_layer_sizes_ == grown.hidden_layer_sizes_
    True
    """
    module = _fitted_module(estimator)
    sites = [site.name for site in module.growth_sites()]
    widths = tuple(int(w) for w in estimator.hidden_layer_sizes_)
    common = {
        "estimator": type(estimator).__name__,
        "n_outputs": int(estimator.n_outputs_),
        "sites": sites,
        "widths": widths,
    }
    static = {"strategy": "static", "schedule": None, "growth_gate": None}
    if isinstance(module, GrowableMLP):
        return {
            **common,
            "architecture": "mlp",
            "input_shape": (int(module.layers[0].in_features),),
            "activation": module.activation,
            "params": {
                **static,
                "hidden_layer_sizes": widths,
                "max_hidden_layer_sizes": widths,
                "activation": module.activation,
            },
        }
    input_shape = tuple(int(s) for s in module.input_shape)
    cnn_params = {
        **static,
        "architecture": estimator.architecture,
        "widths": widths,
        "max_widths": widths,
        "input_shape": input_shape,
    }
    if isinstance(module, GrowableWRN):
        return {
            **common,
            "architecture": "wrn28",
            "input_shape": input_shape,
            "stem_width": widths[0],
            "group_widths": widths[1:],
            "blocks_per_group": len(module.groups[0]),
            "params": {**cnn_params, "batch_norm": "auto"},
        }
    n_conv = len(module.convs)
    return {
        **common,
        "architecture": estimator.architecture,
        "input_shape": input_shape,
        "conv_widths": widths[:n_conv],
        "dense_widths": widths[n_conv:],
        "pools": tuple(module.pools),
        "batch_norm": module.batch_norm,
        "params": {**cnn_params, "batch_norm": module.batch_norm},
    }


def to_onnx(estimator, path, *, opset_version=None):
    """Write the fitted estimator's grown network as an ONNX file.

    The network of ``to_torch`` (on the CPU) through ``torch.onnx.export``'s default
    (``torch.export``-based) exporter, which needs the packages ``onnx`` and
    ``onnxscript``. The graph has one input, ``"input"``: ``float32`` rows
    ``(batch, n_features_in_)`` (MLP) or images ``(batch, *input_shape_)`` (CNN), with a
    dynamic batch size, and one output, ``"logits"``; their softmax is ``predict_proba``.
    The weights are stored inside the file (which ONNX limits to 2 GiB).

    Parameters
    ----------
    estimator : GrowingMLPClassifier or GrowingCNNClassifier
        A fitted estimator.
    path : str or path-like
        The ``.onnx`` file to write.
    opset_version : int or None, default=None
        ONNX opset; ``None``: the exporter's default.

    Returns
    -------
    path : str or path-like
        ``path``, as given.

    Examples
    --------
    Run it with ``onnxruntime``::

        import onnxruntime
        session = onnxruntime.InferenceSession(path)
        (logits,) = session.run(None, {"input": X.astype("float32")})
    """
    if opset_version is not None and (
        not isinstance(opset_version, Integral) or isinstance(opset_version, bool)
    ):
        raise TypeError(f"opset_version must be an int or None, got {opset_version!r}.")
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError as exc:
            raise ImportError(
                f"to_onnx needs the package {package!r} (torch.onnx.export's exporter "
                f"does): pip install onnx onnxscript, or sklearn-north[export]."
            ) from exc
    module = to_torch(estimator, device="cpu")
    # Two samples: torch.export specialises a dimension of size 1, not one of size 2.
    example = torch.zeros((2, *_input_shape(estimator)))
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        # Raised inside torch's exporter (torch 2.13 with onnxscript 0.7), about torch's
        # own code: nothing a caller can act on.
        warnings.filterwarnings(
            "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
        )
        torch.onnx.export(
            module,
            (example,),
            path,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=opset_version,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


# -- helpers -------------------------------------------------------------------------------


def _fitted_module(estimator):
    if not isinstance(estimator, BaseGrowingClassifier):
        hint = ""
        if hasattr(estimator, "steps"):
            hint = (
                " For a Pipeline, pass its last step (pipeline[-1]) and apply the other "
                "steps' transforms to the inputs yourself."
            )
        raise TypeError(
            f"estimator must be a fitted GrowingMLPClassifier or GrowingCNNClassifier, "
            f"got {type(estimator).__name__}.{hint}"
        )
    check_is_fitted(estimator)
    return estimator.module_


def _input_shape(estimator):
    if hasattr(estimator, "input_shape_"):
        return tuple(estimator.input_shape_)
    return (estimator.n_features_in_,)


def _copy(layer, source, device):
    """``layer`` (built on the meta device: no memory, no draw from torch's random
    generator) on ``device``, holding copies of ``source``'s parameters and buffers."""
    layer = layer.to_empty(device=device)
    layer.load_state_dict(source.state_dict())  # copies, also across devices
    return layer


def _linear(source, device):
    layer = nn.Linear(
        source.in_features,
        source.out_features,
        bias=source.bias is not None,
        device="meta",
        dtype=source.weight.dtype,
    )
    return _copy(layer, source, device)


def _conv(source, device):
    layer = nn.Conv2d(
        source.in_channels,
        source.out_channels,
        source.kernel_size,
        stride=source.stride,
        padding=source.padding,
        dilation=source.dilation,
        groups=source.groups,
        bias=source.bias is not None,
        padding_mode=source.padding_mode,
        device="meta",
        dtype=source.weight.dtype,
    )
    return _copy(layer, source, device)


def _batch_norm(source, device):
    layer = nn.BatchNorm2d(
        source.num_features,
        eps=source.eps,
        momentum=source.momentum,
        affine=source.affine,
        track_running_stats=source.track_running_stats,
        device="meta",
        dtype=source.running_mean.dtype if source.running_mean is not None else None,
    )
    return _copy(layer, source, device)


def _mlp(module, device):
    activation = _ACTIVATION_LAYERS[module.activation]
    layers = []
    for layer in module.layers[:-1]:
        layers.append(_linear(layer, device))
        if activation is not None:
            layers.append(activation())
    layers.append(_linear(module.layers[-1], device))
    return nn.Sequential(*layers)


def _cnn(module, device):
    layers = []
    for i, conv in enumerate(module.convs):
        layers.append(_conv(conv, device))
        if module.batch_norm:
            layers.append(_batch_norm(module.norms[i], device))
        layers.append(nn.ReLU())
        if module.pools[i]:
            # As the network's pooling: a side of 1 stays 1.
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers.append(nn.Flatten())
    for layer in module.dense[:-1]:
        layers += [_linear(layer, device), nn.ReLU()]
    layers.append(_linear(module.dense[-1], device))
    return nn.Sequential(*layers)


class _PreActBlock(nn.Module):
    """Tracing template of one pre-activation block, from standard layers (``_wrn``
    traces it into a ``GraphModule``; the export holds no instance of this class)."""

    def __init__(self, block, device):
        super().__init__()
        self.bn1 = _batch_norm(block.bn1, device)
        self.relu1 = nn.ReLU()
        self.conv1 = _conv(block.conv1, device)
        self.bn2 = _batch_norm(block.bn2, device)
        self.relu2 = nn.ReLU()
        self.conv2 = _conv(block.conv2, device)
        self.proj = None if block.proj is None else _conv(block.proj, device)

    def forward(self, x):
        r = self.relu1(self.bn1(x))
        h = self.relu2(self.bn2(self.conv1(r)))
        skip = x if self.proj is None else self.proj(r)
        return self.conv2(h) + skip


def _wrn(module, device):
    template = nn.Sequential()
    template.add_module("stem", _conv(module.stem, device))
    for g, blocks in enumerate(module.groups):
        group = nn.Sequential()
        for b, block in enumerate(blocks):
            group.add_module(f"block{b + 1}", _PreActBlock(block, device))
        template.add_module(f"group{g + 1}", group)
    template.add_module("head_bn", _batch_norm(module.head_bn, device))
    template.add_module("head_relu", nn.ReLU())
    template.add_module("pool", nn.AdaptiveAvgPool2d(1))  # the global mean over positions
    template.add_module("flatten", nn.Flatten())
    template.add_module("fc", _linear(module.fc, device))
    # Tracing keeps the standard layers as submodules and turns the blocks' forward into
    # the graph module's own code; containers become plain torch.nn.Module objects.
    return torch.fx.symbolic_trace(template)
