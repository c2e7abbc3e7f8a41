"""``GrowthDisplay``: what it draws is what the fitted estimator's growth history, loss curve
and validation scores say, for both estimators (rendered with the Agg backend)."""

import math
import re
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from sklearn_north import GrowingCNNClassifier, GrowingMLPClassifier

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sklearn_north import GrowthDisplay  # noqa: E402

N_SAMPLES = 300
BATCH = 64
#: Optimizer steps per epoch on all N_SAMPLES: the last, smaller batch is a step too.
STEPS_PER_EPOCH = math.ceil(N_SAMPLES / BATCH)
MLP_INITIAL = (8, 8)
CNN_STANDARD = (32, 64, 128)  # the "small" architecture's convs and dense layer


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:N_SAMPLES] / 16.0, y[:N_SAMPLES]


def _mlp(**params):
    return GrowingMLPClassifier(
        hidden_layer_sizes=MLP_INITIAL,
        max_hidden_layer_sizes=32,
        batch_size=BATCH,
        n_candidates=20,
        random_state=0,
        **params,
    )


@pytest.fixture(scope="module")
def mlp(digits):
    return _mlp(max_epochs=3).fit(*digits)


@pytest.fixture(scope="module")
def cnn(digits):
    clf = GrowingCNNClassifier(max_epochs=2, batch_size=BATCH, n_candidates=20, random_state=0)
    return clf.fit(*digits)


def reference_points(history, initial, total_steps):
    """The steps where some width changes (0, every event's step, the last step) and
    each site's width from each of them on: its initial width plus what the events up to
    that step added."""
    steps = np.unique([0, *history.step, total_steps])
    widths = np.array(
        [
            [
                w0 + history.n_added[(history.layer == site) & (history.step <= step)].sum()
                for site, w0 in enumerate(initial)
            ]
            for step in steps
        ]
    )
    return steps, widths


def check_width_lines(display, clf, initial, total_steps, scale):
    history = clf.growth_history_
    assert len(history) > 0, "the fit should grow for the check to mean something"
    steps, widths = reference_points(history, initial, total_steps)
    assert len(display.lines_) == len(initial)
    for site, line in enumerate(display.lines_):
        assert line.get_drawstyle() == "steps-post"
        np.testing.assert_array_equal(line.get_xdata(), steps)
        np.testing.assert_allclose(line.get_ydata(), widths[:, site] / scale[site])
        # It ends at the fitted width, at the last optimizer step.
        assert line.get_ydata()[-1] * scale[site] == pytest.approx(clf.hidden_layer_sizes_[site])


def check_markers(display, clf, scale):
    history = clf.growth_history_
    assert sum(len(m.get_xdata()) for m in display.markers_) == len(history)
    for site, (markers, line) in enumerate(zip(display.markers_, display.lines_, strict=True)):
        events = history[history.layer == site]
        np.testing.assert_array_equal(markers.get_xdata(), events.step)
        np.testing.assert_allclose(markers.get_ydata(), events.width / scale[site])
        assert markers.get_linestyle() == "None" and markers.get_marker() == "o"
        assert markers.get_color() == line.get_color()


def test_mlp_widths_are_the_growth_historys_step_function(mlp):
    display = GrowthDisplay.from_estimator(mlp)
    total = 3 * STEPS_PER_EPOCH
    check_width_lines(display, mlp, MLP_INITIAL, total, scale=(1, 1))
    check_markers(display, mlp, scale=(1, 1))
    assert [line.get_label() for line in display.lines_] == ["layer 0", "layer 1"]
    assert display.relative_ is False and display.reference_line_ is None
    assert display.ax_.get_ylabel() == "width (neurons or channels)"
    legend = [t.get_text() for t in display.ax_.get_legend().get_texts()]
    assert legend == ["layer 0", "layer 1"]


def test_loss_is_drawn_at_the_last_step_of_each_epoch(mlp):
    display = GrowthDisplay.from_estimator(mlp)
    line = display.loss_line_
    np.testing.assert_array_equal(line.get_xdata(), STEPS_PER_EPOCH * np.arange(1, 4))
    np.testing.assert_array_equal(line.get_ydata(), mlp.loss_curve_)
    assert line.get_label() == "training loss"
    assert display.validation_line_ is None
    assert display.loss_ax_.get_ylabel() == "training loss"


def test_cnn_widths_are_relative_to_the_standard_widths(cnn):
    total = 2 * STEPS_PER_EPOCH
    initial = tuple(round(0.25 * w) for w in CNN_STANDARD)  # widths=0.25, the default
    display = GrowthDisplay.from_estimator(cnn)  # relative by default
    assert display.relative_ is True
    check_width_lines(display, cnn, initial, total, scale=CNN_STANDARD)
    check_markers(display, cnn, scale=CNN_STANDARD)
    assert [line.get_label() for line in display.lines_] == ["conv0", "conv1", "dense0"]
    np.testing.assert_array_equal(display.reference_line_.get_ydata(), [1, 1])
    assert display.ax_.get_ylabel() == "width / standard width"
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), cnn.loss_curve_)
    # Absolute widths on request.
    absolute = GrowthDisplay.from_estimator(cnn, relative=False)
    check_width_lines(absolute, cnn, initial, total, scale=(1, 1, 1))
    check_markers(absolute, cnn, scale=(1, 1, 1))
    assert absolute.reference_line_ is None


def test_validation_accuracy_is_drawn_under_early_stopping(digits):
    clf = _mlp(max_epochs=3, early_stopping=True, validation_fraction=0.2, n_iter_no_change=5)
    clf.fit(*digits)
    display = GrowthDisplay.from_estimator(clf)
    # Steps are training batches: 240 of the 300 samples train, 60 validate.
    per_epoch = math.ceil(0.8 * N_SAMPLES / BATCH)
    x = per_epoch * np.arange(1, 4)
    np.testing.assert_array_equal(display.validation_line_.get_xdata(), x)
    np.testing.assert_array_equal(display.validation_line_.get_ydata(), clf.validation_scores_)
    np.testing.assert_array_equal(display.loss_line_.get_xdata(), x)
    assert display.loss_ax_.get_ylabel() == "loss / validation accuracy"
    check_width_lines(display, clf, MLP_INITIAL, 3 * per_epoch, scale=(1, 1))


def test_a_network_that_never_grew_is_flat_and_unmarked(digits):
    clf = _mlp(max_epochs=2, strategy="static").fit(*digits)
    display = GrowthDisplay.from_estimator(clf)
    for line, markers in zip(display.lines_, display.markers_, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), [0, 2 * STEPS_PER_EPOCH])
        np.testing.assert_array_equal(line.get_ydata(), [8, 8])
        assert len(markers.get_xdata()) == 0


def test_steps_go_on_across_a_continuing_fit(digits):
    clf = _mlp(max_epochs=1, warm_start=True).fit(*digits)
    first = len(clf.growth_history_)
    clf.fit(*digits)
    assert len(clf.growth_history_) > first, "both fits should grow"
    display = GrowthDisplay.from_estimator(clf)
    check_width_lines(display, clf, MLP_INITIAL, 2 * STEPS_PER_EPOCH, scale=(1, 1))
    assert clf.growth_history_.step.iloc[-1] > STEPS_PER_EPOCH  # the second fit's events
    np.testing.assert_array_equal(display.loss_line_.get_xdata(), [5, 10])


def test_where_it_draws(mlp):
    # No ax: a new figure, widths above the loss, sharing the x axis (labelled below).
    display = GrowthDisplay.from_estimator(mlp, name="digits")
    ax, loss_ax = display.ax_, display.loss_ax_
    assert display.figure_.axes == [ax, loss_ax]
    assert ax.get_shared_x_axes().joined(ax, loss_ax)
    assert ax.get_position().y0 > loss_ax.get_position().y0
    assert (ax.get_xlabel(), loss_ax.get_xlabel()) == ("", "optimizer step")
    assert ax.get_title() == "digits"
    # One ax: the loss on its twin, with a y axis of its own.
    fig, ax = plt.subplots()
    display = GrowthDisplay.from_estimator(mlp, ax=ax, linewidth=3)
    assert display.ax_ is ax and display.figure_ is fig
    assert display.loss_ax_ is not ax and display.loss_ax_ in fig.axes
    assert display.loss_ax_.get_position().bounds == ax.get_position().bounds
    assert ax.get_xlabel() == "optimizer step"
    assert all(line.get_linewidth() == 3 for line in display.lines_)
    assert display.loss_line_ in display.loss_ax_.get_lines()
    # Two axes of one's own: each used as given; log steps on both.
    fig, (ax, loss_ax) = plt.subplots(1, 2)
    display = GrowthDisplay.from_estimator(mlp, ax=ax, loss_ax=loss_ax, log_steps=True)
    assert (display.ax_, display.loss_ax_) == (ax, loss_ax)
    assert set(display.lines_) <= set(ax.get_lines())
    assert display.loss_line_ in loss_ax.get_lines()
    assert ax.get_xscale() == loss_ax.get_xscale() == "symlog"
    assert ax.get_xlabel() == loss_ax.get_xlabel() == "optimizer step (log scale)"


def test_plot_draws_the_data_it_was_given():
    events = pd.DataFrame({"step": [3, 3, 7], "layer": [0, 1, 0], "width": [6, 3, 9]})
    display = GrowthDisplay(
        steps=[0, 3, 7, 10],
        widths=[[4, 2], [6, 3], [9, 3], [9, 3]],
        site_names=["a", "b"],
        events=events,
        loss_curve=[2.0, 1.0],
        validation_scores=[0.5, np.nan],
        standard_widths=[8, 4],
    ).plot()
    np.testing.assert_allclose(display.lines_[0].get_ydata(), [0.5, 0.75, 1.125, 1.125])
    np.testing.assert_allclose(display.markers_[1].get_ydata(), [0.75])
    np.testing.assert_array_equal(display.markers_[0].get_xdata(), [3, 7])
    # Without epoch_steps, the epochs split the steps evenly.
    np.testing.assert_array_equal(display.loss_line_.get_xdata(), [5, 10])
    np.testing.assert_array_equal(display.validation_line_.get_ydata(), [0.5, np.nan])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"widths": [[4, 2], [6, 3]]}, "widths must have shape (len(steps), len(site_names))"),
        ({"steps": [0, 7, 3]}, "increasing"),
        ({"site_names": ["a"]}, "widths must have shape"),
        ({"validation_scores": [0.5]}, "one score per epoch"),
        ({"epoch_steps": [10]}, "one step per epoch"),
        ({"standard_widths": [8]}, "one positive width per site"),
        ({"standard_widths": [8, 0]}, "one positive width per site"),
        ({"events": pd.DataFrame({"step": [3]})}, "missing ['layer', 'width']"),
        ({"loss_curve": []}, "loss_curve"),
    ],
)
def test_inconsistent_data_are_refused(change, says):
    data = {
        "steps": [0, 3, 10],
        "widths": [[4, 2], [6, 3], [6, 3]],
        "site_names": ["a", "b"],
        "events": pd.DataFrame({"step": [3, 3], "layer": [0, 1], "width": [6, 3]}),
        "loss_curve": [2.0, 1.0],
        **change,
    }
    with pytest.raises(ValueError, match=re.escape(says)):
        GrowthDisplay(**data).plot()


def test_relative_needs_standard_widths(mlp):
    with pytest.raises(ValueError, match="relative=True needs the architecture's standard"):
        GrowthDisplay.from_estimator(mlp, relative=True)
    with pytest.raises(ValueError, match="relative must be 'auto', True or False; got 'yes'"):
        GrowthDisplay.from_estimator(mlp, relative="yes")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_only_fitted_growing_estimators(digits):
    with pytest.raises(NotFittedError):
        GrowthDisplay.from_estimator(GrowingMLPClassifier())
    with pytest.raises(NotFittedError):
        GrowthDisplay.from_estimator(GrowingCNNClassifier())
    other = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5).fit(*digits)
    with pytest.raises(TypeError, match="GrowingMLPClassifier or GrowingCNNClassifier; got "):
        GrowthDisplay.from_estimator(other)
    pipe = make_pipeline(MinMaxScaler(), _mlp(max_epochs=1))
    with pytest.raises(TypeError, match=r"pass its last step: pipeline\[-1\]"):
        GrowthDisplay.from_estimator(pipe)


def test_without_matplotlib_plotting_says_so(mlp, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"GrowthDisplay\.from_estimator requires matplotlib"):
        GrowthDisplay.from_estimator(mlp)
