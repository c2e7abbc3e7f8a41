"""A fit never leaves a broken or silently lost model (issue 18).

Ctrl-C (a real SIGINT, sent to a child process in the middle of a growth event) stops
training after that step, warns as ``MLPClassifier`` does and keeps a usable model; a
second Ctrl-C raises at once and a continuation then puts back the model of before the
call.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("interrupt_child.py")


@pytest.fixture(scope="module")
def interrupted():
    """The child's reports, by phase, after one SIGINT per phase (two in "twice")."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results, signals = {}, {"fit": 1, "warm_start": 1, "partial_fit": 1, "twice": 2}
    try:
        for line in proc.stdout:
            if line.startswith("MID-GROWTH"):
                phase = line.split()[1]
                for i in range(signals[phase]):
                    # Signals that arrive before Python runs the handler count once.
                    time.sleep(0.2 * i)
                    proc.send_signal(signal.SIGINT)
            elif line.startswith(("RESULT", "BEFORE")):
                tag, payload = line.split(" ", 1)
                report = json.loads(payload)
                results[report.get("phase", "before") if tag == "RESULT" else "before"] = report
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    return results


@pytest.mark.parametrize("phase", ["fit", "warm_start", "partial_fit"])
def test_ctrl_c_mid_growth_keeps_a_consistent_usable_model(interrupted, phase):
    report = interrupted[phase]
    assert report["error"] is None  # the fit returned
    assert report["warnings"].count("Training interrupted by user.") == 1
    # The growth event the signal landed in completed: widths, weights, the growth
    # history and hidden_layer_sizes_ agree.
    assert report["shapes_agree"] and report["history_widths_agree"]
    assert report["hidden_layer_sizes_"] == report["widths"]
    assert report["proba_finite"] and report["proba_sums"] < 1e-5
    assert report["loss_curve_length"] == report["n_iter"]
    assert report["handler_restored"]
    # Training stopped after the step the signal landed in, not at the epoch's end.
    assert report["steps"] == report["signalled_step"]


def test_ctrl_c_stops_before_the_planned_epochs(interrupted):
    # 3 epochs a fit; the signal arrived at the second growth event, in epoch 1.
    assert interrupted["fit"]["n_iter"] == 1
    assert interrupted["warm_start"]["n_iter"] == interrupted["fit"]["n_iter"] + 1
    assert interrupted["partial_fit"]["n_iter"] == interrupted["warm_start"]["n_iter"] + 1
    # Training (and growth) went on after each interrupted call.
    assert interrupted["partial_fit"]["n_events"] > interrupted["fit"]["n_events"]


def test_second_ctrl_c_raises_and_puts_back_the_previous_model(interrupted):
    before, after = interrupted["before"], interrupted["twice"]
    assert after["error"] == "KeyboardInterrupt"
    for key in ("n_iter", "n_events", "widths", "proba_digest", "loss_curve_length"):
        assert after[key] == before[key], key
    assert after["shapes_agree"] and after["handler_restored"]
