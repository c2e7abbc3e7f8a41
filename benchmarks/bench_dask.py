"""The dask sweep of examples/dask_sweep.py on one and two local workers, and in-process.

The sweep is the example's ``GridSearchCV`` (a scaler and a ``GrowingMLPClassifier`` with
``n_threads=1``; strategy, gamma and initial widths; 3 folds of scikit-learn's digits),
``--epochs`` epochs per fit (default: the example's 30). Conditions, on the same grid and
data:

- ``sequential``: joblib's default backend in this process (``n_jobs=None``: one fit after
  the other), without dask: the reference;
- ``dask-N``: ``joblib.parallel_config(backend="dask")`` on a fresh
  ``LocalCluster(n_workers=N, threads_per_worker=1, processes=True)`` (``--workers``,
  default 1 and 2), as the example runs it (the data scattered to the workers once).

``search_s`` is the wall time of ``search.fit`` alone. Starting the cluster (``start_s``:
spawning the workers, which import torch and this package, and a tiny warm-up fit in each
of them so that one-off allocations of a process are not charged to the sweep) and closing
it (``close_s``) are timed apart. The in-process condition has its warm-up fit too.

Each condition runs ``--repeats`` times (default 3), interleaved: every repeat runs each
condition once, in an order rotated by one per repeat, so that drift of the machine hits
all conditions alike. The summary gives per condition the median ``search_s`` and its
spread (min-max), and the ratios sequential / dask-1, dask-1 / dask-2 and sequential /
dask-2 (the speed-up): the ratio of the medians and the min-max of the ratios within a
repeat. ``same_scores``: the run's ``cv_results_`` test scores equal the first run's,
exactly (the fits are deterministic on the CPU, wherever they run).

    python benchmarks/bench_dask.py               # 3 repeats, 30 fits of 30 epochs each
    python benchmarks/bench_dask.py --quick       # smoke run: the example's quick grid, once

Needs ``dask[distributed]`` and an otherwise idle machine (it measures how the sweep uses
the cores). Writes ``benchmarks/results/dask_sweep.csv`` (one row per run) and
``dask_sweep.md``; ``--out`` renames them.
"""

import importlib.util
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import (
    benchmark_parser,
    command_line,
    duration_text,
    environment,
    fill_defaults,
    markdown_table,
    warm_up,
    write_results,
)

SEQUENTIAL = "sequential"
DEFAULTS = {"repeats": 3, "epochs": None, "workers": [1, 2], "out": "dask_sweep"}
QUICK = {"repeats": 1, "out": "dask_sweep_quick"}


def _load_example():
    """``examples/dask_sweep.py`` as a module (its search, data and client)."""
    path = Path(__file__).resolve().parents[1] / "examples" / "dask_sweep.py"
    spec = importlib.util.spec_from_file_location("dask_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dask_sweep = _load_example()


def _condition(n_workers):
    return SEQUENTIAL if n_workers == 0 else f"dask-{n_workers}"


def _scores(search):
    """The test scores of every candidate on every fold, in one array."""
    results = search.cv_results_
    return np.array([results[f"split{k}_test_score"] for k in range(search.n_splits_)])


def _warm_up_worker(X, y):
    warm_up(X, y, n_threads=1)
    return torch.get_num_threads()


def run_sweep(n_workers, X, y, quick, epochs):
    """One run of the sweep: in this process (``n_workers=0``) or on a fresh local
    cluster of ``n_workers``. Returns ``(search, row)``."""
    search = dask_sweep.make_search(quick, epochs)
    row = {
        "condition": _condition(n_workers),
        "n_workers": n_workers,
        "epochs": search.estimator.named_steps["clf"].max_epochs,
    }
    if n_workers == 0:
        warm_up(X, y, n_threads=1)
        tic = time.perf_counter()
        search.fit(X, y)
        row.update(search_s=time.perf_counter() - tic, start_s=np.nan, close_s=np.nan)
        row["worker_threads"] = ""
    else:
        tic = time.perf_counter()
        with dask_sweep.dask_client(n_workers=n_workers) as client:
            client.wait_for_workers(n_workers)
            # torch's threads in each worker before the sweep (its fits use n_threads=1).
            threads = client.run(_warm_up_worker, X[:256], y[:256])
            row["start_s"] = time.perf_counter() - tic
            row["worker_threads"] = "-".join(str(t) for t in sorted(threads.values()))
            row["search_s"] = dask_sweep.run_search(search, X, y)
            tic = time.perf_counter()
        row["close_s"] = time.perf_counter() - tic
    n_candidates = len(search.cv_results_["params"])
    row.update(
        n_candidates=n_candidates,
        n_fits=n_candidates * search.n_splits_,
        best_score=search.best_score_,
        best_params=str(search.best_params_),
    )
    return search, row


def _ratio_rows(runs, pairs):
    """Per pair ``(a, b)`` of conditions: median(a) / median(b) and the min-max of a / b
    within each repeat."""
    rows = []
    times = runs.pivot(index="repeat", columns="condition", values="search_s")
    for a, b in pairs:
        per_repeat = times[a] / times[b]
        rows.append(
            {
                "ratio": f"{a} / {b}",
                "of the medians": times[a].median() / times[b].median(),
                "per repeat (min-max)": f"{per_repeat.min():.2f}-{per_repeat.max():.2f}",
            }
        )
    return pd.DataFrame(rows)


def summarize(runs, args, total_s):
    """The markdown summary of the runs."""
    conditions = list(dict.fromkeys(runs.condition))
    rows = []
    for condition in conditions:
        group = runs[runs.condition == condition]
        rows.append(
            {
                "condition": condition,
                "workers": int(group.n_workers.iloc[0]),
                "search s (median)": group.search_s.median(),
                "search s (min-max)": f"{group.search_s.min():.2f}-{group.search_s.max():.2f}",
                "start s (median)": group.start_s.median(),
                "close s (median)": group.close_s.median(),
                "fits": int(group.n_fits.iloc[0]),
                "best score": group.best_score.iloc[0],
                "same scores": bool(group.same_scores.all()),
                "runs": len(group),
            }
        )
    table = pd.DataFrame(rows)
    workers = [c for c in conditions if c != SEQUENTIAL]
    pairs = [(SEQUENTIAL, c) for c in workers] + list(pairwise(workers))
    ratios = _ratio_rows(runs, pairs)
    first = runs.iloc[0]
    deterministic = runs.same_scores.all()
    lines = [
        "# The dask sweep on local workers: wall time of GridSearchCV",
        "",
        f"`{command_line('bench_dask.py')}`",
        "",
        f"{environment()}. **Whole run: {duration_text(total_s)}**.",
        "",
        f"The sweep of `examples/dask_sweep.py`{' (quick grid)' if args.quick else ''}: "
        f"{first.n_candidates} candidates x {first.n_fits // first.n_candidates} folds = "
        f"{first.n_fits} fits of a `GrowingMLPClassifier` (`n_threads=1`), {first.epochs} epochs "
        f"each, on {args.n_samples} digits, then the refit of the best candidate. "
        "`sequential`: joblib's default backend in this process; `dask-N`: "
        '`parallel_config(backend="dask")` on a fresh `LocalCluster(n_workers=N, '
        "threads_per_worker=1, processes=True)`. `search s`: `search.fit` alone; `start s` "
        "(spawning the workers and a warm-up fit in each) and `close s` apart. "
        f"{args.repeats} repeat(s), conditions interleaved (order rotated by one per repeat).",
        "",
        "Every run gave the same cross-validation scores as the first, exactly."
        if deterministic
        else "**Some runs gave other cross-validation scores than the first** "
        "(see `same_scores` in the CSV).",
        "",
        markdown_table(table, floatfmt=".2f", index=False),
        "",
        markdown_table(ratios, floatfmt=".2f", index=False),
        "",
        "Times on a shared machine are noisy: compare the ratios within a repeat.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = benchmark_parser(__doc__, "the example's quick grid (2 candidates, 2 folds), once")
    parser.add_argument("--repeats", type=int, help="runs of each condition (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs per fit (default: the example's)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help="local cluster sizes to time, besides the in-process run (default: 1 2)",
    )
    parser.add_argument("--out", help="results file name, without extension")
    args = parser.parse_args()
    fill_defaults(args, DEFAULTS, QUICK)
    if args.repeats < 1 or (args.epochs is not None and args.epochs < 1):
        parser.error("--repeats and --epochs must be positive ints")
    if any(n < 1 for n in args.workers):
        parser.error(f"--workers must be positive ints, got {args.workers}")

    X, y = dask_sweep.load_data(args.quick)
    args.n_samples = len(X)
    conditions = [0, *dict.fromkeys(args.workers)]
    print(environment())
    rows, reference = [], None
    tic = time.perf_counter()
    for repeat in range(args.repeats):
        shift = repeat % len(conditions)
        for n_workers in conditions[shift:] + conditions[:shift]:
            search, row = run_sweep(n_workers, X, y, args.quick, args.epochs)
            scores = _scores(search)
            if reference is None:
                reference = scores
            row = {"repeat": repeat, **row, "same_scores": np.array_equal(scores, reference)}
            rows.append(row)
            print(
                f"repeat {repeat} {row['condition']:>10}: search {row['search_s']:.2f} s "
                f"(start {row['start_s']:.2f} s), best {row['best_score']:.4f}"
            )
    runs = pd.DataFrame(rows)
    total_s = time.perf_counter() - tic
    write_results(runs, summarize(runs, args, total_s), args.out)


if __name__ == "__main__":
    # The guard matters: the worker processes are spawned and import this file.
    main()
