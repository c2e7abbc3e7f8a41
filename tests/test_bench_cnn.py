"""bench_cnn end to end on fake data the tests write: the cpu mode on fake MNIST IDX files,
the cifar mode on fake CIFAR-10 and CIFAR-100 pickle batches, and the clear exits where the
data (or the GPU) is missing.

Nothing here is timed: the tests check the runs the script plans, that every static twin
is the network its growing run reached (widths and parameter count, against the closed
form of the architecture), that each ratio is its own row's times' ratio, that the
per-epoch and growth tables agree with the runs and that the summary reports what the
CSV holds. Small widths (``--widths 0.125 --max-widths 0.25``) keep VGG-11 fast. Results
go to a temporary folder, never to ``benchmarks/results``.
"""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import test_benchmarks
import torch
from test_cifar import CIFAR10_NAMES, CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES, FOLDER, pickled

# test_benchmarks' fixtures: fake MNIST IDX files (240 training, 60 test images), and
# loading a benchmark script whose results go to a temporary folder.
fake_mnist = test_benchmarks.fake_mnist
load_bench = test_benchmarks.load_bench

#: Standard widths (convs, then hidden dense layers) and where a 2x2 pool follows a conv.
STANDARD = {
    "small": ((32, 64, 128), (True, True)),
    "vgg11": (
        (64, 128, 256, 256, 512, 512, 512, 512, 4096, 4096),
        (True, True, False, True, False, True, False, True),
    ),
}

#: Columns every run row has.
COLUMNS = [
    "mode", "dataset", "architecture", "strategy", "seed", "n_train", "n_test", "epochs",
    "initial_widths", "widths", "static_widths", "params", "static_params", "growth_events",
    "accuracy", "static_accuracy", "fit_s", "cpu_s", "static_fit_s", "time_ratio",
    "epoch_median_s", "static_epoch_median_s", "epoch_ratio", "epoch_mean_s",
    "static_epoch_mean_s", "epoch_mean_ratio", "peak_mib", "static_peak_mib", "memory_ratio",
    "trigger_s", "initializer_s", "device", "machine",
]  # fmt: skip

SMALL_WIDTHS = ["--widths", 0.125, "--max-widths", 0.25]


def widths(text):
    return [int(w) for w in text.split("-")]


def scaled(architecture, multiplier):
    return [max(1, round(multiplier * w)) for w in STANDARD[architecture][0]]


def cnn_params(architecture, site_widths, input_shape, n_classes):
    """Parameters of the network in closed form: 3x3 convs with bias, 2x2 ceil pools,
    dense layers with bias, the last conv's channels flattened over its pooled map."""
    pools = STANDARD[architecture][1]
    channels, height, width = input_shape
    n_conv = len(pools)
    total = 0
    for out, pooled in zip(site_widths[:n_conv], pools):
        total += channels * out * 9 + out
        channels = out
        if pooled:
            height, width = math.ceil(height / 2), math.ceil(width / 2)
    sizes = [channels * height * width, *site_widths[n_conv:], n_classes]
    return total + sum(a * b + b for a, b in itertools.pairwise(sizes))


def table(text, heading):
    """The markdown table under ``## heading`` as a list of dicts of cell texts."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def check_runs(df, epochs, events, input_shapes, n_classes, initial, maximum):
    """What every run must satisfy, growing or static."""
    assert set(COLUMNS) <= set(df.columns)
    for row in df.itertuples():
        arch = row.architecture
        final = widths(row.widths)
        shape = input_shapes[arch]
        assert row.params == cnn_params(arch, final, shape, n_classes)
        assert 0 <= row.accuracy <= 1
        runs = epochs[(epochs["architecture"] == arch) & (epochs["strategy"] == row.strategy)]
        runs = runs[runs["seed"] == row.seed]
        assert runs["epoch"].tolist() == list(range(1, row.epochs + 1))
        grow_s = runs["grow_s"].to_numpy()
        assert runs["widths"].iloc[-1] == row.widths  # the last epoch ends at the final widths
        # Epochs are part of the fit; the summaries are the epochs' own.
        assert grow_s.sum() <= row.fit_s
        assert row.epoch_median_s == pytest.approx(np.median(grow_s))
        assert row.epoch_mean_s == pytest.approx(np.mean(grow_s[1:] if len(grow_s) > 1 else grow_s))
        ev = events[(events["architecture"] == arch) & (events["strategy"] == row.strategy)]
        ev = ev[ev["seed"] == row.seed]
        assert len(ev) == row.growth_events
        if row.strategy.startswith("static-"):
            assert np.isnan(row.static_fit_s) and np.isnan(row.time_ratio)
            assert np.isnan(row.epoch_ratio) and np.isnan(row.static_params)
            assert row.growth_events == 0 and row.initial_widths == row.widths
            continue
        # The growing run starts at --widths, stays within --max-widths, and its growth
        # events account for every neuron it added, site by site.
        start = widths(row.initial_widths)
        assert start == scaled(arch, initial)
        assert all(a <= b for a, b in zip(final, scaled(arch, maximum)))
        added = ev.groupby("layer")["n_added"].sum().reindex(range(len(final)), fill_value=0)
        assert (np.array(final) - np.array(start)).tolist() == added.tolist()
        # The static twin is the network the growing run reached.
        assert row.static_widths == row.widths
        assert row.static_params == row.params
        assert 0 <= row.static_accuracy <= 1
        # Every ratio is its own row's times' ratio.
        assert row.time_ratio == pytest.approx(row.fit_s / row.static_fit_s)
        assert row.epoch_ratio == pytest.approx(row.epoch_median_s / row.static_epoch_median_s)
        assert row.epoch_mean_ratio == pytest.approx(row.epoch_mean_s / row.static_epoch_mean_s)
        static_s = runs["static_s"].to_numpy()
        assert static_s.sum() <= row.static_fit_s
        assert row.static_epoch_median_s == pytest.approx(np.median(static_s))
        if np.isfinite(row.peak_mib) and row.static_peak_mib > 0:
            assert row.memory_ratio == pytest.approx(row.peak_mib / row.static_peak_mib)


@pytest.fixture
def bench(load_bench):
    return load_bench("bench_cnn")


def test_cpu_mode_on_mnist_images(bench, fake_mnist):
    bench.run_main("--quick", "--data-home", fake_mnist, "--seeds", 2, "--strategies",
                   "north-weight", "north-random", "--vgg-strategies", "north-weight",
                   "--vgg-n-train", 100, "--batch-size", 40, *SMALL_WIDTHS,
                   "--out", "t")  # fmt: skip
    df = pd.read_csv(bench.results / "t.csv")
    epochs = pd.read_csv(bench.results / "t_epochs.csv")
    events = pd.read_csv(bench.results / "t_growth.csv")
    # The small CNN on every seed, then VGG-11 on the padded images.
    planned = [
        ("small", "north-weight", 0),
        ("small", "north-random", 0),
        ("small", "north-weight", 1),
        ("small", "north-random", 1),
        ("vgg11", "north-weight", 0),
        ("vgg11", "north-weight", 1),
    ]
    assert list(df[["architecture", "strategy", "seed"]].itertuples(index=False)) == planned
    assert (df["mode"] == "cpu").all() and (df["device"] == "cpu").all()
    assert df["dataset"].tolist() == ["mnist"] * 4 + ["mnist-32x32"] * 2
    # --quick's subsets cover the fake files; --vgg-n-train subsamples.
    assert df["n_train"].tolist() == [240] * 4 + [100] * 2
    assert (df["n_test"] == 60).all() and (df["epochs"] == 1).all()
    shapes = {"small": (1, 28, 28), "vgg11": (1, 32, 32)}
    check_runs(df, epochs, events, shapes, 10, initial=0.125, maximum=0.25)
    # The weight trigger fires on a fresh network: the twins are not the initial ones.
    weight = df[df["strategy"] == "north-weight"]
    assert (weight["growth_events"] > 0).all()
    assert (weight["widths"] != weight["initial_widths"]).all()
    assert set(events["site"]) <= {f"conv{i}" for i in range(8)} | {"dense0", "dense1"}

    text = (bench.results / "t.md").read_text()
    assert "`python benchmarks/bench_cnn.py --quick --data-home" in text
    assert "**Not the paper's protocol** (MNIST" in text
    assert df["machine"].iloc[0] in text
    # The targets: the small CNN's fit ratio (CPU), VGG-11's epoch ratio (a GPU's).
    targets = {(r["architecture"], r["strategy"]): r for r in table(text, "Targets")}
    assert set(targets) == {("small", "north-weight"), ("small", "north-random"),
                            ("vgg11", "north-weight")}  # fmt: skip
    for (arch, name), r in targets.items():
        g = df[(df["architecture"] == arch) & (df["strategy"] == name)]
        column = "time_ratio" if arch == "small" else "epoch_ratio"
        assert float(r["growing / static"]) == pytest.approx(g[column].mean(), abs=0.005)
        if arch == "small":
            assert r["met"] == ("yes" if g[column].mean() <= 1.5 else "no")
        else:
            assert r["target"] == "<= 1.3 (on cuda)" and r["met"] == ""
    # Means ± standard deviations over the two seeds.
    runs = {(r["architecture"], r["strategy"]): r for r in table(text, "Runs per strategy")}
    for (arch, name), r in runs.items():
        g = df[(df["architecture"] == arch) & (df["strategy"] == name)]
        acc = g["accuracy"]
        assert r["accuracy"] == f"{acc.mean():.4f} ± {acc.std():.4f}"
        assert r["fit ratio"] == f"{g['time_ratio'].mean():.2f} ± {g['time_ratio'].std():.2f}"
        mean_widths = np.array([widths(w) for w in g["widths"]]).mean(axis=0)
        assert r["widths"] == "-".join(f"{w:.0f}" for w in mean_widths)
        assert r["seeds"] == "2"
    # The paper's numbers beside ours (north-weight: 0.759 at 9.6M parameters).
    (paper,) = table(text, "VGG-11 next to the paper")
    assert paper["strategy"] == "north-weight" and paper["data"] == "mnist-32x32"
    assert paper["paper accuracy (CIFAR-10)"] == "0.759" and paper["paper params (M)"] == "9.6"
    g = df[df["architecture"] == "vgg11"]
    relative = np.array([widths(w) for w in g["widths"]]).mean(axis=0) / STANDARD["vgg11"][0]
    assert paper["widths / standard"] == " ".join(f"{r:.2f}" for r in relative)


def write_fake_cifar(home, name):
    """A small CIFAR distribution in the real pickle format (see test_cifar): CIFAR-10 with
    5 x 8 training and 10 test images of 10 classes, CIFAR-100 with 40 training images of
    20 fine classes and 10 test images of 10 of them."""
    rng = np.random.default_rng(3)
    folder = home / FOLDER[name]
    folder.mkdir(parents=True)

    def rows(n):
        return rng.integers(0, 256, (n, 3072), dtype=np.uint8)

    if name == "cifar10":
        for i in range(1, 6):
            batch = {b"data": rows(8), b"labels": [(j + i) % 10 for j in range(8)]}
            (folder / f"data_batch_{i}").write_bytes(pickled(batch))
        test = {b"data": rows(10), b"labels": list(range(10))}
        (folder / "test_batch").write_bytes(pickled(test))
        meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES]}
        (folder / "batches.meta").write_bytes(pickled(meta))
        return
    fine = [5 * j for j in range(20)] * 2  # 20 of the 100 classes, twice each
    for subset, n in (("train", 40), ("test", 10)):
        labels = fine[:n]
        content = {b"data": rows(n), b"fine_labels": labels,
                   b"coarse_labels": [f // 5 for f in labels]}  # fmt: skip
        (folder / subset).write_bytes(pickled(content))
    meta = {
        b"fine_label_names": [n.encode() for n in CIFAR100_FINE_NAMES],
        b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE_NAMES],
    }
    (folder / "meta").write_bytes(pickled(meta))


@pytest.mark.parametrize("dataset, n_classes", [("cifar10", 10), ("cifar100", 20)])
def test_cifar_mode_on_fake_batches(bench, tmp_path, dataset, n_classes):
    home = tmp_path / "data"
    write_fake_cifar(home, dataset)
    bench.run_main("--mode", "cifar", "--dataset", dataset, "--data-home", home, "--seeds", 1,
                   "--epochs", 2, "--strategies", "north-weight", "static-small",
                   "--batch-size", 8, *SMALL_WIDTHS, "--out", "c")  # fmt: skip
    df = pd.read_csv(bench.results / "c.csv")
    epochs = pd.read_csv(bench.results / "c_epochs.csv")
    events = pd.read_csv(bench.results / "c_growth.csv")
    assert df["strategy"].tolist() == ["north-weight", "static-small"]
    assert (df["architecture"] == "vgg11").all() and (df["dataset"] == dataset).all()
    assert (df["mode"] == "cifar").all() and (df["epochs"] == 2).all()
    assert (df["n_train"] == 40).all() and (df["n_test"] == 10).all()
    check_runs(df, epochs, events, {"vgg11": (3, 32, 32)}, n_classes, 0.125, 0.25)
    # The static baseline is the paper's Small: 0.25x the standard widths, never grown.
    assert widths(df["widths"].iloc[1]) == scaled("vgg11", 0.25)
    text = (bench.results / "c.md").read_text()
    assert "**Not the paper's protocol** (seeds 1 (paper: 5); epochs 2 (paper: 100)" in text
    assert "n train 40 (paper: 50000)" in text and "widths 0.125x to 0.25x" in text
    paper = {r["strategy"]: r for r in table(text, "VGG-11 next to the paper")}
    assert paper["static-small"]["paper accuracy (CIFAR-10)"] == "0.695"
    assert paper["north-weight"]["paper params (M)"] == "9.6"
    # A static baseline has no ratio to meet.
    assert [r["strategy"] for r in table(text, "Targets")] == ["north-weight"]


@pytest.mark.parametrize("dataset, title", [("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")])
def test_cifar_mode_without_the_data_exits_clearly(bench, tmp_path, dataset, title):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(SystemExit, match=f"{title} not found") as info:
        bench.run_main("--mode", "cifar", "--dataset", dataset, "--data-home", empty)
    message = str(info.value)
    assert message.startswith("bench_cnn.py --mode cifar: ")
    assert "--data-home DIR" in message and "--download" in message
    assert FOLDER[dataset] in message and str(empty) in message
    assert not bench.results.exists() or not any(bench.results.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_exits_before_loading(bench, tmp_path):
    with pytest.raises(SystemExit, match="torch sees no CUDA device"):
        bench.run_main("--mode", "cifar", "--device", "cuda", "--data-home", tmp_path)
