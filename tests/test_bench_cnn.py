"""bench_cnn end to end on fake data the tests write: the cpu mode on fake MNIST IDX files,
the cifar mode on fake CIFAR-10 and CIFAR-100 pickle batches and on ``--synthetic`` images
(VGG-11 and WRN-28), the clear exits where the data (or the GPU) is missing, and
``gpu_check.sh``'s tiny CPU version (slow).

Nothing here is timed: the tests check the runs the script plans, that every static twin
is the network its growing run reached (widths and parameter count, against the closed
form of the architecture), that each ratio is its own row's times' ratio, that the
per-epoch and growth tables agree with the runs and that the summary reports what the
CSV holds. Small widths (``--widths 0.125 --max-widths 0.25``) keep VGG-11 fast. Results
go to a temporary folder, never to ``benchmarks/results``.
"""

import itertools
import math
import subprocess
import sys
from pathlib import Path

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
    # The stem and the three groups (no pools: strides, then a global mean).
    "wrn28": ((16, 16, 32, 64), None),
}
#: The paper's protocols (SPEC section 6): lr, initial and maximum widths, epochs.
PAPER = {"vgg11": (3e-4, 0.25, 2.0, 100), "wrn28": (3e-3, 0.25, 6.0, 50)}

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


def wrn_params(site_widths, input_shape, n_classes):
    """WRN-28's parameters in closed form: a bias-free 3x3 stem; per group a first block
    (BN, 3x3 conv, BN, 3x3 conv, 1x1 projection) and three more (BN, conv, BN, conv);
    then BN and the output layer. A BatchNorm has a weight and a bias per channel."""
    channels = input_shape[0]
    stem, *groups = site_widths
    total = channels * stem * 9
    channels = stem
    for width in groups:
        total += 2 * channels + channels * width * 9 + 2 * width + width * width * 9
        total += channels * width  # the projection
        total += 3 * (2 * width + width * width * 9 + 2 * width + width * width * 9)
        channels = width
    return total + 2 * channels + channels * n_classes + n_classes


def cnn_params(architecture, site_widths, input_shape, n_classes):
    """Parameters of the network in closed form: 3x3 convs with bias, 2x2 ceil pools,
    dense layers with bias, the last conv's channels flattened over its pooled map."""
    if architecture == "wrn28":
        return wrn_params(site_widths, input_shape, n_classes)
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
    # --wrn-strategies alone: no WRN-28 part.
    bench.run_main("--quick", "--data-home", fake_mnist, "--seeds", 2, "--strategies",
                   "north-weight", "north-random", "--vgg-strategies", "north-weight",
                   "--wrn-strategies", "--vgg-n-train", 100, "--batch-size", 40,
                   *SMALL_WIDTHS, "--out", "t")  # fmt: skip
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
    assert (df["lr"] == 3e-4).all()  # the paper's for both
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
    assert "## WRN-28 next to the paper" not in text


WRN_SITES = {"stem", "group1", "group2", "group3"}


def check_targets(text, df, where):
    """The targets table: one row per growing strategy and target ratio (the small CNN's
    fit time; VGG-11's and WRN-28's median epoch time, WRN-28's peak memory too), each
    the mean of its runs' ratios, judged only where the target applies."""
    ratios = {
        "small": [("fit time", "time_ratio", 1.5, "cpu")],
        "vgg11": [("epoch time (median)", "epoch_ratio", 1.3, "cuda")],
        "wrn28": [
            ("epoch time (median)", "epoch_ratio", 1.3, "cuda"),
            ("peak memory", "memory_ratio", 1.5, "cuda"),
        ],
    }
    expected = []
    growing = df[~df["strategy"].str.startswith("static-")]
    for (arch, name), g in growing.groupby(["architecture", "strategy"], sort=False):
        for label, column, target, applies in ratios[arch]:
            measured = g[column].mean()
            here = applies == where
            met = ("yes" if measured <= target else "no") if here else ""
            suffix = "" if here else f" (on {applies})"
            expected.append((arch, name, label, f"{measured:.2f}", f"<= {target}{suffix}", met))
    rows = table(text, "Targets")
    keys = ["architecture", "strategy", "ratio", "growing / static", "target", "met"]
    assert [tuple(r[k] for k in keys) for r in rows] == expected


def test_cpu_mode_with_gradmax_and_wrn28(bench, fake_mnist):
    # The small CNN with GradMax; no VGG-11; WRN-28 on the 28x28 images.
    bench.run_main("--quick", "--data-home", fake_mnist, "--seeds", 1, "--strategies",
                   "gradmax", "--vgg-strategies", "--wrn-strategies", "north-weight",
                   "gradmax", "--n-train", 80, "--wrn-n-train", 80, "--batch-size", 40,
                   *SMALL_WIDTHS, "--out", "w")  # fmt: skip
    df = pd.read_csv(bench.results / "w.csv")
    epochs = pd.read_csv(bench.results / "w_epochs.csv")
    events = pd.read_csv(bench.results / "w_growth.csv")
    planned = [("small", "gradmax"), ("wrn28", "north-weight"), ("wrn28", "gradmax")]
    assert list(df[["architecture", "strategy"]].itertuples(index=False)) == planned
    assert df["dataset"].tolist() == ["mnist"] * 3
    assert (df["n_train"] == 80).all() and (df["n_test"] == 60).all()
    # Each architecture's paper learning rate: 3e-4 for the small CNN, 3e-3 for WRN-28.
    assert df["lr"].tolist() == [3e-4, 3e-3, 3e-3]
    shapes = {"small": (1, 28, 28), "wrn28": (1, 28, 28)}
    check_runs(df, epochs, events, shapes, 10, initial=0.125, maximum=0.25)
    # GradMax grows on both (its gradient trigger judges every mini-batch), and WRN-28's
    # events are its four units'.
    assert (df.loc[df["strategy"] == "gradmax", "growth_events"] > 0).all()
    assert set(events.loc[events["architecture"] == "wrn28", "site"]) <= WRN_SITES
    assert {"stem", "group3"} <= set(df.filter(like="width_").columns.str[6:])

    text = (bench.results / "w.md").read_text()
    assert "wrn28 on mnist 1x28x28: 80 training and 60 test images" in text
    assert "Adam lr 0.003, widths 0.125x the standard ones growing to at most 0.25x" in text
    check_targets(text, df, "cpu")
    assert "## VGG-11 next to the paper" not in text
    paper = {r["strategy"]: r for r in table(text, "WRN-28 next to the paper")}
    assert list(paper) == ["north-weight", "gradmax"]
    assert "slightly beats Big Static" in paper["north-weight"]["paper (CIFAR-10, section 4.3)"]
    assert "Medium Static" in paper["gradmax"]["paper (CIFAR-10, section 4.3)"]
    # No static baseline ran: nothing to compare against.
    assert paper["gradmax"]["vs static-big"] == paper["gradmax"]["vs static-medium"] == ""
    g = df[df["strategy"] == "gradmax"].iloc[1]
    relative = np.array(widths(g["widths"])) / STANDARD["wrn28"][0]
    assert paper["gradmax"]["widths / standard"] == " ".join(f"{r:.2f}" for r in relative)


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


def test_synthetic_cifar_images(bench):
    X_train, X_test, y_train, y_test = bench.synthetic_cifar("cifar100", 250, 40, seed=1)
    assert X_train.shape == (250, 3, 32, 32) and X_test.shape == (40, 3, 32, 32)
    assert X_train.dtype == np.float32 and 0 <= X_train.min() and X_train.max() < 1
    # Every class in training (the network's outputs are the classes seen), none beyond.
    assert set(y_train) == set(range(100)) and set(y_test) <= set(range(100))
    # Random: no pattern in the labels' order, train and test different; a seed repeats.
    assert not (np.diff(y_train) == 1).all()
    assert not np.allclose(X_train[:40], X_test)
    again = bench.synthetic_cifar("cifar100", 250, 40, seed=1)
    for a, b in zip(again, (X_train, X_test, y_train, y_test)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(bench.synthetic_cifar("cifar100", 250, 40, seed=2)[0], X_train)


def test_cifar_mode_wrn28_on_synthetic_images(bench):
    # No data folder: --synthetic needs none. Default results name.
    bench.run_main("--mode", "cifar", "--architecture", "wrn28", "--synthetic", "--seeds", 1,
                   "--epochs", 2, "--n-train", 30, "--n-test", 10, "--strategies",
                   "north-weight", "static-medium", "--batch-size", 10,
                   *SMALL_WIDTHS)  # fmt: skip
    out = bench.results / "cnn_cifar10_wrn28_synthetic"
    df = pd.read_csv(f"{out}.csv")
    epochs = pd.read_csv(f"{out}_epochs.csv")
    events = pd.read_csv(f"{out}_growth.csv")
    assert df["strategy"].tolist() == ["north-weight", "static-medium"]
    assert (df["architecture"] == "wrn28").all() and (df["dataset"] == "synthetic-cifar10").all()
    assert (df["n_train"] == 30).all() and (df["n_test"] == 10).all() and (df["lr"] == 3e-3).all()
    check_runs(df, epochs, events, {"wrn28": (3, 32, 32)}, 10, 0.125, 0.25)
    # The static Medium is WRN-28-1: 16-16-32-64, about 0.37M parameters on CIFAR-10.
    medium = df.iloc[1]
    assert widths(medium["widths"]) == [16, 16, 32, 64]
    assert medium["params"] == wrn_params((16, 16, 32, 64), (3, 32, 32), 10)
    assert 0.36e6 < medium["params"] < 0.38e6

    text = Path(f"{out}.md").read_text()
    assert text.startswith("# CNN benchmark, cifar mode, WRN-28 on synthetic CIFAR-10-shaped")
    assert "**Synthetic data**: random 3x32x32 images" in text
    assert ("**Not the paper's protocol** (synthetic random images and labels, not CIFAR; "
            "seeds 1 (paper: 5); epochs 2 (paper: 50)") in text  # fmt: skip
    assert "widths 0.125x to 0.25x (paper: 0.25x to 6x)" in text
    check_targets(text, df, "cpu")
    paper = {r["strategy"]: r for r in table(text, "WRN-28 next to the paper")}
    diff = df["accuracy"].iloc[0] - df["accuracy"].iloc[1]
    assert paper["north-weight"]["vs static-medium"] == f"{diff:+.4f}"
    assert paper["north-weight"]["vs static-big"] == ""  # not run
    assert paper["static-medium"]["vs static-medium"] == ""  # itself
    assert paper["static-medium"]["paper (CIFAR-10, section 4.3)"] == "1x"


def parsed(bench, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["bench_cnn.py", *map(str, args)])
    return bench.parse_args()


@pytest.mark.parametrize("architecture", ["vgg11", "wrn28"])
def test_cifar_mode_defaults_are_the_papers_protocol(bench, monkeypatch, architecture):
    args = parsed(bench, monkeypatch, "--mode", "cifar", "--architecture", architecture,
                  "--synthetic", "--n-train", 100, "--n-test", 10)  # fmt: skip
    (part,) = bench.cifar_parts(args)
    lr, initial, maximum, n_epochs = PAPER[architecture]
    assert (part.lr, part.widths, part.max_widths, part.epochs) == (lr, initial, maximum, n_epochs)
    assert (args.seeds, args.batch_size) == (5, 128)
    # Every growing strategy and the static Small, Medium and Big.
    assert part.strategies == ["north-select", "north-random", "north-weight", "gradmax",
                               "static-small", "static-medium", "static-big"]  # fmt: skip
    estimator = bench.make_estimator(part, "gradmax", 0, args)
    assert estimator.get_params()["lr"] == lr and estimator.max_epochs == n_epochs
    assert estimator.n_iter_no_change is None
    # Static Big is the growth cap; the static baselines are not capped below it.
    big_widths = bench.STATIC_BASELINES[architecture]["static-big"]
    big = bench.make_estimator(part, "static", 0, args, widths=big_widths)
    assert big.widths == maximum and big.max_widths is None
    # Explicit options win, for every architecture.
    args = parsed(bench, monkeypatch, "--mode", "cifar", "--architecture", architecture,
                  "--synthetic", "--n-train", 100, "--lr", 0.01, "--max-widths", 3)  # fmt: skip
    (part,) = bench.cifar_parts(args)
    assert (part.lr, part.widths, part.max_widths) == (0.01, 0.25, 3.0)


def test_cpu_mode_parts_take_their_architectures_protocol(bench, monkeypatch, fake_mnist):
    args = parsed(bench, monkeypatch, "--quick", "--data-home", fake_mnist)
    parts = {p.architecture: p for p in bench.mnist_parts(args)}
    assert list(parts) == ["small", "vgg11", "wrn28"]
    assert parts["small"].strategies == ["north-select", "north-random", "north-weight", "gradmax"]
    assert parts["vgg11"].strategies == ["north-select", "north-random", "north-weight"]
    assert parts["wrn28"].strategies == parts["small"].strategies
    expected = {"small": (3e-4, 0.25, 2.0), "vgg11": (3e-4, 0.25, 2.0), "wrn28": (3e-3, 0.25, 6.0)}
    assert {a: (p.lr, p.widths, p.max_widths) for a, p in parts.items()} == expected
    assert parts["wrn28"].input_shape == (1, 28, 28) and parts["vgg11"].input_shape == (1, 32, 32)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--synthetic"], "--synthetic is a cifar mode option"),
        (["--mode", "cifar", "--synthetic", "--dataset", "cifar100", "--n-train", 50],
         "--synthetic needs every class once"),
    ],
)  # fmt: skip
def test_synthetic_option_errors(bench, capsys, args, message):
    with pytest.raises(SystemExit):
        bench.run_main(*args)
    assert message in capsys.readouterr().err
    assert not bench.results.exists() or not any(bench.results.iterdir())


GPU_CHECK = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
@pytest.mark.parametrize("tests_pass", [True, False])
def test_gpu_check_script_on_the_cpu(tmp_path, tests_pass):
    """gpu_check.sh's tiny CPU version: every step runs, the results land where asked,
    and a failing test run makes the script fail (after the benchmarks still ran)."""
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_fails():\n    assert False\n")
    env = {"DEVICE": "cpu", "PYTHON": sys.executable, "RESULTS_DIR": str(tmp_path / "out"),
           "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}  # fmt: skip
    if not tests_pass:
        env["GPU_CHECK_TESTS"] = str(failing)
    done = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == (0 if tests_pass else 1), done.stdout[-3000:] + done.stderr
    for arch in ("vgg11", "wrn28"):
        df = pd.read_csv(tmp_path / "out" / f"cnn_check_{arch}_synthetic_cpu.csv")
        assert df["strategy"].tolist() == ["north-weight", "gradmax"]
        assert (df["dataset"] == "synthetic-cifar10").all()
        # The digest prints each run's ratios as the CSV holds them.
        for ratio in df["epoch_ratio"]:
            assert f"{ratio:.2f}" in done.stdout
    assert "SYNTHETIC DATA" in done.stdout
    assert done.stdout.rstrip().endswith("OK" if tests_pass else "FAILED (CUDA tests)")
