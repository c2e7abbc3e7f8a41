"""bench_cost and bench_capacity end to end in their quick mode, on small networks: the
runs they plan, what they write, that a mode's parameters reach the estimator, and that
the noise experiment shuffles the stated fraction of labels.

The estimator the scripts build is replaced by a recording subclass with small widths
(the package's defaults would grow to 640 neurons: too slow for a test). Results go to a
temporary folder, never to ``benchmarks/results``.
"""

import math

import numpy as np
import pandas as pd
import pytest
import test_benchmarks

from sklearn_north import GrowingMLPClassifier, exceptions

# test_benchmarks' fixtures: fake MNIST IDX files, and loading a benchmark script whose
# results go to a temporary folder.
fake_mnist = test_benchmarks.fake_mnist
load_bench = test_benchmarks.load_bench


class Recorder(GrowingMLPClassifier):
    """Records the parameters and the labels of every fit (clones are Recorders too)."""

    fits = []

    def fit(self, X, y):
        Recorder.fits.append({"params": self.get_params(), "y": np.array(y)})
        return super().fit(X, y)


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(Recorder, "fits", [])
    return Recorder


def small(**fixed):
    """A factory of Recorders with ``fixed`` parameters unless the caller passes them."""

    def make(**params):
        return Recorder(**{**fixed, **params})

    return make


# Room to grow from 4 to 8 neurons per layer; batches of 16 so that an epoch has steps.
ROOM = dict(hidden_layer_sizes=(4, 4), max_hidden_layer_sizes=(8, 8), batch_size=16,
            n_candidates=20)  # fmt: skip


@pytest.fixture
def cost(load_bench):
    return load_bench("bench_cost")


@pytest.fixture
def capacity(load_bench):
    return load_bench("bench_capacity")


def test_cost_writes_one_row_per_planned_pair(cost, fake_mnist, monkeypatch, recorder):
    monkeypatch.setattr(cost, "GrowingMLPClassifier", small(**ROOM))
    cost.run_main("--quick", "--datasets", "wine", "mnist10k", "--data-home", fake_mnist,
                  "--strategies", "north-weight", "north-select", "--epochs", 1,
                  "--mnist-epochs", 1, "--out", "c")  # fmt: skip
    df = pd.read_csv(cost.results / "c.csv")
    planned = [
        (d, s, m)
        for d in ("wine", "mnist10k")
        for s in ("north-weight", "north-select")
        for m in cost.DEFAULT_MODES  # in order
    ]
    assert list(df[["dataset", "strategy", "mode"]].itertuples(index=False)) == planned
    per_dataset = 2 * len(cost.DEFAULT_MODES)
    assert (df["n_train"] == [133] * per_dataset + [240] * per_dataset).all()  # wine's 75 %
    np.testing.assert_allclose(df["time_ratio"], df["fit_s"] / df["static_fit_s"])
    assert (df["neurons"] >= 8).all() and (df["neurons"] <= 16).all()
    steps = [math.ceil(n / 16) for n in df["n_train"]]
    assert (df["steps"] == steps).all()
    exact = df["mode"] == "exact"
    assert (df.loc[exact, "evaluations"] == df.loc[exact, "steps"]).all()
    text = (cost.results / "c.md").read_text()
    assert "python benchmarks/bench_cost.py --quick --datasets wine mnist10k" in text
    assert "## wine" in text and "## mnist10k" in text
    assert "| strategy     | widths default   | widths exact" in text
    assert "| north-select |" in text
    assert "(dataset, strategy) pairs" in text and "wine/north-weight (" in text


def test_cost_modes_reach_the_estimator(cost, tmp_path, monkeypatch, recorder):
    # No room to grow: the default (auto) interval then backs off, the exact mode's
    # trigger_interval=1 evaluates after every step.
    monkeypatch.setattr(
        cost,
        "GrowingMLPClassifier",
        small(hidden_layer_sizes=(8, 8), max_hidden_layer_sizes=(8, 8), batch_size=16,
              buffer_size=64),
    )  # fmt: skip
    cost.run_main("--quick", "--datasets", "mnist10k", "wine", "--data-home", tmp_path / "none",
                  "--strategies", "north-select", "--epochs", 2, "--modes", "exact", "default",
                  "interval4", "--out", "m")  # fmt: skip
    df = pd.read_csv(cost.results / "m.csv").set_index("mode")
    assert df.index.tolist() == ["exact", "default", "interval4"]
    assert df.loc["exact", "evaluations"] == df.loc["exact", "steps"] == 2 * math.ceil(133 / 16)
    assert df.loc["interval4", "evaluations"] == df.loc["interval4", "steps"] // 4
    assert df.loc["default", "evaluations"] < df.loc["default", "steps"] / 2
    assert df.loc["exact", "trigger_interval"] == "1"
    assert df.loc["default", "trigger_interval"] == str(GrowingMLPClassifier().trigger_interval)
    # The default mode passes nothing: every parameter but the script's own is the default.
    grown = [f["params"] for f in recorder.fits if f["params"]["strategy"] == "north-select"]
    assert grown[-3]["trigger_interval"] == 1 and grown[-3]["activation_source"] == "buffer"
    assert grown[-2]["trigger_interval"] == GrowingMLPClassifier().trigger_interval
    assert grown[-1]["trigger_interval"] == 4
    text = (cost.results / "m.md").read_text()
    assert "**mnist10k skipped**: MNIST files not found" in text


def test_shuffle_labels_shuffles_the_stated_fraction(capacity):
    y = np.arange(1000) % 10
    for fraction in (0.0, 0.5, 1.0):
        out, picked = capacity.shuffle_labels(y, fraction, seed=0)
        assert len(picked) == round(fraction * len(y))
        untouched = np.setdiff1d(np.arange(len(y)), picked)
        assert (out[untouched] == y[untouched]).all()
        assert (np.bincount(out) == np.bincount(y)).all()
        # A random permutation keeps about 1 label in 10 by chance.
        assert np.mean(out != y) == pytest.approx(0.9 * fraction, abs=0.05)


def test_parse_param(capacity):
    assert capacity.parse_param("hidden_layer_sizes=(4, 4)") == ("hidden_layer_sizes", (4, 4))
    assert capacity.parse_param("growth_gate=gate") == ("growth_gate", "gate")
    assert capacity.parse_param("buffer_size=None") == ("buffer_size", None)
    with pytest.raises(SystemExit):
        capacity.run_main("--param", "no_such_parameter=1")


def test_capacity_end_to_end(capacity, monkeypatch, recorder):
    monkeypatch.setattr(capacity, "GrowingMLPClassifier", recorder)
    capacity.run_main("--quick", "--epochs", 1, "--noise", 0, 0.5, "--sizes", 50,
                      "--param", "hidden_layer_sizes=(4, 4)",
                      "--param", "max_hidden_layer_sizes=(64, 64)",
                      "--param", "n_candidates=20", "--out", "cap")  # fmt: skip
    df = pd.read_csv(capacity.results / "cap.csv")
    settings = df[["experiment", "task", "n_train", "noise"]].itertuples(index=False)
    assert list(settings) == [
        ("noise", "gaussian", 1347, 1.0),
        ("noise", "digits", 1347, 0.0),
        ("noise", "digits", 1347, 0.5),
        ("subsets", "digits", 50, 0.0),
        ("subsets", "digits", 1347, 0.0),
    ]
    assert (df["params"] == "hidden_layer_sizes=(4, 4), max_hidden_layer_sizes=(64, 64), "
            "n_candidates=20").all()  # fmt: skip
    assert (df["max_widths"] == "64-64").all()
    # Clean digits with every sample is in both experiments but fitted once.
    assert len(recorder.fits) == 4
    # The labels the network was trained on: half of them shuffled among themselves.
    _, _, y_clean, _ = capacity.digits_split()
    clean, half = recorder.fits[1]["y"], recorder.fits[2]["y"]
    assert (clean == y_clean).all()
    assert (np.bincount(half) == np.bincount(y_clean)).all()
    assert np.mean(half != y_clean) == pytest.approx(0.45, abs=0.05)
    noisy = df.iloc[2]
    assert noisy["labels_shuffled"] == pytest.approx(0.5, abs=1 / 1347)
    assert noisy["labels_changed"] == pytest.approx(np.mean(half != y_clean))
    if hasattr(exceptions, "GrowthCapacityWarning"):
        # Warned where the training set is not larger than the maximum width (64).
        assert df["warned"].tolist() == [False, False, False, True, False]
    text = (capacity.results / "cap.md").read_text()
    assert "python benchmarks/bench_capacity.py --quick --epochs 1" in text
    assert "| experiment   | task" in text and "| 50 " in text
