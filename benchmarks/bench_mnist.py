"""MNIST MLP: the paper's protocol (Maile et al. 2022, section 4.2), our numbers vs theirs.

784 -> h1 -> h2 -> 10, ReLU, pixels in [0, 1]; initial widths 64, max 784; Adam lr 3e-4,
batch 512, 20 epochs, 5 seeds; every dynamic strategy and the static baselines Small
(64+64), Medium (256+256) and Big (784+784). Each growing fit is followed, in the same
process, by a static network of the widths it reached, trained the same way: the time
ratio and the memory ratio compare the two. Per run: test accuracy, final widths,
parameters, fit time (wall clock and process CPU time), the share of the fit spent in
triggers and initializers, and the peak memory of each fit (peak RSS above the RSS before
the fit, the kernel's high-water mark being reset before each fit: see ``_common.py``).

    python benchmarks/bench_mnist.py            # the protocol: 5 seeds, 20 epochs, 60k
    python benchmarks/bench_mnist.py --quick    # 1 seed, 3 epochs, 10k training images
    python benchmarks/bench_mnist.py --device cuda   # on a GPU (GPU memory as fit peak)

Writes ``benchmarks/results/mnist.csv`` (one row per run), ``mnist.md`` (means per
strategy next to the paper's table) and ``mnist_growth.csv`` (every growth event, for
plots); ``mnist_quick.*`` with ``--quick``, ``*_cuda.*`` on a CUDA device. ``--plot``
also writes PNGs if matplotlib is installed.
"""

import argparse
import math
import time

import numpy as np
import pandas as pd
from _common import (
    DEFAULT_INTERVAL,
    DYNAMIC_STRATEGIES,
    RESULTS,
    SHARED_MNIST,
    add_device_option,
    add_gradient_options,
    benchmark_parser,
    build_strategy,
    command_line,
    default_data_home,
    duration_text,
    environment,
    fill_defaults,
    fit_timed,
    grow_vs_static,
    is_cuda,
    least_orthogonal_select,
    markdown_table,
    n_parameters,
    pyplot,
    set_threads,
    trigger_interval,
    warm_up,
    widths_text,
    write_results,
)
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier
from sklearn_north.datasets import load_mnist

#: The paper's static baselines: name -> widths.
STATIC_BASELINES = {
    "static-small": (64, 64),
    "static-medium": (256, 256),
    "static-big": (784, 784),
}

#: The paper's MNIST results (SPEC section 6, read from its figures; means over 5 seeds):
#: name -> (L1, L2, test accuracy, reference CPU-hours).
PAPER = {
    "north-select": (784, 70, 0.9827, "~24"),
    "north-pre": (281, 172, 0.9774, "~10"),
    "north-random": (784, 311, 0.9819, "~2.1"),
    "north-weight": (559, 67, 0.9809, "~1.2"),
    "gradmax": (342, 308, 0.9780, "~1.2"),
    "firefly": (105, 480, 0.9710, "~2.2"),
    "nest": (233, 265, 0.9776, "~1.1"),
    "static-small": (64, 64, 0.9646, "0.29"),
    "static-medium": (256, 256, 0.9787, "0.35"),
    "static-big": (784, 784, 0.9823, "0.59"),
}

PROTOCOL = dict(
    seeds=5, epochs=20, n_train=60000, n_test=10000, hidden=[64, 64], max_hidden=[784, 784]
)
QUICK = dict(seeds=1, epochs=3, n_train=10000)


def load_data(args):
    X_train, y_train = load_mnist(args.data_home, subset="train", return_X_y=True)
    X_test, y_test = load_mnist(args.data_home, subset="test", return_X_y=True)
    # Stratified subsamples, the same for every run (random_state=0).
    if args.n_train < len(X_train):
        X_train, _, y_train, _ = train_test_split(
            X_train, y_train, train_size=args.n_train, stratify=y_train, random_state=0
        )
    if args.n_test < len(X_test):
        X_test, _, y_test, _ = train_test_split(
            X_test, y_test, train_size=args.n_test, stratify=y_test, random_state=0
        )
    return X_train, X_test, y_train, y_test


#: How a dynamic strategy is run besides its name (``--variants``):
#: ``exact``: the paper's every-step protocol (``trigger_interval=1`` unless given,
#: activations recomputed on the buffer) with the package's trigger arithmetic (and
#: ``--rounding``, ``--grad-norms``, ``--grad-scale``, ``--grad-reduction``,
#: ``--activation-source`` as given);
#: ``default``: the estimator's defaults for when and on what triggers are evaluated
#: (``trigger_interval``, ``activation_source``);
#: ``fast``: activations kept from the training forward (``activation_source="training"``),
#: only for strategies that read activations;
#: ``literal``: the printed equations (eq. 3's ``trigger_rounding="floor_difference"``;
#: eq. 6's threshold, the sum of the gradient norms);
#: ``reference``: the authors' code's trigger arithmetic (``"floor_threshold"``; gradient
#: threshold from the optimizer step's norms, halved);
#: ``least-orthogonal``: ``north-select`` keeping the least orthogonal candidates, as the
#: reference code's dense path does (a mistake, measured for the explanation only).
VARIANTS = ("exact", "default", "fast", "literal", "reference", "least-orthogonal")
READS_ACTIVATIONS = ("north-select", "north-pre", "north-random")


def variant_args(args, variant):
    """The options of one variant (a copy of ``args``)."""
    out = argparse.Namespace(**vars(args))
    if out.trigger_interval is None:
        out.trigger_interval = 1  # the paper's protocol
    if variant == "default":
        defaults = GrowingMLPClassifier()
        out.trigger_interval = defaults.trigger_interval
        out.activation_source = defaults.activation_source
    elif variant == "fast":
        out.activation_source = "training"
    elif variant == "literal":
        out.rounding = "floor_difference"
        out.grad_norms, out.grad_scale, out.grad_reduction = "gradients", 1.0, "sum"
    elif variant == "reference":
        out.rounding = "floor_threshold"
        out.grad_norms, out.grad_scale, out.grad_reduction = "updates", 0.5, "sum"
    return out


def planned_runs(args):
    """``(name, variant)`` pairs of one seed, in order: static baselines, then each variant."""
    runs = [(name, "exact") for name in args.strategies if name in STATIC_BASELINES]
    for variant in args.variants:
        for name in args.strategies:
            if name in STATIC_BASELINES or (variant == "fast" and name not in READS_ACTIVATIONS):
                continue
            if variant == "least-orthogonal" and name != "north-select":
                continue
            runs.append((name, variant))
    return runs


def run(name, seed, args, data, variant="exact"):
    """One run: a growing fit and its static twin, or a static baseline alone.

    Returns ``(row, events)``: the CSV row and the growth events (DataFrame)."""
    args = variant_args(args, variant)
    X_train, X_test, y_train, y_test = data
    common = dict(
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        trigger_interval=args.trigger_interval,
        random_state=seed,
        device=args.device,
        n_iter_no_change=None,  # the paper's protocol: every epoch
    )
    if name in STATIC_BASELINES:
        clf = GrowingMLPClassifier(
            strategy="static", hidden_layer_sizes=STATIC_BASELINES[name], **common
        )
        timed = fit_timed(clf, X_train, y_train, memory=True)
        # No static twin: a static baseline is its own reference.
        for key in ("static_fit_s", "static_cpu_s", "static_peak_mib", "time_ratio"):
            timed[key] = math.nan
        timed.update(
            memory_ratio=math.nan,
            process_memory_ratio=math.nan,
            static_process_peak_mib=math.nan,
            trigger_s=0.0,
            initializer_s=0.0,
        )
        label, static_accuracy = name, math.nan
    else:
        strategy, label = build_strategy(name, args)
        if variant in ("default", "fast"):
            label = f"{name} ({variant})" if label == name else f"{label[:-1]}, {variant})"
        if variant == "least-orthogonal":
            strategy = least_orthogonal_select(rounding=args.rounding)
            label = f"{name} (least orthogonal kept, {args.rounding})"
        clf = GrowingMLPClassifier(
            strategy=strategy,
            hidden_layer_sizes=args.hidden,
            max_hidden_layer_sizes=args.max_hidden,
            trigger_rounding=args.rounding,
            activation_source=args.activation_source,
            **common,
        )
        static, timed = grow_vs_static(clf, X_train, y_train, memory=True, repeats=args.repeats)
        static_accuracy = static.score(X_test, y_test)
    widths = clf.hidden_layer_sizes_
    row = {
        "strategy": label,
        "name": name,
        "variant": variant,
        "seed": seed,
        **{f"width_{i + 1}": w for i, w in enumerate(widths)},
        "widths": widths_text(widths),
        "neurons": sum(widths),
        "params": n_parameters(clf),
        "growth_events": len(clf.growth_history_),
        "accuracy": clf.score(X_test, y_test),
        "static_accuracy": static_accuracy,
        **timed,
    }
    row["trigger_share"] = row["trigger_s"] / row["fit_s"]
    row["initializer_share"] = row["initializer_s"] / row["fit_s"]
    events = clf.growth_history_.assign(strategy=label, seed=seed)
    return row, events


def progress(row, elapsed):
    """One line per run."""
    line = (
        f"{row['strategy']:14s} seed {row['seed']}: widths {row['widths']:9s} "
        f"acc {row['accuracy']:.4f}  fit {row['fit_s']:7.1f}s  peak {row['peak_mib']:6.1f} MiB"
    )
    if np.isfinite(row["time_ratio"]):
        line += (
            f"  | static twin: fit {row['static_fit_s']:6.1f}s (ratio "
            f"{row['time_ratio']:.2f}), peak {row['static_peak_mib']:6.1f} MiB"
        )
    return line + f"  [{duration_text(elapsed)}]"


def summarize(df):
    """Means over seeds per strategy: the comparison with the paper and the cost table."""
    groups = df.groupby("strategy", sort=False)
    layers = [c for c in df.columns if c.startswith("width_")]
    rows, costs = [], []
    for label, g in groups:
        name = g["name"].iloc[0]
        paper = PAPER.get(name)
        means = g[layers].mean()
        acc = g["accuracy"]
        std = f" ± {acc.std():.4f}" if len(g) > 1 else ""
        rows.append(
            {
                "strategy": label,
                **{f"L{i + 1}": f"{means[c]:.0f}" for i, c in enumerate(layers)},
                "neurons": f"{g['neurons'].mean():.0f}",
                "paper neurons (L1 + L2)": (
                    f"{paper[0] + paper[1]} ({paper[0]} + {paper[1]})" if paper else ""
                ),
                "accuracy": f"{acc.mean():.4f}{std}",
                "paper accuracy": f"{paper[2]:.4f}" if paper else "",
                "params": f"{g['params'].mean():,.0f}",
                "CPU-hours": f"{g['cpu_s'].mean() / 3600:.3g}",
                "paper CPU-hours": paper[3] if paper else "",
                "seeds": len(g),
            }
        )
        costs.append(
            {
                "strategy": label,
                "fit s": g["fit_s"].mean(),
                "static fit s": g["static_fit_s"].mean(),
                "time ratio": g["time_ratio"].mean(),
                "triggers %": 100 * g["trigger_share"].mean(),
                "initializers %": 100 * g["initializer_share"].mean(),
                "fit peak MiB": g["peak_mib"].mean(),
                "static fit peak MiB": g["static_peak_mib"].mean(),
                "fit memory ratio": g["memory_ratio"].mean(),
                "process peak MiB": g["process_peak_mib"].mean(),
                "process memory ratio": g["process_memory_ratio"].mean(),
                "static accuracy": g["static_accuracy"].mean(),
                "growth events": g["growth_events"].mean(),
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(costs)


def deviations(args):
    """How this run departs from the paper's protocol (empty: it is the protocol)."""
    out = [
        f"{key.replace('_', ' ')} {getattr(args, key)} (paper: {value})"
        for key, value in PROTOCOL.items()
        if getattr(args, key) != value
    ]
    if (args.lr, args.batch_size) != (3e-4, 512):
        out.append(f"Adam lr {args.lr}, batch {args.batch_size} (paper: 3e-4, 512)")
    if args.trigger_interval not in (None, 1):
        out.append(f"triggers every {args.trigger_interval} steps (paper: every step)")
    return out


def report(df, args, elapsed):
    ours, costs = summarize(df)
    # The machine the runs were measured on (a --report-only rebuild may run elsewhere).
    machine = df["machine"].iloc[0] if "machine" in df else environment(args.device)
    off = deviations(args)
    caveat = (
        "**Not the paper's protocol** (" + "; ".join(off) + "): compare the numbers with "
        "each other, not with the paper's.\n\n"
        if off
        else ""
    )
    title = "MNIST MLP: our numbers vs the paper" + (" (quick)" if args.quick else "")
    return (
        f"# {title}\n\n"
        f"`{command_line('bench_mnist.py')}`\n\n"
        f"784 -> h1 -> h2 -> 10 MLP, ReLU, pixels in [0, 1]; {args.n_train} training and "
        f"{args.n_test} test images; initial widths {args.hidden}, max {args.max_hidden}; "
        f"Adam lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs, "
        f"{args.seeds} seed(s); triggers every {args.trigger_interval or 1} step(s) (variant "
        f"default: {DEFAULT_INTERVAL!r}); gradient "
        f"threshold from {args.grad_norms} x{args.grad_scale} ({args.grad_reduction}), "
        f"trigger rounding {args.rounding} (variants literal and reference set their own). "
        f"{machine}; fits on {args.device}.\n\n"
        f"**Whole run: {duration_text(elapsed)}** (wall clock, data loading included).\n\n"
        + caveat
        + "## Final widths and accuracy\n\n"
        "Means over seeds (accuracy ± standard deviation over seeds). The paper's columns "
        "are SPEC section 6 (Maile et al. 2022, read from the figures: means over 5 seeds, "
        "±0.001 accuracy, ±5 neurons). CPU-hours: the fit's process CPU time (all threads) "
        "of one run, ours on this machine, the paper's on the reference code's.\n\n"
        + markdown_table(ours, index=False, numparse=False)
        + "\n\n## Cost of growing vs static of the same final widths\n\n"
        "Each growing fit is followed, in the same process, by a static network of the "
        "widths it reached, trained the same way (same data, optimizer, epochs, seed). "
        "`time ratio` = growing / static wall time"
        + (
            "; each pair was fitted once. "
            if args.repeats == 1
            else "; where both fits took under 30 s, the "
            f"pair was fitted {args.repeats} times, back to back, `time ratio` is the median "
            "of the pairs' ratios and the times shown are each side's fastest (short fits "
            "vary by ±20 % on a 2-core CPU, in phases of minutes; the fits are "
            "deterministic). "
        )
        + "`triggers %` and `initializers %`: "
        "share of the growing fit's wall time spent in them (callback `timings_`). "
        "`fit peak MiB`: peak resident memory of the process during the fit above its "
        "resident memory just before (the kernel's peak-RSS mark is reset before every "
        "fit, after a garbage collection and `malloc_trim`; a warm-up fit runs first): "
        "what the fit itself allocates, the training data excluded; `fit memory ratio` = "
        "growing / static (fits that allocate little differ by a few MiB from run to run: "
        "read small peaks and their ratios as noise). `process peak MiB`: the process's "
        "peak resident memory during the fit, the loaded MNIST arrays and the libraries "
        "included (what a user's run needs); `process memory ratio` = growing / static. "
        + (
            "**On CUDA, `fit peak MiB` is GPU memory**: the peak of torch's CUDA allocator "
            "during the fit above what it held before (its peak mark reset before every "
            "fit). "
            if is_cuda(args.device)
            else ""
        )
        + "The static baselines have no twin.\n\n"
        + markdown_table(costs, floatfmt=".2f", index=False)
        + "\n"
    )


def plot(df, events, args, out, steps_per_epoch):
    plt = pyplot()
    if plt is None:
        return
    # One colour per strategy; its variants differ by marker and line style.
    names = dict(zip(df["strategy"], df["name"]))
    order = list(dict.fromkeys(df["name"]))
    colors = {label: f"C{order.index(name) % 10}" for label, name in names.items()}
    exact = {label: label.endswith("(exact)") for label in names}
    # Accuracy vs total hidden neurons: ours (runs and means) and the paper's.
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, g in df.groupby("strategy", sort=False):
        c = colors[label]
        marker = "x" if exact[label] else "o"
        ax.scatter(g["neurons"], g["accuracy"], color=c, alpha=0.3, s=12, marker=marker)
        ax.scatter(
            g["neurons"].mean(), g["accuracy"].mean(), color=c, s=50, marker=marker, label=label
        )
        paper = PAPER.get(g["name"].iloc[0])
        if paper:
            ax.scatter(paper[0] + paper[1], paper[2], facecolors="none", edgecolors=c, s=50)
    ax.set_xlabel("total hidden neurons (L1 + L2)")
    ax.set_ylabel("test accuracy")
    ax.set_title("MNIST: filled = ours (mean; small: runs), hollow = paper")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [RESULTS / f"{out}_accuracy.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    # Widths over training per layer (the paper's Figure 3), first seed of each strategy.
    n_layers = len(args.hidden)
    fig, axes = plt.subplots(1, n_layers, figsize=(5 * n_layers, 4), squeeze=False)
    end = args.epochs * steps_per_epoch
    dynamic = df[~df["name"].isin(STATIC_BASELINES)]
    for label in dynamic["strategy"].unique():
        seed = dynamic.loc[dynamic["strategy"] == label, "seed"].min()
        e = events[(events["strategy"] == label) & (events["seed"] == seed)]
        for layer, ax in enumerate(axes[0]):
            le = e[e["layer"] == layer]
            last = le["width"].iloc[-1] if len(le) else args.hidden[layer]
            steps = np.array([0, *le["step"], end]) / steps_per_epoch
            widths = [args.hidden[layer], *le["width"], last]
            style = "--" if exact[label] else "-"
            ax.step(steps, widths, style, where="post", color=colors[label], label=label)
    for layer, ax in enumerate(axes[0]):
        ax.set_title(f"hidden layer {layer + 1}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("width")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(RESULTS / f"{out}_widths.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    print("plots:", ", ".join(map(str, paths)))


def main():
    start = time.perf_counter()
    p = benchmark_parser(
        __doc__,
        "defaults of a short run: 1 seed, 3 epochs, 10000 training images "
        "(explicit --seeds/--epochs/--n-train still apply)",
    )
    choices = [*DYNAMIC_STRATEGIES, *STATIC_BASELINES]
    p.add_argument(
        "--strategies",
        nargs="+",
        default=choices,
        choices=choices,
        metavar="NAME",
        help=f"any of {', '.join(choices)} (default: all)",
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (5)")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds FIRST..FIRST+N-1 (0); for a run split "
        "over several processes, whose CSVs are then concatenated and --report-only'd",
    )
    p.add_argument("--epochs", type=int, default=None, help="(20)")
    p.add_argument("--n-train", type=int, default=None, help="training subsample (60000)")
    p.add_argument("--n-test", type=int, default=10000, help="test subsample (10000)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--max-hidden", type=int, nargs="+", default=[784, 784])
    p.add_argument(
        "--trigger-interval",
        type=trigger_interval,
        default=None,
        help="(1: every step, the paper; the default variant uses the estimator's)",
    )
    p.add_argument(
        "--activation-source",
        choices=["buffer", "training"],
        default="buffer",
        help="activations recomputed on the buffer (paper) or kept from the training "
        "forward (fast mode)",
    )
    add_gradient_options(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    add_device_option(p)
    p.add_argument(
        "--data-home",
        default=default_data_home(),
        help=f"folder of the MNIST IDX files (default: {SHARED_MNIST} if it exists, else "
        "load_mnist's default)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=["exact"],
        choices=VARIANTS,
        help="exact (the package's defaults), fast (activations from the training forward), "
        "literal (the printed eq. 3 and 6), reference (the authors' code's trigger "
        "arithmetic), least-orthogonal",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the summary and plots from the CSVs of an earlier (possibly cut) run",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="fit pairs (growing, static twin) shorter than 30 s this many times; their "
        "time ratio is the median of the pairs' ratios (3)",
    )
    p.add_argument("--plot", action="store_true", help="also write PNGs (needs matplotlib)")
    p.add_argument(
        "--out", default=None, help="results name (mnist or mnist_quick; _cuda appended on CUDA)"
    )
    args = p.parse_args()
    fill_defaults(args, PROTOCOL, QUICK)
    out = args.out or ("mnist_quick" if args.quick else "mnist") + (
        "_cuda" if is_cuda(args.device) else ""
    )
    set_threads(args.threads)

    data = None
    if not args.report_only:
        data = load_data(args)
        args.n_train, args.n_test = len(data[0]), len(data[1])
        warm_up(data[0], data[2], device=args.device)
    cols = ["strategy", "seed", "step", "epoch", "layer", "n_added", "width"]
    if args.report_only:
        # Rebuild the summary (and plots) from the CSVs of an earlier, possibly cut, run.
        df = pd.read_csv(RESULTS / f"{out}.csv")
        events = pd.read_csv(RESULTS / f"{out}_growth.csv")
        args.seeds = df["seed"].nunique()
        # A run split over processes (--first-seed): the sum of their durations.
        runs = df.groupby("run_id") if "run_id" in df else [(0, df)]
        elapsed = sum(g["elapsed_s"].max() for _, g in runs)
    else:
        rows, events = [], []
        run_id = time.time_ns()  # tells the processes of a split run apart
        machine = environment(args.device)
        RESULTS.mkdir(exist_ok=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name, variant in planned_runs(args):
                row, ev = run(name, seed, args, data, variant)
                row["elapsed_s"] = time.perf_counter() - start
                row["machine"] = machine
                row["run_id"] = run_id
                rows.append(row)
                events.append(ev)
                print(progress(row, row["elapsed_s"]), flush=True)
                # Written after every run: a cut run keeps what it measured.
                pd.DataFrame(rows).to_csv(RESULTS / f"{out}.csv", index=False)
                pd.concat([e for e in events if len(e)] or events[:1], ignore_index=True)[
                    cols
                ].to_csv(RESULTS / f"{out}_growth.csv", index=False)
        df = pd.DataFrame(rows)
        events = pd.concat([e for e in events if len(e)] or events[:1], ignore_index=True)
        elapsed = time.perf_counter() - start
    text = report(df, args, elapsed)
    write_results(df, text, out)
    events[cols].to_csv(RESULTS / f"{out}_growth.csv", index=False)
    if args.plot:
        plot(df, events, args, out, math.ceil(args.n_train / args.batch_size))


if __name__ == "__main__":
    main()
