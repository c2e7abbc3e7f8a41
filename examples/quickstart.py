"""Quickstart: an MLP that grows its hidden layers while it learns digits.

python examples/quickstart.py
"""

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16, y, stratify=y, random_state=0)

# Starts with two hidden layers of 64 neurons; NORTH-Select adds neurons while it trains.
clf = GrowingMLPClassifier(max_epochs=20, random_state=0).fit(X_train, y_train)

print("widths:", clf.hidden_layer_sizes_)
print(clf.growth_history_.head().to_string(index=False))  # when, where and how many
print("test accuracy:", round(clf.score(X_test, y_test), 4))
