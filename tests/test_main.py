"""The main job, ``python -m sklearn_north``: its report against the estimator it runs,
its usage errors and its ``--help``."""

import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import STRATEGIES, GrowingCNNClassifier, GrowingMLPClassifier
from sklearn_north import __main__ as job
from sklearn_north.__main__ import build_parser, main, make_estimator
from sklearn_north.nn.cnn import ARCHITECTURES

# Short runs: a few epochs of small networks, few candidates.
FAST = ("--n-candidates", "20")


def run(capsys, *argv):
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def fit_as_the_job(test_size=0.25, random_state=0, estimator=GrowingMLPClassifier, **params):
    """The estimator fitted as the main job fits it (digits in [0, 1], its split; the job's
    defaults: a quarter of the samples held out, seed 0) and its test accuracy. Rows of 64
    pixels for either estimator: the CNN reads them as 1x8x8 images itself, so that a run
    of the job, which passes images, agrees only if its images are these pixels."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=test_size, random_state=random_state, stratify=y
    )
    clf = estimator(random_state=random_state, **params).fit(X_train, y_train)
    return clf, clf.score(X_test, y_test)


def reported(out, label):
    match = re.search(rf"^{label}\s*: (.*)$", out, re.MULTILINE)
    assert match, f"no {label!r} line in\n{out}"
    return match.group(1)


def widths_after(history, initial, epoch):
    """Each layer's width at the end of ``epoch``: its last event's, else its initial one."""
    widths = list(initial)
    for layer in range(len(initial)):
        events = history[(history.layer == layer) & (history.epoch <= epoch)]
        if len(events):
            widths[layer] = int(events.width.iloc[-1])
    return "-".join(map(str, widths))


def check_report(out, clf, accuracy, initial, names=None):
    """Every figure of the report is the fitted estimator's; ``names``: what the report
    calls each site (``layer i`` by default)."""
    if names is None:
        names = [f"layer {i}" for i in range(len(initial))]
    history = clf.growth_history_
    assert len(history) > 0, "the run should grow for the comparison to mean something"
    assert reported(out, "final widths").startswith(f"{clf.hidden_layer_sizes_} ")
    assert reported(out, "test accuracy") == f"{accuracy:.4f}"
    n_params = sum(p.numel() for p in clf.module_.parameters())
    assert reported(out, "parameters") == str(n_params)
    epochs = f"{clf.n_iter_} epoch" + ("s" if clf.n_iter_ != 1 else "")
    assert reported(out, "growth events").startswith(f"{len(history)} in {epochs} (")
    # One line per site: initial -> final, how many events, the first and the last.
    for layer, (name, width0) in enumerate(zip(names, initial, strict=True)):
        events = history[history.layer == layer]
        final = clf.hidden_layer_sizes_[layer]
        line = re.search(rf"^  {name}: {width0} -> {final}\b.*$", out, re.MULTILINE)
        assert line, f"no line for {name} in\n{out}"
        if events.empty:
            assert line.group(0).endswith(", no growth event")
            continue
        first, last = events.iloc[0], events.iloc[-1]
        assert (
            f"{len(events)} growth event{'s' if len(events) > 1 else ''}, "
            f"first at epoch {first.epoch:.0f} (step {first.step:.0f}), "
            f"last at epoch {last.epoch:.0f} (step {last.step:.0f})"
        ) in line.group(0)
    # The timeline: widths after some epochs, from epoch 1 to the last one.
    timeline = dict(item.split(": ") for item in reported(out, "widths by epoch").split(", "))
    epochs = sorted(map(int, timeline))
    assert epochs[0] == 1 and epochs[-1] == clf.n_iter_
    for epoch in epochs:
        assert timeline[str(epoch)] == widths_after(history, initial, epoch), epoch
    return history


def test_one_layer_run_reports_what_the_estimator_fits(capsys):
    out = run(capsys, "--hidden", "16", "--max-hidden", "96", "--epochs", "2", "--quiet",
              "--test-size", "0.3", *FAST)  # fmt: skip
    clf, accuracy = fit_as_the_job(
        test_size=0.3,
        hidden_layer_sizes=(16,),
        max_hidden_layer_sizes=96,
        max_epochs=2,
        n_candidates=20,
    )
    assert len(clf.hidden_layer_sizes_) == 1
    check_report(out, clf, accuracy, initial=(16,))
    assert out.startswith("digits: 1257 train / 540 test samples")
    assert "max (96,)" in out.splitlines()[0]
    assert "train_loss" not in out  # --quiet: no per-epoch table


def test_three_layer_run_reports_what_the_estimator_fits(capsys):
    # One --max-hidden int for every layer; a trigger interval other than the default.
    out = run(capsys, "--hidden", "8,8,8", "--max-hidden", "48", "--epochs", "3",
              "--trigger-interval", "2", "--seed", "1", *FAST)  # fmt: skip
    clf, accuracy = fit_as_the_job(
        random_state=1,
        hidden_layer_sizes=(8, 8, 8),
        max_hidden_layer_sizes=48,
        max_epochs=3,
        trigger_interval=2,
        n_candidates=20,
    )
    history = check_report(out, clf, accuracy, initial=(8, 8, 8))
    assert "max (48, 48, 48)" in out.splitlines()[0]
    assert set(history.step % 2) == {0}
    # The per-epoch table: one row per epoch, whose widths the growth history explains.
    for epoch in range(1, 4):
        row = re.search(rf"^\s+{epoch}\s.*\s(\d+-\d+-\d+)\s", out, re.MULTILINE)
        assert row, f"no table row for epoch {epoch} in\n{out}"
        assert row.group(1) == widths_after(history, (8, 8, 8), epoch)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "static"])
def test_every_strategy_grows_from_the_jobs_defaults(capsys, strategy):
    # The defaults (widths, trigger arithmetic, gradient threshold) are the paper's
    # published behaviour: every dynamic strategy grows on digits from 64-64, within the
    # first epoch (11 steps), where eq. 3 and eq. 6 as printed grow none of gradmax,
    # firefly, nest and north-weight.
    out = run(capsys, "--strategy", strategy, "--epochs", "1", "--quiet", *FAST)
    final = reported(out, "final widths")
    widths = tuple(int(w) for w in re.findall(r"\d+", final.split(" (")[0]))
    assert len(widths) == 2 and max(widths) > 64, out


def test_wide_layers_need_no_max_hidden_and_static_says_it_did_not_grow(capsys):
    # Wider than any fixed cap the job once had: the maximum is the estimator's default.
    out = run(capsys, "--hidden", "600,600", "--strategy", "static", "--epochs", "1", "--quiet")
    assert reported(out, "final widths").startswith("(600, 600) ")
    assert "  layer 0: 600 -> 600, no growth event" in out
    assert "  layer 1: 600 -> 600, no growth event" in out
    assert reported(out, "growth events").startswith("0 in 1 epoch ")


def test_a_schedule_reaches_its_target_and_the_timeline_goes_on_to_the_end(capsys):
    out = run(capsys, "--epochs", "4", "--hidden", "8,8", "--max-hidden", "32",
              "--schedule", "linear", "--schedule-target", "12,16", "--schedule-end", "0.5",
              "--quiet")  # fmt: skip
    assert "final widths      : (12, 16)" in out
    assert "schedule=linear" in out.splitlines()[0]
    clf, accuracy = fit_as_the_job(
        hidden_layer_sizes=(8, 8),
        max_hidden_layer_sizes=32,
        schedule="linear",
        schedule_target=(12, 16),
        schedule_end=0.5,
        max_epochs=4,
    )
    history = check_report(out, clf, accuracy, initial=(8, 8))
    assert history.epoch.max() < 4  # growth ended before training did


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--gamma", "2"], "--gamma"),
        (["--gamma", "0"], "--gamma"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "1.5"], "--epochs"),
        (["--test-size", "1.5"], "--test-size"),
        (["--test-size", "0"], "--test-size"),
        (["--test-size", "0.001"], "--test-size"),  # fewer test samples than classes
        (["--seed", "-1"], "--seed"),
        (["--hidden", "0,4"], "--hidden"),
        (["--hidden", "a,b"], "--hidden"),
        (["--hidden", "64,64", "--max-hidden", "32"], "--max-hidden"),
        (["--hidden", "64,64", "--max-hidden", "96,32"], "--max-hidden"),
        (["--hidden", "8,8", "--max-hidden", "16,16,16"], "--max-hidden"),
        (["--epsilon", "-1"], "--epsilon"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "often"], "--batch-size"),
        (["--trigger-interval", "0"], "--trigger-interval"),
        (["--trigger-interval", "often"], "--trigger-interval"),
        (["--strategy", "north-east"], "--strategy"),
        (["--trigger-rounding", "up"], "--trigger-rounding"),
        (["--lr", "0"], "--lr"),
        (["--n-candidates", "0"], "--n-candidates"),
        (["--schedule", "linear", "--schedule-target", "8"], "--schedule-target"),
        (["--alpha", "-0.1"], "--alpha"),
        (["--alpha", "much"], "--alpha"),
        (["--tol", "-1e-4"], "--tol"),
        (["--n-iter-no-change", "0"], "--n-iter-no-change"),
        (["--n-iter-no-change", "never"], "--n-iter-no-change"),
        (["--n-iter-no-change", "2.5"], "--n-iter-no-change"),
        (["--validation-fraction", "1"], "--validation-fraction"),
        (["--validation-fraction", "0", "--early-stopping"], "--validation-fraction"),
        (["--threads", "0"], "--threads"),
        (["--threads", "two"], "--threads"),
        # Rejected by fit itself, before training: still a usage error.
        (["--buffer-size", "100"], "--buffer-size"),
        (["--strategy", "static", "--schedule", "linear"], "--schedule"),
    ],
)
def test_invalid_values_are_usage_errors_naming_the_option(capsys, argv, option):
    with pytest.raises(SystemExit) as exit_:
        main(["--epochs", "1", *argv])  # argv's own --epochs comes last, and wins
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert f"error: argument {option}: " in captured.err
    assert "final widths" not in captured.out


def test_mlp_options_set_the_estimators_parameters():
    # MLPClassifier's parameters (issue 18): each option sets its own, as typed.
    argv = ["--alpha", "0.01", "--tol", "0.001", "--n-iter-no-change", "None", "--early-stopping",
            "--validation-fraction", "0.2", "--threads", "1", "--no-shuffle",
            "--batch-size", "auto"]  # fmt: skip
    expected = {
        "alpha": 0.01,
        "tol": 0.001,
        "n_iter_no_change": None,
        "early_stopping": True,
        "validation_fraction": 0.2,
        "n_threads": 1,
        "shuffle": False,
        "batch_size": "auto",
    }
    clf = make_estimator(build_parser().parse_args(argv))
    clf._validate_params()  # every value is one the estimator takes
    assert {name: clf.get_params()[name] for name in expected} == expected
    # Unset, they are the estimator's defaults (n_iter_no_change 10, not the paper's None).
    defaults = GrowingMLPClassifier().get_params()
    unset = make_estimator(build_parser().parse_args([])).get_params()
    assert {name: unset[name] for name in expected} == {name: defaults[name] for name in expected}


def test_early_stopping_reports_the_best_validation_score(capsys):
    out = run(capsys, "--hidden", "16", "--max-hidden", "96", "--epochs", "3", "--quiet",
              "--early-stopping", "--validation-fraction", "0.2", "--n-iter-no-change", "1",
              *FAST)  # fmt: skip
    clf, accuracy = fit_as_the_job(
        hidden_layer_sizes=(16,),
        max_hidden_layer_sizes=96,
        max_epochs=3,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=1,
        n_candidates=20,
    )
    check_report(out, clf, accuracy, initial=(16,))
    assert reported(out, "epochs trained") == f"{clf.n_iter_} of at most 3"
    assert reported(out, "best validation") == (
        f"{clf.best_validation_score_:.4f} (accuracy on the held-out 20% of the training data)"
    )
    # The optimizer steps are the training batches': ceil(training samples / 128) per epoch.
    n_train = clf.t_ // clf.n_iter_
    n_steps = clf.n_iter_ * -(-n_train // 128)
    assert reported(out, "growth events").endswith(f"({n_steps} optimizer steps)")


def test_a_usage_error_from_the_command_line_has_no_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "sklearn_north", "--gamma", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "error: argument --gamma: " in done.stderr
    assert "Traceback" not in done.stderr


def _help_groups():
    """``{group title: {option: its --help text, whitespace normalised}}``."""
    text = build_parser().format_help()
    groups = {}
    # A group: its title line, an optional description, then one entry per option.
    for block in re.split(r"\n\n(?=\S)", text[text.index("options:") :]):
        title, _, body = block.partition(":\n")
        entries = groups.setdefault(title, {})
        for entry in re.split(r"\n(?=  -)", body):
            if entry.startswith("  -"):
                flag = entry.split()[0].rstrip(",")
                entries[flag] = " ".join(entry.split())
    return groups


def _help_entries():
    """``--help``'s text per option, whatever its group."""
    return {flag: text for group in _help_groups().values() for flag, text in group.items()}


def _as_typed(value):
    return ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)


def test_help_shows_the_estimators_defaults():
    mlp = GrowingMLPClassifier().get_params()
    cnn = GrowingCNNClassifier().get_params()
    entries = _help_entries()
    shared = {
        "--strategy": "strategy",
        "--schedule-end": "schedule_end",
        "--trigger-rounding": "trigger_rounding",
        "--epsilon": "epsilon",
        "--n-candidates": "n_candidates",
        "--trigger-interval": "trigger_interval",
        "--activation-source": "activation_source",
        "--lr": "lr",
        "--batch-size": "batch_size",
        "--epochs": "max_epochs",
        "--alpha": "alpha",
        "--tol": "tol",
        "--n-iter-no-change": "n_iter_no_change",
        "--validation-fraction": "validation_fraction",
        "--device": "device",
    }
    assert any(mlp[p] != cnn[p] for p in shared.values()), "no differing default to show"
    for flag, param in shared.items():
        if mlp[param] == cnn[param]:
            assert f"(default: {_as_typed(mlp[param])})" in entries[flag], flag
        else:  # each model's own
            mine = f"(default: mlp: {_as_typed(mlp[param])}; cnn: {_as_typed(cnn[param])})"
            assert mine in entries[flag], flag
    for flag, param in {"--hidden": "hidden_layer_sizes", "--activation": "activation"}.items():
        assert f"(default: {_as_typed(mlp[param])})" in entries[flag], flag
    assert f"(default: {cnn['architecture']})" in entries["--architecture"]
    # The CNN's width multipliers, and the widths they give the default architecture.
    spec = ARCHITECTURES[cnn["architecture"]]
    for flag, param in {"--widths": "widths", "--max-widths": "max_widths"}.items():
        multiplier = 2.0 if cnn[param] == "auto" else cnn[param]  # the paper's cap for small
        widths = ",".join(str(round(multiplier * w)) for w in (*spec["conv"], *spec["dense"]))
        assert f"(default: {cnn[param]}, {widths} for {cnn['architecture']})" in entries[flag]
    assert cnn["batch_norm"] == "auto" and "(default: auto: none" in entries["--batch-norm"]
    # None defaults say what None means (for each model where the meanings differ).
    for flag, param in {
        "--max-hidden": "max_hidden_layer_sizes",
        "--schedule": "schedule",
        "--schedule-target": "schedule_target",
        "--gamma": "gamma",
        "--buffer-size": "buffer_size",
        "--threads": "n_threads",
    }.items():
        assert mlp[param] is None
        assert "(default: None, " in entries[flag], flag
    assert "10 x initial" in entries["--max-hidden"]
    assert "mlp: 2 x largest max width; cnn: one mini-batch" in entries["--buffer-size"]
    assert "cnn: activation 0.9 (running_max baseline)" in entries["--gamma"]
    assert "(default: 0)" in entries["--seed"]  # the job's own: a reproducible report
    assert "(default: 0.25)" in entries["--test-size"]
    assert "(default: mlp)" in entries["--model"]
    # --strategy names the one strategy the CNN refuses, and no other.
    refused = entries["--strategy"].split("--model cnn refuses")[1].split("(default")[0]
    assert "north-pre" in refused
    for strategy in ("gradmax", "firefly", "nest", "north-select"):
        assert strategy not in refused


def test_help_groups_each_models_own_options():
    groups = _help_groups()
    assert set(groups["MLP options (--model mlp only)"]) == {
        "--hidden",
        "--max-hidden",
        "--activation",
    }
    assert set(groups["CNN options (--model cnn only)"]) == {
        "--architecture",
        "--widths",
        "--max-widths",
        "--batch-norm",
    }
    assert "--epochs" in groups["options of both models"]
    assert "--model" in groups["options"]


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--max-hidden" in out
    assert "--max-widths" in out


# -- the CNN (issue 19) -------------------------------------------------------------------

#: What the CNN report calls its sites: the network's own names, convs first.
CNN_SITES = ["conv0", "conv1", "dense0"]


def test_cnn_run_reports_what_the_estimator_fits(capsys):
    # Per-site widths (convs first) and one max for every site; the per-epoch table shown.
    out = run(capsys, "--model", "cnn", "--widths", "4,8,16", "--max-widths", "32",
              "--epochs", "2", *FAST)  # fmt: skip
    clf, accuracy = fit_as_the_job(
        estimator=GrowingCNNClassifier,
        widths=(4, 8, 16),
        max_widths=32,
        max_epochs=2,
        n_candidates=20,
    )
    assert clf.input_shape_ == (1, 8, 8)
    assert [site.name for site in clf.module_.growth_sites()] == CNN_SITES
    history = check_report(out, clf, accuracy, initial=(4, 8, 16), names=CNN_SITES)
    assert reported(out, "final widths").startswith(f"{clf.widths_} ")
    assert reported(out, "sites").startswith(", ".join(CNN_SITES) + " ")
    assert out.startswith("digits: 1347 train / 450 test samples, 1x8x8 images; model=cnn")
    assert "initial widths (4, 8, 16), max (32, 32, 32)" in out.splitlines()[0]
    for epoch in (1, 2):
        row = re.search(rf"^\s+{epoch}\s.*\s(\d+-\d+-\d+)\s", out, re.MULTILINE)
        assert row, f"no table row for epoch {epoch} in\n{out}"
        assert row.group(1) == widths_after(history, (4, 8, 16), epoch)


def test_cnn_defaults_and_multipliers_run_as_the_estimator(capsys):
    # The default widths (a multiplier) with BatchNorm; --threads, --seed as for the MLP.
    out = run(capsys, "--model", "cnn", "--batch-norm", "--epochs", "1", "--seed", "3",
              "--quiet", *FAST)  # fmt: skip
    clf, accuracy = fit_as_the_job(
        estimator=GrowingCNNClassifier,
        random_state=3,
        batch_norm=True,
        max_epochs=1,
        n_candidates=20,
    )
    assert len(clf.module_.norms) == 2
    initial = tuple(round(0.25 * w) for w in (32, 64, 128))  # the "small" standard widths
    check_report(out, clf, accuracy, initial=initial, names=CNN_SITES)
    assert reported(out, "epochs trained") == "1 of at most 1"


def test_cnn_options_set_the_estimators_parameters():
    parse = build_parser().parse_args
    argv = ["--model", "cnn", "--architecture", "vgg11", "--widths", "0.5", "--max-widths",
            "1.5", "--batch-norm", "--n-candidates", "7", "--epochs", "3"]  # fmt: skip
    clf = make_estimator(parse(argv))
    assert isinstance(clf, GrowingCNNClassifier)
    clf._validate_params()
    expected = {"architecture": "vgg11", "widths": 0.5, "max_widths": 1.5, "batch_norm": True,
                "n_candidates": 7, "max_epochs": 3}  # fmt: skip
    assert {name: clf.get_params()[name] for name in expected} == expected
    spec = ARCHITECTURES["vgg11"]
    standard = (*spec["conv"], *spec["dense"])
    assert clf._widths() == (
        tuple(round(0.5 * w) for w in standard),
        tuple(round(1.5 * w) for w in standard),
    )
    # --max-widths as the estimator reads max_widths: an int for every site, a list, None.
    for text, value in [("96", 96), ("40,80,160", (40, 80, 160)), ("none", None)]:
        args = parse(["--model", "cnn", "--max-widths", text, "--widths", "5,10,20"])
        clf = make_estimator(args)
        assert clf.max_widths == value and clf.widths == (5, 10, 20)
        clf._validate_params()
    assert clf._widths()[1] == (40, 80, 160)  # None: 8 x the initial widths
    # Unset, every option is the CNN's own default (not the MLP's), but the job's seed and
    # table; the parameters the job has no option for are the estimator's.
    defaults = GrowingCNNClassifier().get_params()
    unset = make_estimator(parse(["--model", "cnn"])).get_params()
    differ = {name for name in defaults if unset[name] != defaults[name]}
    assert differ == {"random_state", "verbose"}
    assert (unset["random_state"], unset["verbose"]) == (0, 1)


@pytest.mark.parametrize(
    ("argv", "option", "other"),
    [
        (["--model", "cnn", "--hidden", "8"], "--hidden", "mlp"),
        (["--model", "cnn", "--max-hidden", "8"], "--max-hidden", "mlp"),
        (["--model", "cnn", "--activation", "tanh"], "--activation", "mlp"),
        (["--widths", "0.5"], "--widths", "cnn"),
        (["--model", "mlp", "--max-widths", "2.0"], "--max-widths", "cnn"),
        (["--architecture", "small"], "--architecture", "cnn"),
        (["--batch-norm"], "--batch-norm", "cnn"),
    ],
)
def test_the_other_models_options_are_usage_errors(capsys, argv, option, other):
    with pytest.raises(SystemExit) as exit_:
        main(["--epochs", "1", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: only with --model {other}" in err


@pytest.mark.parametrize(
    ("argv", "option", "says"),
    [
        # north-pre's initializer is dense-only: refused before training.
        (["--strategy", "north-pre"], "--strategy", "dense layers only"),
        (["--widths", "8,16"], "--widths", "2 entries"),
        (["--widths", "0"], "--widths", "'widths'"),
        (["--widths", "wide"], "--widths", "multiplier"),
        (["--widths", "8,0,32"], "--widths", "positive"),
        (["--max-widths", "16"], "--max-widths", "below its initial width"),
        (["--max-widths", "often"], "--max-widths", "expected"),
        (["--architecture", "resnet"], "--architecture", "invalid choice"),
        (["--gamma", "2"], "--gamma", "'gamma'"),
        (["--schedule", "linear", "--schedule-target", "12"], "--schedule-target", "16"),
    ],
)
def test_invalid_cnn_values_are_usage_errors_naming_the_option(capsys, argv, option, says):
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "cnn", "--epochs", "1", *argv])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert f"error: argument {option}: " in captured.err
    assert says in captured.err.split(f"argument {option}: ")[1]
    assert "final widths" not in captured.out
    assert "digits:" not in captured.out  # nothing trained


# -- the growth plot, --plot FILE (issue 21) ----------------------------------------------

#: Each model's short run, as options and as the estimator's parameters.
PLOT_RUNS = {
    "mlp": (
        ["--hidden", "16", "--max-hidden", "96", "--epochs", "2"],
        {"hidden_layer_sizes": (16,), "max_hidden_layer_sizes": 96, "max_epochs": 2},
        (16,),
        (1,),
    ),
    "cnn": (
        ["--model", "cnn", "--widths", "4,8,16", "--max-widths", "32", "--epochs", "2"],
        {"estimator": GrowingCNNClassifier, "widths": (4, 8, 16), "max_widths": 32,
         "max_epochs": 2},
        (4, 8, 16),
        (32, 64, 128),  # relative to the "small" architecture's standard widths
    ),
}  # fmt: skip


def widths_at_steps(history, initial, n_steps):
    """The steps where a width changes (0, each event's, the last of ``n_steps``) and
    each site's width from each of them on."""
    steps = np.unique([0, *history.step, n_steps])
    widths = [
        [w0 + history.n_added[(history.layer == i) & (history.step <= s)].sum() for s in steps]
        for i, w0 in enumerate(initial)
    ]
    return steps, widths


@pytest.mark.parametrize("model", list(PLOT_RUNS))
def test_plot_saves_the_growth_display_of_the_fitted_model(capsys, monkeypatch, tmp_path, model):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    drawn = []

    def spy(clf, path, title):
        display = save_growth_plot(clf, path, title)
        drawn.append((title, display))
        return display

    save_growth_plot = job.save_growth_plot
    monkeypatch.setattr(job, "save_growth_plot", spy)
    argv, params, initial, scale = PLOT_RUNS[model]
    # Without an extension the file is a PNG all the same, under the name given.
    path = tmp_path / ("growth" if model == "mlp" else "growth.png")
    out = run(capsys, *argv, "--quiet", "--plot", str(path), *FAST)
    assert reported(out, "growth plot") == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ((title, display),) = drawn
    clf, accuracy = fit_as_the_job(n_candidates=20, **params)
    assert title == f"{model.upper()} on digits, north-select: test accuracy {accuracy:.4f}"
    # What it drew is the growth of the job's model (the same as the estimator's fit):
    # each site's widths, relative for the CNN, its events, the loss per epoch.
    history = clf.growth_history_
    assert len(history) > 0
    n_steps = 2 * -(-1347 // 128)  # 2 epochs of the 1347 training digits, 128 a batch
    steps, widths = widths_at_steps(history, initial, n_steps)
    for line, site_widths, standard in zip(display.lines_, widths, scale, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), steps)
        np.testing.assert_allclose(line.get_ydata(), np.divide(site_widths, standard))
    assert sum(len(m.get_xdata()) for m in display.markers_) == len(history)
    np.testing.assert_array_equal(display.loss_line_.get_ydata(), clf.loss_curve_)
    assert display.relative_ is (model == "cnn")
    assert display.ax_.get_xscale() == "symlog"
    # The file is that figure: the estimator's own fit gives the same image.
    image = imread(path, format="png")
    assert image.shape == (550, 700, 4)
    save_growth_plot(clf, tmp_path / "reference.png", title)
    np.testing.assert_array_equal(imread(tmp_path / "reference.png"), image)


def test_plot_without_matplotlib_is_a_usage_error(capsys, monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.backend_bases", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SystemExit) as exit_:
        main(["--epochs", "1", "--plot", str(tmp_path / "growth.png")])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "error: argument --plot: needs matplotlib, which is not installed" in captured.err
    assert "digits:" not in captured.out  # nothing trained
    assert not (tmp_path / "growth.png").exists()


@pytest.mark.parametrize(
    ("model", "name", "says"),
    [
        ("mlp", "growth.xyz", "matplotlib writes no 'xyz' files; use a file name ending in .png"),
        ("cnn", "missing/growth.png", "the folder"),
    ],
)
def test_a_plot_file_that_cannot_be_written_is_a_usage_error(capsys, tmp_path, model, name,
                                                             says):  # fmt: skip
    pytest.importorskip("matplotlib")
    with pytest.raises(SystemExit) as exit_:
        main(["--model", model, "--epochs", "1", "--plot", str(tmp_path / name)])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert f"error: argument --plot: {says}" in captured.err
    assert "digits:" not in captured.out


def test_help_names_the_plot_option():
    entry = _help_entries()["--plot"]
    assert "needs matplotlib" in entry and "(default: no figure)" in entry
    assert "--plot" in _help_groups()["options"]
