"""The skorch net the estimators train: weighted loss, L2 penalty, stop requests.

``GrowingNet`` is skorch's ``NeuralNetClassifier`` with what scikit-learn's
``MLPClassifier`` users expect of its training: targets may carry sample weights, an L2
penalty ``alpha``, a validation accuracy that honours the weights, a training loop that
callbacks (and Ctrl-C) can stop at a consistent point, and a log without colour codes when
it is not written to a terminal.
"""

import sys

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import (
    Callback,
    EpochTimer,
    PassthroughScoring,
    PrintLog,
    ProgressBar,
)
from skorch.utils import to_numpy, to_tensor

#: What a net's ``stop_request_`` may say, and what stopping then means.
STOP_REASONS = {
    "interrupted": "Ctrl-C: after the current optimizer step and its growth",
    "converged": "the stopping rule of n_iter_no_change, at the end of an epoch",
}


class StopTraining(Exception):
    """Raised out of skorch's training loop at a point where the network is consistent."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class GrowingNet(NeuralNetClassifier):
    """skorch's classifier, for the growing estimators.

    Targets are encoded labels, or ``(label, sample weight)`` rows. ``alpha`` adds
    ``MLPClassifier``'s L2 penalty to the training loss. Setting ``stop_request_`` (to a
    key of ``STOP_REASONS``) ends training with ``StopTraining`` after the training step,
    or the epoch, that is running: after every callback of that step has run.
    """

    def __init__(self, *args, alpha=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = alpha

    @property
    def _default_callbacks(self):
        # skorch's, with the validation accuracy weighted by the samples' weights.
        return [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_acc", ValidationAccuracy()),
            ("print_log", PlainPrintLog()),
            ("progress_bar", BatchProgress()),
        ]

    def get_loss(self, y_pred, y_true, X=None, training=False):
        y_true = to_tensor(y_true, device=self.device)
        if y_true.ndim == 2:
            labels, weights = y_true[:, 0].long(), y_true[:, 1].to(y_pred.dtype)
        else:
            labels, weights = y_true.long(), None
        losses = torch.nn.functional.cross_entropy(y_pred, labels, reduction="none")
        if weights is None:
            loss, total = losses.mean(), len(losses)
        else:
            # Weighted mean over the batch (as scikit-learn's MLP); a batch of zero total
            # weight contributes nothing.
            total = weights.sum().clamp_min(torch.finfo(y_pred.dtype).tiny)
            loss = (weights * losses).sum() / total
        if training and self.alpha:
            # MLPClassifier: 0.5 * alpha * ||W||^2 over the batch's total sample weight,
            # weights only (biases and other 1-D parameters are not penalised).
            squares = sum(p.pow(2).sum() for p in self.module_.parameters() if p.ndim >= 2)
            loss = loss + 0.5 * self.alpha * squares / total
        return loss

    def notify(self, method_name, **cb_kwargs):
        super().notify(method_name, **cb_kwargs)
        if method_name == "on_epoch_end" or (
            method_name == "on_batch_end" and cb_kwargs.get("training")
        ):
            reason = getattr(self, "stop_request_", None)
            if reason is not None:
                self.stop_request_ = None
                raise StopTraining(reason)

    def close_epoch(self):
        """Record the train loss of an epoch that a stop request cut short: the mean of
        its batches' losses weighted by their sizes, as skorch's epoch end would."""
        row = self.history[-1]
        if "train_loss" in row or not row["batches"]:
            return
        losses = [b["train_loss"] for b in row["batches"] if "train_loss" in b]
        sizes = [b["train_batch_size"] for b in row["batches"] if "train_loss" in b]
        self.history.record("train_loss", float(np.average(losses, weights=sizes)))
        self.history.record("stopped", True)


class ValidationAccuracy(Callback):
    """``valid_acc``: accuracy on the validation split, weighted as its targets say.

    Counted from the predictions of skorch's validation pass (no second forward pass);
    records nothing when there is no validation split.
    """

    def on_epoch_begin(self, net, **kwargs):
        self.correct_, self.total_ = 0.0, 0.0

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        y = to_numpy(to_tensor(batch[1], device="cpu"))
        labels, weights = (y[:, 0], y[:, 1]) if y.ndim == 2 else (y, np.ones(len(y)))
        hits = to_numpy(y_pred.argmax(dim=1)) == labels.astype(np.int64)
        self.correct_ += float(np.dot(hits, weights))
        self.total_ += float(weights.sum())

    def on_epoch_end(self, net, dataset_valid=None, **kwargs):
        if dataset_valid is not None and self.total_ > 0:
            net.history.record("valid_acc", self.correct_ / self.total_)


class BatchProgress(ProgressBar):
    """skorch's progress bar over each epoch's mini-batches (tqdm, on stderr), shown only
    while the net's ``verbose`` is 2 or more (it may change between fits)."""

    def on_epoch_begin(self, net, **kwargs):
        self.pbar_ = None
        if net.verbose >= 2:
            super().on_epoch_begin(net, **kwargs)

    def on_batch_end(self, net, **kwargs):
        if getattr(self, "pbar_", None) is not None:
            super().on_batch_end(net, **kwargs)

    def on_epoch_end(self, net, **kwargs):
        if getattr(self, "pbar_", None) is not None:
            super().on_epoch_end(net, **kwargs)
            self.pbar_ = None


class PlainPrintLog(PrintLog):
    """skorch's epoch table, whose "best" colour codes are left out when the output is
    not a terminal (a piped log or a file)."""

    def format_row(self, row, key, color):
        if not _is_terminal():
            row = {k: v for k, v in row.items() if k != key + "_best"}
        return super().format_row(row, key, color)


def _is_terminal():
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())
