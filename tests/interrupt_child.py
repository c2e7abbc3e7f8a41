"""Child process of ``test_fit_safety.py``'s interrupt tests (not a test module).

Fits on digits with an initializer that, at the growth event the parent waits for, prints
``MID-GROWTH <phase>`` and sleeps, so that the parent's SIGINT lands in the middle of the
event. Each phase prints one ``RESULT <json>`` line describing the model afterwards.
Phases: ``fit`` (fresh), ``warm_start`` and ``partial_fit`` (continuations) each get one
SIGINT; ``twice`` gets two during a continuation (the second raises at once).
"""

import json
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import ActivationTrigger, RandomInit

torch.set_num_threads(1)


class SignalledInit(RandomInit):
    """RandomInit that announces growth event ``at`` of each phase and waits there."""

    phase = None
    at = 2
    calls = 0
    wanted = 1  # signals to wait for
    signalled_step = None  # the optimizer step whose growth the signal landed in

    def __call__(self, index, site, k, context, generator):
        SignalledInit.calls += 1
        if SignalledInit.calls == SignalledInit.at and SignalledInit.phase:
            SignalledInit.signalled_step = context.step
            print(f"MID-GROWTH {SignalledInit.phase}", flush=True)
            deadline = time.monotonic() + 10
            # Sleeping in steps: a signal handler runs between them (the second signal
            # of phase "twice" raises KeyboardInterrupt here, in the middle of growth).
            while time.monotonic() < deadline and len(_received) < SignalledInit.wanted:
                time.sleep(0.01)
        return super().__call__(index, site, k, context, generator)


_received = []


def describe(clf, X, caught, error=None):
    module = clf.module_
    sites = module.growth_sites()
    widths = [s.width for s in sites]
    history = clf.growth_history_
    last_width = {int(r.layer): int(r.width) for r in history.itertuples()}
    shapes_agree = all(
        module.layers[i].weight.shape[0] == w and module.layers[i + 1].weight.shape[1] == w
        for i, w in enumerate(widths)
    )
    proba = clf.predict_proba(X)
    return {
        "warnings": [str(w.message) for w in caught],
        "error": error,
        "n_iter": clf.n_iter_,
        "n_events": len(history),
        "widths": widths,
        "hidden_layer_sizes_": list(clf.hidden_layer_sizes_),
        "history_widths_agree": all(last_width.get(i, w) == w for i, w in enumerate(widths)),
        "shapes_agree": shapes_agree,
        "proba_finite": bool(np.isfinite(proba).all()),
        "proba_sums": float(np.abs(proba.sum(axis=1) - 1).max()),
        "loss_curve_length": len(clf.loss_curve_),
        "proba_digest": float(proba[:50].sum(axis=0) @ np.arange(proba.shape[1])),
        "steps": dict(clf.net_.callbacks_)["growth"].step_,
        "signalled_step": SignalledInit.signalled_step,
    }


def main():
    import signal

    # Python's own handler, as in an interactive session: a shell without job control
    # starts background jobs (a CI runner's, say) with SIGINT ignored, and Python then
    # leaves it ignored, so the estimator would (rightly) leave it alone.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    default = signal.getsignal(signal.SIGINT)
    X, y = load_digits(return_X_y=True)
    X = X[:600] / 16
    y = y[:600]
    strategy = (ActivationTrigger(gamma=0.97), SignalledInit())
    clf = GrowingMLPClassifier(
        strategy=strategy,
        hidden_layer_sizes=(4, 4),
        max_hidden_layer_sizes=(64, 64),
        max_epochs=3,
        batch_size=64,
        lr=3e-3,
        random_state=0,
        n_iter_no_change=None,
    )

    def run(phase, call):
        SignalledInit.phase, SignalledInit.calls = phase, 0
        _received.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            error = None
            try:
                call()
            except KeyboardInterrupt:
                error = "KeyboardInterrupt"
        result = describe(clf, X, caught, error)
        result["phase"] = phase
        result["handler_restored"] = signal.getsignal(signal.SIGINT) is default
        print("RESULT " + json.dumps(result), flush=True)

    # Count the signals the child receives while the estimator's handler is installed:
    # the parent waits for MID-GROWTH, then signals.
    original_signal = signal.signal

    def counting_signal(signum, handler):
        if signum == signal.SIGINT and callable(handler) and handler is not default:

            def wrapped(s, f, handler=handler):
                _received.append(s)
                return handler(s, f)

            return original_signal(signum, wrapped)
        return original_signal(signum, handler)

    signal.signal = counting_signal
    run("fit", lambda: clf.fit(X, y))
    clf.set_params(warm_start=True)
    run("warm_start", lambda: clf.fit(X, y))
    run("partial_fit", lambda: clf.partial_fit(X, y))
    before = describe(clf, X, [])
    print("BEFORE " + json.dumps(before), flush=True)
    SignalledInit.wanted = 2
    run("twice", lambda: clf.fit(X, y))
    sys.exit(0)


if __name__ == "__main__":
    main()
