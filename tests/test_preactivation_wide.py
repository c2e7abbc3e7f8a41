"""NORTH-Pre on inputs wider than the sample buffer (``n < fan_in + 1``): the sample-space
path of ``PreActivationInit`` and its agreement with the feature-space path."""

import numpy as np
import pytest
import torch

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import GrowthContext, PreActivationInit, add_neurons
from sklearn_north.growth import initializers as init_module
from sklearn_north.growth.initializers import mean_fan_in_norm


def generator(seed):
    return torch.Generator().manual_seed(seed)


def cosines(A, B):
    """|cos| between every column of A and every column of B (float64)."""
    A, B = A.double(), B.double()
    return (A.T @ B).abs() / (A.norm(dim=0)[:, None] * B.norm(dim=0)[None, :])


def augmented(X):
    """``[X, 1]`` in float64."""
    X = X.double()
    return torch.cat([X, torch.ones(len(X), 1, dtype=torch.float64)], dim=1)


# (n_features, hidden, index): the site's input is wider than the 40 buffered samples
# (120 features; 50 neurons of the layer below) and the site narrower than them.
WIDE_SITES = [(120, (8, 4), 0), (10, (50, 6), 1)]


@pytest.fixture
def no_wide_factorisation(monkeypatch):
    """Fail on the feature-space Gram; record the size of every eigendecomposition."""
    sizes = []
    eigh = torch.linalg.eigh

    def recording_eigh(G, *args, **kwargs):
        sizes.append(G.shape[0])
        return eigh(G, *args, **kwargs)

    def no_input_gram(self, index):
        raise AssertionError("the (fan_in + 1)^2 input Gram was formed")

    monkeypatch.setattr(torch.linalg, "eigh", recording_eigh)
    monkeypatch.setattr(GrowthContext, "input_gram", no_input_gram)
    return sizes


@pytest.mark.parametrize("n_features, hidden, index", WIDE_SITES)
def test_wide_input_candidates_are_orthogonal_and_preserve_the_function(
    make_mlp, inputs, no_wide_factorisation, n_features, hidden, index
):
    module = make_mlp(n_features=n_features, hidden=hidden, activation="tanh", trained=True)
    X = inputs(n_samples=40, n_features=n_features)
    site = module.growth_sites()[index]
    acts = module.site_activations(X)[index]
    assert acts.inputs.shape[1] + 1 > 40 > site.width
    new = PreActivationInit(n_candidates=50)(index, site, 4, GrowthContext(module, X), generator(0))
    assert 0 < max(no_wide_factorisation) <= 40  # only the samples' Gram was decomposed

    Z_old = acts.pre.double()
    Z_new = acts.inputs.double() @ new.fan_in.double().T + new.bias.double()
    # Every candidate's pre-activation, bias included, is orthogonal to every existing one.
    assert cosines(Z_new, Z_old).max() < 1e-5
    assert new.bias.abs().max() > 0
    torch.testing.assert_close(new.fan_in.norm(dim=1), torch.full((4,), mean_fan_in_norm(site)))

    # Zero fan-out: the network computes the same function once they are added.
    probe = inputs(n_samples=30, n_features=n_features, seed=5)
    with torch.no_grad():
        before = module(probe).clone()
        add_neurons(site, new)
        torch.testing.assert_close(module(probe), before, rtol=1e-5, atol=1e-6)


def test_wide_input_candidates_are_scored_on_their_own_pre_activations(
    make_mlp, inputs, monkeypatch
):
    # The sample-space path scores candidates from c (w = A^T c) without forming their
    # weights: what it scores must be the post-activations of the neurons it returns.
    module = make_mlp(n_features=120, hidden=(8, 4), activation="tanh", trained=True)
    X = inputs(n_samples=40, n_features=120)
    site = module.growth_sites()[0]
    scored = {}
    most_orthogonal = init_module._most_orthogonal

    def recording(index, site, k, context, post_blocks, largest=True):
        blocks = list(post_blocks)
        scored["post"] = torch.cat(blocks, dim=1)
        scored["chosen"] = most_orthogonal(index, site, k, context, iter(blocks), largest)
        return scored["chosen"]

    monkeypatch.setattr(init_module, "_most_orthogonal", recording)
    new = PreActivationInit(n_candidates=300)(0, site, 5, GrowthContext(module, X), generator(0))
    assert scored["post"].shape == (40, 300)
    H_new = torch.tanh(X @ new.fan_in.T + new.bias)
    torch.testing.assert_close(scored["post"][:, scored["chosen"]], H_new, rtol=1e-4, atol=1e-5)


def weak_direction_inputs(n, d, relative):
    """(n, d) Gaussian inputs with one weak direction of ``[X, 1]``, of singular value
    ``~relative`` times the largest: the last row repeats the one before up to a small
    noise when n < d + 1, the last column the one before otherwise."""
    g = generator(11)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise_rows = n < d + 1
    noise = torch.randn(d if noise_rows else n, generator=g, dtype=torch.float64)
    smax = torch.linalg.svdvals(augmented(X))[0]
    scale = relative * smax * 2**0.5 / noise.norm()
    if noise_rows:
        X[-1] = X[-2] + scale * noise
    else:
        X[:, -1] = X[:, -2] + scale * noise
    return X.float()


def directions(init, context, sample_space):
    """Kept eigenvalues and right singular vectors ``V`` of ``[X, 1]`` from the features'
    Gram or from the samples' (``V = A^T U / sv``)."""
    if not sample_space:
        return init._feature_directions(0, context)
    eig, U = init._sample_directions(0, context)
    A = augmented(context.activations(0).inputs)
    return eig, A.T @ U / eig.sqrt()


# The two shapes, each path natural on one: the weak direction's relative singular value,
# 1e-5, lies between float32's eps * n and eps * (fan_in + 1), so "pinv" drops it only if
# its tolerance uses the larger of the two (n = 200, fan_in + 1 = 11: 2.4e-5 vs 1.3e-6;
# n = 30, fan_in + 1 = 301: 3.6e-6 vs 3.6e-5).
@pytest.mark.parametrize("n, d", [(200, 10), (30, 300)], ids=["tall", "wide"])
@pytest.mark.parametrize(
    "cutoff, keeps_weak", [("pinv", False), ("epsilon", False), (1e-6, True), (1e-4, False)]
)
def test_both_paths_keep_the_same_directions_as_the_svd(make_mlp, n, d, cutoff, keeps_weak):
    module = make_mlp(n_features=d, hidden=(6, 4), trained=True)
    X = weak_direction_inputs(n, d, 1e-5)
    A = augmented(X)
    _, s, Vh = torch.linalg.svd(A, full_matrices=False)
    assert 0.5e-5 < s[-1] / s[0] < 2e-5
    eps32 = torch.finfo(torch.float32).eps
    if cutoff == "epsilon":
        expected = s > 0.01 * n**0.5
    else:
        rtol = eps32 * max(n, d + 1) if cutoff == "pinv" else cutoff
        expected = s > rtol * s[0]
    assert int(expected.sum()) == min(n, d + 1) - (not keeps_weak)
    V_svd = Vh[expected].T

    init = PreActivationInit(inverse_cutoff=cutoff)
    for sample_space in (False, True):
        eig, V = directions(init, GrowthContext(module, X), sample_space)
        assert len(eig) == int(expected.sum()), sample_space
        # (A Gram's eigenvalue 1e-10 below the largest is known to ~1e-6 of itself.)
        torch.testing.assert_close(eig.flip(0).sqrt(), s[expected], rtol=1e-5, atol=0)
        torch.testing.assert_close(V @ V.T, V_svd @ V_svd.T, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n, d", [(60, 20), (30, 80)], ids=["tall", "wide"])
def test_both_paths_draw_candidates_from_the_same_subspace(make_mlp, inputs, n, d):
    # As many candidates as the kernel has dimensions, all kept: each path's candidates
    # (fan-in and bias) span V S^-1 ker(B^T), the same subspace of R^(d + 1).
    module = make_mlp(n_features=d, hidden=(6, 4), activation="tanh", trained=True)
    X = inputs(n_samples=n, n_features=d)
    m = min(n, d + 1) - 6
    spans = []
    for sample_space in (False, True):
        init = PreActivationInit(n_candidates=m)
        init._sample_space = sample_space
        new = init(0, module.growth_sites()[0], m, GrowthContext(module, X), generator(0))
        W = torch.cat([new.fan_in, new.bias[:, None]], dim=1).double()
        W = W / W.norm(dim=1, keepdim=True)
        U, s, _ = torch.linalg.svd(W.T, full_matrices=False)
        assert int((s > 1e-4 * s[0]).sum()) == m  # independent candidates
        spans.append(U @ U.T)
    torch.testing.assert_close(spans[0], spans[1], rtol=0, atol=1e-5)


def test_north_pre_fit_on_more_features_than_buffered_samples(monkeypatch):
    calls = []
    from_samples = PreActivationInit._from_samples

    def counting(self, *args, **kwargs):
        calls.append(args[0])
        return from_samples(self, *args, **kwargs)

    monkeypatch.setattr(PreActivationInit, "_from_samples", counting)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 2000)).astype(np.float32)
    y = (X[:, :10].sum(axis=1) > 0).astype(int)
    clf = GrowingMLPClassifier(
        strategy="north-pre",
        hidden_layer_sizes=(4, 4),
        max_hidden_layer_sizes=(16, 16),
        buffer_size=64,
        n_candidates=100,
        batch_size=32,
        max_epochs=2,
        random_state=0,
    ).fit(X, y)
    assert set(calls) == {0}  # the first layer (2000 inputs, 64 samples) in sample space
    assert clf.hidden_layer_sizes_[0] > 4
    assert (clf.growth_history_["layer"] == 0).sum() == len(calls)
    assert all(torch.isfinite(p).all() for p in clf.net_.module_.parameters())
    assert np.isfinite(clf.predict_proba(X)).all()


def test_input_sample_gram_is_cached_until_invalidated(make_mlp, inputs):
    module = make_mlp(n_features=30, hidden=(50, 4), trained=True)
    X = inputs(n_samples=20, n_features=30)
    context = GrowthContext(module, X)
    H = module.site_activations(X)[1].inputs.double()
    G = context.input_sample_gram(1)
    torch.testing.assert_close(G, H @ H.T, rtol=1e-12, atol=1e-10)
    assert context.input_sample_gram(1) is G
    with torch.no_grad():
        module.layers[0].weight.mul_(2)
    context.invalidate()  # site 1's inputs have changed
    H = module.site_activations(X)[1].inputs.double()
    torch.testing.assert_close(context.input_sample_gram(1), H @ H.T, rtol=1e-12, atol=1e-10)
