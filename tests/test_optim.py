"""Optimizer state across growth (SPEC section 5, ``sklearn_north.growth.optim``)."""

import copy
import math
from functools import partial

import pytest
import torch
from torch import nn

from sklearn_north.growth import NewNeurons, RandomInit, add_neurons, grow_parameter
from sklearn_north.growth.optim import (
    PENDING_KEY,
    PENDING_REGIONS_KEY,
    PENDING_STEPS,
    extend_optimizer_state,
    pad_along,
    seed_pending_moments,
)
from sklearn_north.nn import GrowableMLP


def params_in(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def contains(params, tensor):
    return any(p is tensor for p in params)


def train_linear(optimizer_factory, n_steps=5, seed=0):
    """A Linear layer trained a few steps so that its optimizer has state."""
    torch.manual_seed(seed)
    layer = nn.Linear(4, 3)
    optimizer = optimizer_factory(layer.parameters())
    X, y = torch.randn(32, 4), torch.randn(32, 3)
    for _ in range(n_steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(layer(X), y).backward()
        optimizer.step()
    return layer, optimizer


def test_pad_along():
    t = torch.arange(6.0).reshape(2, 3)
    assert torch.equal(pad_along(t, 0, 2), torch.cat([t, torch.zeros(2, 3)]))
    assert torch.equal(pad_along(t, 1, 1), torch.cat([t, torch.zeros(2, 1)], dim=1))
    mean_rows = pad_along(t, 0, 2, fill="mean")
    assert torch.equal(mean_rows[2:], torch.tensor([[1.5, 2.5, 3.5]] * 2))
    mean_cols = pad_along(t, 1, 1, fill="mean")
    assert torch.equal(mean_cols[:, 3], torch.tensor([1.0, 4.0]))
    # Mean of nothing: zeros.
    assert torch.equal(pad_along(torch.zeros(0, 3), 0, 2, fill="mean"), torch.zeros(2, 3))


@pytest.mark.parametrize("dim", [0, 1])
def test_sgd_momentum_buffer_is_zero_padded(dim):
    layer, optimizer = train_linear(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    old = layer.weight
    old_buffer = optimizer.state[old]["momentum_buffer"].clone()
    assert old_buffer.abs().sum() > 0
    new_values = torch.randn(2, 4) if dim == 0 else torch.randn(3, 2)
    new = grow_parameter(layer, "weight", dim, new_values, optimizer)

    assert layer.weight is new
    assert isinstance(new, nn.Parameter) and new.requires_grad
    assert torch.equal(new.detach().narrow(dim, 0, old.shape[dim]), old.detach())
    assert torch.equal(new.detach().narrow(dim, old.shape[dim], 2), new_values)
    assert not contains(params_in(optimizer), old)
    assert contains(params_in(optimizer), new)
    assert old not in optimizer.state
    buffer = optimizer.state[new]["momentum_buffer"]
    assert buffer.shape == new.shape
    assert torch.equal(buffer.narrow(dim, 0, old.shape[dim]), old_buffer)
    assert torch.all(buffer.narrow(dim, old.shape[dim], 2) == 0)
    # The order of the parameters in the group is kept (state_dict relies on it).
    assert optimizer.param_groups[0]["params"][0] is new


OPTIMIZERS = {
    "adam": (lambda p: torch.optim.Adam(p, lr=0.01), ["exp_avg"], ["exp_avg_sq"]),
    "adam-amsgrad": (
        lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
        ["exp_avg"],
        ["exp_avg_sq", "max_exp_avg_sq"],
    ),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01), ["exp_avg"], ["exp_avg_sq"]),
    "rmsprop": (
        lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
        ["momentum_buffer"],
        ["square_avg"],
    ),
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=0.01), [], ["sum"]),
}


@pytest.mark.parametrize("second_moment", ["gradient", "mean", "zero"])
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_is_carried_over_and_padded(name, dim, second_moment):
    factory, first_keys, second_keys = OPTIMIZERS[name]
    layer, optimizer = train_linear(factory)
    old = layer.weight
    old_state = {key: value.clone() for key, value in optimizer.state[old].items()}
    n_old = old.shape[dim]
    new_values = torch.randn(2, 4) if dim == 0 else torch.randn(3, 2)
    new = grow_parameter(layer, "weight", dim, new_values, optimizer, second_moment)

    state = optimizer.state[new]
    pending = state.pop(PENDING_KEY, None)
    regions = state.pop(PENDING_REGIONS_KEY, None)
    assert set(state) == set(old_state)
    if second_moment == "gradient" and name in ("adam", "adamw", "adam-amsgrad"):
        # The new entries wait for their first gradient; the old ones do not.
        assert pending.shape == new.shape
        assert torch.all(pending.narrow(dim, 0, n_old) == 0)
        assert torch.all(pending.narrow(dim, n_old, 2) == PENDING_STEPS)
        assert regions == [[dim, n_old, PENDING_STEPS]]
    else:
        assert pending is None and regions is None
    for key in first_keys + second_keys:
        assert state[key].shape == new.shape, key
        # Old entries carried over exactly.
        assert torch.equal(state[key].narrow(dim, 0, n_old), old_state[key]), key
        added = state[key].narrow(dim, n_old, 2)
        if key in first_keys or second_moment in ("zero", "gradient"):
            assert torch.all(added == 0), key
        else:
            expected = old_state[key].mean(dim=dim, keepdim=True).expand_as(added)
            torch.testing.assert_close(added, expected)
            assert torch.all(added > 0), key
    # Scalar state (step counters) unchanged.
    for key, value in old_state.items():
        if key not in first_keys + second_keys:
            assert torch.equal(torch.as_tensor(state[key]), torch.as_tensor(value)), key
    assert not contains(params_in(optimizer), old)
    assert contains(params_in(optimizer), new)
    # The optimizer can step with the grown parameter.
    new.grad = torch.ones_like(new)
    layer.bias.grad = torch.ones_like(layer.bias)
    before = new.detach().clone()
    optimizer.step()
    assert not torch.equal(new.detach(), before)


def test_only_the_group_holding_the_parameter_changes():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD(
        [{"params": a.parameters(), "lr": 0.1}, {"params": b.parameters(), "lr": 0.5}]
    )
    group_a = list(optimizer.param_groups[0]["params"])
    old = b.weight
    new = grow_parameter(b, "weight", 1, torch.zeros(2, 1), optimizer)
    assert optimizer.param_groups[0]["params"] == group_a
    assert optimizer.param_groups[1]["params"][0] is new
    assert optimizer.param_groups[1]["lr"] == 0.5
    assert not contains(params_in(optimizer), old)


def test_parameter_without_state_and_without_optimizer():
    layer = nn.Linear(3, 2).double()
    optimizer = torch.optim.Adam(layer.parameters())
    new = grow_parameter(layer, "weight", 0, torch.ones(1, 3, dtype=torch.float32), optimizer)
    assert new.dtype == torch.float64  # model's dtype, not the values'
    assert new not in optimizer.state
    assert contains(params_in(optimizer), new)
    frozen = nn.Linear(3, 2)
    frozen.weight.requires_grad_(False)
    grown = grow_parameter(frozen, "weight", 0, torch.ones(1, 3))
    assert grown.shape == (3, 3) and not grown.requires_grad


def test_invalid_second_moment_mode():
    layer, optimizer = train_linear(lambda p: torch.optim.Adam(p))
    new = nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="second_moment"):
        extend_optimizer_state(optimizer, layer.weight, new, 0, second_moment="median")


# --- Adam's first update after growth -----------------------------------------------------

LR = 1e-3
BETAS = (0.9, 0.999)
N_STEPS = 3000


@pytest.fixture(scope="module")
def long_trained():
    """A 2-hidden-layer MLP trained with Adam for thousands of steps, and its data."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # Noisy labels and mini-batches: gradients stay of their usual size after training.
    X = torch.randn(512, 5)
    y = (X[:, :2].sum(dim=1) + 0.5 * torch.randn(512) > 0).long()
    module = GrowableMLP(5, (6, 4), 2, activation="tanh")
    optimizer = torch.optim.Adam(module.parameters(), lr=LR, betas=BETAS)
    loss_fn = nn.CrossEntropyLoss()
    for step in range(N_STEPS):
        rows = slice(32 * (step % 16), 32 * (step % 16 + 1))
        optimizer.zero_grad()
        loss_fn(module(X[rows]), y[rows]).backward()
        optimizer.step()
    torch.set_num_threads(previous)
    return module.state_dict(), optimizer.state_dict(), X[:32], y[:32]


def first_update_after_growth(long_trained, second_moment):
    """Relative size |delta| / lr of the new fan-out entries at the first step after growth,
    and the step counter at that step."""
    module_state, optimizer_state, X, y = long_trained
    module = GrowableMLP(5, (6, 4), 2, activation="tanh")
    module.load_state_dict(module_state)
    optimizer = torch.optim.Adam(module.parameters(), lr=LR, betas=BETAS)
    optimizer.load_state_dict(copy.deepcopy(optimizer_state))
    site = module.growth_sites()[0]
    new = RandomInit()(0, site, 3, None, torch.Generator().manual_seed(0))
    add_neurons(site, new, optimizer=optimizer, second_moment=second_moment)
    fan_in_before = module.layers[0].weight[6:].detach().clone()
    consumer = module.layers[1].weight
    fan_out_before = consumer[:, 6:].detach().clone()
    assert torch.all(fan_out_before == 0)

    optimizer.zero_grad()
    nn.functional.cross_entropy(module(X), y).backward()
    grad = consumer.grad[:, 6:].clone()
    seed_pending_moments(optimizer)  # what the callback does between backward and step
    optimizer.step()
    # New fan-in rows have zero gradient (zero fan-out): they do not move at first.
    assert torch.equal(module.layers[0].weight[6:].detach(), fan_in_before)
    assert torch.all(grad != 0)  # the measured entries did receive a gradient
    delta = (consumer[:, 6:].detach() - fan_out_before).abs()
    step = int(optimizer.state[consumer]["step"])
    return delta / LR, step


def zero_moments_update(step):
    """|update| / lr of an entry with zero moments at Adam's step ``step``: m = (1 - b1) g,
    v = (1 - b2) g^2, then the step's bias corrections, whatever the gradient."""
    beta1, beta2 = BETAS
    return (1 - beta1) / (1 - beta1**step) * math.sqrt(1 - beta2**step) / math.sqrt(1 - beta2)


def test_adam_first_update_is_of_the_order_of_lr_with_mean_second_moment(long_trained):
    ratio, step = first_update_after_growth(long_trained, "mean")
    assert step == N_STEPS + 1  # the step counter survived growth
    assert ratio.median() <= 1.0
    assert ratio.max() <= 2.0
    assert ratio.min() > 0  # the new entries do learn


def test_adam_first_update_with_zero_second_moment_is_the_pitfall(long_trained):
    ratio, step = first_update_after_growth(long_trained, "zero")
    assert step == N_STEPS + 1
    expected = zero_moments_update(step)
    assert expected > 3.0
    torch.testing.assert_close(ratio, torch.full_like(ratio, expected), rtol=1e-2, atol=0)


def test_adam_first_update_with_gradient_moments_is_a_fresh_adams(long_trained):
    ratio, step = first_update_after_growth(long_trained, "gradient")
    assert step == N_STEPS + 1
    # Bias-corrected moments g and g^2: |update| = lr |g| / (|g| + eps) = lr.
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=1e-3, atol=0)


def grow_and_step(n_steps_before, second_moment, X, y, n_steps_after=2):
    """Train a small MLP for ``n_steps_before`` Adam steps, add 3 neurons to its first
    layer, then take ``n_steps_after`` steps; return the module, optimizer, and for each
    step after growth the new entries' update / lr and gradients (fan-in, fan-out)."""
    torch.manual_seed(0)
    module = GrowableMLP(X.shape[1], (6, 4), 2, activation="tanh")
    optimizer = torch.optim.Adam(module.parameters(), lr=LR, betas=BETAS)
    for _ in range(n_steps_before):
        optimizer.zero_grad()
        nn.functional.cross_entropy(module(X), y).backward()
        optimizer.step()
    site = module.growth_sites()[0]
    new = RandomInit()(0, site, 3, None, torch.Generator().manual_seed(0))
    add_neurons(site, new, optimizer=optimizer, second_moment=second_moment)
    steps = []
    for _ in range(n_steps_after):
        fan_in, fan_out = module.layers[0].weight, module.layers[1].weight
        before = fan_in[6:].detach().clone(), fan_out[:, 6:].detach().clone()
        optimizer.zero_grad()
        nn.functional.cross_entropy(module(X), y).backward()
        grads = fan_in.grad[6:].clone(), fan_out.grad[:, 6:].clone()
        seed_pending_moments(optimizer)
        optimizer.step()
        after = module.layers[0].weight[6:].detach(), module.layers[1].weight[:, 6:].detach()
        steps.append(([(a - b).abs() / LR for a, b in zip(after, before)], grads))
    return module, optimizer, steps


@pytest.mark.parametrize("n_steps_before", [2, 40])
def test_gradient_moments_first_updates_are_lr_at_any_step(n_steps_before):
    torch.manual_seed(1)
    X = torch.randn(64, 5)
    y = (X[:, 0] > 0).long()
    _, optimizer, steps = grow_and_step(n_steps_before, "gradient", X, y)
    (fan_in_1, fan_out_1), (fan_in_grad_1, fan_out_grad_1) = steps[0]
    (fan_in_2, _), (fan_in_grad_2, _) = steps[1]
    # Step 1: the fan-out has a gradient and moves by lr; the fan-in has none (zero
    # fan-out) and waits.
    assert torch.all(fan_out_grad_1 != 0) and torch.all(fan_in_grad_1 == 0)
    torch.testing.assert_close(fan_out_1, torch.ones_like(fan_out_1), rtol=1e-3, atol=0)
    assert torch.all(fan_in_1 == 0)
    # Step 2: the fan-in's first gradient; its first update is lr too, even this early
    # in training (where Adam's bias corrections are far from 1).
    assert torch.all(fan_in_grad_2 != 0)
    g = fan_in_grad_2.abs()
    expected = g / (g + 1e-8)  # Adam's eps matters for these small first gradients
    torch.testing.assert_close(fan_in_2, expected, rtol=1e-3, atol=0)
    # Everything seeded: no entry waits any more (the countdowns are kept, at zero,
    # until the host knows they have expired: no device read to find out earlier).
    for state in optimizer.state.values():
        assert PENDING_KEY not in state or torch.all(state[PENDING_KEY] == 0)
    # Waiting ends PENDING_STEPS steps after the growth at the latest.
    for _ in range(PENDING_STEPS - 2):
        seed_pending_moments(optimizer)
    assert all(PENDING_KEY not in state for state in optimizer.state.values())
    assert all(PENDING_REGIONS_KEY not in state for state in optimizer.state.values())


def test_zero_moments_first_updates_are_not_lr_early_in_training():
    # Counter-check of the test above: the naive padding does not give lr.
    torch.manual_seed(1)
    X = torch.randn(64, 5)
    y = (X[:, 0] > 0).long()
    _, _, steps = grow_and_step(40, "zero", X, y)
    (_, fan_out_1), _ = steps[0]
    naive = zero_moments_update(41)  # the step that took the update
    assert abs(naive - 1) > 0.3  # 0.64 here; 3.2 late in training
    torch.testing.assert_close(fan_out_1, torch.full_like(fan_out_1, naive), rtol=1e-3, atol=0)


def test_entries_without_gradient_stop_waiting_after_pending_steps():
    torch.manual_seed(1)
    X = torch.randn(64, 5)
    X[:, 4] = 0  # no gradient ever reaches the new neurons' weights on this input
    y = (X[:, 0] > 0).long()
    module, optimizer, _ = grow_and_step(5, "gradient", X, y, n_steps_after=PENDING_STEPS - 1)
    state = optimizer.state[module.layers[0].weight]
    assert PENDING_KEY in state  # input 4's entries wait one step more
    assert torch.all(state[PENDING_KEY][6:, 4] == 1) and torch.all(state[PENDING_KEY][6:, :4] == 0)
    assert torch.all(state["exp_avg_sq"][6:, 4] == 0)
    optimizer.zero_grad()
    nn.functional.cross_entropy(module(X), y).backward()
    seed_pending_moments(optimizer)
    assert PENDING_KEY not in state
    assert torch.all(state["exp_avg_sq"][6:, 4] == 0)  # they keep zeros


def test_growing_again_before_seeding_keeps_the_earlier_entries_waiting():
    layer, optimizer = train_linear(lambda p: torch.optim.Adam(p, lr=0.01))
    w1 = grow_parameter(layer, "weight", 0, torch.randn(2, 4), optimizer, "gradient")
    w2 = grow_parameter(layer, "weight", 1, torch.randn(5, 1), optimizer, "gradient")
    pending = optimizer.state[w2][PENDING_KEY]
    assert pending.shape == w2.shape
    assert torch.all(pending[3:, :4] == PENDING_STEPS)  # rows of the first growth
    assert torch.all(pending[:, 4] == PENDING_STEPS)  # the column of the second
    assert torch.all(pending[:3, :4] == 0)
    assert w1 not in optimizer.state
    # The "mean" mode after "gradient" keeps them waiting too (zero-padded).
    w3 = grow_parameter(layer, "weight", 0, torch.randn(1, 5), optimizer, "mean")
    assert torch.equal(optimizer.state[w3][PENDING_KEY][:5], pending)
    assert torch.all(optimizer.state[w3][PENDING_KEY][5:] == 0)


def test_lr_scheduler_still_drives_the_grown_parameters(make_mlp):
    module = make_mlp(n_features=6, hidden=(5, 4))
    optimizer = torch.optim.SGD(module.parameters(), lr=0.4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.25)
    site = module.growth_sites()[0]
    add_neurons(site, NewNeurons(fan_in=torch.randn(2, 6)), optimizer=optimizer)
    grown = module.layers[0].weight
    assert grown.shape == (7, 6)
    optimizer.step()  # (no gradients: a no-op, keeps the scheduler's order warning away)
    scheduler.step()
    (group,) = [g for g in optimizer.param_groups if contains(g["params"], grown)]
    assert group["lr"] == pytest.approx(0.1)
    # The update of the grown parameter uses the scheduled learning rate.
    before = grown.detach().clone()
    optimizer.zero_grad()
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    torch.testing.assert_close(grown.detach(), before - 0.1)


def _seed_everything(state, grad, betas):
    """Reference for ``seed_pending_moments`` on one parameter: every entry of the tensor
    read, boolean indexing (the plain statement of the rule)."""
    pending = state[PENDING_KEY]
    waiting = pending > 0
    hit = waiting & (grad != 0)
    s = float(state["step"])
    state["exp_avg"][hit] = grad[hit] * (1 - betas[0] ** s)
    state["exp_avg_sq"][hit] = grad[hit].square() * (1 - betas[1] ** s)
    pending.sub_((waiting & ~hit).to(pending.dtype))
    pending[hit] = 0


@pytest.mark.parametrize("seed", range(4))
def test_seeding_reads_only_the_grown_slices_and_equals_the_whole_tensor_rule(seed):
    # A weight grown along both dims (a hidden layer's, as producer and as consumer), at
    # different steps, with gradients that are zero at random entries: seeding only the
    # slices after each growth's start (host-known regions) gives exactly what the rule
    # applied to every entry gives, at every step, until every region has expired.
    betas = (0.9, 0.999)
    layer, optimizer = train_linear(partial(torch.optim.Adam, betas=betas), seed=seed)
    g = torch.Generator().manual_seed(seed)
    w = grow_parameter(layer, "weight", 0, torch.randn(2, 4, generator=g), optimizer)
    reference = copy.deepcopy(optimizer.state[w])
    for step in range(PENDING_STEPS + 3):
        if step == 2:
            w = grow_parameter(layer, "weight", 1, torch.randn(5, 3, generator=g), optimizer)
            reference = {
                key: pad_along(value, 1, 3) if torch.is_tensor(value) and value.ndim else value
                for key, value in reference.items()
            }
            reference[PENDING_KEY][:, 4:] = PENDING_STEPS
        grad = torch.randn(w.shape, generator=g)
        grad[torch.rand(w.shape, generator=g) < 0.6] = 0  # many entries keep waiting
        w.grad = grad
        _seed_everything(reference, grad, betas)
        seed_pending_moments(optimizer)
        state = optimizer.state[w]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[key], reference[key]), (step, key)
        if PENDING_KEY in state:
            assert torch.equal(state[PENDING_KEY], reference[PENDING_KEY]), step
        else:  # expired: the rule's countdowns are all 0 too
            assert torch.all(reference[PENDING_KEY] == 0), step
    assert PENDING_KEY not in optimizer.state[w]  # the second growth's region expired
