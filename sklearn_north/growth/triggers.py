"""Triggers: when, where and how many neurons to add (SPEC section 3).

A trigger is evaluated after an optimizer step for each growth site and returns a
``TriggerDecision``; the callback caps its count at the site's remaining room.

The trigger protocol. Any object is a trigger (e.g. in a custom strategy
``strategy=(trigger, initializer)``) if it is callable as
``trigger(index, site, context) -> TriggerDecision``, where ``index`` is the site's position
in ``module.growth_sites()``, ``site`` a ``GrowthSite`` (``width``, ``max_width``, ``room``,
``producer``, ...) and ``context`` a ``GrowthContext``: ``context.step`` (optimizer steps
so far), ``context.total_steps`` (the steps the training is planned for, see
``GrowthCallback.total_steps_``), ``context.activations(index)`` and
``context.post_gram(index)`` (statistics on the sample buffer). The decision's
``n_neurons`` is capped at ``site.room`` by the callback; its ``metric`` and ``threshold``
are recorded in the growth history. Optional members, with their defaults when absent:

- ``check_params()``: raises ``ValueError`` for invalid parameters; called when fit
  starts, before any training;
- ``initialize(sites, context)``: called once, on the untrained network, when training
  starts (the place to record baselines or initial widths);
- ``reset()``: clears learned state; called before training on the callback's copy;
- ``needs_activations = False``: ``True`` makes the callback keep the sample buffer;
- ``needs_gradients = False``: ``True`` makes the callback record the last training step's
  gradient statistics with hooks (``context.gradients(index)``, see ``gradients``);
- ``can_grow = True``: ``False`` for a trigger that never fires (no initializer needed);
- ``epsilon = 0.01``: passed to the context (initializers use it as a rank threshold).

The callback deep-copies the trigger before training, so state may live on ``self``
(attributes ending with ``_`` by convention); the object passed in is never modified. The
trigger is evaluated every ``trigger_interval`` optimizer steps. Subclassing ``Trigger``
gives the optional members, and ``get_params``/``set_params`` (``ParamsMixin``: store every
``__init__`` argument under its own name) so that ``sklearn.base.clone`` can rebuild it;
objects without ``get_params`` are deep-copied by ``clone``. Estimators are pickled with
their triggers: define the class at module level. Preset schedules are in ``schedules``.

``T_act(l) = max(0, rank_l - floor(M_l * gamma_a * phi_a(f_0, l)))`` by default: the layer
grows whenever its metric ``phi_a(f, l) = rank_l / M_l`` is above the threshold
``gamma_a * phi_a(f_0, l)``, by as many neurons as its rank exceeds the floored threshold
count. This is the authors' code's arithmetic, which produced the paper's figures
(``rounding="floor_threshold"``). The printed eq. 3, ``max(0, floor(M_l * (phi_a(f, l) -
gamma_a * phi_a(f_0, l))))`` (``rounding="floor_difference"``), is 0 for a full-rank layer
narrower than ``1 / (1 - gamma)`` (33 neurons at gamma 0.97, 100 at 0.99), so from the
paper's initial widths it barely grows. ``T_weight(l)`` is the same with the weight metric.
(The paper prints ``min``; that is a typo, with ``min`` nothing could grow.)
``phi(f_0, l)`` is the *baseline*, measured on the network at initialisation; a running
maximum baseline (the CNN default to come, with gamma 0.9) is ``baseline="running_max"``.

``T_grad(l)`` (eq. 6) counts the singular values of the auxiliary gradient ``G`` above
half the sum of the existing neurons' last update norms by default (the authors' code;
eq. 6 as printed sums gradient norms: ``GradientTrigger``).
"""

import math
from dataclasses import dataclass

import torch

from . import metrics
from ._host import host
from ._params import ParamsMixin

BASELINES = ("init", "running_max")
#: ``GradientTrigger``'s ``norms`` values.
GRADIENT_NORMS = ("gradients", "updates")
#: ``GradientTrigger``'s ``reduction`` values: over the layer's neurons.
GRADIENT_REDUCTIONS = ("sum", "mean")


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
    #: Whether the trigger reads the last training step's gradient statistics
    #: (``context.gradients``); the callback then records them with hooks.
    needs_gradients = False
    #: Whether the trigger can ever fire (``False`` for static networks).
    can_grow = True

    def reset(self):
        self.baselines_ = {}
        return self

    def check_params(self):
        """Raise ``ValueError`` for an invalid parameter value (the callback calls this when
        fit starts, before any training)."""

    def initialize(self, sites, context):
        """Record what the trigger needs from the network at initialisation."""

    def __call__(self, index, site, context):
        raise NotImplementedError


class Never(Trigger):
    """The trigger of a static network: never grows."""

    can_grow = False

    def __call__(self, index, site, context):
        return TriggerDecision(0)


#: ``rounding`` values of the orthogonality triggers: floor the threshold count (the
#: authors' code, the default) or floor the difference (the printed eq. 3).
ROUNDINGS = ("floor_threshold", "floor_difference")


def _check_options(trigger, **options):
    """Raise ``ValueError`` unless each named attribute of ``trigger`` is one of its options."""
    for name, allowed in options.items():
        value = getattr(trigger, name)
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")


class _OrthogonalityTrigger(Trigger):
    """``rank - floor(M * gamma * baseline)`` (or eq. 3's ``floor(M * (phi - gamma *
    baseline))``), at least 0, for an effective-dimension ``phi = rank / M``.

    Where not even a full-rank layer would fire (``init`` baseline and a threshold count
    of ``M`` or more), the rank is not computed: the decision is 0 and its ``metric`` is
    ``nan``.
    """

    def __init__(
        self, gamma, epsilon=0.01, baseline="init", method="ldl", rounding="floor_threshold"
    ):
        self.gamma = gamma
        self.epsilon = epsilon
        self.baseline = baseline
        self.method = method
        self.rounding = rounding

    def _rank(self, index, site, context):
        raise NotImplementedError

    def check_params(self):
        _check_options(self, baseline=BASELINES, rounding=ROUNDINGS, method=metrics.METHODS)

    def initialize(self, sites, context):
        self.check_params()
        self.reset()
        for index, site in enumerate(sites):
            self.baselines_[index] = self._rank(index, site, context) / site.width

    def __call__(self, index, site, context):
        width = site.width
        baselines = self.__dict__.setdefault("baselines_", {})
        if self.baseline == "init" and index in baselines:
            threshold = self.gamma * baselines[index]
            # Not even a full-rank layer (rank M) would fire: no rank can change the
            # decision, so none is computed (the metric is reported as nan). E.g. eq. 3
            # with gamma * phi_0 > 1 - 1/M, NORTH-Weight's 64-wide layers.
            if self._n_neurons(width, width, threshold) == 0:
                return TriggerDecision(0, float("nan"), threshold)
        rank = self._rank(index, site, context)
        metric = rank / width
        baseline = baselines.setdefault(index, metric)
        threshold = self.gamma * baseline
        n = self._n_neurons(rank, width, threshold)
        if self.baseline == "running_max":
            baselines[index] = max(baseline, metric)
        return TriggerDecision(n, metric, threshold)

    def _n_neurons(self, rank, width, threshold):
        # floor(M * (rank / M - threshold)) computed as rank - M * threshold: rank is an
        # exact integer, so "metric == threshold" cannot turn into -1 or +1 by rounding.
        if self.rounding == "floor_threshold":
            return max(0, rank - math.floor(width * threshold + 1e-9))
        if self.rounding == "floor_difference":
            return max(0, math.floor(rank - width * threshold + 1e-9))
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}.")


class ActivationTrigger(_OrthogonalityTrigger):
    """``T_act``: effective dimension of the post-activations on the sample buffer.

    Parameters
    ----------
    gamma : float, default=0.97
        Fraction of the initial metric the layer must keep (0.97 for MLPs, 0.9 for CNNs).
    epsilon : float, default=0.01
        Singular values of ``H / sqrt(n)`` above ``epsilon`` count.
    baseline : {"init", "running_max"}, default="init"
        ``"init"``: the metric at initialisation; ``"running_max"``: the largest metric
        seen so far (initialisation included), updated after each evaluation, so the
        threshold is ``gamma * max(phi_0, phi_1, ...)`` (the reference code's CNN
        behaviour, for conv layers whose metric is near zero at initialisation).
    method : {"ldl", "eigh", "svd"}, default="ldl"
        How singular values are counted (see ``metrics.count_singular_values_above``).
    rounding : {"floor_threshold", "floor_difference"}, default="floor_threshold"
        How many neurons a firing adds. ``"floor_threshold"`` (the authors' code, which
        produced the paper's figures): ``rank - floor(M * gamma * phi_0)``, positive
        exactly when ``phi > gamma * phi_0``, so a layer grows whenever its metric is
        above the threshold (a full-rank layer of any width grows). ``"floor_difference"``
        (the printed eq. 3): ``floor(M * (phi - gamma * phi_0))``, one neuron fewer
        whenever ``M * gamma * phi_0`` is not an integer; a full-rank layer narrower than
        ``1 / (1 - gamma * phi_0)`` never grows (4 or 64 neurons at gamma 0.97 or 0.99).
    """

    needs_activations = True

    def __init__(
        self,
        gamma=0.97,
        epsilon=0.01,
        baseline="init",
        method="ldl",
        rounding="floor_threshold",
    ):
        super().__init__(gamma, epsilon, baseline, method, rounding)

    def _rank(self, index, site, context):
        post = context.activations(index).post
        if self.method != "svd":
            n, m = post.shape
            cutoff = self.epsilon**2 * n
            if n < m:
                # Fewer rows than neurons (a CNN's dense layers on one mini-batch: 128 rows,
                # up to 8192 neurons): the samples' Gram has the same non-zero eigenvalues
                # at (n/m)^2 of the cost to form and (n/m)^3 to factorise.
                gram = metrics.gram(post.T)
            else:
                # The Gram matrix is cached in the context: initializers reuse it.
                gram = context.post_gram(index)
            return metrics.count_eigenvalues_above(gram, cutoff, self.method)
        return metrics.activation_rank(post, self.epsilon, self.method)


class WeightTrigger(_OrthogonalityTrigger):
    """``T_weight``: effective dimension of the site's fan-in weights.

    Parameters are those of ``ActivationTrigger``, with ``gamma=0.99`` by default. The rank
    of a weight matrix is bounded by its fan-in ``d``, so growth stops once
    ``rank <= M * gamma * phi_0``: a weight-triggered layer grows to at most ``d / gamma``
    neurons. (With ``rounding="floor_difference"`` and the default gamma, a layer that is
    full rank at initialisation and narrower than 100 neurons can never grow:
    ``floor(M * (1 - 0.99)) = 0``.)
    """

    def __init__(
        self,
        gamma=0.99,
        epsilon=0.01,
        baseline="init",
        method="ldl",
        rounding="floor_threshold",
    ):
        super().__init__(gamma, epsilon, baseline, method, rounding)

    def _rank(self, index, site, context):
        return metrics.weight_rank(site.producer.weight, self.epsilon, self.method)


class GradientTrigger(Trigger):
    """``T_grad`` (paper eq. 6): auxiliary-gradient singular values above a threshold.

    ``T_grad(l) = #{sigma in svdvals(G) : sigma > scale * sum_m (||u_m^in|| + ||u_m^out||)}``

    ``G = dL/dZ_{l+1} H_{l-1}^T`` is the gradient of the loss with respect to an all-zero
    weight matrix bridging the layer's input to its consumer's pre-activations, over the
    mini-batch of the training step just taken; the sum runs over the layer's existing
    neurons, ``u_m^in`` being what that step did to its fan-in row (of the producer) and
    ``u_m^out`` to its fan-out column (of the consumers). ``G`` and the step are captured by
    hooks (``gradients.GradientRecorder``); nothing is recomputed. By GradMax's argument the
    ``k`` largest singular values bound the gradient norm ``k`` new neurons can have.

    Defaults: the authors' code (``norms="updates"``, ``scale=0.5``), which produced the
    paper's figures. The printed eq. 6 sums the *gradient* norms ``||dL/dw_m||`` at scale
    1 (``norms="gradients"``, ``scale=1.0``); that sum grows with the width while
    ``sigma_max(G)`` does not, so from the paper's 64 neurons it never fires (MNIST:
    64-64 for GradMax, Firefly and NeST, where the paper shows 342-308, 105-480 and
    233-265). With the defaults, MNIST (1 seed, the paper's protocol): GradMax 374-241
    (test accuracy 0.978; paper 0.978), Firefly 139-682 (0.970; 0.971), NeST 222-250
    (0.975; 0.978); the mean of the gradient norms instead of their sum
    (``reduction="mean"``) grows both layers to the 784 cap (``benchmarks/SUMMARY.md``).

    Parameters
    ----------
    scale : float, default=0.5
        Multiplies the threshold. ``0.5``: the reference code's halved threshold (which
        also counts ``sigma >= threshold`` and computes ``G`` after the optimizer step;
        neither of those is reproduced). ``1.0`` with ``norms="gradients"``: eq. (6).
    include_bias : bool, default=True
        Count the bias in the fan-in: the paper's ``W_l`` holds the biases as an extra
        column, so a neuron's fan-in includes its bias. ``G`` itself has no bias column
        (the auxiliary connection bridges the layer's input only).
    method : {"ldl", "eigh", "svd"}, default="ldl"
        How singular values are counted (see ``metrics.count_singular_values_above``).
    norms : {"updates", "gradients"}, default="updates"
        What the threshold sums: the norms of what the optimizer step changed in each
        neuron's weights (the reference code: it read the gradient arrays after Flux's
        legacy ``update!``, whose Adam overwrites them in place with its step, so its
        threshold is the norm of the learning-rate-sized updates), or of the step's
        gradients (the paper's eq. 6). With Adam, updates are about ``lr`` per entry
        whatever the gradient's size, so the default threshold scales with ``lr`` and
        with the square root of the fan-in and fan-out.
    reduction : {"sum", "mean"}, default="sum"
        Over the layer's neurons: the sum (eq. 6) or the mean (a new neuron must be able
        to get a stronger gradient than an average existing one).

    Notes
    -----
    ``TriggerDecision.metric`` is the largest singular value of ``G`` and
    ``threshold`` the scaled sum of norms. The largest singular value is only computed
    when the trigger fires (it is ``nan`` otherwise): counting is cheaper.
    """

    needs_gradients = True

    def __init__(
        self, scale=0.5, include_bias=True, method="ldl", norms="updates", reduction="sum"
    ):
        self.scale = scale
        self.include_bias = include_bias
        self.method = method
        self.norms = norms
        self.reduction = reduction

    @property
    def needs_updates(self):
        """Whether the recorder must keep the weights' change over each step."""
        return self.norms == "updates"

    def check_params(self):
        _check_options(
            self, norms=GRADIENT_NORMS, reduction=GRADIENT_REDUCTIONS, method=metrics.METHODS
        )

    def threshold(self, grads):
        """``scale * sum_m (||dL/dw_m^in|| + ||dL/dw_m^out||)`` for ``SiteGradients``
        (the mean over the neurons ``m`` with ``reduction="mean"``)."""
        self.check_params()
        updates = self.needs_updates
        per_neuron = grads.fan_in_grad_norms(
            self.include_bias, updates=updates
        ) + grads.fan_out_grad_norms(updates=updates)
        total = per_neuron.sum() if self.reduction == "sum" else per_neuron.mean()
        return self.scale * float(total)

    def __call__(self, index, site, context):
        grads = context.gradients(index)
        threshold = self.threshold(grads)
        # Upper bounds of sigma_max(G): at or below the threshold no singular value can
        # exceed it and the count (a Gram matrix and its factorisation) is skipped. The
        # first does not even form G (which costs as much as a layer's forward pass), but
        # only pays where the consumers are narrower than the input and G is not so small
        # that forming it costs less than the bound's dozen small operations.
        # On a dense site G's singular values come from its left factor (at most a
        # batch's columns) where that costs less than G itself; a conv site's factor is G.
        bound_pays = use_G = False
        if grads.delta is not None:  # a dense site (a conv site's G has no such bound here)
            n_samples, n_out = grads.delta.shape
            fan_in = math.prod(grads.inputs.shape[1:])
            bound_pays = 2 * n_out <= fan_in and n_samples * n_out * fan_in > SMALL_G
            use_G = not _left_factor_pays(n_samples, n_out, fan_in)
        if bound_pays and self._bound_rules_out(index, grads, threshold):
            return TriggerDecision(0, float("nan"), threshold)
        if self.method == "svd":  # the reference: G's own singular values
            G = grads.G
            n = metrics.count_singular_values_above(G, threshold, self.method)
            if n == 0:
                return TriggerDecision(0, float("nan"), threshold)
            metric = float(torch.linalg.matrix_norm(host(G.detach()).double(), ord=2))
            return TriggerDecision(n, metric, threshold)
        # C C^T = G G^T: the same singular values.
        C = grads.G if use_G else grads.left_factor
        # ||C||_F = ||G||_F; the margin covers the float32 rounding of G (or of its norm).
        if float(torch.linalg.vector_norm(C)) * (1 + 1e-5) <= threshold:
            return TriggerDecision(0, float("nan"), threshold)
        # The count's own Gram (of C's shorter side, as count_singular_values_above forms
        # it) also gives sigma_max: its largest eigenvalue, at a fraction of the cost of
        # the SVD of G that the 2-norm takes.
        gram = metrics.gram(C if C.shape[0] >= C.shape[1] else C.T)
        n = metrics.count_eigenvalues_above(gram, threshold * threshold, self.method)
        metric = float("nan")
        if n > 0:
            metric = float(torch.linalg.eigvalsh(host(gram))[-1].clamp_min(0).sqrt())
        return TriggerDecision(n, metric, threshold)

    # The bound is loose (a row sum times a Frobenius norm): where the threshold is small
    # against the gradients (the default threshold on MNIST-10k) it ruled out 1 of 1023
    # evaluations, at a sixth of the trigger's time. After a try that rules nothing out,
    # a site skips it for twice as many of its evaluations as the last time (1, 2, 4, ...
    # at most BOUND_MAX_SKIP); a try that rules the step out resets that. Only the cost
    # depends on it: the bound never decides what the count would not.

    def reset(self):
        super().reset()
        # site index -> (evaluations still skipping the bound, length of the last skip)
        self.bound_skips_ = {}
        return self

    def _bound_rules_out(self, index, grads, threshold):
        """Whether the bound, if tried at this evaluation of site ``index``, puts
        ``sigma_max(G)`` at or below ``threshold``; updates the site's skips."""
        skips = self.__dict__.setdefault("bound_skips_", {})  # reset() not called: none
        remaining, length = skips.get(index, (0, 0))
        if remaining > 0:
            skips[index] = (remaining - 1, length)
            return False
        if _sigma_max_bound_without_G(grads) <= threshold:
            skips.pop(index, None)
            return True
        length = min(max(2 * length, 1), BOUND_MAX_SKIP)
        skips[index] = (length, length)
        return False


def _left_factor_pays(n, n_out, fan_in):
    """Whether ``GradientTrigger`` takes ``G``'s singular values from its left factor
    (``SiteGradients.left_factor``, ``C = delta^T L``) rather than from ``G``: where the
    batch (``n`` samples) is below ``G``'s shorter side and ``C`` costs less, counted in
    multiply-adds as the trigger uses either: formed (``G`` in the inputs' float32, ``X
    X^T`` and ``delta^T L`` in float64), its norm, then the upper half of the Gram of its
    shorter side and that Gram's factorisation in float64. Float64 counts three times
    float32, as measured at these sizes on one thread.

    ``C`` saves the count most where the batch is far narrower than ``G`` (MNIST's first
    layer, batch 128, ``G`` 385 x 784: 1.3 ms against 3.4), and costs more where it is
    not: at batch 512, ``G`` 719 x 784, ``C`` took 14 ms to form where ``G`` took 4 (22
    and 21 with the count). Firefly on full MNIST (batch 512, its second layer near 719,
    where ``G``'s norm rules most counts out): trigger 28.9 -> 8.9 s, fit 51.4 -> 29.9 s,
    the same model.
    """
    m, M = sorted((n_out, fan_in))
    if n >= m:
        return False
    # X X^T and delta^T L; C's Gram (n x n); the Cholesky factor and the count's LDL.
    via_factor = 3 * n * n * (fan_in + n_out) + 3 * n * n * n_out // 2 + 2 * n**3
    # G; its Gram (m x m); the count's LDL.
    via_G = n * n_out * fan_in + 3 * m * m * M // 2 + m**3
    return via_factor < via_G


#: ``GradientTrigger`` forms ``G`` (rather than first bounding its largest singular value
#: without it) when its product takes at most this many multiply-adds.
SMALL_G = 1 << 20

#: The most evaluations a site skips ``GradientTrigger``'s bound after it ruled nothing
#: out.
BOUND_MAX_SKIP = 64


def _sigma_max_bound_without_G(grads):
    """An upper bound of ``sigma_max(G)``, ``G = delta^T X``, at a fraction of ``G``'s cost.

    ``sigma_max(delta^T X) <= sigma_max(delta) ||X||_F``; ``sigma_max(delta)^2``, the largest
    eigenvalue of the symmetric ``S``, the smaller of ``delta^T delta`` (``n_out x n_out``)
    and ``delta delta^T`` (``n x n``: the same non-zero eigenvalues), is at most its
    largest absolute row sum. ``S`` is rounded in float32: each entry is within ``gamma_L
    ||d_i|| ||d_j||`` of the exact one (``d_j``: column ``j`` of the multiplied side,
    ``L`` its length, ``gamma_L`` about ``L u``, ``u = 2^-24``), and ``||d_j||^2`` is
    ``S``'s diagonal up to the same relative error, so the bound adds ``gamma max_i ||d_i||
    sum_j ||d_j||`` from that diagonal (no second pass over ``delta``). Costs ``n * n_out *
    min(n, n_out)`` where ``G`` costs ``n * n_out * fan_in``. With eq. 6's threshold (the
    sum of gradient norms) it ruled out ~97 % of GradMax's steps on MNIST's 64-64 start;
    with the authors' (the default) 1 of 1023 on MNIST-10k, hence ``GradientTrigger``'s
    back-off.
    """
    delta = grads.delta.detach()
    if delta.numel() == 0:
        return 0.0
    if delta.shape[0] < delta.shape[1]:
        delta = delta.T  # the columns of the n x n Gram are the samples
    # 2 L eps = 4 L u: covers gamma_L and the diagonal's own rounding while L u < 1/4.
    c = 2 * delta.shape[0] * torch.finfo(delta.dtype).eps
    if c >= 0.5:
        return math.inf
    S = delta.T @ delta
    norms = S.diagonal().sqrt()
    row_max, error, x_norm = torch.stack(
        [
            S.abs().sum(dim=1).max(),
            norms.max() * norms.sum(),
            torch.linalg.vector_norm(grads.inputs.detach()).to(S.dtype),
        ]
    ).tolist()  # one transfer, then floats
    sigma2 = row_max + (c / (1 - c)) * error
    # The margin covers the rounding of the row sums and of the norm (non-negative sums).
    return math.sqrt(sigma2) * x_norm * (1 + 1e-4)


#: Trigger classes by name.
TRIGGERS = {
    "never": Never,
    "activation": ActivationTrigger,
    "weight": WeightTrigger,
    "gradient": GradientTrigger,
}
