"""Growth strategies compared on MNIST, with the growth plot of each.

python examples/compare_strategies.py [OUT.png] [--quick] [--data-home DIR]

Grows a ``GrowingMLPClassifier`` from the same initial widths with a few strategies on a
subset of MNIST, prints each fit's final widths, test accuracy and fit time, and saves one
figure with a ``GrowthDisplay`` per strategy side by side (widths over optimizer steps with
the growth events marked, training loss below) as ``OUT.png`` (default: a temporary file,
whose path it prints).

MNIST is read with ``sklearn_north.datasets.load_mnist`` from ``DIR`` (default: the
repository's sibling ``../shared/data/mnist`` where there is one, else the loader's own
default folder); nothing is downloaded: without the files the example says so and uses
scikit-learn's 8x8 digits instead.

``--quick``: 1,000 training and 500 test images, 2 epochs, widths capped at 128 and 20
candidates per growth event (a few seconds; what the test suite runs). Without it: 10,000
training and 10,000 test images, 10 epochs, widths from 32 up to 256.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingMLPClassifier, GrowthDisplay
from sklearn_north.datasets import load_mnist

STRATEGIES = ["north-select", "north-weight", "gradmax", "static"]
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", nargs="?", default=None, help="PNG file for the figure")
parser.add_argument("--quick", action="store_true", help="a few seconds' version")
parser.add_argument(
    "--data-home",
    default=SHARED_MNIST if SHARED_MNIST.is_dir() else None,
    help="folder with the MNIST files",
)
args = parser.parse_args(sys.argv[1:])
n_train, n_test, epochs = (1_000, 500, 2) if args.quick else (10_000, 10_000, 10)
# Quick: narrower caps and fewer candidate neurons per event (north-select), to be quick.
max_widths, n_candidates = ((128, 128), 20) if args.quick else ((256, 256), 100)

try:
    X_train, y_train = load_mnist(args.data_home, return_X_y=True, download_if_missing=False)
    X_test, y_test = load_mnist(
        args.data_home, subset="test", return_X_y=True, download_if_missing=False
    )
    X_train, y_train = X_train[:n_train], y_train[:n_train]
    X_test, y_test = X_test[:n_test], y_test[:n_test]
    source = "MNIST"
except FileNotFoundError as exc:
    print(f"MNIST not found ({exc.__class__.__name__}: {str(exc).splitlines()[0]})")
    print("-> using scikit-learn's 8x8 digits instead")
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    source = "digits"
print(
    f"data: {source}, {len(X_train)} training / {len(X_test)} test images of "
    f"{X_train.shape[1]} pixels; {epochs} epochs"
)

if args.quick:
    print("(--quick: too little training to compare accuracies)")
print(f"{'strategy':<14}{'final widths':<16}{'test accuracy':<15}fit time")
fits = {}
for strategy in STRATEGIES:
    clf = GrowingMLPClassifier(
        strategy=strategy,
        hidden_layer_sizes=(32, 32),
        max_hidden_layer_sizes=max_widths,
        n_candidates=n_candidates,
        max_epochs=epochs,
        n_iter_no_change=None,  # every epoch, as the paper's comparisons
        random_state=0,
    )
    tic = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - tic
    fits[strategy] = clf
    widths = str(clf.hidden_layer_sizes_)
    print(f"{strategy:<14}{widths:<16}{clf.score(X_test, y_test):<15.4f}{seconds:.1f} s")

# One column per strategy: widths above, loss below, on shared scales to compare.
figure, axes = plt.subplots(
    2,
    len(fits),
    sharex="col",
    sharey="row",
    figsize=(3.2 * len(fits), 5.5),
    gridspec_kw={"height_ratios": (2, 1)},
    layout="constrained",
)
displays = {
    strategy: GrowthDisplay.from_estimator(clf, ax=axes[0, i], loss_ax=axes[1, i], name=strategy)
    for i, (strategy, clf) in enumerate(fits.items())
}
for ax in axes.flat:
    ax.label_outer()
figure.suptitle(f"GrowingMLPClassifier on {source}: widths and loss by strategy")
out = args.out or tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
figure.savefig(out, dpi=100)
print(f"figure: {out}")
