"""The orthogonality metric of the paper: effective dimension (SPEC section 2).

``phi(A) = #{sigma in svdvals(A_normalised) : sigma > epsilon} / M``

Only the *count* of singular values above a threshold is needed, so the default path
counts the eigenvalues of the smaller Gram matrix (``A^T A`` or ``A A^T``) above
``threshold**2``: one symmetric eigenvalue problem of size ``min(n, M)`` instead of an SVD
of an ``n x M`` matrix. The Gram matrix is formed in float64 because squaring the singular
values squares the condition number; in float32 the count can flip near the threshold.
Small CPU matrices go to SciPy's LAPACK driver, tensors on an accelerator stay in torch.
``method="svd"`` is the plain reference the fast path is tested against.

Conventions: activations are sample-major, shape ``(n_samples, n_neurons)`` (the transpose
of the paper's ``H_l``); weights are neuron-major, shape ``(n_neurons, fan_in...)``.
"""

import math

import numpy as np
import scipy.linalg
import torch

METHODS = ("gram", "svd")


def gram(A):
    """``A^T A`` in float64: the Gram matrix of ``A``'s columns (e.g. of a layer's neurons).

    Its eigenvalues are the squared singular values of ``A``.
    """
    A64 = A.detach().double()
    return A64.T @ A64


def count_eigenvalues_above(G, cutoff):
    """Number of eigenvalues of the symmetric matrix ``G`` strictly above ``cutoff``."""
    if G.numel() == 0:
        return 0
    if G.device.type == "cpu":
        eig = scipy.linalg.eigh(G.numpy(), eigvals_only=True, check_finite=False)
        return int(np.count_nonzero(eig > cutoff))
    return int((torch.linalg.eigvalsh(G) > cutoff).sum())


def count_singular_values_above(A, threshold, method="gram"):
    """Number of singular values of the 2-D matrix ``A`` strictly above ``threshold``.

    Parameters
    ----------
    A : torch.Tensor of shape (n, m)
    threshold : float
    method : {"gram", "svd"}
        ``"gram"`` counts eigenvalues of the smaller Gram matrix above ``threshold**2``;
        ``"svd"`` computes all singular values (slow, for reference).

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
    return count_eigenvalues_above(G, threshold * threshold)


def activation_rank(H, epsilon=0.01, method="gram"):
    """Count of singular values of ``H / sqrt(n)`` above ``epsilon``.

    ``H`` has shape ``(n_samples, n_neurons)``. Scaling the threshold by ``sqrt(n)``
    instead of the matrix by ``1/sqrt(n)`` gives the same count without a copy.
    """
    n = H.shape[0]
    return count_singular_values_above(H, epsilon * math.sqrt(n), method=method)


def weight_rank(W, epsilon=0.01, method="gram"):
    """Count of singular values of ``W / sqrt(fan_in)`` above ``epsilon``.

    ``W`` has shape ``(n_neurons, *fan_in_shape)``; a conv kernel is flattened to
    ``C_out x (C_in * k * k)``.
    """
    W = W.reshape(W.shape[0], -1)
    return count_singular_values_above(W, epsilon * math.sqrt(W.shape[1]), method=method)


def activation_metric(H, epsilon=0.01, method="gram"):
    """Effective dimension ``phi_a`` of post-activations ``H`` (n_samples, n_neurons)."""
    return activation_rank(H, epsilon, method) / max(H.shape[1], 1)


def weight_metric(W, epsilon=0.01, method="gram"):
    """Effective dimension ``phi_w`` of fan-in weights ``W`` (n_neurons, fan_in...)."""
    return weight_rank(W, epsilon, method) / max(W.shape[0], 1)
