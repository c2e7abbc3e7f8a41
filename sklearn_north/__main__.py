"""The main job: grow a network on an embedded dataset and report what grew.

    python -m sklearn_north [--strategy north-select] [--hidden 64,64] [--epochs 60] ...

Prints one line per epoch (loss, widths, time), then the final widths, the number of
parameters, the growth events per layer, the test accuracy and the fit time.
"""

import argparse
import sys
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import STRATEGIES, GrowingMLPClassifier


def _widths(text):
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    return widths


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m sklearn_north",
        description="Grow an MLP on scikit-learn's digits (8x8 images, 10 classes) and report "
        "the widths it grew to and its test accuracy.",
    )
    p.add_argument("--strategy", default="north-select", choices=sorted(STRATEGIES))
    p.add_argument("--hidden", type=_widths, default=(64, 64), help="initial widths (64,64)")
    p.add_argument("--max-hidden", type=_widths, default=(512, 512), help="max widths")
    p.add_argument(
        "--schedule",
        choices=["linear", "batched"],
        default=None,
        help="replace the trigger by a preset schedule to --schedule-target",
    )
    p.add_argument("--schedule-target", type=_widths, default=None, help="(default: max)")
    p.add_argument("--gamma", type=float, default=None, help="trigger threshold (strategy's)")
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--n-candidates", type=int, default=1000)
    p.add_argument("--trigger-interval", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixels in [0, 1], as the paper's MNIST protocol
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=args.test_size, random_state=args.seed, stratify=y
    )
    max_hidden = args.max_hidden
    if len(max_hidden) == 1:
        max_hidden = max_hidden * len(args.hidden)
    clf = GrowingMLPClassifier(
        strategy=args.strategy,
        hidden_layer_sizes=args.hidden,
        max_hidden_layer_sizes=max_hidden,
        schedule=args.schedule,
        schedule_target=args.schedule_target,
        gamma=args.gamma,
        epsilon=args.epsilon,
        n_candidates=args.n_candidates,
        trigger_interval=args.trigger_interval,
        lr=args.lr,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        device=args.device,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
    )
    print(
        f"digits: {len(X_train)} train / {len(X_test)} test samples, {X.shape[1]} features; "
        f"strategy={args.strategy}"
        + (f", schedule={args.schedule}" if args.schedule else "")
        + f", initial widths {args.hidden}, max {max_hidden}"
    )
    tic = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_time = time.perf_counter() - tic
    n_params = sum(p.numel() for p in clf.module_.parameters())
    history = clf.growth_history_
    print()
    print(f"final widths      : {clf.hidden_layer_sizes_} (started at {args.hidden})")
    for layer, width0 in enumerate(args.hidden):
        events = history[history.layer == layer]
        print(
            f"  layer {layer}: {width0} -> {clf.hidden_layer_sizes_[layer]} "
            f"in {len(events)} growth events"
        )
    print(f"parameters        : {n_params}")
    print(f"test accuracy     : {clf.score(X_test, y_test):.4f}")
    print(f"fit time          : {fit_time:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
