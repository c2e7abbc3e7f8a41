"""The orthogonality metric of the paper: effective dimension (SPEC section 2).

``phi(A) = #{sigma in svdvals(A_normalised) : sigma > epsilon} / M``

Only the *count* of singular values above a threshold ``t`` is needed. The default path
(``method="ldl"``) forms the float64 Gram matrix ``G`` of the smaller side and counts the
eigenvalues of ``G`` above ``t**2`` without computing them: by Sylvester's law of inertia
that count is the number of positive pivots of an ``LDL^T`` (Bunch-Kaufman) factorisation
of ``G - t**2 I``, a third of the cost of a Cholesky-sized problem and 4-6x faster than
``eigvalsh`` at the widths of the paper (64-784). ``method="eigh"`` counts eigenvalues,
``method="svd"`` computes the singular values: the references the fast path is tested
against. The Gram matrix is formed in float64 because squaring the singular values
squares the condition number; in float32 the count can flip near the threshold.

Everything runs in torch, on the tensors' device, except the LDL^T factorisation: on a
GPU it runs on the host CPU (``_host.py``: the GPU's is 3-5x slower at these sizes). (SciPy's
LAPACK on CPU was tried: its OpenBLAS threads contend with torch's OpenMP threads, which
made a training run with the weight trigger ~8x slower on 2 cores.)

Conventions: activations are sample-major, shape ``(n_samples, n_neurons)`` (the transpose
of the paper's ``H_l``); weights are neuron-major, shape ``(n_neurons, fan_in...)``.
"""

import itertools
import math

import torch

from ._host import host

METHODS = ("ldl", "eigh", "svd")


#: Rows converted to float64 at a time by ``gram``: bounds the float64 copy's memory.
GRAM_CHUNK_ROWS = 512

#: Columns per block of ``gram``'s upper triangle. Wider matrices are multiplied block row
#: by block row, from the diagonal block rightwards, and mirrored: G is symmetric, so the
#: blocks below the diagonal need not be computed (at 784 columns: ~35% faster).
GRAM_BLOCK_COLUMNS = 128


def gram(A):
    """``A^T A`` in float64: the Gram matrix of ``A``'s columns (e.g. of a layer's neurons).

    Its eigenvalues are the squared singular values of ``A``. Rows are converted to float64
    ``GRAM_CHUNK_ROWS`` at a time, so no float64 copy of a large ``A`` is made; only the
    upper triangle's blocks are multiplied (``GRAM_BLOCK_COLUMNS``).
    """
    A = A.detach()
    m = A.shape[1]
    edges = [*range(0, m, GRAM_BLOCK_COLUMNS), m]
    G = A.new_zeros((m, m), dtype=torch.float64)
    for chunk in A.split(GRAM_CHUNK_ROWS):
        chunk = chunk.double()
        for lo, hi in itertools.pairwise(edges):
            G[lo:hi, lo:].addmm_(chunk[:, lo:hi].T, chunk[:, lo:])
    for lo, hi in itertools.pairwise(edges[:-1]):
        G[hi:, lo:hi] = G[lo:hi, hi:].T
    return G


def column_norms(A):
    """The Euclidean norm of each column of the 2-D ``A``.

    On the CPU, ``sqrt(sum of squares)`` down the rows for float32 and float64:
    ``torch.linalg.vector_norm(A, dim=0)`` reduces across rows in a strided loop there,
    5-15x slower at the sizes of a layer's fan-out (150 x 300: 51 us against 9; 640 x 640:
    389 against 119), and the gradient trigger takes these norms after every step. Equal
    to ``vector_norm``'s up to rounding. Elsewhere (a GPU's one kernel; half precision,
    whose squares would underflow) ``vector_norm`` itself.
    """
    if A.device.type == "cpu" and A.dtype in (torch.float32, torch.float64):
        return A.square().sum(dim=0).sqrt()
    return torch.linalg.vector_norm(A, dim=0)


def count_eigenvalues_above(G, cutoff, method="ldl"):
    """Number of eigenvalues of the symmetric matrix ``G`` strictly above ``cutoff``.

    ``method="ldl"`` counts the positive eigenvalues of the ``D`` factor of
    ``G - cutoff * I = P L D L^T P^T`` (equal in number to those of ``G - cutoff * I``,
    Sylvester's law of inertia); ``method="eigh"`` computes the eigenvalues.
    """
    if G.numel() == 0:
        return 0
    if method == "eigh":
        return int((torch.linalg.eigvalsh(G) > cutoff).sum())
    G = host(G)
    # G - cutoff * I without an identity matrix (one m x m temporary less, ~20 % faster).
    shifted = G.clone()
    shifted.diagonal().sub_(cutoff)
    LD, pivots, _ = torch.linalg.ldl_factor_ex(shifted)
    return _positive_inertia(LD.diagonal(), LD.diagonal(-1), pivots)


def _positive_inertia(d, sub, pivots):
    # D is block diagonal with 1x1 and 2x2 blocks; LAPACK's sytrf (lower) marks a 2x2 block
    # starting at k by negative pivots at k and k+1.
    d, sub, two = d.tolist(), sub.tolist(), (pivots < 0).tolist()
    count, k, m = 0, 0, len(d)
    while k < m:
        if two[k] and k + 1 < m:
            a, b, c = d[k], sub[k], d[k + 1]
            det = a * c - b * b
            count += 1 if det < 0 else (2 if det > 0 and a + c > 0 else int(a + c > 0))
            k += 2
        else:
            count += d[k] > 0
            k += 1
    return count


def count_singular_values_above(A, threshold, method="ldl"):
    """Number of singular values of the 2-D matrix ``A`` strictly above ``threshold``.

    Parameters
    ----------
    A : torch.Tensor of shape (n, m)
    threshold : float
    method : {"ldl", "eigh", "svd"}
        ``"ldl"`` (fast) and ``"eigh"`` count eigenvalues of the smaller Gram matrix above
        ``threshold**2``; ``"svd"`` computes all singular values (slow, for reference).

    Returns
    -------
    count : int
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if A.ndim != 2:
        raise ValueError(f"Expected a 2-D matrix, got shape {tuple(A.shape)}.")
    if A.numel() == 0:
        return 0
    if method == "svd":
        sv = torch.linalg.svdvals(A.detach().double())
        return int((sv > threshold).sum())
    G = gram(A) if A.shape[0] >= A.shape[1] else gram(A.T)
    return count_eigenvalues_above(G, threshold * threshold, method)


def activation_rank(H, epsilon=0.01, method="ldl"):
    """Count of singular values of ``H / sqrt(n)`` above ``epsilon``.

    ``H`` has shape ``(n_samples, n_neurons)``. Scaling the threshold by ``sqrt(n)``
    instead of the matrix by ``1/sqrt(n)`` gives the same count without a copy.
    """
    n = H.shape[0]
    return count_singular_values_above(H, epsilon * math.sqrt(n), method=method)


def weight_rank(W, epsilon=0.01, method="ldl"):
    """Count of singular values of ``W / sqrt(fan_in)`` above ``epsilon``.

    ``W`` has shape ``(n_neurons, *fan_in_shape)``; a conv kernel is flattened to
    ``C_out x (C_in * k * k)``.
    """
    W = W.reshape(W.shape[0], -1)
    return count_singular_values_above(W, epsilon * math.sqrt(W.shape[1]), method=method)


def activation_metric(H, epsilon=0.01, method="ldl"):
    """Effective dimension ``phi_a`` of post-activations ``H`` (n_samples, n_neurons)."""
    return activation_rank(H, epsilon, method) / max(H.shape[1], 1)


def weight_metric(W, epsilon=0.01, method="ldl"):
    """Effective dimension ``phi_w`` of fan-in weights ``W`` (n_neurons, fan_in...)."""
    return weight_rank(W, epsilon, method) / max(W.shape[0], 1)
