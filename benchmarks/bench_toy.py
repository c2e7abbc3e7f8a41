"""Toy data of rank k: final widths vs k (Maile et al. 2022, section 4.1 and Figure 1).

``make_independent_features(n_samples=5000, n_features=64, n_independent=k)`` for
k in {1, 2, 4, 8, 16, 32}, split 80/20 (stratified); an MLP with 1 or 2 hidden layers of
initial width 4, max 512, trained with Adam lr 3e-4, batch 128. The paper expects the
widths to follow the data's rank: 1 hidden layer, NORTH-Select 8, 9, 22, 512, 512, 512
neurons for k = 1..32, NORTH-Weight about 60 whatever k; test accuracy > 99% (97% at
k = 32). The paper does not state the number of epochs: 50 by default here (``--epochs``).
Seed s draws the data (``random_state=s``), the split and the network.

    python benchmarks/bench_toy.py            # k = 1..32, 1 and 2 hidden layers, 3 seeds
    python benchmarks/bench_toy.py --quick    # k in {1, 4, 16}, 1 seed, 10 epochs

Writes ``benchmarks/results/toy.csv`` (one row per run) and ``toy.md`` (final widths and
accuracy against k, means over seeds, next to the paper's); ``toy_quick.*`` with
``--quick``. ``--plot`` also writes a PNG if matplotlib is installed.
"""

import time

import pandas as pd
from _common import (
    DEFAULT_INTERVAL,
    DYNAMIC_STRATEGIES,
    RESULTS,
    add_gradient_options,
    benchmark_parser,
    build_strategy,
    command_line,
    duration_text,
    environment,
    fill_defaults,
    fit_timed,
    growth_timings,
    markdown_table,
    pyplot,
    set_threads,
    trigger_interval,
    warm_up,
    widths_text,
    write_results,
)
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier
from sklearn_north.datasets import make_independent_features

STRATEGIES = ["north-select", "north-random", "north-weight", "north-pre", "gradmax"]
KS = [1, 2, 4, 8, 16, 32]
QUICK = dict(k=[1, 4, 16], seeds=1, epochs=10)
DEFAULTS = dict(k=KS, seeds=3, epochs=50)

#: The paper's 1-hidden-layer reference (SPEC section 6): name -> widths for KS.
PAPER_WIDTHS = {
    "north-select": [8, 9, 22, 512, 512, 512],
    "north-weight": ["≈60"] * len(KS),
}
PAPER_ACCURACY = ["> 0.99"] * (len(KS) - 1) + ["0.97"]


def run(name, n_layers, k, seed, args):
    X, y = make_independent_features(
        n_samples=args.n_samples, n_features=args.n_features, n_independent=k, random_state=seed
    )
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=seed, stratify=y
    )
    strategy, label = build_strategy(name, args)
    clf = GrowingMLPClassifier(
        strategy=strategy,
        hidden_layer_sizes=(args.hidden,) * n_layers,
        max_hidden_layer_sizes=args.max_hidden,
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        trigger_interval=args.trigger_interval,
        gamma=args.gamma,
        trigger_rounding=args.rounding,
        random_state=seed,
        n_iter_no_change=None,  # the paper's protocol: every epoch
    )
    timed = fit_timed(clf, X_train, y_train)
    widths = clf.hidden_layer_sizes_
    return {
        "layers": n_layers,
        "k": k,
        "strategy": label,
        "name": name,
        "seed": seed,
        # Every row has max(--layers) width columns, empty where the network has fewer.
        **{f"width_{i + 1}": widths[i] if i < n_layers else None for i in range(max(args.layers))},
        "widths": widths_text(widths),
        "neurons": sum(widths),
        "growth_events": len(clf.growth_history_),
        "accuracy": clf.score(X_test, y_test),
        "train_accuracy": clf.score(X_train, y_train),
        "fit_s": timed["fit_s"],
        **growth_timings(clf),
    }


def width_cell(g, n_layers):
    means = [g[f"width_{i + 1}"].mean() for i in range(n_layers)]
    return "-".join(f"{m:.0f}" for m in means)


def tables(df, n_layers, ks):
    """Widths and accuracy against k for one depth: rows strategies (+ the paper's)."""
    sub = df[df["layers"] == n_layers]
    widths, accuracy = {}, {}
    for label, g in sub.groupby("strategy", sort=False):
        by_k = dict(list(g.groupby("k")))
        widths[label] = {f"k={k}": width_cell(by_k[k], n_layers) if k in by_k else "" for k in ks}
        accuracy[label] = {
            f"k={k}": f"{by_k[k]['accuracy'].mean():.4f}" if k in by_k else "" for k in ks
        }
    if n_layers == 1:
        for name, ref in PAPER_WIDTHS.items():
            widths[f"paper: {name}"] = {f"k={k}": str(w) for k, w in zip(KS, ref) if k in ks}
    accuracy["paper (all NORTH*)"] = {f"k={k}": a for k, a in zip(KS, PAPER_ACCURACY) if k in ks}
    widths = pd.DataFrame.from_dict(widths, orient="index").rename_axis("strategy")
    accuracy = pd.DataFrame.from_dict(accuracy, orient="index").rename_axis("strategy")
    return widths, accuracy


def report(df, args, elapsed):
    lines = [
        "# Toy data of rank k: final widths vs k" + (" (quick)" if args.quick else ""),
        "",
        f"`{command_line('bench_toy.py')}`",
        "",
        f"`make_independent_features(n_samples={args.n_samples}, "
        f"n_features={args.n_features}, n_independent=k, random_state=seed)`, split 80/20 "
        f"(stratified); MLP with {' or '.join(map(str, args.layers))} hidden layer(s), "
        f"initial width {args.hidden}, max {args.max_hidden}; Adam lr {args.lr}, batch "
        f"{args.batch_size}, {args.epochs} epochs (the paper does not say how many); "
        f"{args.seeds} seed(s); gamma {args.gamma or 'the strategy default'}; "
        f"trigger_interval={args.trigger_interval!r}; trigger rounding {args.rounding}; "
        f"gradient threshold from {args.grad_norms} x{args.grad_scale} "
        f"({args.grad_reduction}). {environment()}.",
        "",
        f"**Whole run: {duration_text(elapsed)}** (wall clock).",
        "",
        "Means over seeds. Widths: final width of each hidden layer (`L1-L2` with 2 layers). "
        "The paper's rows are SPEC section 6 (1 hidden layer; accuracy: all NORTH* "
        "strategies).",
    ]
    for n_layers in args.layers:
        widths, accuracy = tables(df, n_layers, args.k)
        lines += [
            "",
            f"## {n_layers} hidden layer{'s' if n_layers > 1 else ''}",
            "",
            "Final widths:",
            "",
            markdown_table(widths, numparse=False),
            "",
            "Test accuracy:",
            "",
            markdown_table(accuracy, numparse=False),
        ]
    cost = (
        df.groupby(["layers", "strategy"], sort=False)[
            ["fit_s", "trigger_s", "initializer_s", "growth_events"]
        ]
        .mean()
        .reset_index()
    )
    lines += ["", "## Fit time (s) and growth events, means over k and seeds", ""]
    lines += [markdown_table(cost, floatfmt=".2f", index=False), ""]
    return "\n".join(lines)


def plot(df, args, out):
    plt = pyplot()
    if plt is None:
        return
    panels = [(n, i) for n in args.layers for i in range(n)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (n_layers, layer) in zip(axes[0], panels):
        sub = df[df["layers"] == n_layers]
        for i, (label, g) in enumerate(sub.groupby("strategy", sort=False)):
            means = g.groupby("k")[f"width_{layer + 1}"].mean()
            ax.plot(means.index, means.values, "o-", color=f"C{i}", label=label)
        if n_layers == 1:
            ax.plot(KS, PAPER_WIDTHS["north-select"], "k--", label="paper: north-select")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("independent features k")
        ax.set_ylabel("final width")
        ax.set_title(f"{n_layers} hidden layer(s): layer {layer + 1}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{out}_widths.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print("plot:", path)


def main():
    start = time.perf_counter()
    p = benchmark_parser(
        __doc__,
        "defaults of a short run: k in {1, 4, 16}, 1 seed, 10 epochs (explicit "
        "--k/--seeds/--epochs still apply)",
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=STRATEGIES,
        choices=DYNAMIC_STRATEGIES,
        metavar="NAME",
        help=f"any of {', '.join(DYNAMIC_STRATEGIES)} (default: {' '.join(STRATEGIES)})",
    )
    p.add_argument("--k", type=int, nargs="+", default=None, help="independent features")
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (3)")
    p.add_argument("--epochs", type=int, default=None, help="(50; the paper's is unknown)")
    p.add_argument("--n-samples", type=int, default=5000)
    p.add_argument("--n-features", type=int, default=64)
    p.add_argument("--hidden", type=int, default=4, help="initial width of every layer")
    p.add_argument("--max-hidden", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--trigger-interval",
        type=trigger_interval,
        default=DEFAULT_INTERVAL,
        help=f"(1: every step, the paper; default: the estimator's, {DEFAULT_INTERVAL!r})",
    )
    p.add_argument(
        "--gamma", type=float, default=None, help="trigger threshold (the strategy's default)"
    )
    add_gradient_options(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    p.add_argument("--plot", action="store_true", help="also write a PNG (needs matplotlib)")
    p.add_argument("--out", default=None, help="results name (toy, or toy_quick)")
    args = p.parse_args()
    fill_defaults(args, DEFAULTS, QUICK)
    args.k = sorted(args.k)
    out = args.out or ("toy_quick" if args.quick else "toy")
    set_threads(args.threads)
    warm_up(*make_independent_features(256, args.n_features, 1, random_state=0))

    rows = []
    for seed in range(args.seeds):
        for n_layers in args.layers:
            for k in args.k:
                for name in args.strategies:
                    row = run(name, n_layers, k, seed, args)
                    rows.append(row)
                    print(
                        f"{row['layers']} layer(s) k={k:2d} {row['strategy']:13s} seed {seed}: "
                        f"widths {row['widths']:8s} acc {row['accuracy']:.4f}  "
                        f"fit {row['fit_s']:5.1f}s  [{duration_text(time.perf_counter() - start)}]",
                        flush=True,
                    )
                    # Written after every run: a cut sweep keeps what it measured.
                    RESULTS.mkdir(exist_ok=True)
                    pd.DataFrame(rows).to_csv(RESULTS / f"{out}.csv", index=False)
    df = pd.DataFrame(rows)
    layer_columns = [c for c in df.columns if c.startswith("width_")]
    df[layer_columns] = df[layer_columns].astype("Int64")
    write_results(df, report(df, args, time.perf_counter() - start), out)
    if args.plot:
        plot(df, args, out)


if __name__ == "__main__":
    main()
