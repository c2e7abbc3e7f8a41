"""Triggers T_act, T_weight and Never (SPEC section 3)."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_north.growth import (
    ActivationTrigger,
    GrowthContext,
    GrowthSite,
    Never,
    NewNeurons,
    SiteActivations,
    WeightTrigger,
    activation_metric,
    add_neurons,
)
from sklearn_north.growth.metrics import gram

N_SAMPLES = 64
FAN_IN = 48


def orthogonal(n, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)))
    return q


#: The uncounted singular values of the fake matrices, relative to the counted ones: below
#: the default epsilon (0.01) after the metric's normalisation, above it without (x 8 for
#: 64 samples, x 6.9 for a fan-in of 48), so that a wrong normalisation changes counts.
SMALL = 0.003


def rank_r_matrix(n, m, r, scale, seed):
    """``scale * U diag(1, .., 1, SMALL, .., SMALL) V^T`` (n x m): r singular values equal
    to ``scale``, the others to ``SMALL * scale``."""
    core = torch.zeros(n, m, dtype=torch.float64)
    k = min(n, m)
    core[range(k), range(k)] = SMALL * scale
    core[range(r), range(r)] = scale
    return orthogonal(n, seed).double() @ core @ orthogonal(m, seed + 1).double()


def site_of_width(width, weight_rank=None, seed=0):
    """A dense site of ``width`` neurons; its fan-in weights have rank ``weight_rank``
    (singular values of W / sqrt(fan_in) equal to 1 or ``SMALL``)."""
    producer = nn.Linear(FAN_IN, width)
    if weight_rank is not None:
        W = rank_r_matrix(width, FAN_IN, weight_rank, math.sqrt(FAN_IN), seed)
        with torch.no_grad():
            producer.weight.copy_(W)
    return GrowthSite(f"w{width}", producer, [], torch.relu)


class FakeContext:
    """Post-activations of known rank per site: singular values of H / sqrt(n) are 1 or
    ``SMALL``."""

    def __init__(self, widths_and_ranks, seed=0):
        self.post = [
            rank_r_matrix(N_SAMPLES, width, rank, math.sqrt(N_SAMPLES), seed + i).float()
            for i, (width, rank) in enumerate(widths_and_ranks)
        ]

    def activations(self, index):
        return SiteActivations(inputs=None, pre=None, post=self.post[index])

    def post_gram(self, index):
        return gram(self.post[index])


def expected_count(gamma, rank0, width0, rank, width, rounding="floor_threshold"):
    """The trigger's count in exact arithmetic (gamma read as a decimal):
    ``max(0, rank - floor(M gamma phi0))`` (the default) or eq. 3's
    ``max(0, floor(M (phi - gamma phi0)))``."""
    phi0 = Fraction(rank0, width0)
    threshold = width * Fraction(str(gamma)) * phi0
    if rounding == "floor_threshold":
        return max(0, rank - math.floor(threshold))
    return max(0, math.floor(rank - threshold))


def evaluate_activation(trigger, width0, rank0, width, rank, seed=0):
    trigger.initialize([site_of_width(width0)], FakeContext([(width0, rank0)], seed))
    return trigger(0, site_of_width(width), FakeContext([(width, rank)], seed + 7))


def evaluate_weight(trigger, width0, rank0, width, rank, seed=0):
    trigger.initialize([site_of_width(width0, rank0, seed)], None)
    return trigger(0, site_of_width(width, rank, seed + 7), None)


EVALUATORS = {
    "activation": (ActivationTrigger, evaluate_activation),
    "weight": (WeightTrigger, evaluate_weight),
}

# (gamma, width0, rank0, width, rank, floor_threshold, floor_difference); hand-checked,
# boundary cases included.
CASES = [
    (0.75, 10, 8, 10, 6, 0, 0),  # phi == gamma phi0 = 0.6 exactly -> 0
    (0.75, 10, 8, 10, 7, 1, 1),  # 0.7 - 0.6 < 0.1 in floats; exactly 1
    (0.75, 10, 8, 10, 5, 0, 0),  # below the threshold
    (0.75, 10, 8, 10, 10, 4, 4),
    (0.5, 4, 4, 12, 6, 0, 0),  # phi == threshold after growth (width changed)
    (0.5, 4, 4, 12, 7, 1, 1),
    (0.5, 4, 4, 12, 12, 6, 6),
    (0.97, 10, 10, 10, 10, 1, 0),  # 10 - floor(9.7); floor(0.3)
    (0.97, 10, 10, 40, 40, 2, 1),  # 40 - floor(38.8); floor(1.2)
    (0.97, 10, 10, 40, 39, 1, 0),  # 39 - 38; floor(0.2)
    (0.9, 10, 5, 12, 9, 4, 3),  # 9 - floor(5.4); floor(9 - 5.4)
    (0.9, 20, 9, 40, 18, 2, 1),  # 18 - floor(16.2); floor(1.8)
    (0.99, 8, 0, 8, 3, 3, 3),  # zero baseline: every counted direction triggers
    (1.0, 10, 10, 20, 19, 0, 0),
]


@pytest.mark.parametrize("kind", list(EVALUATORS))
@pytest.mark.parametrize(
    ("gamma", "width0", "rank0", "width", "rank", "threshold", "difference"), CASES
)
def test_trigger_count_on_known_ranks(
    kind, gamma, width0, rank0, width, rank, threshold, difference
):
    cls, evaluate = EVALUATORS[kind]
    if kind == "weight" and max(rank0, rank) > FAN_IN:
        pytest.skip("weight rank is bounded by the fan-in")
    for rounding, expected in (("floor_threshold", threshold), ("floor_difference", difference)):
        assert expected == expected_count(gamma, rank0, width0, rank, width, rounding)
        trigger = cls(gamma=gamma, rounding=rounding)
        decision = evaluate(trigger, width0, rank0, width, rank)
        assert decision.n_neurons == expected, rounding
        if rounding == "floor_threshold":  # fires exactly when phi > gamma phi0
            assert (expected > 0) == (
                Fraction(rank, width) > Fraction(str(gamma)) * Fraction(rank0, width0)
            )
        assert decision.threshold == pytest.approx(gamma * rank0 / width0)
    assert cls().rounding == "floor_threshold"  # the default


@pytest.mark.parametrize("kind", list(EVALUATORS))
@pytest.mark.parametrize(
    ("rounding", "baseline", "gamma", "computed"),
    [
        ("floor_difference", "init", 0.99, False),  # floor(10 - 9.9) = 0 even at full rank
        ("floor_difference", "init", 0.8, True),  # floor(10 - 8) = 2: the rank decides
        ("floor_threshold", "init", 0.99, True),  # 10 - floor(9.9) = 1
        ("floor_difference", "running_max", 0.99, True),  # the baseline needs every metric
    ],
)
def test_rank_is_computed_only_where_it_can_change_the_decision(
    kind, rounding, baseline, gamma, computed
):
    cls, evaluate = EVALUATORS[kind]
    trigger = cls(gamma=gamma, rounding=rounding, baseline=baseline)
    calls = []
    rank_of = trigger._rank
    trigger._rank = lambda *args: calls.append(1) or rank_of(*args)
    decision = evaluate(trigger, 10, 10, 10, 10)
    assert len(calls) == 1 + computed  # initialize() always measures the baseline
    assert decision.n_neurons == (1 if rounding == "floor_threshold" else 0) + (gamma == 0.8) * 2
    assert math.isnan(decision.metric) != computed


@pytest.mark.parametrize("kind", list(EVALUATORS))
def test_trigger_count_matches_the_formula_on_random_cases(kind):
    cls, evaluate = EVALUATORS[kind]
    rng = np.random.default_rng(0)
    n_fired = 0
    for case in range(60):
        gamma = float(rng.choice([0.5, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0]))
        width0 = int(rng.integers(2, 16))
        rank0 = int(rng.integers(0, width0 + 1))
        width = int(rng.integers(width0, 40))
        rank = int(rng.integers(0, width + 1))
        rounding = ("floor_threshold", "floor_difference")[case % 2]
        trigger = cls(gamma=gamma, rounding=rounding)
        decision = evaluate(trigger, width0, rank0, width, rank, seed=case)
        expected = expected_count(gamma, rank0, width0, rank, width, rounding)
        assert decision.n_neurons == expected, (rounding, gamma, width0, rank0, width, rank)
        n_fired += expected > 0
    assert 10 < n_fired < 50  # both outcomes were exercised


def test_running_max_baseline():
    trigger = ActivationTrigger(gamma=0.9, baseline="running_max")
    trigger.initialize([site_of_width(10)], FakeContext([(10, 5)]))
    assert trigger.baselines_[0] == pytest.approx(0.5)

    decision = trigger(0, site_of_width(10), FakeContext([(10, 10)]))
    assert decision.n_neurons == 6  # 10 - floor(10 * 0.9 * 0.5) with the old baseline
    assert trigger.baselines_[0] == pytest.approx(1.0)  # max(0.5, 1.0): the metric seen

    decision = trigger(0, site_of_width(10), FakeContext([(10, 8)]))
    assert decision.threshold == pytest.approx(0.9)  # gamma * max(phi_0, phi_1)
    assert decision.n_neurons == 0  # the init baseline would give 8 - floor(4.5) = 4
    assert trigger.baselines_[0] == pytest.approx(1.0)  # never lowered

    decision = trigger(0, site_of_width(10), FakeContext([(10, 2)]))
    assert decision.n_neurons == 0
    assert trigger.baselines_[0] == pytest.approx(1.0)

    # With the init baseline nothing moves.
    fixed = ActivationTrigger(gamma=0.9, baseline="init")
    fixed.initialize([site_of_width(10)], FakeContext([(10, 5)]))
    fixed(0, site_of_width(10), FakeContext([(10, 10)]))
    assert fixed(0, site_of_width(10), FakeContext([(10, 8)])).n_neurons == 4
    assert fixed.baselines_[0] == pytest.approx(0.5)


def test_invalid_baseline():
    with pytest.raises(ValueError, match="baseline"):
        ActivationTrigger(baseline="mean").initialize([site_of_width(4)], FakeContext([(4, 4)]))


def test_uninitialised_site_uses_its_first_metric_as_baseline():
    trigger = ActivationTrigger(gamma=0.5).reset()
    decision = trigger(0, site_of_width(10), FakeContext([(10, 7)]))
    assert decision.n_neurons == 4  # 7 - floor(10 * 0.5 * 0.7)
    assert trigger.baselines_[0] == pytest.approx(0.7)


def test_never_returns_zero(make_mlp, inputs):
    trigger = Never()
    assert not trigger.can_grow
    assert not trigger.needs_activations
    module = make_mlp()
    context = GrowthContext(module, inputs())
    trigger.reset().initialize(module.growth_sites(), context)
    for index, site in enumerate(module.growth_sites()):
        assert trigger(index, site, context).n_neurons == 0


def test_weight_trigger_needs_no_samples():
    assert not WeightTrigger().needs_activations
    assert ActivationTrigger().needs_activations
    assert WeightTrigger().can_grow and ActivationTrigger().can_grow


@pytest.mark.parametrize("method", ["ldl", "eigh", "svd"])
def test_activation_trigger_on_a_real_network(make_mlp, method):
    # Rank-1 inputs and zero biases: relu(t * a_j) spans at most 2 directions, so the first
    # layer's metric starts well below 1.
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100, 1, generator=g) @ torch.randn(1, 8, generator=g)
    module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=2, activation="relu")
    trigger = ActivationTrigger(gamma=0.8, method=method)
    context = GrowthContext(module, X)
    trigger.initialize(module.growth_sites(), context)
    phi0 = [activation_metric(a.post) for a in module.site_activations(X)]
    assert trigger.baselines_ == {0: pytest.approx(phi0[0]), 1: pytest.approx(phi0[1])}
    assert phi0[0] == pytest.approx(2 / 6)

    # Non-zero biases raise the first layer's rank; grow it (function preserved), evaluate.
    with torch.no_grad():
        module.layers[0].bias.copy_(torch.randn(6, generator=g))
    add_neurons(module.growth_sites()[0], NewNeurons(fan_in=torch.randn(2, 8, generator=g)))
    context = GrowthContext(module, X)
    counts = []
    for index, site in enumerate(module.growth_sites()):
        post = module.site_activations(X)[index].post
        width = post.shape[1]
        rank = round(activation_metric(post) * width)
        decision = trigger(index, site, context)
        assert decision.metric == pytest.approx(rank / width)
        expected = max(0, rank - math.floor(width * 0.8 * phi0[index] + 1e-9))
        assert decision.n_neurons == expected
        counts.append(expected)
    assert counts[0] > 0


@pytest.mark.parametrize(
    "gamma, width, rank0, rank, difference, threshold",
    [
        (0.97, 4, 4, 4, 0, 1),  # floor(4 - 3.88) = 0; 4 - floor(3.88) = 1
        (0.99, 64, 64, 64, 0, 1),  # floor(64 - 63.36) = 0; 64 - 63 = 1
        (0.97, 64, 64, 64, 1, 2),  # floor(1.92) = 1; 64 - 62 = 2
        (0.5, 10, 10, 5, 0, 0),  # integer threshold: both 0
        (0.9, 10, 5, 3, 0, 0),  # below the threshold: both 0
    ],
)
def test_default_rounding_floors_the_threshold_first(
    gamma, width, rank0, rank, difference, threshold
):
    assert threshold == max(0, rank - math.floor(float(Fraction(str(gamma)) * rank0)))
    kinds = [(ActivationTrigger, evaluate_activation)]
    if width <= FAN_IN:  # a weight matrix's rank is bounded by its fan-in
        kinds.append((WeightTrigger, evaluate_weight))
    for Trigger, evaluate in kinds:
        assert evaluate(Trigger(gamma=gamma), width, rank0, width, rank).n_neurons == threshold
        eq3 = Trigger(gamma=gamma, rounding="floor_difference")
        assert evaluate(eq3, width, rank0, width, rank).n_neurons == difference
        with pytest.raises(ValueError, match="rounding"):
            evaluate(Trigger(rounding="nearest"), width, rank0, width, rank)


# --- the cutoff on the normalised matrix, with singular values on both sides of epsilon ---

#: Not a round number: with it, a cutoff of epsilon^2 instead of epsilon^2 * n (or a
#: normalisation by the wrong dimension) moves the count.
EPSILON = 0.037


def matrix_with_singular_values(n, m, values, seed):
    """A float64 ``n x m`` matrix with exactly these singular values (zeros beyond them)."""
    g = torch.Generator().manual_seed(seed)
    r = min(n, m)
    s = torch.zeros(r, dtype=torch.float64)
    s[: len(values)] = torch.as_tensor(values, dtype=torch.float64)
    U = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))[0]
    return (U * s) @ V.T


class SpectrumContext:
    """Post-activations ``H`` (n x M) with given singular values of ``H / sqrt(n)``."""

    def __init__(self, n, width, values, seed=0):
        self.post = math.sqrt(n) * matrix_with_singular_values(n, width, values, seed)
        self.post = self.post.float()

    def activations(self, index):
        return SiteActivations(inputs=None, pre=None, post=self.post)

    def post_gram(self, index):
        return gram(self.post)


def svd_count(A, scale, epsilon=EPSILON):
    """Singular values of ``A / scale`` above ``epsilon``, by numpy's SVD in float64."""
    return int(np.sum(np.linalg.svd(A.double().numpy() / scale, compute_uv=False) > epsilon))


# Singular values of the normalised matrix, within 10-60 % of epsilon on both sides.
SPECTRUM_0 = [1.0, 0.5, 0.09, 0.045, 0.031, 0.02, 0.004]  # 4 above 0.037, width 10
SPECTRUM_1 = [2.0, 0.6, 0.3, 0.11, 0.052, 0.041, 0.033, 0.021, 0.009, 0.003]  # 6, width 12


@pytest.mark.parametrize("method", ["ldl", "eigh", "svd"])
@pytest.mark.parametrize("n_samples", [40, 200])
def test_activation_trigger_counts_the_normalised_singular_values_above_epsilon(method, n_samples):
    start = SpectrumContext(n_samples, 10, SPECTRUM_0, seed=1)
    later = SpectrumContext(n_samples, 12, SPECTRUM_1, seed=2)
    rank0 = svd_count(start.post, math.sqrt(n_samples))
    rank = svd_count(later.post, math.sqrt(n_samples))
    assert (rank0, rank) == (4, 6)
    # Other normalisations count differently: the cases can tell them apart.
    for scale in (1.0, n_samples, math.sqrt(10), math.sqrt(12)):
        assert svd_count(later.post, scale) != rank or svd_count(start.post, scale) != rank0

    trigger = ActivationTrigger(gamma=0.9, epsilon=EPSILON, method=method)
    trigger.initialize([site_of_width(10)], start)
    assert trigger.baselines_[0] == rank0 / 10
    decision = trigger(0, site_of_width(12), later)
    assert decision.metric == rank / 12
    assert decision.threshold == pytest.approx(0.9 * rank0 / 10)
    assert decision.n_neurons == expected_count(0.9, rank0, 10, rank, 12) == 6 - 4


@pytest.mark.parametrize("method", ["ldl", "eigh", "svd"])
def test_activation_trigger_with_fewer_samples_than_neurons(method):
    # A CNN's dense layer measured on one mini-batch: the count comes from the samples'
    # Gram; it must equal the SVD count (and the neurons' Gram is never formed).
    spectrum = [1.0, 0.3, 0.05, 0.04, 0.03, 0.02]  # 4 above 0.037
    later = SpectrumContext(8, 20, spectrum, seed=3)
    later.post_gram = None  # reading it would fail
    rank = svd_count(later.post, math.sqrt(8))
    assert rank == 4
    trigger = ActivationTrigger(gamma=0.5, epsilon=EPSILON, method=method)
    trigger.baselines_ = {0: 0.5}
    decision = trigger(0, site_of_width(20), later)
    assert decision.metric == rank / 20


@pytest.mark.parametrize("method", ["ldl", "eigh", "svd"])
def test_weight_trigger_counts_the_normalised_singular_values_above_epsilon(method):
    def site(width, values, seed):
        producer = nn.Linear(FAN_IN, width)
        W = math.sqrt(FAN_IN) * matrix_with_singular_values(width, FAN_IN, values, seed)
        with torch.no_grad():
            producer.weight.copy_(W)
        return GrowthSite(f"w{width}", producer, [], torch.relu)

    start, later = site(10, SPECTRUM_0, 3), site(12, SPECTRUM_1, 4)
    rank0 = svd_count(start.producer.weight.detach(), math.sqrt(FAN_IN))
    rank = svd_count(later.producer.weight.detach(), math.sqrt(FAN_IN))
    assert (rank0, rank) == (4, 6)
    for scale in (1.0, FAN_IN, math.sqrt(12)):  # no, full or the neurons' normalisation
        assert svd_count(later.producer.weight.detach(), scale) != rank

    trigger = WeightTrigger(gamma=0.9, epsilon=EPSILON, method=method)
    trigger.initialize([start], None)
    assert trigger.baselines_[0] == rank0 / 10
    decision = trigger(0, later, None)
    assert decision.metric == rank / 12
    assert decision.n_neurons == expected_count(0.9, rank0, 10, rank, 12) == 2
