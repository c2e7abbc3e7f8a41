"""The examples in ``examples/`` run as written and print what their docstrings promise.

Each runs in this process (``runpy``) with its output captured; they use scikit-learn's
digits, so nothing is downloaded.
"""

import re
import runpy
from pathlib import Path

import pytest

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
    tested = {"grow_digits.py", "custom_trigger.py", "grid_search.py"}
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


@pytest.mark.slow
def test_grid_search(capsys):
    out = run_example("grid_search.py", capsys)
    assert re.search(
        r"best: \{.*'growingmlpclassifier__strategy': '(north-select|north-weight|static)'", out
    )
    widths(out, "widths grown by the best model")
