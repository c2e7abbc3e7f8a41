"""scikit-learn's estimator API checks, run for every growth strategy, both preset
schedules and a custom (trigger, initializer) pair.

The settings are small and fast (one narrow hidden layer, a large learning rate, small
batches, a few epochs, few candidates) yet reach the accuracy ``check_classifiers_train``
demands. The activation strategies grow on the checks' data; north-weight cannot with so
few neurons (a full-rank layer of M < 100 neurons never passes its gamma=0.99 trigger),
so it exercises the weight trigger without growth. The schedules and the custom pair grow
on every fit (the schedules to twice the initial width).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_north import STRATEGIES, GrowingMLPClassifier
from sklearn_north.growth import SCHEDULES, RandomInit, Trigger, TriggerDecision


class EveryKSteps(Trigger):
    """A custom trigger: ``n_neurons`` per layer every ``k`` optimizer steps."""

    def __init__(self, k=3, n_neurons=1):
        self.k = k
        self.n_neurons = n_neurons

    def __call__(self, index, site, context):
        return TriggerDecision(self.n_neurons if context.step % self.k == 0 else 0)


FAST = dict(
    hidden_layer_sizes=(8,),
    lr=3e-2,
    batch_size=32,
    max_epochs=10,
    n_candidates=16,
    random_state=0,
)

ESTIMATORS = [
    *(GrowingMLPClassifier(strategy=strategy, **FAST) for strategy in STRATEGIES),
    *(
        GrowingMLPClassifier(strategy="north-random", schedule=schedule, schedule_target=16, **FAST)
        for schedule in SCHEDULES
    ),
    # Widths stay multiples of 8 (8 -> 32 here). At some other widths (11, 13, ..., static
    # networks included) torch's float32 CPU matmul rounds a row differently depending on
    # its position in the batch (~1e-7), which check_methods_sample_order_invariance
    # (rtol=1e-7) flags; that is not what this estimator is here to check.
    GrowingMLPClassifier(strategy=(EveryKSteps(k=3, n_neurons=8), RandomInit()), **FAST),
    # Fast mode: activations from the training forward pass.
    GrowingMLPClassifier(strategy="north-select", activation_source="training", **FAST),
]


def _label(estimator):
    if not isinstance(estimator.strategy, str):
        return "custom"
    if estimator.schedule is not None:
        return f"{estimator.strategy}+{estimator.schedule}"
    if estimator.activation_source != "buffer":
        return f"{estimator.strategy}+{estimator.activation_source}"
    return estimator.strategy


# One check (dense and sparse) fails, for every estimator (strict: a pass is an error), and
# is replaced by test_sample_weights_equal_repetitions below. Fitting with integer weights
# and with repeated rows (15 -> ~30 samples, one batch of 32 here) gives the same
# probabilities to float32 resolution, but the check's rtol is 1e-7, below float32's 1.2e-7
# steps: the weighted and repeated losses sum in a different order. (With several batches
# they would differ anyway, as for any mini-batch training: the batches hold different rows,
# and the sample buffer is unweighted.)
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": "float32 training vs an rtol of 1e-7",
    "check_sample_weight_equivalence_on_sparse_data": "float32 training vs an rtol of 1e-7",
}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS


def test_every_strategy_is_checked():
    labels = [_label(est) for est in ESTIMATORS]
    assert len(set(labels)) == len(labels)
    assert sorted(name for name in labels if name in STRATEGIES) == sorted(STRATEGIES)
    assert {f"north-random+{schedule}" for schedule in SCHEDULES} <= set(labels)
    assert "custom" in labels


@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=_expected_failed_checks, xfail_strict=True
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# The training forward passes' activations, which activation_source="training" measures,
# include every repetition of a row: the growth decisions differ (the buffer is unweighted).
_UNWEIGHTED_GROWTH = pytest.mark.xfail(
    strict=True, reason="activation_source='training' counts repeated rows' activations"
)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(
    "estimator",
    [
        pytest.param(est, marks=_UNWEIGHTED_GROWTH) if est.activation_source == "training" else est
        for est in ESTIMATORS
    ],
    ids=_label,
)
def test_sample_weights_equal_repetitions(estimator, sparse):
    """What the expected failure checks, at float32's resolution: integer weights (0
    included) give the probabilities of the rows repeated as many times."""
    rng = np.random.RandomState(42)
    n = 15
    X = rng.rand(n, 2 * n)
    y = np.arange(n) % 3
    w = rng.randint(0, 4, size=n)
    w[:2] = 0, 3  # a zero weight; every class keeps weighted samples
    assert all(w[y == c].sum() > 0 for c in range(3))
    X_rep, y_rep = np.repeat(X, w, axis=0), np.repeat(y, w)
    to = sp.csr_matrix if sparse else np.asarray
    weighted = clone(estimator).fit(to(X), y, sample_weight=w.astype(float))
    repeated = clone(estimator).fit(to(X_rep), y_rep)
    a, b = weighted.predict_proba(to(X)), repeated.predict_proba(to(X))
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
    # The check is not vacuous: ignoring the weights changes the probabilities.
    ignored = clone(estimator).fit(to(X), y).predict_proba(to(X))
    assert np.abs(ignored - a).max() > 1e-3
