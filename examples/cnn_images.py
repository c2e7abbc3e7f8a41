"""Grow a CNN on images: digits as 8x8 images, and MNIST (28x28) where its files are.

python examples/cnn_images.py [--quick] [--data-home DIR] [--mnist-samples N] [--epochs N]

``GrowingCNNClassifier`` reads each row of pixels as a square single-channel image. Its
``"small"`` architecture has two conv blocks and a hidden dense layer; all three start at a
quarter of their standard widths (32, 64, 128 channels and neurons) and grow up to twice
them. The script prints, per growth site, the initial and final width, the cap, how many
growth events added how many channels, and the test accuracy.

MNIST is read from ``--data-home`` (default: the repository's sibling
``shared/data/mnist`` if it exists, else ``$SKLEARN_NORTH_DATA/mnist`` or
``~/sklearn_north_data/mnist``), never downloaded here: without its files, only digits
run. ``--mnist-samples`` training images (default 10000) for ``--epochs`` epochs (default
3; digits trains 20), tested on the first 2000 test images.

``--quick``: digits 5 epochs; MNIST 1000 training images for 2 epochs, tested on 1000
(what the test suite runs).
"""

import argparse
from pathlib import Path

import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sklearn_north import GrowingCNNClassifier
from sklearn_north.datasets import load_mnist

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def growth_by_site(clf):
    """One row per growth site of the fitted ``clf``: its initial and final width, its
    cap, the growth events and the channels (neurons) they added."""
    history = clf.growth_history_
    rows = []
    for index, site in enumerate(clf.module_.growth_sites()):
        events = history[history.layer == index]
        added = int(events.n_added.sum())
        rows.append(
            {
                "site": site.name,
                "initial": site.width - added,  # growth only adds neurons
                "final": site.width,
                "max": site.max_width,
                "events": len(events),
                "added": added,
            }
        )
    return pd.DataFrame(rows)


def fit_and_report(name, X_train, y_train, X_test, y_test, epochs):
    """Fit a ``GrowingCNNClassifier`` for ``epochs`` epochs, print what grew and its test
    accuracy; return the model and that accuracy."""
    clf = GrowingCNNClassifier(max_epochs=epochs, random_state=0).fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)
    shape = "x".join(map(str, clf.input_shape_))
    print(
        f"{name}: {len(X_train)} training / {len(X_test)} test images of {shape}, "
        f"{clf.n_iter_} epochs"
    )
    print(growth_by_site(clf).to_string(index=False))
    print(f"{name} test accuracy: {accuracy:.4f}")
    print()
    return {"model": clf, "accuracy": accuracy, "X_test": X_test, "y_test": y_test}


def load_mnist_subset(data_home, n_train, n_test):
    """The first ``n_train`` training and ``n_test`` test images of MNIST, or None (after
    a note) when its files are not in ``data_home``."""
    try:
        X_train, y_train = load_mnist(data_home, return_X_y=True, download_if_missing=False)
        X_test, y_test = load_mnist(
            data_home, subset="test", return_X_y=True, download_if_missing=False
        )
    except FileNotFoundError as error:
        print(f"MNIST skipped (pass --data-home DIR): {error}")
        return None
    return X_train[:n_train], y_train[:n_train], X_test[:n_test], y_test[:n_test]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs and images")
    parser.add_argument(
        "--data-home",
        default=str(SHARED_MNIST) if SHARED_MNIST.is_dir() else None,
        help="folder of the MNIST files",
    )
    parser.add_argument("--mnist-samples", type=int, help="MNIST training images")
    parser.add_argument("--epochs", type=int, help="MNIST epochs")
    args = parser.parse_args(argv)
    n_train = (1000 if args.quick else 10000) if args.mnist_samples is None else args.mnist_samples
    mnist_epochs = (2 if args.quick else 3) if args.epochs is None else args.epochs
    if n_train < 1 or mnist_epochs < 1:
        parser.error("--mnist-samples and --epochs must be positive ints")

    results = {}
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16, y, stratify=y, random_state=0)
    results["digits"] = fit_and_report(
        "digits", X_train, y_train, X_test, y_test, 5 if args.quick else 20
    )
    mnist = load_mnist_subset(args.data_home, n_train, 1000 if args.quick else 2000)
    if mnist is not None:
        results["mnist"] = fit_and_report("mnist", *mnist, mnist_epochs)
    return results


if __name__ == "__main__":
    results = main()
