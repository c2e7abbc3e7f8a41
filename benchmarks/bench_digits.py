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

import pandas as pd
from _common import (
    DYNAMIC_STRATEGIES,
    add_gradient_options,
    build_strategy,
    command_line,
    grow_vs_static,
    markdown_table,
    widths_text,
    write_results,
)
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier


def run(name, seed, args, data):
    X_train, X_test, y_train, y_test = data
    strategy, label = build_strategy(name, args)
    grow = GrowingMLPClassifier(
        strategy=strategy,
        hidden_layer_sizes=args.hidden,
        max_hidden_layer_sizes=args.max_hidden,
        trigger_rounding=args.rounding,
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        random_state=seed,
    )
    static, timed = grow_vs_static(grow, X_train, y_train)
    return {
        "strategy": label,
        "seed": seed,
        "widths": widths_text(grow.hidden_layer_sizes_),
        "neurons": sum(grow.hidden_layer_sizes_),
        "growth_events": len(grow.growth_history_),
        "accuracy": grow.score(X_test, y_test),
        "static_accuracy": static.score(X_test, y_test),
        **{
            key: timed[key]
            for key in ("fit_s", "static_fit_s", "time_ratio", "trigger_s", "initializer_s")
        },
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 20 epochs")
    p.add_argument("--strategies", nargs="+", default=DYNAMIC_STRATEGIES)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    p.add_argument("--max-hidden", type=int, nargs="+", default=[512, 512])
    add_gradient_options(p)
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
        f"`{command_line('bench_digits.py')}`: "
        f"{args.seeds} seed(s), {args.epochs} epochs, Adam lr {args.lr}, batch "
        f"{args.batch_size}, initial widths {args.hidden}, max {args.max_hidden}; "
        f"means over seeds. `time_ratio` = growing fit time / static fit time, both fits "
        f"in the same process.\n\n" + markdown_table(summary) + "\n"
    )
    write_results(df, text, args.out)


if __name__ == "__main__":
    main()
