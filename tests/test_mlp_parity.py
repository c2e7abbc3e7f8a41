"""What ``MLPClassifier`` users expect, measured where they meet it (issue 18).

The stopping rule against its definition on a scripted loss sequence, early stopping
putting back a network that grew after its best epoch, ``partial_fit``'s signature and
checks, the L2 penalty's closed form, the fitted attributes, parameter errors raised
before training, threads, read-only input and the log's colour codes.
"""

import inspect
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from skorch.callbacks import Callback, EarlyStopping, EpochScoring

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import LinearSchedule, RandomInit

FAST = dict(hidden_layer_sizes=(8,), lr=3e-2, batch_size=32, max_epochs=3, random_state=0)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16, y[:300]


class Scripted(Callback):
    """Overwrites the epoch's ``key`` in the history with scripted values (listed before
    the estimator's stopping rule, which reads it)."""

    def __init__(self, key, values):
        self.key = key
        self.values = values

    def on_epoch_end(self, net, **kwargs):
        net.history.record(self.key, self.values[len(net.history) - 1])


def mlp_stopping_epoch(losses, tol, n_iter_no_change):
    """MLPClassifier's rule (sklearn/neural_network/_multilayer_perceptron.py), written
    out: the epoch (1-based) after which training stops, or None."""
    best, misses = math.inf, 0
    for epoch, loss in enumerate(losses, 1):
        misses = misses + 1 if loss > best - tol else 0
        best = min(best, loss)
        if misses > n_iter_no_change:
            return epoch
    return None


@pytest.mark.parametrize(
    "losses",
    [
        [1.0, 0.9, 0.89995, 0.8999, 0.9, 0.95, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6],
        [1.0, 0.99995, 0.9999, 0.99985, 0.5, 0.49999, 0.49998, 0.49997, 0.4, 0.3, 0.2, 0.1],
    ],
)
def test_training_loss_stopping_rule_is_mlpclassifiers(digits, losses):
    X, y = digits
    tol, patience = 1e-4, 2
    clf = GrowingMLPClassifier(
        **{**FAST, "max_epochs": len(losses)},
        tol=tol,
        n_iter_no_change=patience,
        callbacks=[Scripted("train_loss", losses)],
    ).fit(X, y)
    expected = mlp_stopping_epoch(losses, tol, patience) or len(losses)
    assert clf.n_iter_ == expected
    assert clf.loss_curve_ == losses[:expected]
    assert clf.best_loss_ == min(losses[:expected])
    assert clf.loss_ == losses[expected - 1]
    # None: always every epoch.
    clf.set_params(n_iter_no_change=None).fit(X, y)
    assert clf.n_iter_ == len(losses)


class Recorder(Callback):
    """Keeps, at every epoch's end, the network's output on ``X`` and its optimizer's
    first moments; scripts ``valid_acc`` (before the stopping rule reads it)."""

    def __init__(self, X, scores):
        self.X = X
        self.scores = scores

    def initialize(self):
        self.outputs_, self.moments_, self.widths_ = [], [], []
        return self

    def on_epoch_end(self, net, **kwargs):
        net.history.record("valid_acc", self.scores[len(net.history) - 1])
        with torch.no_grad():
            self.outputs_.append(net.module_(torch.as_tensor(self.X)).clone())
        state = net.optimizer_.state
        self.moments_.append([state[p]["exp_avg"].clone() for p in net.module_.parameters()])
        self.widths_.append(tuple(s.width for s in net.module_.growth_sites()))


def test_early_stopping_puts_back_the_best_grown_network(digits):
    X, y = digits
    X32 = X[:40].astype(np.float32)
    # A tie with the best (epoch 4) resets the count, as MLPClassifier's, but is not better.
    scores = [0.5, 0.9, 0.6, 0.9, 0.65, 0.8, 0.8, 0.8]
    recorder = Recorder(X32, scores)
    # Grows at every step: the network after the best epoch (2) is wider than at it.
    strategy = (LinearSchedule(target=40, end=1.0), RandomInit())
    clf = GrowingMLPClassifier(
        **{**FAST, "max_epochs": len(scores)},
        strategy=strategy,
        max_hidden_layer_sizes=40,
        early_stopping=True,
        n_iter_no_change=2,
        tol=0.0,
        callbacks=[("recorder", recorder)],
    ).fit(X, y)
    rec = dict(clf.net_.callbacks_)["recorder"]
    # MLPClassifier's rule on the validation scores: epochs 5, 6, 7 miss -> stop after 7.
    assert clf.n_iter_ == 7
    assert clf.validation_scores_ == scores[:7]
    assert clf.best_validation_score_ == 0.9
    assert clf.best_loss_ is None
    assert rec.widths_[-1] > rec.widths_[1]  # it grew after its best epoch
    # The network of epoch 2: its widths, its function, its optimizer state, its growth.
    assert clf.hidden_layer_sizes_ == rec.widths_[1]
    with torch.no_grad():
        torch.testing.assert_close(clf.module_(torch.as_tensor(X32)), rec.outputs_[1])
    params = list(clf.module_.parameters())
    for p, expected in zip(params, rec.moments_[1]):
        torch.testing.assert_close(clf.net_.optimizer_.state[p]["exp_avg"], expected)
    assert {id(p) for g in clf.net_.optimizer_.param_groups for p in g["params"]} == {
        id(p) for p in params
    }
    assert clf.growth_history_["width"].iloc[-1] == rec.widths_[1][0]
    assert (clf.growth_history_["epoch"] <= 2).all()
    # It keeps training from there (and the growth callback follows the restored net).
    clf.set_params(warm_start=True, early_stopping=False, max_epochs=1, callbacks=None)
    with pytest.raises(ValueError, match="changed since the network was built"):
        clf.fit(X, y)


def test_early_stopping_holds_out_a_stratified_fraction(digits):
    X, y = digits
    clf = GrowingMLPClassifier(**FAST, early_stopping=True, validation_fraction=0.2).fit(X, y)
    assert clf.t_ == clf.n_iter_ * (len(X) - 60)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # valid_acc is the accuracy on the held-out part, recorded where skorch records it.
    assert clf.validation_scores_ == list(clf.net_.history[:, "valid_acc"])
    assert all(np.isfinite(clf.net_.history[:, "valid_loss"]))


class WeightedAccuracy(Callback):
    """Recomputes, at every epoch's end, the held-out accuracy weighted by the validation
    split's sample weights, beside the ``valid_acc`` the estimator recorded."""

    def initialize(self):
        self.pairs_ = []
        return self

    def on_epoch_end(self, net, dataset_valid=None, **kwargs):
        X_val = torch.as_tensor(np.asarray(dataset_valid.X), dtype=torch.float32)
        labels, weights = np.asarray(dataset_valid.y).T
        with torch.no_grad():
            predicted = net.module_(X_val).argmax(dim=1).numpy()
        mine = float(np.sum(weights * (predicted == labels)) / np.sum(weights))
        self.pairs_.append((net.history[-1, "valid_acc"], mine))


def test_validation_score_is_the_weighted_accuracy(digits):
    X, y = digits
    w = np.linspace(0.0, 3.0, len(y)) ** 2
    clf = GrowingMLPClassifier(
        **FAST, early_stopping=True, callbacks=[("acc", WeightedAccuracy())]
    ).fit(X, y, sample_weight=w)
    pairs = dict(clf.net_.callbacks_)["acc"].pairs_
    assert len(pairs) == clf.n_iter_
    for recorded, mine in pairs:
        assert recorded == pytest.approx(mine, rel=1e-12)
    assert [r for r, _ in pairs] == clf.validation_scores_


def test_skorch_callbacks_that_need_a_validation_split(digits):
    X, y = digits
    for cb in (EarlyStopping(), EpochScoring("accuracy", on_train=False, name="valid_f")):
        clf = GrowingMLPClassifier(**FAST, callbacks=[cb])
        with pytest.raises(ValueError, match="early_stopping=True"):
            clf.fit(X, y)
        assert not hasattr(clf, "net_")
    stop = EarlyStopping(monitor="valid_loss", patience=1, threshold=10.0)
    clf = GrowingMLPClassifier(
        **{**FAST, "max_epochs": 10}, early_stopping=True, callbacks=[stop]
    ).fit(X, y)
    assert clf.n_iter_ == 2  # patience 1 with an impossible threshold


def test_partial_fit_takes_mlpclassifiers_argument_order(digits):
    X, y = digits
    sw = np.random.default_rng(0).integers(0, 3, len(y)).astype(float)
    fits = []
    for call in ("positional", "keyword", "none"):
        clf = GrowingMLPClassifier(**FAST).partial_fit(X, y, classes=np.unique(y))
        if call == "positional":
            clf.partial_fit(X, y, sw)
        elif call == "keyword":
            clf.partial_fit(X, y, sample_weight=sw)
        else:
            clf.partial_fit(X, y)
        fits.append(clf.predict_proba(X))
    np.testing.assert_array_equal(fits[0], fits[1])
    assert not np.allclose(fits[0], fits[2])
    mlp = inspect.signature(MLPClassifier().partial_fit)
    ours = inspect.signature(GrowingMLPClassifier().partial_fit)
    assert list(ours.parameters) == list(mlp.parameters)


def test_partial_fit_rejects_changed_classes(digits):
    X, y = digits
    clf = GrowingMLPClassifier(**FAST).partial_fit(X, y, classes=np.arange(10))
    proba = clf.predict_proba(X)
    clf.partial_fit(X, y, classes=np.arange(10)[::-1])  # the same set: accepted
    with pytest.raises(ValueError, match="is not the same as on last call"):
        clf.partial_fit(X, y, classes=np.arange(11))
    with pytest.raises(ValueError, match="classes must be passed"):
        GrowingMLPClassifier(**FAST).partial_fit(X, y)
    assert not np.array_equal(clf.predict_proba(X), proba)


def test_l2_penalty_is_mlpclassifiers(digits):
    X, y = digits
    clf = GrowingMLPClassifier(**FAST, alpha=0.3).fit(X, y)
    net = clf.net_
    Xb, yb = torch.as_tensor(X[:50], dtype=torch.float32), torch.as_tensor(y[:50])
    sw = torch.linspace(0.5, 2.0, 50, dtype=torch.float64)
    with torch.no_grad():
        logits = net.module_(Xb)
        ce = torch.nn.functional.cross_entropy(logits, yb, reduction="none")
        squares = sum(float((layer.weight**2).sum()) for layer in net.module_.layers)
        plain = float(ce.mean()) + 0.5 * 0.3 * squares / 50
        weighted = float((ce * sw).sum() / sw.sum()) + 0.5 * 0.3 * squares / float(sw.sum())
        got_plain = net.get_loss(logits, yb, training=True)
        got_weighted = net.get_loss(logits, torch.stack([yb.double(), sw], 1), training=True)
        assert float(got_plain) == pytest.approx(plain, rel=1e-5)
        assert float(got_weighted) == pytest.approx(weighted, rel=1e-5)
        # Validation and prediction losses carry no penalty.
        assert float(net.get_loss(logits, yb, training=False)) == pytest.approx(
            float(ce.mean()), rel=1e-6
        )
    # It shrinks the weights.
    free = GrowingMLPClassifier(**FAST).fit(X, y)
    assert np.linalg.norm(clf.coefs_[0]) < 0.9 * np.linalg.norm(free.coefs_[0])


def test_mlpclassifiers_fitted_attributes(digits):
    X, y = digits
    clf = GrowingMLPClassifier(**{**FAST, "hidden_layer_sizes": (8, 6)}, n_iter_no_change=None)
    clf.fit(X, y)
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 10 and clf.out_activation_ == "softmax"
    assert clf.t_ == 3 * len(X)
    assert clf.loss_ == clf.loss_curve_[-1] and clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), clf.predict_proba(X))
    clf.partial_fit(X, y)
    assert clf.t_ == 4 * len(X)
    auto = GrowingMLPClassifier(**{**FAST, "batch_size": "auto"}).fit(X[:150], y[:150])
    assert auto.net_.batch_size == 150
    auto.fit(X, y)
    assert auto.net_.batch_size == 200


def test_shuffle_false_trains_in_order(digits):
    X, y = digits
    a = GrowingMLPClassifier(**FAST, shuffle=False).fit(X, y)
    b = GrowingMLPClassifier(**{**FAST, "random_state": 1}, shuffle=False).fit(X, y)
    c = GrowingMLPClassifier(**FAST, shuffle=True).fit(X, y)
    # Without shuffling, only the initial weights differ between seeds; with it, the
    # order differs too: a and c share their initial weights and differ.
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))
    assert b.n_iter_ == a.n_iter_


@pytest.mark.parametrize(
    "params, match",
    [
        ({"optimizer_params": {"momentm": 0.9}}, "momentm"),
        ({"optimizer_params": {"betas": 3}}, "betas"),
        ({"optimizer": "sgd", "optimizer_params": {"momentum": -1.0}}, "momentum"),
        ({"optimizer_params": {"lr": 0.1}}, "lr"),
        ({"callbacks": [1]}, "callbacks"),
        ({"callbacks": [("name", 1)]}, "callbacks"),
        ({"device": "meta"}, "meta"),
        ({"device": "nonsense"}, "device"),
        ({"epsilon": 5.0}, "epsilon"),
        ({"epsilon": 1.0}, "epsilon"),
        ({"n_iter_no_change": 0}, "n_iter_no_change"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"batch_size": "big"}, "batch_size"),
        ({"n_threads": 0}, "n_threads"),
        ({"alpha": -1.0}, "alpha"),
    ],
)
def test_invalid_parameters_are_invalid_parameter_errors_before_training(digits, params, match):
    X, y = digits
    started = []

    class Started(Callback):
        def on_train_begin(self, net, **kwargs):
            started.append(True)

    callbacks = params.pop("callbacks", None)
    clf = GrowingMLPClassifier(**{**FAST, **params}, callbacks=callbacks or [Started()])
    with pytest.raises(InvalidParameterError, match=match):
        clf.fit(X, y)
    assert not started and not hasattr(clf, "net_")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without Apple's GPU")
def test_unavailable_accelerator_is_an_error_before_training(digits):
    X, y = digits
    with pytest.raises(InvalidParameterError, match="mps"):
        GrowingMLPClassifier(**FAST, device="mps").fit(X, y)


def test_n_threads_applies_during_fit_and_predict_and_is_restored(digits):
    X, y = digits
    seen = []

    class Threads(Callback):
        def on_batch_end(self, net, **kwargs):
            seen.append(torch.get_num_threads())

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        clf = GrowingMLPClassifier(**FAST, n_threads=1, callbacks=[Threads()]).fit(X, y)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        clf.set_params(n_threads=3, warm_start=True)
        clf.partial_fit(X, y)
        assert seen[-1] == 3 and torch.get_num_threads() == 2
        seen.clear()
        clf.predict(X)
        assert seen == [] and torch.get_num_threads() == 2
        clf.set_params(n_threads=None).partial_fit(X, y)
        assert seen[-1] == 2
    finally:
        torch.set_num_threads(previous)


def test_read_only_and_pandas_input_raise_no_warning(digits):
    X, y = digits
    scaler = StandardScaler().set_output(transform="pandas")
    frame = scaler.fit_transform(pd.DataFrame(X, columns=[f"f{i}" for i in range(64)]))
    clf = GrowingMLPClassifier(**FAST).fit(frame, y)
    ro = np.array(X, dtype=np.float32)
    ro.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(frame)
        clf.set_params(warm_start=True).fit(frame, y)
        GrowingMLPClassifier(**FAST).fit(ro, y).predict(ro)


def test_verbose_log_has_no_colour_codes_when_piped(digits, capsys):
    X, y = digits
    GrowingMLPClassifier(**FAST, verbose=1, early_stopping=True).fit(X, y)
    out = capsys.readouterr().out
    assert "valid_loss" in out and "train_loss" in out
    assert "\x1b[" not in out


def test_continuations_check_callbacks_as_the_build_did(digits):
    X, y = digits
    stop = EarlyStopping(monitor="valid_loss", patience=5, load_best=True)
    clf = GrowingMLPClassifier(
        **FAST, strategy="static", early_stopping=True, warm_start=True, callbacks=[stop]
    ).fit(X, y)
    n_iter = clf.n_iter_
    clf.fit(X, y)  # load_best is fine on a network that never grows
    assert clf.n_iter_ > n_iter
    proba, n_iter = clf.predict_proba(X), clf.n_iter_
    # partial_fit holds nothing out: rejected before any training.
    with pytest.raises(ValueError, match=r"reads 'valid_loss'.*partial_fit holds nothing out"):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == n_iter
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
