"""The dask sweep of ``examples/dask_sweep.py`` on a 2-worker ``LocalCluster``.

- its ``cv_results_`` are those of the same ``GridSearchCV`` run sequentially in this
  process (joblib's default backend): fits are deterministic on the CPU, wherever they run;
- its fits ran in the worker processes, with one torch thread (the estimator's
  ``n_threads=1``), although the workers start torch with two (``OMP_NUM_THREADS`` and
  ``MKL_NUM_THREADS`` are 2 there, where dask's nanny would set 1), and the workers'
  setting is back to two afterwards;
- the cluster and its worker processes are gone once the example's client is closed.

A skorch callback records ``torch.get_num_threads()`` and the process id at every batch of
every fit; two extra scorers bring what it saw back from the workers in ``cv_results_``.
"""

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

pytest.importorskip("dask.distributed")
import psutil  # a dependency of distributed
from distributed.core import Status

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WORKER_OMP_THREADS = 2


def _import_example():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import dask_sweep
    finally:
        sys.path.remove(str(EXAMPLES))
    return dask_sweep


dask_sweep = _import_example()


class FitRecorder(Callback):
    """Record torch's intra-op threads and the process id before every training batch."""

    def initialize(self):
        self.threads_ = []
        self.pids_ = set()
        return self

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            self.threads_.append(torch.get_num_threads())
            self.pids_.add(os.getpid())


def _recorder(pipeline):
    return dict(pipeline[-1].net_.callbacks_)["fit_recorder"]


# Scorers: what the fit's recorder saw (the greatest thread count, and the process).
def fit_threads(pipeline, X, y):
    return max(_recorder(pipeline).threads_)


def fit_pid(pipeline, X, y):
    (pid,) = _recorder(pipeline).pids_
    return pid


def make_recorded_search():
    """The example's quick search, with the recorder and the three scorers."""
    search = dask_sweep.make_search(quick=True)
    search.estimator.set_params(clf__callbacks=[("fit_recorder", FitRecorder())])
    return search.set_params(
        scoring={"accuracy": "accuracy", "threads": fit_threads, "pid": fit_pid},
        refit="accuracy",
    )


@contextmanager
def worker_threads_environ(n_threads):
    """Worker processes spawned within the block start torch with ``n_threads`` threads.

    The nanny copies its ``pre-spawn-environ`` (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``:
    torch's default threads are the smaller of the two) into this process's environment
    before spawning a worker, the variables already set there taking precedence, and
    leaves them set: the environment is put back as it was on leaving.
    """
    saved = dict(os.environ)
    os.environ.update({"OMP_NUM_THREADS": str(n_threads), "MKL_NUM_THREADS": str(n_threads)})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def sweep():
    """The quick search run through dask on 2 local workers, and what was seen of the
    cluster before, during and after it."""
    X, y = dask_sweep.load_data(quick=True)
    search = make_recorded_search()
    seen = {}
    # torch in the workers starts with 2 threads (dask's nanny would give them 1), so
    # that only the estimator's n_threads=1 can make the fits single-threaded.
    with worker_threads_environ(WORKER_OMP_THREADS):
        with dask_sweep.dask_client(n_workers=2) as client:
            seen["client"], seen["cluster"] = client, client.cluster
            seen["worker_pids"] = set(client.run(os.getpid).values())
            seen["threads_before"] = set(client.run(torch.get_num_threads).values())
            dask_sweep.run_search(search, X, y)
            seen["threads_after"] = set(client.run(torch.get_num_threads).values())
    seen["search"] = search
    return seen


@pytest.fixture(scope="module")
def sequential():
    """The same search, fitted in this process by joblib's default backend."""
    X, y = dask_sweep.load_data(quick=True)
    return make_recorded_search().fit(X, y)


def _running(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_same_scores_as_sequential(sweep, sequential):
    results, reference = sweep["search"].cv_results_, sequential.cv_results_
    assert results["params"] == reference["params"]
    n_splits = sequential.n_splits_
    for k in range(n_splits):
        key = f"split{k}_test_accuracy"
        np.testing.assert_array_equal(results[key], reference[key])
    # The scores are real: the folds' accuracies are not all the same.
    scores = np.concatenate([reference[f"split{k}_test_accuracy"] for k in range(n_splits)])
    assert len(np.unique(scores)) > 1
    assert sweep["search"].best_params_ == sequential.best_params_
    # The sequential fits ran here, with one thread (this process's pid as a score).
    pids = {int(p) for k in range(n_splits) for p in reference[f"split{k}_test_pid"]}
    assert pids == {os.getpid()}


def test_fits_ran_in_workers_with_one_torch_thread(sweep):
    results, n_splits = sweep["search"].cv_results_, sweep["search"].n_splits_
    assert sweep["threads_before"] == {WORKER_OMP_THREADS}  # the check can fail
    threads = np.array([results[f"split{k}_test_threads"] for k in range(n_splits)])
    pids = {int(p) for k in range(n_splits) for p in results[f"split{k}_test_pid"]}
    assert (threads == 1).all()
    assert pids <= sweep["worker_pids"] and os.getpid() not in pids
    # The estimator restores the worker's setting after each fit and prediction.
    assert sweep["threads_after"] == {WORKER_OMP_THREADS}


def test_cluster_closed_afterwards(sweep):
    assert sweep["client"].status == "closed"
    assert sweep["cluster"].status == Status.closed
    # The worker processes end with the cluster (allow them a moment to exit).
    deadline = time.monotonic() + 10
    alive = sweep["worker_pids"]
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.1)
    assert not alive
