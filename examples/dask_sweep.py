"""Sweep the strategy, gamma and initial widths of a growing MLP on a dask cluster.

python examples/dask_sweep.py [--quick] [--workers N] [--scheduler tcp://HOST:8786]

``GridSearchCV`` hands its fits (one per candidate and fold) to joblib, and
``joblib.parallel_config(backend="dask")`` sends them to the workers of a
``dask.distributed`` cluster. Without ``--scheduler`` the script starts a ``LocalCluster``
of ``--workers`` processes (default 2) with one thread each, and closes it at the end; with
``--scheduler`` the same search runs on the workers of a running cluster (started, e.g.,
with ``dask scheduler`` and ``dask worker tcp://HOST:8786 --nthreads 1`` on each machine;
they need this package installed).

Threads: each fit sets torch's intra-op threads to 1 (the estimator's ``n_threads=1``).
A worker runs one fit per dask thread, so a machine with as many single-threaded workers
as cores is fully used; a torch fit left at its default of one thread per core would make
the workers' threads spin against each other and slow every fit. ``dask worker`` (through
its nanny) also sets ``OMP_NUM_THREADS=1`` in the worker processes, so torch starts there
with one thread anyway; ``n_threads=1`` makes the fits independent of how the workers were
started. Give each worker one thread (``threads_per_worker=1``, ``--nthreads 1``): torch's
thread setting is per process, shared by the fits of one worker's threads.

Needs ``dask[distributed]``. ``--quick``: 400 digits, 2 candidates, 2 folds, 10 epochs
(what the test suite runs).
"""

import argparse
import time
from contextlib import ExitStack, contextmanager

import joblib
import torch
from dask.distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler

from sklearn_north import GrowingMLPClassifier

#: The candidates: a static network of each initial width, and two growing strategies
#: with two trigger thresholds gamma each (gamma does nothing in a static network).
GRID = [
    {
        "clf__strategy": ["static"],
        "clf__hidden_layer_sizes": [(32, 32), (64, 64)],
    },
    {
        "clf__strategy": ["north-select", "north-weight"],
        "clf__gamma": [0.9, 0.97],
        "clf__hidden_layer_sizes": [(32, 32), (64, 64)],
    },
]
QUICK_GRID = {"clf__strategy": ["static", "north-select"], "clf__hidden_layer_sizes": [(16, 16)]}


def load_data(quick=False):
    """Digits (all 1797, or the first 400 when ``quick``)."""
    X, y = load_digits(return_X_y=True)
    return (X[:400], y[:400]) if quick else (X, y)


def make_search(quick=False, max_epochs=None):
    """The grid search: a scaler and a ``GrowingMLPClassifier`` with one torch thread.

    ``max_epochs``: epochs per fit (default 30, 10 when ``quick``).
    """
    if max_epochs is None:
        max_epochs = 10 if quick else 30
    pipe = Pipeline(
        [
            ("scale", MinMaxScaler()),
            (
                "clf",
                GrowingMLPClassifier(
                    # Below the 200 training samples of a quick fold: a layer's activation
                    # metric counts at most as many directions as samples.
                    max_hidden_layer_sizes=64 if quick else 256,
                    max_epochs=max_epochs,
                    n_threads=1,  # one torch thread per fit: see the module's docstring
                    random_state=0,
                ),
            ),
        ]
    )
    return GridSearchCV(pipe, QUICK_GRID if quick else GRID, cv=2 if quick else 3)


@contextmanager
def dask_client(scheduler=None, n_workers=2):
    """A client of the cluster at ``scheduler``, or of a new ``LocalCluster`` of
    ``n_workers`` single-threaded worker processes; both are closed on leaving."""
    with ExitStack() as stack:
        if scheduler is None:
            scheduler = stack.enter_context(
                LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,  # no web server (and no port to collide on)
                )
            )
        yield stack.enter_context(Client(scheduler))


def run_search(search, X, y):
    """Fit ``search`` through joblib's dask backend of the current client; return the
    wall time in seconds."""
    tic = time.perf_counter()
    # scatter: the data goes to every worker once, not with each fit.
    with joblib.parallel_config(backend="dask", scatter=[X, y]):
        search.fit(X, y)
    return time.perf_counter() - tic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny grid, few epochs")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument(
        "--scheduler", help="address of a running scheduler, e.g. tcp://10.0.0.5:8786"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be a positive int, got {args.workers}")

    X, y = load_data(args.quick)
    search = make_search(args.quick)
    with dask_client(args.scheduler, args.workers) as client:
        client.wait_for_workers(1)
        workers = client.scheduler_info()["workers"]
        # What torch's threads default to in each worker (OMP_NUM_THREADS there).
        worker_threads = sorted(set(client.run(torch.get_num_threads).values()))
        print(f"dask workers: {len(workers)} at {client.scheduler.address}")
        print(f"torch threads in the workers before the fits: {worker_threads}")
        seconds = run_search(search, X, y)

    n_fits = len(search.cv_results_["params"]) * search.n_splits_
    print(
        f"fits: {n_fits} ({len(search.cv_results_['params'])} candidates x "
        f"{search.n_splits_} folds) in {seconds:.1f} s wall time"
    )
    print("best params:", search.best_params_)
    print("best score:", round(search.best_score_, 4))
    print("widths grown by the best model:", search.best_estimator_[-1].hidden_layer_sizes_)
    return search


if __name__ == "__main__":
    # The guard matters: the worker processes are spawned and import this file.
    search = main()
