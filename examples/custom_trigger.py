"""Write a custom trigger and pair it with NORTH-Select's initializer.

A trigger decides when, where and how many neurons to add: it is called after optimizer
steps for every hidden layer and returns a TriggerDecision. This one adds 2 neurons to
every layer every 50 steps during the first half of training; SelectInit then picks, among
random candidates, the new neurons whose activations are most orthogonal to the existing
ones.

python examples/custom_trigger.py
"""

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import SelectInit, Trigger, TriggerDecision


class EveryNSteps(Trigger):
    """Add ``n_neurons`` every ``every`` steps until ``until`` of the training is done."""

    def __init__(self, n_neurons=2, every=50, until=0.5):
        self.n_neurons = n_neurons
        self.every = every
        self.until = until

    def __call__(self, index, site, context):
        # context.step: optimizer steps so far; context.total_steps: the planned total.
        early = context.step <= self.until * context.total_steps
        fire = early and context.step % self.every == 0
        return TriggerDecision(self.n_neurons if fire else 0)


X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, random_state=0, stratify=y)

clf = GrowingMLPClassifier(
    strategy=(EveryNSteps(n_neurons=2, every=50), SelectInit(n_candidates=200)),
    hidden_layer_sizes=(32, 32),
    batch_size=32,
    max_epochs=20,
    lr=1e-3,
    random_state=0,
)
clf.fit(X_train, y_train)

print("final widths:", clf.hidden_layer_sizes_)  # (32 + 2 * 8, 32 + 2 * 8)
print("test accuracy:", round(clf.score(X_test, y_test), 4))
print("growth steps:", sorted(set(clf.growth_history_["step"])))
