"""Preset growth schedules: triggers that follow a fixed plan (SPEC section 3).

A schedule replaces a data-driven trigger by a plan fixed before training, so that an
initializer can be studied on its own ("how" without "when"): every site grows from its
initial width ``I`` (its width when training starts) to a target width ``S`` by a fraction
``p`` (``end``) of the planned training, ``T`` optimizer steps. Schedules are ordinary
triggers and pair with any initializer.

The training plan comes from the context: ``context.step`` is ``t``, the optimizer steps
taken so far, and ``context.total_steps`` is ``T``, which ``GrowthCallback`` computes once,
when training starts: ``epochs * steps_per_epoch`` (see ``callback.planned_steps``). With
``H = p * T`` (in exact rational arithmetic, ``p`` read as the fraction it prints:
``0.3`` is 3/10), after step ``t``:

- ``LinearSchedule``: width ``min(S, I + ceil((S - I) * t / H))``. This is the paper's "one
  neuron per step while ``M < I + (S - I) * t / H``" whenever the line rises by at most one
  neuron per step; a steeper line (or a ``trigger_interval`` above 1) adds the several
  neurons that catch up with it.
- ``BatchedSchedule``: ``n_stages`` (8) stages at the evenly spaced moments
  ``t_j = j * H / n_stages``, ``j = 1..n_stages``: once ``t >= t_j`` the width is
  ``I + floor(j * (S - I) / n_stages)``. When ``n_stages`` divides ``S - I`` these are the
  paper's equal stages of ``(S - I) / n_stages`` neurons. Otherwise the paper's
  ``floor((S - I) / 8)`` per stage would stop up to 7 neurons short of ``S``; here the
  remainder is spread over the stages (sizes differ by at most one neuron) and ``S`` is
  reached. Stages whose moments fall within one trigger evaluation are added together.

Both reach ``S`` at the first evaluation at or after step ``H`` (step ``ceil(H)`` with the
default ``trigger_interval=1``), never add a neuron past ``S`` and never remove any (a site
already wider than the plan is left alone). Training beyond ``T`` (``warm_start``, more
``partial_fit`` calls) keeps the plan: the sites stay at ``S``.
"""

import math
from fractions import Fraction

from .triggers import Trigger, TriggerDecision


class _Schedule(Trigger):
    """Grow each site from its initial width to a target by a fraction of training."""

    def __init__(self, target=None, end=0.75, epsilon=0.01):
        self.target = target
        self.end = end
        self.epsilon = epsilon

    def planned_width(self, initial, target, step, total_steps):
        """Width the plan calls for after ``step`` of ``total_steps`` optimizer steps."""
        raise NotImplementedError

    def reset(self):
        self.initial_widths_ = {}
        self.targets_ = {}
        return self

    def initialize(self, sites, context):
        """Record each site's initial width and resolve its target."""
        if not 0 < self.end <= 1:
            raise ValueError(f"end must be in (0, 1], got {self.end!r}.")
        targets = self._targets(sites)
        self.reset()
        for index, (site, target) in enumerate(zip(sites, targets)):
            if target < site.width:
                raise ValueError(
                    f"The schedule's target width {target} of site {index} is below its "
                    f"initial width {site.width}."
                )
            if site.max_width is not None and target > site.max_width:
                raise ValueError(
                    f"The schedule's target width {target} of site {index} exceeds its "
                    f"maximum width {site.max_width}."
                )
            self.initial_widths_[index] = site.width
            self.targets_[index] = target

    def __call__(self, index, site, context):
        total_steps = getattr(context, "total_steps", None)
        if total_steps is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the training plan (context.total_steps); "
                "run it through GrowthCallback, which sets it when training starts."
            )
        if index not in self.__dict__.get("targets_", {}):
            raise RuntimeError(f"{type(self).__name__}.initialize was not called.")
        initial, target = self.initial_widths_[index], self.targets_[index]
        planned = self.planned_width(initial, target, context.step, total_steps)
        # Never past the target, never a negative count.
        planned = min(planned, target)
        # The history's "metric" is the planned width, its "threshold" the width before.
        return TriggerDecision(max(0, planned - site.width), float(planned), float(site.width))

    def _horizon(self, total_steps):
        # H = p * T in exact arithmetic, p read as the decimal it prints (0.3 is 3/10, not
        # the float slightly below it, which would move steps where p * T is whole).
        return Fraction(self.end).limit_denominator(10**6) * int(total_steps)

    def _targets(self, sites):
        if self.target is None:
            if any(site.max_width is None for site in sites):
                raise ValueError(
                    "target=None means the sites' maximum widths, but a site has none; "
                    "give the target widths."
                )
            return [int(site.max_width) for site in sites]
        if hasattr(self.target, "__index__"):  # int, numpy integer
            return [int(self.target)] * len(sites)
        targets = [int(t) for t in self.target]
        if len(targets) != len(sites):
            raise ValueError(
                f"target has {len(targets)} widths but the network has {len(sites)} sites."
            )
        return targets


class LinearSchedule(_Schedule):
    """Grow linearly: one neuron per step while ``M < I + (S - I) * t / (p * T)``.

    After step ``t`` every site has width ``min(S, I + ceil((S - I) * t / (p * T)))``
    (see the module docstring for ``T`` and for lines steeper than one neuron per step).

    Parameters
    ----------
    target : int, sequence of int or None, default=None
        Target width ``S`` (an int applies to every site). ``None``: each site's maximum
        width.
    end : float in (0, 1], default=0.75
        Fraction ``p`` of the planned training by which the target is reached (the paper:
        0.75 for MLPs, 0.25 for CNNs).
    epsilon : float, default=0.01
        Not used by the schedule; passed to the initializer through the context (the
        numerical-rank threshold of Select and Pre-activation).
    """

    def planned_width(self, initial, target, step, total_steps):
        horizon = self._horizon(total_steps)
        if step >= horizon:
            return target
        return initial + math.ceil((target - initial) * Fraction(step) / horizon)


class BatchedSchedule(_Schedule):
    """Grow in ``n_stages`` evenly spaced batches of (nearly) equal size.

    After step ``t`` every site has width ``I + floor(j * (S - I) / n_stages)`` with
    ``j = min(n_stages, floor(n_stages * t / (p * T)))`` stages done (see the module
    docstring for where the remainder of ``(S - I) / n_stages`` goes).

    Parameters
    ----------
    target : int, sequence of int or None, default=None
        Target width ``S`` (an int applies to every site). ``None``: each site's maximum
        width.
    end : float in (0, 1], default=0.75
        Fraction ``p`` of the planned training at which the last stage is added.
    n_stages : int, default=8
        Number of stages (the paper: 8).
    epsilon : float, default=0.01
        Not used by the schedule; passed to the initializer through the context.
    """

    def __init__(self, target=None, end=0.75, n_stages=8, epsilon=0.01):
        super().__init__(target=target, end=end, epsilon=epsilon)
        self.n_stages = n_stages

    def planned_width(self, initial, target, step, total_steps):
        if int(self.n_stages) < 1:
            raise ValueError(f"n_stages must be >= 1, got {self.n_stages!r}.")
        n_stages = int(self.n_stages)
        horizon = self._horizon(total_steps)
        done = n_stages if step >= horizon else math.floor(n_stages * Fraction(step) / horizon)
        return initial + (target - initial) * min(done, n_stages) // n_stages


#: Schedule classes by name (the estimators' ``schedule`` parameter).
SCHEDULES = {
    "linear": LinearSchedule,
    "batched": BatchedSchedule,
}
