"""Estimator-level behaviour of ``GrowingMLPClassifier``: the scikit-learn contract, the
fitted attributes, growth across fits, errors, reproducibility and callbacks.

The engine's mathematics is tested elsewhere (test_metrics.py, test_sites.py, ...); here
the network only has to train a few epochs on small data.
"""

import math
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from test_custom_strategies import growth_of
from torch.optim.lr_scheduler import StepLR

from sklearn_north import GrowingMLPClassifier
from sklearn_north.exceptions import GrowthCapacityWarning
from sklearn_north.growth import EVENT_COLUMNS, RandomInit, Trigger, TriggerDecision

# Small, fast settings for data sets of a few hundred samples.
FAST = dict(
    hidden_layer_sizes=(8, 8),
    lr=3e-2,
    batch_size=32,
    max_epochs=3,
    n_candidates=16,
    random_state=0,
)

# Settings under which north-select grows both layers on digits within two epochs.
GROWING = dict(
    strategy="north-select",
    hidden_layer_sizes=(48, 48),
    max_hidden_layer_sizes=96,
    max_epochs=2,
    n_candidates=50,
    random_state=0,
)


HISTORY_DTYPES = {
    "step": np.dtype("int64"),
    "epoch": np.dtype("int64"),
    "layer": np.dtype("int64"),
    "n_added": np.dtype("int64"),
    "width": np.dtype("int64"),
    "metric": np.dtype("float64"),
    "threshold": np.dtype("float64"),
}


# -- data -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=150, n_features=4, centers=3, random_state=0)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def small_digits(digits):
    X, y = digits
    return X[:600], y[:600]


@pytest.fixture(scope="module")
def grown(digits):
    """A north-select model fitted on digits that has grown (module-scoped: read only)."""
    X, y = digits
    return GrowingMLPClassifier(**GROWING).fit(X, y)


def _fitted_names(est):
    return sorted(k for k in vars(est) if k.endswith("_") and not k.startswith("__"))


def assert_not_fitted(est):
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    assert _fitted_names(est) == []
    with pytest.raises(NotFittedError):
        est.predict(np.zeros((1, 4)))


# -- scikit-learn contract ----------------------------------------------------------------


def test_clone_is_unfitted_with_equal_params(grown):
    cloned = clone(grown)
    assert cloned is not grown
    params, cloned_params = grown.get_params(deep=False), cloned.get_params(deep=False)
    assert params.keys() == cloned_params.keys()
    for name, value in params.items():
        assert cloned_params[name] == value, name
    assert_not_fitted(cloned)
    # The original is untouched.
    check_is_fitted(grown)


def test_pickled_grown_model_predicts_and_continues_identically(grown, digits):
    X, y = digits
    assert grown.hidden_layer_sizes_ != GROWING["hidden_layer_sizes"]
    loaded = pickle.loads(pickle.dumps(grown))
    np.testing.assert_array_equal(loaded.predict_proba(X), grown.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), grown.predict(X))
    assert loaded.hidden_layer_sizes_ == grown.hidden_layer_sizes_
    pd.testing.assert_frame_equal(loaded.growth_history_, grown.growth_history_)
    assert loaded.loss_curve_ == grown.loss_curve_
    # The unpickled model keeps all training state (optimizer, trigger baselines, sample
    # buffer, candidate generator): one more epoch matches that of a model that was never
    # pickled (a refit with the same seed; deepcopy would go through pickling's hooks).
    reference = clone(grown).fit(X, y)
    Xs, ys = X[:300], y[:300]
    reference.partial_fit(Xs, ys)
    loaded.partial_fit(Xs, ys)
    assert loaded.n_iter_ == reference.n_iter_ == grown.n_iter_ + 1
    assert loaded.hidden_layer_sizes_ == reference.hidden_layer_sizes_
    pd.testing.assert_frame_equal(loaded.growth_history_, reference.growth_history_)
    np.testing.assert_array_equal(loaded.predict_proba(X), reference.predict_proba(X))


@pytest.mark.parametrize("in_pipeline", [False, True], ids=["bare", "pipeline"])
def test_grid_search_over_strategy_and_gamma(blobs, in_pipeline):
    X, y = blobs
    est = GrowingMLPClassifier(**FAST)
    prefix = ""
    if in_pipeline:
        est = make_pipeline(StandardScaler(), est)
        prefix = "growingmlpclassifier__"
    grid = {f"{prefix}strategy": ["north-select", "static"], f"{prefix}gamma": [0.9, 0.97]}
    search = GridSearchCV(est, grid, cv=2, error_score="raise").fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_
    clf = best[-1] if in_pipeline else best
    check_is_fitted(clf)
    assert clf.strategy == search.best_params_[f"{prefix}strategy"]
    assert clf.gamma == search.best_params_[f"{prefix}gamma"]
    assert search.predict(X).shape == y.shape
    # Well separated blobs: every candidate learns them.
    assert search.best_score_ > 0.8


def test_string_labels(blobs):
    X, y = blobs
    names = np.array(["cat", "dog", "emu"])
    y_str = names[y]
    clf = GrowingMLPClassifier(**FAST).fit(X, y_str)
    np.testing.assert_array_equal(clf.classes_, names)
    pred = clf.predict(X)
    assert pred.dtype == y_str.dtype
    assert set(pred) <= set(names)
    np.testing.assert_array_equal(pred, clf.classes_[clf.predict_proba(X).argmax(axis=1)])
    # The labels are mapped back correctly (a wrong mapping would score near chance).
    assert clf.score(X, y_str) > 0.8
    # Labels sorted like the integers: the same network, only the names differ.
    clf_int = GrowingMLPClassifier(**FAST).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), clf_int.predict_proba(X))
    np.testing.assert_array_equal(pred, names[clf_int.predict(X)])


def test_dataframe_input_and_feature_names(blobs):
    X, y = blobs
    columns = ["a", "b", "c", "d"]
    df = pd.DataFrame(X, columns=columns)
    clf = GrowingMLPClassifier(**FAST).fit(df, y)
    np.testing.assert_array_equal(clf.feature_names_in_, columns)
    assert clf.n_features_in_ == 4
    # As every scikit-learn estimator: names that differ are an error, missing names warn.
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(df.set_axis(["a", "b", "c", "e"], axis=1))
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(df[["d", "c", "b", "a"]])
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict(X)
    # Fitted without names: no feature_names_in_, and names at predict warn.
    clf_np = GrowingMLPClassifier(**FAST).fit(X, y)
    assert not hasattr(clf_np, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names"):
        clf_np.predict(df)
    # A DataFrame is trained on like its values.
    np.testing.assert_array_equal(clf.predict_proba(df), clf_np.predict_proba(X))


# -- fitted attributes --------------------------------------------------------------------


def test_fitted_attributes(grown, digits):
    X, _ = digits
    initial = GROWING["hidden_layer_sizes"]
    maximum = (GROWING["max_hidden_layer_sizes"],) * 2
    np.testing.assert_array_equal(grown.classes_, np.arange(10))
    assert grown.n_features_in_ == 64
    assert not hasattr(grown, "feature_names_in_")

    widths = grown.hidden_layer_sizes_
    assert isinstance(widths, tuple)
    assert all(isinstance(w, int) for w in widths)
    assert len(widths) == len(initial)
    assert widths == grown.module_.hidden_layer_sizes
    assert widths == tuple(layer.weight.shape[0] for layer in grown.module_.layers[:-1])
    assert all(i <= w <= m for i, w, m in zip(initial, widths, maximum))
    assert widths != initial  # it grew (see also test_north_select_grows_on_digits)
    assert [c.shape for c in grown.coefs_] == [(64, widths[0]), widths, (widths[1], 10)]
    assert [b.shape for b in grown.intercepts_] == [(widths[0],), (widths[1],), (10,)]

    history = grown.growth_history_
    assert isinstance(history, pd.DataFrame)
    assert list(history.columns) == list(EVENT_COLUMNS)
    assert list(history.columns) == [
        "step",
        "epoch",
        "layer",
        "n_added",
        "width",
        "metric",
        "threshold",
    ]
    assert history.dtypes.to_dict() == HISTORY_DTYPES

    assert grown.n_iter_ == GROWING["max_epochs"]
    assert isinstance(grown.loss_curve_, list)
    assert len(grown.loss_curve_) == grown.n_iter_
    assert np.all(np.isfinite(grown.loss_curve_))
    assert grown.loss_curve_[-1] < grown.loss_curve_[0]

    proba = grown.predict_proba(X)
    assert proba.shape == (len(X), 10)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_growth_history_is_consistent_with_final_widths(grown):
    initial = GROWING["hidden_layer_sizes"]
    maximum = GROWING["max_hidden_layer_sizes"]
    history = grown.growth_history_
    assert len(history) > 0
    assert history["step"].is_monotonic_increasing
    assert history["epoch"].is_monotonic_increasing
    assert history["epoch"].between(1, grown.n_iter_).all()
    assert (history["n_added"] > 0).all()
    assert (history["width"] <= maximum).all()
    assert set(history["layer"]) <= set(range(len(initial)))
    assert (history["metric"] > history["threshold"]).all()  # a trigger fired
    for layer, (start, final) in enumerate(zip(initial, grown.hidden_layer_sizes_)):
        events = history[history["layer"] == layer]
        assert events["n_added"].sum() == final - start
        np.testing.assert_array_equal(events["width"], start + events["n_added"].cumsum())
        if final > start:
            assert events["width"].iloc[-1] == final
        else:
            assert events.empty


# -- growth ---------------------------------------------------------------------------------


def test_north_select_grows_on_digits(grown):
    # ``grown`` is north-select on digits in [0, 1], widths (48, 48), two epochs.
    assert grown.strategy == "north-select"
    assert all(
        final > start
        for final, start in zip(grown.hidden_layer_sizes_, GROWING["hidden_layer_sizes"])
    ), grown.hidden_layer_sizes_


def test_verbose_one_logs_each_epochs_added_neurons_and_two_adds_a_progress_bar(digits, capsys):
    X, y = digits
    clf = GrowingMLPClassifier(**{**FAST, "max_epochs": 3}, verbose=1).fit(X, y)
    out, err = capsys.readouterr()
    added = clf.growth_history_.groupby("epoch")["n_added"].sum()
    header = out.splitlines()[0].split()
    assert header[:2] == ["epoch", "added"] and "widths" in header
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [int(r[1]) for r in rows] == [int(added.get(e, 0)) for e in (1, 2, 3)]
    assert sum(int(r[1]) for r in rows) > 0
    assert "it/s" not in err and "s/it" not in err  # no progress bar at verbose=1
    clf.set_params(verbose=2, warm_start=True).partial_fit(X, y)
    out, err = capsys.readouterr()
    assert re.search(r"\d+/\d+ \[", err)  # tqdm's "batch/batches [elapsed" on stderr
    clf.set_params(verbose=0).partial_fit(X, y)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    "strategy, params",
    [
        ("north-pre", {}),
        ("north-random", {}),
        # A full-rank initial W has metric 1; gamma=0.99 then needs width >= 100 to fire.
        ("north-weight", {"gamma": 0.9}),
    ],
)
def test_other_growing_strategies_grow(small_digits, strategy, params):
    X, y = small_digits
    clf = GrowingMLPClassifier(
        strategy=strategy, hidden_layer_sizes=(16, 16), max_hidden_layer_sizes=48,
        batch_size=64, lr=3e-3, max_epochs=2, n_candidates=32, random_state=0, **params,
    ).fit(X, y)  # fmt: skip
    assert sum(clf.hidden_layer_sizes_) > 32
    assert len(clf.growth_history_) > 0


def test_static_never_grows(small_digits):
    X, y = small_digits
    clf = GrowingMLPClassifier(
        strategy="static", hidden_layer_sizes=(16, 16), batch_size=64, lr=3e-3, max_epochs=2
    ).fit(X, y)
    assert clf.hidden_layer_sizes_ == (16, 16)
    history = clf.growth_history_
    assert history.empty
    assert list(history.columns) == list(EVENT_COLUMNS)
    # Typed like a non-empty history, so that it concatenates and compares cleanly.
    assert history.dtypes.to_dict() == HISTORY_DTYPES


# -- continued training -----------------------------------------------------------------


def test_partial_fit_continues_training_and_growth(small_digits):
    X, y = small_digits
    clf = GrowingMLPClassifier(
        hidden_layer_sizes=(16, 16), max_hidden_layer_sizes=64, batch_size=64, lr=3e-3,
        n_candidates=32, random_state=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    assert_not_fitted(clf)

    clf.partial_fit(X[:300], y[:300], classes=np.arange(10))
    net, module = clf.net_, clf.module_
    widths, history, losses = clf.hidden_layer_sizes_, clf.growth_history_, clf.loss_curve_
    assert clf.n_iter_ == 1
    for i in range(2, 4):
        clf.partial_fit(X, y)
        assert clf.net_ is net
        assert clf.module_ is module
        assert clf.n_iter_ == i
        assert len(clf.loss_curve_) == i
        assert clf.loss_curve_[: len(losses)] == losses
        assert all(new >= old for new, old in zip(clf.hidden_layer_sizes_, widths))
        pd.testing.assert_frame_equal(clf.growth_history_.iloc[: len(history)], history)
        widths, history, losses = clf.hidden_layer_sizes_, clf.growth_history_, clf.loss_curve_
    # Growth went on after the first call, on the grown network.
    assert (clf.growth_history_["epoch"] > 1).any()
    assert clf.hidden_layer_sizes_ == clf.module_.hidden_layer_sizes
    # Labels outside the first call's classes, or the wrong number of features, are
    # refused before training: the model stays as it was.
    proba = clf.predict_proba(X)
    with pytest.raises(ValueError, match="not seen"):
        clf.partial_fit(X[:10], np.full(10, 11))
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:10, :5], y[:10])
    assert clf.n_iter_ == 3
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_warm_start_continues_training_and_growth(small_digits):
    X, y = small_digits
    params = dict(
        hidden_layer_sizes=(16, 16), max_hidden_layer_sizes=64, batch_size=64, lr=3e-3,
        n_candidates=32, max_epochs=1, random_state=0,
    )  # fmt: skip
    clf = GrowingMLPClassifier(warm_start=True, **params).fit(X, y)
    net, widths, history = clf.net_, clf.hidden_layer_sizes_, clf.growth_history_
    first = clf.predict_proba(X)
    clf.fit(X, y)
    assert clf.net_ is net
    assert clf.n_iter_ == 2
    assert len(clf.loss_curve_) == 2
    assert all(new >= old for new, old in zip(clf.hidden_layer_sizes_, widths))
    assert len(clf.growth_history_) > len(history)
    pd.testing.assert_frame_equal(clf.growth_history_.iloc[: len(history)], history)
    assert (clf.growth_history_["epoch"] == 2).any()
    assert not np.array_equal(clf.predict_proba(X), first)

    # Without warm_start a second fit starts over, reproducing the first.
    cold = GrowingMLPClassifier(warm_start=False, **params).fit(X, y)
    cold_net = cold.net_
    cold.fit(X, y)
    assert cold.net_ is not cold_net
    assert cold.n_iter_ == 1
    assert cold.hidden_layer_sizes_ == widths
    np.testing.assert_array_equal(cold.predict_proba(X), first)


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_continuing_fit_takes_the_new_lr_and_batch_size(blobs, how):
    X, y = blobs  # 150 samples
    clf = GrowingMLPClassifier(**FAST, warm_start=True).fit(X, y)
    steps = growth_of(clf).step_
    clf.set_params(lr=1e-3, batch_size=50)
    clf.partial_fit(X, y) if how == "partial_fit" else clf.fit(X, y)
    epochs = 1 if how == "partial_fit" else FAST["max_epochs"]
    assert growth_of(clf).step_ - steps == 3 * epochs  # batches of 50
    assert [g["lr"] for g in clf.net_.optimizer_.param_groups] == [1e-3]


def test_continuing_fit_takes_the_new_verbosity(blobs, capsys):
    X, y = blobs
    clf = GrowingMLPClassifier(**FAST, warm_start=True).fit(X, y)
    assert capsys.readouterr().out == ""
    clf.set_params(verbose=1).partial_fit(X, y)
    # skorch's log line of epoch 4, with the widths column.
    widths = "-".join(map(str, clf.hidden_layer_sizes_))
    assert re.search(rf"^ +4 .* {widths} ", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize(
    "params",
    [
        {"strategy": "static"},
        {"hidden_layer_sizes": (4, 4)},
        {"max_hidden_layer_sizes": 12},
        {"gamma": 0.5},
        {"activation": "tanh"},
        {"optimizer": "sgd"},
        {"optimizer_params": {"weight_decay": 0.1}},
        {"buffer_size": 500, "activation_source": "training"},
        {"callbacks": [EarlyStopping(monitor="train_loss")]},
        {"random_state": 1},
    ],
)
def test_continuing_fit_rejects_a_changed_network_or_strategy(blobs, params):
    X, y = blobs
    clf = GrowingMLPClassifier(**FAST, warm_start=True).fit(X, y)
    net, before = clf.net_, clf.predict_proba(X)
    clf.set_params(**params)
    for continuing in (lambda: clf.fit(X, y), lambda: clf.partial_fit(X, y)):
        with pytest.raises(ValueError, match="changed since the network was built") as error:
            continuing()
        assert all(repr(name) in str(error.value) for name in params)
    # Rejected before anything was touched.
    assert clf.net_ is net and clf.n_iter_ == FAST["max_epochs"]
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    # warm_start=False builds a new network with the new parameters.
    clf.set_params(warm_start=False).fit(X, y)
    assert clf.net_ is not net


def test_equal_values_of_a_parameter_are_no_change(blobs):
    X, y = blobs
    clf = GrowingMLPClassifier(**FAST, warm_start=True).fit(X, y)
    clf.set_params(hidden_layer_sizes=[8, 8]).fit(X, y)
    clf.set_params(hidden_layer_sizes=np.array([8, 8])).partial_fit(X, y)
    assert clf.n_iter_ == 2 * FAST["max_epochs"] + 1


# -- sample weights ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["static", "north-select", "gradmax"])
def test_uniform_sample_weights_change_nothing(small_digits, strategy):
    X, y = small_digits
    params = {**FAST, "strategy": strategy}
    plain = GrowingMLPClassifier(**params).fit(X, y)
    for value in (1.0, 7.0):
        weighted = GrowingMLPClassifier(**params).fit(X, y, sample_weight=np.full(len(y), value))
        assert weighted.hidden_layer_sizes_ == plain.hidden_layer_sizes_
        np.testing.assert_allclose(weighted.predict_proba(X), plain.predict_proba(X), atol=1e-6)


def test_zero_weight_samples_are_not_learned(small_digits):
    X, y = small_digits
    weight = np.where(y == 2, 0.0, 1.0)
    plain = GrowingMLPClassifier(**FAST).fit(X, y)
    weighted = GrowingMLPClassifier(**FAST).fit(X, y, sample_weight=weight)
    # Class 2 is known (classes_) but nothing pulls the network towards it.
    assert list(weighted.classes_) == list(range(10))
    assert plain.predict_proba(X)[:, 2].mean() > 0.05
    assert weighted.predict_proba(X)[:, 2].mean() < 0.01


def test_weighted_loss_is_the_weighted_batch_mean(grown):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    weights = torch.tensor([0.0, 1.0, 2.0, 0.5, 3.0, 1.0])
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    targets = torch.stack([labels.double(), weights.double()], dim=1)
    loss = grown.net_.get_loss(logits, targets)
    torch.testing.assert_close(loss, (weights * losses).sum() / weights.sum())
    # Without weights: skorch's mean; a batch of zero total weight contributes nothing.
    torch.testing.assert_close(grown.net_.get_loss(logits, labels), losses.mean())
    zero = grown.net_.get_loss(logits, torch.stack([labels.double(), 0 * weights.double()], 1))
    assert zero.item() == 0.0


@pytest.mark.parametrize(
    "weight, match",
    [
        ("negative", "Negative"),
        ("short", "shape"),
        ("zeros", "non-zero"),
        ("nan", "NaN"),
    ],
)
def test_invalid_sample_weight_is_rejected(blobs, weight, match):
    X, y = blobs
    w = {
        "negative": np.r_[-1.0, np.ones(len(y) - 1)],
        "short": np.ones(len(y) - 1),
        "zeros": np.zeros(len(y)),
        "nan": np.r_[np.nan, np.ones(len(y) - 1)],
    }[weight]
    clf = GrowingMLPClassifier(**FAST)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y, sample_weight=w)
    assert_not_fitted(clf)
    # Continuing: rejected before anything is touched, the model stays as it was.
    clf = GrowingMLPClassifier(**FAST, warm_start=True).fit(X, y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match=match):
        clf.partial_fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def _scramble_zero_weighted(y, w, classes):
    """``y`` with the labels of the zero-weight samples changed (shifted by one class)."""
    y = np.asarray(y).copy()
    zero = w == 0
    idx = np.searchsorted(classes, y[zero])
    y[zero] = np.asarray(classes)[(idx + 1) % len(classes)]
    return y


@pytest.mark.parametrize("how", ["fit", "warm_start", "partial_fit", "pipeline"])
def test_sample_weight_is_honoured_by_every_kind_of_fit(blobs, how):
    # Weights are honoured iff the labels of zero-weight samples do not matter: the
    # same data with those labels changed must give the identical model (the batches,
    # and the sample buffer, which is unweighted, see the same X), and equal weights of
    # 1 must not (the labels then count).
    X, y = blobs
    w = np.where(np.arange(len(y)) % 3 == 0, 0.0, np.linspace(0.5, 2.0, len(y)))
    y_other = _scramble_zero_weighted(y, w, [0, 1, 2])
    assert (y_other != y).sum() == (w == 0).sum()

    def model(labels, weights):
        if how == "pipeline":
            pipe = make_pipeline(StandardScaler(), GrowingMLPClassifier(**FAST))
            return pipe.fit(X, labels, growingmlpclassifier__sample_weight=weights)
        clf = GrowingMLPClassifier(**FAST, warm_start=how == "warm_start")
        # The first call never sees the scrambled labels: only the continuation does.
        clf.partial_fit(X, y, classes=[0, 1, 2]) if how == "partial_fit" else clf.fit(X, y)
        if how == "fit":
            return clf.fit(X, labels, sample_weight=weights)
        if how == "warm_start":
            return clf.fit(X, labels, sample_weight=weights)
        return clf.partial_fit(X, labels, weights)

    same = model(y, w).predict_proba(X), model(y_other, w).predict_proba(X)
    np.testing.assert_array_equal(*same)
    ones = np.ones_like(w)
    assert not np.allclose(model(y, ones).predict_proba(X), model(y_other, ones).predict_proba(X))


def test_continuation_maps_labels_through_classes_(digits):
    X, y = digits
    X = X / 16
    clf = GrowingMLPClassifier(**{**FAST, "lr": 3e-3})
    clf.partial_fit(X, y, classes=np.arange(10))
    high = y >= 5
    for _ in range(15):
        clf.partial_fit(X[high], y[high])
    # Learned as 5-9, not as the 0-4 a fresh encoding of the batch would give.
    assert clf.score(X[high], y[high]) > 0.8
    assert np.mean(clf.predict(X[high]) >= 5) > 0.9


def test_classes_of_partial_fit_come_from_classes_not_the_first_batch(digits):
    X, y = digits
    X = X / 16
    absent = y != 7
    clf = GrowingMLPClassifier(**FAST).partial_fit(X[absent], y[absent], classes=np.arange(10))
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.predict_proba(X).shape == (len(X), 10) and clf.n_outputs_ == 10
    for _ in range(10):
        clf.partial_fit(X, y)  # the missing class is accepted, and learned
    assert np.mean(clf.predict(X[~absent]) == 7) > 0.5


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_growth_events_follow_the_documented_count_rule(small_digits, gamma):
    # README: n = max(0, rank - floor(gamma * phi_0 * M)), capped by the room left, with
    # phi = rank / M; at gamma = 1 a layer grows exactly when its rank exceeds phi_0 * M.
    X, y = small_digits
    clf = GrowingMLPClassifier(
        strategy="north-random",
        hidden_layer_sizes=(6, 6),
        max_hidden_layer_sizes=(40, 40),
        gamma=gamma,
        epsilon=0.037,
        lr=3e-3,
        batch_size=32,
        max_epochs=3,
        random_state=0,
    ).fit(X / 16, y)
    trigger = dict(clf.net_.callbacks_)["growth"].trigger_
    events = clf.growth_history_
    assert len(events) > 0
    for e in events.itertuples():
        before = e.width - e.n_added
        rank = round(e.metric * before)
        assert e.metric * before == pytest.approx(rank)
        assert e.threshold == pytest.approx(gamma * trigger.baselines_[e.layer])
        expected = rank - math.floor(before * e.threshold + 1e-9)
        assert e.n_added == min(expected, 40 - before)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X_is_rejected(blobs, bad):
    X, y = blobs
    X = X.copy()
    X[3, 1] = bad
    clf = GrowingMLPClassifier(**FAST)
    with pytest.raises(ValueError, match=r"(?i)nan|infinity"):
        clf.fit(X, y)
    assert_not_fitted(clf)


def test_wrong_number_of_features_at_predict(blobs):
    X, y = blobs
    clf = GrowingMLPClassifier(**FAST).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="features"):
        clf.predict_proba(np.hstack([X, X]))


def test_single_class_is_rejected(blobs):
    X, _ = blobs
    clf = GrowingMLPClassifier(**FAST)
    with pytest.raises(ValueError, match="class"):
        clf.fit(X, np.ones(len(X)))
    assert_not_fitted(clf)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"hidden_layer_sizes": (8, 8), "max_hidden_layer_sizes": 4}, "max_hidden_layer_sizes"),
        ({"hidden_layer_sizes": (8, 8), "max_hidden_layer_sizes": (16, 7)}, "layer 1"),
        ({"hidden_layer_sizes": (8, 8), "max_hidden_layer_sizes": (16,)}, "entries"),
        ({"gamma": 0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"strategy": "north-east"}, "strategy"),
        ({"hidden_layer_sizes": (8, 0)}, "hidden_layer_sizes"),
        ({"lr": 0.0}, "lr"),
        ({"activation": "softmax"}, "activation"),
        ({"device": "not-a-device"}, "device"),
        ({"trigger_rounding": "nearest"}, "trigger_rounding"),
        ({"optimizer": int}, "subclass of torch.optim.Optimizer"),
        # north-select measures activations: 8 samples cannot show 80 independent neurons.
        ({"buffer_size": 8}, "buffer_size=8 must be larger"),
    ],
)
def test_invalid_parameters_are_rejected(blobs, params, match):
    X, y = blobs
    clf = GrowingMLPClassifier(**{**FAST, **params})
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert_not_fitted(clf)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(blobs):
    X, y = blobs
    clf = GrowingMLPClassifier(**{**FAST, "device": "cuda"})
    with pytest.raises(ValueError, match="CUDA is not available"):
        clf.fit(X, y)
    assert_not_fitted(clf)


#: failure -> what the error says (the test must fail where the failure is meant to be).
REJECTIONS = {
    "nan": "NaN",
    "single class": "at least 2 classes",
    "parameter": "'gamma' parameter",
    "batch_size": "'batch_size' parameter",
    "optimizer_params": "momentm",
    "features": "features",
}


@pytest.mark.parametrize(
    "failure, warm_start",
    [
        *((f, w) for f in ("nan", "parameter", "batch_size") for w in (False, True)),
        # A continuation may see one class (of classes_); a fresh fit needs two.
        ("single class", False),
        ("optimizer_params", False),
        ("features", True),  # a fresh fit may take other features; a continuation not
    ],
)
def test_refit_rejected_at_validation_keeps_the_previous_model(blobs, failure, warm_start):
    X, y = blobs
    clf = GrowingMLPClassifier(**FAST).fit(X, y)
    before = {k: v for k, v in vars(clf).items() if k.endswith("_")}
    proba = clf.predict_proba(X)
    weights = [p.detach().clone() for p in clf.module_.parameters()]
    clf.set_params(warm_start=warm_start)
    if failure == "nan":
        X = X.copy()
        X[0, 0] = np.nan
    elif failure == "single class":
        y = np.zeros_like(y)
    elif failure == "parameter":
        clf.set_params(gamma=2.0)
    elif failure == "batch_size":
        clf.set_params(batch_size=0)
    elif failure == "features":
        X = X[:, :3]
    else:
        clf.set_params(optimizer_params={"momentm": 0.9})
    with pytest.raises(ValueError, match=REJECTIONS[failure]):
        clf.fit(X, y)
    # The same objects, the same weights, the same predictions.
    assert {k: v for k, v in vars(clf).items() if k.endswith("_")}.keys() == before.keys()
    assert all(getattr(clf, k) is v for k, v in before.items())
    assert all(torch.equal(a, b) for a, b in zip(clf.module_.parameters(), weights))
    np.testing.assert_array_equal(clf.predict_proba(blobs[0]), proba)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_continuation_takes_the_new_alpha(blobs, alpha):
    X, y = blobs
    clf = GrowingMLPClassifier(**FAST, warm_start=True).fit(X, y)
    clf.set_params(alpha=alpha).fit(X, y)
    # The continuation's losses carry the penalty of the alpha it was given.
    net = clf.net_
    with torch.no_grad():
        Xb = torch.as_tensor(X, dtype=torch.float32)
        logits = net.module_(Xb)
        plain = float(torch.nn.functional.cross_entropy(logits, torch.as_tensor(y)))
        squares = sum(float((layer.weight**2).sum()) for layer in net.module_.layers)
    loss = float(net.get_loss(logits, torch.as_tensor(y), training=True))
    assert loss == pytest.approx(plain + 0.5 * alpha * squares / len(X), rel=1e-5)
    again = GrowingMLPClassifier(**FAST, warm_start=True).fit(X, y)
    again.set_params(alpha=1.0 - alpha).fit(X, y)
    assert not np.allclose(again.predict_proba(X), clf.predict_proba(X))


class PoisonAt(Callback):
    """Set every weight to ``value`` after training batch ``batch`` (counted over the fit)."""

    def __init__(self, batch, value=float("nan")):
        self.batch = batch
        self.value = value

    def initialize(self):
        self.seen_ = 0
        return self

    def on_batch_end(self, net, training=False, **kwargs):
        self.seen_ += training
        if self.seen_ == self.batch:
            with torch.no_grad():
                for p in net.module_.parameters():
                    p.fill_(self.value)


@pytest.mark.parametrize("strategy", ["north-select", "gradmax", "static"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_diverged_training_stops_at_the_first_non_finite_loss(blobs, strategy, value):
    X, y = blobs  # 150 samples, batches of 32: 5 an epoch
    clf = GrowingMLPClassifier(**{**FAST, "strategy": strategy}, callbacks=[PoisonAt(7, value)])
    # Weights broken after step 7 (epoch 2, batch 2): step 8's loss is the first NaN.
    with pytest.raises(ValueError, match="Training diverged: the loss was nan at epoch 2, batch 3"):
        clf.fit(X, y)
    assert_not_fitted(clf)


class StepsSeen(Trigger):
    """Never fires; records (in a class attribute: fit works on a copy) the steps at
    which it was evaluated."""

    steps = []

    def __call__(self, index, site, context):
        StepsSeen.steps.append(context.step)
        return TriggerDecision(0, metric=0.0, threshold=0.0)


def test_no_trigger_is_evaluated_after_a_non_finite_loss(blobs):
    X, y = blobs
    StepsSeen.steps = []
    strategy = (StepsSeen(), RandomInit())
    clf = GrowingMLPClassifier(**{**FAST, "strategy": strategy}, callbacks=[PoisonAt(7)])
    with pytest.raises(ValueError, match="diverged"):
        clf.fit(X, y)
    # Step 8's loss was NaN: its evaluation (two sites) never ran.
    assert StepsSeen.steps == [step for step in range(1, 8) for _ in range(2)]


def test_non_finite_weights_after_the_last_step_are_an_error(blobs):
    X, y = blobs
    last = 5 * FAST["max_epochs"]  # every loss was finite
    clf = GrowingMLPClassifier(**FAST, callbacks=[PoisonAt(last)])
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        clf.fit(X, y)
    assert_not_fitted(clf)


def test_divergence_from_unscaled_input_is_a_clear_error(small_digits):
    X, y = small_digits
    clf = GrowingMLPClassifier(**{**FAST, "optimizer": "sgd", "lr": 10.0})
    with pytest.raises(ValueError, match="preprocessed"):
        clf.fit(X * 1e30, y)
    assert_not_fitted(clf)


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_divergence_when_continuing_restores_the_model_of_before_the_call(blobs, how):
    X, y = blobs
    # The callback poisons the weights at the second step of the continuation (the first
    # fit takes 5 steps an epoch).
    poison = PoisonAt(5 * FAST["max_epochs"] + 2)
    clf = GrowingMLPClassifier(**FAST, warm_start=True, callbacks=[poison]).fit(X, y)
    proba = clf.predict_proba(X)
    weights = [p.detach().clone() for p in clf.module_.parameters()]
    history = clf.growth_history_.copy()
    n_iter = clf.n_iter_
    with pytest.raises(ValueError, match="diverged"):
        clf.partial_fit(X, y) if how == "partial_fit" else clf.fit(X, y)
    check_is_fitted(clf)
    assert clf.n_iter_ == n_iter
    assert all(torch.equal(a, b) for a, b in zip(clf.module_.parameters(), weights))
    pd.testing.assert_frame_equal(clf.growth_history_, history)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    # The restored model continues: the callback's copy in the net counted the failed
    # steps away with the rest of the failed call, so it poisons again at the same step.
    with pytest.raises(ValueError, match="diverged"):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


class InterruptAt(Callback):
    """Raise ``KeyboardInterrupt`` at the end of epoch ``epoch``."""

    def __init__(self, epoch=2):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) >= self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("already_fitted", [False, True])
def test_interrupted_fit_propagates_and_leaves_no_fitted_state(blobs, already_fitted):
    X, y = blobs
    clf = GrowingMLPClassifier(**FAST)
    if already_fitted:
        clf.fit(X, y)
        check_is_fitted(clf)
    clf.set_params(callbacks=[InterruptAt(epoch=2)])
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert_not_fitted(clf)
    # The interrupt did not break the estimator: without the callback it fits again.
    clf.set_params(callbacks=None).fit(X, y)
    assert clf.n_iter_ == FAST["max_epochs"]


def test_early_stopping_ends_a_fit_normally(small_digits):
    X, y = small_digits
    # A relative threshold no epoch can meet: patience runs out after epoch 1 + 2.
    stop = EarlyStopping(monitor="train_loss", patience=2, threshold=0.99, threshold_mode="rel")
    clf = GrowingMLPClassifier(**{**FAST, "max_epochs": 20}, callbacks=[stop]).fit(X, y)
    check_is_fitted(clf)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    assert clf.hidden_layer_sizes_ == clf.module_.hidden_layer_sizes
    assert clf.score(X, y) > 0.8
    # warm_start continues (the callback's patience starts over) and stops again.
    clf.set_params(warm_start=True).fit(X, y)
    assert clf.n_iter_ == 6


@pytest.mark.parametrize("strategy, ok", [("north-select", False), ("static", True)])
def test_early_stopping_load_best_only_without_growth(small_digits, strategy, ok):
    X, y = small_digits
    stop = EarlyStopping(monitor="train_loss", patience=2, load_best=True)
    clf = GrowingMLPClassifier(**{**FAST, "strategy": strategy}, callbacks=[("stop", stop)])
    if ok:
        check_is_fitted(clf.fit(X, y))
    else:
        with pytest.raises(ValueError, match="load_best=True"):
            clf.fit(X, y)
        assert_not_fitted(clf)


# -- reproducibility and randomness ---------------------------------------------------------


def test_same_random_state_gives_identical_fits(grown, digits):
    X, y = digits
    again = clone(grown).fit(X, y)
    assert again.hidden_layer_sizes_ == grown.hidden_layer_sizes_
    pd.testing.assert_frame_equal(again.growth_history_, grown.growth_history_)
    assert again.loss_curve_ == grown.loss_curve_
    np.testing.assert_array_equal(again.predict_proba(X), grown.predict_proba(X))


def test_different_random_state_changes_the_fit(small_digits):
    X, y = small_digits
    fits = [
        GrowingMLPClassifier(**{**FAST, "hidden_layer_sizes": (16,), "random_state": seed}).fit(
            X, y
        )
        for seed in (0, 1)
    ]
    a, b = (f.coefs_[0] for f in fits)
    assert a.shape != b.shape or not np.allclose(a, b)
    assert not np.allclose(fits[0].predict_proba(X), fits[1].predict_proba(X))


@pytest.mark.parametrize("random_state", [0, None])
def test_global_rng_state_is_untouched(small_digits, random_state):
    X, y = small_digits
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002 (numpy's global generator is what is checked)
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()  # noqa: NPY002
    clf = GrowingMLPClassifier(**{**FAST, "random_state": random_state}).fit(X, y)
    clf.partial_fit(X, y)
    clf.predict_proba(X)
    assert torch.equal(torch.get_rng_state(), torch_state)
    if random_state is not None:
        # An int seed does not draw from numpy's global generator either.
        np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002


# -- callbacks ------------------------------------------------------------------------------


def test_lr_scheduler_keeps_working_across_growth(small_digits):
    X, y = small_digits
    lr, epochs = 3e-3, 3
    clf = GrowingMLPClassifier(
        hidden_layer_sizes=(16, 16), max_hidden_layer_sizes=64, batch_size=64, lr=lr,
        max_epochs=epochs, n_candidates=32, random_state=0,
        callbacks=[LRScheduler(policy=StepLR, step_size=1, gamma=0.5)],
    ).fit(X, y)  # fmt: skip
    assert len(clf.growth_history_) > 0
    assert clf.hidden_layer_sizes_ != (16, 16)

    net = clf.net_
    # The rate followed the schedule through every epoch, growth events included.
    np.testing.assert_allclose(net.history[:, "event_lr"], [lr * 0.5**e for e in range(epochs)])
    optimizer = net.optimizer_
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * 0.5**epochs)
    scheduler = dict(net.callbacks_)["LRScheduler"]
    assert scheduler.lr_scheduler_.optimizer is optimizer

    # The optimizer holds exactly the grown parameters, with state of their shapes.
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    module_params = list(clf.module_.parameters())
    assert {id(p) for p in in_optimizer} == {id(p) for p in module_params}
    assert len(in_optimizer) == len(module_params)
    for p in module_params:
        assert optimizer.state[p]["exp_avg"].shape == p.shape
        assert optimizer.state[p]["exp_avg_sq"].shape == p.shape
    assert module_params[0].shape[0] == clf.hidden_layer_sizes_[0]

    # One more epoch keeps scheduling the same optimizer. (skorch re-creates the scheduler
    # at the start of every continued training, which for StepLR costs one extra step;
    # that is skorch's behaviour, not asserted here.)
    before = optimizer.param_groups[0]["lr"]
    clf.partial_fit(X, y)
    assert clf.net_.optimizer_ is optimizer
    assert dict(clf.net_.callbacks_)["LRScheduler"].lr_scheduler_.optimizer is optimizer
    assert clf.net_.history[-1, "event_lr"] <= before
    assert optimizer.param_groups[0]["lr"] < before


def test_fit_does_not_modify_the_callbacks_parameter(blobs):
    X, y = blobs
    scheduler = LRScheduler(policy=StepLR, step_size=1, gamma=0.5)
    before = dict(vars(scheduler))
    clf = GrowingMLPClassifier(**FAST, callbacks=[scheduler]).fit(X, y)
    assert clf.callbacks[0] is scheduler
    assert vars(scheduler) == before  # not initialized, holds no optimizer
    assert all(cb is not scheduler for _, cb in clf.net_.callbacks_)
    # Two estimators sharing the callback list do not share the scheduler's state.
    other = clone(clf).set_params(callbacks=clf.callbacks).fit(X, y)
    sched_a = dict(clf.net_.callbacks_)["LRScheduler"].lr_scheduler_
    sched_b = dict(other.net_.callbacks_)["LRScheduler"].lr_scheduler_
    assert sched_a.optimizer is clf.net_.optimizer_
    assert sched_b.optimizer is other.net_.optimizer_


def test_default_rounding_lets_a_full_rank_layer_grow(small_digits):
    # From 16 full-rank neurons eq. 3 gives floor(16 * 0.01) = 0 for the weight trigger;
    # the default (the reference code's rounding) gives 16 - floor(15.84) = 1 while the
    # rank allows it.
    X, y = small_digits
    params = dict(strategy="north-weight", hidden_layer_sizes=(16, 16), max_epochs=2,
                  random_state=0)  # fmt: skip
    eq3 = GrowingMLPClassifier(trigger_rounding="floor_difference", **params).fit(X, y)
    default = GrowingMLPClassifier(**params).fit(X, y)
    assert eq3.hidden_layer_sizes_ == (16, 16)
    assert all(w > 16 for w in default.hidden_layer_sizes_)


@pytest.mark.parametrize(
    ("strategy", "max_width", "warns"),
    [
        ("north-select", 30, True),  # 30 samples, max width 30: bounded
        ("north-random", (8, 40), True),
        ("north-select", 29, False),  # more samples than neurons
        ("north-weight", 30, False),  # the weight metric does not count samples
        ("gradmax", 30, False),
        ("static", 30, False),
    ],
)
def test_fit_warns_when_the_training_set_bounds_the_activation_metric(
    blobs, strategy, max_width, warns
):
    X, y = blobs[0][:30], blobs[1][:30]
    clf = GrowingMLPClassifier(
        strategy=strategy, hidden_layer_sizes=(4, 4), max_hidden_layer_sizes=max_width,
        max_epochs=1, buffer_size=64, random_state=0,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X, y)
    capacity = [w for w in caught if issubclass(w.category, GrowthCapacityWarning)]
    assert len(capacity) == int(warns)
    if warns:
        message = str(capacity[0].message)
        assert "30 samples" in message and "max_hidden_layer_sizes" in message
        assert capacity[0].filename == __file__  # points at the user's call
    # partial_fit's first batch is not the training set: never warned.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clone(clf).partial_fit(X, y, classes=np.unique(y))
    assert not [w for w in caught if issubclass(w.category, GrowthCapacityWarning)]
