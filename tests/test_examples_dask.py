"""``examples/quickstart.py``, ``cnn_images.py`` and ``dask_sweep.py`` run as written (in
their quick modes) and what they print is what their fitted objects hold.

Each runs in this process (``runpy``, which returns the script's globals) with its output
captured. ``dask_sweep.py`` starts a 1-worker ``LocalCluster`` here (``tests/test_dask.py``
runs its sweep on two); it needs ``dask[distributed]``.
"""

import os
import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def run_example(name, monkeypatch, *args):
    monkeypatch.setattr("sys.argv", [name, *args])
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def printed_widths(out, label):
    match = re.search(rf"^{label}: \(([\d, ]+)\)$", out, re.MULTILINE)
    assert match, out
    return tuple(int(w) for w in match[1].split(","))


def test_quickstart(capsys, monkeypatch):
    found = run_example("quickstart.py", monkeypatch)
    out = capsys.readouterr().out
    clf = found["clf"]
    assert printed_widths(out, "widths") == clf.hidden_layer_sizes_
    assert min(clf.hidden_layer_sizes_) > 64  # both layers grew from their 64
    # The growth history's first rows, as the fitted estimator has them.
    assert clf.growth_history_.head().to_string(index=False) in out
    accuracy = float(re.search(r"^test accuracy: ([0-9.]+)$", out, re.MULTILINE)[1])
    assert accuracy == round(clf.score(found["X_test"], found["y_test"]), 4)
    assert accuracy > 0.9


def _site_rows(out, name):
    """The printed per-site table of ``name``'s fit: ``{site: (initial, final, max,
    events, added)}``."""
    section = out.split(f"{name}: ", 1)[1].split(f"{name} test accuracy", 1)[0]
    rows = re.findall(r"^\s*(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", section, re.M)
    return {site: tuple(map(int, numbers)) for site, *numbers in rows}


def _check_cnn_report(out, name, result, n_train, n_test, side):
    clf = result["model"]
    header = f"{name}: {n_train} training / {n_test} test images of 1x{side}x{side}"
    assert header in out
    history = clf.growth_history_
    sites = clf.module_.growth_sites()
    rows = _site_rows(out, name)
    assert list(rows) == [site.name for site in sites] == ["conv0", "conv1", "dense0"]
    for index, site in enumerate(sites):
        initial, final, top, events, added = rows[site.name]
        assert final == clf.widths_[index] == site.width
        assert top == site.max_width
        assert events == (history.layer == index).sum()
        assert added == history.n_added[history.layer == index].sum()
        # "small" starts at a quarter of its standard widths 32, 64, 128.
        assert initial == (8, 16, 32)[index]
        assert final > initial  # every site grew
    accuracy = float(re.search(rf"^{name} test accuracy: ([0-9.]+)$", out, re.M)[1])
    assert accuracy == round(clf.score(result["X_test"], result["y_test"]), 4)
    return accuracy


def test_cnn_images(capsys, monkeypatch, tmp_path):
    has_mnist = SHARED_MNIST.is_dir()
    data_home = SHARED_MNIST if has_mnist else tmp_path  # an empty folder: no MNIST
    found = run_example("cnn_images.py", monkeypatch, "--quick", "--data-home", str(data_home))
    out = capsys.readouterr().out
    results = found["results"]
    assert _check_cnn_report(out, "digits", results["digits"], 1347, 450, 8) > 0.7
    if has_mnist:
        assert _check_cnn_report(out, "mnist", results["mnist"], 1000, 1000, 28) > 0.3
    else:
        assert "mnist" not in results
        assert "MNIST skipped" in out


def test_cnn_images_rejects_bad_counts(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_example("cnn_images.py", monkeypatch, "--mnist-samples", "0")
    assert "--mnist-samples and --epochs must be positive" in capsys.readouterr().err


@pytest.fixture
def restored_environ():
    """dask's nanny sets ``OMP_NUM_THREADS`` and others in this process's environment
    before spawning a worker, and leaves them: put the environment back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_dask_sweep(capsys, monkeypatch, restored_environ):
    pytest.importorskip("dask.distributed")
    # One worker: starting each costs seconds; tests/test_dask.py runs the sweep on two.
    found = run_example("dask_sweep.py", monkeypatch, "--quick", "--workers", "1")
    out = capsys.readouterr().out
    search = found["search"]
    assert "dask workers: 1 at tcp://" in out
    results = search.cv_results_
    n_candidates = len(results["params"])
    assert n_candidates == 2 and search.n_splits_ == 2
    assert f"fits: {n_candidates * search.n_splits_} ({n_candidates} candidates x 2 folds)" in out
    assert np.isfinite(results["mean_test_score"]).all()
    # What it prints is the search's result.
    assert f"best params: {search.best_params_}" in out
    assert f"best score: {round(search.best_score_, 4)}" in out
    assert search.best_score_ == results["mean_test_score"].max()
    best = search.best_estimator_[-1]
    assert best.strategy == search.best_params_["clf__strategy"]
    assert printed_widths(out, "widths grown by the best model") == best.hidden_layer_sizes_
    assert best.n_threads == 1
    threads = re.search(r"^torch threads in the workers before the fits: \[([\d, ]+)\]$", out, re.M)
    assert threads, out


def test_dask_sweep_rejects_no_workers(monkeypatch, capsys):
    pytest.importorskip("dask.distributed")
    with pytest.raises(SystemExit):
        run_example("dask_sweep.py", monkeypatch, "--workers", "0")
    assert "--workers must be a positive int, got 0" in capsys.readouterr().err


def test_growth_by_site_is_the_history():
    """The CNN example's table on a hand-made history (no fit): sums and counts per site."""
    helpers = runpy.run_path(str(EXAMPLES / "cnn_images.py"))  # not __main__: defines only

    class Site:
        def __init__(self, name, width, max_width):
            self.name, self.width, self.max_width = name, width, max_width

    class Fitted:
        growth_history_ = pd.DataFrame({"layer": [0, 2, 0], "n_added": [2, 5, 3]})

        class module_:
            @staticmethod
            def growth_sites():
                return [Site("conv0", 13, 64), Site("conv1", 16, 128), Site("dense0", 37, 256)]

    table = helpers["growth_by_site"](Fitted())
    assert table.to_dict("list") == {
        "site": ["conv0", "conv1", "dense0"],
        "initial": [8, 16, 32],
        "final": [13, 16, 37],
        "max": [64, 128, 256],
        "events": [2, 0, 1],
        "added": [5, 0, 5],
    }
