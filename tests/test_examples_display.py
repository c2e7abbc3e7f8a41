"""``examples/compare_strategies.py`` runs as written (``--quick``, with ``runpy`` as in
``test_examples.py``): what it prints is what its fits did, and its figure holds one
``GrowthDisplay`` per strategy, drawn from each fit."""

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "compare_strategies.py"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def run_example(monkeypatch, capsys, *argv):
    monkeypatch.setattr("sys.argv", [EXAMPLE.name, "--quick", *argv])
    found = runpy.run_path(str(EXAMPLE), run_name="__main__")
    return found, capsys.readouterr().out


def check_fits_and_figure(found, out, path):
    fits, displays = found["fits"], found["displays"]
    X_test, y_test = found["X_test"], found["y_test"]
    assert list(fits) == ["north-select", "north-weight", "gradmax", "static"]
    for strategy, clf in fits.items():
        # Its row: the fit's final widths and test accuracy.
        row = re.search(rf"^{strategy} +(\(\d+, \d+\)) +([0-9.]+) +[0-9.]+ s$", out, re.M)
        assert row, f"no row for {strategy} in\n{out}"
        assert row[1] == str(clf.hidden_layer_sizes_)
        assert row[2] == f"{clf.score(X_test, y_test):.4f}"
        # Its panel: the widths it grew to, its growth events, its loss.
        display = displays[strategy]
        assert display.ax_.get_title() == strategy
        finals = tuple(int(line.get_ydata()[-1]) for line in display.lines_)
        assert finals == clf.hidden_layer_sizes_
        assert sum(len(m.get_xdata()) for m in display.markers_) == len(clf.growth_history_)
        np.testing.assert_array_equal(display.loss_line_.get_ydata(), clf.loss_curve_)
    # Static does not grow; the dynamic strategies do, from the same (32, 32).
    assert fits["static"].hidden_layer_sizes_ == (32, 32)
    grew = [s for s, clf in fits.items() if max(clf.hidden_layer_sizes_) > 32]
    assert grew == ["north-select", "north-weight", "gradmax"]
    # The figure: the displays side by side, saved where asked.
    figure = found["figure"]
    assert len(figure.axes) == 2 * len(fits)
    assert all(display.figure_ is figure for display in displays.values())
    assert re.search(rf"^figure: {re.escape(str(path))}$", out, re.M)
    image = plt.imread(path)
    assert image.shape[:2] == (550, 320 * len(fits))  # figsize x 100 dpi


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no MNIST copy beside the repository")
def test_compare_strategies_on_mnist(monkeypatch, capsys, tmp_path):
    path = tmp_path / "strategies.png"
    found, out = run_example(monkeypatch, capsys, str(path))
    assert found["source"] == "MNIST"
    assert "data: MNIST, 1000 training / 500 test images of 784 pixels; 2 epochs" in out
    check_fits_and_figure(found, out, path)


def test_compare_strategies_falls_back_to_digits(monkeypatch, capsys, tmp_path):
    # No MNIST files in the folder given: it says so and uses digits (and, without a
    # path, saves the figure to a temporary file that it names).
    found, out = run_example(monkeypatch, capsys, "--data-home", str(tmp_path))
    assert found["source"] == "digits"
    assert re.search(r"^MNIST not found \(FileNotFoundError: .*\)$", out, re.M)
    assert "using scikit-learn's 8x8 digits instead" in out
    assert "data: digits, 1347 training / 450 test images of 64 pixels; 2 epochs" in out
    path = Path(re.search(r"^figure: (.*)$", out, re.M)[1])
    try:
        check_fits_and_figure(found, out, path)
    finally:
        path.unlink()
