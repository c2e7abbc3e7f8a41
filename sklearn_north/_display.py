"""``GrowthDisplay``: a fitted network's widths over training, its growth events and its loss.

A scikit-learn style display (as ``sklearn.metrics.RocCurveDisplay``): ``from_estimator``
reads a fitted ``GrowingMLPClassifier`` or ``GrowingCNNClassifier`` and plots it; ``plot``
draws and keeps the artists. matplotlib is imported only when drawing.
"""

import numpy as np
import pandas as pd
from sklearn.utils._optional_dependencies import check_matplotlib_support
from sklearn.utils.validation import check_is_fitted

from ._base import BaseGrowingClassifier
from ._cnn import GrowingCNNClassifier


class GrowthDisplay:
    """Widths of a growing network's sites over optimizer steps, with its loss.

    The widths of each growth site (hidden layer, conv) form a step function of the
    optimizer step: from the initial widths at step 0 through every growth event to the
    last step of training. Growth events are marked on it, and a second axis shows the
    training loss (and validation accuracy, under early stopping) at the end of each
    epoch, placed at the epoch's last optimizer step so that both share the x axis. For a
    CNN the widths can be shown relative to its architecture's standard widths (the
    paper's Figure 5: a value of 1 is the standard network).

    Build it with :meth:`from_estimator`; the constructor takes the data themselves.

    Parameters
    ----------
    steps : array-like of shape (n_points,)
        Increasing optimizer steps at which the widths are given, from 0 to the last step
        of training: a site's width is ``widths[i]`` from ``steps[i]`` until
        ``steps[i + 1]``.
    widths : array-like of shape (n_points, n_sites)
        Each site's width (neurons or channels) from each of ``steps`` on.
    site_names : list of str of length n_sites
        What the legend calls each site.
    events : pandas.DataFrame
        One row per growth event, with at least the columns ``step`` (the optimizer step
        after which it happened), ``layer`` (the site's index) and ``width`` (the site's
        width after it): an estimator's ``growth_history_``. Each is marked on its site's
        line. None: no events.
    loss_curve : array-like of shape (n_epochs,)
        Training loss of each epoch.
    validation_scores : array-like of shape (n_epochs,) or None, default=None
        Validation accuracy of each epoch (NaN where an epoch had none); None: not shown.
    standard_widths : array-like of shape (n_sites,) or None, default=None
        The architecture's standard width of each site, for ``relative=True``.
    epoch_steps : array-like of shape (n_epochs,) or None, default=None
        The optimizer step at which each epoch ended (where its loss is drawn). None:
        ``steps[-1]`` split evenly over the epochs (epochs of equal batch counts).

    Attributes
    ----------
    ax_ : matplotlib Axes
        Axes with the widths.
    loss_ax_ : matplotlib Axes
        Axes with the loss (and validation accuracy).
    figure_ : matplotlib Figure
        Figure of ``ax_``.
    lines_ : list of matplotlib Line2D
        One width line per site (a step function, ``drawstyle="steps-post"``).
    markers_ : list of matplotlib Line2D
        One line of markers per site, at its growth events (no data where it never grew).
    loss_line_ : matplotlib Line2D
        The training loss per epoch.
    validation_line_ : matplotlib Line2D or None
        The validation accuracy per epoch; None without validation scores.
    reference_line_ : matplotlib Line2D or None
        The standard width (1.0) when the widths are relative; None otherwise.
    relative_ : bool
        Whether the widths were drawn relative to the standard widths.

    Notes
    -----
    :meth:`from_estimator` counts optimizer steps as the growth callback does: training
    batches, over every fit of the network (a ``warm_start`` or ``partial_fit``
    continuation goes on from the last step). Under early stopping the estimator keeps the
    best epoch's network and its growth history: those events are drawn, and its widths
    then stay flat to the last step trained.

    See Also
    --------
    GrowingMLPClassifier.growth_history_, GrowingCNNClassifier.growth_history_ :
        The growth events the display draws.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_north import GrowingMLPClassifier, GrowthDisplay
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = GrowingMLPClassifier(max_epochs=5, random_state=0).fit(X / 16, y)
    >>> display = GrowthDisplay.from_estimator(clf)  # doctest: +SKIP
    """

    def __init__(
        self,
        steps,
        widths,
        site_names,
        events,
        loss_curve,
        validation_scores=None,
        standard_widths=None,
        *,
        epoch_steps=None,
    ):
        self.steps = steps
        self.widths = widths
        self.site_names = site_names
        self.events = events
        self.loss_curve = loss_curve
        self.validation_scores = validation_scores
        self.standard_widths = standard_widths
        self.epoch_steps = epoch_steps

    @classmethod
    def from_estimator(
        cls,
        estimator,
        *,
        relative="auto",
        name=None,
        log_steps=False,
        ax=None,
        loss_ax=None,
        **kwargs,
    ):
        """Plot the growth of a fitted growing estimator.

        Parameters
        ----------
        estimator : GrowingMLPClassifier or GrowingCNNClassifier
            A fitted estimator.
        relative : "auto" or bool, default="auto"
            Widths relative to the architecture's standard widths (a CNN's only);
            ``"auto"``: relative for a ``GrowingCNNClassifier``, absolute for a
            ``GrowingMLPClassifier``.
        name : str or None, default=None
            Title of the widths' axes.
        log_steps : bool, default=False
            A logarithmic step axis; see :meth:`plot`.
        ax, loss_ax : matplotlib Axes or None, default=None
            Where to draw; see :meth:`plot`.
        **kwargs : dict
            Passed to matplotlib's ``plot`` for the width lines.

        Returns
        -------
        display : GrowthDisplay

        Raises
        ------
        TypeError
            If ``estimator`` is not a growing estimator of this package.
        sklearn.exceptions.NotFittedError
            If it is not fitted.
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        display = cls._from_fitted(estimator)
        return display.plot(
            ax=ax, loss_ax=loss_ax, relative=relative, name=name, log_steps=log_steps, **kwargs
        )

    @classmethod
    def _from_fitted(cls, estimator):
        """The display's data read from a fitted estimator (nothing drawn)."""
        if not isinstance(estimator, BaseGrowingClassifier):
            hint = (
                " (for a Pipeline, pass its last step: pipeline[-1])"
                if hasattr(estimator, "steps")
                else ""
            )
            raise TypeError(
                "GrowthDisplay shows the growth of a GrowingMLPClassifier or "
                f"GrowingCNNClassifier; got {type(estimator).__name__}{hint}."
            )
        check_is_fitted(estimator)
        history = estimator.growth_history_
        final = np.asarray(estimator.hidden_layer_sizes_, dtype=np.int64)
        # Initial widths: what the events added, taken off the final ones (the network of
        # the fit, whatever the parameters say now).
        added = np.bincount(
            history.layer.to_numpy(), weights=history.n_added.to_numpy(), minlength=len(final)
        ).astype(np.int64)
        initial = final - added
        # Optimizer steps are training batches (as the growth callback counts them);
        # under early stopping the history also records validation batches.
        net_history = estimator.net_.history
        per_epoch = [sum("train_loss" in b for b in row["batches"]) for row in net_history]
        epoch_steps = np.cumsum(per_epoch, dtype=np.int64)
        steps = np.unique(np.r_[0, history.step.to_numpy(), epoch_steps[-1]]).astype(np.int64)
        widths = np.tile(initial, (len(steps), 1))
        for step, layer, width in zip(history.step, history.layer, history.width):
            widths[steps >= step, layer] = width
        validation = None
        if estimator.validation_scores_ is not None:
            validation = np.array([row.get("valid_acc", np.nan) for row in net_history], float)
        if isinstance(estimator, GrowingCNNClassifier):
            names = [site.name for site in estimator.module_.growth_sites()]
            standard = estimator._standard_widths()
        else:
            names = [f"layer {i}" for i in range(len(final))]
            standard = None
        return cls(
            steps=steps,
            widths=widths,
            site_names=names,
            events=history,
            loss_curve=np.asarray(estimator.loss_curve_, dtype=float),
            validation_scores=validation,
            standard_widths=standard,
            epoch_steps=epoch_steps,
        )

    def plot(self, ax=None, *, loss_ax=None, relative="auto", name=None, log_steps=False, **kwargs):
        """Draw the widths, the growth events and the loss.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Axes for the widths. None: a new figure with two panels sharing the x axis,
            the widths above and the loss below.
        loss_ax : matplotlib Axes or None, default=None
            Axes for the loss (and validation accuracy). None with ``ax`` given: a twin of
            ``ax`` (``ax.twinx()``, its own y axis on the right).
        relative : "auto" or bool, default="auto"
            Divide each site's width by its standard width (needs ``standard_widths``);
            ``"auto"``: relative when ``standard_widths`` is given.
        name : str or None, default=None
            Title of the widths' axes.
        log_steps : bool, default=False
            A logarithmic step axis (``symlog``: linear from 0 to 1, where the first
            events are, logarithmic beyond), for growth that ends early in a long
            training. On both axes where they share it.
        **kwargs : dict
            Passed to matplotlib's ``plot`` for the width lines (e.g. ``linewidth``).

        Returns
        -------
        display : GrowthDisplay
            With the ``ax_``, ``loss_ax_``, ``figure_`` and artists' attributes.
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        steps, widths, standard, events, loss, validation, epoch_steps = self._checked()
        relative = self._resolve_relative(relative, standard)

        if ax is None:
            import matplotlib.pyplot as plt

            ax, new_loss_ax = stacked_axes(plt.figure(figsize=(7, 5.5), layout="constrained"))
            loss_ax = new_loss_ax if loss_ax is None else loss_ax
        elif loss_ax is None:
            loss_ax = ax.twinx()

        scale = standard if relative else np.ones(widths.shape[1])
        self.lines_, self.markers_ = [], []
        for index, site in enumerate(self.site_names):
            (line,) = ax.plot(
                steps,
                widths[:, index] / scale[index],
                **{"label": site, "drawstyle": "steps-post", **kwargs},
            )
            grew = events[events.layer == index]
            (markers,) = ax.plot(
                grew.step.to_numpy(),
                grew.width.to_numpy() / scale[index],
                linestyle="none",
                marker="o",
                markersize=4,
                color=line.get_color(),
            )
            self.lines_.append(line)
            self.markers_.append(markers)
        self.reference_line_ = None
        if relative:
            self.reference_line_ = ax.axhline(
                1.0, color="grey", linestyle=":", linewidth=1, label="standard width"
            )
            ax.set_ylabel("width / standard width")
        else:
            ax.set_ylabel("width (neurons or channels)")
        if name is not None:
            ax.set_title(name)
        # Widths only grow: the lower right is where the lines are least.
        ax.legend(loc="lower right", fontsize="small")

        # Fixed colours: on a twin axis the colour cycle would repeat the sites'.
        (self.loss_line_,) = loss_ax.plot(
            epoch_steps, loss, color="black", marker=".", label="training loss"
        )
        self.validation_line_ = None
        if validation is not None:
            (self.validation_line_,) = loss_ax.plot(
                epoch_steps,
                validation,
                color="black",
                linestyle="--",
                marker=".",
                label="validation accuracy",
            )
            loss_ax.set_ylabel("loss / validation accuracy")
        else:
            loss_ax.set_ylabel("training loss")
        loss_ax.legend(loc="best", fontsize="small")
        # The x label under the lower of two panels sharing it; on the widths' axes too
        # where the loss is on their twin (whose x axis is hidden) or on axes of its own.
        shares_x = ax.get_shared_x_axes().joined(ax, loss_ax)
        twin = shares_x and loss_ax.get_position().bounds == ax.get_position().bounds
        label = "optimizer step" + (" (log scale)" if log_steps else "")
        if twin or not shares_x:
            ax.set_xlabel(label)
        loss_ax.set_xlabel(label)
        if log_steps:
            for axes in {ax, loss_ax}:
                axes.set_xscale("symlog", linthresh=1)

        self.ax_, self.loss_ax_, self.figure_ = ax, loss_ax, ax.figure
        self.relative_ = relative
        return self

    # -- helpers ----------------------------------------------------------------------

    def _checked(self):
        """The data as arrays, their shapes checked against each other."""
        steps = np.asarray(self.steps)
        widths = np.asarray(self.widths, dtype=float)
        if steps.ndim != 1 or len(steps) < 1 or np.any(np.diff(steps) <= 0):
            raise ValueError("steps must be a non-empty 1-D array of increasing steps.")
        if widths.ndim != 2 or widths.shape != (len(steps), len(self.site_names)):
            raise ValueError(
                f"widths must have shape (len(steps), len(site_names)) = "
                f"({len(steps)}, {len(self.site_names)}); got {widths.shape}."
            )
        standard = None
        if self.standard_widths is not None:
            standard = np.asarray(self.standard_widths, dtype=float)
            if standard.shape != (widths.shape[1],) or np.any(standard <= 0):
                raise ValueError(
                    f"standard_widths must hold one positive width per site "
                    f"({widths.shape[1]}); got {self.standard_widths!r}."
                )
        events = pd.DataFrame(
            self.events, columns=None if self.events is not None else ["step", "layer", "width"]
        )
        missing = {"step", "layer", "width"} - set(events.columns)
        if missing:
            raise ValueError(
                f"events must have the columns step, layer and width (as growth_history_); "
                f"missing {sorted(missing)}."
            )
        loss = np.asarray(self.loss_curve, dtype=float)
        if loss.ndim != 1 or len(loss) < 1:
            raise ValueError("loss_curve must be a non-empty 1-D array, one loss per epoch.")
        validation = None
        if self.validation_scores is not None:
            validation = np.asarray(self.validation_scores, dtype=float)
            if validation.shape != loss.shape:
                raise ValueError(
                    f"validation_scores must have one score per epoch ({len(loss)}, as "
                    f"loss_curve); got shape {validation.shape}."
                )
        if self.epoch_steps is None:
            epoch_steps = steps[-1] * np.arange(1, len(loss) + 1) / len(loss)
        else:
            epoch_steps = np.asarray(self.epoch_steps)
            if epoch_steps.shape != loss.shape:
                raise ValueError(
                    f"epoch_steps must have one step per epoch ({len(loss)}, as loss_curve); "
                    f"got shape {epoch_steps.shape}."
                )
        return steps, widths, standard, events, loss, validation, epoch_steps

    @staticmethod
    def _resolve_relative(relative, standard):
        if isinstance(relative, str) and relative == "auto":
            return standard is not None
        if not isinstance(relative, bool | np.bool_):
            raise ValueError(f"relative must be 'auto', True or False; got {relative!r}.")
        if relative and standard is None:
            raise ValueError(
                "relative=True needs the architecture's standard widths, which only a "
                "GrowingCNNClassifier has (standard_widths); use relative=False."
            )
        return bool(relative)


def stacked_axes(figure):
    """Two axes of ``figure`` sharing their x axis: the widths' above, the loss's below."""
    ax, loss_ax = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (2, 1)})
    return ax, loss_ax
