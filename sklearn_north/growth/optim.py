"""Carrying optimizer state across growth (SPEC section 5).

A grown parameter is a new ``Parameter`` object (changing a leaf's ``.data`` shape in place
breaks autograd while a graph that saw the old shape is alive). ``grow_parameter`` swaps it
into its module and into every optimizer ``param_group`` that held the old one, and moves
the old per-parameter state to it: every state tensor shaped like the old parameter is
padded along the grown dimension. The optimizer object itself stays, so an LR scheduler
attached to it keeps working.

Adam's pitfall: Adam keeps one step counter per tensor, so after thousands of steps its
bias corrections are ~1. New entries with zero first *and* second moments then take
updates of up to ``lr * (1 - beta1) / sqrt(1 - beta2)``, about 3.2x the learning rate,
whatever their gradient, for hundreds of steps. Three ways to fill them (``second_moment``):

- ``"gradient"`` (default): the new entries' moments start from their first non-zero
  gradient ``g`` as if every earlier gradient had been ``g``: at the optimizer step that
  first sees it, ``exp_avg = g (1 - beta1^(t-1))`` and ``exp_avg_sq = g^2 (1 - beta2^(t-1))``
  (``t`` the step being taken), so Adam's bias-corrected estimates are exactly ``g`` and
  ``g^2`` and the first update is ``lr * sign(g)``, a fresh Adam's first update, at any
  ``t``. New fan-ins of function-preserving neurons have no gradient until their fan-out
  has moved, so entries wait up to ``PENDING_STEPS`` steps for a non-zero gradient
  (``seed_pending_moments``, called between backward and the optimizer step; the callback
  does it from skorch's ``on_grad_computed``); entries that get none by then keep zeros.
  Optimizers other than the Adam family (no ``betas``) keep zero-padded state.
- ``"mean"``: the new entries' second moment is the mean of the existing entries' of the
  same slice (the SPEC's example): the first update is ``lr * (1 - beta1) * g / sqrt(v)``,
  of the order of lr or below. But new fan-ins have ~zero gradients while their seeded
  second moment is that of trained neurons, and it decays with ``beta2`` (a time scale of
  ~1000 steps): they barely learn for the first thousand steps (on MNIST, grown networks
  ended ~0.4 point below their static twins; 0.1 point with ``"gradient"``).
- ``"zero"``: the naive padding, the pitfall above.
"""

import torch

#: Optimizer state entries that accumulate squared gradients (Adam/AdamW, AMSGrad,
#: RMSprop, Adagrad). They are seeded from existing entries; all others are zero-padded.
SECOND_MOMENT_KEYS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"})

SECOND_MOMENT_MODES = ("gradient", "mean", "zero")

#: Optimizer state key of the entries still waiting for their first non-zero gradient
#: (``second_moment="gradient"``): an int8 countdown of the steps they may still wait.
PENDING_KEY = "sklearn_north_pending"

#: Steps a new entry waits for a non-zero gradient before it keeps its zero moments.
PENDING_STEPS = 8

#: Optimizer state key of where the waiting entries are, known on the host: one
#: ``[dim, start, steps_left]`` per growth whose new entries may still wait (those at
#: ``start`` and after along ``dim``). ``seed_pending_moments`` reads only these slices of
#: the parameter, and knows without asking the device when no entry waits any more.
PENDING_REGIONS_KEY = "sklearn_north_pending_regions"


def pad_along(tensor, dim, n_new, fill="zero"):
    """Append ``n_new`` entries to ``tensor`` along ``dim``.

    ``fill="zero"`` appends zeros; ``fill="mean"`` appends the mean over the existing
    entries along ``dim`` (zeros if there are none).
    """
    shape = list(tensor.shape)
    shape[dim] = n_new
    if fill == "mean" and tensor.shape[dim] > 0:
        extra = tensor.mean(dim=dim, keepdim=True).expand(*shape)
    else:
        extra = tensor.new_zeros(shape)
    return torch.cat([tensor, extra], dim=dim)


def extend_optimizer_state(optimizer, old, new, dim, second_moment="gradient"):
    """Make ``new`` (``old`` grown along ``dim``) take ``old``'s place in ``optimizer``.

    ``old`` is replaced in the ``param_groups`` and its state moved to ``new``, padded:
    second-moment entries per ``second_moment``, other parameter-shaped entries with zeros;
    with ``"gradient"`` the new entries of an Adam-like state are marked as waiting for
    ``seed_pending_moments``. Scalar state (Adam's ``step``) is kept as it is.
    """
    if second_moment not in SECOND_MOMENT_MODES:
        raise ValueError(
            f"second_moment must be one of {SECOND_MOMENT_MODES}, got {second_moment!r}."
        )
    for group in optimizer.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    state = optimizer.state.pop(old, None)
    if not state:
        return
    n_new = new.shape[dim] - old.shape[dim]
    # Entries of an earlier growth still waiting (PENDING_KEY) are zero-padded here too.
    for key, value in list(state.items()):
        if torch.is_tensor(value) and value.shape == old.shape:
            fill = "mean" if second_moment == "mean" and key in SECOND_MOMENT_KEYS else "zero"
            state[key] = pad_along(value, dim, n_new, fill=fill)
    if second_moment == "gradient" and "exp_avg" in state:
        if PENDING_KEY not in state:
            state[PENDING_KEY] = torch.zeros(new.shape, dtype=torch.int8, device=new.device)
        state[PENDING_KEY].narrow(dim, old.shape[dim], n_new).fill_(PENDING_STEPS)
        state.setdefault(PENDING_REGIONS_KEY, []).append([dim, old.shape[dim], PENDING_STEPS])
    optimizer.state[new] = state


def seed_pending_moments(optimizer):
    """Start the moments of new entries that now have a non-zero gradient from it.

    Call between the backward pass and ``optimizer.step()``, with the gradients in
    ``.grad``. For each parameter grown with ``second_moment="gradient"``, the entries
    waiting (see ``PENDING_KEY``) whose gradient ``g`` is non-zero get ``exp_avg = g (1 -
    beta1^s)``, ``exp_avg_sq`` (and AMSGrad's ``max_exp_avg_sq``) ``= g^2 (1 - beta2^s)``,
    ``s`` the tensor's step counter before this step, so that the step's bias-corrected
    moments are ``g`` and ``g^2``; the others wait one step less.

    Only the slices of the parameter that hold waiting entries are read (new entries
    are appended along one dim per growth, ``PENDING_REGIONS_KEY``), and nothing is read
    back from the device: a growth's entries wait at most ``PENDING_STEPS`` calls, which
    the host counts.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            if not state or PENDING_KEY not in state:
                continue
            if "betas" not in group:  # not the Adam family: nothing to seed
                _stop_waiting(state)
                continue
            regions = state.get(PENDING_REGIONS_KEY)
            if regions is None:  # a state saved before regions were kept: all of it
                regions = [[0, 0, PENDING_STEPS]]
            beta1, beta2 = group["betas"]
            s = float(state["step"])
            grad = None if param.grad is None else param.grad.detach()
            for index in _covering_slices(regions, param.ndim):
                _seed_slice(state, grad, index, 1 - beta1**s, 1 - beta2**s)
            for region in regions:
                region[2] -= 1
            regions = [region for region in regions if region[2] > 0]
            if regions:
                state[PENDING_REGIONS_KEY] = regions
            else:  # every countdown has reached 0
                _stop_waiting(state)


def _stop_waiting(state):
    state.pop(PENDING_KEY, None)
    state.pop(PENDING_REGIONS_KEY, None)


def _covering_slices(regions, ndim):
    """Disjoint index tuples covering every entry at or after some region's start along
    its dim: per grown dim (in order), that dim from its smallest start on and the dims
    before it up to theirs."""
    starts = {}
    for dim, start, _ in regions:
        starts[dim] = min(start, starts.get(dim, start))
    index = [slice(None)] * ndim
    for dim in sorted(starts):
        cover = list(index)
        cover[dim] = slice(starts[dim], None)
        yield tuple(cover)
        index[dim] = slice(None, starts[dim])


def _seed_slice(state, grad, index, first_scale, second_scale):
    # Run at every step while entries wait, on small slices: the cost is the number of
    # operations, so results are written in place (torch.where with out=) and the
    # countdown is "every waiting entry one less, then the hit ones 0".
    pending = state[PENDING_KEY][index]
    waiting = pending > 0
    if grad is not None:
        g = grad[index].to(state["exp_avg"].dtype)
        hit = waiting & (g != 0)
        exp_avg = state["exp_avg"][index]
        # torch.where instead of boolean indexing: no device-to-host read of how many hit.
        torch.where(hit, g * first_scale, exp_avg, out=exp_avg)
        for key in ("exp_avg_sq", "max_exp_avg_sq"):
            if key in state:
                moment = state[key][index]
                torch.where(hit, g.square().mul_(second_scale), moment, out=moment)
        pending.sub_(waiting.to(pending.dtype)).masked_fill_(hit, 0)
    else:
        pending.sub_(waiting.to(pending.dtype))


def grow_parameter(module, name, dim, new_values, optimizer=None, second_moment="gradient"):
    """Append ``new_values`` to parameter ``module.<name>`` along ``dim``.

    The grown parameter replaces the old one in ``module`` and in ``optimizer`` (state
    included, see ``extend_optimizer_state``). Returns the new parameter.
    """
    old = getattr(module, name)
    new_values = new_values.to(device=old.device, dtype=old.dtype)
    new = torch.nn.Parameter(
        torch.cat([old.detach(), new_values], dim=dim), requires_grad=old.requires_grad
    )
    setattr(module, name, new)
    if optimizer is not None:
        extend_optimizer_state(optimizer, old, new, dim, second_moment)
    return new
