"""``GrowingCNNClassifier`` as a user meets it (issue 19): the scikit-learn contract, how
images are read (4-D arrays, 2-D rows with or without ``input_shape``), the fitted
attributes, continuation, reproducibility and clear errors for bad input.

The engine's mathematics on convolutions (surgery, the conv metric, the initializers) and
the estimator checks are in test_cnn.py; the CUDA path is in test_cuda.py.
"""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_is_fitted

from sklearn_north import STRATEGIES, GrowingCNNClassifier, GrowingMLPClassifier
from sklearn_north._cnn import _DENSE_ONLY
from sklearn_north.growth import (
    EVENT_COLUMNS,
    ActivationTrigger,
    GradientTrigger,
    PreActivationInit,
)

# The small architecture at a few channels: a fit on a few hundred digits takes a fraction
# of a second, and its convs still grow (caps far enough away to keep growing when
# training continues).
INITIAL = (4, 4, 8)
MAXIMUM = (32, 32, 64)
FAST = dict(
    widths=INITIAL,
    max_widths=MAXIMUM,
    max_epochs=2,
    batch_size=64,
    lr=1e-2,
    n_candidates=8,
    random_state=0,
)

# VGG-11's 8 convs and 2 hidden dense layers at a few channels each.
TINY_VGG = dict(
    architecture="vgg11",
    widths=[2] * 8 + [4, 4],
    max_widths=[4] * 8 + [8, 8],
    max_epochs=1,
    batch_size=64,
    n_candidates=4,
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

#: The named strategies that grow convolutions.
CONV_STRATEGIES = [name for name in STRATEGIES if name != "static" and name not in _DENSE_ONLY]

#: The activation sources the CNN takes (its default may change: every one is tested).
SOURCES = sorted(GrowingCNNClassifier._parameter_constraints["activation_source"][0].options)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:360] / 16.0, y[:360]


@pytest.fixture(scope="module")
def fitted(digits):
    """A CNN fitted on 2-D digits rows that has grown (module-scoped: read only)."""
    X, y = digits
    return GrowingCNNClassifier(**FAST).fit(X, y)


def fitted_names(est):
    return sorted(k for k in vars(est) if k.endswith("_") and not k.startswith("__"))


def assert_same_network(a, b):
    """The same widths and, entry by entry, the same weights and buffers."""
    assert a.widths_ == b.widths_
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def two_channels(X):
    """Digits rows -> rows of two 8x8 channels (the image and its negative), NCHW order."""
    return np.hstack([X, 1.0 - X])


# -- the scikit-learn contract ---------------------------------------------------------


def test_clone_is_unfitted_with_equal_params(fitted, digits):
    cloned = clone(fitted)
    assert cloned.get_params(deep=False).keys() == fitted.get_params(deep=False).keys()
    for name, value in fitted.get_params(deep=False).items():
        assert cloned.get_params(deep=False)[name] == value, name
    assert fitted_names(cloned) == []
    with pytest.raises(NotFittedError):
        cloned.predict(digits[0].reshape(-1, 1, 8, 8))
    check_is_fitted(fitted)


def test_grid_search_over_a_pipeline_reading_transformed_rows_as_images(digits):
    # A transformer's 2-D output (here: 128 columns) is read as (2, 8, 8) images through
    # input_shape, channel after channel (NCHW): the model is the one fitted on the
    # same images given as a 4-D array.
    X, y = digits
    pipe = make_pipeline(
        FunctionTransformer(two_channels), GrowingCNNClassifier(input_shape=(2, 8, 8), **FAST)
    )
    grid = {"growingcnnclassifier__strategy": ["north-select", "static"]}
    search = GridSearchCV(pipe, grid, cv=2, error_score="raise").fit(X, y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_[-1]
    assert best.strategy == search.best_params_["growingcnnclassifier__strategy"]
    assert best.input_shape_ == (2, 8, 8) and best.module_.convs[0].in_channels == 2
    images = two_channels(X).reshape(-1, 2, 8, 8)
    direct = GrowingCNNClassifier(**{**FAST, "strategy": best.strategy}).fit(images, y)
    assert_same_network(direct, best)
    np.testing.assert_array_equal(search.predict_proba(X), direct.predict_proba(images))


def test_string_labels(digits):
    X, y = digits
    images = X.reshape(-1, 1, 8, 8)
    # Sorted as the integers are: the same network, only the names differ.
    names = np.array([f"digit-{i}" for i in range(10)])
    clf = GrowingCNNClassifier(**FAST).fit(images, names[y])
    np.testing.assert_array_equal(clf.classes_, names)
    pred = clf.predict(images)
    assert pred.dtype == names.dtype
    np.testing.assert_array_equal(pred, names[clf.predict_proba(images).argmax(axis=1)])
    by_int = GrowingCNNClassifier(**FAST).fit(images, y)
    np.testing.assert_array_equal(clf.predict_proba(images), by_int.predict_proba(images))
    np.testing.assert_array_equal(pred, names[by_int.predict(images)])


def test_dataframe_input_keeps_feature_names(digits):
    X, y = digits
    columns = [f"px{i}" for i in range(64)]
    df = pd.DataFrame(X, columns=columns)
    clf = GrowingCNNClassifier(**FAST).fit(df, y)
    np.testing.assert_array_equal(clf.feature_names_in_, columns)
    assert clf.n_features_in_ == 64 and clf.input_shape_ == (1, 8, 8)
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(df.set_axis([*columns[:-1], "other"], axis=1))
    # A DataFrame is trained on like its values.
    plain = GrowingCNNClassifier(**FAST).fit(X, y)
    assert not hasattr(plain, "feature_names_in_")
    assert_same_network(clf, plain)
    np.testing.assert_array_equal(clf.predict_proba(df), plain.predict_proba(X))


# -- how images are read ------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_features, shape",
    [(64, (1, 8, 8)), (16, (1, 4, 4)), (63, (1, 1, 63)), (1, (1, 1, 1))],
)
def test_2d_rows_without_input_shape_are_read_as_documented(digits, n_features, shape):
    # A perfect square: one square channel; else one row of pixels. The model equals the
    # one fitted on the images of that shape.
    X, y = digits
    X = X[:200, :n_features]
    y = y[:200]
    params = {**FAST, "max_epochs": 1}
    rows = GrowingCNNClassifier(**params).fit(X, y)
    assert rows.input_shape_ == shape
    assert rows.module_.convs[0].in_channels == 1
    images = X.reshape(-1, *shape)
    four_d = GrowingCNNClassifier(**params).fit(images, y)
    assert four_d.input_shape_ == shape
    assert_same_network(rows, four_d)
    np.testing.assert_array_equal(rows.predict_proba(images), rows.predict_proba(X))


def test_multichannel_images_as_4d_or_as_rows_with_input_shape():
    # Random 3x8x8 images whose class brightens one channel: the network reads channels
    # as channels, and 4-D input and its NCHW rows with input_shape give the same model.
    rng = np.random.default_rng(0)
    y = np.arange(240) % 3
    images = 0.5 * rng.random((240, 3, 8, 8))
    images[np.arange(240), y] += 0.5
    rows = images.reshape(240, -1)
    four_d = GrowingCNNClassifier(**FAST).fit(images, y)
    flat = GrowingCNNClassifier(**FAST, input_shape=(3, 8, 8)).fit(rows, y)
    assert four_d.input_shape_ == flat.input_shape_ == (3, 8, 8)
    assert four_d.module_.convs[0].in_channels == 3
    assert_same_network(four_d, flat)
    pd.testing.assert_frame_equal(four_d.growth_history_, flat.growth_history_)
    np.testing.assert_array_equal(four_d.predict_proba(images), flat.predict_proba(rows))
    np.testing.assert_array_equal(flat.predict_proba(images), flat.predict_proba(rows))
    assert four_d.score(images, y) > 0.9


@pytest.mark.parametrize(
    "input_shape, spatial",
    [(None, 1), ((1, 1, 64), 2)],  # 8x8 -> 4, 2, 1, 1, 1; 1x64 -> 1x32, ..., 1x2
    ids=["digits-8x8", "one-row"],
)
def test_vgg11_fits_and_predicts_small_images(digits, input_shape, spatial):
    # Five ceil-mode 2x2 pools: a side of 1 stays 1, so images smaller than 32x32 work.
    X, y = digits
    clf = GrowingCNNClassifier(**TINY_VGG, input_shape=input_shape).fit(X, y)
    assert clf.input_shape_ == (input_shape or (1, 8, 8))
    assert clf.module_.spatial == spatial
    assert clf.module_.dense[0].in_features == clf.widths_[7] * spatial
    assert len(clf.widths_) == 10
    assert all(
        i <= w <= m for i, w, m in zip(TINY_VGG["widths"], clf.widths_, clf.module_.max_widths)
    )
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_vgg11_fits_one_pixel_images(digits):
    X, y = digits
    clf = GrowingCNNClassifier(**TINY_VGG).fit(X[:, [36]], y)
    assert clf.input_shape_ == (1, 1, 1) and clf.module_.spatial == 1
    assert clf.predict_proba(X[:, [36]].reshape(-1, 1, 1, 1)).shape == (len(X), 10)


# -- fitted attributes ----------------------------------------------------------------------


def test_fitted_attributes_mirror_the_mlps(fitted, digits):
    X, y = digits
    # Every fitted attribute of the MLP but its dense-only coefs_ and intercepts_.
    mlp = GrowingMLPClassifier(hidden_layer_sizes=(8,), max_epochs=1, random_state=0).fit(X, y)
    assert set(fitted_names(mlp)) - {"coefs_", "intercepts_"} <= set(fitted_names(fitted))

    widths = fitted.widths_
    assert isinstance(widths, tuple) and all(isinstance(w, int) for w in widths)
    assert widths == fitted.hidden_layer_sizes_ == fitted.module_.widths
    assert all(i <= w <= m for i, w, m in zip(INITIAL, widths, MAXIMUM))
    assert widths != INITIAL
    module = fitted.module_
    assert [conv.out_channels for conv in module.convs] == list(widths[:2])
    assert module.convs[1].in_channels == widths[0]
    assert module.dense[0].in_features == widths[1] * module.spatial
    assert module.dense[0].out_features == widths[2]
    assert fitted.input_shape_ == (1, 8, 8)
    assert all(isinstance(s, int) for s in fitted.input_shape_)
    assert fitted.n_features_in_ == 64
    np.testing.assert_array_equal(fitted.classes_, np.arange(10))

    history = fitted.growth_history_
    assert list(history.columns) == list(EVENT_COLUMNS)
    assert history.dtypes.to_dict() == HISTORY_DTYPES
    assert history["epoch"].between(1, fitted.n_iter_).all()
    assert history["step"].is_monotonic_increasing
    for site, (initial, final) in enumerate(zip(INITIAL, widths)):
        events = history[history["layer"] == site]
        assert initial + events["n_added"].sum() == final
        if len(events):
            assert events["width"].iloc[-1] == final
    assert set(history["layer"]) & {0, 1}  # channels grew, not only the dense layer

    assert fitted.n_iter_ == FAST["max_epochs"] == len(fitted.loss_curve_)
    assert all(isinstance(v, float) and np.isfinite(v) for v in fitted.loss_curve_)
    assert fitted.loss_ == fitted.loss_curve_[-1]
    assert fitted.best_loss_ == min(fitted.loss_curve_)
    assert fitted.validation_scores_ is None and fitted.best_validation_score_ is None
    assert fitted.t_ == fitted.n_iter_ * len(X)
    assert fitted.n_layers_ == len(widths) + 2
    assert fitted.n_outputs_ == 10 and fitted.out_activation_ == "softmax"


def test_predictions_are_probabilities(fitted, digits):
    X, _ = digits
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 10) and proba.dtype == np.float64
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(fitted.predict(X), fitted.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(fitted.predict_log_proba(X)), proba, rtol=1e-6)


# -- strategies on convolutions ----------------------------------------------------------


@pytest.mark.parametrize("strategy", CONV_STRATEGIES)
def test_conv_strategies_grow_the_channels(digits, strategy):
    X, y = digits
    clf = GrowingCNNClassifier(**FAST, strategy=strategy).fit(X, y)
    grown = set(clf.growth_history_["layer"])
    assert grown & {0, 1}
    assert all(clf.widths_[site] > INITIAL[site] for site in grown)


def test_static_never_grows_and_a_schedule_reaches_its_target(digits):
    X, y = digits
    static = GrowingCNNClassifier(**FAST, strategy="static").fit(X, y)
    assert static.widths_ == INITIAL and len(static.growth_history_) == 0
    target = (8, 10, 12)
    scheduled = GrowingCNNClassifier(
        **FAST, strategy="north-random", schedule="linear", schedule_target=target
    ).fit(X, y)
    assert scheduled.widths_ == target


# -- continuing a fit -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_continuation_keeps_growing_the_same_network(digits, how):
    X, y = digits
    images = X.reshape(-1, 1, 8, 8)
    clf = GrowingCNNClassifier(**{**FAST, "max_epochs": 1}, warm_start=how == "warm_start")
    if how == "partial_fit":
        clf.partial_fit(images, y, classes=np.arange(10))
    else:
        clf.fit(images, y)
    net, widths, history = clf.net_, clf.widths_, clf.growth_history_
    losses = clf.loss_curve_
    for n_iter in (2, 3):
        # The second call gives the images as their rows: read with input_shape_.
        data = images if n_iter == 3 else X
        clf.partial_fit(data, y) if how == "partial_fit" else clf.fit(data, y)
        assert clf.net_ is net and clf.n_iter_ == n_iter
        assert clf.input_shape_ == (1, 8, 8)
        assert clf.loss_curve_[: len(losses)] == losses
        assert all(new >= old for new, old in zip(clf.widths_, widths))
        pd.testing.assert_frame_equal(clf.growth_history_.iloc[: len(history)], history)
        assert (clf.growth_history_["epoch"] == n_iter).any()  # it grew in this call
        assert clf.widths_ != widths
        net, widths, history, losses = clf.net_, clf.widths_, clf.growth_history_, clf.loss_curve_
    assert clf.widths_ == clf.module_.widths


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
@pytest.mark.parametrize(
    "bad, match",
    [
        ("images of another shape", "images of shape"),
        ("rows of another length", "features"),
        ("NaN", "NaN"),
    ],
)
def test_continuation_rejects_other_images_and_keeps_the_model(fitted, digits, how, bad, match):
    X, y = digits
    clf = copy.deepcopy(fitted).set_params(warm_start=True)
    proba, n_iter, net = clf.predict_proba(X), clf.n_iter_, clf.net_
    if bad == "images of another shape":
        data = X.reshape(-1, 1, 4, 16)  # as many pixels
    elif bad == "rows of another length":
        data = X[:, :60]
    else:
        data = X.reshape(-1, 1, 8, 8).copy()
        data[0, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match=match):
        clf.partial_fit(data, y) if how == "partial_fit" else clf.fit(data, y)
    assert clf.net_ is net and clf.n_iter_ == n_iter and clf.input_shape_ == (1, 8, 8)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


@pytest.mark.parametrize(
    "params",
    [
        {"input_shape": (1, 4, 16)},
        {"input_shape": (1, 8, 8)},  # None built the network: a change, although it matches
        {"architecture": "vgg11"},
        {"widths": (4, 4, 9)},
        {"max_widths": 2.0},
        {"batch_norm": True},
    ],
)
def test_continuation_rejects_a_changed_network(fitted, digits, params):
    X, y = digits
    clf = copy.deepcopy(fitted).set_params(warm_start=True)
    net, proba, n_iter = clf.net_, clf.predict_proba(X), clf.n_iter_
    clf.set_params(**params)
    for continuing in (lambda: clf.fit(X, y), lambda: clf.partial_fit(X, y)):
        with pytest.raises(ValueError, match="changed since the network was built") as error:
            continuing()
        assert all(repr(name) in str(error.value) for name in params)
    assert clf.net_ is net and clf.n_iter_ == n_iter
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


#: failure -> (error type, message fragment naming what to change).
REFIT_REJECTIONS = {
    "NaN in rows of another shape": (ValueError, "NaN"),
    "input_shape against the rows": (ValueError, "input_shape"),
    "input_shape against the images": (ValueError, "input_shape"),
    "widths": (ValueError, "widths"),
    "dense-only strategy": (ValueError, "dense layers only"),
    "dense-only custom trigger": (ValueError, "PreActivationInit is defined for dense layers only"),
    "dense-only custom initializer": (
        ValueError,
        "PreActivationInit is defined for dense layers only",
    ),
    "changed widths": (ValueError, "'widths'"),
    "images of another shape": (ValueError, "images of shape"),
}


@pytest.mark.parametrize(
    "failure, warm_start",
    [
        ("NaN in rows of another shape", False),
        ("input_shape against the rows", False),
        ("input_shape against the images", False),
        ("widths", False),
        ("dense-only strategy", False),
        ("dense-only custom trigger", False),
        ("dense-only custom initializer", False),
        ("changed widths", True),
        ("images of another shape", True),
    ],
)
def test_refit_rejected_at_validation_keeps_the_previous_model(fitted, digits, failure, warm_start):
    X, y = digits
    clf = copy.deepcopy(fitted)
    before = {k: getattr(clf, k) for k in fitted_names(clf)}
    proba = clf.predict_proba(X)
    weights = [p.detach().clone() for p in clf.module_.parameters()]
    clf.set_params(warm_start=warm_start)
    data = X
    if failure == "NaN in rows of another shape":
        # Read as (1, 1, 63) images before the NaN is found: input_shape_ must come back.
        data = X[:, :63].copy()
        data[5, 5] = np.nan
    elif failure == "input_shape against the rows":
        clf.set_params(input_shape=(3, 4, 4))
    elif failure == "input_shape against the images":
        clf.set_params(input_shape=(1, 4, 16))
        data = X.reshape(-1, 1, 8, 8)
    elif failure in ("widths", "changed widths"):
        clf.set_params(widths=(4, 0, 8) if failure == "widths" else (4, 4, 9))
    elif failure == "dense-only strategy":
        clf.set_params(strategy="north-pre")
    elif failure == "dense-only custom trigger":
        clf.set_params(strategy=(GradientTrigger(), PreActivationInit()))
    elif failure == "dense-only custom initializer":
        clf.set_params(strategy=(ActivationTrigger(), PreActivationInit()))
    else:
        data = X.reshape(-1, 1, 4, 16)
    error, match = REFIT_REJECTIONS[failure]
    with pytest.raises(error, match=match):
        clf.fit(data, y)
    # The same objects, the same weights, the same predictions.
    assert fitted_names(clf) == sorted(before)
    assert all(getattr(clf, k) is v for k, v in before.items())
    assert all(torch.equal(a, b) for a, b in zip(clf.module_.parameters(), weights))
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


# -- reproducibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("activation_source", SOURCES)
def test_same_random_state_gives_the_same_model(digits, activation_source):
    X, y = digits
    params = {**FAST, "activation_source": activation_source}
    first = GrowingCNNClassifier(**params).fit(X, y)
    second = GrowingCNNClassifier(**params).fit(X, y)
    assert len(first.growth_history_) > 0
    assert_same_network(first, second)
    pd.testing.assert_frame_equal(first.growth_history_, second.growth_history_)
    assert first.loss_curve_ == second.loss_curve_
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    other = GrowingCNNClassifier(**{**params, "random_state": 1}).fit(X, y)
    w0, w1 = (m.module_.convs[0].weight for m in (first, other))
    assert w0.shape != w1.shape or not torch.equal(w0, w1)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["rows", "images"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(fitted, digits, layout, bad):
    X, y = digits
    X = X.copy()
    X[3, 10] = bad
    data = X if layout == "rows" else X.reshape(-1, 1, 8, 8)
    clf = GrowingCNNClassifier(**FAST)
    with pytest.raises(ValueError, match=r"(?i)nan|infinity"):
        clf.fit(data, y)
    assert fitted_names(clf) == []
    with pytest.raises(ValueError, match=r"(?i)nan|infinity"):
        fitted.predict(data)


def test_three_dimensional_input_says_how_to_add_the_channel_axis(fitted, digits):
    X, y = digits
    with pytest.raises(ValueError, match=r"images must be 4-D .* X\[:, None\]"):
        GrowingCNNClassifier(**FAST).fit(X.reshape(-1, 8, 8), y)
    with pytest.raises(ValueError, match="images must be 4-D"):
        fitted.predict(X.reshape(-1, 8, 8))


def test_images_of_another_shape_at_predict(fitted, digits):
    X, _ = digits
    with pytest.raises(ValueError, match=r"images of shape \(1, 4, 16\).*\(1, 8, 8\)"):
        fitted.predict(X.reshape(-1, 1, 4, 16))
    with pytest.raises(ValueError, match=r"images of shape \(2, 8, 8\)"):
        fitted.predict_proba(two_channels(X).reshape(-1, 2, 8, 8))
    with pytest.raises(ValueError, match="64 features"):
        fitted.predict(X[:, :49])


def bad(params, error, match):
    """A case of test_invalid_parameters_are_clear_errors, named by its parameters."""
    return pytest.param(params, error, match, id=", ".join(f"{k}={v!r}" for k, v in params.items()))


# No message of the CNN may name the MLP's parameters (it has none of them).
NOT_THE_MLPS = r"(?!.*hidden_layer_sizes)"


@pytest.mark.parametrize(
    "params, error, match",
    [
        bad({"input_shape": (3, 4, 4)}, ValueError, r"input_shape=\(3, 4, 4\) holds 48 values"),
        bad({"input_shape": (1, 8)}, ValueError, r"input_shape must be \(channels, height, width"),
        bad({"input_shape": (0, 8, 8)}, ValueError, "input_shape must be"),
        bad({"input_shape": (1, 8, 8, 1)}, ValueError, "input_shape must be"),
        bad({"input_shape": "1x8x8"}, InvalidParameterError, "'input_shape' parameter"),
        bad({"input_shape": (1.5, 8, 8)}, ValueError, "input_shape must be"),
        bad({"input_shape": ("one", 8, 8)}, ValueError, "input_shape must be"),
        bad({"input_shape": (True, 8, 8)}, ValueError, "input_shape must be"),
        bad({"widths": 0}, InvalidParameterError, "'widths' parameter"),
        bad({"widths": -0.5}, InvalidParameterError, "'widths' parameter"),
        bad(
            {"widths": (4, 4)},
            ValueError,
            r"widths has 2 entries but architecture='small' has 3" + NOT_THE_MLPS,
        ),
        bad({"widths": (4, 0, 8)}, ValueError, "widths must be a positive int"),
        bad({"widths": (4.5, 4, 8)}, ValueError, "widths must be a positive int"),
        bad({"max_widths": 0}, InvalidParameterError, "'max_widths' parameter"),
        bad({"max_widths": (32, 32)}, ValueError, "max_widths has 2 entries"),
        bad({"max_widths": 3}, ValueError, "max_widths must be >= widths for every site"),
        bad(
            {"schedule": "linear", "schedule_target": 100},
            ValueError,
            "schedule_target must be between widths and max_widths for every site" + NOT_THE_MLPS,
        ),
        bad({"architecture": "resnet"}, InvalidParameterError, "'architecture' parameter"),
        bad({"strategy": "north-pre"}, ValueError, "dense layers only"),
    ],
)
def test_invalid_parameters_are_clear_errors(digits, params, error, match):
    X, y = digits
    clf = GrowingCNNClassifier(**{**FAST, **params})
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    assert fitted_names(clf) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_on_a_machine_without_cuda(digits):
    X, y = digits
    clf = GrowingCNNClassifier(**FAST, device="cuda")
    with pytest.raises(InvalidParameterError, match="CUDA is not available"):
        clf.fit(X, y)
    assert fitted_names(clf) == []
    auto = GrowingCNNClassifier(**{**FAST, "max_epochs": 1}, device="auto").fit(X, y)
    assert {p.device.type for p in auto.module_.parameters()} == {"cpu"}
