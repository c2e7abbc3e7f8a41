"""The main job, ``python -m sklearn_north``."""

import re

import pytest

from sklearn_north.__main__ import main


def run(capsys, *argv):
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_main_job_reports_widths_parameters_and_accuracy(capsys):
    out = run(capsys, "--epochs", "2", "--hidden", "48,48", "--max-hidden", "96",
              "--n-candidates", "20")  # fmt: skip
    widths = re.search(r"final widths\s+: \((\d+), (\d+)\)", out)
    assert widths, out
    assert all(48 <= int(w) <= 96 for w in widths.groups())
    assert re.search(r"parameters\s+: \d+", out)
    accuracy = float(re.search(r"test accuracy\s+: ([0-9.]+)", out).group(1))
    assert 0.0 <= accuracy <= 1.0
    # Per-epoch progress: a table row per epoch with the widths column.
    assert "widths" in out and re.search(r"^\s+2\s", out, re.MULTILINE)


def test_main_job_with_a_schedule_reaches_its_target(capsys):
    out = run(capsys, "--epochs", "2", "--hidden", "8,8", "--max-hidden", "32",
              "--schedule", "linear", "--schedule-target", "12,16", "--quiet")  # fmt: skip
    assert "final widths      : (12, 16)" in out
    assert "epoch" not in out  # --quiet: no per-epoch table


def test_main_job_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        main(["--strategy", "north-east"])
    with pytest.raises(SystemExit):
        main(["--hidden", "a,b"])
    assert "expected comma-separated ints" in capsys.readouterr().err
