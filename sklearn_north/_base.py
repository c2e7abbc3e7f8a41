"""Shared plumbing of the growing estimators: validation, seeding, the skorch net, fit.

The public estimators (``_mlp.py``) only say which network to build. Everything here is
scikit-learn glue around the growth engine in ``growth/``.
"""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping
from skorch.utils import to_tensor

from ._batches import BatchIterator
from ._divergence import DivergenceGuard, check_finite_weights
from .exceptions import GrowthCapacityWarning
from .growth import (
    EVENT_COLUMNS,
    SCHEDULES,
    STRATEGIES,
    GrowthCallback,
    HeldOutGate,
    make_strategy,
)
from .growth.callback import EVENT_DTYPES
from .growth.triggers import ROUNDINGS

#: Optimizer name -> torch optimizer class.
OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}

# Attributes that only a successful fit sets; a failed fit removes all of them.
_FITTED_ATTRIBUTES = (
    "net_",
    "classes_",
    "n_features_in_",
    "feature_names_in_",
    "hidden_layer_sizes_",
    "growth_history_",
    "loss_curve_",
    "n_iter_",
    "_seed",
    "_built_with",
)

#: Parameters a continuing fit (``warm_start``, ``partial_fit``) applies as they are now;
#: every other one built the network, its growth strategy or its training, and may not
#: change between fits of the same network.
_CONTINUABLE_PARAMS = frozenset({"lr", "batch_size", "max_epochs", "verbose", "warm_start"})


class BaseGrowingClassifier(ClassifierMixin, BaseEstimator):
    """Base class of growing classifiers; subclasses define ``_module_spec``."""

    _parameter_constraints = {
        # A tuple is a custom (trigger, initializer) pair, checked by make_strategy.
        "strategy": [StrOptions(set(STRATEGIES)), tuple],
        "schedule": [StrOptions(set(SCHEDULES)), None],
        "schedule_target": ["array-like", Interval(Integral, 1, None, closed="left"), None],
        "schedule_end": [Interval(Real, 0, 1, closed="right")],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "max_hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
            None,
        ],
        "gamma": [Interval(Real, 0, 1, closed="right"), None],
        "trigger_rounding": [StrOptions(set(ROUNDINGS))],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "trigger_interval": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "buffer_size": [Interval(Integral, 2, None, closed="left"), None],
        "activation_source": [StrOptions({"buffer", "training"})],
        "growth_gate": [HeldOutGate, None],
        "optimizer": [StrOptions(set(OPTIMIZERS)), type],
        "optimizer_params": [dict, None],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "callbacks": [list, None],
        "device": [str, torch.device],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # -- public API ---------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train the network, growing it as the strategy decides.

        With ``warm_start=True`` and a fitted estimator, training (and growth) continues
        on the grown network for ``max_epochs`` more epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: each mini-batch's loss is the weighted mean of its
            samples' losses, so gradients (and the gradient triggers) see them. The
            activation statistics (the sample buffer) are taken on the inputs unweighted.

        Returns
        -------
        self : object
        """
        if self.warm_start and hasattr(self, "net_"):
            return self._continue(X, y, self.max_epochs, sample_weight)
        return self._guarded(self._fit_new, X, y, self.max_epochs, None, sample_weight)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Train (and grow) for one epoch on ``X, y``, continuing from the current network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            All classes that can appear in ``y``. Required on the first call.
        sample_weight : array-like of shape (n_samples,), default=None
            See ``fit``.

        Returns
        -------
        self : object
        """
        if not hasattr(self, "net_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            return self._guarded(self._fit_new, X, y, 1, classes, sample_weight)
        return self._continue(X, y, 1, sample_weight)

    def predict_proba(self, X):
        """Class probabilities, columns ordered as ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        # Iterating a DataLoader draws a seed from torch's global generator: keep it intact.
        with torch.random.fork_rng(devices=_cuda_devices(self.device)):
            proba = self.net_.predict_proba(X)
        return proba.astype(np.float64, copy=False)

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)  # checks fitted-ness before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    @property
    def module_(self):
        """The trained (grown) ``torch.nn.Module``."""
        check_is_fitted(self)
        return self.net_.module_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    # -- fitting ------------------------------------------------------------------------

    def _validate_params(self):
        super()._validate_params()
        # What _parameter_constraints cannot say: a class must be a torch optimizer.
        optimizer = self.optimizer
        if isinstance(optimizer, type) and not issubclass(optimizer, torch.optim.Optimizer):
            raise InvalidParameterError(
                f"The 'optimizer' parameter of {type(self).__name__} must be a str among "
                f"{sorted(OPTIMIZERS)} or a subclass of torch.optim.Optimizer. Got "
                f"{optimizer!r} instead."
            )

    def _guarded(self, method, *args):
        # A fit that raises (or is interrupted) must not leave a fitted-looking estimator:
        # the network may be half-trained or half-grown.
        try:
            return method(*args)
        except BaseException:
            for name in _FITTED_ATTRIBUTES:
                self.__dict__.pop(name, None)
            raise

    def _fit_new(self, X, y, epochs, classes, sample_weight=None):
        # Starting over: the previous model is gone even if validation fails.
        for name in _FITTED_ATTRIBUTES:
            self.__dict__.pop(name, None)
        self._validate_params()
        built_with = self._params_snapshot()
        X, y = self._validate_Xy(X, y, reset=True)
        sample_weight = _validate_sample_weight(sample_weight, X)
        encoder = LabelEncoder().fit(y if classes is None else np.asarray(classes))
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, "
                f"but the data contains only one class: {encoder.classes_[0]!r}."
            )
        if classes is not None and not np.isin(y, encoder.classes_).all():
            raise ValueError(
                f"y contains labels not in classes: {np.setdiff1d(y, encoder.classes_)}."
            )
        initial, maximum = self._widths()
        target = self._schedule_target(initial, maximum)
        _check_device(self.device)
        self._seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        # Fresh copies: fit never modifies the objects of a custom strategy.
        trigger, initializer = make_strategy(
            self.strategy,
            gamma=self.gamma,
            epsilon=self.epsilon,
            n_candidates=self.n_candidates,
            rounding=self.trigger_rounding,
            schedule=self.schedule,
            schedule_target=target,
            schedule_end=self.schedule_end,
        )
        _check_callbacks(self.callbacks, getattr(trigger, "can_grow", True))
        y_enc = encoder.transform(y)
        gate, gate_data = self.growth_gate, None
        if gate is not None:
            # Its fraction decides the split; the callback works on a copy of the gate.
            gate.check_params()
            X, y_enc, sample_weight, gate_data = _hold_out(
                X, y_enc, sample_weight, gate.validation_fraction, self._seed
            )
        if classes is None and getattr(trigger, "needs_activations", False):
            _warn_small_training_set(len(X), maximum)
        growth = GrowthCallback(
            trigger,
            initializer,
            trigger_interval=self.trigger_interval,
            buffer_size=self.buffer_size,
            activation_source=self.activation_source,
            random_state=self._seed,
            # Schedules plan for max_epochs epochs (partial_fit calls count as epochs).
            planned_epochs=self.max_epochs,
            gate=gate,
            gate_data=gate_data,
        )
        module, module_kwargs = self._module_spec(X, len(encoder.classes_), initial, maximum)
        optimizer = OPTIMIZERS.get(self.optimizer, self.optimizer)
        optimizer_kwargs = {f"optimizer__{k}": v for k, v in (self.optimizer_params or {}).items()}
        module_kwargs = {f"module__{k}": v for k, v in module_kwargs.items()}
        net = _GrowingNet(
            module,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=optimizer,
            lr=self.lr,
            batch_size=self.batch_size,
            max_epochs=epochs,
            train_split=None,
            # Batches indexed at once (torch's DataLoader indexes row by row).
            iterator_train=BatchIterator,
            iterator_valid=BatchIterator,
            iterator_train__shuffle=True,
            # Copies: skorch initializes (mutates) the callbacks it is given, and fit must
            # not modify the estimator's parameters nor share state with other fits.
            # The guard first: no trigger is evaluated after a non-finite loss.
            callbacks=[
                ("divergence", DivergenceGuard()),
                ("growth", growth),
                *clone(self.callbacks or [], safe=False),
            ],
            classes=list(range(len(encoder.classes_))),
            device=self.device,
            verbose=int(self.verbose),
            **module_kwargs,
            **optimizer_kwargs,
        )
        with self._seeded(0):
            net.initialize()
            self._train(net, X, _targets(y_enc, sample_weight), epochs)
        self.classes_ = encoder.classes_
        self.net_ = net
        self._built_with = built_with
        self._set_fitted_attributes()
        return self

    def _continue(self, X, y, epochs, sample_weight=None):
        # Input rejected here leaves the model as it was (nothing was touched yet); a
        # failure during training removes it.
        self._validate_params()
        self._check_unchanged_params()
        X, y = self._validate_Xy(X, y, reset=False)
        sample_weight = _validate_sample_weight(sample_weight, X)
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels {unknown} that were not seen in the first fit "
                f"(classes_ = {self.classes_})."
            )
        y_enc = _targets(np.searchsorted(self.classes_, y), sample_weight)
        return self._guarded(self._train_more, X, y_enc, epochs)

    def _train_more(self, X, y_enc, epochs):
        # lr, batch_size and verbose as they are now (an LRScheduler's lr is left alone
        # unless lr itself was changed: the net keeps the lr it was last given).
        if self.lr != self.net_.lr:
            for group in self.net_.optimizer_.param_groups:
                group["lr"] = self.lr
            self.net_.lr = self.lr
        self.net_.batch_size = self.batch_size
        self.net_.verbose = int(self.verbose)
        with self._seeded(self.n_iter_):
            self._train(self.net_, X, y_enc, epochs)
        self._set_fitted_attributes()
        return self

    def _train(self, net, X, y, epochs):
        # skorch's own partial_fit swallows every KeyboardInterrupt and returns a
        # half-trained net. Running its loop directly lets an interrupt (Ctrl-C) propagate
        # and be cleaned up; only skorch's EarlyStopping, which stops training by raising
        # one, ends it normally.
        net.notify("on_train_begin", X=X, y=y)
        try:
            net.fit_loop(X, y, epochs=epochs)
        except KeyboardInterrupt:
            if not _stopped_early(net):
                raise
        net.notify("on_train_end", X=X, y=y)
        check_finite_weights(net.module_)

    def _params_snapshot(self):
        """The parameters a continuing fit may not change, as they are now."""
        params = self.get_params(deep=False)
        # Copies of containers: a list or dict changed in place is a change too.
        return {
            name: copy.copy(value) if isinstance(value, list | dict) else value
            for name, value in params.items()
        }

    def _check_unchanged_params(self):
        now = self._params_snapshot()
        changed = [
            name
            for name, value in self._built_with.items()
            if name not in _CONTINUABLE_PARAMS and not _same_param(value, now[name])
        ]
        if changed:
            raise ValueError(
                f"Parameters {changed} changed since the network was built; a continuing "
                f"fit (warm_start=True or partial_fit) keeps training that network and "
                f"can only take new values of {sorted(_CONTINUABLE_PARAMS)}. Set them "
                "back, or fit with warm_start=False to build a new network."
            )

    def _seeded(self, offset):
        return _TorchSeed(self._seed + offset, self.device)

    def _set_fitted_attributes(self):
        growth = dict(self.net_.callbacks_)["growth"]
        module = self.net_.module_
        self.hidden_layer_sizes_ = tuple(site.width for site in module.growth_sites())
        self.growth_history_ = pd.DataFrame(growth.events_, columns=list(EVENT_COLUMNS)).astype(
            EVENT_DTYPES
        )
        self.loss_curve_ = [float(v) for v in self.net_.history[:, "train_loss"]]
        self.n_iter_ = len(self.net_.history)

    # -- validation ---------------------------------------------------------------------

    # Row-major: mini-batches are rows (a DataFrame's values are column-major, and an
    # F-ordered batch takes a different BLAS path, with different rounding).
    def _validate_X(self, X, reset):
        return validate_data(self, X, reset=reset, dtype=np.float32, order="C")

    def _validate_Xy(self, X, y, reset):
        X, y = validate_data(self, X, y, reset=reset, dtype=np.float32, order="C")
        check_classification_targets(y)
        return X, y

    def _widths(self):
        initial = _as_widths(self.hidden_layer_sizes, "hidden_layer_sizes")
        if self.max_hidden_layer_sizes is None:
            maximum = tuple(10 * w for w in initial)
        else:
            maximum = _per_layer(self.max_hidden_layer_sizes, "max_hidden_layer_sizes", initial)
        below = [(i, m, w) for i, (m, w) in enumerate(zip(maximum, initial)) if m < w]
        if below:
            i, m, w = below[0]
            raise ValueError(
                f"max_hidden_layer_sizes must be >= hidden_layer_sizes for every layer; "
                f"layer {i} has maximum {m} below its initial width {w}."
            )
        return initial, maximum

    def _schedule_target(self, initial, maximum):
        """The schedule's target widths: ``maximum`` by default, else within bounds."""
        if self.schedule is None:
            return None  # schedule_target is ignored
        if self.schedule_target is None:
            return maximum
        target = _per_layer(self.schedule_target, "schedule_target", initial)
        for i, (t, w, m) in enumerate(zip(target, initial, maximum)):
            if not w <= t <= m:
                raise ValueError(
                    f"schedule_target must be between hidden_layer_sizes and "
                    f"max_hidden_layer_sizes for every layer; layer {i} has target {t} "
                    f"outside [{w}, {m}]."
                )
        return target


class _GrowingNet(NeuralNetClassifier):
    """skorch's classifier, taking ``(label, sample weight)`` rows as targets too."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if y_true.ndim != 2:
            return super().get_loss(y_pred, y_true, X=X, training=training)
        # Weighted mean over the batch (as scikit-learn's MLP); a batch of zero total
        # weight contributes nothing.
        y_true = to_tensor(y_true, device=self.device)
        labels, weights = y_true[:, 0].long(), y_true[:, 1].to(y_pred.dtype)
        losses = torch.nn.functional.cross_entropy(y_pred, labels, reduction="none")
        return (weights * losses).sum() / weights.sum().clamp_min(torch.finfo(y_pred.dtype).tiny)


def _validate_sample_weight(sample_weight, X):
    if sample_weight is None:
        return None
    # Also rejects NaN, a wrong shape and all-zero weights.
    return _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)


def _targets(y_enc, sample_weight):
    """What the net trains on: the encoded labels, or ``(label, weight)`` rows."""
    if sample_weight is None:
        return y_enc
    return np.column_stack([y_enc.astype(np.float64), sample_weight])


def _same_param(a, b):
    """Whether two values of a parameter are the same: sequences element by element
    (``(64, 64)`` and ``[64, 64]`` are), objects such as callbacks by identity or ``==``."""
    if a is b:
        return True
    if isinstance(a, list | tuple | np.ndarray) and isinstance(b, list | tuple | np.ndarray):
        return len(a) == len(b) and all(_same_param(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _stopped_early(net):
    """Whether an ``EarlyStopping`` callback of ``net`` ran out of patience (it raises
    ``KeyboardInterrupt`` to stop the training loop)."""
    return any(
        isinstance(cb, EarlyStopping) and cb.misses_ >= cb.patience for _, cb in net.callbacks_
    )


def _check_callbacks(callbacks, can_grow):
    for cb in callbacks or []:
        cb = cb[1] if isinstance(cb, tuple) else cb
        # Its state_dict of an earlier epoch does not fit a network that has grown since.
        if isinstance(cb, EarlyStopping) and cb.load_best and can_grow:
            raise ValueError(
                "EarlyStopping(load_best=True) restores the weights of an earlier epoch, "
                "which a growing network may have outgrown. Use load_best=False, or "
                "strategy='static'."
            )


def _hold_out(X, y_enc, sample_weight, fraction, seed):
    """Split off a stratified ``fraction`` of the samples for the growth gate: returns the
    training part (``X, y_enc, sample_weight``) and the held-out ``(X, y_enc)``."""
    rows = np.arange(len(X))
    try:
        train, held = train_test_split(
            rows, test_size=fraction, stratify=y_enc, random_state=seed % (2**32)
        )
    except ValueError as exc:
        raise ValueError(
            f"growth_gate holds out validation_fraction={fraction} of the {len(X)} training "
            f"samples, stratified by class, which these data do not allow: {exc}"
        ) from None
    train, held = np.sort(train), np.sort(held)
    weights = None if sample_weight is None else sample_weight[train]
    return X[train], y_enc[train], weights, (X[held], y_enc[held])


def _warn_small_training_set(n_samples, maximum):
    # partial_fit is left out: its first batch need not be the whole training set.
    bounded = [i for i, m in enumerate(maximum) if m >= n_samples]
    if bounded:
        warnings.warn(
            f"The training set has {n_samples} samples, no more than the maximum width of "
            f"hidden layer(s) {bounded} ({[maximum[i] for i in bounded]}). The activation "
            f"metric of a layer counts at most as many directions as samples, so such a "
            f"layer can grow to about {n_samples} neurons whatever the task: its width will "
            f"follow the number of samples. Set max_hidden_layer_sizes below "
            f"{n_samples} or train on more samples.",
            GrowthCapacityWarning,
            stacklevel=5,  # the user's call of fit
        )


def _per_layer(value, name, initial):
    """``value`` as one width per hidden layer: an int applies to every layer, a sequence
    must have one entry per layer of ``initial``."""
    widths = _as_widths(value, name)
    if np.ndim(value) == 0:
        return widths * len(initial)
    if len(widths) != len(initial):
        raise ValueError(
            f"{name} has {len(widths)} entries but hidden_layer_sizes has {len(initial)}."
        )
    return widths


def _as_widths(value, name):
    widths = (value,) if np.ndim(value) == 0 else tuple(value)
    if not widths or not all(
        isinstance(w, Integral | np.integer) and not isinstance(w, bool) and w >= 1 for w in widths
    ):
        raise ValueError(
            f"{name} must be a positive int or a sequence of positive ints, got {value!r}."
        )
    return tuple(int(w) for w in widths)


def _check_device(device):
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a valid torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available.")


def _cuda_devices(device):
    """The CUDA device indices whose generators ``device`` uses (for ``fork_rng``)."""
    is_cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
    return [torch.device(device).index or 0] if is_cuda else []


class _TorchSeed:
    """Seed torch's global generators for a block and restore them afterwards.

    skorch draws from the global generators (module init, DataLoader shuffling); forking
    them keeps a fit reproducible from ``random_state`` without touching the user's state.
    """

    def __init__(self, seed, device):
        self.seed = int(seed) % (2**63)
        self.devices = _cuda_devices(device)

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=self.devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)
