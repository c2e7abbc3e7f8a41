"""What sets the width: label noise and training-set size, with the package's defaults.

Observed earlier: the widths a NORTH strategy reaches follow the number of training samples
and the cap (``max_hidden_layer_sizes``) rather than the task. Two experiments, each fit
with the estimator's defaults (``--param`` to change them) and ``north-select``
(``--strategies``):

- ``noise``: Gaussian inputs (1797 x 64, N(0, 1)) with random labels (10 classes), and
  scikit-learn's digits with 0 %, 50 % and 100 % of the training labels shuffled;
- ``subsets``: digits training subsets of 100, 200, 400, 800 samples and all of them.

Digits: pixels / 16, stratified 75/25 split (``random_state=0``); subsets drawn stratified
from the training split (``random_state=0``). Shuffling a fraction ``f`` of the labels
picks ``round(f * n)`` training samples at random (seeded by the run's seed) and permutes
their labels among them: the class counts stay the same, and about a tenth of the picked
samples keep their label by chance (``labels_changed`` reports the fraction that
changed). Test accuracy is on the untouched digits test split; for the Gaussian task on a
held-out quarter with random labels too (chance, 0.1). Train accuracy is on the labels the
network was trained on. ``warned``: fit emitted a ``UserWarning`` saying the training set
is smaller than a layer's maximum width.

    python benchmarks/bench_capacity.py                  # both experiments, north-select
    python benchmarks/bench_capacity.py --experiments subsets --strategies north-select north-pre
    python benchmarks/bench_capacity.py --param max_hidden_layer_sizes=256 --out capacity_256
    python benchmarks/bench_capacity.py --quick          # 1 seed, 3 epochs, fewer settings

Writes ``benchmarks/results/capacity.csv`` (one row per fit, written as the runs complete)
and ``capacity.md``; ``--out`` renames them.
"""

import argparse
import ast
import re
import time
import warnings

import numpy as np
import pandas as pd
from _common import (
    DYNAMIC_STRATEGIES,
    RESULTS,
    benchmark_parser,
    command_line,
    duration_text,
    environment,
    fill_defaults,
    markdown_table,
    set_threads,
    warm_up,
    widths_text,
    write_results,
)
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier, growth

EXPERIMENTS = ("noise", "subsets")
#: Shape and classes of the pure-noise task (digits' shape and classes).
GAUSSIAN = dict(n_samples=1797, n_features=64, n_classes=10)
#: ``--quick``: what a smoke run uses instead (explicit options still apply).
QUICK = dict(seeds=1, epochs=3, noise=[0.0, 1.0], sizes=[100, 400])

#: The fit warning the ``warned`` column looks for (training set smaller than a layer's
#: maximum width).
CAPACITY_WARNING = re.compile(r"training set.*maximum width", re.IGNORECASE | re.DOTALL)


#: Names a ``--param`` value may call, e.g. ``growth_gate=HeldOutGate(tol=0.01)``.
GROWTH_OBJECTS = {name: getattr(growth, name) for name in growth.__all__}


def parse_param(text):
    """``KEY=VALUE`` -> ``(key, value)``, the value a Python literal where it parses as
    one (``ast.literal_eval``: ``256``, ``(128, 64)``, ``None``), or an object built from
    ``sklearn_north.growth`` (``HeldOutGate(tol=0.01)``), else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        head = value.split("(", 1)[0]
        if head in GROWTH_OBJECTS and value.endswith(")"):
            # A call of a growth object only: its arguments are literals.
            value = eval(value, {"__builtins__": {}}, GROWTH_OBJECTS)
    return key.strip(), value


def params_text(params):
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "(defaults)"


def digits_split():
    """Digits, pixels / 16, the stratified 75/25 split: ``X_train, X_test, y_train, y_test``."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)


def gaussian_split():
    """Gaussian inputs with random labels, split as digits."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((GAUSSIAN["n_samples"], GAUSSIAN["n_features"]))
    y = rng.integers(0, GAUSSIAN["n_classes"], GAUSSIAN["n_samples"])
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def shuffle_labels(y, fraction, seed):
    """``y`` with ``round(fraction * len(y))`` labels, picked at random, permuted among
    themselves (class counts unchanged). Returns ``(labels, picked)``: the new labels and
    the indices of the picked samples."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(y), size=round(fraction * len(y)), replace=False))
    out = np.array(y, copy=True)
    out[picked] = rng.permutation(out[picked])
    return out, picked


def subsample(X, y, n):
    """``n`` samples of ``(X, y)`` drawn stratified (the same for every run); all if
    ``n`` is None or not smaller."""
    if n is None or n >= len(X):
        return X, y
    X, _, y, _ = train_test_split(X, y, train_size=n, stratify=y, random_state=0)
    return X, y


def planned_runs(args):
    """``(experiment, task, n_train, noise)`` of each setting, in order (``n_train``
    None: the whole training split)."""
    runs = []
    if "noise" in args.experiments:
        runs.append(("noise", "gaussian", None, 1.0))
        runs += [("noise", "digits", None, f) for f in args.noise]
    if "subsets" in args.experiments:
        runs += [("subsets", "digits", n, 0.0) for n in [*args.sizes, None]]
    return runs


def run(task, n_train, noise, strategy, seed, args, splits):
    """One fit; returns the row (without the experiment)."""
    X_train, X_test, y_train, y_test = splits[task]
    X_train, y_train = subsample(X_train, y_train, n_train)
    # The Gaussian task's labels are random from the start: nothing to shuffle (NaN).
    shuffled = changed = np.nan
    if task == "digits":
        y_clean = y_train
        y_train, picked = shuffle_labels(y_train, noise, seed)
        shuffled, changed = len(picked) / len(y_train), float(np.mean(y_train != y_clean))
    # Every epoch trained (the paper's protocol) unless --param says otherwise.
    clf = GrowingMLPClassifier(
        strategy=strategy, random_state=seed, **{"n_iter_no_change": None, **args.params}
    )
    if args.epochs is not None:
        clf.set_params(max_epochs=args.epochs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tic = time.perf_counter()
        clf.fit(X_train, y_train)
        fit_s = time.perf_counter() - tic
    capacity = [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning) and CAPACITY_WARNING.search(str(w.message))
    ]
    widths = clf.hidden_layer_sizes_
    maximum = [site.max_width or site.width for site in clf.module_.growth_sites()]
    return {
        "task": task,
        "strategy": strategy,
        "seed": seed,
        "params": params_text(args.params),
        "n_train": len(X_train),
        "noise": noise,
        "labels_shuffled": shuffled,
        "labels_changed": changed,
        "epochs": clf.max_epochs,
        "widths": widths_text(widths),
        "neurons": sum(widths),
        "max_widths": widths_text(maximum),
        "growth_events": len(clf.growth_history_),
        "train_accuracy": clf.score(X_train, y_train),
        "test_accuracy": clf.score(X_test, y_test),
        "fit_s": fit_s,
        "warned": bool(capacity),
        "warning": capacity[0] if capacity else "",
    }


def summary_table(df):
    """One row per setting and strategy: widths over seeds, mean accuracies."""
    keys = ["experiment", "task", "n_train", "noise", "strategy"]
    rows = []
    for key, g in df.groupby(keys, sort=False):
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "noise": f"{100 * key[3]:.0f} %" if key[1] == "digits" else "random labels",
                "widths": ", ".join(dict.fromkeys(g["widths"])),
                "max widths": ", ".join(dict.fromkeys(g["max_widths"])),
                "labels changed": _mean(g["labels_changed"], ".3f"),
                "train accuracy": f"{g['train_accuracy'].mean():.4f}",
                "test accuracy": f"{g['test_accuracy'].mean():.4f}",
                "fit s": f"{g['fit_s'].mean():.1f}",
                "warned": ", ".join(map(str, dict.fromkeys(g["warned"]))),
                "seeds": len(g),
            }
        )
    return pd.DataFrame(rows)


def _mean(values, fmt):
    values = values.dropna()
    return format(values.mean(), fmt) if len(values) else ""


def report(df, args, machine, elapsed):
    epochs = df["epochs"].iloc[0] if len(df) else args.epochs
    return (
        "# What sets the width: label noise and training-set size"
        + (" (quick)" if args.quick else "")
        + f"\n\n`{command_line('bench_capacity.py')}`\n\n"
        f"{machine}. **Whole run: {duration_text(elapsed)}**.\n\n"
        f"Estimator parameters: {params_text(args.params)}"
        + ("" if args.epochs is None else f", max_epochs={args.epochs}")
        + f" ({epochs} epoch(s)); {args.seeds} seed(s), widths of every seed, means of the "
        "accuracies. `noise`: fraction of the digits training labels shuffled (permuted "
        "among the picked samples: `labels changed` is the fraction that ended with "
        "another label); the Gaussian task (1797 x 64 N(0, 1) inputs) has random labels "
        "for training and test. Train accuracy on the labels trained on; test accuracy on "
        "the untouched digits test split (Gaussian: held-out random labels, chance 0.1). "
        "`warned`: fit emitted a UserWarning that the training set is smaller than a "
        "layer's maximum width.\n\n"
        + (markdown_table(summary_table(df), index=False, numparse=False) if len(df) else "")
        + "\n"
    )


def main():
    start = time.perf_counter()
    p = benchmark_parser(
        __doc__,
        "a smoke run: 1 seed, 3 epochs, noise 0 and 100 %%, subsets 100 and 400 "
        "(explicit options still apply)",
    )
    p.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    p.add_argument(
        "--strategies", nargs="+", default=["north-select"], choices=DYNAMIC_STRATEGIES,
        metavar="NAME", help=f"any of {', '.join(DYNAMIC_STRATEGIES)} (north-select)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (1)")
    p.add_argument("--epochs", type=int, default=None, help="(the estimator's default max_epochs)")
    p.add_argument(
        "--noise", type=float, nargs="+", default=None,
        help="fractions of the digits training labels shuffled (0 0.5 1)",
    )  # fmt: skip
    p.add_argument(
        "--sizes", type=int, nargs="+", default=None,
        help="digits training subsets, all samples added (100 200 400 800)",
    )  # fmt: skip
    p.add_argument(
        "--param",
        dest="params",
        type=parse_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an estimator parameter, e.g. max_hidden_layer_sizes=256 or "
        "hidden_layer_sizes=(32,32) (values are Python literals where they parse as one); "
        "repeat for several",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    p.add_argument("--out", default="capacity", help="results name (capacity)")
    args = p.parse_args()
    args.params = dict(args.params)
    unknown = set(args.params) - set(GrowingMLPClassifier().get_params())
    if unknown:
        p.error(f"unknown estimator parameter(s): {', '.join(sorted(unknown))}")
    defaults = dict(seeds=1, noise=[0.0, 0.5, 1.0], sizes=[100, 200, 400, 800])
    fill_defaults(args, defaults, QUICK)
    set_threads(args.threads)
    machine = environment()

    splits = {"digits": digits_split(), "gaussian": gaussian_split()}
    warm_up(splits["digits"][0], splits["digits"][2])
    rows, done = [], {}
    RESULTS.mkdir(exist_ok=True)
    for seed in range(args.seeds):
        for experiment, task, n_train, noise in planned_runs(args):
            for strategy in args.strategies:
                key = (task, n_train, noise, strategy, seed)
                # Clean digits with every sample is in both experiments: fitted once.
                if key not in done:
                    done[key] = run(task, n_train, noise, strategy, seed, args, splits)
                row = {"experiment": experiment, **done[key]}
                row["elapsed_s"] = time.perf_counter() - start
                row["machine"] = machine
                rows.append(row)
                print(
                    f"{experiment:8s} {task:8s} n {row['n_train']:5d} noise {noise:4.2f} "
                    f"{strategy:12s} seed {seed}: widths {row['widths']:9s} train acc "
                    f"{row['train_accuracy']:.4f} test acc {row['test_accuracy']:.4f} "
                    f"warned {row['warned']}  fit {row['fit_s']:6.1f}s "
                    f"[{duration_text(row['elapsed_s'])}]",
                    flush=True,
                )
                # Written after every fit: a cut run keeps what it measured.
                pd.DataFrame(rows).to_csv(RESULTS / f"{args.out}.csv", index=False)
    df = pd.DataFrame(rows)
    write_results(df, report(df, args, machine, time.perf_counter() - start), args.out)


if __name__ == "__main__":
    main()
