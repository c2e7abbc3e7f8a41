"""Gradient-based initializers: GradMax, Firefly, NeST (SPEC section 4), and the gradient
strategies in the estimator."""

import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from sklearn_north import GrowingMLPClassifier
from sklearn_north.growth import (
    FireflyInit,
    GradientRecorder,
    GradMaxInit,
    GrowthContext,
    NeSTInit,
    NewNeurons,
    RandomInit,
    add_neurons,
)
from sklearn_north.growth.initializers import (
    _lower_quantile_value,
    mean_fan_in_norm,
    mean_fan_out_norm,
    top_left_singular_vectors,
)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=60, n_features=8, n_classes=4, seed=1):
    g = generator(seed)
    return torch.randn(n, n_features, generator=g), torch.randint(0, n_classes, (n,), generator=g)


def backward(module, X, y):
    module.train()
    module.zero_grad()
    loss = F.cross_entropy(module(X), y)
    loss.backward()
    return loss


def context_after_step(module, X, y):
    """A ``GrowthContext`` with the gradient statistics of one training step on (X, y)."""
    recorder = GradientRecorder().attach(module.growth_sites())
    backward(module, X, y)
    snapshot = recorder.snapshot(module.growth_sites())
    recorder.detach()
    return GrowthContext(module, gradients=snapshot)


@pytest.fixture
def setup(make_mlp):
    """A trained-looking 8 -> 6 -> 5 -> 4 network and one mini-batch."""
    module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=4, trained=True)
    X, y = batch()
    return module, X, y


# --- GradMax -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("index", [0, 1])
def test_gradmax_maximises_the_new_fan_in_gradient_norm(setup, index, k):
    module, X, y = setup
    context = context_after_step(module, X, y)
    G = context.gradients(index).G.double()
    s = torch.linalg.svdvals(G)
    site = module.growth_sites()[index]
    new = GradMaxInit()(index, site, k, context, generator())
    scale = mean_fan_out_norm(site)

    def fan_in_grad_norm(fan_out):
        grown = copy.deepcopy(module)
        n = NewNeurons(fan_in=new.fan_in, bias=new.bias, fan_out=[fan_out])
        add_neurons(grown.growth_sites()[index], n)
        backward(grown, X, y)  # same batch, next backward
        return float(grown.layers[index].weight.grad[-k:].norm())

    gradmax = fan_in_grad_norm(new.fan_out[0])
    # ||U_k^T G||_F * scale: the largest any k fan-outs of that norm can give.
    torch.testing.assert_close(
        gradmax, scale * float(s[:k].square().sum().sqrt()), rtol=1e-4, atol=0
    )
    g = generator(5)
    for _ in range(10):
        # Random orthogonal fan-outs of the same norms (GradMax's constraint; by Ky Fan's
        # inequality no orthonormal k-frame beats the top-k singular vectors).
        R = torch.linalg.qr(torch.randn(new.fan_out[0].shape, generator=g))[0] * scale
        assert fan_in_grad_norm(R) < gradmax


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic"])
def test_gradmax_is_function_preserving(make_mlp, activation):
    module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=4, activation=activation, trained=True)
    X, y = batch()
    context = context_after_step(module, X, y)
    with torch.no_grad():
        before = module(X).clone()
    for index, site in enumerate(module.growth_sites()):
        new = GradMaxInit()(index, site, 2, context, generator())
        assert all(block.abs().max() > 0 for block in new.fan_out)  # non-trivial
        add_neurons(site, new)
        context.site_grew(index, new)
    assert module.hidden_layer_sizes == (8, 7)
    with torch.no_grad():
        torch.testing.assert_close(module(X), before, rtol=1e-5, atol=1e-6)


def test_gradmax_beyond_the_singular_vectors(setup):
    # Site 1 feeds 4 outputs: G has 4 left singular vectors; 6 neurons need 2 more.
    module, X, y = setup
    context = context_after_step(module, X, y)
    site = module.growth_sites()[1]
    new = GradMaxInit()(1, site, 6, context, generator())
    fan_out = new.fan_out[0]
    assert fan_out.shape == (4, 6)
    torch.testing.assert_close(fan_out.norm(dim=0), torch.full((6,), mean_fan_out_norm(site)))
    U = torch.linalg.svd(context.gradients(1).G.double())[0]
    top = fan_out[:, :4].double() / fan_out[:, :4].double().norm(dim=0)
    torch.testing.assert_close(
        (U.T @ top).abs(), torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0
    )


def test_gradmax_compensates_a_constant_output_in_the_consumer_bias(make_mlp):
    # logistic(0) = 0.5: the new neurons output 0.5 on every sample, which adds
    # 0.5 * u to the consumer's pre-activations; its bias is lowered by exactly that.
    module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=4, activation="logistic")
    X, y = batch()
    context = context_after_step(module, X, y)
    site = module.growth_sites()[1]
    bias_before = module.layers[2].bias.detach().clone()
    new = GradMaxInit()(1, site, 2, context, generator())
    expected = bias_before - 0.5 * new.fan_out[0].sum(dim=1)
    assert (expected - bias_before).abs().max() > 1e-2  # a visible correction
    torch.testing.assert_close(module.layers[2].bias.detach(), expected)


def test_gradmax_after_an_upstream_growth_in_the_same_evaluation(setup):
    # Site 0 grows first (random fan-in, zero fan-out: function-preserving); site 1's
    # GradMax then reads the step's statistics extended with the new neurons' activations,
    # which must give what a fresh step on the grown network gives.
    module, X, y = setup
    context = context_after_step(module, X, y)
    site0 = module.growth_sites()[0]
    new = RandomInit()(0, site0, 3, context, generator(1))
    add_neurons(site0, new)
    context.site_grew(0, new)
    extended = GradMaxInit()(1, module.growth_sites()[1], 2, context, generator())
    fresh_context = context_after_step(module, X, y)
    fresh = GradMaxInit()(1, module.growth_sites()[1], 2, fresh_context, generator())
    torch.testing.assert_close(extended.fan_out[0], fresh.fan_out[0], rtol=1e-4, atol=1e-6)


# --- Firefly -------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_firefly_preserves_the_function_up_to_the_noise(setup, index):
    module, X, y = setup
    context = context_after_step(module, X, y)
    with torch.no_grad():
        before = module(X).clone()
    site = module.growth_sites()[index]
    new = FireflyInit()(index, site, 4, context, generator())
    add_neurons(site, new)
    with torch.no_grad():
        change = (module(X) - before).abs().max() / before.abs().max()
    assert 0 < change < 1e-3, float(change)


def test_firefly_change_scales_with_the_noise(make_mlp):
    changes = []
    for noise in (1e-4, 1e-2):
        module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=4, trained=True)
        X, y = batch()
        context = context_after_step(module, X, y)
        with torch.no_grad():
            before = module(X).clone()
        site = module.growth_sites()[0]
        add_neurons(site, FireflyInit(noise=noise)(0, site, 4, context, generator()))
        with torch.no_grad():
            changes.append(float((module(X) - before).abs().max()))
    assert 10 < changes[1] / changes[0] < 1000, changes


def test_firefly_keeps_the_candidates_with_the_largest_fan_out_gradient(setup):
    module, X, y = setup
    index, k = 0, 4
    context = context_after_step(module, X, y)
    grads = context.gradients(index)
    site = module.growth_sites()[index]
    W_out = module.layers[index + 1].weight.detach().clone()
    W_in = module.layers[index].weight.detach().clone()
    b_in = module.layers[index].bias.detach().clone()
    # noise=0: a split candidate of neuron j scores exactly ||dL/dw_j^out||.
    new = FireflyInit(noise=0.0)(index, site, k, context, generator(3))
    W_out_after = module.layers[index + 1].weight.detach()

    split = [j for j in range(site.width) if not torch.equal(W_out_after[:, j], W_out[:, j])]
    for j in split:  # the split neuron keeps half its fan-out, the copy gets the other half
        torch.testing.assert_close(W_out_after[:, j], W_out[:, j] / 2)
        copies = [c for c in range(k) if torch.equal(new.fan_in[c], W_in[j])]
        assert len(copies) == 1 and new.bias[copies[0]] == b_in[j]
        torch.testing.assert_close(new.fan_out[0][:, copies[0]], W_out[:, j] / 2)
    n_new = k - len(split)
    assert 0 < len(split) < k  # both kinds chosen: the comparison below is meaningful

    acts = torch.relu(grads.inputs @ new.fan_in.T + new.bias)
    chosen_scores = (grads.delta.T @ acts).norm(dim=0)
    existing_scores = grads.fan_out_grad.norm(dim=0)
    unchosen = [j for j in range(site.width) if j not in split]
    assert chosen_scores.min() >= existing_scores[unchosen].max() * (1 - 1e-5)
    # New neurons: fan-out of size noise * mean fan-out norm (0 here), fan-in rescaled.
    is_new = [c for c in range(k) if not any(torch.equal(new.fan_in[c], W_in[j]) for j in split)]
    assert len(is_new) == n_new
    torch.testing.assert_close(
        new.fan_in[is_new].norm(dim=1), torch.full((n_new,), mean_fan_in_norm(site))
    )


@pytest.mark.parametrize("seed", range(4))
def test_firefly_scores_splits_without_their_noise(make_mlp, seed):
    # A large noise (0.5): the splits kept are still those of the largest noise-free
    # score ||dL/dw_j^out|| (the existing neuron's own fan-out gradient), and their fan-in
    # carries noise of norm 0.5 ||w_j||.
    module = make_mlp(n_features=8, hidden=(12, 5), n_outputs=4, trained=True, seed=seed)
    context = context_after_step(module, *batch(seed=seed))
    scores = context.gradients(0).fan_out_grad.norm(dim=0)
    site = module.growth_sites()[0]
    W_in = module.layers[0].weight.detach().clone().double()
    W_out = module.layers[1].weight.detach().clone()
    new = FireflyInit(noise=0.5)(0, site, 6, context, generator(seed))
    halved = module.layers[1].weight.detach()
    split = [j for j in range(site.width) if not torch.equal(halved[:, j], W_out[:, j])]
    unsplit = [j for j in range(site.width) if j not in split]
    assert split and unsplit
    assert scores[split].min() >= scores[unsplit].max()
    relative = torch.cdist(new.fan_in.double(), W_in[split]).min(dim=0).values
    torch.testing.assert_close(relative / W_in[split].norm(dim=1),
                               torch.full((len(split),), 0.5, dtype=torch.float64))  # fmt: skip


@pytest.mark.parametrize("index", [0, 1])
def test_firefly_candidates_match_their_definition(setup, index):
    # noise 1e-2: splits are w_j plus noise of norm noise * ||w_j||; new neurons have a
    # fan-out of norm noise * (mean fan-out norm) along -g / ||g||, g = delta^T act(z):
    # the direction that decreases the batch loss.
    module, X, y = setup
    noise, k = 1e-2, 4
    context = context_after_step(module, X, y)
    grads = context.gradients(index)
    site = module.growth_sites()[index]
    W_in = module.layers[index].weight.detach().clone().double()
    b_in = module.layers[index].bias.detach().clone()
    W_out = module.layers[index + 1].weight.detach().clone()
    fan_out_scale = mean_fan_out_norm(site)
    new = FireflyInit(noise=noise)(index, site, k, context, generator(0))

    distance, nearest = torch.cdist(new.fan_in.double(), W_in).min(dim=1)
    relative = distance / W_in[nearest].norm(dim=1)
    is_split = (relative - noise).abs() < 1e-4
    assert 0 < int(is_split.sum()) < k  # both kinds were chosen
    for c in torch.nonzero(is_split).flatten().tolist():
        j = int(nearest[c])
        assert new.bias[c] == b_in[j]
        torch.testing.assert_close(new.fan_out[0][:, c], W_out[:, j] / 2)
    fresh = ~is_split
    assert torch.all(relative[fresh] > 0.1) and torch.all(new.bias[fresh] == 0)
    torch.testing.assert_close(
        new.fan_in[fresh].norm(dim=1),
        torch.full((int(fresh.sum()),), mean_fan_in_norm(site)),
    )
    g = grads.delta.T @ torch.relu(grads.inputs @ new.fan_in[fresh].T)
    expected = -noise * fan_out_scale * g / g.norm(dim=0)
    torch.testing.assert_close(new.fan_out[0][:, fresh], expected, rtol=1e-4, atol=1e-8)


# --- NeST ----------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.1, 0.4, 0.5, 0.73, 0.999, 1.0])
@pytest.mark.parametrize("kind", ["plain", "ties", "zeros", "signed"])
def test_nest_cutoff_keeps_what_torch_quantile_keeps(q, kind):
    g = torch.Generator().manual_seed(int(q * 1000) + len(kind))
    for shape in [(1, 1), (1, 7), (13, 17), (64, 40)]:
        A = torch.randn(shape, generator=g)
        if kind != "signed":
            A = A.abs()
        if kind == "ties":  # many equal values, the interpolated quantile between two of them
            A = (A * 3).round()
        if kind in ("zeros", "signed"):  # counted, not sorted: quantiles in and off them
            A[torch.rand(shape, generator=g) < 0.45] = 0
        cutoff = _lower_quantile_value(A, q)
        expected = A > torch.quantile(A.flatten(), q)
        torch.testing.assert_close(A > cutoff, expected, rtol=0, atol=0)
        assert cutoff <= float(torch.quantile(A.flatten(), q))
        # The order statistic itself.
        assert cutoff == float(A.flatten().sort().values[math.floor(q * (A.numel() - 1))])


def test_nest_follows_G_and_changes_the_function(make_mlp):
    module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=4, trained=True)
    X, y = batch()
    X[:, :3] = 0  # inputs 0-2 are always zero: their column of G is zero
    context = context_after_step(module, X, y)
    grads = context.gradients(0)
    site = module.growth_sites()[0]
    k = 3
    new = NeSTInit()(0, site, k, context, generator())

    A = grads.G.detach().double().abs()
    kept = A * (A > torch.quantile(A.flatten(), 0.4))
    in_mass, out_mass = kept.sum(dim=0).sqrt(), kept.sum(dim=1).sqrt()
    fan_in = new.fan_in.double()
    assert torch.all(fan_in[:, :3] == 0)
    # |fan-in| proportional to sqrt of the kept gradient mass of each input, random signs.
    ratio = fan_in.abs() / in_mass
    torch.testing.assert_close(ratio[:, 3:], ratio[:, 3:4].expand(-1, 5), rtol=1e-5, atol=0)
    assert (fan_in[:, 3:] > 0).any() and (fan_in[:, 3:] < 0).any()
    torch.testing.assert_close(
        fan_in.norm(dim=1), torch.full((k,), mean_fan_in_norm(site)).double()
    )
    # |fan-out| proportional to the outputs' kept mass, signs that decrease the loss.
    fan_out = new.fan_out[0].double()
    u = fan_out.abs() / out_mass[:, None]
    torch.testing.assert_close(u, u[:1].expand(len(u), -1), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        fan_out.norm(dim=0), torch.full((k,), mean_fan_out_norm(site)).double()
    )
    acts = torch.relu(grads.inputs @ new.fan_in.T)
    g = (grads.delta.T @ acts).double()  # dL/d(fan-out) at 0
    assert torch.all(fan_out * g <= 0) and torch.all((fan_out * g).sum(dim=0) < 0)
    assert torch.all(new.bias == 0)

    loss_before = F.cross_entropy(module(X), y)
    with torch.no_grad():
        before = module(X).clone()
    add_neurons(site, new)
    with torch.no_grad():
        after = module(X)
    assert (after - before).abs().max() > 1e-2 * before.abs().max()  # not preserved
    # A small step along the chosen fan-outs decreases the loss (first order).
    module_small = copy.deepcopy(module)
    with torch.no_grad():
        module_small.layers[1].weight[:, -k:] *= 1e-3
        assert F.cross_entropy(module_small(X), y) < loss_before


# --- in the estimator ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16.0, y[:400]


# Narrow layers: T_grad's threshold sums the existing neurons' gradient norms, so with the
# paper's threshold (scale 1) it fires on narrow layers (and dead ones) only.
SMALL = dict(hidden_layer_sizes=(1, 2), max_hidden_layer_sizes=12, lr=1e-2, batch_size=32)


@pytest.mark.parametrize("strategy", ["gradmax", "firefly", "nest"])
def test_gradient_strategies_grow_in_the_estimator(digits, strategy):
    X, y = digits
    clf = GrowingMLPClassifier(strategy=strategy, max_epochs=2, random_state=0, **SMALL)
    clf.fit(X, y)
    history = clf.growth_history_
    assert len(history) > 0
    assert (history.n_added > 0).all()
    assert np.all(history.metric > history.threshold)  # sigma_max above the threshold
    for layer, width in enumerate(clf.hidden_layer_sizes_):
        events = history[history.layer == layer]
        assert width == SMALL["hidden_layer_sizes"][layer] + events.n_added.sum() <= 12
    assert np.isfinite(clf.predict_proba(X)).all()
    assert all(not m._forward_hooks for m in clf.module_.modules())


def test_fitted_gradmax_model_pickles_and_predicts_identically(digits):
    X, y = digits
    clf = GrowingMLPClassifier(strategy="gradmax", max_epochs=2, random_state=0, **SMALL)
    clf.fit(X, y)
    assert len(clf.growth_history_) > 0
    assert all(not m._forward_hooks for m in clf.module_.modules())
    data = pickle.dumps(clf)
    assert b"GradientRecorder" not in data
    loaded = pickle.loads(data)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert loaded.hidden_layer_sizes_ == clf.hidden_layer_sizes_
    # Continued training re-attaches the hooks and removes them again.
    loaded.set_params(warm_start=True, max_epochs=1).fit(X, y)
    assert all(not m._forward_hooks for m in loaded.module_.modules())


def test_nest_fan_out_is_its_closed_form(make_mlp):
    # Site 1 (5 -> 4): every weight follows from G and the random fan-in signs:
    # |fan-in| = sqrt(kept column mass) rescaled, fan-out = -sign(g) sqrt(kept row mass)
    # rescaled to the mean fan-out norm, g = delta^T relu(inputs @ fan_in^T).
    module = make_mlp(n_features=8, hidden=(6, 5), n_outputs=4, trained=True, seed=3)
    X, y = batch(seed=4)
    context = context_after_step(module, X, y)
    grads = context.gradients(1)
    site = module.growth_sites()[1]
    scale_in, scale_out = mean_fan_in_norm(site), mean_fan_out_norm(site)
    new = NeSTInit()(1, site, 3, context, generator(2))

    A = grads.G.detach().double().abs()
    kept = torch.where(A > torch.quantile(A.flatten(), 0.4), A, 0)
    in_mass, out_mass = kept.sum(dim=0).sqrt(), kept.sum(dim=1).sqrt()
    expected_in = (in_mass * scale_in / in_mass.norm()).expand(3, -1)
    torch.testing.assert_close(new.fan_in.double().abs(), expected_in, rtol=1e-5, atol=1e-7)
    g = (grads.delta.T @ torch.relu(grads.inputs @ new.fan_in.T)).double()
    assert torch.all(g.abs() > 1e-6)  # every sign is determined
    direction = -torch.sign(g) * out_mass[:, None]
    expected_out = direction / direction.norm(dim=0) * scale_out
    torch.testing.assert_close(new.fan_out[0].double(), expected_out, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("shape", "rank"),
    [((300, 20), 20), ((300, 20), 7), ((12, 40), 12), ((12, 40), 5), ((50, 50), 50)],
)
@pytest.mark.parametrize("k", [1, 6, 25])
def test_top_left_singular_vectors_are_the_svds(shape, rank, k):
    # GradMax's fan-outs from the smaller Gram's eigenvectors: the thin SVD's left singular
    # vectors for the top singular values (up to sign; distinct values here), orthonormal
    # columns also past the rank (where any completion is as good as the SVD's).
    g = torch.Generator().manual_seed(rank + k)
    n, m = shape
    left, _ = torch.linalg.qr(torch.randn(n, rank, generator=g, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(m, rank, generator=g, dtype=torch.float64))
    values = torch.logspace(0, -3, rank, dtype=torch.float64)  # distinct, 1e3 apart
    G = left @ torch.diag(values) @ right.T
    U = top_left_singular_vectors(G, k)
    assert U.shape == (n, min(k, n))
    eye = torch.eye(U.shape[1], dtype=torch.float64)
    torch.testing.assert_close(U.T @ U, eye, atol=1e-10, rtol=0)
    expected = torch.linalg.svd(G, full_matrices=False).U
    top = min(k, rank)
    cosines = (U[:, :top] * expected[:, :top]).sum(0).abs()
    torch.testing.assert_close(cosines, torch.ones(top, dtype=torch.float64), atol=1e-8, rtol=0)
    # Past the rank: G's left space is already spanned, so they are orthogonal to it.
    assert torch.all((U[:, top:].T @ left).abs() < 1e-8)
