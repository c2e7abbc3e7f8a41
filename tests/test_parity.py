"""README.md's "Compared with scikit-learn's MLPClassifier" table, held against both estimators.

The table lists every constructor parameter of ``MLPClassifier`` with its default, then its
fitted attributes and public methods, each beside our counterpart and a status: "same",
"differs: <why>" or "not applicable: <why>". Parameters are checked against both
signatures; attributes and methods after a real small fit of both estimators, where every
"same" row must also keep ``MLPClassifier``'s promise (checked on ``MLPClassifier`` too, so
that each check is known to hold for the reference).
"""

import ast
import inspect
import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.neural_network import MLPClassifier
from sklearn.utils._param_validation import StrOptions
from test_defaults import backquoted, readme_section, same, table_rows

from sklearn_north import GrowingMLPClassifier

SECTION = "Compared with scikit-learn's MLPClassifier"
NONE = "—"  # an empty cell: no default (attributes, methods) or no counterpart
STATUSES = ("same", "differs", "not applicable")

MLP_SIGNATURE = {name: p.default for name, p in inspect.signature(MLPClassifier).parameters.items()}
OUR_SIGNATURE = {
    name: p.default for name, p in inspect.signature(GrowingMLPClassifier).parameters.items()
}


def parity_rows():
    """``[{mlp, mlp_default, ours, our_default, status, reason}]``, one per table row."""
    rows = []
    for cells in table_rows(readme_section(SECTION)):
        assert len(cells) == 5, f"a row of 5 cells expected: {cells}"
        mlp, mlp_default, ours, our_default, status = cells
        names = backquoted(mlp)
        assert len(names) == 1, f"one MLPClassifier name per row: {mlp!r}"
        kind, _, reason = status.partition(":")
        assert kind in STATUSES, f"{names[0]}: status {status!r} is none of {STATUSES}"
        assert kind == "same" or reason.strip(), f"{names[0]}: '{kind}' says no why"
        rows.append(
            {
                "mlp": names[0],
                "mlp_default": mlp_default,
                "ours": ours,
                "our_default": our_default,
                "status": kind,
            }
        )
    return rows


ROWS = parity_rows()
PARAMETER_ROWS = [row for row in ROWS if row["mlp_default"] != NONE]
MEMBER_ROWS = [row for row in ROWS if row["mlp_default"] == NONE]


def literal(cell, what):
    """The one backquoted Python literal of ``cell``."""
    values = backquoted(cell)
    assert len(values) == 1, f"{what}: one backquoted value expected in {cell!r}"
    return ast.literal_eval(values[0])


def our_name(row):
    """Our counterpart's name; None for a row that is not applicable."""
    if row["status"] == "not applicable":
        assert row["ours"] == NONE and row["our_default"] == NONE, (
            f"{row['mlp']}: not applicable, yet ours is {row['ours']!r}"
        )
        return None
    names = backquoted(row["ours"])
    assert len(names) == 1, f"{row['mlp']}: one backquoted name expected in {row['ours']!r}"
    return names[0]


def accepted_strings(estimator, param):
    return {
        option
        for constraint in estimator._parameter_constraints.get(param, [])
        if isinstance(constraint, StrOptions)
        for option in constraint.options
    }


# -- parameters -----------------------------------------------------------------------------


def test_every_mlp_parameter_is_listed_once_with_its_default():
    listed = [row["mlp"] for row in PARAMETER_ROWS]
    assert sorted(listed) == sorted(MLP_SIGNATURE), (
        f"missing {sorted(set(MLP_SIGNATURE) - set(listed))}, "
        f"not MLPClassifier parameters {sorted(set(listed) - set(MLP_SIGNATURE))}, "
        f"twice {sorted({name for name in listed if listed.count(name) > 1})}"
    )
    wrong = [
        f"{row['mlp']}: README {row['mlp_default']}, MLPClassifier {MLP_SIGNATURE[row['mlp']]!r}"
        for row in PARAMETER_ROWS
        if not same(literal(row["mlp_default"], row["mlp"]), MLP_SIGNATURE[row["mlp"]])
    ]
    assert not wrong, wrong


def test_our_counterparts_are_our_parameters_with_their_defaults():
    wrong = []
    for row in PARAMETER_ROWS:
        name = our_name(row)
        if name is None:
            continue
        if name not in OUR_SIGNATURE:
            wrong.append(f"{row['mlp']}: {name} is no GrowingMLPClassifier parameter")
            continue
        stated = literal(row["our_default"], name)
        if not same(stated, OUR_SIGNATURE[name]):
            wrong.append(f"{name}: README {stated!r}, GrowingMLPClassifier {OUR_SIGNATURE[name]!r}")
    assert not wrong, wrong


@pytest.mark.parametrize(
    "row", [row for row in PARAMETER_ROWS if row["status"] == "same"], ids=lambda row: row["mlp"]
)
def test_same_parameters_have_one_name_one_default_and_the_same_options(row):
    name = row["mlp"]
    assert our_name(row) == name
    assert same(OUR_SIGNATURE[name], MLP_SIGNATURE[name])
    # A string parameter is only the same if it takes the same strings.
    assert accepted_strings(GrowingMLPClassifier, name) == accepted_strings(MLPClassifier, name)


# -- fitted attributes and methods ----------------------------------------------------------

N_SAMPLES = 300
PARAMS = {
    "ours": {"hidden_layer_sizes": (8,), "max_epochs": 2, "random_state": 0},
    "mlp": {"hidden_layer_sizes": (8,), "max_iter": 2, "random_state": 0},
}
ESTIMATORS = {"ours": GrowingMLPClassifier, "mlp": MLPClassifier}


def digits(binary=False):
    """A digits subset in [0, 1] with string column names (so ``feature_names_in_`` is set)."""
    X, y = load_digits(return_X_y=True)
    X = pd.DataFrame(X[:N_SAMPLES] / 16.0, columns=[f"pixel{i}" for i in range(X.shape[1])])
    y = y[:N_SAMPLES]
    return X, (y % 2 if binary else y)


def fitted(which, binary=False, **params):
    X, y = digits(binary)
    estimator = ESTIMATORS[which](**PARAMS[which], **params)
    with warnings.catch_warnings():
        # Two epochs do not converge; that is the point of a fast check.
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert estimator.fit(X, y) is estimator
    return estimator


@pytest.fixture(scope="module")
def pairs():
    """``{early_stopping: {"ours": fitted, "mlp": fitted}}``: both estimators, fitted alike."""
    return {
        early_stopping: {
            which: fitted(which, early_stopping=early_stopping) for which in ESTIMATORS
        }
        for early_stopping in (False, True)
    }


def n_trained(early_stopping):
    """Samples trained on: ``MLPClassifier`` holds out ``ceil(fraction * n)`` of them."""
    return N_SAMPLES - (math.ceil(0.1 * N_SAMPLES) if early_stopping else 0)


def check_layers(est):
    coefs, intercepts = est.coefs_, est.intercepts_
    widths = getattr(est, "hidden_layer_sizes_", est.hidden_layer_sizes)
    assert len(coefs) == len(intercepts) == len(widths) + 1
    assert coefs[0].shape[0] == est.n_features_in_
    assert [c.shape[1] for c in coefs[:-1]] == list(widths)
    assert all(a.shape[1] == b.shape[0] for a, b in itertools.pairwise(coefs))
    assert all(b.shape == (c.shape[1],) for c, b in zip(coefs, intercepts))
    assert all(a.dtype == np.float64 for a in [*coefs, *intercepts])


#: What ``MLPClassifier`` promises of each attribute after ``fit(X, y)`` for 2 epochs (``es``:
#: under ``early_stopping``); every "same" row of ours keeps the same promise.
PROMISES = {
    "classes_": lambda est, X, y, es: np.array_equal(est.classes_, np.unique(y)),
    "loss_": lambda est, X, y, es: est.loss_ == pytest.approx(est.loss_curve_[-1]),
    "best_loss_": lambda est, X, y, es: (
        est.best_loss_ is None if es else est.best_loss_ == pytest.approx(min(est.loss_curve_))
    ),
    "loss_curve_": lambda est, X, y, es: (
        len(est.loss_curve_) == est.n_iter_ and all(np.isfinite(est.loss_curve_))
    ),
    "validation_scores_": lambda est, X, y, es: (
        len(est.validation_scores_) == est.n_iter_
        and all(0 <= score <= 1 for score in est.validation_scores_)
        if es
        else est.validation_scores_ is None
    ),
    "best_validation_score_": lambda est, X, y, es: (
        est.best_validation_score_ == max(est.validation_scores_)
        if es
        else est.best_validation_score_ is None
    ),
    "t_": lambda est, X, y, es: est.t_ == est.n_iter_ * n_trained(es),
    "coefs_": lambda est, X, y, es: check_layers(est) is None,
    "intercepts_": lambda est, X, y, es: check_layers(est) is None,
    "n_features_in_": lambda est, X, y, es: est.n_features_in_ == X.shape[1],
    "feature_names_in_": lambda est, X, y, es: list(est.feature_names_in_) == list(X.columns),
    "n_iter_": lambda est, X, y, es: est.n_iter_ == 2,
    "n_layers_": lambda est, X, y, es: est.n_layers_ == len(est.coefs_) + 1,
    # Multiclass: one softmax output per class on both sides (binary problems differ).
    "n_outputs_": lambda est, X, y, es: est.n_outputs_ == len(est.classes_),
    "out_activation_": lambda est, X, y, es: est.out_activation_ == "softmax",
    "predict": lambda est, X, y, es: set(est.predict(X)) <= set(est.classes_),
    "predict_proba": lambda est, X, y, es: (
        est.predict_proba(X).shape == (len(X), len(est.classes_))
        and np.allclose(est.predict_proba(X).sum(axis=1), 1)
    ),
    "predict_log_proba": lambda est, X, y, es: np.allclose(
        np.exp(est.predict_log_proba(X)), est.predict_proba(X)
    ),
    "score": lambda est, X, y, es: est.score(X, y) == accuracy_score(y, est.predict(X)),
    "fit": lambda est, X, y, es: est.n_iter_ == 2,  # the fixture's own fit
    # MLPClassifier's partial_fit refuses early_stopping=True (a "differs" of ours).
    "partial_fit": lambda est, X, y, es: one_epoch_of_partial_fit(
        clone(est).set_params(early_stopping=False), X, y
    ),
}


def one_epoch_of_partial_fit(est, X, y):
    """A first ``partial_fit`` trains one epoch on all it is given."""
    assert est.partial_fit(X, y, classes=np.unique(y)) is est
    return est.n_iter_ == 1 and est.t_ == len(X) and np.array_equal(est.classes_, np.unique(y))


def mlp_members():
    """``MLPClassifier``'s fitted attributes (after a fit on named columns) and its public
    methods, scikit-learn's parameter and metadata plumbing (``get_*``, ``set_*``) aside."""
    attributes = {
        name for name in vars(fitted("mlp")) if name.endswith("_") and not name.startswith("_")
    }
    methods = {
        name
        for name, member in inspect.getmembers(MLPClassifier)
        if callable(member)
        and not name.startswith(("_", "get_", "set_"))
        and not isinstance(member, type)
    }
    return attributes | methods


def test_every_fitted_attribute_and_method_is_listed_once():
    listed = [row["mlp"] for row in MEMBER_ROWS]
    expected = mlp_members()
    assert sorted(listed) == sorted(expected), (
        f"missing {sorted(expected - set(listed))}, "
        f"not MLPClassifier's {sorted(set(listed) - expected)}, "
        f"twice {sorted({name for name in listed if listed.count(name) > 1})}"
    )
    assert set(PROMISES) == expected, "a member without a promise to check"
    assert all(row["our_default"] == NONE for row in MEMBER_ROWS)


@pytest.mark.parametrize("early_stopping", [False, True], ids=["plain", "early_stopping"])
@pytest.mark.parametrize("row", MEMBER_ROWS, ids=lambda row: row["mlp"])
def test_attribute_or_method_exists_on_both_and_keeps_the_promise(pairs, row, early_stopping):
    X, y = digits()
    mlp, ours = pairs[early_stopping]["mlp"], pairs[early_stopping]["ours"]
    name = row["mlp"]
    assert hasattr(mlp, name)
    # The promise holds for the reference: the check itself is right.
    assert PROMISES[name](mlp, X, y, early_stopping), f"MLPClassifier breaks {name}'s check"
    counterpart = our_name(row)
    if counterpart is None:
        return
    assert hasattr(ours, counterpart), f"GrowingMLPClassifier has no {counterpart}"
    if callable(getattr(mlp, name)):
        # Whatever a method does differently, it is called the same way.
        assert counterpart == name
        ours_sig = inspect.signature(getattr(GrowingMLPClassifier, name))
        mlp_sig = inspect.signature(getattr(MLPClassifier, name))
        assert [(p.name, p.default) for p in ours_sig.parameters.values()] == [
            (p.name, p.default) for p in mlp_sig.parameters.values()
        ], f"{name}{ours_sig} is not MLPClassifier's {name}{mlp_sig}"
    if row["status"] != "same":
        return
    assert counterpart == name
    assert PROMISES[name](ours, X, y, early_stopping), f"ours breaks {name}'s promise"


def test_binary_outputs_differ_as_documented():
    # The "differs" rows of n_outputs_ and out_activation_: MLPClassifier has one logistic
    # output for two classes, ours keeps a softmax over both.
    statuses = {row["mlp"]: row["status"] for row in MEMBER_ROWS}
    assert statuses["n_outputs_"] == statuses["out_activation_"] == "differs"
    mlp, ours = fitted("mlp", binary=True), fitted("ours", binary=True)
    assert (mlp.n_outputs_, mlp.out_activation_) == (1, "logistic")
    assert (ours.n_outputs_, ours.out_activation_) == (2, "softmax")
    assert ours.coefs_[-1].shape[1] == 2
    X, _ = digits(binary=True)
    assert ours.predict_proba(X).shape == mlp.predict_proba(X).shape == (len(X), 2)


def test_partial_fit_under_early_stopping_differs_as_documented():
    # The "differs" row of partial_fit: MLPClassifier's refuses early_stopping=True, ours
    # trains on all it is given (early stopping applies to fit).
    (row,) = [row for row in MEMBER_ROWS if row["mlp"] == "partial_fit"]
    assert row["status"] == "differs"
    X, y = digits()
    mlp = MLPClassifier(**PARAMS["mlp"], early_stopping=True)
    with pytest.raises(ValueError, match="early_stopping"):
        mlp.partial_fit(X, y, classes=np.unique(y))
    for early_stopping in (False, True):
        ours = GrowingMLPClassifier(**PARAMS["ours"], early_stopping=early_stopping)
        assert one_epoch_of_partial_fit(ours, X, y)
        assert ours.validation_scores_ is None and ours.best_validation_score_ is None
