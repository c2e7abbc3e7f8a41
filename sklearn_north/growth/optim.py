"""Carrying optimizer state across growth (SPEC section 5).

A grown parameter is a new ``Parameter`` object (changing a leaf's ``.data`` shape in place
breaks autograd while a graph that saw the old shape is alive). ``grow_parameter`` swaps it
into its module and into every optimizer ``param_group`` that held the old one, and moves
the old per-parameter state to it: every state tensor shaped like the old parameter is
padded along the grown dimension. The optimizer object itself stays, so an LR scheduler
attached to it keeps working.

Adam's pitfall: Adam keeps one step counter per tensor, so after thousands of steps its
bias corrections are ~1. New entries with zero first *and* second moments then take a first
step of ``lr * (1 - beta1) / sqrt(1 - beta2)``, about 3.2x the learning rate, whatever their
gradient. Seeding the new entries' second moment with the mean of the existing entries of
the same slice makes them behave like entries that have seen typical gradients but carry
no momentum: their first update is ``lr * (1 - beta1) * g / sqrt(v)``, of the order of lr
(or below) for gradients of the usual size. This is ``second_moment="mean"`` (default);
``"zero"`` reproduces the naive padding.
"""

import torch

#: Optimizer state entries that accumulate squared gradients (Adam/AdamW, AMSGrad,
#: RMSprop, Adagrad). They are seeded from existing entries; all others are zero-padded.
SECOND_MOMENT_KEYS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"})

SECOND_MOMENT_MODES = ("mean", "zero")


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


def extend_optimizer_state(optimizer, old, new, dim, second_moment="mean"):
    """Make ``new`` (``old`` grown along ``dim``) take ``old``'s place in ``optimizer``.

    ``old`` is replaced in the ``param_groups`` and its state moved to ``new``, padded:
    second-moment entries per ``second_moment``, other parameter-shaped entries with zeros.
    Scalar state (Adam's ``step``) is kept as it is.
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
    for key, value in list(state.items()):
        if torch.is_tensor(value) and value.shape == old.shape:
            fill = second_moment if key in SECOND_MOMENT_KEYS else "zero"
            state[key] = pad_along(value, dim, n_new, fill=fill)
    optimizer.state[new] = state


def grow_parameter(module, name, dim, new_values, optimizer=None, second_moment="mean"):
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
