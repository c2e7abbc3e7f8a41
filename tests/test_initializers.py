"""NORTH* initializers (SPEC section 4)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_north.growth import (
    GrowthContext,
    GrowthSite,
    PreActivationInit,
    RandomInit,
    SelectInit,
    WeightInit,
    add_neurons,
    initializers,
    metrics,
)
from sklearn_north.growth.initializers import (
    _column_space,
    _kernel_draws,
    _numerical_rank,
    _ResidualScorer,
    mean_fan_in_norm,
    orthogonal_residual_norms,
    random_fan_in,
    random_rescaled_fan_in,
    rescale_rows,
)
from sklearn_north.growth.metrics import activation_rank
from sklearn_north.nn import GrowableMLP

ALL = {
    "random": RandomInit,
    "select": lambda: SelectInit(n_candidates=64),
    "preactivation": lambda: PreActivationInit(n_candidates=64),
    "weight": WeightInit,
}


def generator(seed):
    return torch.Generator().manual_seed(seed)


def cosines(A, B):
    """|cos| between every column of A and every column of B (float64)."""
    A, B = A.double(), B.double()
    return (A.T @ B).abs() / (A.norm(dim=0)[:, None] * B.norm(dim=0)[None, :])


# --- common rules ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("index", [0, 1])
def test_fan_in_rescaled_zero_fan_out_and_shapes(make_mlp, inputs, name, index):
    module = make_mlp(n_features=12, hidden=(5, 4), trained=True)
    site = module.growth_sites()[index]
    context = GrowthContext(module, inputs(n_samples=60, n_features=12))
    new = ALL[name]()(index, site, 3, context, generator(0))
    assert new.k == 3
    assert new.fan_in.shape == (3, *site.fan_in_shape)
    assert new.fan_in.dtype == site.producer.weight.dtype
    assert new.fan_out is None  # function preserving
    existing = site.producer.weight.detach().norm(dim=1).mean()
    torch.testing.assert_close(new.fan_in.norm(dim=1), existing.expand(3), rtol=1e-5, atol=0)
    if name != "preactivation":  # Pre-activation's bias is part of its solve
        assert new.bias is None or torch.all(new.bias == 0)
    assert ALL[name]().function_preserving


@pytest.mark.parametrize("name", list(ALL))
def test_reproducible_from_the_generator(make_mlp, inputs, name):
    module = make_mlp(n_features=12, hidden=(5, 4), trained=True)
    site = module.growth_sites()[0]
    context = GrowthContext(module, inputs(n_samples=60, n_features=12))
    init = ALL[name]()
    a = init(0, site, 2, context, generator(42))
    b = init(0, site, 2, context, generator(42))
    c = init(0, site, 2, context, generator(43))
    assert torch.equal(a.fan_in, b.fan_in)
    if a.bias is not None:
        assert torch.equal(a.bias, b.bias)
    assert not torch.allclose(a.fan_in, c.fan_in)


@pytest.mark.parametrize("name", ["random", "weight"])
def test_conv_site_fan_in(name):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    site = GrowthSite("conv", conv, [], torch.relu)
    new = ALL[name]()(0, site, 5, None, generator(0))
    assert new.fan_in.shape == (5, 3, 3, 3)
    norms = new.fan_in.reshape(5, -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((5,), mean_fan_in_norm(site)))
    if name == "weight":
        W = conv.weight.detach().reshape(4, -1)
        assert cosines(new.fan_in.reshape(5, -1).T, W.T).max() < 1e-5


def test_rescale_rows():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    rows, factors = rescale_rows(w, 10.0)
    assert torch.equal(rows, torch.tensor([[6.0, 8.0], [0.0, 0.0], [10.0, 0.0]]).double())
    assert torch.equal(factors, torch.tensor([2.0, 0.0, 10.0]).double())


# --- Select ------------------------------------------------------------------------------


def rank_gain(initializer, seed, k=6):
    """Gain in effective rank of the post-activations ([H, A_new] on the buffer) of a tanh
    layer on rank-2 inputs when ``k`` neurons from ``initializer`` are added."""
    torch.manual_seed(seed)
    module = GrowableMLP(16, [16], 2, activation="tanh")
    X = torch.randn(400, 2) @ torch.randn(2, 16)
    context = GrowthContext(module, X)
    site = module.growth_sites()[0]
    before = activation_rank(context.activations(0).post)
    assert before < 16  # rank deficient
    add_neurons(site, initializer(0, site, k, context, generator(seed)))
    context.invalidate()
    return activation_rank(context.activations(0).post) - before


def test_select_raises_the_metric_more_than_random_candidates():
    seeds = range(5)
    select = [rank_gain(SelectInit(n_candidates=300), seed) for seed in seeds]
    random = [rank_gain(RandomInit(), seed) for seed in seeds]
    assert np.mean(select) >= np.mean(random) + 1.0, (select, random)
    assert min(select) >= 1


def test_select_keeps_the_most_orthogonal_candidates(make_mlp, inputs):
    module = make_mlp(n_features=6, hidden=(5, 4), activation="tanh", trained=True)
    X = inputs(n_samples=80, n_features=6)
    context = GrowthContext(module, X)
    site = module.growth_sites()[1]
    n_candidates, k = 40, 4
    new = SelectInit(n_candidates=n_candidates)(1, site, k, context, generator(3))

    # The same candidates, scored independently: norm of the post-activation's component
    # orthogonal to the span of the existing post-activations (numerical rank at the
    # metric's threshold eps * sqrt(n)).
    candidates, _ = rescale_rows(random_fan_in(site, n_candidates, generator(3)), 1.0)
    candidates = candidates.float() * mean_fan_in_norm(site)
    acts = module.site_activations(X)[1]
    A = torch.tanh(acts.inputs @ candidates.T).double().numpy()
    U, s, _ = np.linalg.svd(acts.post.double().numpy(), full_matrices=False)
    Q = U[:, s > 0.01 * math.sqrt(len(X))]
    scores = np.linalg.norm(A - Q @ (Q.T @ A), axis=0)
    best = np.argsort(-scores)[:k]
    assert scores[best[-1]] > 1.01 * np.sort(scores)[::-1][k]  # a clear top k
    torch.testing.assert_close(new.fan_in, candidates[best], rtol=1e-5, atol=1e-6)


def ridge_residuals(E, A, t):
    """``sqrt(|a|^2 - a^T E (E^T E + t^2 I)^-1 E^T a)`` per column ``a`` of ``A``, in
    numpy float64 (the closed form of ``orthogonal_residual_norms``)."""
    E, A = np.asarray(E, dtype=np.float64), np.asarray(A, dtype=np.float64)
    projected = E.T @ A
    solved = np.linalg.solve(E.T @ E + t * t * np.eye(E.shape[1]), projected)
    return np.sqrt(np.maximum((A * A).sum(axis=0) - (projected * solved).sum(axis=0), 0))


def test_residual_norms_match_the_closed_form():
    # Singular values of E on both sides of t = 0.37, so the ridge term decides how much
    # of each direction is removed; t**2 != t and t != 1 tell the forms apart.
    g = generator(0)
    n, t = 50, 0.37
    values = torch.tensor([4.0, 1.1, 0.45, 0.3, 0.12, 0.02], dtype=torch.float64)
    U = torch.linalg.qr(torch.randn(n, 6, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    E = (U * values) @ V.T
    # Candidates mostly inside E's span (where t matters), plus some of the rest.
    A = E @ torch.randn(6, 30, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        n, 30, generator=g, dtype=torch.float64
    )
    expected = ridge_residuals(E, A, t)
    for wrong in (math.sqrt(t), 1.0, 0.0):  # ridge t instead of t**2, t = 1, no ridge
        assert np.abs(ridge_residuals(E, A, wrong) / expected - 1).max() > 0.05
    np.testing.assert_allclose(orthogonal_residual_norms(E, A, t).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(
        orthogonal_residual_norms(E, A, t, gram=E.T @ E).numpy(), expected, rtol=1e-10
    )
    # float32 activations: the products are rounded, the solve is float64.
    scorer = _ResidualScorer(E.float(), t)
    got = torch.cat([scorer(block) for block in A.float().split(7, dim=1)])
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4)


def test_select_keeps_the_top_candidates_of_the_closed_form_at_epsilon_sqrt_n():
    # Post-activations with singular values near the metric's threshold epsilon * sqrt(n)
    # (0.33 with epsilon 0.037 and 80 samples): the choice depends on that threshold.
    n, epsilon, n_candidates, k = 80, 0.037, 40, 3
    torch.manual_seed(2)
    module = GrowableMLP(6, (6, 4), 2, activation="tanh")
    with torch.no_grad():  # neurons of decreasing size
        module.layers[0].weight.mul_(torch.tensor([1.0, 0.6, 0.1, 0.05, 0.03, 0.01])[:, None])
    X = torch.randn(n, 6, generator=generator(1))
    site = module.growth_sites()[0]
    context = GrowthContext(module, X, epsilon=epsilon)
    new = SelectInit(n_candidates=n_candidates)(0, site, k, context, generator(5))

    acts = module.site_activations(X)[0]
    candidates = random_rescaled_fan_in(site, n_candidates, generator(5)).float()
    A = torch.tanh(acts.inputs @ candidates.T)
    H = acts.post.numpy()
    sv = np.linalg.svd(H.astype(np.float64), compute_uv=False)
    t = epsilon * math.sqrt(n)
    assert sv.min() < t / 3 and sv.max() > 3 * t and np.any(np.abs(sv / t - 1) < 0.3)

    def top(threshold):
        return np.argsort(-ridge_residuals(H, A.numpy(), threshold))[:k]

    best = top(t)
    scores = np.sort(ridge_residuals(H, A.numpy(), t))[::-1]
    assert scores[k - 1] > 1.01 * scores[k]  # a clear top k
    # A wrong threshold (epsilon * n, no sqrt; the default epsilon; ridge t instead of
    # t**2; none) would choose others.
    for wrong in (epsilon * n, 0.01 * math.sqrt(n), math.sqrt(t), 0.0):
        assert set(top(wrong)) != set(best)
    torch.testing.assert_close(new.fan_in, candidates[torch.from_numpy(best)])
    assert new.bias is None or torch.all(new.bias == 0)


# --- Pre-activation ----------------------------------------------------------------------


@pytest.mark.parametrize("cutoff", ["pinv", "epsilon"])
@pytest.mark.parametrize("index", [0, 1])
def test_preactivation_candidates_are_orthogonal_to_existing_pre_activations(
    make_mlp, inputs, index, cutoff
):
    # Widths below the input's rank (+ bias), so an orthogonal pre-activation exists.
    module = make_mlp(n_features=10, hidden=(8, 4), activation="tanh", trained=True)
    X = inputs(n_samples=200, n_features=10)
    context = GrowthContext(module, X)
    site = module.growth_sites()[index]
    init = PreActivationInit(n_candidates=50, inverse_cutoff=cutoff)
    new = init(index, site, 4, context, generator(0))
    acts = module.site_activations(X)[index]
    inp = acts.inputs.double()
    Z_old = acts.pre.double()
    Z_new = inp @ new.fan_in.double().T + new.bias.double()
    assert cosines(Z_new, Z_old).max() < 1e-4
    assert new.bias.abs().max() > 0  # the bias takes part in the solve
    # Random neurons are far from orthogonal: the property is not an accident.
    rnd = RandomInit()(index, site, 4, context, generator(0))
    assert cosines(inp @ rnd.fan_in.double().T, Z_old).max() > 0.1


def weak_direction_case(make_mlp, inputs, scale):
    """A site whose input has one weak direction: input 9 repeats input 8 up to a noise of
    ``scale``; returns the module, the inputs, the direction and its relative singular
    value (1e-3: ~5e-4, 2e-6: ~1e-6)."""
    module = make_mlp(n_features=10, hidden=(6, 4), activation="tanh", trained=True)
    X = inputs(n_samples=200, n_features=10)
    X[:, 9] = X[:, 8] + scale * inputs(n_samples=200, n_features=1, seed=7)[:, 0]
    aug = torch.cat([X.double(), torch.ones(200, 1, dtype=torch.float64)], dim=1)
    sv, vecs = np.linalg.svd(aug.numpy(), full_matrices=False)[1:]
    return module, X, torch.from_numpy(vecs[-1]), sv[-1] / sv[0], sv


# The float32 pseudo-inverse's tolerance on 200 samples: eps * 200 = 2.4e-5; the metric's
# threshold: epsilon * sqrt(200) = 0.14.
@pytest.mark.parametrize(
    "scale, cutoff, along_weak",
    [
        (1e-3, "pinv", True),  # ~5e-4: above the float32 tolerance
        (1e-3, 1e-5, True),
        (1e-3, "epsilon", False),  # its singular value ~0.01 is below 0.14
        (1e-3, 1e-2, False),
        (2e-6, "pinv", False),  # ~1e-6: float32 rounding level
        (2e-6, 1e-7, True),
    ],
)
def test_preactivation_inverse_cutoff_decides_the_weak_input_directions(
    make_mlp, inputs, scale, cutoff, along_weak
):
    module, X, weak, relative, sv = weak_direction_case(make_mlp, inputs, scale)
    assert (10 * 2.4e-5 < relative < 1e-3) if scale == 1e-3 else (1e-7 < relative < 2.4e-6)
    assert sv[-1] < 0.14 < sv[-2]
    init = PreActivationInit(n_candidates=50, inverse_cutoff=cutoff)
    new = init(0, module.growth_sites()[0], 4, GrowthContext(module, X), generator(0))
    w = torch.cat([new.fan_in.double(), new.bias.double()[:, None]], dim=1)
    share = (w @ weak).abs() / w.norm(dim=1)
    if along_weak:
        # Kept, the weak direction needs a far larger weight for a unit pre-activation
        # than the others: the candidates' weights are nearly all along it.
        assert share.min() > 0.99
    else:
        assert share.max() < 1e-3


@pytest.mark.parametrize("cutoff", ["svd", 0.0, 1.0, -1e-3, True, None])
def test_preactivation_rejects_an_invalid_inverse_cutoff(make_mlp, inputs, cutoff):
    module = make_mlp(n_features=10, hidden=(6, 4), trained=True)
    context = GrowthContext(module, inputs(n_samples=50, n_features=10))
    init = PreActivationInit(n_candidates=20, inverse_cutoff=cutoff)
    with pytest.raises(ValueError, match="inverse_cutoff must be 'pinv', 'epsilon' or a float"):
        init(0, module.growth_sites()[0], 2, context, generator(0))


@pytest.mark.parametrize(
    "shape, rank",
    [((30, 8), 8), ((30, 8), 5), ((30, 40), 30), ((30, 40), 12), ((30, 30), 30)],
    ids=["independent", "dependent", "full-row-rank", "wide-dependent", "square"],
)
def test_column_space_and_its_complement_match_the_svd(shape, rank):
    g = generator(3)
    B = torch.randn(shape[0], rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, shape[1], generator=g, dtype=torch.float64
    )
    assert _numerical_rank(torch.linalg.svdvals(B), B.shape) == rank
    U = torch.linalg.svd(B).U
    Q = _column_space(B, rank)
    N = _column_space(B, rank, complement=True)
    assert Q.shape == (shape[0], rank) and N.shape == (shape[0], shape[0] - rank)
    torch.testing.assert_close(Q.T @ Q, torch.eye(rank, dtype=torch.float64))
    torch.testing.assert_close(N.T @ N, torch.eye(shape[0] - rank, dtype=torch.float64))
    # The same projectors as the SVD's.
    torch.testing.assert_close(Q @ Q.T, U[:, :rank] @ U[:, :rank].T)
    torch.testing.assert_close(N @ N.T, U[:, rank:] @ U[:, rank:].T)


@pytest.mark.parametrize(
    "M, rank",
    [(3, 3), (6, 6), (9, 9), (12, 12), (5, 3), (9, 5), (8, 2), (15, 12), (15, 10)],
    ids=[
        "wide-complement",
        "even-split",
        "narrow-complement",
        "square",
        "dependent-projected",
        "dependent-complement-basis",
        "dependent-complement-basis-2",
        "wide",
        "wide-dependent",
    ],
)
def test_kernel_draws_are_a_standard_gaussian_projected_onto_the_complement(M, rank, monkeypatch):
    # The complement wider than the column space (draws projected), narrower or as wide
    # (drawn in its basis), or empty (None); columns independent (the rank certified
    # from a QR) or not (the singular values decide).
    g = generator(5)
    B = torch.randn(12, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, M, generator=g, dtype=torch.float64
    )
    eye = torch.eye(12, dtype=torch.float64)
    mapped = _kernel_draws(B, 40000, generator(6), eye)
    if rank == 12:
        assert mapped is None
        return
    projector = eye - B @ torch.linalg.pinv(B)
    assert float((B.T @ mapped).abs().max()) < 1e-10  # orthogonal to every existing column
    # Covariance of the projection of N(0, I_12) onto the complement: the projector.
    torch.testing.assert_close(mapped @ mapped.T / 40000, projector, rtol=0, atol=0.03)
    # A basis maps the same draws.
    basis = torch.randn(4, 12, generator=generator(7), dtype=torch.float64)
    torch.testing.assert_close(
        _kernel_draws(B, 50, generator(6), basis), basis @ _kernel_draws(B, 50, generator(6), eye)
    )
    # The very draws of the singular values' path (the certificate never used).
    few = _kernel_draws(B, 50, generator(6), eye)
    monkeypatch.setattr(initializers, "_certainly_full_rank", lambda R, shape: False)
    assert torch.equal(_kernel_draws(B, 50, generator(6), eye), few)


@pytest.mark.parametrize(
    "smallest, rank, certified",
    [(1e-3, 6, True), (1e-12, 6, True), (1e-14, 6, False), (1e-17, 5, False)],
)
def test_kernel_draws_take_the_singular_values_rank_where_the_qr_cannot_certify(
    smallest, rank, certified, monkeypatch
):
    # Independent columns with one weak direction: certified from the QR where the
    # condition number leaves room (1e-3, 1e-12), not near matrix_rank's tolerance
    # (20 * eps = 4.4e-15: 1e-14 counts, 1e-17 does not). Whichever decides, the draws
    # are those of the singular values' rank.
    g = generator(8)
    U = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64)).Q
    eye = torch.eye(20, dtype=torch.float64)
    s = torch.tensor([1, 1, 1, 1, 1, smallest], dtype=torch.float64)
    B = U[:, :6] * s @ V.T
    assert _numerical_rank(torch.linalg.svdvals(B), B.shape) == rank
    R = torch.linalg.qr(B, mode="r").R
    assert initializers._certainly_full_rank(R, B.shape) == certified
    mapped = _kernel_draws(B, 30, generator(9), eye)
    assert float((U[:, :5].T @ mapped).abs().max()) < 1e-10  # the strong directions
    if rank == 5:  # the weak direction is below the tolerance: drawn along
        assert float((U[:, 5] @ mapped).abs().max()) > 0.1
    # The same draws as the singular values' path.
    monkeypatch.setattr(initializers, "_certainly_full_rank", lambda R, shape: False)
    assert torch.equal(_kernel_draws(B, 30, generator(9), eye), mapped)


def test_preactivation_with_a_duplicated_neuron(make_mlp, inputs):
    # Two identical neurons: the existing pre-activations have one direction fewer than
    # neurons, and the candidates are still orthogonal to all of them.
    module = make_mlp(n_features=10, hidden=(6, 4), activation="tanh", trained=True)
    with torch.no_grad():
        module.layers[0].weight[1] = module.layers[0].weight[0]
        module.layers[0].bias[1] = module.layers[0].bias[0]
    X = inputs(n_samples=200, n_features=10)
    site = module.growth_sites()[0]
    new = PreActivationInit(n_candidates=50)(0, site, 4, GrowthContext(module, X), generator(0))
    Z_old = module.site_activations(X)[0].pre.double()
    Z_new = X.double() @ new.fan_in.double().T + new.bias.double()
    assert cosines(Z_new, Z_old).max() < 1e-4


def test_preactivation_gives_zero_weight_to_inputs_no_sample_uses(make_mlp, inputs):
    # Like MNIST's border pixels: columns 0 and 5 are zero on every buffered sample.
    module = make_mlp(n_features=10, hidden=(6, 4), activation="tanh", trained=True)
    X = inputs(n_samples=200, n_features=10)
    X[:, [0, 5]] = 0
    site = module.growth_sites()[0]
    new = PreActivationInit(n_candidates=50)(0, site, 4, GrowthContext(module, X), generator(0))
    assert torch.all(new.fan_in[:, [0, 5]] == 0)
    assert torch.all(new.fan_in[:, [1, 2, 3, 4, 6, 7, 8, 9]].abs().sum(dim=0) > 0)
    Z_old = module.site_activations(X)[0].pre.double()
    Z_new = X.double() @ new.fan_in.double().T + new.bias.double()
    assert cosines(Z_new, Z_old).max() < 1e-4


@pytest.mark.parametrize("index", [0, 1])
def test_input_gram_is_the_gram_of_the_inputs_with_a_ones_column(
    make_mlp, inputs, monkeypatch, index
):
    module = make_mlp(n_features=7, hidden=(5, 4), trained=True)
    X = inputs(n_samples=40, n_features=7)
    context = GrowthContext(module, X)
    inp = module.site_activations(X)[index].inputs.double()
    aug = torch.cat([inp, torch.ones(len(inp), 1, dtype=torch.float64)], dim=1)
    calls = []
    gram = metrics.gram
    monkeypatch.setattr(metrics, "gram", lambda A: calls.append(A.shape) or gram(A))
    G = context.input_gram(index)
    torch.testing.assert_close(G, aug.T @ aug, rtol=1e-12, atol=1e-10)
    if index == 1:  # built from the previous site's post-activation Gram, formed once
        assert torch.equal(G[:-1, :-1], context.post_gram(0))
        assert len(calls) == 1


def test_preactivation_falls_back_to_random_candidates_when_no_kernel(make_mlp, inputs):
    # 3 input features (+ bias) and 5 neurons: the pre-activations span all the input can
    # produce, so there is no orthogonal direction.
    module = make_mlp(n_features=3, hidden=(5, 4), trained=True)
    context = GrowthContext(module, inputs(n_samples=50, n_features=3))
    site = module.growth_sites()[0]
    new = PreActivationInit(n_candidates=20)(0, site, 2, context, generator(0))
    assert new.fan_in.shape == (2, 3)
    torch.testing.assert_close(new.fan_in.norm(dim=1), torch.full((2,), mean_fan_in_norm(site)))
    assert torch.all(new.bias == 0)


# --- Weight ------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 14])
def test_weight_rows_are_orthogonal_to_existing_rows_and_each_other(make_mlp, k):
    module = make_mlp(n_features=20, hidden=(6, 4), trained=True)
    site = module.growth_sites()[0]
    new = WeightInit()(0, site, k, None, generator(0))  # needs no samples
    W_old = site.producer.weight.detach()
    W_new = new.fan_in
    assert cosines(W_new.T, W_old.T).max() < 1e-5
    cos_new = cosines(W_new.T, W_new.T)
    torch.testing.assert_close(cos_new, torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(W_new.norm(dim=1), torch.full((k,), mean_fan_in_norm(site)))
    # Every new row adds one dimension to the row space.
    assert torch.linalg.matrix_rank(torch.cat([W_old, W_new]).double()) == 6 + k


def test_weight_beyond_the_kernel_falls_back_to_random_rows(make_mlp):
    # Fan-in 8, width 5: only 3 orthogonal directions are left for 5 new neurons.
    module = make_mlp(n_features=8, hidden=(5, 4), trained=True)
    site = module.growth_sites()[0]
    new = WeightInit()(0, site, 5, None, generator(0))
    W_old = site.producer.weight.detach()
    assert new.fan_in.shape == (5, 8)
    assert cosines(new.fan_in[:3].T, W_old.T).max() < 1e-5
    torch.testing.assert_close(new.fan_in.norm(dim=1), torch.full((5,), mean_fan_in_norm(site)))
    assert torch.linalg.matrix_rank(torch.cat([W_old, new.fan_in]).double()) == 8


def test_needs_activations_flags():
    assert not RandomInit.needs_activations
    assert not WeightInit.needs_activations
    assert SelectInit.needs_activations
    assert PreActivationInit.needs_activations


def test_pre_activation_epsilon_cutoff_keeps_directions_above_epsilon_after_normalisation():
    # inverse_cutoff="epsilon": an input direction is used when its singular value on the
    # buffer, normalised by sqrt(n) as the metric's, is above epsilon (0.037 here): with
    # n = 100 the cutoff is 0.37 on the raw singular values. 0.3 and 0.05 are above
    # epsilon unnormalised (the eps^2 instead of eps^2 * n bug keeps them); 0.5 is above
    # epsilon * n ** 0.5 but below epsilon * n (a sqrt dropped elsewhere drops it).
    n, eps = 100, 0.037
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((n, 5)))
    V, _ = np.linalg.qr(rng.standard_normal((6, 5)))
    s = np.array([5.0, 0.5, 0.3, 0.05, 0.01])
    inputs = torch.as_tensor((U * s) @ V.T, dtype=torch.float64)
    eig = torch.linalg.eigvalsh(inputs.T @ inputs)
    kept = PreActivationInit(inverse_cutoff="epsilon")._kept_directions(eig, inputs, 7, eps)
    svd = np.linalg.svd(inputs.numpy(), compute_uv=False)
    expected = np.sort(svd) / np.sqrt(n) > eps
    assert int(kept.sum()) == int(expected.sum()) == 2


@pytest.mark.parametrize("shape", [(5, 12), (12, 5), (7, 7)])
@pytest.mark.parametrize("rank", [None, 3, "ill-conditioned"])
def test_row_space_is_the_svds(shape, rank):
    # WeightInit's basis: the span and rank of the SVD's right singular vectors, for wide,
    # tall and square weights, full rank (certified or, ill-conditioned, not) or not.
    from sklearn_north.growth.initializers import _certainly_full_rank, _row_space

    g = torch.Generator().manual_seed(0)
    W = torch.randn(*shape, generator=g, dtype=torch.float64)
    if rank == "ill-conditioned":
        # Full rank, three singular values 3x matrix_rank's tolerance: too close for the
        # certificate, which then leaves the rank to the singular values.
        U, _, Vh = torch.linalg.svd(W, full_matrices=False)
        s = torch.ones(len(Vh), dtype=torch.float64)
        s[2:5] = 3 * max(shape) * torch.finfo(torch.float64).eps
        W = (U * s) @ Vh
        R = torch.linalg.qr(W if shape[0] > shape[1] else W.T).R
        assert not _certainly_full_rank(R, shape)
    elif rank is not None:
        W = torch.randn(shape[0], rank, generator=g, dtype=torch.float64) @ torch.randn(
            rank, shape[1], generator=g, dtype=torch.float64
        )
    rows = _row_space(W)
    Vh = torch.linalg.svd(W, full_matrices=False).Vh
    expected = Vh[: int(torch.linalg.matrix_rank(W))]
    assert rows.shape == expected.shape
    torch.testing.assert_close(rows @ rows.T, torch.eye(len(rows), dtype=torch.float64))
    # W's rows lie in the span (a span of the same dimension: the same span).
    assert torch.linalg.matrix_norm(W - (W @ rows.T) @ rows) < 1e-12 * torch.linalg.matrix_norm(W)
    if rank != "ill-conditioned":  # there rounding tilts the weakest directions by ~3 %
        torch.testing.assert_close(rows.T @ rows, expected.T @ expected)


@pytest.mark.parametrize("log_condition", [0, 4, 8, 11, 12.5, 14, 17])
def test_full_rank_is_certified_only_where_the_singular_values_agree(log_condition):
    # Weights with singular values from 1 down to 10^-log_condition: certified full rank
    # only below the matrix_rank tolerance's condition (1 / (max(shape) eps) ~ 5.7e12 at
    # 784), and never where the singular values say otherwise.
    from sklearn_north.growth.initializers import _certainly_full_rank, _numerical_rank

    g = torch.Generator().manual_seed(int(log_condition * 10))
    U = torch.linalg.qr(torch.randn(784, 60, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64)).Q
    s = torch.logspace(0, -log_condition, 60, dtype=torch.float64)
    W = (U * s) @ V.T  # (784, 60) -> as a layer's (60, 784) weight: W.T
    R = torch.linalg.qr(W).R
    certified = _certainly_full_rank(R, (60, 784))
    full = _numerical_rank(torch.linalg.svdvals(R), (60, 784)) == 60
    assert not certified or full
    if log_condition <= 11:
        assert certified  # a factor ~30 below the tolerance's condition: certified
    if log_condition >= 14:
        assert not certified and not full
