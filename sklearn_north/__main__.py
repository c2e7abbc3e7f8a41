"""The main job: grow a network on scikit-learn's digits and report what grew.

    python -m sklearn_north [--strategy north-select] [--hidden 64,64] [--epochs 100] ...
    python -m sklearn_north --model cnn [--architecture small] [--widths 0.25] ...

``--model mlp`` (the default) grows a ``GrowingMLPClassifier`` on the 64 pixels of each
digit, ``--model cnn`` a ``GrowingCNNClassifier`` on the digits as 1x8x8 images. Every
option defaults to the chosen estimator's own default (its ``get_params()``), except
``--seed`` (0, so that the report is reproducible) and ``--quiet`` (the per-epoch table is
shown); the CNN's 100 epochs included, a default ``--model cnn`` run takes seconds (its
growth ends within the first dozen epochs). An option of one model only is a usage error
with the other. Prints one line per epoch (loss, widths, time), then the final
widths, what grew where and when (per hidden layer; per site, conv0, conv1, ..., dense0,
..., for the CNN), the epochs trained (and the best validation score under
``--early-stopping``), the number of parameters, the test accuracy and the fit time.
``--plot FILE`` also saves the fitted network's ``GrowthDisplay`` (widths over optimizer
steps, growth events, loss per epoch) as a PNG; it needs matplotlib.
"""

import argparse
import inspect
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import InvalidParameterError, StrOptions

from . import GrowingCNNClassifier, GrowingMLPClassifier
from ._display import GrowthDisplay, stacked_axes
from .growth import STRATEGIES, TRIGGERS, HeldOutGate

PROG = "python -m sklearn_north"

#: ``--model`` -> the estimator the job grows.
MODELS = {"mlp": GrowingMLPClassifier, "cnn": GrowingCNNClassifier}
DEFAULT_MODEL = "mlp"

#: Each estimator's defaults: the main job's, so that the two cannot drift apart.
ESTIMATOR_DEFAULTS = {model: cls().get_params() for model, cls in MODELS.items()}

#: Where the main job's default differs from the estimator's, and why (both models).
JOB_DEFAULTS = {
    "random_state": 0,  # a reproducible report (the estimator's None draws a seed)
    "verbose": 1,  # the per-epoch table, unless --quiet
}

#: Estimator parameter -> command-line option, for the parameters both models share.
SHARED_OPTIONS = {
    "strategy": "--strategy",
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

#: The options of one model only. The CNN has no ``--input-shape``: the job passes the
#: digits as images of shape (1, 8, 8), which give the estimator its input shape.
MODEL_OPTIONS = {
    "mlp": {
        "hidden_layer_sizes": "--hidden",
        "max_hidden_layer_sizes": "--max-hidden",
        "activation": "--activation",
    },
    "cnn": {
        "architecture": "--architecture",
        "widths": "--widths",
        "max_widths": "--max-widths",
        "batch_norm": "--batch-norm",
    },
}

#: Estimator parameter -> command-line option (every parameter the main job sets).
OPTIONS = {**SHARED_OPTIONS, **MODEL_OPTIONS["mlp"], **MODEL_OPTIONS["cnn"]}

#: One model's option -> the other model's option for the same thing (a usage error's hint).
COUNTERPARTS = {
    "--hidden": "--widths",
    "--max-hidden": "--max-widths",
    "--widths": "--hidden",
    "--max-widths": "--max-hidden",
}

#: The main job's options that are not estimator parameters, and their defaults.
TEST_SIZE = 0.25


def options_of(model):
    """Estimator parameter -> option, for every parameter the job sets on ``model``."""
    return {**SHARED_OPTIONS, **MODEL_OPTIONS[model]}


def models_of(param):
    """The models (``MODELS``' keys) that have an option for ``param``, in order."""
    return [model for model in MODELS if param in options_of(model)]


def _gamma_defaults(model):
    """``"activation 0.97, weight 0.99"``: the gamma each trigger that has one gets from
    ``model``'s estimator under ``gamma=None`` (and its baseline where it is not the
    trigger's own)."""
    found = {}
    for name, (kind, _) in STRATEGIES.items():
        own = inspect.signature(TRIGGERS[kind]).parameters
        if kind in found or "gamma" not in own:
            continue
        try:
            trigger, _ = MODELS[model](strategy=name)._make_strategy(None)
        except ValueError:  # a strategy the model does not grow with
            continue
        params = trigger.get_params()
        baseline = params.get("baseline")
        found[kind] = f"{kind} {params['gamma']}" + (
            f" ({baseline} baseline)" if baseline != own["baseline"].default else ""
        )
    return ", ".join(found[kind] for kind in sorted(found))


def rejected_strategies(model):
    """The named strategies ``model``'s estimator refuses (the CNN: dense-only ones)."""
    rejected = []
    for name in STRATEGIES:
        try:
            MODELS[model](strategy=name)._make_strategy(None)
        except ValueError:
            rejected.append(name)
    return rejected


_NONE_MEANS_BOTH = {
    "schedule": "the strategy's own trigger",
    "schedule_target": "the max widths",
    "n_threads": "torch's own setting, by default one thread per core",
}

#: What a ``None`` default means, per model and parameter (the estimators' docstrings).
NONE_MEANS = {
    "mlp": {
        **_NONE_MEANS_BOTH,
        "max_hidden_layer_sizes": "10 x initial widths",
        "gamma": f"the strategy's trigger's own: {_gamma_defaults('mlp')}",
        "buffer_size": "2 x largest max width",
    },
    "cnn": {
        **_NONE_MEANS_BOTH,
        "max_widths": "8 x initial widths",
        "gamma": _gamma_defaults("cnn"),
        "buffer_size": "one mini-batch (--batch-size)",
    },
}


def default(param, model=DEFAULT_MODEL):
    """The main job's default value of estimator parameter ``param`` under ``--model``."""
    return JOB_DEFAULTS.get(param, ESTIMATOR_DEFAULTS[model][param])


def str_options(param):
    """The strings ``param`` accepts, read from the parameter constraints of the
    estimators that have it (those of either: the estimator checks its own)."""
    options = set()
    for model in models_of(param):
        for constraint in MODELS[model]._parameter_constraints[param]:
            if isinstance(constraint, StrOptions):
                options |= set(constraint.options)
    return sorted(options)


def _show(param, model):
    """The default of ``param`` under ``model`` as ``--help`` shows it: ``(value, what it
    means)``, widths as they are typed."""
    value = default(param, model)
    if value is None:
        return "None", NONE_MEANS[model].get(param)
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)), None
    if model == "cnn" and param in ("widths", "max_widths"):
        # The multiplier's widths, for the default architecture.
        names = ("architecture", "widths", "max_widths")
        cnn = GrowingCNNClassifier(**{name: default(name, model) for name in names})
        initial, maximum = cnn._widths()
        widths = initial if param == "widths" else maximum
        return str(value), f"{','.join(map(str, widths))} for {cnn.architecture}"
    return str(value), None


def show_default(param):
    """``"(default: ...)"`` of ``param``'s ``--help`` entry: one value, or one per model
    where they differ."""
    shown = {model: _show(param, model) for model in models_of(param)}
    values = {value for value, _ in shown.values()}
    means = {mean for _, mean in shown.values()}
    if len(values) == 1:
        (value,) = values
        if len(means) == 1:
            (mean,) = means
            return f"(default: {value}" + (f", {mean})" if mean else ")")
        per_model = "; ".join(f"{model}: {mean}" for model, (_, mean) in shown.items() if mean)
        return f"(default: {value}, {per_model})"
    return (
        "(default: "
        + "; ".join(
            f"{model}: {value}" + (f", {mean}" if mean else "")
            for model, (value, mean) in shown.items()
        )
        + ")"
    )


# -- argument types -----------------------------------------------------------------------


def _widths(text):
    """``"64,64"`` -> ``(64, 64)``: one positive int per hidden layer (or site)."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive ints, got {text!r}"
        ) from None
    if not all(w >= 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive ints, got {text!r}")
    return widths


def _multiplier_or_widths(text):
    """``"0.5"`` -> ``0.5``, a multiplier of the standard widths (a single number is one,
    as the estimator reads a scalar); ``"8,16,32"`` -> ``(8, 16, 32)``, one per site."""
    if "," in text:
        return _widths(text)
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a multiplier (a positive number) or comma-separated positive ints, "
            f"got {text!r}"
        ) from None


def _max_widths(text):
    """As the estimator reads ``max_widths``: ``"auto"``, ``"none"`` -> None, ``"96"`` -> 96
    (every site), ``"2.0"`` -> 2.0 (a multiplier), ``"64,128,256"`` -> one per site."""
    if text.lower() == "none":
        return None
    if text.lower() == "auto":
        return "auto"
    if "," in text:
        return _widths(text)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', an int, a multiplier (e.g. 2.0), comma-separated ints or 'none', "
            f"got {text!r}"
        ) from None


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


class _JobParser(argparse.ArgumentParser):
    """Estimator options are left unset by argparse (``SUPPRESS``); after parsing, the
    chosen model's defaults fill them in, and an option of the other model only is a usage
    error."""

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        own = options_of(parsed.model)
        for param, option in OPTIONS.items():
            if param in own:
                if not hasattr(parsed, param):
                    setattr(parsed, param, default(param, parsed.model))
            elif hasattr(parsed, param):
                (other,) = models_of(param)
                counterpart = COUNTERPARTS.get(option)
                hint = f" (use {counterpart})" if counterpart else ""
                self.error(
                    f"argument {option}: only with --model {other}, not with --model "
                    f"{parsed.model}{hint}"
                )
        return parsed


def build_parser():
    """The main job's argument parser; every default is the estimator's (see module doc)."""
    p = _JobParser(
        prog=PROG,
        description="Grow a network on scikit-learn's digits (8x8 images, 10 classes): an "
        "MLP (GrowingMLPClassifier, --model mlp) or a CNN (GrowingCNNClassifier, --model "
        "cnn), and report the widths it grew to, where and when it grew, and its test "
        "accuracy. Defaults are the chosen estimator's, but --seed.",
    )
    p.add_argument(
        "--model",
        choices=list(MODELS),
        default=DEFAULT_MODEL,
        help="mlp: GrowingMLPClassifier on the 64 pixels; cnn: GrowingCNNClassifier on the "
        f"1x8x8 images (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--test-size",
        type=_fraction,
        default=TEST_SIZE,
        help=f"share of digits held out for the test accuracy (default: {TEST_SIZE})",
    )
    p.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="save a figure of the fitted network's growth as FILE (a PNG; another format "
        "matplotlib writes where FILE's extension names one): each site's width over the "
        "optimizer steps (a log scale) with its growth events marked (the CNN's relative to its "
        "architecture's standard widths), and the training loss per epoch below; needs "
        "matplotlib (default: no figure)",
    )
    groups = {
        "shared": p.add_argument_group(
            "options of both models",
            "Estimator parameters; where the models' defaults differ, each is shown.",
        ),
        "mlp": p.add_argument_group(
            "MLP options (--model mlp only)", "GrowingMLPClassifier's own parameters."
        ),
        "cnn": p.add_argument_group(
            "CNN options (--model cnn only)",
            "GrowingCNNClassifier's own parameters. Its sites are its convs' output "
            "channels (conv0, conv1, ...) and its hidden dense layers (dense0, ...); "
            "per-site widths list the convs first. No --input-shape: the digits are "
            "passed as 1x8x8 images.",
        ),
    }

    def group_of(param):
        models = models_of(param)
        return groups[models[0] if len(models) == 1 else "shared"]

    def add(param, help, **kwargs):
        # Widths as they are typed; other values named after their option.
        metavar = "W[,W...]" if kwargs.get("type") is _widths else None
        kwargs.setdefault(
            "metavar", metavar or OPTIONS[param].lstrip("-").upper().replace("-", "_")
        )
        if kwargs.get("type", str) is str and str_options(param):
            kwargs["choices"] = str_options(param)
            kwargs["metavar"] = "{" + ",".join(kwargs["choices"]) + "}"
        group_of(param).add_argument(
            OPTIONS[param],
            dest=param,
            default=argparse.SUPPRESS,
            help=f"{help} {show_default(param)}",
            **kwargs,
        )

    def flag(param, const, help):
        group_of(param).add_argument(
            OPTIONS[param],
            dest=param,
            action="store_const",
            const=const,
            default=argparse.SUPPRESS,
            help=help,
        )

    dense_only = ", ".join(rejected_strategies("cnn"))
    add(
        "strategy",
        "trigger and initializer pair (the paper's Table 1; --model cnn refuses "
        f"{dense_only}: dense layers only)",
    )
    add("hidden_layer_sizes", "initial widths, one per hidden layer", type=_widths)
    add(
        "max_hidden_layer_sizes",
        "maximum widths, one per layer; one int applies to every layer",
        type=_widths,
    )
    add("activation", "hidden layers' activation function")
    add(
        "architecture",
        "small: 2 convs and 1 hidden dense layer; vgg11: the paper's VGG-11; wrn28: the "
        "paper's WideResNet-28 (stem and 3 residual groups grow)",
    )
    add(
        "widths",
        "initial widths: a multiplier of the architecture's standard widths (a single "
        "number is one), or one int per site, comma-separated",
        type=_multiplier_or_widths,
        metavar="{X,W[,W...]}",
    )
    add(
        "max_widths",
        "maximum widths: 'auto' (the paper's cap: 2.0, 6.0 for wrn28), a multiplier with "
        "a point (2.0), an int for every site, one int per site, or 'none' (8 x initial "
        "widths)",
        type=_max_widths,
        metavar="{auto,X.X,W[,W...],none}",
    )
    flag(
        "batch_norm",
        True,
        "a BatchNorm layer after every conv of small and vgg11 (default: auto: none, as "
        "in the paper's VGG; wrn28 always has BatchNorm)",
    )
    add("schedule", "replace the trigger by a preset schedule to --schedule-target")
    add(
        "schedule_target",
        "the schedule's target widths; one int applies to every layer (site)",
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
        "the estimator's docstring)",
        type=_int_or_str,
    )
    add("buffer_size", "recent samples the activation metric is measured on", type=int)
    add(
        "activation_source",
        "where the activation metric reads activations: buffer (a sample buffer, the "
        "paper's) or training (the training mini-batch's own)",
    )
    add("optimizer", "torch optimizer")
    add("lr", "learning rate", type=float)
    words = "".join(f" or {s!r}" for s in str_options("batch_size"))
    add(
        "batch_size",
        f"mini-batch size (an int{words}; see the estimator's docstring)",
        type=_int_or_str,
    )
    add(
        "max_epochs",
        "training epochs, at most (see --n-iter-no-change)",
        type=int,
    )
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
    flag(
        "growth_gate",
        HeldOutGate(),
        "stop growing a layer once a held-out 10%% of the training data stops improving "
        "(growth_gate=HeldOutGate(), beyond the paper) (default: no gate)",
    )
    flag(
        "early_stopping",
        True,
        "hold out --validation-fraction of the training data, stop once its accuracy "
        "stops improving and keep the network of the best epoch (default: off)",
    )
    flag(
        "shuffle",
        False,
        "train on the samples in the same order every epoch (default: shuffled)",
    )
    flag("verbose", 0, "no per-epoch table (default: the table is shown)")
    return p


# -- errors -------------------------------------------------------------------------------


def option_of(message, model=DEFAULT_MODEL):
    """The option whose estimator parameter (of ``model``) ``message`` names first, or
    None."""
    options = options_of(model)
    found = [
        (match.start(), options[param])
        for param in options
        if (match := re.search(rf"\b{param}\b", message))
    ]
    return min(found)[1] if found else None


def _usage_error(parser, exc, model=DEFAULT_MODEL):
    """Exit as argparse does (code 2), naming the option the error is about."""
    message = str(exc)
    option = option_of(message, model)
    parser.error(f"argument {option}: {message}" if option else message)


def _per_layer(widths):
    """One int applies to every layer (as the estimator reads an int)."""
    return widths[0] if widths is not None and len(widths) == 1 else widths


def make_estimator(args):
    """The estimator the parsed ``args`` describe."""
    params = {param: getattr(args, param) for param in options_of(args.model)}
    for param in ("max_hidden_layer_sizes", "schedule_target"):
        if param in params:
            params[param] = _per_layer(params[param])
    return MODELS[args.model](**params)


def load_job_data(model):
    """Digits with pixels in [0, 1] (as the paper's MNIST protocol) and their labels: rows
    of 64 pixels for the MLP, images ``(n, 1, 8, 8)`` for the CNN."""
    digits = load_digits()
    if model == "cnn":
        return digits.images[:, np.newaxis] / 16.0, digits.target
    return digits.data / 16.0, digits.target


# -- the report ---------------------------------------------------------------------------


def _fmt(widths):
    return "-".join(map(str, widths))


def _plural(n, word):
    return f"{n} {word}" + ("s" if n != 1 else "")


def site_names(clf, model):
    """What the report calls each growth site: ``layer 0``, ... (MLP), or the CNN's own
    site names ``conv0``, ..., ``dense0``, ..."""
    if model == "cnn":
        return [site.name for site in clf.module_.growth_sites()]
    return [f"layer {i}" for i in range(len(clf.hidden_layer_sizes_))]


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


def growth_report(clf, initial, maximum, names=None):
    """Lines saying what grew, where (``names``: one per site, ``layer i`` by default) and
    when (``growth_history_`` records a site by its index, its ``layer``)."""
    history = clf.growth_history_
    if names is None:
        names = [f"layer {i}" for i in range(len(initial))]
    # Training batches only: under early stopping the history also records validation ones.
    n_steps = sum("train_loss" in batch for row in clf.net_.history for batch in row["batches"])
    lines = [
        f"growth events     : {len(history)} in {_plural(clf.n_iter_, 'epoch')} "
        f"({_plural(n_steps, 'optimizer step')})"
    ]
    sites = zip(names, initial, clf.hidden_layer_sizes_, maximum)
    for index, (name, width0, final, top) in enumerate(sites):
        events = history[history.layer == index]
        line = f"  {name}: {width0} -> {final}"
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


def _header(args, X, n_train, n_test, initial, maximum):
    """The report's first line: the data, the model and its growth bounds."""
    if args.model == "cnn":
        shape = "x".join(map(str, X.shape[1:]))
        data = f"{shape} images; model=cnn, architecture={args.architecture}"
    else:
        data = f"{X.shape[1]} features"
    return (
        f"digits: {n_train} train / {n_test} test samples, {data}; strategy={args.strategy}"
        + (f", schedule={args.schedule}" if args.schedule else "")
        + f", initial widths {initial}, max {maximum}"
    )


def check_plot_file(parser, path):
    """A usage error, before anything is trained, where ``--plot FILE`` cannot be written:
    no matplotlib, a format it does not write, or a folder that does not exist."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        parser.error(
            "argument --plot: needs matplotlib, which is not installed (pip install "
            "matplotlib); leave out --plot to run without the figure"
        )
    suffix = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        parser.error(
            f"argument --plot: matplotlib writes no {suffix!r} files; use a file name ending "
            f"in .png (or one of {', '.join('.' + f for f in sorted(formats))})"
        )
    folder = Path(path).parent
    if not folder.is_dir():
        parser.error(f"argument --plot: the folder {str(folder)!r} does not exist")


def save_growth_plot(clf, path, title):
    """Save ``GrowthDisplay.from_estimator(clf)`` as ``path`` (a PNG unless its extension
    names another format); returns the display. A figure of its own, without pyplot: the
    job sets no backend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5.5), layout="constrained")
    ax, loss_ax = stacked_axes(figure)
    # Log steps: the job's growth ends in its first epochs, a small part of training.
    display = GrowthDisplay.from_estimator(clf, ax=ax, loss_ax=loss_ax, name=title, log_steps=True)
    suffix = Path(path).suffix.lstrip(".").lower()
    figure.savefig(path, format=suffix or "png", dpi=100)
    return display


def main(argv=None):
    """Run the main job with command-line arguments ``argv``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    model = args.model
    clf = make_estimator(args)
    # Every invalid value is a usage error before anything is trained.
    try:
        clf._validate_params()
        initial, maximum = clf._widths()
        # Builds the trigger and initializer: the CNN refuses dense-only strategies here.
        clf._make_strategy(clf._schedule_target(initial, maximum))
    except (InvalidParameterError, ValueError) as exc:
        _usage_error(parser, exc, model)
    if args.plot is not None:
        check_plot_file(parser, args.plot)

    X, y = load_job_data(model)
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=args.test_size, random_state=args.random_state, stratify=y
        )
    except ValueError as exc:  # too few samples left on one side for 10 classes
        parser.error(f"argument --test-size: {exc}")
    print(_header(args, X, len(X_train), len(X_test), initial, maximum))
    tic = time.perf_counter()
    try:
        clf.fit(X_train, y_train)
    except ValueError as exc:
        # The data are fixed and clean: what fit rejects is an option's value or a
        # combination of them (e.g. a buffer smaller than a layer, a missing device).
        _usage_error(parser, exc, model)
    fit_time = time.perf_counter() - tic
    n_params = sum(p.numel() for p in clf.module_.parameters())
    names = site_names(clf, model)
    print()
    if model == "cnn":
        what = (
            "the stem's and each residual group's channels"
            if clf.architecture == "wrn28"
            else "convs' channels, then dense neurons"
        )
        print(f"sites             : {', '.join(names)} ({what})")
    print(f"final widths      : {clf.hidden_layer_sizes_} (started at {initial})")
    for line in growth_report(clf, initial, maximum, names):
        print(line)
    print(f"epochs trained    : {clf.n_iter_} of at most {clf.max_epochs}")
    if clf.early_stopping:
        print(
            f"best validation   : {clf.best_validation_score_:.4f} (accuracy on the held-out "
            f"{100 * clf.validation_fraction:g}% of the training data)"
        )
    print(f"parameters        : {n_params}")
    accuracy = clf.score(X_test, y_test)
    print(f"test accuracy     : {accuracy:.4f}")
    print(f"fit time          : {fit_time:.1f} s")
    if args.plot is not None:
        title = f"{model.upper()} on digits, {args.strategy}: test accuracy {accuracy:.4f}"
        save_growth_plot(clf, args.plot, title)
        print(f"growth plot       : {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
