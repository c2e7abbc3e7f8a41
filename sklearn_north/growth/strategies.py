"""The paper's Table 1 as data: strategy name -> (trigger, initializer)."""

from .initializers import INITIALIZERS
from .triggers import TRIGGERS

#: Strategy name -> (trigger name, initializer name or None).
STRATEGIES = {
    "north-select": ("activation", "select"),
    "north-pre": ("activation", "preactivation"),
    "north-random": ("activation", "random"),
    "north-weight": ("weight", "weight"),
    "static": ("never", None),
}


def make_strategy(strategy, *, gamma=None, epsilon=None, n_candidates=None):
    """Build fresh ``(trigger, initializer)`` objects for ``strategy``.

    Parameters
    ----------
    strategy : str
        A key of ``STRATEGIES``.
    gamma, epsilon : float or None
        Override the trigger's defaults where given (``None`` keeps the trigger's own
        default: 0.97 for activations, 0.99 for weights; epsilon 0.01).
    n_candidates : int or None
        Override the number of candidates of initializers that select among candidates.

    Returns
    -------
    trigger, initializer : Trigger, Initializer or None
    """
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Valid strategies are: {sorted(STRATEGIES)}."
        )
    trigger_name, init_name = STRATEGIES[strategy]
    trigger = TRIGGERS[trigger_name]()
    initializer = INITIALIZERS[init_name]() if init_name is not None else None
    overrides = {"gamma": gamma, "epsilon": epsilon}
    valid = trigger.get_params(deep=False)
    trigger.set_params(**{k: v for k, v in overrides.items() if v is not None and k in valid})
    if (
        n_candidates is not None
        and initializer is not None
        and "n_candidates" in initializer.get_params(deep=False)
    ):
        initializer.set_params(n_candidates=n_candidates)
    return trigger, initializer
