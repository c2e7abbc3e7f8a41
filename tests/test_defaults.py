"""The defaults, held against each other by introspection.

One place where the estimator's signature, its docstring, the strategy registry, the main
job's command line and README.md's tables must agree; whatever drifts fails here.
"""

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils._param_validation import StrOptions

import sklearn_north
from sklearn_north import GrowingMLPClassifier
from sklearn_north.__main__ import build_parser
from sklearn_north._base import _CONTINUABLE_PARAMS
from sklearn_north.growth import STRATEGIES, TRIGGERS, make_strategy

README = Path(__file__).resolve().parents[1] / "README.md"

#: The estimator's parameters and their defaults, as its signature states them.
SIGNATURE = {
    name: p.default for name, p in inspect.signature(GrowingMLPClassifier).parameters.items()
}

#: Parameters README.md's "Main parameters" table may leave out, and why.
NOT_IN_README = {}

#: README's "as in scikit-learn" defaults: scikit-learn's conventions.
SKLEARN_CONVENTIONS = {"warm_start": False, "random_state": None, "verbose": 0}

#: Parameters the main job has no option for, and why.
NOT_ON_COMMAND_LINE = {
    "optimizer_params": "a dict of keyword arguments",
    "callbacks": "skorch callback objects",
    "warm_start": "the job fits once",
}

#: Options whose default is the main job's own, not the estimator's, and why.
JOB_DEFAULTS = {
    "random_state": 0,  # a reproducible report
    "verbose": 1,  # the per-epoch table unless --quiet
}

#: Estimator parameter -> the trigger parameter it sets for a named strategy.
TRIGGER_PARAMS = {"gamma": "gamma", "epsilon": "epsilon", "trigger_rounding": "rounding"}


def readme_section(title):
    """The text of README.md's section ``## title``, up to the next section."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def table_rows(section):
    """The cells of the first markdown table of ``section``, header and rule left out."""
    table = re.search(r"^\|.*?(?=^[^|]|\Z)", section, re.M | re.S)
    assert table, "no markdown table"
    rows = table.group(0).strip().splitlines()[2:]
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]


def backquoted(cell):
    return re.findall(r"`([^`]*)`", cell)


def readme_parameters():
    """``[(names, default cell)]`` of the "Main parameters" table."""
    return [(backquoted(row[0]), row[1]) for row in table_rows(readme_section("Main parameters"))]


def readme_default_cell(name):
    """The default cell of ``name``'s row of the "Main parameters" table."""
    (cell,) = [cell for names, cell in readme_parameters() if name in names]
    return cell


def same(a, b):
    """Equal values, tuples and lists alike (``(64, 64)`` is ``[64, 64]``)."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def docstring_parameters():
    """``{name: text}`` of the numpydoc "Parameters" section of the estimator."""
    doc = inspect.cleandoc(GrowingMLPClassifier.__doc__)
    section = doc.split("Parameters\n----------\n", 1)[1].split("\nAttributes\n", 1)[0]
    entries = re.split(r"\n(?=\w)", section.strip())
    return {entry.split(" : ")[0]: entry for entry in entries}


def accepted_strings(param):
    """The strings the estimator's parameter constraints accept for ``param``."""
    accepted = set()
    for constraint in GrowingMLPClassifier._parameter_constraints[param]:
        if isinstance(constraint, StrOptions):
            accepted |= constraint.options
    return accepted


def documented_gammas(text):
    """``{trigger name: gamma}`` from text such as "0.97 activations, 0.99 weights" or
    "0.97 for activation triggers, 0.99 for the weight trigger"."""
    pairs = re.findall(r"(\d+\.\d+) (?:for (?:the )?)?(activation|weight)", text)
    return {kind: float(gamma) for gamma, kind in pairs}


# -- README.md ----------------------------------------------------------------------------


def test_readme_table_names_every_parameter_and_only_parameters():
    named = [name for names, _ in readme_parameters() for name in names]
    unknown = sorted(set(named) - set(SIGNATURE))
    missing = sorted(set(SIGNATURE) - set(named) - set(NOT_IN_README))
    assert not unknown and not missing, (
        f"README.md's table names non-parameters {unknown} and lacks {missing}"
    )
    assert len(named) == len(set(named)), "a parameter has two rows"


def test_readme_table_defaults_are_the_signatures():
    wrong = []
    for names, cell in readme_parameters():
        values = backquoted(cell)
        if not values:
            # No value given: "as in scikit-learn", and then they must be.
            assert "as in scikit-learn" in cell, f"{names}: no default in {cell!r}"
            wrong += [
                name for name in names if not same(SIGNATURE[name], SKLEARN_CONVENTIONS[name])
            ]
            continue
        assert len(values) == len(names), f"{names}: defaults {values} do not pair up"
        wrong += [
            f"{name}: README `{value}`, estimator {SIGNATURE[name]!r}"
            for name, value in zip(names, values)
            # Unknown names are the test above's.
            if name in SIGNATURE and not same(ast.literal_eval(value), SIGNATURE[name])
        ]
    assert not wrong, f"README.md's defaults differ from the signature's: {wrong}"


def test_readme_names_the_parameters_a_continuing_fit_takes():
    text = " ".join(readme_section("Main parameters").split())
    match = re.search(r"A continuing fit takes new values of (.*?); changing any other", text)
    assert match, "README.md no longer says which parameters a continuing fit takes"
    # warm_start itself is what makes a fit continue: no new value of it to take.
    assert set(backquoted(match.group(1))) == _CONTINUABLE_PARAMS - {"warm_start"}


def test_readme_strategies_are_the_registry():
    rows = table_rows(readme_section("Strategies"))
    listed = [name for row in rows for name in backquoted(row[0])]
    assert len(listed) == len(set(listed)), "a strategy has two rows"
    unknown, missing = sorted(set(listed) - set(STRATEGIES)), sorted(set(STRATEGIES) - set(listed))
    assert not unknown and not missing, (
        f"README.md lists unregistered strategies {unknown} and lacks {missing}"
    )


# -- the docstring ------------------------------------------------------------------------


def test_docstring_documents_every_parameter_with_its_default():
    entries = docstring_parameters()
    assert set(entries) == set(SIGNATURE)
    for name, entry in entries.items():
        default = re.search(r"default=(.+)$", entry.splitlines()[0])
        assert default, f"the docstring gives no default for {name}"
        assert same(ast.literal_eval(default.group(1)), SIGNATURE[name]), name


# -- the strategy registry ----------------------------------------------------------------


def test_every_registered_strategy_is_accepted_everywhere():
    assert sklearn_north.STRATEGIES is STRATEGIES
    assert accepted_strings("strategy") == set(STRATEGIES)
    (action,) = [a for a in build_parser()._actions if a.dest == "strategy"]
    assert sorted(action.choices) == sorted(STRATEGIES)
    described = docstring_parameters()["strategy"]
    for name in STRATEGIES:
        assert f'``"{name}"``' in described, f"the docstring does not name {name}"
        trigger, initializer = make_strategy(name)
        assert isinstance(trigger, TRIGGERS[STRATEGIES[name][0]])
        assert (initializer is None) == (STRATEGIES[name][1] is None)


def test_gamma_defaults_are_the_documented_ones():
    for text in (docstring_parameters()["gamma"], readme_default_cell("gamma")):
        stated = documented_gammas(text)
        assert set(stated) == {"activation", "weight"}, f"no gamma per trigger in {text!r}"
        for kind, gamma in stated.items():
            assert inspect.signature(TRIGGERS[kind]).parameters["gamma"].default == gamma


def _grown_trigger(strategy):
    """The trigger a fit of ``strategy`` with the estimator's defaults trained with."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    clf = GrowingMLPClassifier(
        strategy=strategy,
        gamma=None,
        hidden_layer_sizes=(4,),
        max_hidden_layer_sizes=8,  # below the 40 samples (no capacity warning)
        max_epochs=1,
        batch_size=20,
    )
    clf.fit(X, y)
    return dict(clf.net_.callbacks_)["growth"].trigger_


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_a_fit_uses_the_registrys_trigger_with_its_documented_defaults(strategy):
    trigger, _ = make_strategy(strategy)
    used = _grown_trigger(strategy)
    assert type(used) is type(trigger)
    # The estimator's defaults are the registry's: a default fit changes nothing.
    assert used.get_params() == trigger.get_params()
    for param, name in TRIGGER_PARAMS.items():
        if name in used.get_params() and SIGNATURE[param] is not None:
            assert used.get_params()[name] == SIGNATURE[param], param
    # gamma=None: the trigger's own, the one the docstring and README state.
    if "gamma" in used.get_params():
        stated = documented_gammas(docstring_parameters()["gamma"])
        assert used.gamma == stated[STRATEGIES[strategy][0]]


# -- the command line ---------------------------------------------------------------------


def test_command_line_defaults_are_the_estimators():
    parser = build_parser()
    defaults = vars(parser.parse_args([]))
    assert defaults.pop("test_size") == 0.25  # not an estimator parameter
    assert defaults.pop("model") == "mlp"  # not an estimator parameter
    assert defaults.pop("plot") is None  # the job's figure, not an estimator parameter
    assert not set(defaults) - set(SIGNATURE), "options that are no estimator parameter"
    missing = sorted(set(SIGNATURE) - set(defaults) - set(NOT_ON_COMMAND_LINE))
    assert not missing, f"the main job has no option for {missing}"
    for param, value in defaults.items():
        expected = JOB_DEFAULTS.get(param, SIGNATURE[param])
        assert same(value, expected), f"{param}: command line {value!r}, expected {expected!r}"


@pytest.mark.parametrize(
    "param", ["schedule", "trigger_rounding", "activation_source", "activation", "optimizer"]
)
def test_command_line_choices_are_the_estimators(param):
    (action,) = [a for a in build_parser()._actions if a.dest == param]
    assert set(action.choices) == accepted_strings(param)
