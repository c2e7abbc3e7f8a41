"""The examples in ``examples/`` run as written and print what their docstrings promise.

Each runs in this process (``runpy``) with its output captured; they use scikit-learn's
digits, so nothing is downloaded.
"""

import re
import runpy
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, capsys):
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def widths(out, label):
    match = re.search(rf"{label}:? \((\d+), (\d+)\)", out)
    assert match, out
    return int(match[1]), int(match[2])


def accuracy(out):
    return float(re.search(r"test accuracy: ([0-9.]+)", out)[1])


def test_every_example_is_tested():
    tested = {
        "grow_digits.py",  # here
        "custom_trigger.py",
        "grid_search.py",
        "quickstart.py",  # test_examples_dask.py
        "cnn_images.py",
        "dask_sweep.py",
        "compare_strategies.py",  # test_examples_display.py
        "export_network.py",  # test_examples_export.py
    }
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_grow_digits(capsys):
    out = run_example("grow_digits.py", capsys)
    first, second = widths(out, "final widths")
    assert first > 64 or second > 64  # it grew
    assert accuracy(out) > 0.9
    assert "n_added" in out  # the growth history


def test_custom_trigger(capsys):
    out = run_example("custom_trigger.py", capsys)
    # The example's trigger adds 2 neurons to each layer every 50 steps, 8 times.
    assert widths(out, "final widths") == (48, 48)
    assert "growth steps: [50, 100, 150, 200, 250, 300, 350, 400]" in out
    assert accuracy(out) > 0.9


def test_grid_search(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["grid_search.py", "--quick"])
    found = runpy.run_path(str(EXAMPLES / "grid_search.py"), run_name="__main__")
    out = capsys.readouterr().out
    grid = found["grid"]
    # Every candidate of the grid was fitted and scored on every fold.
    scores = grid.cv_results_["mean_test_score"]
    assert len(scores) == 6 and np.isfinite(scores).all()
    # What it prints is the search's result.
    assert f"best: {grid.best_params_} {round(grid.best_score_, 4)}" in out
    assert widths(out, "widths grown by the best model") == tuple(
        grid.best_estimator_[-1].hidden_layer_sizes_
    )
    best = grid.best_estimator_[-1]
    assert best.strategy == grid.best_params_["growingmlpclassifier__strategy"]
    assert best.gamma == grid.best_params_["growingmlpclassifier__gamma"]
