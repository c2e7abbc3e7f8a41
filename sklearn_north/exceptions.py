"""Warnings of sklearn-north (as ``sklearn.exceptions``)."""

__all__ = ["GrowthCapacityWarning"]


class GrowthCapacityWarning(UserWarning):
    """What the data can measure bounds how far a layer can grow.

    Raised by ``fit`` when the training set has no more samples than a layer's maximum
    width and the strategy measures activations: a layer's activations on ``n`` samples
    have rank at most ``n``, so the metric stops such a layer near ``n`` neurons whatever
    the task (widths then follow the number of samples, not the data).
    """
