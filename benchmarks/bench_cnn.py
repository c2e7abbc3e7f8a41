"""CNN benchmark: growing convolutional networks vs static twins of their final widths.

Two modes, one command each:

    python benchmarks/bench_cnn.py --threads 1      # --mode cpu: MNIST as images, ~10 min
    python benchmarks/bench_cnn.py --quick          # a short cpu run (about a minute)
    python benchmarks/bench_cnn.py --mode cifar --device cuda --data-home DIR
    python benchmarks/bench_cnn.py --mode cifar --architecture wrn28 --device cuda \\
        --data-home DIR
    python benchmarks/bench_cnn.py --mode cifar --device cuda --data-home DIR \\
        --seeds 1 --epochs 3 --n-train 10000        # a cut-down GPU run
    python benchmarks/bench_cnn.py --mode cifar --synthetic --device cuda \\
        --seeds 1 --epochs 3 --n-train 5000         # GPU ratios without CIFAR files
    bash benchmarks/gpu_check.sh                     # CUDA tests + short GPU runs, < 9 min

``--mode cpu`` (the default) trains on MNIST as 1x28x28 images (``../shared/data/mnist``
or ``--data-home``): the small CNN (convs 32, 64, dense 128 at 1x) on a stratified
subset, VGG-11 on a smaller subset of the same images zero-padded to 32x32 and
WideResNet-28 on a tiny one (1000 images, 1 epoch), each with its paper protocol's
widths and learning rate (below). ``--mode cifar`` is the paper's protocol (Maile et al.
2022, section 4.3; SPEC section 6) on CIFAR-10 or CIFAR-100 (``--dataset``), for
``--architecture``:

- ``vgg11`` (default): Adam lr 3e-4, batch 128, 100 epochs, widths 0.25x to 2x;
- ``wrn28``: the pre-activation WideResNet-28 (widths 16-16-32-64 at 1x), Adam lr 3e-3,
  batch 128, 50 epochs, widths 0.25x to 6x (SPEC section 6 names the learning rate
  only; Adam as in the paper's other protocols);

both with 5 seeds, every epoch trained (``n_iter_no_change=None``), NORTH-Select,
-Random, -Weight and GradMax, and the static Small (0.25x), Medium (1x) and Big (the
cap: 2x for VGG-11, 6x for WRN-28) networks; ``--seeds``, ``--epochs``, ``--n-train``
cut it down. ``--synthetic`` replaces CIFAR by random 3x32x32 images with random labels
of the data set's classes (for timing and memory ratios where no CIFAR copy is at hand;
its accuracies are chance).

Each growing fit is followed, in the same process, by a static network of the widths it
reached, trained the same way (data, optimizer, epochs, seed): per run the test accuracy
of both, the per-site widths, parameters, fit times (wall clock and process CPU time),
per-epoch times (skorch's ``history[:, "dur"]``), their ratios, the peak memory of each
fit (peak RSS above the RSS before the fit; on CUDA the peak of torch's allocator, see
``_common.py``) and the growth events. The targets: small CNN on CPU, growing fit / static
fit <= 1.5; VGG-11 and WRN-28 on a GPU, growing epoch time / static epoch time <= 1.3;
WRN-28 on a GPU, growing / static peak GPU memory <= 1.5.

Writes ``benchmarks/results/<out>.csv`` (one row per run), ``<out>.md`` (means per
strategy, the ratios against their targets, the paper's numbers beside ours),
``<out>_epochs.csv`` (every epoch's time, growing and static, and the widths at its
end) and ``<out>_growth.csv`` (every growth event). ``<out>``: ``cnn_cpu``,
``cnn_cifar10``, ``cnn_cifar10_wrn28``, ... (``_synthetic`` with ``--synthetic``,
``_quick`` with ``--quick``, ``_cuda`` on CUDA) unless ``--out`` names it;
``--results-dir`` writes elsewhere.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import _common
import numpy as np
import pandas as pd
import torch
from _common import (
    RESULTS,
    SHARED_MNIST,
    add_device_option,
    benchmark_parser,
    command_line,
    default_data_home,
    duration_text,
    environment,
    fill_defaults,
    fit_timed,
    growth_timings,
    is_cuda,
    markdown_table,
    n_parameters,
    set_threads,
    trigger_interval,
    widths_text,
    write_results,
)
from sklearn.base import clone
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingCNNClassifier
from sklearn_north.datasets import load_cifar, load_mnist
from sklearn_north.nn.cnn import ARCHITECTURES, build_cnn
from sklearn_north.nn.wrn import WRN28_WIDTHS, GrowableWRN

#: The NORTH* strategies (the paper's VGG-11 runs), in the paper's order.
NORTH = ["north-select", "north-random", "north-weight"]
#: Every strategy that grows convolutions.
GROWING = [*NORTH, "gradmax"]
#: The paper's static baselines: name -> multiplier of the standard widths, per
#: architecture. Big is the growth cap (2x for VGG-11, 6x for WRN-28: the paper's
#: WRN-28 "Big Static" is "this maximum size", section 4.3); Medium is the standard
#: network (WRN-28-1). Every site is scaled, the WRN's stem too (WRN-28-k proper keeps
#: a 16-channel stem).
STATIC_BASELINES = {
    "small": {"static-small": 0.25, "static-medium": 1.0, "static-big": 2.0},
    "vgg11": {"static-small": 0.25, "static-medium": 1.0, "static-big": 2.0},
    "wrn28": {"static-small": 0.25, "static-medium": 1.0, "static-big": 6.0},
}
STATIC_NAMES = list(STATIC_BASELINES["vgg11"])

#: The paper's VGG-11 CIFAR-10 results (SPEC section 6; means over 5 seeds):
#: name -> (test accuracy, parameters in millions). The paper gives CIFAR-100 in a
#: figure only, and no GradMax run on VGG-11.
PAPER_VGG = {
    "north-select": (0.757, 3.1),
    "north-random": (0.754, 2.9),
    "north-weight": (0.759, 9.6),
    "static-small": (0.695, 1.26),
    "static-medium": (0.763, 20.0),  # "~20M"
    "static-big": (0.782, 79.7),
}
#: The paper's WRN-28 CIFAR-10 results: section 4.3 states them in words only (the
#: numbers are in its Figure 4, which SPEC does not transcribe).
PAPER_WRN = {
    "north-select": "grows to or near the cap (6x); matches Big Static",
    "north-random": "grows to or near the cap (6x)",
    "north-weight": "grows to or near the cap (6x); slightly beats Big Static",
    "gradmax": "beats Medium Static at a similar size",
    "static-small": "0.25x",
    "static-medium": "1x",
    "static-big": "6x (the cap)",
}

#: Per architecture: the paper's learning rate (Adam) and widths (initial, maximum) as
#: multipliers of the standard widths. Both modes use them unless --lr, --widths or
#: --max-widths say otherwise.
PROTOCOLS = {
    "small": dict(lr=3e-4, widths=0.25, max_widths=2.0),
    "vgg11": dict(lr=3e-4, widths=0.25, max_widths=2.0),
    "wrn28": dict(lr=3e-3, widths=0.25, max_widths=6.0),
}
#: ``--mode cifar``: the rest of the paper's protocol, per architecture.
CIFAR = {
    "vgg11": dict(seeds=5, epochs=100, n_train=50000, n_test=10000, batch_size=128),
    "wrn28": dict(seeds=5, epochs=50, n_train=50000, n_test=10000, batch_size=128),
}
CIFAR_QUICK = dict(seeds=1, epochs=1, n_train=2000, n_test=1000)
#: ``--mode cpu``: sized for about 10 min on one thread (1 seed; the small CNN with 4
#: strategies, VGG-11 with 3, WRN-28 with 4).
CPU = dict(
    seeds=1,
    epochs=3,
    n_train=10000,
    n_test=2000,
    vgg_epochs=2,
    vgg_n_train=2000,
    vgg_n_test=1000,
    wrn_epochs=1,
    wrn_n_train=1000,
    wrn_n_test=500,
    batch_size=128,
)
CPU_QUICK = dict(
    epochs=1,
    n_train=1000,
    n_test=500,
    vgg_epochs=1,
    vgg_n_train=256,
    vgg_n_test=128,
    wrn_epochs=1,
    wrn_n_train=256,
    wrn_n_test=128,
)

#: Growing / static ratio targets: architecture -> [(ratio column, target, where it
#: applies)].
TARGETS = {
    "small": [("time_ratio", 1.5, "cpu")],
    "vgg11": [("epoch_ratio", 1.3, "cuda")],
    "wrn28": [("epoch_ratio", 1.3, "cuda"), ("memory_ratio", 1.5, "cuda")],
}
RATIO_NAMES = {
    "time_ratio": "fit time",
    "epoch_ratio": "epoch time (median)",
    "memory_ratio": "peak memory",
}
TITLES = {"small": "small CNN", "vgg11": "VGG-11", "wrn28": "WRN-28"}

SHARED_CIFAR = SHARED_MNIST.parent / "cifar"
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
SYNTHETIC_NOTE = (
    "**Synthetic data**: random 3x32x32 images (uniform pixels in [0, 1]) with random "
    "labels of {name}'s {n} classes, not {name}: for timing and memory ratios only. "
    "Accuracies are chance, and the growth (when and how much) is not what {name} "
    "gives; compare only the ratios, at the widths these runs reached."
)


@dataclass
class Part:
    """One architecture on one data set: what a mode trains, with its own subsets and
    protocol (learning rate and widths, multipliers of the standard widths)."""

    architecture: str
    dataset: str
    epochs: int
    strategies: list
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    lr: float
    widths: float
    max_widths: float

    @property
    def input_shape(self):
        return tuple(self.X_train.shape[1:])

    @property
    def n_classes(self):
        return len(np.unique(np.concatenate([self.y_train, self.y_test])))


def make_part(architecture, dataset, epochs, strategies, data, args):
    """A :class:`Part` with its architecture's protocol, less what the options override."""
    protocol = {
        key: value if getattr(args, key) is None else getattr(args, key)
        for key, value in PROTOCOLS[architecture].items()
    }
    return Part(architecture, dataset, epochs, list(strategies), *data, **protocol)


# --------------------------------------------------------------------------- data


def subsample(X, y, n):
    """A stratified subsample of ``n`` rows (``random_state=0``: the same for every run),
    or everything where ``n`` covers it."""
    if n >= len(X):
        return X, y
    X, _, y, _ = train_test_split(X, y, train_size=n, stratify=y, random_state=0)
    return X, y


def mnist_parts(args):
    """``--mode cpu``: the small CNN and WRN-28 on 1x28x28 images, VGG-11 on them padded
    to 32x32 (its five pools need 32)."""
    try:
        train = load_mnist(args.data_home, subset="train", return_X_y=True)
        test = load_mnist(args.data_home, subset="test", return_X_y=True)
    except OSError as exc:  # FileNotFoundError included: not here and not downloadable
        raise SystemExit(
            f"bench_cnn.py --mode cpu: {exc}\nGive the folder of the MNIST IDX files with "
            "--data-home DIR."
        ) from None

    def images(X, pad):
        X = X.reshape(len(X), 1, 28, 28)
        # Zero borders: black, as MNIST's own background.
        return np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else X

    def part(architecture, n_train, n_test, epochs, strategies, pad):
        X_train, y_train = subsample(*train, n_train)
        X_test, y_test = subsample(*test, n_test)
        data = (
            np.ascontiguousarray(images(X_train, pad)),
            np.ascontiguousarray(images(X_test, pad)),
            y_train,
            y_test,
        )
        dataset = "mnist" if not pad else "mnist-32x32"
        return make_part(architecture, dataset, epochs, strategies, data, args)

    parts = [part("small", args.n_train, args.n_test, args.epochs, args.strategies, 0)]
    if args.vgg_strategies:
        parts.append(
            part(
                "vgg11", args.vgg_n_train, args.vgg_n_test, args.vgg_epochs, args.vgg_strategies, 2
            )
        )
    if args.wrn_strategies:
        parts.append(
            part(
                "wrn28", args.wrn_n_train, args.wrn_n_test, args.wrn_epochs, args.wrn_strategies, 0
            )
        )
    return parts


def synthetic_cifar(name, n_train, n_test, seed=0):
    """Random images of CIFAR's shape (3x32x32, float32 pixels uniform in [0, 1]) with
    random labels of ``name``'s classes: ``(X_train, X_test, y_train, y_test)``. The same
    for a given ``seed``. Every class occurs in the training labels where ``n_train``
    allows (the network's output width is the classes seen)."""
    rng = np.random.default_rng(seed)
    n_classes = CIFAR_CLASSES[name]

    def labels(n):
        y = np.arange(n) % n_classes
        rng.shuffle(y)
        return y

    X_train = rng.random((n_train, 3, 32, 32), dtype=np.float32)
    X_test = rng.random((n_test, 3, 32, 32), dtype=np.float32)
    return X_train, X_test, labels(n_train), labels(n_test)


def cifar_parts(args):
    """``--mode cifar``: ``--architecture`` on CIFAR-10 or CIFAR-100 (3x32x32, pixels in
    [0, 1]), or on synthetic images of that shape (``--synthetic``)."""
    dataset = args.dataset
    if args.synthetic:
        data = synthetic_cifar(args.dataset, args.n_train, args.n_test)
        dataset = f"synthetic-{args.dataset}"
    else:
        load = dict(name=args.dataset, return_X_y=True, download_if_missing=args.download)
        try:
            train = load_cifar(args.data_home, subset="train", **load)
            test = load_cifar(args.data_home, subset="test", **load)
        except (OSError, ValueError) as exc:  # missing, not downloadable, or not CIFAR files
            raise SystemExit(
                f"bench_cnn.py --mode cifar: {exc}\nHere: give the folder that holds "
                f"{CIFAR_FOLDERS[args.dataset]} (or its .tar.gz archive) with --data-home "
                "DIR, or pass --download to download it, or --synthetic for random images "
                "of CIFAR's shape (timings and memory only)."
            ) from None
        X_train, y_train = subsample(*train, args.n_train)
        X_test, y_test = subsample(*test, args.n_test)
        data = (X_train, X_test, y_train, y_test)
    args.n_train, args.n_test = len(data[0]), len(data[1])  # what was used, for the report
    return [make_part(args.architecture, dataset, args.epochs, args.strategies, data, args)]


# --------------------------------------------------------------------------- runs


def make_estimator(part, strategy, seed, args, widths=None):
    """The estimator of one run: the part's protocol, every epoch trained. ``widths``
    (a static baseline's): those widths, with no cap."""
    params = dict(
        architecture=part.architecture,
        strategy=strategy,
        widths=part.widths if widths is None else widths,
        max_widths=part.max_widths if widths is None else None,
        lr=part.lr,
        batch_size=args.batch_size,
        max_epochs=part.epochs,
        n_iter_no_change=None,  # the paper's protocol: every epoch
        random_state=seed,
        device=args.device,
    )
    # Unless given, the estimator's own defaults (they may change with the package).
    if args.trigger_interval is not None:
        params["trigger_interval"] = args.trigger_interval
    if args.activation_source is not None:
        params["activation_source"] = args.activation_source
    return GrowingCNNClassifier(**params)


def warm_up_cnn(part, device):
    """A tiny static fit of the part's network, so that one-off allocations (thread pools,
    conv kernels, a CUDA context) are not charged to the first measured fit.

    ``_common.warm_up`` fits an MLP, which leaves the conv kernels cold."""
    n = min(len(part.X_train), 256)
    GrowingCNNClassifier(
        architecture=part.architecture,
        strategy="static",
        max_epochs=1,
        random_state=0,
        device=device,
    ).fit(part.X_train[:n], part.y_train[:n])


def static_twin(grow):
    """An unfitted ``static`` copy of the fitted CNN ``grow``: its final widths from the
    start, every other parameter the same (``_common.static_twin``'s, for the CNN's
    ``widths``)."""
    return clone(grow).set_params(
        strategy="static",
        widths=list(grow.widths_),
        max_widths=None,
        schedule=None,
        schedule_target=None,
    )


def epoch_seconds(clf):
    """Wall-clock seconds of each training epoch of the fitted ``clf`` (skorch's
    ``EpochTimer``; on CUDA each batch's loss is read back, so the epoch's work is done)."""
    return [float(d) for d in clf.net_.history[:, "dur"]]


def epoch_widths(clf):
    """The widths at the end of each epoch (the growth callback's history entry)."""
    try:
        return list(clf.net_.history[:, "widths"])
    except KeyError:  # not recorded by this version of the package
        return [""] * len(clf.net_.history)


def epoch_summary(seconds):
    """``(median, mean after the first)`` of an epoch-time list (the first epoch pays for
    one-off work and, growing, for most of the growth; with one epoch: that epoch)."""
    later = seconds[1:] or seconds
    return float(np.median(seconds)), float(np.mean(later))


def initial_widths(clf):
    """The widths ``clf`` started from: its final widths less what its growth events
    added (the growth history is complete, so this is exact)."""
    widths = list(clf.widths_)
    events = clf.growth_history_
    for layer, added in events.groupby("layer")["n_added"].sum().items():
        widths[int(layer)] -= int(added)
    return tuple(widths)


def site_names(clf):
    return [site.name for site in clf.module_.growth_sites()]


def pair_times(grow, static):
    """Fit and epoch times of a fitted growing model and its fitted static twin."""
    grow_epochs, static_epochs = epoch_seconds(grow), epoch_seconds(static)
    (g_med, g_mean), (s_med, s_mean) = epoch_summary(grow_epochs), epoch_summary(static_epochs)
    return {
        "epoch_median_s": g_med,
        "static_epoch_median_s": s_med,
        "epoch_ratio": g_med / s_med,
        "epoch_mean_s": g_mean,
        "static_epoch_mean_s": s_mean,
        "epoch_mean_ratio": g_mean / s_mean,
        "grow_epochs": grow_epochs,
        "static_epochs": static_epochs,
    }


def grow_vs_static(grow, X, y, repeats=1):
    """Fit ``grow``, then its :func:`static_twin` on the same data, right after;
    ``repeats`` such pairs in all.

    Returns ``(static, row)``: the first pair's fitted static model and the measurements
    of the pair whose fit-time ratio is the median (the lower one for an even count), so
    that every ratio of the row is its own times' ratio. Peak memory is the first pair's
    (each fit measured with the kernel's peak reset before it).
    """
    unfitted = clone(grow)
    grown = {**fit_timed(grow, X, y, memory=True), **growth_timings(grow)}
    static = static_twin(grow)
    still = fit_timed(static, X, y, memory=True)
    memory = {
        "peak_mib": grown["peak_mib"],
        "process_peak_mib": grown["process_peak_mib"],
        "static_peak_mib": still["peak_mib"],
        "static_process_peak_mib": still["process_peak_mib"],
    }
    pairs = [(grown, still, pair_times(grow, static))]
    for _ in range(repeats - 1):
        again = clone(unfitted)
        timed = {**fit_timed(again, X, y), **growth_timings(again)}
        if again.widths_ != grow.widths_:
            raise RuntimeError("A repeated fit grew differently: not deterministic.")
        twin = static_twin(grow)
        pairs.append((timed, fit_timed(twin, X, y), pair_times(again, twin)))
    order = sorted(range(len(pairs)), key=lambda i: pairs[i][0]["fit_s"] / pairs[i][1]["fit_s"])
    g, s, epochs = pairs[order[(len(order) - 1) // 2]]
    row = {
        "fit_s": g["fit_s"],
        "cpu_s": g["cpu_s"],
        "trigger_s": g["trigger_s"],
        "initializer_s": g["initializer_s"],
        "static_fit_s": s["fit_s"],
        "static_cpu_s": s["cpu_s"],
        "time_ratio": g["fit_s"] / s["fit_s"],
        **epochs,
        **memory,
        "memory_ratio": _ratio(memory["peak_mib"], memory["static_peak_mib"]),
        "pairs": len(pairs),
    }
    return static, row


def _ratio(a, b):
    return a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else float("nan")


#: The columns a growing run's static twin fills.
TWIN_COLUMNS = (
    "static_fit_s", "static_cpu_s", "time_ratio", "static_epoch_median_s",
    "static_epoch_mean_s", "epoch_ratio", "epoch_mean_ratio", "static_peak_mib",
    "static_process_peak_mib", "memory_ratio",
)  # fmt: skip


def run(part, name, seed, args):
    """One run: a growing fit and its static twin, or a static baseline alone.

    Returns ``(row, epochs, events)``: the CSV row, its per-epoch times and growth events
    (DataFrames)."""
    X_train, X_test, y_train, y_test = part.X_train, part.X_test, part.y_train, part.y_test
    baselines = STATIC_BASELINES[part.architecture]
    if name in baselines:
        clf = make_estimator(part, "static", seed, args, widths=baselines[name])
        timed = fit_timed(clf, X_train, y_train, memory=True)
        epochs = epoch_seconds(clf)
        median, mean = epoch_summary(epochs)
        # No twin: a static baseline is its own reference.
        timed.update(
            trigger_s=0.0,
            initializer_s=0.0,
            epoch_median_s=median,
            epoch_mean_s=mean,
            grow_epochs=epochs,
            static_epochs=[np.nan] * len(epochs),
            pairs=1,
        )
        static, static_accuracy = None, np.nan
    else:
        clf = make_estimator(part, name, seed, args)
        static, timed = grow_vs_static(clf, X_train, y_train, repeats=args.repeats)
        static_accuracy = static.score(X_test, y_test)
    widths, names = clf.widths_, site_names(clf)
    grow_epochs, static_epochs = timed.pop("grow_epochs"), timed.pop("static_epochs")
    row = {
        "mode": args.mode,
        "dataset": part.dataset,
        "architecture": part.architecture,
        "strategy": name,
        "seed": seed,
        "n_train": len(X_train),
        "n_test": len(X_test),
        "epochs": len(grow_epochs),
        "initial_widths": widths_text(initial_widths(clf)),
        "widths": widths_text(widths),
        "static_widths": widths_text(static.widths_) if static is not None else "",
        **{f"width_{site}": w for site, w in zip(names, widths)},
        "params": n_parameters(clf),
        "static_params": n_parameters(static) if static is not None else np.nan,
        "growth_events": len(clf.growth_history_),
        "neurons_added": int(clf.growth_history_["n_added"].sum()),
        "accuracy": clf.score(X_test, y_test),
        "static_accuracy": static_accuracy,
        **timed,
        "lr": part.lr,
        "device": str(args.device),
        "activation_source": clf.activation_source,
        "trigger_interval": clf.trigger_interval,
    }
    for key in TWIN_COLUMNS:  # empty for a static baseline
        row.setdefault(key, np.nan)
    keys = {"architecture": part.architecture, "strategy": name, "seed": seed}
    epochs = pd.DataFrame(
        {
            **keys,
            "epoch": np.arange(1, len(grow_epochs) + 1),
            "grow_s": grow_epochs,
            "static_s": static_epochs,
            "widths": epoch_widths(clf),
        }
    )
    events = clf.growth_history_.assign(**keys)
    events["site"] = [names[int(layer)] for layer in events["layer"]]
    return row, epochs, events


def progress(row, elapsed):
    """One line per run."""
    line = (
        f"{row['architecture']:6s} {row['dataset']} {row['strategy']:13s} seed "
        f"{row['seed']}: widths {row['widths']} acc {row['accuracy']:.4f} fit "
        f"{row['fit_s']:.1f}s peak {row['peak_mib']:.1f} MiB"
    )
    if np.isfinite(row["time_ratio"]):
        line += (
            f" | static twin: acc {row['static_accuracy']:.4f} fit {row['static_fit_s']:.1f}s"
            f" (fit ratio {row['time_ratio']:.2f}, epoch ratio {row['epoch_ratio']:.2f},"
            f" memory ratio {row['memory_ratio']:.2f})"
        )
    return line + f" [{duration_text(elapsed)}]"


# --------------------------------------------------------------------------- summary


def mean_std(values, fmt):
    """``mean ± std`` over seeds (the mean alone for one seed or NaNs)."""
    values = pd.Series(values, dtype=float).dropna()
    if values.empty:
        return ""
    text = format(values.mean(), fmt)
    return text + (f" ± {format(values.std(), fmt)}" if len(values) > 1 else "")


def standard_widths(architecture):
    if architecture == "wrn28":
        return WRN28_WIDTHS
    spec = ARCHITECTURES[architecture]
    return (*spec["conv"], *spec["dense"])


def site_means(g, column="widths"):
    """Per-site means of a group of runs' widths (``a-b-c`` texts), in site order."""
    return np.array([[int(w) for w in text.split("-")] for text in g[column]]).mean(axis=0)


def wall_seconds(g):
    """Wall seconds of a group of runs: every growing fit and its static twin."""
    return float(g["fit_s"].sum() + g["static_fit_s"].fillna(0).sum())


def summarize(df):
    """Means over seeds per (architecture, strategy): the runs' table and the targets."""
    rows, targets = [], []
    for (architecture, name), g in df.groupby(["architecture", "strategy"], sort=False):
        rows.append(
            {
                "architecture": architecture,
                "strategy": name,
                "widths": "-".join(f"{w:.0f}" for w in site_means(g)),
                "params (M)": f"{g['params'].mean() / 1e6:.3f}",
                "accuracy": mean_std(g["accuracy"], ".4f"),
                "static twin accuracy": mean_std(g["static_accuracy"], ".4f"),
                "fit s": mean_std(g["fit_s"], ".1f"),
                "static fit s": mean_std(g["static_fit_s"], ".1f"),
                "fit ratio": mean_std(g["time_ratio"], ".2f"),
                "epoch s (median)": mean_std(g["epoch_median_s"], ".2f"),
                "static epoch s": mean_std(g["static_epoch_median_s"], ".2f"),
                "epoch ratio (median)": mean_std(g["epoch_ratio"], ".2f"),
                "epoch ratio (mean after 1st)": mean_std(g["epoch_mean_ratio"], ".2f"),
                "triggers %": mean_std(100 * g["trigger_s"] / g["fit_s"], ".0f"),
                "initializers %": mean_std(100 * g["initializer_s"] / g["fit_s"], ".0f"),
                "peak MiB": mean_std(g["peak_mib"], ".0f"),
                "static peak MiB": mean_std(g["static_peak_mib"], ".0f"),
                "memory ratio": mean_std(g["memory_ratio"], ".2f"),
                "growth events": f"{g['growth_events'].mean():.0f}",
                "wall min (all seeds)": f"{wall_seconds(g) / 60:.1f}",
                "seeds": len(g),
            }
        )
        if name in STATIC_NAMES:
            continue
        applies_here = is_cuda(g["device"].iloc[0])
        for column, target, where in TARGETS[architecture]:
            measured = g[column].mean()
            applies = (where == "cuda") == applies_here
            met = "yes" if measured <= target else "no"
            targets.append(
                {
                    "architecture": architecture,
                    "strategy": name,
                    "ratio": RATIO_NAMES[column],
                    "growing / static": f"{measured:.2f}",
                    "target": f"<= {target}" + ("" if applies else f" (on {where})"),
                    # A NaN (memory not measurable here) meets nothing.
                    "met": (met if np.isfinite(measured) else "?") if applies else "",
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(targets)


def paper_table(df):
    """VGG-11 runs next to the paper's CIFAR-10 numbers (SPEC section 6)."""
    rows = []
    vgg = df[df["architecture"] == "vgg11"]
    standard = np.array(standard_widths("vgg11"), dtype=float)
    for name, g in vgg.groupby("strategy", sort=False):
        paper = PAPER_VGG.get(name)
        relative = site_means(g) / standard
        rows.append(
            {
                "strategy": name,
                "data": g["dataset"].iloc[0],
                "widths / standard": " ".join(f"{r:.2f}" for r in relative),
                "params (M)": f"{g['params'].mean() / 1e6:.2f}",
                "paper params (M)": f"{paper[1]:g}" if paper else "",
                "accuracy": mean_std(g["accuracy"], ".4f"),
                "paper accuracy (CIFAR-10)": f"{paper[0]:.3f}" if paper else "",
                "epochs": f"{g['epochs'].mean():.0f}",
                "seeds": len(g),
            }
        )
    return pd.DataFrame(rows)


def wrn_paper_table(df):
    """WRN-28 runs next to the paper's statements (section 4.3), with the accuracy
    differences to the static Big and Medium networks that the statements are about."""
    rows = []
    wrn = df[df["architecture"] == "wrn28"]
    standard = np.array(standard_widths("wrn28"), dtype=float)
    static = {name: g["accuracy"].mean() for name, g in wrn.groupby("strategy")}

    def versus(g, name):
        if name not in static or g["strategy"].iloc[0] == name:
            return ""
        return f"{g['accuracy'].mean() - static[name]:+.4f}"

    for name, g in wrn.groupby("strategy", sort=False):
        relative = site_means(g) / standard
        rows.append(
            {
                "strategy": name,
                "data": g["dataset"].iloc[0],
                "widths / standard": " ".join(f"{r:.2f}" for r in relative),
                "params (M)": f"{g['params'].mean() / 1e6:.3f}",
                "accuracy": mean_std(g["accuracy"], ".4f"),
                "vs static-big": versus(g, "static-big"),
                "vs static-medium": versus(g, "static-medium"),
                "paper (CIFAR-10, section 4.3)": PAPER_WRN.get(name, ""),
                "epochs": f"{g['epochs'].mean():.0f}",
                "seeds": len(g),
            }
        )
    return pd.DataFrame(rows)


def standard_params(architecture, input_shape, n_classes):
    """Millions of parameters of our network at the static baselines' widths for these
    images and classes (built on the meta device: shapes only, nothing allocated)."""
    out = []
    for m in STATIC_BASELINES[architecture].values():
        widths = [max(1, round(m * w)) for w in standard_widths(architecture)]
        with torch.device("meta"):
            if architecture == "wrn28":
                net = GrowableWRN(input_shape, widths, n_classes)
            else:
                net = build_cnn(architecture, input_shape, widths, n_classes)
        out.append(sum(p.numel() for p in net.parameters()) / 1e6)
    return out


def deviations(args, parts):
    """How a run departs from the paper's protocol (empty: it is the protocol)."""
    if args.mode == "cpu":
        return ["MNIST images, not CIFAR; subsets and a few epochs"]
    arch = args.architecture
    out = ["synthetic random images and labels, not CIFAR"] if args.synthetic else []
    out += [
        f"{key.replace('_', ' ')} {getattr(args, key)} (paper: {value})"
        for key, value in CIFAR[arch].items()
        if getattr(args, key) != value
    ]
    (part,) = parts
    paper = PROTOCOLS[arch]
    if part.lr != paper["lr"]:
        out.append(f"lr {part.lr} (paper: {paper['lr']})")
    if (part.widths, part.max_widths) != (paper["widths"], paper["max_widths"]):
        out.append(
            f"widths {part.widths}x to {part.max_widths}x (paper: {paper['widths']}x to "
            f"{paper['max_widths']:g}x)"
        )
    return out


def part_text(p):
    return (
        f"{p.architecture} on {p.dataset} {'x'.join(map(str, p.input_shape))}: "
        f"{len(p.X_train)} training and {len(p.X_test)} test images, {p.epochs} epoch(s), "
        f"Adam lr {p.lr:g}, widths {p.widths:g}x the standard ones growing to at most "
        f"{p.max_widths:g}x, {', '.join(p.strategies)}"
    )


def counts_text(part):
    """Our parameter counts at the static baselines' widths (and the paper's VGG ones)."""
    arch = part.architecture
    counts = standard_params(arch, part.input_shape, part.n_classes)
    names = ", ".join(f"{m:g}x" for m in STATIC_BASELINES[arch].values())
    ours = f"Our {TITLES[arch]} on these images has " + ", ".join(f"{c:.3g}M" for c in counts)
    if arch == "vgg11":
        return (
            f"{ours} parameters at {names}; the paper reports 1.26M, ~20M and 79.7M on "
            "CIFAR-10 (about 0.71 of ours at each width, a difference in how the paper "
            "counts or builds them): compare parameter counts as ratios to the static "
            "networks'. "
        )
    return f"{ours} parameters at {names} (the paper gives no WRN-28 counts). "


def report(df, args, parts, elapsed):
    ours, targets = summarize(df)
    machine = df["machine"].iloc[0]
    off = deviations(args, parts)
    caveat = (
        "**Not the paper's protocol** (" + "; ".join(off) + "): compare the numbers with "
        "each other; the paper's are beside them for the widths and their order only.\n\n"
        if off
        else ""
    )
    if args.mode == "cifar" and args.synthetic:
        caveat = (
            SYNTHETIC_NOTE.format(name=CIFAR_TITLES[args.dataset], n=CIFAR_CLASSES[args.dataset])
            + "\n\n"
            + caveat
        )
    data = "; ".join(part_text(p) for p in parts)
    title = f"CNN benchmark, {args.mode} mode"
    if args.mode == "cifar":
        title += f", {TITLES[args.architecture]} on " + (
            f"synthetic {CIFAR_TITLES[args.dataset]}-shaped data"
            if args.synthetic
            else CIFAR_TITLES[args.dataset]
        )
    title += " (quick)" if args.quick else ""
    target_list = "; ".join(
        f"{TITLES[p.architecture]}: "
        + ", ".join(f"{RATIO_NAMES[c]} <= {t} on {w}" for c, t, w in TARGETS[p.architecture])
        for p in parts
    )
    sections = []
    for arch, heading, make, source in (
        (
            "vgg11",
            "VGG-11 next to the paper",
            paper_table,
            "The paper's columns are SPEC section 6 (Maile et al. 2022, section 4.3: VGG-11 "
            "on CIFAR-10, 100 epochs, means over 5 seeds; the paper gives CIFAR-100 in a "
            "figure only, and ran no GradMax on VGG-11). `widths / standard`: mean final "
            "width of each site (8 convs, 2 dense) over the standard VGG-11 width (the "
            "paper's Figure 5b). ",
        ),
        (
            "wrn28",
            "WRN-28 next to the paper",
            wrn_paper_table,
            "The paper states its WRN-28 CIFAR-10 results in words (section 4.3; the "
            "numbers are in its Figure 4 only): the NORTH* strategies grow to or near the "
            "6x cap, NORTH-Weight slightly beats Big Static at that size, NORTH-Select "
            "matches it, GradMax beats Medium Static at a similar size. `vs static-big`, "
            "`vs static-medium`: our mean accuracy minus that static network's, from "
            "this run. `widths / standard`: mean final width of the stem and the three "
            "groups over 16-16-32-64. Static Big is every site at 6x, the stem too. ",
        ),
    ):
        part = next((p for p in parts if p.architecture == arch), None)
        if part is None:
            continue
        sections.append(
            f"\n\n## {heading}\n\n{source}{counts_text(part)}\n\n"
            + markdown_table(make(df), index=False, numparse=False)
        )
    return (
        f"# {title}\n\n"
        f"`{command_line('bench_cnn.py')}`\n\n"
        f"{data}. Batch {args.batch_size}; every epoch trained; "
        f"{args.seeds} seed(s) from {args.first_seed}; the estimator's "
        f"trigger_interval={df['trigger_interval'].iloc[0]!s}, "
        f"activation_source={df['activation_source'].iloc[0]}; "
        f"{GrowingCNNClassifier().n_candidates} candidates per growth event on every site "
        f"(paper: 100 for convs, 1000 for dense layers). {machine}; fits on {args.device}.\n\n"
        f"**Whole run: {duration_text(elapsed)}** (wall clock, data loading included).\n\n"
        + caveat
        + "## Targets\n\n"
        f"Means over seeds of the growing / static ratios the targets are set on "
        f"({target_list}); `epoch time (median)`: the median over the epochs.\n\n"
        + (markdown_table(targets, index=False, numparse=False) if len(targets) else "(none)")
        + "\n\n## Runs per strategy\n\n"
        "Means ± standard deviation over seeds. Each growing fit is followed, in the same "
        "process, by a static network of the widths it reached, trained the same way "
        "(same data, optimizer, epochs, seed): `static twin accuracy`, `static fit s`. "
        "`fit ratio` = growing / static fit wall time; `epoch ratio (median)` = the "
        "growing fit's median epoch time / the static fit's; `(mean after 1st)`: the "
        "same with the mean of the epochs after the first (the first holds most of the "
        "growth and the one-off work). "
        + (
            "Each pair was fitted once. "
            if args.repeats == 1
            else f"Each pair was fitted {args.repeats} times back to back; the row is the "
            "pair with the median fit ratio. "
        )
        + "`triggers %`, `initializers %`: share of the growing fit's wall time spent in "
        "them. "
        + (
            "`peak MiB` is GPU memory: the peak of torch's CUDA allocator during the fit "
            "above what it held before. "
            if is_cuda(args.device)
            else "`peak MiB`: peak resident memory of the process during the fit above "
            "its resident memory just before (see `_common.py`; small peaks are noise). "
        )
        + "`wall min (all seeds)`: the growing fits and their twins together. Static "
        "baselines have no twin.\n\n"
        + markdown_table(ours, index=False, numparse=False)
        + "".join(sections)
        + "\n"
    )


# --------------------------------------------------------------------------- main


def parse_args():
    p = benchmark_parser(
        __doc__,
        "defaults of a short run (cpu: 1000 small-CNN, 256 VGG-11 and 256 WRN-28 training "
        "images, 1 epoch each; cifar: 1 seed, 1 epoch, 2000 training images); explicit "
        "options still apply",
    )
    p.add_argument("--mode", choices=["cpu", "cifar"], default="cpu")
    p.add_argument("--dataset", choices=list(CIFAR_TITLES), default="cifar10", help="cifar mode")
    p.add_argument(
        "--architecture",
        choices=list(CIFAR),
        default="vgg11",
        help="cifar mode: the paper's VGG-11 or WRN-28 protocol (vgg11)",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="cifar mode: random 3x32x32 images with random labels instead of CIFAR "
        "(timing and memory ratios only; no data needed)",
    )
    choices = [*GROWING, *STATIC_NAMES]

    def strategies(option, default, what):
        p.add_argument(
            option,
            nargs="*" if default is not None else "+",
            choices=choices,
            default=default,
            metavar="NAME",
            help=what,
        )

    strategies(
        "--strategies",
        None,
        f"any of {', '.join(choices)} (cpu mode's small CNN: the growing ones; cifar: all)",
    )
    strategies(
        "--vgg-strategies",
        NORTH,
        "cpu mode's VGG-11 runs (default: the NORTH* ones; the flag alone: none)",
    )
    strategies(
        "--wrn-strategies",
        GROWING,
        "cpu mode's WRN-28 runs (default: the growing ones; the flag alone: none)",
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (cpu 1, cifar 5)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1 (0)")
    p.add_argument(
        "--epochs", type=int, default=None, help="(cpu: small CNN 3; cifar: VGG 100, WRN 50)"
    )
    p.add_argument(
        "--n-train", type=int, default=None, help="training subset (cpu: 10000; cifar: 50000)"
    )
    p.add_argument("--n-test", type=int, default=None, help="test subset (cpu: 2000; cifar: 10000)")
    for arch, (epochs, n_train, n_test) in {"vgg": (2, 2000, 1000), "wrn": (1, 1000, 500)}.items():
        name = "VGG-11" if arch == "vgg" else "WRN-28"
        p.add_argument(f"--{arch}-epochs", type=int, default=None, help=f"cpu: {name} ({epochs})")
        p.add_argument(f"--{arch}-n-train", type=int, default=None, help=f"cpu: {name} ({n_train})")
        p.add_argument(f"--{arch}-n-test", type=int, default=None, help=f"cpu: {name} ({n_test})")
    p.add_argument("--lr", type=float, default=None, help="Adam's (the paper's: 3e-4; WRN-28 3e-3)")
    p.add_argument("--batch-size", type=int, default=None, help="(128)")
    p.add_argument(
        "--widths",
        type=float,
        default=None,
        help="initial widths, x standard, for every architecture (the paper's: 0.25)",
    )
    p.add_argument(
        "--max-widths",
        type=float,
        default=None,
        help="maximum widths, x standard, for every architecture (the paper's: 2; WRN-28 6)",
    )
    p.add_argument(
        "--trigger-interval",
        type=trigger_interval,
        default=None,
        help="int or auto (default: the estimator's)",
    )
    p.add_argument(
        "--activation-source",
        choices=["buffer", "training"],
        default=None,
        help="(default: the estimator's)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="fit each (growing, static twin) pair this many times; the row is the pair "
        "with the median fit ratio (1)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    add_device_option(p)
    p.add_argument(
        "--data-home",
        default=None,
        help=f"cpu: the MNIST IDX files' folder (default: {SHARED_MNIST} if it exists, else "
        f"load_mnist's); cifar: the folder holding the CIFAR folder or archive (default: "
        f"{SHARED_CIFAR} if it exists, else load_cifar's)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="cifar: download the archive (about 170 MB) into --data-home if it is missing",
    )
    p.add_argument(
        "--out", default=None, help="results name (default: cnn_<mode or dataset>[_wrn28])"
    )
    p.add_argument("--results-dir", default=None, help=f"where the results go (default: {RESULTS})")
    args = p.parse_args()
    if args.mode == "cpu":
        if args.synthetic:
            p.error("--synthetic is a cifar mode option (--mode cifar)")
        fill_defaults(args, {**CPU, "strategies": GROWING}, CPU_QUICK)
        if args.data_home is None:
            args.data_home = default_data_home()
    else:
        fill_defaults(args, {**CIFAR[args.architecture], "strategies": choices}, CIFAR_QUICK)
        if args.data_home is None and SHARED_CIFAR.is_dir():
            args.data_home = str(SHARED_CIFAR)
    if args.repeats < 1 or args.seeds < 1:
        p.error("--repeats and --seeds must be at least 1")
    if args.mode == "cifar" and args.synthetic and args.n_train < CIFAR_CLASSES[args.dataset]:
        p.error(
            f"--n-train {args.n_train} is below {args.dataset}'s "
            f"{CIFAR_CLASSES[args.dataset]} classes: --synthetic needs every class once"
        )
    if is_cuda(args.device) and not torch.cuda.is_available():
        raise SystemExit(f"bench_cnn.py: --device {args.device}, but torch sees no CUDA device.")
    return args


def default_out(args):
    """``cnn_cpu``, ``cnn_cifar10``, ``cnn_cifar100_wrn28_synthetic_cuda``, ..."""
    if args.mode == "cpu":
        name = "cnn_cpu"
    else:
        name = "cnn_" + args.dataset + ("_wrn28" if args.architecture == "wrn28" else "")
        name += "_synthetic" if args.synthetic else ""
    return name + ("_quick" if args.quick else "") + ("_cuda" if is_cuda(args.device) else "")


def main():
    start = time.perf_counter()
    args = parse_args()
    if args.results_dir is not None:
        # _common.write_results reads _common.RESULTS: both point at the new folder.
        global RESULTS
        RESULTS = _common.RESULTS = Path(args.results_dir)
    out = args.out or default_out(args)
    set_threads(args.threads)

    parts = mnist_parts(args) if args.mode == "cpu" else cifar_parts(args)
    if args.mode == "cifar" and args.synthetic:
        print(
            f"SYNTHETIC DATA: random images and labels of {CIFAR_TITLES[args.dataset]}'s "
            "shape; the accuracies are chance, only the ratios mean anything.",
            flush=True,
        )
    machine = environment(args.device)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, epochs, events = [], [], []
    for part in parts:
        warm_up_cnn(part, args.device)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in part.strategies:
                row, ep, ev = run(part, strategy, seed, args)
                row["elapsed_s"] = time.perf_counter() - start
                row["machine"] = machine
                rows.append(row)
                epochs.append(ep)
                events.append(ev)
                print(progress(row, row["elapsed_s"]), flush=True)
                # Written after every run: a cut run keeps what it measured.
                write_tables(rows, epochs, events, out)
    df = pd.DataFrame(rows)
    text = report(df, args, parts, time.perf_counter() - start)
    write_results(df, text, out)


def write_tables(rows, epochs, events, out):
    """The runs, epochs and growth events so far (``write_results`` writes the final
    runs' CSV again with the summary)."""
    pd.DataFrame(rows).to_csv(RESULTS / f"{out}.csv", index=False)
    pd.concat(epochs, ignore_index=True).to_csv(RESULTS / f"{out}_epochs.csv", index=False)
    ev = pd.concat([e for e in events if len(e)] or events[:1], ignore_index=True)
    ev.to_csv(RESULTS / f"{out}_growth.csv", index=False)


if __name__ == "__main__":
    main()
