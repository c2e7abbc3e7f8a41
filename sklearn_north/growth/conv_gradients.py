"""The exact auxiliary-gradient matrix of GradMax between two convolutions (SPEC section 8).

GradMax adds ``k`` channels between a producer conv ``l`` (``C_{l-1} -> C_l``) and its
consumer conv ``l + 1`` (``C_l -> C_{l+1}``) with zero fan-in (new filters and biases 0)
and chooses the new fan-out slices ``consumer.weight[:, j]`` (``C_{l+1} x k2h x k2w``) to
maximise the norm of the loss gradient with respect to the new fan-in filters. Taking the
activation's slope at 0 as 1, that gradient is linear in the fan-out slice::

    dL/dA_j = M @ vec(W_out[:, j])

with ``A_j`` the new filter ``j`` of the producer flattened to ``C_{l-1} * k1h * k1w`` and

``M = sum_{n, p} U[n, p, :] (outer) D[n, p, :]`` of shape
``(C_{l-1} * k1h * k1w, C_{l+1} * k2h * k2w)``:

- ``U = unfold(x_{l-1}; k1, padding p1, stride s1)``, ``(N, L, C_{l-1} * k1h * k1w)``, ``L``
  the producer's output positions; a row index ``(c, i, j)``, channel-major, is the index
  of ``producer.weight[m].reshape(-1)``;
- ``D[n, p, (o, u, v)] = delta[n, o, q]`` for the consumer output position ``q`` that
  reads the producer's output position ``p`` through tap ``(u, v)`` of its
  cross-correlation (``p = q * s2 + (u, v) - p2`` per axis), and 0 where no such ``q``
  exists (borders; with ``s2 > 1`` the positions a tap skips);
- ``delta = dL/d(consumer output)``, ``(N, C_{l+1}, H2, W2)``.

Column ``(o, u, v)`` of ``M``, output-channel-major, is the index of
``consumer.weight[:, j].reshape(-1)``: a right singular vector of ``M`` reshaped to
``(C_{l+1}, k2h, k2w)`` is a fan-out slice for ``consumer.weight[:, j]`` as torch's
``conv2d`` uses it.

Neither ``U`` nor ``D`` needs to be built together with the other: ``M`` is the weight
gradient of a convolution, so torch's own convolution backward computes it (and with it the
border and stride bookkeeping, in the very convention ``conv2d`` uses):

- ``"input"``: ``M[(c, i, j), (o, u, v)]`` is the weight gradient of a conv with the
  consumer's geometry whose input is ``U`` laid out as an image
  ``(N, C_{l-1} * k1h * k1w, H1, W1)`` and whose output gradient is ``delta``;
- ``"delta"``: ``M^T`` is the weight gradient of a conv with the producer's geometry whose
  input is ``x`` and whose output gradient is ``D`` as an image
  ``(N, C_{l+1} * k2h * k2w, H1, W1)``; ``D`` is the transposed consumer conv of ``delta``
  with one-hot kernels (one output channel per (channel, tap) pair).

Each materialises one of ``U`` or ``D``; ``"auto"`` picks the narrower one
(``C_{l-1} * k1h * k1w`` against ``C_{l+1} * k2h * k2w`` values per output position).
Samples are processed in chunks so that the materialised tensor stays within a memory
budget.

The published "auxiliary kernel" shortcut (one conv of kernel ``k1 + k2 - 1``, padding
``p1 + p2``) equals ``M`` only away from the borders and not at all when the producer is
strided; it is not used here.

The matrix assumes the new channels reach the consumer unchanged apart from the activation
(slope 1 at 0): no normalisation and no pooling in between. torch's ``relu`` has gradient
0 at 0, which is why ``M`` is built from ``x`` and ``delta`` directly and not by autograd.
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvGeometry", "conv_auxiliary_matrix", "site_auxiliary_gradient", "top_fan_out"]

_METHODS = ("auto", "input", "delta")


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, stride and zero padding of a 2-d convolution, per axis ``(h, w)``.

    Dilation 1 and one group are implied. ``ConvGeometry.from_module`` reads them off an
    ``nn.Conv2d`` (and rejects what this module does not support).
    """

    kernel_size: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)

    def __post_init__(self):
        for name in ("kernel_size", "stride", "padding"):
            value = getattr(self, name)
            pair = (value, value) if isinstance(value, int) else tuple(value)
            if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
                raise ValueError(
                    f"ConvGeometry.{name} must be an int or a pair of ints, got {value!r}."
                )
            low = 0 if name == "padding" else 1
            if min(pair) < low:
                raise ValueError(f"ConvGeometry.{name} must be >= {low} per axis, got {value!r}.")
            object.__setattr__(self, name, pair)

    @classmethod
    def from_module(cls, conv, name="conv"):
        """The geometry of ``conv``, an ``nn.Conv2d`` with dilation 1, one group and zero
        padding (``name`` is used in error messages)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(
                f"{name} must be an nn.Conv2d or a ConvGeometry, got {type(conv).__name__}."
            )
        if conv.groups != 1:
            raise NotImplementedError(
                f"{name} has groups={conv.groups}; only groups=1 convolutions are supported."
            )
        if tuple(conv.dilation) != (1, 1):
            raise NotImplementedError(
                f"{name} has dilation={tuple(conv.dilation)}; only dilation 1 is supported."
            )
        if conv.padding_mode != "zeros":
            raise NotImplementedError(
                f"{name} has padding_mode={conv.padding_mode!r}; only 'zeros' is supported."
            )
        padding = conv.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            # torch pads 'same' asymmetrically for even kernels; only odd ones are symmetric.
            if any(k % 2 == 0 for k in conv.kernel_size):
                raise NotImplementedError(
                    f"{name} uses padding='same' with the even kernel {conv.kernel_size}; "
                    "give an explicit symmetric padding instead."
                )
            padding = tuple((k - 1) // 2 for k in conv.kernel_size)
        return cls(tuple(conv.kernel_size), tuple(conv.stride), tuple(padding))

    @property
    def taps(self):
        """Number of kernel taps, ``kh * kw``."""
        return self.kernel_size[0] * self.kernel_size[1]

    def output_size(self, size):
        """The output spatial size ``(H', W')`` for an input of size ``(H, W)``."""
        return tuple(
            (n + 2 * p - k) // s + 1
            for n, k, s, p in zip(size, self.kernel_size, self.stride, self.padding)
        )


def _geometry(conv, name):
    return conv if isinstance(conv, ConvGeometry) else ConvGeometry.from_module(conv, name)


def conv_auxiliary_matrix(
    x,
    delta,
    producer,
    consumer,
    *,
    chunk_size=None,
    max_chunk_bytes=2**28,
    method="auto",
    dtype=torch.float64,
):
    """The exact GradMax auxiliary-gradient matrix ``M`` between two convolutions.

    ``dL/dA_j = M @ consumer.weight[:, j].reshape(-1)`` for a new channel ``j`` with zero
    fan-in ``A_j`` (the producer filter, flattened like ``producer.weight[j].reshape(-1)``)
    when the activation's slope at 0 is taken as 1. See the module docstring for the
    definition and the index conventions.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C_{l-1}, H0, W0)
        The producer's input on the batch.
    delta : torch.Tensor of shape (N, C_{l+1}, H2, W2)
        The gradient of the loss with respect to the consumer's output (pre-activation).
    producer : nn.Conv2d or ConvGeometry
        Conv ``l``, the layer that gets the new output channels (only its geometry is used).
    consumer : nn.Conv2d or ConvGeometry
        Conv ``l + 1``, which reads the producer's output (only its geometry is used).
    chunk_size : int or None, default=None
        Samples per chunk. ``None`` derives it from ``max_chunk_bytes``.
    max_chunk_bytes : int, default=2**28
        Memory budget (bytes) for the tensor materialised per chunk (``U`` or ``D``, see
        ``method``); at least one sample is processed per chunk whatever the budget.
    method : {"auto", "input", "delta"}, default="auto"
        Which side to materialise: ``"input"`` unfolds ``x`` (``C_{l-1} * k1h * k1w``
        values per producer output position), ``"delta"`` spreads ``delta`` over the
        consumer's taps (``C_{l+1} * k2h * k2w`` values per position); ``"auto"`` takes
        the narrower. Both give the same matrix up to rounding.
    dtype : torch.dtype, default=torch.float64
        Accumulation and output dtype. Each chunk is computed in the promoted dtype of
        ``x`` and ``delta`` (at least float32); the chunks' products are summed in
        ``dtype``.

    Returns
    -------
    M : torch.Tensor of shape (C_{l-1} * k1h * k1w, C_{l+1} * k2h * k2w)
        On ``x``'s device, in ``dtype``. Rows ``(c, i, j)`` index the producer's filter,
        columns ``(o, u, v)`` the consumer's fan-out slice, both row-major.
    """
    producer = _geometry(producer, "producer")
    consumer = _geometry(consumer, "consumer")
    for name, t in (("x", x), ("delta", delta)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a 4-d tensor (N, C, H, W), got {_describe(t)}.")
    if x.shape[0] != delta.shape[0]:
        raise ValueError(
            f"x and delta must hold the same samples: x has {x.shape[0]}, "
            f"delta has {delta.shape[0]}."
        )
    if x.device != delta.device:
        raise ValueError(f"x is on {x.device} but delta is on {delta.device}; move one.")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
    if not isinstance(max_chunk_bytes, int) or max_chunk_bytes < 1:
        raise ValueError(f"max_chunk_bytes must be a positive int, got {max_chunk_bytes!r}.")

    mid_size = producer.output_size(tuple(x.shape[2:]))
    if min(mid_size) < 1:
        raise ValueError(
            f"The producer's geometry {producer} gives no output position on inputs of "
            f"size {tuple(x.shape[2:])}."
        )
    out_size = consumer.output_size(mid_size)
    if tuple(delta.shape[2:]) != out_size:
        raise ValueError(
            f"delta has spatial size {tuple(delta.shape[2:])}, but the consumer's output on "
            f"the producer's {mid_size} output is {out_size}: pass the gradient of the "
            "consumer's output, and the producer and consumer that go with x."
        )

    compute = torch.promote_types(torch.promote_types(x.dtype, delta.dtype), torch.float32)
    rows = x.shape[1] * producer.taps
    cols = delta.shape[1] * consumer.taps
    if method == "auto":
        method = "input" if rows <= cols else "delta"
    width = rows if method == "input" else cols
    if chunk_size is None:
        per_sample = width * mid_size[0] * mid_size[1] * compute.itemsize
        chunk_size = max(1, max_chunk_bytes // per_sample)

    n = x.shape[0]
    M = torch.zeros(rows, cols, dtype=dtype, device=x.device)
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            xs = x[start : start + chunk_size].detach().to(compute)
            ds = delta[start : start + chunk_size].detach().to(compute)
            if method == "input":
                part = _via_unfolded_input(xs, ds, producer, consumer, mid_size)
            else:
                part = _via_spread_delta(xs, ds, producer, consumer, mid_size)
            M += part.to(dtype)
    return M


def _via_unfolded_input(x, delta, producer, consumer, mid_size):
    """``M`` as the consumer-geometry weight gradient over ``U`` laid out as an image."""
    unfolded = F.unfold(
        x, producer.kernel_size, padding=producer.padding, stride=producer.stride
    ).reshape(x.shape[0], -1, *mid_size)
    c_out = delta.shape[1]
    # grad[o, a, u, v] = sum_{n, q} delta[n, o, q] * U_padded[n, a, q*s2 + (u, v) - p2],
    # a = (c, i, j): exactly M[a, (o, u, v)].
    grad = torch.nn.grad.conv2d_weight(
        unfolded,
        (c_out, unfolded.shape[1], *consumer.kernel_size),
        delta,
        stride=consumer.stride,
        padding=consumer.padding,
    )
    return grad.transpose(0, 1).reshape(unfolded.shape[1], -1)


def _spread_delta(delta, consumer, size):
    """``D`` as an image ``(N, C_{l+1} * k2h * k2w, *size)``: ``delta`` routed back through
    each of the consumer's taps to the consumer-input position ``size`` it reads."""
    c_out = delta.shape[1]
    taps = consumer.taps
    # One-hot kernels: the transposed consumer conv (groups = channels) copies
    # delta[n, o, q] to output channel (o, u, v) at the position q*s2 + (u, v) - p2 it reads.
    one_hot = torch.eye(taps, dtype=delta.dtype, device=delta.device)
    one_hot = one_hot.reshape(1, taps, *consumer.kernel_size).expand(c_out, -1, -1, -1)
    # The input rows/columns the consumer's last stride step does not reach.
    natural = tuple(
        (n2 - 1) * s - 2 * p + k
        for n2, s, p, k in zip(
            delta.shape[2:], consumer.stride, consumer.padding, consumer.kernel_size
        )
    )
    return F.conv_transpose2d(
        delta,
        one_hot,
        stride=consumer.stride,
        padding=consumer.padding,
        output_padding=tuple(m - s for m, s in zip(size, natural)),
        groups=c_out,
    )


def _via_spread_delta(x, delta, producer, consumer, mid_size):
    """``M^T`` as the producer-geometry weight gradient over ``D`` laid out as an image."""
    spread = _spread_delta(delta, consumer, mid_size)
    grad = torch.nn.grad.conv2d_weight(
        x,
        (spread.shape[1], x.shape[1], *producer.kernel_size),
        spread,
        stride=producer.stride,
        padding=producer.padding,
    )
    return grad.reshape(spread.shape[1], -1).T


def site_auxiliary_gradient(
    x,
    deltas,
    producer,
    consumers,
    *,
    pool=None,
    norm_eps=None,
    norm_scale=None,
    max_chunk_bytes=1 << 28,
    dtype=torch.float64,
):
    """GradMax's auxiliary gradient ``G`` of a conv growth site, as the training step sees it.

    ``G`` (``R x F``) maps new channels' fan-out to their fan-in gradient: with zero fan-in
    and fan-out ``w`` (the consumers' new input slices, concatenated in ``consumers`` order,
    each ``(o, u, v)`` row-major), ``dL/dA = G^T w``. Rows: the consumers' fan-out
    coordinates (``R = sum C_out * kh * kw``); columns: the producer's fan-in ``(c, i, j)``
    (``F = C_in * k1h * k1w``): the conv form of the dense ``G = delta^T X``.

    Between the producer and the consumers the new channels go through (in this order):
    a train-mode BatchNorm with identity entries when ``norm_eps`` is given (at a constant
    zero channel its backward is ``(g - mean g) / sqrt(eps)``, the mean over samples and
    positions: the "known instability" of SPEC section 8), the activation with slope 1 at
    0 (GradMax's convention; the package's ReLU), and ``pool`` (a per-channel spatial map,
    e.g. a max-pool: its backward at the all-zero new channels is taken from autograd, so
    ties go where torch's training step sends them).

    Parameters
    ----------
    x : Tensor (N, C_in, H, W)
        The producer's input.
    deltas : list of Tensor
        Each consumer's output gradient, ``(N, C_out, H2, W2)``; a dense consumer reading
        the flattened maps is given as a conv whose kernel covers the whole map
        (``ConvGeometry(kernel_size=(H', W'))``) with its gradient as ``(N, n_out, 1, 1)``.
    producer : nn.Conv2d or ConvGeometry
    consumers : list of nn.Conv2d or ConvGeometry
    pool : callable or None
        ``(N, B, H1, W1) -> (N, B, H', W')``, the producer's output to the consumers' input.
    norm_eps : float or None
    norm_scale : float or None
        The BatchNorm backward's scale at the new channels: ``None``, the train-mode one,
        ``1 / sqrt(norm_eps)`` (exact for the next training step); a growth trigger may
        prefer the new entries' own ``1 / sqrt(1 + eps)`` (running variance 1), which does
        not amplify a constant channel's gradient ~316-fold.
    max_chunk_bytes : int
        Samples are processed in chunks whose spread gradient stays within this size.
    dtype : torch.dtype
        Accumulation and output dtype.
    """
    producer = _geometry(producer, "producer")
    consumers = [_geometry(c, "consumer") for c in consumers]
    if len(deltas) != len(consumers):
        raise ValueError(f"{len(deltas)} deltas for {len(consumers)} consumers.")
    mid = producer.output_size(tuple(x.shape[2:]))
    route = None
    if pool is not None:
        route = _zero_channel_route(pool, mid, x.device)
    if pool is None or route is not None:
        G, spread_sum = _via_routed_input(
            x, deltas, producer, consumers, route, max_chunk_bytes, dtype
        )
    else:
        G, spread_sum = _via_pooled_spread(
            x, deltas, producer, consumers, pool, mid, max_chunk_bytes, dtype
        )
    if norm_eps is None:
        return G
    # BatchNorm's centring over every sample and position: G - sum(D) sum(U)^T / (N L),
    # sum(U) the producer's unfolded input summed over samples and positions.
    compute = torch.promote_types(x.dtype, torch.float32)
    with torch.no_grad():
        ones = x.new_ones(x.shape[0], 1, *mid, dtype=compute)
        input_sum = torch.nn.grad.conv2d_weight(
            x.detach().to(compute),
            (1, x.shape[1], *producer.kernel_size),
            ones,
            stride=producer.stride,
            padding=producer.padding,
        ).reshape(-1)
    n_positions = x.shape[0] * mid[0] * mid[1]
    G -= torch.outer(spread_sum, input_sum.to(dtype)) / n_positions
    return G * (norm_scale if norm_scale is not None else 1 / math.sqrt(norm_eps))


@functools.lru_cache(maxsize=64)
def _zero_channel_route(pool, mid, device):
    """Where ``pool`` routes the gradient of an all-zero channel: for each pooled
    position (flat), the one producer-output position (flat) that receives it, or None
    when the pool is not such a selection (windows that overlap or average).

    A max-pool over an all-zero map ties in every window, and its backward sends each
    window's gradient to the element torch picks for the tie (the first); new channels
    with zero fan-in are all-zero in the training step that ``G`` describes. Cached: a
    site asks at every step with the same pool and map size (the tensors are only read)."""
    with torch.enable_grad():
        z = torch.zeros(1, 1, *mid, dtype=torch.float64, device=device, requires_grad=True)
        out = pool(z)
        codes = torch.arange(1, out.numel() + 1, dtype=z.dtype, device=device)
        (received,) = torch.autograd.grad(out, z, codes.reshape(out.shape))
    received = received.reshape(-1)
    sources = received.nonzero().reshape(-1)
    if len(sources) != out.numel():
        return None
    values = received[sources]
    order = torch.argsort(values)
    if not torch.equal(values[order], codes):  # each pooled position to one source, whole
        return None
    return sources[order], tuple(out.shape[2:])


def _via_routed_input(x, deltas, producer, consumers, route, max_chunk_bytes, dtype):
    """``G`` and the spread gradient's per-row sums from the producer's unfolded input,
    kept at the positions whose gradient reaches the consumers (all of them without a
    pool), laid out as an image and correlated with each consumer's ``delta`` in its own
    geometry: ``N * positions * rows * F`` multiply-adds, and no ``D`` of ``rows``
    channels at the producer's full resolution."""
    mid = producer.output_size(tuple(x.shape[2:]))
    positions, size = (None, mid) if route is None else route
    compute = torch.promote_types(x.dtype, torch.float32)
    n_fan_in = x.shape[1] * producer.taps
    per_sample = n_fan_in * mid[0] * mid[1] * compute.itemsize
    chunk = max(1, max_chunk_bytes // per_sample)
    rows = sum(d.shape[1] * c.taps for d, c in zip(deltas, consumers))
    G = torch.zeros(rows, n_fan_in, dtype=dtype, device=x.device)
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            xs = x[start : start + chunk].detach().to(compute)
            U = F.unfold(xs, producer.kernel_size, padding=producer.padding, stride=producer.stride)
            if positions is not None:
                U = U[:, :, positions]
            U = U.reshape(xs.shape[0], n_fan_in, *size)
            blocks = []
            for d, c in zip(deltas, consumers):
                ds = d[start : start + chunk].detach().to(compute)
                g = torch.nn.grad.conv2d_weight(
                    U,
                    (ds.shape[1], n_fan_in, *c.kernel_size),
                    ds,
                    stride=c.stride,
                    padding=c.padding,
                )
                blocks.append(g.permute(0, 2, 3, 1).reshape(-1, n_fan_in))  # rows (o, u, v)
            G += torch.cat(blocks).to(dtype)
        # The spread gradient D is linear in delta: its per-row sum over samples and
        # positions is the spread of delta summed over samples.
        spread_sum = torch.cat(
            [
                _spread_delta(d.detach().to(compute).sum(0, keepdim=True), c, size).sum(
                    dim=(0, 2, 3)
                )
                for d, c in zip(deltas, consumers)
            ]
        )
    return G, spread_sum


def _via_pooled_spread(x, deltas, producer, consumers, pool, mid, max_chunk_bytes, dtype):
    """``G`` through ``D`` at the producer's full resolution, ``pool``'s backward taken
    from autograd: for pools that are not a selection at an all-zero channel."""
    with torch.no_grad():
        size = tuple(pool(x.new_zeros(1, 1, *mid)).shape[2:])
    rows = sum(d.shape[1] * c.taps for d, c in zip(deltas, consumers))
    compute = torch.promote_types(x.dtype, torch.float32)
    per_sample = rows * (mid[0] * mid[1] + size[0] * size[1]) * compute.itemsize
    chunk = max(1, max_chunk_bytes // per_sample)
    G = torch.zeros(rows, x.shape[1] * producer.taps, dtype=dtype, device=x.device)
    spread_sum = torch.zeros(rows, dtype=dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        xs = x[start : start + chunk].detach().to(compute)
        D = torch.cat(
            [
                _spread_delta(d[start : start + chunk].detach().to(compute), c, size)
                for d, c in zip(deltas, consumers)
            ],
            dim=1,
        )
        if pool is not None:
            with torch.enable_grad():
                z = xs.new_zeros(D.shape[0], D.shape[1], *mid, requires_grad=True)
                (D,) = torch.autograd.grad(pool(z), z, D)
        with torch.no_grad():
            part = torch.nn.grad.conv2d_weight(
                xs,
                (rows, x.shape[1], *producer.kernel_size),
                D,
                stride=producer.stride,
                padding=producer.padding,
            )
            G += part.reshape(rows, -1).to(dtype)
            spread_sum += D.sum(dim=(0, 2, 3)).to(dtype)
    return G, spread_sum


def top_fan_out(M, k, kernel_size, *, return_singular_values=False):
    """The ``k`` unit-norm fan-out slices that maximise the new fan-in's gradient norm.

    The top-``k`` right singular vectors of ``M``, reshaped to kernels: slice ``j``
    (``kernels[:, j]``) gives the new channel ``j`` the fan-in gradient
    ``M @ kernels[:, j].reshape(-1)`` of norm ``s_j``, the ``j``-th singular value, the
    largest any unit slice orthogonal to the previous ones can give. The sign of each
    vector (arbitrary in an SVD) is fixed so that its entry of largest magnitude is
    positive, which makes the result reproducible across devices.

    Parameters
    ----------
    M : torch.Tensor of shape (C_{l-1} * k1h * k1w, C_{l+1} * k2h * k2w)
        From ``conv_auxiliary_matrix``.
    k : int
        Number of new channels, ``1 <= k <= C_{l+1} * k2h * k2w``.
    kernel_size : int or tuple of int
        The consumer's kernel size ``(k2h, k2w)``.
    return_singular_values : bool, default=False
        Also return the ``k`` singular values.

    Returns
    -------
    kernels : torch.Tensor of shape (C_{l+1}, k, k2h, k2w)
        Unit Frobenius norm per new channel, in ``M``'s dtype; ready to be concatenated to
        ``consumer.weight`` along dim 1 (after a rescaling of the caller's choice).
    singular_values : torch.Tensor of shape (k,)
        Only with ``return_singular_values``; 0 beyond the rank of ``M``.
    """
    kernel_size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    if not isinstance(M, torch.Tensor) or M.dim() != 2:
        raise ValueError(f"M must be a 2-d tensor, got {_describe(M)}.")
    taps = kernel_size[0] * kernel_size[1]
    if taps < 1 or M.shape[1] % taps != 0:
        raise ValueError(
            f"M has {M.shape[1]} columns, not a multiple of the {kernel_size} kernel's "
            f"{taps} taps; pass the consumer's kernel_size."
        )
    if not isinstance(k, int) or not 1 <= k <= M.shape[1]:
        raise ValueError(
            f"k must be an int between 1 and the {M.shape[1]} columns of M, got {k!r}."
        )
    # Singular vectors beyond min(M.shape) have singular value 0; they need the full basis.
    _, s, Vh = torch.linalg.svd(M, full_matrices=k > min(M.shape))
    vectors = Vh[:k]
    peak = vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True))
    vectors = vectors * torch.where(peak < 0, -1.0, 1.0).to(vectors.dtype)
    kernels = vectors.reshape(k, M.shape[1] // taps, *kernel_size).transpose(0, 1)
    if return_singular_values:
        values = torch.zeros(k, dtype=s.dtype, device=s.device)
        values[: min(k, len(s))] = s[:k]
        return kernels, values
    return kernels


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
