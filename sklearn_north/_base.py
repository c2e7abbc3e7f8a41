"""Shared plumbing of the growing estimators: validation, seeding, the skorch net, fit.

The public estimators (``_mlp.py``) only say which network to build. Everything here is
scikit-learn glue around the growth engine in ``growth/``.
"""

import copy
import inspect
import warnings
from contextlib import contextmanager
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
from skorch.callbacks import Callback, EarlyStopping
from skorch.dataset import Dataset
from skorch.helper import predefined_split

from ._batches import BatchIterator
from ._divergence import DivergenceGuard, check_finite_weights
from ._interrupt import deferred_interrupt
from ._net import GrowingNet, StopTraining
from ._stopping import ConvergenceStop
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
    "loss_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "t_",
    "n_iter_",
    "n_layers_",
    "n_outputs_",
    "out_activation_",
    "_seed",
    "_built_with",
)
# Set by input validation (validate_data with reset=True).
_FEATURE_ATTRIBUTES = ("n_features_in_", "feature_names_in_")

#: Parameters a continuing fit (``warm_start``, ``partial_fit``) applies as they are now;
#: every other one built the network, its growth strategy or its training, and may not
#: change between fits of the same network.
_CONTINUABLE_PARAMS = frozenset(
    {
        "lr",
        "batch_size",
        "max_epochs",
        "alpha",
        "shuffle",
        "tol",
        "n_iter_no_change",
        "early_stopping",
        "validation_fraction",
        "n_threads",
        "verbose",
        "warm_start",
    }
)


class BaseGrowingClassifier(ClassifierMixin, BaseEstimator):
    """Base class of growing classifiers; subclasses define ``_module_spec``."""

    _parameter_constraints = {
        # A tuple is a custom (trigger, initializer) pair, checked by make_strategy.
        "strategy": [StrOptions(set(STRATEGIES)), tuple],
        "schedule": [StrOptions(set(SCHEDULES)), None],
        "schedule_target": ["array-like", Interval(Integral, 1, None, closed="left"), None],
        "schedule_end": [Interval(Real, 0, 1, closed="right")],
        "gamma": [Interval(Real, 0, 1, closed="right"), None],
        "trigger_rounding": [StrOptions(set(ROUNDINGS))],
        # Singular values of normalised activations or weights above epsilon count: from
        # 1 up, unit-scale directions no longer count and nothing can grow.
        "epsilon": [Interval(Real, 0, 1, closed="neither")],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "trigger_interval": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "buffer_size": [Interval(Integral, 2, None, closed="left"), None],
        "activation_source": [StrOptions({"buffer", "training"})],
        "growth_gate": [HeldOutGate, None],
        "optimizer": [StrOptions(set(OPTIMIZERS)), type],
        "optimizer_params": [dict, None],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "shuffle": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "callbacks": [list, None],
        "device": [str, torch.device],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # -- public API ---------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train the network, growing it as the strategy decides.

        With ``warm_start=True`` and a fitted estimator, training (and growth) continues
        on the grown network for ``max_epochs`` more epochs.

        Ctrl-C stops training after the optimizer step that is running (and any growth
        in it), warns, and keeps the network as it is then. Input rejected by validation
        leaves a fitted estimator as it was; a fresh fit that fails later leaves no
        fitted state, a continuation that fails puts back the model of before the call.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Sparse input is densified one mini-batch at a time.
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: each mini-batch's loss is the weighted mean of its
            samples' losses, so gradients (and the gradient triggers) see them. The
            activation statistics (the sample buffer) are taken on the inputs unweighted.

        Returns
        -------
        self : object
        """
        self._validate_params()
        with _torch_threads(self.n_threads):
            if self.warm_start and hasattr(self, "net_"):
                return self._continue(X, y, self.max_epochs, sample_weight, incremental=False)
            return self._fit_new(X, y, self.max_epochs, None, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Train (and grow) for one epoch on ``X, y``, continuing from the current network.

        Never stops early and holds nothing out (``early_stopping`` applies to ``fit``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            See ``fit``.
        classes : array-like of shape (n_classes,), default=None
            All classes that can appear in ``y``. Required on the first call; later
            calls may repeat it, unchanged.

        Returns
        -------
        self : object
        """
        self._validate_params()
        with _torch_threads(self.n_threads):
            if not hasattr(self, "net_"):
                if classes is None:
                    raise ValueError("classes must be passed on the first call to partial_fit.")
                return self._fit_new(X, y, 1, classes, sample_weight, incremental=True)
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(
                    f"`classes={np.unique(classes)!r}` is not the same as on last call to "
                    f"partial_fit, was: {self.classes_!r}"
                )
            return self._continue(X, y, 1, sample_weight, incremental=True)

    def predict_proba(self, X):
        """Class probabilities, columns ordered as ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        # Iterating a DataLoader draws a seed from torch's global generator: keep it intact.
        with (
            _torch_threads(self.n_threads),
            torch.random.fork_rng(devices=_cuda_devices(self.net_.device)),
        ):
            proba = self.net_.predict_proba(X)
        return proba.astype(np.float64, copy=False)

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities, columns ordered as ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

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
        tags.input_tags.sparse = True
        return tags

    # -- fitting ------------------------------------------------------------------------

    def _validate_params(self):
        super()._validate_params()
        # What _parameter_constraints cannot say.
        optimizer = self.optimizer
        if isinstance(optimizer, type) and not issubclass(optimizer, torch.optim.Optimizer):
            raise InvalidParameterError(
                f"The 'optimizer' parameter of {type(self).__name__} must be a str among "
                f"{sorted(OPTIMIZERS)} or a subclass of torch.optim.Optimizer. Got "
                f"{optimizer!r} instead."
            )
        _check_optimizer_params(OPTIMIZERS.get(optimizer, optimizer), self.optimizer_params)
        _check_device(_resolve_device(self.device))
        _check_callback_types(self.callbacks)

    def _fit_new(self, X, y, epochs, classes, sample_weight, incremental):
        fitted = self._fitted_names()
        previous = {k: self.__dict__[k] for k in fitted if k in self.__dict__}
        try:
            net, data, seed, classes_ = self._build(
                X, y, epochs, classes, sample_weight, incremental
            )
        except BaseException:
            # Rejected input or parameters: the previous model (if any) stays as it was.
            for name in fitted:
                self.__dict__.pop(name, None)
            self.__dict__.update(previous)
            raise
        # From here on the previous model is gone: a failure leaves no fitted state.
        features = {k: self.__dict__[k] for k in self._input_names() if k in self.__dict__}
        for name in fitted:
            self.__dict__.pop(name, None)
        try:
            with _TorchSeed(seed, net.device):
                net.initialize()
                stopped = self._train(net, data, epochs, incremental)
        except BaseException:
            for name in fitted:
                self.__dict__.pop(name, None)
            raise
        self.__dict__.update(features)
        self.classes_ = classes_
        self.net_ = net
        self._seed = seed
        self._built_with = self._params_snapshot()
        self._set_fitted_attributes()
        _warn_if_interrupted(stopped)
        return self

    def _build(self, X, y, epochs, classes, sample_weight, incremental):
        """Everything a fresh fit checks and builds before training: returns the skorch
        net (not yet initialized), the training data, the seed and ``classes_``."""
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
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        trigger, initializer = self._make_strategy(target)
        validation = self.early_stopping and not incremental
        _check_callbacks(self.callbacks, getattr(trigger, "can_grow", True), validation)
        data = self._training_data(X, encoder.transform(y), sample_weight, seed, incremental)
        gate, gate_data = self.growth_gate, None
        if gate is not None:
            # Its fraction decides the split; the callback works on a copy of the gate.
            gate.check_params()
            X_fit, y_fit, w_fit, held = _stratified_split(
                *data.train, gate.validation_fraction, seed, "growth_gate"
            )
            gate_data = held[:2]  # the gate's loss is unweighted
            data = _TrainingData((X_fit, y_fit, w_fit), data.valid)
        if classes is None and getattr(trigger, "needs_activations", False):
            self._warn_capacity(data.n_train, maximum)
        growth = GrowthCallback(
            trigger,
            initializer,
            trigger_interval=self.trigger_interval,
            buffer_size=self._buffer_size(),
            activation_source=self.activation_source,
            random_state=seed,
            # Schedules plan for max_epochs epochs (partial_fit calls count as epochs).
            planned_epochs=self.max_epochs,
            gate=gate,
            gate_data=gate_data,
            training_set_size=None if incremental else data.n_train,
            **self._growth_options(),
        )
        n_classes = len(encoder.classes_)
        module, module_kwargs = self._module_spec(X, n_classes, initial, maximum)
        optimizer = OPTIMIZERS.get(self.optimizer, self.optimizer)
        optimizer_kwargs = {f"optimizer__{k}": v for k, v in (self.optimizer_params or {}).items()}
        module_kwargs = {f"module__{k}": v for k, v in module_kwargs.items()}
        net = GrowingNet(
            module,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=optimizer,
            lr=self.lr,
            alpha=self.alpha,
            batch_size=_batch_size(self.batch_size, data.n_train),
            max_epochs=epochs,
            train_split=None,
            # Batches indexed at once (torch's DataLoader indexes row by row).
            iterator_train=BatchIterator,
            iterator_valid=BatchIterator,
            iterator_train__shuffle=self.shuffle,
            # Copies: skorch initializes (mutates) the callbacks it is given, and fit must
            # not modify the estimator's parameters nor share state with other fits.
            # The guard first: no trigger is evaluated after a non-finite loss.
            callbacks=[
                ("divergence", DivergenceGuard()),
                ("growth", growth),
                *clone(self.callbacks or [], safe=False),
                ("stopping", ConvergenceStop()),
            ],
            classes=list(range(n_classes)),
            device=_resolve_device(self.device),
            verbose=int(self.verbose),
            **module_kwargs,
            **optimizer_kwargs,
        )
        return net, data, seed, encoder.classes_

    def _make_strategy(self, target, **defaults):
        """Fresh ``(trigger, initializer)`` objects (fit never modifies the objects of a
        custom strategy); ``defaults`` are the estimator's own defaults of
        ``make_strategy``'s keywords, used where the parameter is None."""
        gamma = self.gamma if self.gamma is not None else defaults.pop("gamma", None)
        return make_strategy(
            self.strategy,
            gamma=gamma,
            epsilon=self.epsilon,
            n_candidates=self.n_candidates,
            rounding=self.trigger_rounding,
            schedule=self.schedule,
            schedule_target=target,
            schedule_end=self.schedule_end,
            **defaults,
        )

    def _growth_options(self):
        """Further keyword arguments of the ``GrowthCallback``."""
        return {}

    def _buffer_size(self):
        """The growth callback's sample buffer size (None: its own default)."""
        return self.buffer_size

    def _warn_capacity(self, n_samples, maximum):
        """Warn where the training set bounds what the activation metric can count."""
        _warn_small_training_set(n_samples, maximum)

    def _fitted_names(self):
        """Attributes that only a successful fit sets (a failed fit removes them)."""
        return _FITTED_ATTRIBUTES

    def _input_names(self):
        """Attributes that input validation sets (``validate_data`` with reset=True)."""
        return _FEATURE_ATTRIBUTES

    def _training_data(self, X, y_enc, sample_weight, seed, incremental):
        """The data of one call: all of it, or (under early stopping, in ``fit``) a
        stratified split into training and validation parts."""
        if not (self.early_stopping and not incremental):
            return _TrainingData((X, y_enc, sample_weight), None)
        X, y_enc, sample_weight, (X_val, y_val, w_val) = _stratified_split(
            X, y_enc, sample_weight, self.validation_fraction, seed, "early_stopping"
        )
        return _TrainingData((X, y_enc, sample_weight), (X_val, y_val, w_val))

    def _continue(self, X, y, epochs, sample_weight, incremental):
        # Input rejected here leaves the model as it was (nothing was touched yet).
        self._check_unchanged_params()
        X, y = self._validate_Xy(X, y, reset=False)
        sample_weight = _validate_sample_weight(sample_weight, X)
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels {unknown} that were not seen in the first fit "
                f"(classes_ = {self.classes_})."
            )
        # As at the build: callbacks that read a validation split need one in this call
        # too (partial_fit holds nothing out), before anything is trained.
        can_grow = getattr(dict(self.net_.callbacks_)["growth"].trigger_, "can_grow", True)
        _check_callbacks(self.callbacks, can_grow, self.early_stopping and not incremental)
        seed = self._seed + self.n_iter_
        data = self._training_data(
            X, np.searchsorted(self.classes_, y), sample_weight, seed, incremental
        )
        # A failure during training puts back the model of before the call.
        fitted = self._fitted_names()
        previous = {k: self.__dict__[k] for k in fitted if k in self.__dict__}
        previous["net_"] = copy.deepcopy(self.net_)
        try:
            stopped = self._train_more(data, epochs, incremental, seed)
        except BaseException:
            for name in fitted:
                self.__dict__.pop(name, None)
            self.__dict__.update(previous)
            raise
        _warn_if_interrupted(stopped)
        return self

    def _train_more(self, data, epochs, incremental, seed):
        # lr, batch_size and the other continuable parameters as they are now (an
        # LRScheduler's lr is left alone unless lr itself was changed: the net keeps the
        # lr it was last given).
        net = self.net_
        if self.lr != net.lr:
            for group in net.optimizer_.param_groups:
                group["lr"] = self.lr
            net.lr = self.lr
        net.batch_size = _batch_size(self.batch_size, data.n_train)
        net.verbose = int(self.verbose)
        net.alpha = self.alpha
        net.iterator_train__shuffle = self.shuffle
        with _TorchSeed(seed, net.device):
            stopped = self._train(net, data, epochs, incremental)
        self._set_fitted_attributes()
        return stopped

    def _train(self, net, data, epochs, incremental):
        """Train ``net`` for ``epochs`` epochs at most; returns why it stopped early
        (a key of ``STOP_REASONS``) or None."""
        stopping = dict(net.callbacks_)["stopping"]
        stopping.start(
            active=not incremental,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            early_stopping=self.early_stopping,
        )
        X, y = data.train[0], _targets(data.train[1], data.train[2])
        net.train_split = (
            None
            if data.valid is None
            else predefined_split(Dataset(data.valid[0], _targets(data.valid[1], data.valid[2])))
        )
        net.stop_request_ = None
        # skorch's own partial_fit swallows every KeyboardInterrupt and returns a
        # half-trained net: its loop is run directly. A stop request (Ctrl-C, the
        # stopping rule) ends it after a complete step; skorch's EarlyStopping, which
        # stops training by raising KeyboardInterrupt, ends it normally too.
        stopped = None
        net.notify("on_train_begin", X=X, y=y)
        with deferred_interrupt(net):
            try:
                net.fit_loop(X, y, epochs=epochs)
            except StopTraining as stop:
                stopped = stop.reason
                net.close_epoch()
            except KeyboardInterrupt:
                if not _stopped_early(net):
                    raise
            except KeyError as exc:
                if str(exc.args[0] if exc.args else "").startswith("valid"):
                    raise ValueError(
                        f"A callback needs {exc.args[0]!r}, which only a validation split "
                        "provides: set early_stopping=True (validation_fraction of the "
                        "data is then held out)."
                    ) from exc
                raise
        net.notify("on_train_end", X=X, y=y)
        stopping.restore_best(net)
        check_finite_weights(net.module_)
        return None if stopped == "converged" else stopped

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

    def _set_fitted_attributes(self):
        callbacks = dict(self.net_.callbacks_)
        growth, stopping = callbacks["growth"], callbacks["stopping"]
        module = self.net_.module_
        history = self.net_.history
        self.hidden_layer_sizes_ = tuple(site.width for site in module.growth_sites())
        self.growth_history_ = pd.DataFrame(growth.events_, columns=list(EVENT_COLUMNS)).astype(
            EVENT_DTYPES
        )
        self.loss_curve_ = [float(v) for v in history[:, "train_loss"]]
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = len(history)
        # Samples seen in training, as MLPClassifier's t_ (which counts its epochs' samples).
        self.t_ = sum(b.get("train_batch_size", 0) for row in history for b in row["batches"])
        if stopping.validation_scores_:
            self.validation_scores_ = list(stopping.validation_scores_)
            self.best_validation_score_ = float(stopping.best_validation_score_)
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = float(stopping.best_loss_)
        self.n_layers_ = len(self.hidden_layer_sizes_) + 2
        self.n_outputs_ = len(self.classes_)
        self.out_activation_ = "softmax"

    # -- validation ---------------------------------------------------------------------

    # Row-major: mini-batches are rows (a DataFrame's values are column-major, and an
    # F-ordered batch takes a different BLAS path, with different rounding).
    def _validate_X(self, X, reset):
        X = validate_data(self, X, reset=reset, dtype=np.float32, order="C", accept_sparse="csr")
        return _writeable(X)

    def _validate_Xy(self, X, y, reset):
        X, y = validate_data(
            self, X, y, reset=reset, dtype=np.float32, order="C", accept_sparse="csr"
        )
        check_classification_targets(y)
        return _writeable(X), y

    #: The initial and maximum widths' parameters, and what one entry is (for messages).
    _width_names = ("hidden_layer_sizes", "max_hidden_layer_sizes", "layer")

    def _widths(self):
        """``(initial, maximum)`` widths of the network's growth sites."""
        raise NotImplementedError

    def _schedule_target(self, initial, maximum):
        """The schedule's target widths: ``maximum`` by default, else within bounds."""
        if self.schedule is None:
            return None  # schedule_target is ignored
        if self.schedule_target is None:
            return maximum
        name, max_name, unit = self._width_names
        target = _per_layer(self.schedule_target, "schedule_target", initial, of=name)
        for i, (t, w, m) in enumerate(zip(target, initial, maximum)):
            if not w <= t <= m:
                raise ValueError(
                    f"schedule_target must be between {name} and {max_name} for every "
                    f"{unit}; {unit} {i} has target {t} outside [{w}, {m}]."
                )
        return target


def _writeable(X):
    # torch warns on (and cannot share) read-only arrays, e.g. a pandas frame's values.
    if isinstance(X, np.ndarray) and not X.flags.writeable:
        return X.copy()
    return X


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


def _check_callback_types(callbacks):
    for i, item in enumerate(callbacks or []):
        cb = item[1] if isinstance(item, tuple) and len(item) == 2 else item
        named = not isinstance(item, tuple) or isinstance(item[0], str)
        if not (named and (isinstance(cb, Callback) or _is_callback_class(cb))):
            raise InvalidParameterError(
                f"The 'callbacks' parameter of the estimator must be a list of skorch "
                f"callbacks (instances of skorch.callbacks.Callback) or (name, callback) "
                f"tuples; item {i} is {item!r}."
            )


def _is_callback_class(cb):
    return isinstance(cb, type) and issubclass(cb, Callback)


def _check_callbacks(callbacks, can_grow, validation):
    for item in callbacks or []:
        cb = item[1] if isinstance(item, tuple) else item
        # Its state_dict of an earlier epoch does not fit a network that has grown since.
        if isinstance(cb, EarlyStopping) and cb.load_best and can_grow:
            raise ValueError(
                "EarlyStopping(load_best=True) restores the weights of an earlier epoch, "
                "which a growing network may have outgrown. Use load_best=False, or "
                "strategy='static', or early_stopping=True (which keeps the best grown "
                "network, its widths included)."
            )
        needs = _validation_key(cb)
        if needs and not validation:
            raise ValueError(
                f"The callback {type(cb).__name__} reads {needs!r}, which only a validation "
                f"split provides: set early_stopping=True (validation_fraction of the data "
                f"is then held out; partial_fit holds nothing out)."
            )


def _validation_key(cb):
    """The history key of the validation split that callback ``cb`` reads, or None."""
    monitor = getattr(cb, "monitor", None)
    if isinstance(monitor, str) and monitor.startswith("valid"):
        return monitor
    if getattr(cb, "on_train", True) is False and hasattr(cb, "scoring"):
        return getattr(cb, "name", None) or "valid_*"
    return None


def _check_optimizer_params(optimizer, params):
    """Keyword arguments ``params`` must be accepted by ``optimizer``'s constructor and
    build an optimizer (checked on a throw-away parameter)."""
    if not params:
        return
    reserved = sorted({"params", "lr"} & set(params))
    if reserved:
        raise InvalidParameterError(
            f"optimizer_params may not set {reserved}: the network's parameters are the "
            f"optimizer's, and the learning rate is the estimator's lr."
        )
    signature = inspect.signature(optimizer)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = sorted(set(params) - set(signature.parameters))
    if unknown and not takes_any:
        raise InvalidParameterError(
            f"optimizer_params has {unknown}, which {optimizer.__name__} does not take; "
            f"its keyword arguments are {sorted(set(signature.parameters) - {'params'})}."
        )
    try:
        optimizer([torch.nn.Parameter(torch.zeros(1))], **params)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidParameterError(
            f"optimizer_params={params!r} do not make a {optimizer.__name__}: {exc}"
        ) from None


def _stratified_split(X, y_enc, sample_weight, fraction, seed, param):
    """Split off a stratified ``fraction`` of the samples: returns the kept part's
    ``X, y_enc, sample_weight`` and the held-out part's ``(X, y_enc, sample_weight)``.
    ``param`` names what asked for the split, for the error message."""
    rows = np.arange(X.shape[0])
    try:
        kept, held = train_test_split(
            rows, test_size=fraction, stratify=y_enc, random_state=seed % (2**32)
        )
    except ValueError as exc:
        raise ValueError(
            f"{param} holds out a fraction {fraction} of the {X.shape[0]} training samples, "
            f"stratified by class, which these data do not allow: {exc}"
        ) from None
    kept, held = np.sort(kept), np.sort(held)

    def weights(rows):
        return None if sample_weight is None else sample_weight[rows]

    return X[kept], y_enc[kept], weights(kept), (X[held], y_enc[held], weights(held))


class _TrainingData:
    """What one call trains on: ``train`` and, under early stopping, ``valid``, each
    ``(X, encoded labels, sample weights or None)``."""

    def __init__(self, train, valid):
        self.train, self.valid = train, valid

    @property
    def n_train(self):
        return self.train[0].shape[0]


def _batch_size(batch_size, n_samples):
    # MLPClassifier's "auto".
    return min(200, n_samples) if batch_size == "auto" else batch_size


@contextmanager
def _torch_threads(n_threads):
    """torch's intra-op threads set to ``n_threads`` within the block (None: unchanged)."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _warn_if_interrupted(stopped):
    if stopped == "interrupted":
        # MLPClassifier's words: it keeps the model of the last iteration too.
        warnings.warn("Training interrupted by user.", UserWarning, stacklevel=3)


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
            stacklevel=6,  # the user's call of fit
        )


def _check_maximum(initial, maximum, name, max_name, unit):
    """Raise ValueError unless every maximum width is at least its initial width."""
    below = [(i, m, w) for i, (m, w) in enumerate(zip(maximum, initial)) if m < w]
    if below:
        i, m, w = below[0]
        raise ValueError(
            f"{max_name} must be >= {name} for every {unit}; {unit} {i} has maximum {m} "
            f"below its initial width {w}."
        )


def _per_layer(value, name, initial, of="hidden_layer_sizes"):
    """``value`` as one width per growth site: an int applies to every site, a sequence
    must have one entry per site of ``initial`` (``of``: what the sites are, for the
    message)."""
    widths = _as_widths(value, name)
    if np.ndim(value) == 0:
        return widths * len(initial)
    if len(widths) != len(initial):
        raise ValueError(f"{name} has {len(widths)} entries but {of} has {len(initial)}.")
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


def _resolve_device(device):
    """``"auto"``: the first CUDA device where torch sees one, else the CPU."""
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _check_device(device):
    """``device`` must name a device that can hold the network's tensors, here."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidParameterError(
            f"device={device!r} is not a valid torch device: {exc}"
        ) from None
    if parsed.type == "meta":
        raise InvalidParameterError(
            "device='meta' holds no data: a network on it cannot be trained. Use 'cpu' or "
            "an accelerator."
        )
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"device={str(parsed)!r} was requested but CUDA is not available."
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InvalidParameterError(
                f"device={str(parsed)!r}: there are only {torch.cuda.device_count()} CUDA devices."
            )
        return
    if parsed.type == "cpu":
        return
    try:  # mps, xpu, ...: usable only if a tensor can be put there
        torch.zeros(1, device=parsed)
    except (RuntimeError, AssertionError, NotImplementedError) as exc:
        raise InvalidParameterError(
            f"device={str(parsed)!r} is not available on this machine: {exc}"
        ) from None


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
