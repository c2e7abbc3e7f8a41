"""bench_threads end to end in its quick mode (one fit per condition, 2 epochs on 300
digits), and the busy process it runs beside the fits: spinning while a block runs, killed
when the block ends however it ends, and gone when its parent dies.

Nothing here is timed: the tests check what the script writes, that its summary agrees
with its CSV, and that every growing fit ran with the threads it asked for through the
estimator's ``n_threads``. Results go to a temporary folder, never to
``benchmarks/results``.
"""

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MODULES = ("_common", "bench_threads")

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)"
)


def _import_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in MODULES:
        sys.modules.pop(name, None)
    return importlib.import_module("bench_threads")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One ``--quick`` run: ``(module, runs, summary, exit code)``; its results are written
    to a temporary folder. The exit code is None unless the script exited (it exits with a
    message when a fit did not run with the requested threads)."""
    results = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        bench = _import_bench(mp)
        import _common

        mp.setattr(_common, "RESULTS", results)
        mp.setattr(bench, "RESULTS", results)
        mp.setattr(sys, "argv", ["bench_threads.py", "--quick"])
        code = None
        try:
            bench.main()
        except SystemExit as exc:
            code = exc.code
        runs = pd.read_csv(results / "threads.csv")
        yield bench, runs, (results / "threads.md").read_text(), code
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.fixture
def bench(monkeypatch):
    yield _import_bench(monkeypatch)
    for name in MODULES:
        sys.modules.pop(name, None)


def _state(pid):
    """The process's state letter (``R`` running or runnable, ``Z`` zombie...), or None
    if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _wait_for(condition, seconds=10.0):
    """Poll ``condition()`` until it holds or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not (held := condition()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return held


def test_quick_run_fits_every_condition_once(quick):
    bench, runs, _, _ = quick
    assert runs["condition"].tolist() == list(bench.CONDITIONS)  # repeat 0: unrotated
    assert (runs["repeat"] == 0).all() and runs["position"].tolist() == list(range(6))
    expected = pd.DataFrame(
        list(bench.CONDITIONS.values()), columns=["estimator", "busy", "n_threads"]
    )
    assert runs["estimator"].tolist() == expected["estimator"].tolist()
    assert runs["busy"].tolist() == expected["busy"].tolist()
    requested = [np.nan if n is None else n for n in expected["n_threads"]]
    np.testing.assert_array_equal(runs["n_threads"], requested)
    assert (runs["n_train"] == 300).all() and (runs["epochs"] == 2).all()
    assert (runs[["fit_s", "cpu_s"]] > 0).all().all()
    # The busy process's CPU time is read during the busy fits only.
    assert (runs["busy_cpu_s"].notna() == runs["busy"]).all()
    assert (runs.loc[runs["busy"], "busy_cpu_s"] >= 0).all()
    assert (runs["busy_kind"].fillna("") == np.where(runs["busy"], "spin", "")).all()
    # MLPClassifier was trained at the widths of the first growing fit.
    sklearn = runs[runs["estimator"] == "sklearn"]
    assert (sklearn["widths"] == runs["widths"].iloc[0]).all()
    assert (runs["default_threads"] == torch.get_num_threads()).all()
    assert (runs["cpu_count"] == os.cpu_count()).all()


def test_summary_agrees_with_the_runs(quick):
    _, runs, text, _ = quick
    fit = runs.set_index("condition")["fit_s"]
    assert f"torch.get_num_threads() default {torch.get_num_threads()}" in text
    assert f"os.cpu_count() {os.cpu_count()}" in text
    # One fit per condition: each ratio of medians is the ratio of the two fits.
    for top, bottom in [("c", "a"), ("d", "b"), ("c", "d"), ("sk-c", "sk-a")]:
        ratio = fit[top] / fit[bottom]
        assert f"| ({top}) / ({bottom})" in text
        assert f"| {ratio:.2f} " in text.split(f"| ({top}) / ({bottom})")[1].splitlines()[0]
    for condition, seconds in fit.items():
        line = next(row for row in text.splitlines() if row.startswith(f"| {condition} "))
        assert f"| {seconds:.2f} " in line


def test_busy_processes_were_killed(quick):
    _, runs, _, _ = quick
    pids = runs["busy_pid"].dropna().astype(int)
    assert len(pids) == 3  # c, d and sk-c
    assert all(_state(pid) is None for pid in pids)  # killed and reaped


def test_growing_fits_ran_with_the_requested_threads(quick):
    """Fails until the estimator applies ``n_threads`` during fit."""
    _, runs, text, code = quick
    growing = runs[runs["estimator"] == "growing"]
    requested = growing["n_threads"].fillna(torch.get_num_threads())
    np.testing.assert_array_equal(growing["expected_threads"], requested)
    np.testing.assert_array_equal(growing["threads_min"], requested)
    np.testing.assert_array_equal(growing["threads_max"], requested)
    # Restored after every fit: n_threads=None fits after n_threads=1 ones ran with the default.
    assert (runs["threads_after"] == torch.get_num_threads()).all()
    assert growing["threads_ok"].astype(bool).all()
    assert "Thread check passed" in text and code is None


def test_busy_core_spins_and_is_killed_on_interrupt(bench):
    with pytest.raises(KeyboardInterrupt), bench.busy_core("spin") as proc:
        assert _wait_for(lambda: _state(proc.pid) == "R")  # spinning, not sleeping
        raise KeyboardInterrupt
    assert proc.returncode is not None and _state(proc.pid) is None


def test_busy_process_ends_when_its_parent_dies(bench):
    # A parent that starts the busy program, says its pid and dies without killing it.
    # The busy program holds none of the pipes run() reads (run would wait for it).
    parent = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.PIPE,"
        " stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)\n"
        "assert p.stdout.readline().strip() == 'ready'\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", parent, bench.SPIN],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    orphan = int(out.stdout)
    try:
        assert _wait_for(lambda: _state(orphan) in (None, "Z"))
    finally:
        if _state(orphan) not in (None, "Z"):
            os.kill(orphan, signal.SIGKILL)


def test_rejects_a_non_positive_count(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_threads.py", "--repeats", "0"])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    assert exc.value.code == 2 and "--repeats must be a positive int" in capsys.readouterr().err
