"""``GrowingCNNClassifier``: a convolutional network that grows its channels."""

import math
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted

from ._base import (
    _FEATURE_ATTRIBUTES,
    _FITTED_ATTRIBUTES,
    BaseGrowingClassifier,
    _batch_size,
    _check_maximum,
    _per_layer,
)
from .growth import STRATEGIES
from .nn.cnn import ARCHITECTURES, GrowableCNN
from .nn.wrn import WRN28_WIDTHS, GrowableWRN

#: Strategies whose initializers have no conv form (Pre-activation: the paper defines it
#: for dense layers).
_DENSE_ONLY = {"north-pre"}


class GrowingCNNClassifier(BaseGrowingClassifier):
    """Convolutional network classifier whose channels (and hidden dense layers) grow.

    The growth engine of ``GrowingMLPClassifier``, on convolutions: a conv's output
    channels are its neurons (Maile et al., 2022, section 4.3). New channels get a filter
    and a zero bias, zero weights in every conv (or dense layer) that reads them, and
    identity BatchNorm entries, so the network's function is unchanged when they are
    added. The activation metric of a conv counts the directions of its post-activations
    (after its pooling) over every position of every sample.

    Parameters
    ----------
    architecture : {"small", "vgg11", "wrn28"}, default="small"
        ``"small"``: two conv blocks (3x3 conv, ReLU, 2x2 max-pool) and one hidden dense
        layer, standard widths 32-64-128, for small images (digits 8x8, MNIST 28x28).
        ``"vgg11"``: the paper's VGG-11 (8 convs of standard widths 64 ... 512, pools
        after convs 1, 2, 4, 6 and 8, two hidden dense layers of 4096), for 32x32 images.
        All convs and hidden dense layers grow. ``"wrn28"``: the paper's pre-activation
        WideResNet-28, standard widths 16 (stem), 16, 32, 64 (its three residual groups);
        the stem and each group grow, a group's convs, residual stream and BatchNorms
        together (see ``sklearn_north.nn.GrowableWRN``). A static WRN-28-k:
        ``widths=(16, 16 * k, 32 * k, 64 * k)`` with ``strategy="static"``.
    widths : float or sequence of int, default=0.25
        Initial widths: a multiplier of the architecture's standard widths (the paper
        starts at 0.25), or one width per site (convs first, then hidden dense layers).
    max_widths : "auto", float, int, sequence of int or None, default="auto"
        Maximum widths: a float multiplies the standard widths, an int applies to every
        site, a sequence gives one per site. ``"auto"``: the paper's caps, 2.0 for
        ``"small"`` and ``"vgg11"``, 6.0 for ``"wrn28"``. ``None``: 8 times each site's
        initial width.
    batch_norm : "auto" or bool, default="auto"
        A BatchNorm layer after every conv of ``"small"`` and ``"vgg11"`` (``"auto"``:
        none, as the paper's VGG). ``"wrn28"`` is built from pre-activation blocks and
        has BatchNorm by definition (``"auto"`` or ``True``; ``False`` is an error).
    input_shape : tuple (channels, height, width) or None, default=None
        How to read 2-D input ``(n_samples, n_features)``: each row holds one image in
        NCHW order (channels, then rows, then columns). ``None``: a square single-channel
        image when ``n_features`` is a perfect square (digits: 8x8), else a single row of
        ``n_features`` pixels. 4-D input ``(n_samples, channels, height, width)`` gives
        its own shape (``input_shape`` must then match or be None).
    strategy : str or tuple (trigger, initializer), default="north-select"
        As in ``GrowingMLPClassifier``. On convolutions: ``"north-select"``,
        ``"north-random"``, ``"north-weight"``, ``"gradmax"`` (GradMax's exact conv
        auxiliary gradient, through pooling and BatchNorm), ``"firefly"``, ``"nest"``,
        ``"static"`` and custom pairs; ``"north-pre"`` is defined by the paper for dense
        layers only (``ValueError``).
    schedule : {"linear", "batched"} or None, default=None
        As in ``GrowingMLPClassifier``.
    schedule_target : int, sequence of int or None, default=None
        The schedule's target widths, per site. ``None``: the architecture's standard
        widths (1x, within ``widths`` and ``max_widths``), the paper's CNN presets.
    schedule_end : float in (0, 1], default=0.25
        Fraction of training by which the schedule reaches its target (the paper's CNN
        presets: 25 %).
    gamma : float in (0, 1] or None, default=None
        ``None``: 0.9 for the activation trigger, with a running-maximum baseline (the
        paper's CNN protocol: late conv layers have a near-zero metric at initialisation),
        and the weight trigger's 0.99.
    trigger_rounding, epsilon, trigger_interval, growth_gate
        As in ``GrowingMLPClassifier``.
    n_candidates : int, default=100
        Candidate filters scored per growth event by ``north-select`` (the paper's 100).
    buffer_size : int or None, default=None
        With ``activation_source="buffer"``: recent training images the activation
        metric is measured on, recomputed with the current weights at every evaluation.
        ``None``: one mini-batch (``batch_size``).
    activation_source : {"training", "buffer"}, default="training"
        ``"training"``: the activation metric and ``north-select`` read the current
        training mini-batch's activations as its forward pass computed them (the
        authors' CNN protocol; no second forward pass). After a site grows, the batch's
        activations are computed anew with the current weights. ``"buffer"``: a forward
        pass of the last ``buffer_size`` training images at every evaluation, as the
        MLP's default.
    optimizer, optimizer_params, lr, batch_size, max_epochs, alpha, shuffle, tol,
    n_iter_no_change, early_stopping, validation_fraction, callbacks, device, n_threads,
    warm_start, random_state, verbose
        As in ``GrowingMLPClassifier``.

    Attributes
    ----------
    widths_ : tuple of int
        Final widths of the sites: the convs' channels, then the hidden dense layers.
    hidden_layer_sizes_ : tuple of int
        The same (the name the MLP uses, for code that handles both).
    input_shape_ : tuple of int
        ``(channels, height, width)`` the network reads.
    classes_, n_features_in_, feature_names_in_, growth_history_, loss_curve_, loss_,
    best_loss_, validation_scores_, best_validation_score_, t_, n_iter_, n_layers_,
    n_outputs_, out_activation_, net_
        As in ``GrowingMLPClassifier``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_north import GrowingCNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = GrowingCNNClassifier(max_epochs=2, random_state=0).fit(X / 16, y)
    >>> clf.input_shape_
    (1, 8, 8)
    """

    _parameter_constraints = {
        **BaseGrowingClassifier._parameter_constraints,
        "architecture": [StrOptions({*ARCHITECTURES, "wrn28"})],
        "widths": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "max_widths": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="neither"),
            "array-like",
            None,
        ],
        "batch_norm": [StrOptions({"auto"}), "boolean"],
        "input_shape": [tuple, list, None],
    }

    def __init__(
        self,
        architecture="small",
        widths=0.25,
        max_widths="auto",
        batch_norm="auto",
        input_shape=None,
        strategy="north-select",
        schedule=None,
        schedule_target=None,
        schedule_end=0.25,
        gamma=None,
        trigger_rounding="floor_threshold",
        epsilon=0.01,
        n_candidates=100,
        trigger_interval="auto",
        buffer_size=None,
        activation_source="training",
        growth_gate=None,
        optimizer="adam",
        optimizer_params=None,
        lr=3e-4,
        batch_size=128,
        max_epochs=100,
        alpha=0.0,
        shuffle=True,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        callbacks=None,
        device="cpu",
        n_threads=None,
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.architecture = architecture
        self.widths = widths
        self.max_widths = max_widths
        self.batch_norm = batch_norm
        self.input_shape = input_shape
        self.strategy = strategy
        self.schedule = schedule
        self.schedule_target = schedule_target
        self.schedule_end = schedule_end
        self.gamma = gamma
        self.trigger_rounding = trigger_rounding
        self.epsilon = epsilon
        self.n_candidates = n_candidates
        self.trigger_interval = trigger_interval
        self.buffer_size = buffer_size
        self.activation_source = activation_source
        self.growth_gate = growth_gate
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.alpha = alpha
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.device = device
        self.n_threads = n_threads
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    # -- what differs from the MLP ---------------------------------------------------

    def _widths(self):
        standard = self._standard_widths()
        initial = self._scaled(self.widths, "widths", standard)
        if self.max_widths is None:
            maximum = tuple(8 * w for w in initial)
        elif isinstance(self.max_widths, str):  # "auto": the paper's cap
            maximum = self._scaled(6.0 if self.architecture == "wrn28" else 2.0, "", standard)
        elif isinstance(self.max_widths, Integral) and not isinstance(self.max_widths, bool):
            maximum = (int(self.max_widths),) * len(initial)
        else:
            maximum = self._scaled(self.max_widths, "max_widths", standard)
        _check_maximum(initial, maximum, *self._width_names)
        return initial, maximum

    _width_names = ("widths", "max_widths", "site")

    def _schedule_target(self, initial, maximum):
        if self.schedule is not None and self.schedule_target is None:
            # The paper's CNN presets grow to the standard (1x) widths.
            standard = self._standard_widths()
            return tuple(min(max(s, w), m) for s, w, m in zip(standard, initial, maximum))
        return super()._schedule_target(initial, maximum)

    def _standard_widths(self):
        if self.architecture == "wrn28":
            return WRN28_WIDTHS
        spec = ARCHITECTURES[self.architecture]
        return (*spec["conv"], *spec["dense"])

    def _scaled(self, value, name, standard):
        """A multiplier of the standard widths, or one width per site."""
        if np.ndim(value) == 0:
            return tuple(max(1, round(float(value) * w)) for w in standard)
        return _per_layer(value, name, standard, of=f"architecture={self.architecture!r}")

    def _make_strategy(self, target, **defaults):
        if isinstance(self.strategy, str) and self.strategy in _DENSE_ONLY:
            raise ValueError(
                f"strategy={self.strategy!r} is defined for dense layers only in this "
                f"version; GrowingCNNClassifier grows convolutions with 'north-select', "
                f"'north-random', 'north-weight', 'gradmax', 'firefly', 'nest', a schedule or "
                f"a custom pair."
            )
        if isinstance(self.strategy, str) and STRATEGIES[self.strategy][0] == "activation":
            defaults = {"gamma": 0.9, "baseline": "running_max", **defaults}
        trigger, initializer = super()._make_strategy(target, **defaults)
        # A custom pair is checked here too, before anything is trained or replaced.
        for part in (trigger, initializer):
            if not getattr(part, "grows_convs", True):
                raise ValueError(
                    f"strategy: {type(part).__name__} is defined for dense layers only in "
                    f"this version; GrowingCNNClassifier cannot use it."
                )
        return trigger, initializer

    def _buffer_size(self):
        if self.buffer_size is not None:
            if self.activation_source == "training":
                raise ValueError(
                    f"buffer_size={self.buffer_size} is read by activation_source='buffer' "
                    f"only: with 'training' the metric is measured on the current "
                    f"mini-batch (batch_size). Set activation_source='buffer' or "
                    f"buffer_size=None."
                )
            return self.buffer_size
        # The authors' CNN protocol: the metric on the current mini-batch.
        # "auto"'s largest batch: the buffer keeps at most the training set anyway.
        return _batch_size(self.batch_size, math.inf)

    def _growth_options(self):
        # A mini-batch may hold fewer images than a dense layer may have neurons (VGG:
        # 128 against 4096): that caps the dense layers' metric, as in the paper.
        return {"strict_buffer": False}

    def _warn_capacity(self, n_samples, maximum):
        # A conv site's metric counts positions of samples, not samples.
        return

    def _fitted_names(self):
        return (*_FITTED_ATTRIBUTES, "input_shape_")

    def _input_names(self):
        return (*_FEATURE_ATTRIBUTES, "input_shape_")

    def _module_spec(self, X, n_classes, initial, maximum):
        if self.architecture == "wrn28":
            if self.batch_norm is False:
                raise ValueError(
                    "batch_norm=False: architecture='wrn28' is built from pre-activation "
                    "blocks, which have BatchNorm by definition. Use batch_norm='auto'."
                )
            return GrowableWRN, {
                "input_shape": self.input_shape_,
                "widths": initial,
                "n_outputs": n_classes,
                "max_widths": maximum,
            }
        spec = ARCHITECTURES[self.architecture]
        n_conv = len(spec["conv"])
        return GrowableCNN, {
            "input_shape": self.input_shape_,
            "conv_widths": initial[:n_conv],
            "pools": spec["pools"],
            "dense_widths": initial[n_conv:],
            "n_outputs": n_classes,
            "max_widths": maximum,
            "batch_norm": self.batch_norm is True,
        }

    @property
    def widths_(self):
        """Final widths of the sites (``hidden_layer_sizes_``, under the CNN's name)."""
        check_is_fitted(self)
        return self.hidden_layer_sizes_

    # -- input: images as rows ---------------------------------------------------------

    def _validate_X(self, X, reset):
        return super()._validate_X(self._as_rows(X, reset), reset)

    def _validate_Xy(self, X, y, reset):
        return super()._validate_Xy(self._as_rows(X, reset), y, reset)

    def _as_rows(self, X, reset):
        """Images ``(n, C, H, W)`` as rows of ``C * H * W`` values (NCHW order), setting
        ``input_shape_`` on a fresh fit; 2-D input passes through (see ``input_shape``)."""
        if not hasattr(X, "shape"):  # lists, array-likes
            X = np.asarray(X)
        ndim = len(X.shape)
        if ndim == 4:
            X = check_array(X, allow_nd=True, dtype=np.float32)
            shape = tuple(int(s) for s in X.shape[1:])
            X = X.reshape(X.shape[0], -1)
        elif ndim == 3:
            raise ValueError(
                f"X has shape {tuple(X.shape)}: images must be 4-D (n_samples, channels, "
                f"height, width), or rows of n_samples x features. For single-channel "
                f"images add the channel axis: X[:, None]."
            )
        else:
            # 2-D rows; anything else gets validate_data's scikit-learn errors.
            shape = None
            if ndim != 2:
                return X
        n_features = X.shape[1]
        if not reset:
            if shape is not None and shape != self.input_shape_:
                raise ValueError(
                    f"X has images of shape {shape}, but {type(self).__name__} was fitted "
                    f"on images of shape {self.input_shape_}."
                )
            return X
        self.input_shape_ = self._input_shape(shape, n_features)
        return X

    def _input_shape(self, shape, n_features):
        given = None if self.input_shape is None else tuple(self.input_shape)
        if given is not None and (
            len(given) != 3
            or not all(isinstance(s, Integral) and not isinstance(s, bool) for s in given)
            or min(given) < 1
        ):
            raise ValueError(
                f"input_shape must be (channels, height, width) of positive ints, got "
                f"{self.input_shape!r}."
            )
        given = None if given is None else tuple(int(s) for s in given)
        if shape is not None:
            if given is not None and given != shape:
                raise ValueError(f"input_shape={given} does not match X's images {shape}.")
            return shape
        if given is not None:
            if math.prod(given) != n_features:
                raise ValueError(
                    f"input_shape={given} holds {math.prod(given)} values, but X has "
                    f"{n_features} features."
                )
            return given
        side = math.isqrt(n_features)
        return (1, side, side) if side * side == n_features else (1, 1, n_features)
