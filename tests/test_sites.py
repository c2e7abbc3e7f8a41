"""Growth sites and the tensor surgery that adds neurons (SPEC sections 4 and 5)."""

import pytest
import torch
from torch import nn

from sklearn_north.growth import (
    Consumer,
    GrowthContext,
    GrowthSite,
    NewNeurons,
    PreActivationInit,
    RandomInit,
    SelectInit,
    WeightInit,
    add_neurons,
)

NORTH_INITIALIZERS = [
    RandomInit(),
    SelectInit(n_candidates=50),
    PreActivationInit(n_candidates=50),
    WeightInit(),
]
INIT_IDS = ["random", "select", "preactivation", "weight"]


def grow_every_site(module, initializer, k, samples, seed=0, optimizer=None):
    """Grow each site of ``module`` by ``k`` neurons with ``initializer``, as the callback
    does (one context per evaluation, invalidated after each growth)."""
    generator = torch.Generator().manual_seed(seed)
    context = GrowthContext(module, samples)
    for index, site in enumerate(module.growth_sites()):
        new = initializer(index, site, k, context, generator)
        assert new.k == k
        add_neurons(site, new, optimizer=optimizer)
        context.invalidate()


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("initializer", NORTH_INITIALIZERS, ids=INIT_IDS)
def test_north_initializers_preserve_the_function(make_mlp, inputs, initializer, activation):
    # Hidden widths below the fan-in, so Weight and Pre-activation take their main path.
    module = make_mlp(n_features=12, hidden=(5, 4), n_outputs=3, activation=activation)
    # Train the weights away from their initial values (non-zero biases included).
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    buffer = inputs(n_samples=80, n_features=12, seed=2)
    X = inputs(n_samples=50, n_features=12, seed=3)
    with torch.no_grad():
        before = module(X).clone()
    widths = module.hidden_layer_sizes
    k = 3
    grow_every_site(module, initializer, k, buffer)

    assert module.hidden_layer_sizes == tuple(w + k for w in widths)
    # Module size attributes and parameter shapes are consistent.
    sizes = [12, *module.hidden_layer_sizes, 3]
    for layer, d_in, d_out in zip(module.layers, sizes[:-1], sizes[1:]):
        assert layer.weight.shape == (d_out, d_in)
        assert layer.bias.shape == (d_out,)
        assert (layer.in_features, layer.out_features) == (d_in, d_out)
    with torch.no_grad():
        after = module(X)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    # The new neurons are not dead weight: fan-in is non-zero; their fan-out into the
    # consumer's old neurons (and the output layer) is exactly zero.
    old_rows = [*widths[1:], 3]
    for i, width in enumerate(widths):
        assert torch.all(module.layers[i].weight[width:].abs().sum(dim=1) > 0)
        assert torch.all(module.layers[i + 1].weight[: old_rows[i], width:] == 0)


@pytest.mark.parametrize("initializer", NORTH_INITIALIZERS, ids=INIT_IDS)
def test_old_weights_are_kept_exactly(make_mlp, inputs, initializer):
    module = make_mlp(n_features=12, hidden=(5, 4))
    old = [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in module.layers]
    grow_every_site(module, initializer, 2, inputs(n_samples=60, n_features=12))
    for layer, (w, b) in zip(module.layers, old):
        assert torch.equal(layer.weight[: w.shape[0], : w.shape[1]], w)
        assert torch.equal(layer.bias[: b.shape[0]], b)


def test_non_zero_fan_out_changes_the_function(make_mlp, inputs):
    module = make_mlp(n_features=6, hidden=(5, 4), n_outputs=3)
    X = inputs(n_samples=40, n_features=6)
    with torch.no_grad():
        before = module(X).clone()
    site = module.growth_sites()[0]
    g = torch.Generator().manual_seed(0)
    k = 2
    fan_in = torch.randn(k, 6, generator=g)
    fan_out = torch.randn(4, k, generator=g)
    add_neurons(site, NewNeurons(fan_in=fan_in, bias=torch.ones(k), fan_out=[fan_out]))
    assert module.hidden_layer_sizes == (7, 4)
    with torch.no_grad():
        after = module(X)
    assert not torch.allclose(after, before, atol=1e-3)
    # ... and by exactly the contribution of the new neurons.
    with torch.no_grad():
        h_new = torch.relu(X @ fan_in.T + 1.0)
        layer1 = module.layers[1]
        old_pre = torch.relu(module.layers[0](X)[:, :5]) @ layer1.weight[:, :5].T
        expected = torch.relu(old_pre + h_new @ fan_out.T + layer1.bias)
        torch.testing.assert_close(module.layers[2](expected), after)


def test_add_neurons_validates_shapes(make_mlp):
    module = make_mlp(n_features=6, hidden=(5, 4))
    site = module.growth_sites()[0]
    with pytest.raises(ValueError, match="fan_in"):
        add_neurons(site, NewNeurons(fan_in=torch.zeros(2, 7)))
    with pytest.raises(ValueError, match="fan-out"):
        add_neurons(site, NewNeurons(fan_in=torch.zeros(2, 6), fan_out=[]))
    # A rejected call leaves the network untouched (no half-grown producer).
    assert module.hidden_layer_sizes == (5, 4)
    assert module.layers[0].weight.shape == (5, 6) and module.layers[1].weight.shape == (4, 5)
    add_neurons(site, NewNeurons(fan_in=torch.zeros(0, 6)))
    assert module.hidden_layer_sizes == (5, 4)


def test_site_width_and_room(make_mlp):
    module = make_mlp(hidden=(5, 4), max_hidden_layer_sizes=(7, None))
    first, second = module.growth_sites()
    assert (first.width, first.room, first.fan_in_shape) == (5, 2, (6,))
    assert second.room == float("inf")
    add_neurons(first, NewNeurons(fan_in=torch.zeros(3, 6)))
    assert first.width == 8
    assert first.room == 0  # never negative


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.bn = nn.BatchNorm1d(5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, X):
        return self.fc2(torch.relu(self.bn(self.fc1(X))))


def test_batchnorm_gets_identity_entries_and_keeps_the_function(inputs):
    torch.manual_seed(0)
    net = BatchNormNet()
    X = inputs(n_samples=40, n_features=6)
    # Non-trivial statistics and affine parameters.
    net.train()
    for _ in range(5):
        net(X + torch.randn_like(X))
    with torch.no_grad():
        net.bn.weight.uniform_(0.5, 2.0)
        net.bn.bias.uniform_(-1.0, 1.0)
    with torch.no_grad():
        before_train = net(X).clone()
        net.eval()
        before = net(X).clone()
    old = {
        name: t.detach().clone()
        for name, t in [
            ("weight", net.bn.weight),
            ("bias", net.bn.bias),
            ("running_mean", net.bn.running_mean),
            ("running_var", net.bn.running_var),
        ]
    }
    site = GrowthSite("bn", net.fc1, [Consumer(net.fc2)], torch.relu, norms=[net.bn])
    k = 3
    add_neurons(site, NewNeurons(fan_in=torch.randn(k, 6), bias=torch.randn(k)))

    assert net.bn.num_features == 8
    for name, value in old.items():
        grown = getattr(net.bn, name)
        assert grown.shape == (8,)
        assert torch.equal(grown[:5], value)
    assert torch.equal(net.bn.weight[5:], torch.ones(k))
    assert torch.equal(net.bn.bias[5:], torch.zeros(k))
    assert torch.equal(net.bn.running_mean[5:], torch.zeros(k))
    assert torch.equal(net.bn.running_var[5:], torch.ones(k))
    # Still registered as parameters / buffers of the module.
    assert any(p is net.bn.weight for p in net.parameters())
    assert any(b is net.bn.running_var for b in net.buffers())
    with torch.no_grad():
        torch.testing.assert_close(net(X), before)
        # In training mode too: batch statistics of the new features cannot reach the output.
        net.train()
        torch.testing.assert_close(net(X), before_train)


class ConvNet(nn.Module):
    """conv -> relu -> conv -> relu -> flatten -> linear; both convs are sites."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, X):
        h = torch.relu(self.conv2(torch.relu(self.conv1(X))))
        return self.fc(h.flatten(1))


def test_conv_sites_grow_channels_and_flatten_columns():
    torch.manual_seed(0)
    net = ConvNet()
    X = torch.randn(7, 2, 6, 6)
    with torch.no_grad():
        before = net(X).clone()
    first = GrowthSite("c1", net.conv1, [Consumer(net.conv2)], torch.relu)
    second = GrowthSite("c2", net.conv2, [Consumer(net.fc, spatial=16)], torch.relu)
    assert first.fan_out_shape(first.consumers[0], 2) == (4, 2, 3, 3)
    assert second.fan_out_shape(second.consumers[0], 2) == (5, 32)

    add_neurons(first, NewNeurons(fan_in=torch.randn(2, 2, 3, 3)))
    add_neurons(second, NewNeurons(fan_in=torch.randn(2, 5, 3, 3)))
    assert (net.conv1.out_channels, net.conv2.in_channels, net.conv2.out_channels) == (5, 5, 6)
    assert net.fc.in_features == 96
    with torch.no_grad():
        torch.testing.assert_close(net(X), before)

    # Non-zero fan-out at the flatten: new channel c owns 16 consecutive columns.
    fan_out = torch.randn(5, 16)
    add_neurons(second, NewNeurons(fan_in=torch.randn(1, 5, 3, 3), fan_out=[fan_out]))
    assert torch.equal(net.fc.weight[:, 96:], fan_out)
    with torch.no_grad():
        h = torch.relu(net.conv2(torch.relu(net.conv1(X))))
        new_channel = h[:, 6].flatten(1)
        contribution = new_channel @ fan_out.T
        torch.testing.assert_close(net(X) - before, contribution, rtol=1e-4, atol=1e-5)


def test_grown_network_keeps_training(make_mlp):
    # Regression on a fixed data set; grow in the middle of an Adam training loop.
    torch.manual_seed(0)
    X = torch.randn(256, 6)
    y = torch.sin(X @ torch.randn(6, 3))
    module = make_mlp(n_features=6, hidden=(5, 4), n_outputs=3, activation="tanh")
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)

    def step():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(module(X), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(50):
        step()
    grow_every_site(module, RandomInit(), 3, X[:64], optimizer=optimizer)
    new_fan_in = [module.layers[i].weight[w:].detach().clone() for i, w in enumerate((5, 4))]
    with torch.no_grad():
        loss_at_growth = nn.functional.mse_loss(module(X), y).item()
    losses = [step() for _ in range(100)]

    assert losses[0] == pytest.approx(loss_at_growth, rel=1e-5)  # function preserved
    assert losses[-1] < 0.8 * loss_at_growth
    # Mostly decreasing: later windows are better than earlier ones.
    assert sum(losses[-10:]) < sum(losses[40:50]) < sum(losses[:10])
    # Every grown parameter is in the optimizer and the new neurons learn.
    grown = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in grown for p in module.parameters())
    for i, width in enumerate((5, 4)):
        fan_in = module.layers[i].weight[width:]
        fan_out = module.layers[i + 1].weight[:, width:]
        assert not torch.allclose(fan_in, new_fan_in[i])
        assert torch.all(fan_out.abs().sum(dim=0) > 0)  # every new neuron got fan-out
