"""A fit whose training diverged fails with a clear error instead of returning NaNs.

scikit-learn's ``MLPClassifier`` raises ``ValueError`` when its weights end non-finite; a
growing network should also stop at once: every later step, trigger and growth event
would work on NaNs, and the model it returned would predict NaN probabilities.
"""

import math

import torch
from skorch.callbacks import Callback


class DivergenceGuard(Callback):
    """Raise ``ValueError`` at the first training step whose loss is not finite.

    Reads the loss skorch has just recorded (no extra device synchronisation). Listed
    before the growth callback, so that no trigger is evaluated on a diverged network.
    """

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        loss = net.history[-1]["batches"][-1]["train_loss"]
        if not math.isfinite(loss):
            raise ValueError(
                f"Training diverged: the loss was {loss} at epoch {len(net.history)}, "
                f"batch {len(net.history[-1]['batches'])}. The input data may contain large "
                f"values and need to be preprocessed (e.g. with StandardScaler), or the "
                f"learning rate (lr={net.lr}) is too high."
            )


def check_finite_weights(module):
    """Raise ``ValueError`` if a parameter of ``module`` is not finite (the last update
    can break the weights after a finite loss)."""
    if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
        raise ValueError(
            "Solver produced non-finite parameter weights. The input data may contain "
            "large values and need to be preprocessed."
        )
