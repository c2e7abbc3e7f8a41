"""The main job's fit on an idle machine and beside a busy core, with torch's default threads
and with ``n_threads=1``.

The fit measured is the README's main job (``python -m sklearn_north``):
``GrowingMLPClassifier`` with its defaults and ``random_state=0`` on scikit-learn's digits
(pixels / 16, the job's stratified 75/25 split with ``random_state=0``), with
``n_iter_no_change=None`` so that every fit trains the same ``--epochs``. Conditions:

- ``a``: idle machine, ``n_threads=None`` (torch's default threads);
- ``b``: idle machine, ``n_threads=1``;
- ``c``: beside a busy process that spins on one core, ``n_threads=None``;
- ``d``: beside the busy process, ``n_threads=1``;
- ``sk-a``, ``sk-c``: for reference, scikit-learn's ``MLPClassifier`` with the widths the
  first growing fit reached (static, it does not grow), the same epochs
  (``max_iter``, ``n_iter_no_change=epochs + 1`` so it never stops early), batches of
  128, ``learning_rate_init=3e-4`` and ``alpha=0`` (the growing estimator's defaults), on
  an idle machine and beside the busy process. It uses numpy's BLAS threads.

The busy process (``--busy``: ``spin``, a pure-Python loop, or ``matmul``, a 1-thread torch
matmul loop) is started before each ``c``/``d``/``sk-c`` fit, waited for until it runs, and
killed right after the fit, also when the fit fails or is interrupted; it also ends by
itself within milliseconds if this process dies (it watches its parent). ``busy_cpu_s`` is
the CPU time it got during the fit (Linux; NaN elsewhere).

The script sets no thread count itself: ``n_threads`` is the estimator's parameter. A skorch
callback passed through the estimator's ``callbacks`` records ``torch.get_num_threads()``
at the start of training and before every batch; ``threads_min``/``threads_max`` are what
it saw, ``threads_after`` the setting after the fit. ``threads_ok``: the fit ran with the
requested count (torch's default for ``None``) and the setting was the default again
afterwards. If any fit fails that check the results are still written, with a note, and
the script exits with status 1.

Each condition is fitted ``--repeats`` times, interleaved: every repeat runs each
condition once, in an order rotated by one per repeat, so that drift of the machine hits
all conditions alike. The summary gives the median fit time and its spread (min-max) per
condition, and the ratios (c)/(a), (d)/(b), (c)/(d) (and sk-c / sk-a): the ratio of the
medians, and the min-max of the ratios of the fits of one repeat.

    python benchmarks/bench_threads.py                # 3 repeats of 100 epochs
    python benchmarks/bench_threads.py --busy matmul  # the busy core does matmuls
    python benchmarks/bench_threads.py --quick        # smoke run: 300 samples, 2 epochs

Needs an otherwise idle machine with at least 2 cores (it measures contention it creates).
Writes ``benchmarks/results/threads.csv`` (one row per fit, written as the fits complete)
and ``threads.md``; ``--out`` renames them.
"""

import contextlib
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch
from _common import (
    RESULTS,
    benchmark_parser,
    command_line,
    duration_text,
    environment,
    fill_defaults,
    fit_timed,
    markdown_table,
    warm_up,
    widths_text,
    write_results,
)
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from skorch.callbacks import Callback

from sklearn_north import GrowingMLPClassifier
from sklearn_north.__main__ import JOB_DEFAULTS, TEST_SIZE

#: Condition -> (estimator, beside the busy process, requested n_threads), in run order.
CONDITIONS = {
    "a": ("growing", False, None),
    "b": ("growing", False, 1),
    "c": ("growing", True, None),
    "d": ("growing", True, 1),
    "sk-a": ("sklearn", False, None),
    "sk-c": ("sklearn", True, None),
}
#: The ratios of the summary: (numerator, denominator, what it says).
RATIOS = [
    ("c", "a", "default threads: busy / idle"),
    ("d", "b", "1 thread: busy / idle"),
    ("c", "d", "busy: default threads / 1 thread"),
    ("b", "a", "idle: 1 thread / default threads"),
    ("sk-c", "sk-a", "MLPClassifier: busy / idle"),
]
#: ``--quick``: what a smoke run uses instead (explicit options still apply).
QUICK = dict(repeats=1, epochs=2, n_train=300)

# The busy processes' programs. Each prints "ready" once it is about to spin, and stops
# when its parent changes (this process died without killing it: it was re-parented).
SPIN = """\
import os
parent = os.getppid()
print("ready", flush=True)
while os.getppid() == parent:
    for _ in range(100_000):
        pass
"""
MATMUL = """\
import os
import torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
parent = os.getppid()
print("ready", flush=True)
while os.getppid() == parent:
    a @ a
"""
BUSY_PROGRAMS = {"spin": SPIN, "matmul": MATMUL}


class ThreadProbe(Callback):
    """Records ``torch.get_num_threads()`` when training starts and before every batch
    (``counts_``): the threads the fit actually ran with."""

    def initialize(self):
        self.counts_ = []
        return self

    def on_train_begin(self, net, **kwargs):
        self.counts_.append(torch.get_num_threads())

    def on_batch_begin(self, net, **kwargs):
        self.counts_.append(torch.get_num_threads())


def _cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far; NaN where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # Fields 14 and 15 of proc(5) (utime, stime), counted from the state (field 3).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def busy_core(kind="spin"):
    """Run a process that keeps one core busy (``BUSY_PROGRAMS[kind]``) for the block.

    Yields its ``subprocess.Popen``; it is spinning when the block starts, and killed
    (and reaped) when the block ends, however it ends.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY_PROGRAMS[kind]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(
                f"the busy process ({kind}) exited with status {proc.wait()} before it ran"
            )
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def digits_split(n_train=None):
    """The main job's data: digits / 16, its split; ``n_train`` training samples drawn
    stratified from its training part where given (``--quick``)."""
    X, y = load_digits(return_X_y=True)
    seed = JOB_DEFAULTS["random_state"]
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=TEST_SIZE, random_state=seed, stratify=y
    )
    if n_train is not None and n_train < len(X_train):
        X_train, _, y_train, _ = train_test_split(
            X_train, y_train, train_size=n_train, random_state=seed, stratify=y_train
        )
    return X_train, X_test, y_train, y_test


def growing(n_threads, epochs):
    """The main job's estimator (its defaults, seed 0, quiet), ``epochs`` epochs always."""
    return GrowingMLPClassifier(
        random_state=JOB_DEFAULTS["random_state"],
        max_epochs=epochs,
        n_iter_no_change=None,
        n_threads=n_threads,
        callbacks=[ThreadProbe()],
    )


def reference(widths, epochs):
    """scikit-learn's ``MLPClassifier`` trained as the growing fit, at fixed ``widths``."""
    return MLPClassifier(
        hidden_layer_sizes=widths,
        max_iter=epochs,
        batch_size=128,
        learning_rate_init=3e-4,
        alpha=0.0,
        n_iter_no_change=epochs + 1,
        random_state=JOB_DEFAULTS["random_state"],
    )


def blas_threads():
    """``"openblas 2"``: numpy's BLAS libraries and their threads (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    pools = {
        f"{info['internal_api']} {info['num_threads']}"
        for info in threadpool_info()
        if info["user_api"] == "blas"
    }
    return ", ".join(sorted(pools)) or "unknown"


def measure(condition, args, data, widths, default_threads):
    """One fit under ``condition``; returns its row."""
    kind, busy, n_threads = CONDITIONS[condition]
    X_train, X_test, y_train, y_test = data
    clf = growing(n_threads, args.epochs) if kind == "growing" else reference(widths, args.epochs)
    with contextlib.ExitStack() as stack:
        proc = stack.enter_context(busy_core(args.busy)) if busy else None
        busy_cpu = _cpu_seconds(proc.pid) if busy else float("nan")
        with warnings.catch_warnings():
            # MLPClassifier warns that it did not converge in max_iter epochs: by design.
            warnings.simplefilter("ignore", ConvergenceWarning)
            timing = fit_timed(clf, X_train, y_train)
        if busy:
            busy_cpu = _cpu_seconds(proc.pid) - busy_cpu
            if proc.poll() is not None:
                raise RuntimeError(f"the busy process died during the fit ({condition})")
    row = {
        "condition": condition,
        "estimator": kind,
        "busy": busy,
        "busy_kind": args.busy if busy else "",
        "n_threads": n_threads,
        "expected_threads": (n_threads or default_threads) if kind == "growing" else np.nan,
        "threads_min": np.nan,
        "threads_max": np.nan,
        "threads_after": torch.get_num_threads(),
        "threads_ok": np.nan,
        "fit_s": timing["fit_s"],
        "cpu_s": timing["cpu_s"],
        "busy_cpu_s": busy_cpu,
        "busy_pid": proc.pid if busy else np.nan,
        "n_train": len(X_train),
        "epochs": clf.n_iter_,
    }
    if kind == "growing":
        counts = next(cb for _, cb in clf.net_.callbacks_ if isinstance(cb, ThreadProbe)).counts_
        row["threads_min"], row["threads_max"] = min(counts), max(counts)
        row["threads_ok"] = (
            row["threads_min"] == row["threads_max"] == row["expected_threads"]
            and row["threads_after"] == default_threads
        )
        row["widths"] = widths_text(clf.hidden_layer_sizes_)
        row["grown"] = clf.hidden_layer_sizes_
    else:
        row["widths"] = widths_text(clf.hidden_layer_sizes)
    row["test_accuracy"] = clf.score(X_test, y_test)
    return row


def run_order(repeat):
    """The conditions of one repeat: their order rotated by ``repeat``."""
    names = list(CONDITIONS)
    shift = repeat % len(names)
    return names[shift:] + names[:shift]


def _spread(values):
    return f"{np.min(values):.2f}-{np.max(values):.2f}"


def conditions_table(df):
    """One row per condition: median fit time and its spread, threads, widths."""
    rows = []
    for condition, g in df.groupby("condition", sort=False):
        kind, busy, n_threads = CONDITIONS[condition]
        threads = "BLAS default"
        if kind == "growing":
            seen = sorted(set(g["threads_min"]) | set(g["threads_max"]))
            threads = f"{'default' if n_threads is None else n_threads} (ran: "
            threads += ", ".join(str(int(t)) for t in seen) + ")"
        rows.append(
            {
                "condition": condition,
                "estimator": "GrowingMLPClassifier" if kind == "growing" else "MLPClassifier",
                "machine": "1 busy core" if busy else "idle",
                "threads": threads,
                "fit s (median)": f"{g['fit_s'].median():.2f}",
                "fit s (min-max)": _spread(g["fit_s"]),
                "CPU s (median)": f"{g['cpu_s'].median():.2f}",
                "busy CPU / fit": (
                    f"{(g['busy_cpu_s'] / g['fit_s']).median():.2f}" if busy else ""
                ),
                "widths": ", ".join(dict.fromkeys(g["widths"])),
                "test accuracy": f"{g['test_accuracy'].median():.4f}",
                "fits": len(g),
            }
        )
    return pd.DataFrame(rows)


def ratios_table(df):
    """Each ratio of ``RATIOS`` whose conditions were measured: the ratio of the median
    fit times, and the min-max of the same ratio within each repeat."""
    per = df.pivot_table(index="repeat", columns="condition", values="fit_s")
    rows = []
    for top, bottom, meaning in RATIOS:
        if top not in per or bottom not in per:
            continue
        paired = (per[top] / per[bottom]).dropna()
        rows.append(
            {
                "ratio": f"({top}) / ({bottom})",
                "what": meaning,
                "of the medians": f"{per[top].median() / per[bottom].median():.2f}",
                "per repeat (min-max)": _spread(paired) if len(paired) else "",
            }
        )
    return pd.DataFrame(rows)


def report(df, args, machine, default_threads, elapsed):
    failed = df[df["threads_ok"].eq(False)]
    check = (
        "**Thread check failed**: "
        + ", ".join(
            f"({r.condition}) ran with {int(r.threads_min)}-{int(r.threads_max)} thread(s), "
            f"{int(r.threads_after)} after (expected {int(r.expected_threads)}, "
            f"{default_threads} after)"
            for r in failed.itertuples()
        )
        + ": the numbers below do not measure what their rows say.\n\n"
        if len(failed)
        else "Thread check passed: every growing fit ran with the requested threads "
        "(recorded by a skorch callback) and left torch's default setting behind.\n\n"
    )
    return (
        "# The main job's fit beside a busy core: torch's default threads and n_threads=1"
        + (" (quick)" if args.quick else "")
        + f"\n\n`{command_line('bench_threads.py')}`\n\n"
        f"{machine}; torch.get_num_threads() default {default_threads}, os.cpu_count() "
        f"{os.cpu_count()}, numpy BLAS threads: {blas_threads()}. "
        f"**Whole run: {duration_text(elapsed)}**.\n\n"
        "GrowingMLPClassifier with its defaults and random_state=0 on digits "
        f"({df['n_train'].iloc[0]} training samples), {args.epochs} epoch(s) "
        "(n_iter_no_change=None); MLPClassifier "
        "with the widths the first growing fit reached, the same epochs, batch 128, "
        "learning_rate_init=3e-4, alpha=0. Busy process: "
        + ("a pure-Python loop" if args.busy == "spin" else "a 1-thread torch matmul loop")
        + f" on one core. {args.repeats} repeat(s), conditions interleaved (order rotated "
        "by one per repeat). `busy CPU / fit`: the busy process's CPU seconds during the "
        "fit over the fit's wall seconds (1: it kept its core).\n\n"
        + check
        + markdown_table(conditions_table(df), index=False, numparse=False)
        + "\n\n"
        + markdown_table(ratios_table(df), index=False, numparse=False)
        + "\n"
    )


#: Thread counts: ints, empty where they do not apply (not floats such as 1.0).
COUNT_COLUMNS = ["n_threads", "expected_threads", "threads_min", "threads_max", "busy_pid"]


def runs_frame(rows):
    """The rows as a DataFrame, its thread counts and pids as nullable ints."""
    df = pd.DataFrame(rows)
    return df.astype({column: "Int64" for column in COUNT_COLUMNS})


def main():
    start = time.perf_counter()
    p = benchmark_parser(
        __doc__, "a smoke run: 300 training samples, 2 epochs, 1 repeat (explicit options apply)"
    )
    p.add_argument("--repeats", type=int, default=None, help="fits per condition (3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every fit (100)")
    p.add_argument(
        "--n-train", type=int, default=None,
        help="training samples drawn from the main job's training split (all of them)",
    )  # fmt: skip
    p.add_argument(
        "--busy", choices=list(BUSY_PROGRAMS), default="spin",
        help="what the busy process runs: a pure-Python loop or a 1-thread matmul (spin)",
    )  # fmt: skip
    p.add_argument("--out", default="threads", help="results name (threads)")
    args = p.parse_args()
    fill_defaults(args, dict(repeats=3, epochs=100, n_train=None), QUICK)
    for name in ("repeats", "epochs", "n_train"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive int, got {value}")

    # Read before any fit: what n_threads=None must leave in place.
    default_threads = torch.get_num_threads()
    machine = environment()
    data = digits_split(args.n_train)
    warm_up(data[0], data[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference((8,), 1).fit(data[0][:256], data[2][:256])  # numpy's BLAS pools too
    rows, widths = [], None
    RESULTS.mkdir(exist_ok=True)
    for repeat in range(args.repeats):
        for position, condition in enumerate(run_order(repeat)):
            row = measure(condition, args, data, widths, default_threads)
            # MLPClassifier takes the widths of the first growing fit (run first).
            widths = widths or row.pop("grown", None)
            row.pop("grown", None)
            row = {"repeat": repeat, "position": position, **row}
            row["elapsed_s"] = time.perf_counter() - start
            row["machine"] = machine
            row["default_threads"] = default_threads
            row["cpu_count"] = os.cpu_count()
            rows.append(row)
            threads = "BLAS default"
            if row["estimator"] == "growing":
                threads = f"{row['threads_min']}-{row['threads_max']} (ok: {row['threads_ok']})"
            print(
                f"repeat {repeat} {condition:5s} {row['estimator']:8s} "
                f"{'busy' if row['busy'] else 'idle'} threads {threads}: "
                f"fit {row['fit_s']:7.2f} s (CPU {row['cpu_s']:7.2f} s), widths "
                f"{row['widths']} [{duration_text(row['elapsed_s'])}]",
                flush=True,
            )
            # Written after every fit: a cut run keeps what it measured.
            runs_frame(rows).to_csv(RESULTS / f"{args.out}.csv", index=False)
    df = runs_frame(rows)
    elapsed = time.perf_counter() - start
    write_results(df, report(df, args, machine, default_threads, elapsed), args.out)
    if df["threads_ok"].eq(False).any():
        sys.exit("bench_threads: a growing fit did not run with the requested threads")


if __name__ == "__main__":
    main()
