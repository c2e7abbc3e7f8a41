"""Triggers: when, where and how many neurons to add (SPEC section 3).

A trigger is evaluated after an optimizer step for each growth site and returns a
``TriggerDecision``; the callback caps its count at the site's remaining room.

``T_act(l)    = max(0, floor(M_l * (phi_a(f, l) - gamma_a * phi_a(f_0, l))))``
``T_weight(l)`` is the same with the weight metric. (The paper prints ``min``; that is a
typo, with ``min`` nothing could grow.) ``phi(f_0, l)`` is the *baseline*, measured on the
network at initialisation. For CNNs a running maximum baseline is offered.
"""

import math
from dataclasses import dataclass

from . import metrics
from ._params import ParamsMixin

BASELINES = ("init", "running_max")


@dataclass
class TriggerDecision:
    """A trigger's answer for one site: how many neurons, and why."""

    n_neurons: int
    metric: float = float("nan")
    threshold: float = float("nan")


class Trigger(ParamsMixin):
    """Base class of triggers.

    Subclasses implement ``__call__(index, site, context) -> TriggerDecision`` and may use
    ``initialize(sites, context)``, called once on the untrained network. Learned state
    (baselines) lives in attributes ending with ``_``; ``reset()`` clears it.
    """

    #: Whether the trigger needs activations on the sample buffer.
    needs_activations = False
    #: Whether the trigger can ever fire (``False`` for static networks).
    can_grow = True

    def reset(self):
        self.baselines_ = {}
        return self

    def initialize(self, sites, context):
        """Record what the trigger needs from the network at initialisation."""

    def __call__(self, index, site, context):
        raise NotImplementedError


class Never(Trigger):
    """The trigger of a static network: never grows."""

    can_grow = False

    def __call__(self, index, site, context):
        return TriggerDecision(0)


class _OrthogonalityTrigger(Trigger):
    """``max(0, floor(M * (phi - gamma * baseline)))`` for an effective-dimension ``phi``."""

    def __init__(self, gamma, epsilon=0.01, baseline="init", method="ldl"):
        self.gamma = gamma
        self.epsilon = epsilon
        self.baseline = baseline
        self.method = method

    def _rank(self, index, site, context):
        raise NotImplementedError

    def initialize(self, sites, context):
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}.")
        self.reset()
        for index, site in enumerate(sites):
            self.baselines_[index] = self._rank(index, site, context) / site.width

    def __call__(self, index, site, context):
        width = site.width
        rank = self._rank(index, site, context)
        metric = rank / width
        baselines = self.__dict__.setdefault("baselines_", {})
        baseline = baselines.setdefault(index, metric)
        threshold = self.gamma * baseline
        # floor(M * (rank / M - threshold)) computed as rank - M * threshold: rank is an
        # exact integer, so "metric == threshold" cannot turn into -1 or +1 by rounding.
        n = max(0, math.floor(rank - width * threshold + 1e-9))
        if self.baseline == "running_max":
            baselines[index] = max(baseline, self.gamma * metric)
        return TriggerDecision(n, metric, threshold)


class ActivationTrigger(_OrthogonalityTrigger):
    """``T_act``: effective dimension of the post-activations on the sample buffer.

    Parameters
    ----------
    gamma : float, default=0.97
        Fraction of the initial metric the layer must keep (0.97 for MLPs, 0.9 for CNNs).
    epsilon : float, default=0.01
        Singular values of ``H / sqrt(n)`` above ``epsilon`` count.
    baseline : {"init", "running_max"}, default="init"
        ``"init"``: the metric at initialisation; ``"running_max"``: also raised to
        ``gamma * phi`` after each evaluation (the reference code's CNN behaviour).
    method : {"ldl", "eigh", "svd"}, default="ldl"
        How singular values are counted (see ``metrics.count_singular_values_above``).
    """

    needs_activations = True

    def __init__(self, gamma=0.97, epsilon=0.01, baseline="init", method="ldl"):
        super().__init__(gamma=gamma, epsilon=epsilon, baseline=baseline, method=method)

    def _rank(self, index, site, context):
        post = context.activations(index).post
        if self.method != "svd":
            # The Gram matrix is cached in the context: initializers reuse it.
            cutoff = self.epsilon**2 * post.shape[0]
            return metrics.count_eigenvalues_above(context.post_gram(index), cutoff, self.method)
        return metrics.activation_rank(post, self.epsilon, self.method)


class WeightTrigger(_OrthogonalityTrigger):
    """``T_weight``: effective dimension of the site's fan-in weights.

    Parameters are those of ``ActivationTrigger``, with ``gamma=0.99`` by default. The rank
    of a weight matrix is bounded by its fan-in ``d``, so growth stops once
    ``rank <= M * gamma * phi_0``: a weight-triggered layer grows to at most ``d / gamma``
    neurons. With the default gamma, a layer that is full rank at initialisation and
    narrower than 100 neurons can never grow (``floor(M * (1 - 0.99)) = 0``): start wider
    or lower gamma.
    """

    def __init__(self, gamma=0.99, epsilon=0.01, baseline="init", method="ldl"):
        super().__init__(gamma=gamma, epsilon=epsilon, baseline=baseline, method=method)

    def _rank(self, index, site, context):
        return metrics.weight_rank(site.producer.weight, self.epsilon, self.method)


#: Trigger classes by name.
TRIGGERS = {
    "never": Never,
    "activation": ActivationTrigger,
    "weight": WeightTrigger,
}
