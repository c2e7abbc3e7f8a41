"""The benchmark scripts on small fake IDX files the tests write: bench_mnist end to end
(the runs it plans, the CSVs and summary it writes, a run split over processes with
``--first-seed`` rebuilt with ``--report-only``), bench_step_costs' table and floors,
bench_linalg_device's measurements on the CPU and bench_pre_scaling on tiny sizes.

Results go to a temporary folder, never to ``benchmarks/results``.
"""

import gzip
import hashlib
import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_datasets import idx_bytes

from sklearn_north import datasets

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def write_fake_mnist(folder, n_train=240, n_test=60):
    """MNIST-shaped IDX files in ``folder`` whose mean brightness says the label
    (learnable in one epoch); returns their md5 checksums for ``MNIST_CHECKSUMS``."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = (rng.integers(0, 60, (n, 28, 28)) + 19 * labels[:, None, None]).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    folder.mkdir()
    for name, content in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content))
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A folder of fake MNIST IDX files (240 training, 60 test images) that
    ``load_mnist`` accepts."""
    folder = tmp_path / "mnist"
    monkeypatch.setattr(datasets, "MNIST_CHECKSUMS", write_fake_mnist(folder))
    return folder


@pytest.fixture
def load_bench(tmp_path, monkeypatch):
    """``load_bench(name)`` imports ``benchmarks/<name>.py`` writing its results to a
    temporary folder (``module.results``); ``module.run_main(*args)`` runs its ``main``
    with those command-line arguments."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    results = tmp_path / "results"
    loaded = ["_common"]

    def load(name):
        for module in (*loaded, name):
            sys.modules.pop(module, None)
        loaded.append(name)
        import _common

        module = importlib.import_module(name)
        monkeypatch.setattr(_common, "RESULTS", results)
        if hasattr(module, "RESULTS"):
            monkeypatch.setattr(module, "RESULTS", results)

        def run(*args):
            monkeypatch.setattr(sys, "argv", [f"{name}.py", *map(str, args)])
            module.main()

        module.run_main, module.results = run, results
        return module

    yield load
    for module in loaded:
        sys.modules.pop(module, None)


@pytest.fixture
def bench(load_bench):
    """``bench_mnist``, see ``load_bench``."""
    return load_bench("bench_mnist")


SMALL = ["--epochs", 1, "--hidden", 8, 8, "--max-hidden", 16, 16, "--batch-size", 60,
         "--n-test", 60, "--repeats", 1]  # fmt: skip


def test_mnist_benchmark_writes_runs_and_summary(bench, fake_mnist):
    bench.run_main("--data-home", fake_mnist, "--seeds", 1, "--out", "t", *SMALL,
                   "--strategies", "static-small", "north-random", "--variants", "exact",
                   "fast")  # fmt: skip
    df = pd.read_csv(bench.results / "t.csv")
    # The static baseline once, the strategy in each variant, each with its static twin.
    assert list(df["strategy"]) == ["static-small", "north-random", "north-random (fast)"]
    assert df["time_ratio"].isna().tolist() == [True, False, False]
    grown = df.iloc[1:]
    assert (grown["fit_s"] > 0).all() and (grown["static_fit_s"] > 0).all()
    np.testing.assert_allclose(grown["time_ratio"], grown["fit_s"] / grown["static_fit_s"])
    assert (grown["neurons"] >= 16).all() and (grown["neurons"] <= 32).all()
    assert df["machine"].nunique() == 1 and df["run_id"].nunique() == 1
    events = pd.read_csv(bench.results / "t_growth.csv")
    assert set(events["strategy"]) <= {"north-random", "north-random (fast)"}
    text = (bench.results / "t.md").read_text()
    assert "**Not the paper's protocol**" in text and "each pair was fitted once" in text
    assert df["machine"].iloc[0] in text


def test_a_split_run_is_rebuilt_as_one(bench, fake_mnist):
    common = ["--data-home", fake_mnist, "--seeds", 1, *SMALL, "--strategies", "north-weight"]
    bench.run_main(*common, "--out", "a")
    bench.run_main(*common, "--first-seed", 1, "--out", "b")
    parts = [pd.read_csv(bench.results / f"{p}.csv") for p in "ab"]
    assert [list(p["seed"]) for p in parts] == [[0], [1]]
    pd.concat(parts).to_csv(bench.results / "ab.csv", index=False)
    events = [pd.read_csv(bench.results / f"{p}_growth.csv") for p in "ab"]
    pd.concat(events).to_csv(bench.results / "ab_growth.csv", index=False)
    bench.run_main("--report-only", "--out", "ab", *SMALL, "--strategies", "north-weight")
    text = (bench.results / "ab.md").read_text()
    assert "2 seed(s)" in text
    # The duration is the two processes' together.
    total = sum(p["elapsed_s"].max() for p in parts)
    from _common import duration_text

    assert f"**Whole run: {duration_text(total)}**" in text


def test_step_costs_benchmark(load_bench, tmp_path, monkeypatch):
    # A training batch of 512 and a buffer of 1568 disjoint images: 2080 at least.
    folder = tmp_path / "mnist"
    monkeypatch.setattr(datasets, "MNIST_CHECKSUMS", write_fake_mnist(folder, 2080, 10))
    bench = load_bench("bench_step_costs")
    bench.run_main("--data-home", folder, "--rounds", 1, "--out", "sc")
    df = pd.read_csv(bench.results / "sc.csv")
    assert df["widths"].tolist() == ["784-85", "784-491", "390-90"]
    # Layers at their maximum (784) are not evaluated.
    assert df["watched_layers"].tolist() == [1, 1, 2]
    assert (df[["step_ms", "exact_ms", "fast_step_ms"]] > 0).all().all()
    # One round: each floor is its round's ratio.
    np.testing.assert_allclose(df["exact_floor"], 1 + df["exact_ms"] / df["step_ms"])
    np.testing.assert_allclose(df["fast_floor"], df["fast_step_ms"] / df["step_ms"])
    assert "| 390-90" in (bench.results / "sc.md").read_text()


def test_linalg_device_benchmark_measures_every_operation(load_bench):
    bench = load_bench("bench_linalg_device")
    rows = pd.DataFrame(bench.measure(12, rounds=2, device="cpu"))
    assert rows["operation"].tolist() == list(bench.OPERATIONS)
    assert (rows["width"] == 12).all()
    assert (rows[["gpu_ms", "host_ms"]] > 0).all().all()
    np.testing.assert_allclose(rows["gpu / host"], rows["gpu_ms"] / rows["host_ms"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="needs a CUDA device"):
            bench.run_main("--rounds", 1)


def test_pre_scaling_benchmark(load_bench):
    bench = load_bench("bench_pre_scaling")
    bench.run_main("--widths", 20, 80, 200, "--samples", 40, "--repeats", 2, "--candidates", 30,
                   "--width", 6, "--full-gram-max", 80, "--out", "ps")  # fmt: skip
    df = pd.read_csv(bench.results / "ps.csv")
    assert df["d"].tolist() == [20, 80, 200] and (df["n"] == 40).all()
    # The samples' Gram where n < d + 1; the features' Gram timed beside it up to d = 80.
    assert df["path"].tolist() == ["features", "samples", "samples"]
    assert df["full_gram_s"].notna().tolist() == [False, True, False]
    assert (df[["pre_s", "select_s"]] > 0).all().all()
    assert (df[["pre_events", "select_events"]] == 2).all().all()
    np.testing.assert_allclose(df["pre / select"], df["pre_s"] / df["select_s"])
    np.testing.assert_allclose(df["full_gram / pre"][1], df["full_gram_s"][1] / df["pre_s"][1])
    assert (df["pre_max_cos"] < 1e-5).all() and df["full_gram_max_cos"][1] < 1e-5
    assert "| samples" in (bench.results / "ps.md").read_text()
