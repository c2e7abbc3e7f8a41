"""The MNIST benchmark script end to end, on small fake IDX files the test writes: the
runs it plans, the CSVs and summary it writes, a run split over processes
(``--first-seed``) rebuilt with ``--report-only``.

Results go to a temporary folder, never to ``benchmarks/results``.
"""

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_datasets import idx_bytes

from sklearn_north import datasets

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A folder of MNIST-shaped IDX files (240 training, 60 test images) that
    ``load_mnist`` accepts."""
    rng = np.random.default_rng(0)
    files = {}
    for prefix, n in (("train", 240), ("t10k", 60)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        # Images whose mean brightness says the label: learnable in one epoch.
        images = (rng.integers(0, 60, (n, 28, 28)) + 19 * labels[:, None, None]).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, content in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(content))
    checksums = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    monkeypatch.setattr(datasets, "MNIST_CHECKSUMS", checksums)
    return folder


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """``bench_mnist`` imported from benchmarks/, writing its results to a temporary
    folder; ``bench.run(*args)`` runs its ``main`` with those command-line arguments."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("_common", "bench_mnist"):
        sys.modules.pop(name, None)
    import _common
    import bench_mnist

    results = tmp_path / "results"
    monkeypatch.setattr(_common, "RESULTS", results)
    monkeypatch.setattr(bench_mnist, "RESULTS", results)

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["bench_mnist.py", *map(str, args)])
        bench_mnist.main()

    bench_mnist.run_main, bench_mnist.results = run, results
    yield bench_mnist
    for name in ("_common", "bench_mnist"):
        sys.modules.pop(name, None)


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
