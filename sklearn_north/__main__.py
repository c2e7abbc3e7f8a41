"""The main job: grow a network on scikit-learn's digits and report what grew.

    python -m sklearn_north [--strategy north-select] [--hidden 64,64] [--epochs 100] ...

Every option defaults to the estimator's own default (``GrowingMLPClassifier()``), except
``--seed`` (0, so that the report is reproducible) and ``--quiet`` (the per-epoch table is
shown). Prints one line per epoch (loss, widths, time), then the final widths, what grew
where and when, the epochs trained (and the best validation score under
``--early-stopping``), the number of parameters, the test accuracy and the fit time.
"""

import argparse
import inspect
import re
import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import InvalidParameterError, StrOptions

from . import GrowingMLPClassifier
from .growth import TRIGGERS, HeldOutGate

PROG = "python -m sklearn_north"

#: The estimator's defaults: the main job's, so that the two cannot drift apart.
ESTIMATOR_DEFAULTS = GrowingMLPClassifier().get_params()

#: Where the main job's default differs from the estimator's, and why.
JOB_DEFAULTS = {
    "random_state": 0,  # a reproducible report (the estimator's None draws a seed)
    "verbose": 1,  # the per-epoch table, unless --quiet
}

#: Estimator parameter -> command-line option (every parameter the main job sets).
OPTIONS = {
    "strategy": "--strategy",
    "hidden_layer_sizes": "--hidden",
    "max_hidden_layer_sizes": "--max-hidden",
    "schedule": "--schedule",
    "schedule_target": "--schedule-target",
    "schedule_end": "--schedule-end",
    "gamma": "--gamma",
    "trigger_rounding": "--trigger-rounding",
    "epsilon": "--epsilon",
    "n_candidates": "--n-candidates",
    "trigger_interval": "--trigger-interval",
    "buffer_size": "--buffer-size",
    "activation_source": "--activation-source",
    "activation": "--activation",
    "optimizer": "--optimizer",
    "lr": "--lr",
    "batch_size": "--batch-size",
    "max_epochs": "--epochs",
    "alpha": "--alpha",
    "shuffle": "--no-shuffle",
    "tol": "--tol",
    "n_iter_no_change": "--n-iter-no-change",
    "early_stopping": "--early-stopping",
    "validation_fraction": "--validation-fraction",
    "device": "--device",
    "n_threads": "--threads",
    "random_state": "--seed",
    "verbose": "--quiet",
    "growth_gate": "--gate",
}

#: The main job's options that are not estimator parameters, and their defaults.
TEST_SIZE = 0.25


def _gamma_defaults():
    """``"activation 0.97, weight 0.99"``: the gamma default of each trigger that has one."""
    defaults = {
        name: inspect.signature(cls).parameters["gamma"].default
        for name, cls in sorted(TRIGGERS.items())
        if "gamma" in inspect.signature(cls).parameters
    }
    return ", ".join(f"{name} {gamma}" for name, gamma in defaults.items())


#: What a ``None`` default means, per parameter (the estimator's docstring says so).
NONE_MEANS = {
    "max_hidden_layer_sizes": "10 x initial widths",
    "schedule": "the strategy's own trigger",
    "schedule_target": "the max widths",
    "gamma": f"the strategy's trigger's own: {_gamma_defaults()}",
    "buffer_size": "2 x largest max width",
    "n_threads": "torch's own setting, by default one thread per core",
}


def default(param):
    """The main job's default value of estimator parameter ``param``."""
    return JOB_DEFAULTS.get(param, ESTIMATOR_DEFAULTS[param])


def str_options(param):
    """The strings ``param`` accepts, read from the estimator's parameter constraints."""
    options = set()
    for constraint in GrowingMLPClassifier._parameter_constraints[param]:
        if isinstance(constraint, StrOptions):
            options |= set(constraint.options)
    return sorted(options)


def _show(param):
    """The default of ``param`` as ``--help`` shows it (widths as they are typed)."""
    value = default(param)
    if value is None:
        return f"None, {NONE_MEANS[param]}" if param in NONE_MEANS else "None"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)


# -- argument types -----------------------------------------------------------------------


def _widths(text):
    """``"64,64"`` -> ``(64, 64)``: one positive int per hidden layer."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive ints, got {text!r}"
        ) from None
    if not all(w >= 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive ints, got {text!r}")
    return widths


def _int_or_str(text):
    """An int where ``text`` is one, else the string (the estimator validates both)."""
    try:
        return int(text)
    except ValueError:
        return text


def _int_or_none(text):
    """An int, or None for ``"none"`` (any case)."""
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or 'none', got {text!r}") from None


def _fraction(text):
    """A float strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a float, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


# -- the parser ---------------------------------------------------------------------------


def build_parser():
    """The main job's argument parser; every default is the estimator's (see module doc)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Grow an MLP (GrowingMLPClassifier) on scikit-learn's digits (8x8 "
        "images, 10 classes) and report the widths it grew to, where and when it grew, and "
        "its test accuracy. Defaults are the estimator's, but --seed.",
    )

    def add(param, help, **kwargs):
        # Widths as they are typed; other values named after their option.
        metavar = "W[,W...]" if kwargs.get("type") is _widths else None
        kwargs.setdefault(
            "metavar", metavar or OPTIONS[param].lstrip("-").upper().replace("-", "_")
        )
        if kwargs.get("type", str) is str and str_options(param):
            kwargs["choices"] = str_options(param)
            kwargs["metavar"] = "{" + ",".join(kwargs["choices"]) + "}"
        p.add_argument(
            OPTIONS[param],
            dest=param,
            default=default(param),
            help=f"{help} (default: {_show(param)})",
            **kwargs,
        )

    add("strategy", "trigger and initializer pair (the paper's Table 1)")
    add("hidden_layer_sizes", "initial widths, one per hidden layer", type=_widths)
    add(
        "max_hidden_layer_sizes",
        "maximum widths, one per layer; one int applies to every layer",
        type=_widths,
    )
    add("schedule", "replace the trigger by a preset schedule to --schedule-target")
    add(
        "schedule_target",
        "the schedule's target widths; one int applies to every layer",
        type=_widths,
    )
    add("schedule_end", "fraction of training by which the schedule ends", type=float)
    add("gamma", "trigger threshold: share of the initial metric a layer keeps", type=float)
    add("trigger_rounding", "how the orthogonality triggers round the neurons to add")
    add("epsilon", "singular values above this count in the metric", type=float)
    add("n_candidates", "candidate neurons per growth event (select, pre)", type=int)
    # The strings it takes (e.g. "auto") are the estimator's: see its docstring.
    words = "".join(f" or {s!r}" for s in str_options("trigger_interval"))
    add(
        "trigger_interval",
        f"evaluate the triggers every this many optimizer steps (an int{words}; see "
        "GrowingMLPClassifier)",
        type=_int_or_str,
    )
    add("buffer_size", "recent samples the activation metric is measured on", type=int)
    add("activation_source", "where activations are read: buffer (the paper) or training")
    add("activation", "hidden layers' activation function")
    add("optimizer", "torch optimizer")
    add("lr", "learning rate", type=float)
    words = "".join(f" or {s!r}" for s in str_options("batch_size"))
    add(
        "batch_size",
        f"mini-batch size (an int{words}; see GrowingMLPClassifier)",
        type=_int_or_str,
    )
    add("max_epochs", "training epochs, at most (see --n-iter-no-change)", type=int)
    add("alpha", "L2 penalty on the weights, as MLPClassifier's", type=float)
    add(
        "tol",
        "improvement of the training loss (the validation score under --early-stopping) "
        "that counts",
        type=float,
    )
    add(
        "n_iter_no_change",
        "stop once more than this many epochs in a row improved by less than --tol; "
        "'none': train every epoch (the paper's protocol)",
        type=_int_or_none,
    )
    add(
        "validation_fraction",
        "share of the training data held out under --early-stopping",
        type=float,
    )
    add("device", "torch device, e.g. cuda")
    add(
        "n_threads",
        "torch threads during the fit and prediction (1 where other processes share the cores)",
        type=int,
    )
    add("random_state", "seed of the split, the weights, shuffling and candidates", type=int)
    p.add_argument(
        "--test-size",
        type=_fraction,
        default=TEST_SIZE,
        help=f"share of digits held out for the test accuracy (default: {TEST_SIZE})",
    )
    p.add_argument(
        OPTIONS["growth_gate"],
        dest="growth_gate",
        action="store_const",
        const=HeldOutGate(),
        default=default("growth_gate"),
        help="stop growing a layer once a held-out 10%% of the training data stops "
        "improving (growth_gate=HeldOutGate(), beyond the paper) (default: no gate)",
    )
    p.add_argument(
        OPTIONS["early_stopping"],
        dest="early_stopping",
        action="store_const",
        const=True,
        default=default("early_stopping"),
        help="hold out --validation-fraction of the training data, stop once its accuracy "
        "stops improving and keep the network of the best epoch (default: off)",
    )
    p.add_argument(
        OPTIONS["shuffle"],
        dest="shuffle",
        action="store_const",
        const=False,
        default=default("shuffle"),
        help="train on the samples in the same order every epoch (default: shuffled)",
    )
    p.add_argument(
        OPTIONS["verbose"],
        dest="verbose",
        action="store_const",
        const=0,
        default=default("verbose"),
        help="no per-epoch table (default: the table is shown)",
    )
    return p


# -- errors -------------------------------------------------------------------------------


def option_of(message):
    """The option whose estimator parameter ``message`` names first, or None."""
    found = [
        (match.start(), OPTIONS[param])
        for param in OPTIONS
        if (match := re.search(rf"\b{param}\b", message))
    ]
    return min(found)[1] if found else None


def _usage_error(parser, exc):
    """Exit as argparse does (code 2), naming the option the error is about."""
    message = str(exc)
    option = option_of(message)
    parser.error(f"argument {option}: {message}" if option else message)


def _per_layer(widths):
    """One int applies to every layer (as the estimator reads an int)."""
    return widths[0] if widths is not None and len(widths) == 1 else widths


def make_estimator(args):
    """The estimator the parsed ``args`` describe."""
    params = {param: getattr(args, param) for param in OPTIONS}
    for param in ("max_hidden_layer_sizes", "schedule_target"):
        params[param] = _per_layer(params[param])
    return GrowingMLPClassifier(**params)


# -- the report ---------------------------------------------------------------------------


def _fmt(widths):
    return "-".join(map(str, widths))


def _plural(n, word):
    return f"{n} {word}" + ("s" if n != 1 else "")


def widths_at(history, initial, epoch):
    """The widths at the end of ``epoch`` (1-based) according to ``growth_history_``."""
    widths = list(initial)
    for row in history[history.epoch <= epoch].itertuples():
        widths[row.layer] = row.width
    return tuple(widths)


def timeline_epochs(history, n_epochs, n_points=5):
    """Epochs at which to show the widths: up to ``n_points`` spread evenly from the first
    epoch to the last one with a growth event (where the widths change), then the last."""
    last_growth = int(history.epoch.max())
    spread = np.linspace(1, last_growth, min(last_growth, n_points)).round()
    return sorted({*(int(e) for e in spread), n_epochs})


def growth_report(clf, initial, maximum):
    """Lines saying what grew, where and when."""
    history = clf.growth_history_
    # Training batches only: under early stopping the history also records validation ones.
    n_steps = sum("train_loss" in batch for row in clf.net_.history for batch in row["batches"])
    lines = [
        f"growth events     : {len(history)} in {_plural(clf.n_iter_, 'epoch')} "
        f"({_plural(n_steps, 'optimizer step')})"
    ]
    for layer, (width0, final, top) in enumerate(zip(initial, clf.hidden_layer_sizes_, maximum)):
        events = history[history.layer == layer]
        line = f"  layer {layer}: {width0} -> {final}"
        if events.empty:
            lines.append(line + ", no growth event")
            continue
        # Columns, not rows: a row of the mixed-dtype frame would turn the ints to floats.
        epochs, steps = events.epoch.tolist(), events.step.tolist()
        lines.append(
            f"{line} ({'its max' if final == top else f'max {top}'}), "
            f"{_plural(len(events), 'growth event')}, "
            f"first at epoch {epochs[0]} (step {steps[0]}), "
            f"last at epoch {epochs[-1]} (step {steps[-1]})"
        )
    if history.empty:
        lines.append(f"widths by epoch   : {_fmt(initial)} throughout")
        return lines
    timeline = ", ".join(
        f"{epoch}: {_fmt(widths_at(history, initial, epoch))}"
        for epoch in timeline_epochs(history, clf.n_iter_)
    )
    lines.append(f"widths by epoch   : {timeline}")
    return lines


def main(argv=None):
    """Run the main job with command-line arguments ``argv``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    clf = make_estimator(args)
    # Every invalid value is a usage error before anything is trained.
    try:
        clf._validate_params()
        initial, maximum = clf._widths()
        clf._schedule_target(initial, maximum)
    except (InvalidParameterError, ValueError) as exc:
        _usage_error(parser, exc)

    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixels in [0, 1], as the paper's MNIST protocol
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=args.test_size, random_state=args.random_state, stratify=y
        )
    except ValueError as exc:  # too few samples left on one side for 10 classes
        parser.error(f"argument --test-size: {exc}")
    print(
        f"digits: {len(X_train)} train / {len(X_test)} test samples, {X.shape[1]} features; "
        f"strategy={args.strategy}"
        + (f", schedule={args.schedule}" if args.schedule else "")
        + f", initial widths {initial}, max {maximum}"
    )
    tic = time.perf_counter()
    try:
        clf.fit(X_train, y_train)
    except ValueError as exc:
        # The data are fixed and clean: what fit rejects is an option's value or a
        # combination of them (e.g. a buffer smaller than a layer, a missing device).
        _usage_error(parser, exc)
    fit_time = time.perf_counter() - tic
    n_params = sum(p.numel() for p in clf.module_.parameters())
    print()
    print(f"final widths      : {clf.hidden_layer_sizes_} (started at {initial})")
    for line in growth_report(clf, initial, maximum):
        print(line)
    print(f"epochs trained    : {clf.n_iter_} of at most {clf.max_epochs}")
    if clf.early_stopping:
        print(
            f"best validation   : {clf.best_validation_score_:.4f} (accuracy on the held-out "
            f"{100 * clf.validation_fraction:g}% of the training data)"
        )
    print(f"parameters        : {n_params}")
    print(f"test accuracy     : {clf.score(X_test, y_test):.4f}")
    print(f"fit time          : {fit_time:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
