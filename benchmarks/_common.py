"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/bench_*.py``).

- building a named strategy, or a gradient strategy with the reference code's threshold;
- timing a fit (wall clock and process CPU time) and measuring its peak memory;
- the growing-vs-static comparison: a growing fit, then a static network of the widths it
  reached, trained the same way in the same process right after;
- writing a results CSV and its markdown summary to ``benchmarks/results/``.

**Peak memory of a fit** (``peak_mib``) is the peak resident set size (RSS) of the process
during the fit minus its RSS just before, in MiB. ``ru_maxrss`` alone cannot tell two fits
of one process apart (it is the process's high-water mark, it never goes down), so before
each fit the kernel's high-water mark is reset (``echo 5 > /proc/self/clear_refs``, Linux
>= 4.0), after a garbage collection and a ``malloc_trim(0)`` that hands the memory freed by
earlier fits back to the system (otherwise a later fit could reuse it without raising the
RSS). Peak RSS counts every tensor of the fit (parameters, gradients, optimizer state,
batches and activations, the growth engine's sample buffer, candidates and statistics, and
the training data only if the fit copies it) and nothing allocated before it. The first fit
of a process also pays for one-off allocations (thread pools, kernels): call
:func:`warm_up` first. Where the reset is unavailable (not Linux), ``peak_mib`` is NaN.

**On a CUDA device** (``--device cuda``) ``peak_mib`` is the fit's GPU memory instead: the
peak of torch's CUDA allocator (``torch.cuda.max_memory_allocated``, reset before the fit)
above what was allocated before the fit; ``process_peak_mib`` stays the process's peak
RSS. Times are taken after ``torch.cuda.synchronize()``.
"""

import argparse
import contextlib
import ctypes
import gc
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from sklearn_north import STRATEGIES as REGISTRY
from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import (
    INITIALIZERS,
    ActivationTrigger,
    GradientTrigger,
    PreActivationInit,
    SelectInit,
)
from sklearn_north.growth.initializers import INVERSE_CUTOFFS
from sklearn_north.growth.triggers import GRADIENT_NORMS, GRADIENT_REDUCTIONS, ROUNDINGS

RESULTS = Path(__file__).parent / "results"
#: The MNIST copy beside the repository (``../shared/data/mnist``), where there is one.
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

#: The orthogonality triggers' rounding the estimator uses by default.
DEFAULT_ROUNDING = GrowingMLPClassifier().trigger_rounding
#: When the estimator evaluates its triggers by default.
DEFAULT_INTERVAL = GrowingMLPClassifier().trigger_interval

#: Every strategy of the registry that can grow, in the paper's order.
DYNAMIC_STRATEGIES = [name for name in REGISTRY if name != "static"]


# --------------------------------------------------------------------------- options


def default_data_home():
    """The repository's sibling ``../shared/data/mnist`` if it exists, else None (the
    loader's default: ``$SKLEARN_NORTH_DATA/mnist`` or ``~/sklearn_north_data/mnist``)."""
    return str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None


def benchmark_parser(doc, quick):
    """An argument parser described by the script's docstring's first line, with
    ``--quick`` (``quick``: what a quick run is)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def fill_defaults(args, defaults, quick):
    """Set each option of ``args`` left at ``None`` to its default: ``quick``'s with
    ``--quick``, else ``defaults``' (explicit options always win)."""
    for key, value in {**defaults, **(quick if args.quick else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def add_gradient_options(parser):
    """``--grad-norms``, ``--grad-scale`` and ``--grad-reduction``: the threshold of the
    gradient trigger (default: ``GradientTrigger``'s); ``--rounding``: the orthogonality
    triggers' rounding (estimator ``trigger_rounding``); ``--pre-inverse``:
    ``PreActivationInit``'s ``inverse_cutoff`` for ``north-pre``."""
    grad = GradientTrigger().get_params()
    parser.add_argument(
        "--grad-norms",
        choices=list(GRADIENT_NORMS),
        default=grad["norms"],
        help="T_grad threshold from gradient norms (paper) or optimizer-step norms "
        f"(reference) (default: {grad['norms']})",
    )
    parser.add_argument("--grad-scale", type=float, default=grad["scale"])
    parser.add_argument(
        "--grad-reduction",
        choices=list(GRADIENT_REDUCTIONS),
        default=grad["reduction"],
        help=f"T_grad threshold: sum or mean over the neurons (default: {grad['reduction']})",
    )
    parser.add_argument(
        "--rounding",
        choices=list(ROUNDINGS),
        default=DEFAULT_ROUNDING,
        help="T_act/T_weight rounding: floor the threshold count (the authors' code) or the "
        f"difference (eq. 3) (default: {DEFAULT_ROUNDING})",
    )
    parser.add_argument(
        "--pre-inverse",
        type=_inverse_cutoff,
        default="pinv",
        help="north-pre's left inverse of the input (PreActivationInit's inverse_cutoff): "
        "pinv (the pseudo-inverse, paper), epsilon (only directions above the metric's "
        "epsilon) or a relative singular-value tolerance",
    )


def trigger_interval(text):
    """``--trigger-interval``: a positive int or ``"auto"``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'auto', got {text!r}")
    return value


def _inverse_cutoff(text):
    if text in INVERSE_CUTOFFS:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(INVERSE_CUTOFFS)} or a number, got {text!r}"
        ) from None


class LeastOrthogonalSelect(SelectInit):
    """Select as the reference code's dense path does it: keeps the *least* orthogonal of
    the candidates (SPEC section 4 lists this as a mistake not to copy; benchmarks use it
    only to measure what it does to the widths)."""

    _keep_most_orthogonal = False


def least_orthogonal_select(gamma=0.97, rounding=None):
    """``north-select`` with the reference code's candidate order (a custom pair)."""
    rounding = rounding or DEFAULT_ROUNDING
    return (ActivationTrigger(gamma=gamma, rounding=rounding), LeastOrthogonalSelect())


def _gradient_threshold(args):
    """``GradientTrigger`` parameters given by ``args`` that differ from its defaults."""
    given = {
        "norms": getattr(args, "grad_norms", None),
        "scale": getattr(args, "grad_scale", None),
        "reduction": getattr(args, "grad_reduction", None),
    }
    defaults = GradientTrigger().get_params()
    return {k: v for k, v in given.items() if v is not None and v != defaults[k]}


def build_strategy(name, args):
    """The named strategy, or a custom pair where ``args`` change what the estimator's
    parameters cannot: a gradient threshold other than ``GradientTrigger``'s default,
    north-pre's ``--pre-inverse``.

    Returns ``(strategy, label)``: the estimator's ``strategy`` and the name to report.
    """
    trigger, init = REGISTRY[name]
    rounding = getattr(args, "rounding", DEFAULT_ROUNDING)
    if init == "preactivation" and getattr(args, "pre_inverse", "pinv") != "pinv":
        pair = (
            ActivationTrigger(rounding=rounding),
            PreActivationInit(inverse_cutoff=args.pre_inverse),
        )
        extra = "" if rounding == DEFAULT_ROUNDING else f", {rounding}"
        return pair, f"{name} ({args.pre_inverse} inverse{extra})"
    if trigger in ("activation", "weight") and rounding != DEFAULT_ROUNDING:
        return name, f"{name} ({rounding})"  # the estimator's trigger_rounding
    threshold = _gradient_threshold(args)
    if trigger != "gradient" or not threshold:
        return name, name
    label = f"{name} ({', '.join(f'{k}={v}' for k, v in threshold.items())})"
    pair = (GradientTrigger(**threshold), INITIALIZERS[init]())
    return pair, label


def set_threads(n):
    """Use ``n`` torch threads (``None``: keep torch's default); return the count in use."""
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def add_device_option(parser):
    """``--device``: the torch device of every fit (estimator ``device``)."""
    parser.add_argument(
        "--device", default="cpu", help="torch device of the fits, e.g. cuda (default: cpu)"
    )


def is_cuda(device):
    return torch.device(device).type == "cuda"


def synchronize(device):
    """Wait for the device's queued work (a no-op on the CPU), before reading a clock."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def timed(device, f, *args):
    """Seconds ``f(*args)`` takes, the device's queued work waited for before and after."""
    synchronize(device)
    tic = time.perf_counter()
    f(*args)
    synchronize(device)
    return time.perf_counter() - tic


def environment(device="cpu"):
    """One line: torch version and threads, CPUs, Python and platform (and the GPU)."""
    gpu = f", {torch.cuda.get_device_name(device)}" if is_cuda(device) else ""
    return (
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
        f"{os.cpu_count()} CPU(s), Python {platform.python_version()}, "
        f"{platform.system()}{gpu}"
    )


# --------------------------------------------------------------------------- measuring


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss():
    """Reset the kernel's peak RSS of this process to its current RSS; False if unable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def _malloc_trim():
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Context manager: ``peak_mib``, the peak RSS above the RSS at entry (on a CUDA
    ``device``: the peak of torch's CUDA allocator above its allocation at entry), and
    ``process_peak_mib``, the process's peak RSS during the block (data and everything
    allocated before included); NaN if unknown.

    See the module's docstring for the method and what it counts.
    """

    def __init__(self, enabled=True, device="cpu"):
        self.enabled = enabled
        self.cuda = is_cuda(device)
        self.device = device
        self.peak_mib = float("nan")
        self.process_peak_mib = float("nan")

    def __enter__(self):
        self._on = False
        if self.enabled:
            gc.collect()
            _malloc_trim()
            self._on = _reset_peak_rss()
            if self._on:
                self._start = _status_kib("VmRSS")
            if self.cuda:
                synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
                self._cuda_start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc):
        if self._on:
            peak = _status_kib("VmHWM")
            self.peak_mib = max(0, peak - self._start) / 1024
            self.process_peak_mib = peak / 1024
        if self.enabled and self.cuda:
            synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._cuda_start
            self.peak_mib = max(0, peak) / 2**20
        return False


def fit_timed(clf, X, y, memory=False):
    """Fit ``clf``; return ``{"fit_s", "cpu_s", "peak_mib", "process_peak_mib"}`` (wall and
    process CPU seconds, peak memory above the start and of the whole process in MiB, NaN
    unless ``memory``)."""
    device = getattr(clf, "device", "cpu")
    with PeakMemory(memory, device) as mem:
        synchronize(device)
        cpu = time.process_time()
        tic = time.perf_counter()
        clf.fit(X, y)
        synchronize(device)
        wall = time.perf_counter() - tic
        cpu = time.process_time() - cpu
    return {
        "fit_s": wall,
        "cpu_s": cpu,
        "peak_mib": mem.peak_mib,
        "process_peak_mib": mem.process_peak_mib,
    }


def warm_up(X, y, **params):
    """A tiny static fit, so that one-off allocations of the process (thread pools,
    kernels, a CUDA context) are not charged to the first measured fit."""
    n = min(len(X), 256)
    GrowingMLPClassifier(
        strategy="static", hidden_layer_sizes=(8,), max_epochs=1, random_state=0, **params
    ).fit(X[:n], y[:n])


def growth_timings(clf):
    """Seconds the fit of ``clf`` spent in triggers and initializers."""
    timings = dict(clf.net_.callbacks_)["growth"].timings_
    return {"trigger_s": timings["trigger"], "initializer_s": timings["initializer"]}


def n_parameters(clf):
    """Trainable parameters of the fitted network."""
    return sum(p.numel() for p in clf.module_.parameters() if p.requires_grad)


def widths_text(widths):
    return "-".join(map(str, widths))


def static_twin(grow):
    """An unfitted ``static`` copy of the fitted ``grow``: its final widths from the start,
    every other parameter (optimizer, lr, batch, epochs, seed, callbacks) the same."""
    return clone(grow).set_params(
        strategy="static",
        hidden_layer_sizes=grow.hidden_layer_sizes_,
        max_hidden_layer_sizes=None,
        schedule=None,
        schedule_target=None,
    )


def grow_vs_static(grow, X, y, memory=False, repeats=1, repeat_below=30.0):
    """Fit ``grow``, then its :func:`static_twin` on the same data, right after.

    Returns ``(static, row)``: the fitted static model and a dict with ``fit_s``, ``cpu_s``,
    ``peak_mib`` of the growing fit, the same with a ``static_`` prefix for the static
    fit, ``time_ratio`` (growing / static wall time), ``memory_ratio`` (growing / static
    peak memory), and ``trigger_s``, ``initializer_s`` (the growing fit's growth timings).

    Short fits are noisy (on a shared 2-core machine the same 6 s fit varies by +-20 %,
    in phases that last minutes): when both take less than ``repeat_below`` seconds, the
    pair is fitted ``repeats`` times in all, back to back, and ``time_ratio`` is the median
    of the pairs' ratios (the two fits of a pair run under the same conditions); the
    reported times are each side's fastest (with that fit's CPU time and growth timings;
    the fits are deterministic, so the models are the same; peak memory is the first
    pair's).
    """
    unfitted = clone(grow)
    grown = {**fit_timed(grow, X, y, memory), **growth_timings(grow)}
    static = static_twin(grow)
    still = fit_timed(static, X, y, memory)
    ratios = [grown["fit_s"] / still["fit_s"]]
    if max(grown["fit_s"], still["fit_s"]) < repeat_below:
        for _ in range(repeats - 1):
            again = clone(unfitted)
            timed = {**fit_timed(again, X, y), **growth_timings(again)}
            if again.hidden_layer_sizes_ != grow.hidden_layer_sizes_:
                raise RuntimeError("A repeated fit grew differently: not deterministic.")
            if timed["fit_s"] < grown["fit_s"]:
                grown.update(
                    {k: timed[k] for k in ("fit_s", "cpu_s", "trigger_s", "initializer_s")}
                )
            twin = fit_timed(static_twin(grow), X, y)
            ratios.append(timed["fit_s"] / twin["fit_s"])
            if twin["fit_s"] < still["fit_s"]:
                still.update({k: twin[k] for k in ("fit_s", "cpu_s")})
    row = {**grown, **{f"static_{k}": v for k, v in still.items()}}
    row["time_ratio"] = float(np.median(ratios))
    row["memory_ratio"] = _ratio(grown["peak_mib"], still["peak_mib"])
    row["process_memory_ratio"] = _ratio(grown["process_peak_mib"], still["process_peak_mib"])
    return static, row


def _ratio(a, b):
    return a / b if np.isfinite(a) and np.isfinite(b) and b > 0 else float("nan")


# --------------------------------------------------------------------------- reporting


def command_line(script):
    """How the script was invoked, for the summary: ``python benchmarks/<script> ARGS``."""
    return " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])


def duration_text(seconds):
    """``1 h 02 min``, ``3 min 05 s`` or ``12.3 s``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


def markdown_table(df, floatfmt=".3f", index=True, numparse=True):
    """``df`` as a GitHub markdown table, NaN cells left empty. ``numparse=False`` prints
    strings as they are (tabulate otherwise reformats number-like strings)."""
    df = df.astype(object).where(df.notna(), None)
    return df.to_markdown(
        floatfmt=floatfmt, index=index, missingval="", disable_numparse=not numparse
    )


def write_results(df, text, out):
    """Write ``results/<out>.csv`` (the runs) and ``results/<out>.md`` (``text``); print the
    summary and return the two paths."""
    RESULTS.mkdir(exist_ok=True)
    csv, md = RESULTS / f"{out}.csv", RESULTS / f"{out}.md"
    df.to_csv(csv, index=False)
    md.write_text(text)
    print()
    print(text)
    return csv, md


def pyplot():
    """``matplotlib.pyplot`` with a file backend, or None (after a note) if not installed.

    matplotlib is not a dependency of the package: plots are optional.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed; no plots written.")
        return None
    return plt
