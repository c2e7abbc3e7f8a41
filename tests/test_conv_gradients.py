"""The exact GradMax auxiliary-gradient matrix between two convolutions (SPEC section 8),
checked against autograd through an explicit all-zero auxiliary layer."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sklearn_north.growth import conv_gradients
from sklearn_north.growth.conv_gradients import (
    ConvGeometry,
    conv_auxiliary_matrix,
    site_auxiliary_gradient,
    top_fan_out,
)


def randn(*shape, seed):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def make_batch(n, c_in, size, producer, consumer, c_out, dtype=torch.float64, seed=0):
    """Random ``x`` and a random ``delta`` shaped like the consumer's output."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, *size, generator=g, dtype=dtype)
    mid = producer.output_size(size)
    delta = torch.randn(n, c_out, *consumer.output_size(mid), generator=g, dtype=dtype)
    return x, delta


def autograd_fan_in_grad(x, delta, producer, consumer, fan_out):
    """``dL/dA`` for an all-zero auxiliary filter bank ``A`` (k, C_{l-1}, k1h, k1w) whose
    channels reach the consumer through the fan-out ``fan_out`` (C_{l+1}, k, k2h, k2w),
    identity activation (slope 1 at 0), loss ``sum(out * delta)``."""
    k = fan_out.shape[1]
    aux_in = torch.zeros(k, x.shape[1], *producer.kernel_size, dtype=x.dtype, requires_grad=True)
    z = F.conv2d(x, aux_in, stride=producer.stride, padding=producer.padding)
    out = F.conv2d(z, fan_out, stride=consumer.stride, padding=consumer.padding)
    assert out.shape == delta.shape
    (out * delta).sum().backward()
    return aux_in.grad


def predicted_fan_in_grad(M, fan_out):
    """``M @ vec(W_out[:, j])`` per new channel, reshaped like the autograd gradient."""
    k = fan_out.shape[1]
    vectors = fan_out.transpose(0, 1).reshape(k, -1).to(M.dtype)
    return vectors @ M.T


# (producer geometry, consumer geometry, input size): borders are a large share of the
# small maps; odd and even sizes for the strides.
GEOMETRIES = {
    "3x3-pad1-both-5x5": (ConvGeometry(3, 1, 1), ConvGeometry(3, 1, 1), (5, 5)),
    "3x3-pad1-both-8x8": (ConvGeometry(3, 1, 1), ConvGeometry(3, 1, 1), (8, 8)),
    "stride2-first-odd": (ConvGeometry(3, 2, 1), ConvGeometry(3, 1, 1), (7, 7)),
    "stride2-first-even": (ConvGeometry(3, 2, 1), ConvGeometry(3, 1, 1), (8, 8)),
    "stride2-second-odd": (ConvGeometry(3, 1, 1), ConvGeometry(3, 2, 1), (7, 7)),
    "stride2-second-even": (ConvGeometry(3, 1, 1), ConvGeometry(3, 2, 1), (8, 8)),
    "stride2-both": (ConvGeometry(3, 2, 1), ConvGeometry(3, 2, 1), (9, 9)),
    "1x1-projection-stride2": (ConvGeometry(1, 2, 0), ConvGeometry(3, 1, 1), (8, 8)),
    "1x1-consumer": (ConvGeometry(3, 1, 1), ConvGeometry(1, 1, 0), (6, 6)),
    "consumer-pad0": (ConvGeometry(3, 1, 1), ConvGeometry(3, 1, 0), (6, 6)),
    "k2-5-pad0-stride2": (ConvGeometry(3, 1, 0), ConvGeometry(5, 2, 0), (12, 12)),
    "1x1-consumer-pad1": (ConvGeometry(3, 1, 1), ConvGeometry(1, 1, 1), (5, 5)),
    "non-square-map": (ConvGeometry(3, 1, 1), ConvGeometry(3, 1, 1), (5, 9)),
    "non-square-stride2": (ConvGeometry(3, 2, 1), ConvGeometry(3, 2, 1), (6, 11)),
    "rectangular-kernels": (
        ConvGeometry((3, 1), (1, 2), (1, 0)),
        ConvGeometry((1, 3), (2, 1), (0, 1)),
        (7, 8),
    ),
}


@pytest.mark.parametrize("method", ["input", "delta"])
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_matrix_matches_autograd_on_zero_auxiliary_layer(name, method):
    producer, consumer, size = GEOMETRIES[name]
    c_in, c_out, k = 2, 3, 4
    x, delta = make_batch(3, c_in, size, producer, consumer, c_out)
    fan_out = randn(c_out, k, *consumer.kernel_size, seed=1)
    M = conv_auxiliary_matrix(x, delta, producer, consumer, method=method)
    assert M.shape == (c_in * producer.taps, c_out * consumer.taps)
    assert M.dtype == torch.float64
    expected = autograd_fan_in_grad(x, delta, producer, consumer, fan_out)
    assert expected.abs().max() > 0.1  # the check below is not vacuous
    predicted = predicted_fan_in_grad(M, fan_out).reshape(expected.shape)
    torch.testing.assert_close(predicted, expected, rtol=1e-10, atol=1e-10)


def test_float32_inputs_and_conv_modules():
    """``nn.Conv2d`` modules give the geometry; float32 inputs agree with autograd to
    float32 tolerance and are accumulated in the requested dtype."""
    torch.manual_seed(0)
    producer = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    consumer = nn.Conv2d(5, 4, 3, padding="same")
    x = torch.randn(4, 3, 9, 9)
    delta = torch.randn(4, 4, 5, 5)
    fan_out = torch.randn(4, 2, 3, 3)
    for dtype in (torch.float64, torch.float32):
        M = conv_auxiliary_matrix(x, delta, producer, consumer, dtype=dtype)
        assert M.dtype == dtype
        expected = autograd_fan_in_grad(x, delta, producer, consumer, fan_out)
        predicted = predicted_fan_in_grad(M, fan_out).reshape(expected.shape).float()
        torch.testing.assert_close(predicted, expected, rtol=1e-4, atol=1e-4)


def test_geometry_from_module_matches_the_module():
    """A real consumer conv fed the producer's output: ``consumer(z)`` with the new input
    slices equals the explicit computation the matrix was checked against."""
    producer = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    consumer = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    geometry = ConvGeometry.from_module(consumer)
    assert geometry == ConvGeometry((3, 3), (1, 1), (1, 1))
    z = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(
        consumer(z), F.conv2d(z, consumer.weight, stride=geometry.stride, padding=geometry.padding)
    )
    assert ConvGeometry.from_module(producer).stride == (2, 2)


@pytest.mark.parametrize("method", ["input", "delta"])
def test_chunking_gives_the_same_matrix(method):
    producer, consumer, size = GEOMETRIES["stride2-first-odd"]
    x, delta = make_batch(7, 2, size, producer, consumer, 3)
    whole = conv_auxiliary_matrix(x, delta, producer, consumer, chunk_size=7, method=method)
    for chunk_size in (1, 3):
        chunked = conv_auxiliary_matrix(
            x, delta, producer, consumer, chunk_size=chunk_size, method=method
        )
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)
    # A budget below one sample's tensor still processes one sample per chunk.
    tiny = conv_auxiliary_matrix(x, delta, producer, consumer, max_chunk_bytes=1, method=method)
    torch.testing.assert_close(tiny, whole, rtol=1e-12, atol=1e-12)


def test_methods_agree_and_auto_picks_one_of_them():
    producer, consumer, size = GEOMETRIES["stride2-both"]
    x, delta = make_batch(2, 4, size, producer, consumer, 2)
    by_input = conv_auxiliary_matrix(x, delta, producer, consumer, method="input")
    by_delta = conv_auxiliary_matrix(x, delta, producer, consumer, method="delta")
    auto = conv_auxiliary_matrix(x, delta, producer, consumer)
    torch.testing.assert_close(by_input, by_delta, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(auto, by_delta, rtol=1e-10, atol=1e-10)


def test_repeating_the_batch_doubles_the_matrix():
    producer, consumer, size = GEOMETRIES["3x3-pad1-both-5x5"]
    x, delta = make_batch(3, 2, size, producer, consumer, 3)
    once = conv_auxiliary_matrix(x, delta, producer, consumer)
    twice = conv_auxiliary_matrix(torch.cat([x, x]), torch.cat([delta, delta]), producer, consumer)
    torch.testing.assert_close(twice, 2 * once, rtol=1e-12, atol=1e-12)


def test_top_fan_out_maximises_the_fan_in_gradient():
    producer, consumer, size = GEOMETRIES["stride2-first-even"]
    c_in, c_out, k = 2, 3, 3
    x, delta = make_batch(4, c_in, size, producer, consumer, c_out)
    M = conv_auxiliary_matrix(x, delta, producer, consumer)
    kernels, values = top_fan_out(M, k, consumer.kernel_size, return_singular_values=True)
    assert kernels.shape == (c_out, k, 3, 3)
    s = torch.linalg.svdvals(M)
    torch.testing.assert_close(values, s[:k])
    # Orthonormal fan-out slices.
    flat = kernels.transpose(0, 1).reshape(k, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(k, dtype=flat.dtype))
    # Through autograd on the explicit zero layer, the new channels' fan-in gradients have
    # the singular values as norms.
    grads = autograd_fan_in_grad(x, delta, producer, consumer, kernels)
    norms = torch.linalg.vector_norm(grads.reshape(k, -1), dim=1)
    torch.testing.assert_close(norms, s[:k])
    # No random unit slice beats the top one.
    g = torch.Generator().manual_seed(3)
    random = torch.randn(500, M.shape[1], dtype=M.dtype, generator=g)
    random /= torch.linalg.vector_norm(random, dim=1, keepdim=True)
    assert torch.linalg.vector_norm(random @ M.T, dim=1).max() < s[0]


def test_top_fan_out_beyond_the_rank_and_sign_convention():
    M = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernels, values = top_fan_out(M, 5, (2, 2), return_singular_values=True)
    assert kernels.shape == (2, 5, 2, 2)
    torch.testing.assert_close(values[3:], torch.zeros(2, dtype=M.dtype))
    flat = kernels.transpose(0, 1).reshape(5, -1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(5, dtype=M.dtype))
    peaks = flat.gather(1, flat.abs().argmax(dim=1, keepdim=True))
    assert (peaks > 0).all()
    # Same slices (not only up to sign) for -M.
    torch.testing.assert_close(top_fan_out(-M, 3, 2), kernels[:, :3])


def test_max_pool_ties_route_gradient_to_window_corner():
    """Documents what the lead needs for a 2x2 max-pool between the convs (VGG): on the
    all-zero new channel every window is a tie, torch routes the gradient to the window's
    first element, so autograd's fan-in gradient equals ``M`` with the producer's stride
    doubled (even map sizes)."""
    consumer = ConvGeometry(3, 1, 1)
    x, delta = randn(2, 2, 8, 8, seed=0), randn(2, 3, 4, 4, seed=1)
    fan_out = randn(3, 2, 3, 3, seed=2)
    aux_in = torch.zeros(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    z = F.max_pool2d(F.conv2d(x, aux_in, padding=1), 2)
    (F.conv2d(z, fan_out, padding=1) * delta).sum().backward()
    pooled_producer = ConvGeometry(3, 2, 1)
    M = conv_auxiliary_matrix(x, delta, pooled_producer, consumer)
    predicted = predicted_fan_in_grad(M, fan_out).reshape(aux_in.shape)
    torch.testing.assert_close(predicted, aux_in.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "module, error",
    [
        (nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
        (nn.Conv2d(4, 4, 3, dilation=2), "dilation"),
        (nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "padding_mode"),
        (nn.Conv2d(4, 4, 2, padding="same"), "even kernel"),
    ],
)
def test_unsupported_convs_are_rejected(module, error):
    x = torch.randn(1, 4, 6, 6)
    delta = torch.randn(1, 4, 4, 4)
    with pytest.raises(NotImplementedError, match=error):
        conv_auxiliary_matrix(x, delta, module, ConvGeometry(1))
    with pytest.raises(NotImplementedError, match=error):
        conv_auxiliary_matrix(x, delta, ConvGeometry(1), module)


def test_bad_input_is_rejected():
    producer, consumer = ConvGeometry(3, 1, 1), ConvGeometry(3, 2, 1)
    x = torch.randn(2, 2, 8, 8)
    delta = torch.randn(2, 3, 4, 4)
    conv_auxiliary_matrix(x, delta, producer, consumer)  # the valid baseline
    with pytest.raises(TypeError, match=r"producer must be an nn\.Conv2d"):
        conv_auxiliary_matrix(x, delta, nn.Linear(2, 2), consumer)
    with pytest.raises(ValueError, match="spatial size"):
        conv_auxiliary_matrix(x, torch.randn(2, 3, 8, 8), producer, consumer)
    with pytest.raises(ValueError, match="same samples"):
        conv_auxiliary_matrix(x, delta[:1], producer, consumer)
    with pytest.raises(ValueError, match="4-d tensor"):
        conv_auxiliary_matrix(x[0], delta, producer, consumer)
    with pytest.raises(ValueError, match="chunk_size"):
        conv_auxiliary_matrix(x, delta, producer, consumer, chunk_size=0)
    with pytest.raises(ValueError, match="method"):
        conv_auxiliary_matrix(x, delta, producer, consumer, method="shortcut")
    with pytest.raises(ValueError, match="no output position"):
        conv_auxiliary_matrix(x[..., :1, :1], delta, ConvGeometry(3), consumer)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvGeometry(0)
    M = torch.randn(18, 27)
    with pytest.raises(ValueError, match="k must be"):
        top_fan_out(M, 28, 3)
    with pytest.raises(ValueError, match="multiple"):
        top_fan_out(M, 1, 2)


#: Pools between a conv site and its consumers: selections at an all-zero channel (each
#: pooled position's gradient to one source, computed on the routed unfolded input) and
#: one that is not (averaging: autograd's backward at full resolution).
POOLS = {
    "max 2x2 ceil, odd map": (lambda h: F.max_pool2d(h, 2, ceil_mode=True), True),
    "max 3x3 stride 2 (overlapping)": (lambda h: F.max_pool2d(h, 3, stride=2), True),
    "avg 2x2": (lambda h: F.avg_pool2d(h, 2, ceil_mode=True), False),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_site_gradient_through_a_pool_equals_autograd(name):
    pool, selection = POOLS[name]
    assert (conv_gradients._zero_channel_route(pool, (7, 7), "cpu") is not None) == selection
    producer, consumer = ConvGeometry(3, 1, 1), ConvGeometry(3, 1, 1)
    x = randn(3, 2, 7, 7, seed=0)
    size = pool(torch.zeros(1, 1, 7, 7)).shape[2:]
    delta = randn(3, 4, *consumer.output_size(tuple(size)), seed=1)
    fan_out = randn(4, 2, 3, 3, seed=2)
    aux_in = torch.zeros(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    z = pool(F.conv2d(x, aux_in, padding=1))
    (F.conv2d(z, fan_out, padding=1) * delta).sum().backward()
    G = site_auxiliary_gradient(x, [delta], producer, [consumer], pool=pool)
    # G's rows are the fan-out coordinates (o, u, v): dL/dA_j = G^T w_j.
    predicted = (fan_out.transpose(0, 1).reshape(2, -1) @ G).reshape(aux_in.shape)
    assert aux_in.grad.abs().max() > 1e-3
    torch.testing.assert_close(predicted, aux_in.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("norm_eps", [None, 1e-5])
@pytest.mark.parametrize("name", ["none", *[n for n, (_, sel) in POOLS.items() if sel]])
def test_routed_input_equals_the_full_resolution_spread(monkeypatch, name, norm_eps):
    # Two consumers (a conv, and a dense layer over the flattened maps as a conv whose
    # kernel is the map), a strided producer, small chunks: the routed unfolded input
    # gives the matrix (and BatchNorm centring) of D at full resolution, where the pool's
    # backward is autograd's.
    pool = None if name == "none" else POOLS[name][0]
    producer = ConvGeometry(3, 2, 1)
    x = randn(5, 3, 13, 13, seed=3)
    mid = producer.output_size((13, 13))
    size = mid if pool is None else tuple(pool(torch.zeros(1, 1, *mid)).shape[2:])
    consumers = [ConvGeometry(3, 1, 1), ConvGeometry(size)]
    deltas = [randn(5, 4, *size, seed=4), randn(5, 6, 1, 1, seed=5)]
    kwargs = dict(pool=pool, norm_eps=norm_eps, max_chunk_bytes=2000)
    routed = site_auxiliary_gradient(x, deltas, producer, consumers, **kwargs)
    monkeypatch.setattr(conv_gradients, "_zero_channel_route", lambda *args: None)
    kwargs["pool"] = pool or (lambda h: h)
    spread = site_auxiliary_gradient(x, deltas, producer, consumers, **kwargs)
    assert routed.shape == (4 * 9 + 6 * size[0] * size[1], 3 * 9)
    torch.testing.assert_close(routed, spread, rtol=1e-10, atol=1e-10)
