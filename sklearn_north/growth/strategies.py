"""The paper's Table 1 as data: strategy name -> (trigger, initializer).

``make_strategy`` also accepts a custom ``(trigger, initializer)`` pair of objects, and
replaces the trigger by a preset schedule (``schedules``) on request.
"""

import copy

from .initializers import INITIALIZERS
from .schedules import SCHEDULES
from .triggers import TRIGGERS

#: Strategy name -> (trigger name, initializer name or None).
STRATEGIES = {
    "north-select": ("activation", "select"),
    "north-pre": ("activation", "preactivation"),
    "north-random": ("activation", "random"),
    "north-weight": ("weight", "weight"),
    "gradmax": ("gradient", "gradmax"),
    "firefly": ("gradient", "firefly"),
    "nest": ("gradient", "nest"),
    "static": ("never", None),
}


def make_strategy(
    strategy,
    *,
    gamma=None,
    epsilon=None,
    n_candidates=None,
    rounding=None,
    baseline=None,
    schedule=None,
    schedule_target=None,
    schedule_end=0.75,
):
    """Build fresh ``(trigger, initializer)`` objects for ``strategy``.

    Parameters
    ----------
    strategy : str or (trigger, initializer) tuple
        A key of ``STRATEGIES``, or a custom pair of objects: a trigger and an initializer
        (``Trigger`` / ``Initializer`` instances or any objects with the protocols described
        in ``triggers`` and ``initializers``). A custom pair is deep-copied, never modified.
    gamma, epsilon : float or None
        Override the trigger's defaults where given (``None`` keeps the trigger's own
        default: 0.97 for activations, 0.99 for weights; epsilon 0.01). Named strategies
        only: a custom pair's objects keep their own parameters.
    n_candidates : int or None
        Override the number of candidates of initializers that select among candidates.
        Named strategies only.
    rounding : {"floor_threshold", "floor_difference"} or None
        Override the rounding of the orthogonality triggers (T_act, T_weight; see
        ``triggers.ActivationTrigger``). Named strategies only; ignored by triggers
        without it.
    baseline : {"init", "running_max"} or None
        Override the orthogonality triggers' baseline (``"running_max"``: the paper's CNN
        protocol). Named strategies only; ignored by triggers without it.
    schedule : {"linear", "batched"} or None
        Replace the trigger by this preset schedule (``schedules.SCHEDULES``), keeping the
        initializer. ``epsilon`` (given, or the replaced trigger's) is passed on to it.
    schedule_target : int, sequence of int or None
        The schedule's target widths (``None``: the sites' maximum widths).
    schedule_end : float
        Fraction of the planned training by which the schedule reaches its target.

    Returns
    -------
    trigger, initializer : Trigger, Initializer or None

    Raises
    ------
    ValueError
        Unknown strategy or schedule, a pair that is not of length 2, or a schedule (or a
        growing trigger) without an initializer.
    TypeError
        A strategy that is neither a string nor a tuple, or a pair whose members are not
        callable objects.
    """
    if isinstance(strategy, str):
        trigger, initializer = _named_strategy(
            strategy, gamma, epsilon, n_candidates, rounding, baseline
        )
    else:
        trigger, initializer = _custom_strategy(strategy, allow_no_initializer=schedule is None)
    if schedule is None:
        return trigger, initializer
    if schedule not in SCHEDULES:
        raise ValueError(
            f"Unknown schedule {schedule!r}. Valid schedules are: {sorted(SCHEDULES)}."
        )
    if initializer is None:
        raise ValueError(
            f"schedule={schedule!r} replaces the trigger of the strategy and keeps its "
            f"initializer, but strategy {_describe(strategy)} has no initializer."
        )
    if epsilon is None:
        epsilon = getattr(trigger, "epsilon", 0.01)
    trigger = SCHEDULES[schedule](target=schedule_target, end=schedule_end, epsilon=epsilon)
    return trigger, initializer


def _named_strategy(strategy, gamma, epsilon, n_candidates, rounding=None, baseline=None):
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Valid strategies are: {sorted(STRATEGIES)}."
        )
    trigger_name, init_name = STRATEGIES[strategy]
    trigger = TRIGGERS[trigger_name]()
    initializer = INITIALIZERS[init_name]() if init_name is not None else None
    overrides = {"gamma": gamma, "epsilon": epsilon, "rounding": rounding, "baseline": baseline}
    valid = trigger.get_params(deep=False)
    trigger.set_params(**{k: v for k, v in overrides.items() if v is not None and k in valid})
    if (
        n_candidates is not None
        and initializer is not None
        and "n_candidates" in initializer.get_params(deep=False)
    ):
        initializer.set_params(n_candidates=n_candidates)
    return trigger, initializer


def _custom_strategy(strategy, allow_no_initializer=True):
    if not isinstance(strategy, tuple | list):
        raise TypeError(
            "strategy must be a strategy name or a (trigger, initializer) tuple, got "
            f"{type(strategy).__name__} {strategy!r}."
        )
    if len(strategy) != 2:
        raise ValueError(
            "A custom strategy must be a (trigger, initializer) pair, got a "
            f"{type(strategy).__name__} of length {len(strategy)}."
        )
    trigger, initializer = strategy
    for role, obj, signature in (
        ("trigger", trigger, "(index, site, context) -> TriggerDecision"),
        ("initializer", initializer, "(index, site, k, context, generator) -> NewNeurons"),
    ):
        if obj is None and role == "initializer":
            continue
        if isinstance(obj, type):
            raise TypeError(
                f"The {role} of a custom strategy must be an instance, got the class "
                f"{obj.__name__}; pass {obj.__name__}() instead."
            )
        if not callable(obj):
            raise TypeError(
                f"The {role} of a custom strategy must be callable as {signature}, got "
                f"{type(obj).__name__} {obj!r}."
            )
    if initializer is None and allow_no_initializer and getattr(trigger, "can_grow", True):
        raise ValueError(
            "A custom strategy's initializer may be None only with a trigger that never "
            "grows (can_grow = False)."
        )
    # Fresh objects: whatever the engine does to them, the caller's stay as they were.
    return copy.deepcopy(trigger), copy.deepcopy(initializer)


def _describe(strategy):
    return repr(strategy) if isinstance(strategy, str) else "(trigger, None)"
