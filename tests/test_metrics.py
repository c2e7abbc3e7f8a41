"""The effective-dimension metric (SPEC section 2)."""

import math

import numpy as np
import pytest
import torch

from sklearn_north.growth.metrics import (
    GRAM_BLOCK_COLUMNS,
    GRAM_CHUNK_ROWS,
    METHODS,
    activation_metric,
    activation_rank,
    column_norms,
    count_eigenvalues_above,
    count_singular_values_above,
    gram,
    weight_metric,
    weight_rank,
)


def matrix_with_singular_values(n, m, singular_values, seed):
    """A float64 ``n x m`` matrix whose singular values are exactly ``singular_values``
    (padded with zeros to ``min(n, m)``), with random orthonormal singular vectors."""
    g = torch.Generator().manual_seed(seed)
    r = min(n, m)
    s = torch.zeros(r, dtype=torch.float64)
    s[: len(singular_values)] = torch.as_tensor(singular_values, dtype=torch.float64)
    U, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=torch.float64))
    return (U * s) @ V.T


def well_separated_values(n_above, n_below, threshold, seed):
    """Singular values at least 3x above or 3x below ``threshold`` (or exactly zero)."""
    rng = np.random.default_rng(seed)
    above = threshold * rng.uniform(3.0, 100.0, n_above)
    below = threshold * rng.uniform(0.0, 1 / 3, n_below)
    values = np.concatenate([above, below])
    rng.shuffle(values)
    return values


SHAPES = [(120, 20), (20, 120), (40, 40), (300, 7), (7, 300)]
FAST_METHODS = ("ldl", "eigh")  # Gram-matrix paths, checked against the plain SVD


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("seed", range(4))
def test_fast_count_equals_svd_count(shape, seed):
    n, m = shape
    r = min(n, m)
    rng = np.random.default_rng(seed)
    n_above = int(rng.integers(0, r + 1))
    n_below = int(rng.integers(0, r - n_above + 1))
    threshold = float(rng.choice([0.01, 0.5, 3.0]))
    values = well_separated_values(n_above, n_below, threshold, seed)
    A = matrix_with_singular_values(n, m, values, seed)

    expected = n_above
    numpy_count = int(np.sum(np.linalg.svd(A.numpy(), compute_uv=False) > threshold))
    assert numpy_count == expected
    assert count_singular_values_above(A, threshold, method="svd") == expected
    for fast in FAST_METHODS:
        assert count_singular_values_above(A, threshold, method=fast) == expected
        # float32 input: the Gram path forms its matrix in float64, the count must not move.
        assert count_singular_values_above(A.float(), threshold, method=fast) == expected


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fast_count_equals_svd_count_on_generic_low_rank(shape):
    # Low rank as it arises in practice: a product of random factors, no constructed spectrum.
    n, m = shape
    g = torch.Generator().manual_seed(sum(shape))
    for rank in (1, min(n, m) // 2, min(n, m)):
        A = torch.randn(n, rank, generator=g, dtype=torch.float64) @ torch.randn(
            rank, m, generator=g, dtype=torch.float64
        )
        sv = np.linalg.svd(A.numpy(), compute_uv=False)
        # A threshold well inside the gap between the non-zero and the zero singular values.
        threshold = float(sv[rank - 1]) / 10
        assert np.sum(sv > threshold) == rank
        for method in METHODS:
            assert count_singular_values_above(A, threshold, method=method) == rank


def test_count_edge_cases():
    assert count_singular_values_above(torch.zeros(0, 5), 0.1) == 0
    assert count_singular_values_above(torch.zeros(4, 3), 0.1) == 0
    with pytest.raises(ValueError, match="method"):
        count_singular_values_above(torch.eye(3), 0.1, method="qr")
    with pytest.raises(ValueError, match="2-D"):
        count_singular_values_above(torch.ones(2, 2, 2), 0.1)


# Singular values of the *normalised* matrix: spread across the threshold 0.01 so that any
# other normalisation (1/n, 1/M, none, or 1/sqrt of the wrong dimension) changes the count.
NORMALISED_SV = [5.0, 1.0, 0.2, 0.05, 0.02, 0.005, 0.002, 0.0005]
N_ABOVE = 5  # values above epsilon = 0.01


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_samples", [50, 400])
def test_activation_metric_normalises_by_sqrt_n_samples(method, n_samples):
    n_neurons = 10
    # H / sqrt(n) has the singular values NORMALISED_SV.
    H = math.sqrt(n_samples) * matrix_with_singular_values(
        n_samples, n_neurons, NORMALISED_SV, seed=n_samples
    )
    assert activation_rank(H, epsilon=0.01, method=method) == N_ABOVE
    assert activation_metric(H, epsilon=0.01, method=method) == N_ABOVE / n_neurons
    assert activation_metric(H.float(), epsilon=0.01, method=method) == N_ABOVE / n_neurons
    # epsilon is the threshold on the normalised singular values.
    assert activation_metric(H, epsilon=0.1, method=method) == 3 / n_neurons
    assert activation_metric(H, epsilon=0.001, method=method) == 7 / n_neurons


@pytest.mark.parametrize("method", METHODS)
def test_activation_metric_matches_definition(method):
    # phi = #{sigma(H / sqrt(n)) > eps} / M on a generic matrix, computed independently.
    g = torch.Generator().manual_seed(3)
    n, M = 200, 12
    H = torch.relu(torch.randn(n, 3, generator=g) @ torch.randn(3, M, generator=g))
    H[:, 5] = 0.003 * torch.randn(n, generator=g)  # a tiny neuron the metric may not count
    sv = np.linalg.svd(H.double().numpy() / math.sqrt(n), compute_uv=False)
    assert np.min(np.abs(sv - 0.01)) > 1e-4  # not on the edge
    expected = np.sum(sv > 0.01) / M
    assert activation_metric(H, 0.01, method) == expected


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fan_in", [30, 200])
def test_weight_metric_normalises_by_sqrt_fan_in(method, fan_in):
    n_neurons = 9
    W = math.sqrt(fan_in) * matrix_with_singular_values(n_neurons, fan_in, NORMALISED_SV, seed=7)
    assert weight_rank(W, epsilon=0.01, method=method) == N_ABOVE
    assert weight_metric(W, epsilon=0.01, method=method) == N_ABOVE / n_neurons
    assert weight_metric(W.float(), epsilon=0.01, method=method) == N_ABOVE / n_neurons


@pytest.mark.parametrize("method", METHODS)
def test_weight_metric_of_conv_kernel(method):
    # A conv kernel (C_out, C_in, k, k) is the matrix C_out x (C_in k k), normalised by
    # 1/sqrt(C_in k k): not by 1/sqrt(C_in) nor by 1/sqrt(k k).
    c_out, c_in, k = 8, 4, 3
    fan_in = c_in * k * k
    W2d = math.sqrt(fan_in) * matrix_with_singular_values(c_out, fan_in, NORMALISED_SV, seed=11)
    kernel = W2d.reshape(c_out, c_in, k, k)
    assert weight_rank(kernel, epsilon=0.01, method=method) == N_ABOVE
    assert weight_metric(kernel, epsilon=0.01, method=method) == N_ABOVE / c_out
    # Sanity check that the construction is sensitive to the normalisation.
    wrong = np.linalg.svd(W2d.numpy() / math.sqrt(c_in), compute_uv=False)
    assert np.sum(wrong > 0.01) != N_ABOVE


def test_metric_of_full_rank_and_zero_matrices():
    g = torch.Generator().manual_seed(0)
    H = torch.randn(500, 16, generator=g)
    assert activation_metric(H) == 1.0
    assert activation_metric(torch.zeros(500, 16)) == 0.0
    W = torch.randn(16, 64, generator=g)
    assert weight_metric(W) == 1.0
    # Rank is bounded by the fan-in: 16 neurons on a fan-in of 4.
    assert weight_metric(torch.randn(16, 4, generator=g)) == 4 / 16


@pytest.mark.parametrize("shape", [(200, 12), (12, 200)], ids=["tall", "wide"])
def test_fast_count_is_exact_on_ill_conditioned_float32_input(shape):
    # Squaring the singular values squares the condition number: a float32 Gram matrix
    # would lose the small ones (1e6 * float32 eps >> 0.03**2). The count must not move.
    values = [1e3, 3e2, 0.05, 0.03, 0.003]
    A = matrix_with_singular_values(*shape, values, seed=5).float()
    reference = np.linalg.svd(A.double().numpy(), compute_uv=False)
    assert np.sum(reference > 0.01) == 4
    for method in METHODS:
        assert count_singular_values_above(A, 0.01, method=method) == 4


@pytest.mark.parametrize("seed", range(6))
def test_ldl_inertia_count_on_indefinite_symmetric_matrices(seed):
    # G - cutoff * I is indefinite, so Bunch-Kaufman uses 2x2 pivots; the inertia count
    # must equal the number of eigenvalues above the cutoff.
    g = torch.Generator().manual_seed(seed)
    m = 5 + 7 * seed
    eigenvalues = torch.linspace(-3, 3, m, dtype=torch.float64) + 0.05  # none at 0 or 1
    q, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    G = q @ torch.diag(eigenvalues) @ q.T
    before = G.clone()
    for cutoff in (-2.0, 0.0, 1.0, 2.5):
        expected = int((eigenvalues > cutoff).sum())
        assert count_eigenvalues_above(G, cutoff, method="ldl") == expected
        assert count_eigenvalues_above(G, cutoff, method="eigh") == expected
    # The shift is applied to a copy: a context's cached Gram matrix is read again later.
    assert torch.equal(G, before)


def test_ldl_inertia_count_with_explicit_2x2_pivots():
    # Zero diagonal forces 2x2 pivots: blocks [[0, b], [b, 0]] have eigenvalues +-b.
    G = torch.zeros(6, 6, dtype=torch.float64)
    for k, b in ((0, 1.0), (2, 2.0), (4, 3.0)):
        G[k, k + 1] = G[k + 1, k] = b
    assert count_eigenvalues_above(G, 0.0) == 3
    assert count_eigenvalues_above(G, -2.5) == 5  # -1, -2 above; -3 below
    assert count_eigenvalues_above(G, 1.5) == 2


@pytest.mark.parametrize("n_columns", [40, 3 * GRAM_BLOCK_COLUMNS + 5])
def test_gram_in_row_chunks_and_column_blocks_equals_one_product(n_columns):
    # More rows than GRAM_CHUNK_ROWS: accumulated in float64 chunk by chunk; more columns
    # than GRAM_BLOCK_COLUMNS: the upper triangle's blocks, mirrored.
    A = torch.randn(3 * GRAM_CHUNK_ROWS + 7, n_columns, generator=torch.Generator().manual_seed(0))
    A64 = A.double()
    G = gram(A)
    torch.testing.assert_close(G, A64.T @ A64, rtol=1e-12, atol=1e-9)
    assert G.dtype == torch.float64
    torch.testing.assert_close(G, G.T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("shape", [(150, 300), (1, 7), (9, 1), (4, 0), (0, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_column_norms_are_the_columns_euclidean_norms(shape, dtype):
    A = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype) * 3
    if shape[1] > 2:
        A[:, 2] = 0  # a zero column has norm 0
    norms = column_norms(A)
    assert norms.shape == (shape[1],) and norms.dtype == dtype
    expected = torch.sqrt((A.double() ** 2).sum(dim=0)).to(dtype)
    torch.testing.assert_close(
        norms, expected, rtol=4 * torch.finfo(dtype).eps * max(shape[0], 1), atol=0
    )
    torch.testing.assert_close(norms, torch.linalg.vector_norm(A, dim=0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_column_norms_in_half_precision_do_not_underflow(dtype):
    # Adam-sized updates (1e-4) squared underflow in half precision: such inputs take
    # vector_norm, which accumulates in float32.
    A = torch.full((50, 3), 1e-4, dtype=dtype)
    norms = column_norms(A)
    assert norms.dtype == dtype
    torch.testing.assert_close(norms.float(), torch.full((3,), 1e-4 * 50**0.5), rtol=1e-2, atol=0)
