"""scikit-learn's estimator API checks, run for every growth strategy.

The settings are small and fast (one narrow hidden layer, a large learning rate, small
batches, a few epochs, few candidates) yet reach the accuracy ``check_classifiers_train``
demands. The activation strategies grow on the checks' data; north-weight cannot with so
few neurons (a full-rank layer of M < 100 neurons never passes its gamma=0.99 trigger),
so it exercises the weight trigger without growth.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_north import STRATEGIES, GrowingMLPClassifier

FAST = dict(
    hidden_layer_sizes=(8,),
    lr=3e-2,
    batch_size=32,
    max_epochs=10,
    n_candidates=16,
    random_state=0,
)

ESTIMATORS = [GrowingMLPClassifier(strategy=strategy, **FAST) for strategy in STRATEGIES]

# Every check is expected to pass for every strategy: no entry is needed. Should one ever
# have to be added, justify it here, per strategy, in one line each.
EXPECTED_FAILED_CHECKS = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(estimator.strategy, {})


def test_every_strategy_is_checked():
    assert sorted(est.strategy for est in ESTIMATORS) == sorted(STRATEGIES)


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
