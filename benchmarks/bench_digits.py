"""Growing vs static on scikit-learn's digits, measured side by side in one process.

For each strategy: fit a growing network, then a ``static`` network of the *final* widths
the growing one reached, with the same data, optimizer, epochs and seed. Reports final
widths, test accuracy, fit times and their ratio, and the time spent in triggers and
initializers.

    python benchmarks/bench_digits.py            # every dynamic strategy, 3 seeds
    python benchmarks/bench_digits.py --quick    # 1 seed, fewer epochs

Writes ``benchmarks/results/digits.csv`` and ``benchmarks/results/digits.md``.
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import STRATEGIES as REGISTRY
from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import INITIALIZERS, GradientTrigger

RESULTS = Path(__file__).parent / "results"
STRATEGIES = [
    "north-select",
    "north-pre",
    "north-random",
    "north-weight",
    "gradmax",
    "firefly",
    "nest",
]


def fit_timed(clf, X, y):
    tic = time.perf_counter()
    clf.fit(X, y)
    return time.perf_counter() - tic


def build_strategy(name, args):
    """The named strategy, or for a gradient strategy with ``--grad-norms updates`` the
    reference code's threshold (norms of the optimizer step, ``--grad-scale``)."""
    trigger, init = REGISTRY[name]
    if trigger != "gradient" or args.grad_norms == "gradients":
        return name, name
    label = f"{name} ({args.grad_norms}, x{args.grad_scale})"
    pair = (GradientTrigger(scale=args.grad_scale, norms=args.grad_norms), INITIALIZERS[init]())
    return pair, label


def run(name, seed, args, data):
    X_train, X_test, y_train, y_test = data
    strategy, label = build_strategy(name, args)
    common = dict(lr=args.lr, batch_size=args.batch_size, max_epochs=args.epochs, random_state=seed)
    grow = GrowingMLPClassifier(
        strategy=strategy,
        hidden_layer_sizes=args.hidden,
        max_hidden_layer_sizes=args.max_hidden,
        **common,
    )
    t_grow = fit_timed(grow, X_train, y_train)
    static = GrowingMLPClassifier(
        strategy="static", hidden_layer_sizes=grow.hidden_layer_sizes_, **common
    )
    t_static = fit_timed(static, X_train, y_train)
    timings = dict(grow.net_.callbacks_)["growth"].timings_
    return {
        "strategy": label,
        "seed": seed,
        "widths": "-".join(map(str, grow.hidden_layer_sizes_)),
        "neurons": sum(grow.hidden_layer_sizes_),
        "growth_events": len(grow.growth_history_),
        "accuracy": grow.score(X_test, y_test),
        "static_accuracy": static.score(X_test, y_test),
        "fit_s": t_grow,
        "static_fit_s": t_static,
        "time_ratio": t_grow / t_static,
        "trigger_s": timings["trigger"],
        "initializer_s": timings["initializer"],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 20 epochs")
    p.add_argument("--strategies", nargs="+", default=STRATEGIES)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--max-hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument(
        "--grad-norms",
        choices=["gradients", "updates"],
        default="gradients",
        help="T_grad threshold from gradient norms (paper) or optimizer-step norms (reference)",
    )
    p.add_argument("--grad-scale", type=float, default=1.0)
    p.add_argument("--out", default="digits")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.epochs = 1, 20
    X, y = load_digits(return_X_y=True)
    data = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    rows = []
    for seed in range(args.seeds):
        for strategy in args.strategies:
            row = run(strategy, seed, args, data)
            rows.append(row)
            print(
                f"{row['strategy']:13s} seed {seed}: widths {row['widths']:9s} "
                f"acc {row['accuracy']:.4f} (static {row['static_accuracy']:.4f})  "
                f"fit {row['fit_s']:6.1f}s static {row['static_fit_s']:5.1f}s "
                f"ratio {row['time_ratio']:5.2f}",
                flush=True,
            )
    df = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    df.to_csv(RESULTS / f"{args.out}.csv", index=False)
    summary = df.groupby("strategy", sort=False).agg(
        widths=("widths", lambda w: ", ".join(w)),
        accuracy=("accuracy", "mean"),
        static_accuracy=("static_accuracy", "mean"),
        fit_s=("fit_s", "mean"),
        static_fit_s=("static_fit_s", "mean"),
        time_ratio=("time_ratio", "mean"),
        trigger_s=("trigger_s", "mean"),
        initializer_s=("initializer_s", "mean"),
    )
    text = (
        f"# Digits: growing vs static of the same final widths\n\n"
        f"`python benchmarks/bench_digits.py {' '.join(sys.argv[1:])}`: "
        f"{args.seeds} seed(s), {args.epochs} epochs, Adam lr {args.lr}, batch "
        f"{args.batch_size}, initial widths {args.hidden}, max {args.max_hidden}; "
        f"means over seeds. `time_ratio` = growing fit time / static fit time, both fits "
        f"in the same process.\n\n" + summary.to_markdown(floatfmt=".3f") + "\n"
    )
    (RESULTS / f"{args.out}.md").write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
