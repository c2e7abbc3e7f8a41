"""Grow an MLP on digits and look at what grew, when and where.

python examples/grow_digits.py
"""

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, random_state=0, stratify=y)

clf = GrowingMLPClassifier(
    strategy="north-select",
    hidden_layer_sizes=(64, 64),
    max_hidden_layer_sizes=512,
    max_epochs=30,
    random_state=0,
)
clf.fit(X_train, y_train)

print("final widths:", clf.hidden_layer_sizes_)
print("test accuracy:", round(clf.score(X_test, y_test), 4))
# One row per growth event: when (step, epoch), where (layer), how many, and why.
history = clf.growth_history_
print(history.head(10).to_string(index=False))
print(history.groupby("layer")["n_added"].agg(["count", "sum"]))
