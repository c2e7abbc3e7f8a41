"""Tune the strategy and the trigger threshold gamma with GridSearchCV in a Pipeline.

python examples/grid_search.py [--quick]

``--quick``: a third of digits, 3 epochs and 2 folds (what the test suite runs).
"""

import sys

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from sklearn_north import GrowingMLPClassifier

quick = "--quick" in sys.argv[1:]
X, y = load_digits(return_X_y=True)
if quick:
    X, y = X[:600], y[:600]
pipe = make_pipeline(
    MinMaxScaler(),
    GrowingMLPClassifier(
        hidden_layer_sizes=(64, 64),
        max_hidden_layer_sizes=(256, 256),
        max_epochs=3 if quick else 15,
        random_state=0,
    ),
)
grid = GridSearchCV(
    pipe,
    {
        "growingmlpclassifier__strategy": ["north-select", "north-weight", "static"],
        "growingmlpclassifier__gamma": [0.9, 0.97],
    },
    cv=2 if quick else 3,
)
grid.fit(X, y)
print("best:", grid.best_params_, round(grid.best_score_, 4))
print("widths grown by the best model:", grid.best_estimator_[-1].hidden_layer_sizes_)
