"""Initializers: how new neurons are set (SPEC section 4).

Every initializer here is function-preserving: new neurons get zero fan-out (and, except
for Pre-activation, zero bias), so the network's output does not change when they are
added; gradient descent then integrates them. New fan-in vectors are rescaled to the mean
fan-in norm of the site's existing neurons.

An initializer is called as ``init(index, site, k, context, generator)`` and returns
``NewNeurons``. Random numbers come from ``generator`` (a CPU ``torch.Generator``) so that
a fit is reproducible from its ``random_state``.

Numerical ranks. Where a span or kernel decides the *result* of a method, it is taken at
machine precision (Weight's kernel, Pre-activation's kernel of ``Z``), so the documented
orthogonality holds exactly. Where it only stabilises or scores, it is the metric's own
threshold ``epsilon * sqrt(n)`` (Pre-activation's pseudo-inverse of the input, Select's
projection away from the existing activations): a direction the metric does not count is
not treated as taken.
"""

import math

import torch

from . import metrics
from ._params import ParamsMixin
from .sites import NewNeurons


class Initializer(ParamsMixin):
    """Base class of initializers."""

    #: Whether the network's function is unchanged by the new neurons.
    function_preserving = True
    #: Whether the initializer reads activations on the sample buffer.
    needs_activations = False

    def __call__(self, index, site, k, context, generator):
        raise NotImplementedError


# --- shared pieces ---------------------------------------------------------------------


def mean_fan_in_norm(site):
    """Mean L2 norm of the existing neurons' fan-in weights (bias excluded)."""
    w = site.producer.weight.detach()
    return float(w.reshape(w.shape[0], -1).norm(dim=1).mean())


def random_fan_in(site, k, generator):
    """``k`` random fan-in vectors with the layer's Glorot-uniform direction, on CPU.

    Scale is irrelevant: the result is rescaled to the layer's mean fan-in norm.
    """
    shape = (k, *site.fan_in_shape)
    return torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1


def rescale_rows(w, target):
    """Scale each row of ``w`` (k, ...) to L2 norm ``target``; return (rows, factors)."""
    norms = w.reshape(w.shape[0], -1).norm(dim=1)
    factors = torch.where(norms > 0, target / norms.clamp_min(1e-300), torch.zeros_like(norms))
    return w * factors.reshape(-1, *([1] * (w.ndim - 1))), factors


def _to_site(site, tensor):
    like = site.producer.weight
    return tensor.to(device=like.device, dtype=like.dtype)


def _numerical_rank(s, shape):
    # numpy.linalg.matrix_rank's tolerance.
    if s.numel() == 0:
        return 0
    tol = s.max() * max(shape) * torch.finfo(s.dtype).eps
    return int((s > tol).sum())


def orthogonal_residual_norms(existing, candidates, threshold, gram=None):
    """How much of each candidate column lies outside the span of ``existing``'s columns.

    ``existing`` (n, M) and ``candidates`` (n, K) are activations on the same samples.
    Returns ``sqrt(|a|^2 - a^T E (E^T E + t^2 I)^-1 E^T a)`` per candidate ``a``, with
    ``t = threshold``: the component of ``a`` along a direction of ``E`` with singular value
    ``s`` is removed with weight ``s^2 / (s^2 + t^2)``, i.e. fully for the directions the
    metric counts (``s >> t``) and not at all for those it does not (``s << t``). One
    Cholesky factorisation of an M x M matrix and one product score all K candidates.

    ``gram`` may pass a precomputed ``E^T E`` in float64.
    """
    G = metrics.gram(existing) if gram is None else gram
    eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    L = torch.linalg.cholesky(G + threshold**2 * eye)
    proj = torch.linalg.solve_triangular(L, (existing.T @ candidates).double(), upper=False)
    residual2 = candidates.double().square().sum(dim=0) - proj.square().sum(dim=0)
    return residual2.clamp_min(0).sqrt()


def _select_most_orthogonal(index, site, k, context, fan_in, bias):
    """Keep the k candidates whose post-activations are most orthogonal to the site's."""
    acts = context.activations(index)
    fan_in = _to_site(site, fan_in)
    bias = _to_site(site, bias)
    pre = acts.inputs @ fan_in.reshape(fan_in.shape[0], -1).T + bias
    post = site.activation(pre)
    n = post.shape[0]
    threshold = context.epsilon * math.sqrt(n)
    scores = orthogonal_residual_norms(acts.post, post, threshold, context.post_gram(index))
    chosen = torch.topk(scores, k).indices
    return NewNeurons(fan_in=fan_in[chosen], bias=bias[chosen])


# --- the initializers -------------------------------------------------------------------


class RandomInit(Initializer):
    """Random fan-in (Glorot direction, rescaled), zero bias, zero fan-out."""

    def __call__(self, index, site, k, context, generator):
        w, _ = rescale_rows(random_fan_in(site, k, generator), mean_fan_in_norm(site))
        return NewNeurons(fan_in=_to_site(site, w))


class SelectInit(Initializer):
    """Best ``k`` of ``n_candidates`` random neurons (NORTH-Select).

    Candidates are scored by the norm of their post-activations (on the sample buffer)
    orthogonal to the span of the existing neurons' post-activations; the **most**
    orthogonal are kept. This is equivalent in intent to the paper's per-candidate
    effective dimension of ``[a_j; H]`` and costs one factorisation per growth event
    instead of one SVD per candidate.

    Parameters
    ----------
    n_candidates : int, default=1000
        Number of random candidates (the paper: 1000 dense, 100 conv).
    """

    needs_activations = True

    def __init__(self, n_candidates=1000):
        self.n_candidates = n_candidates

    def __call__(self, index, site, k, context, generator):
        n_cand = max(int(self.n_candidates), k)
        w, _ = rescale_rows(random_fan_in(site, n_cand, generator), mean_fan_in_norm(site))
        return _select_most_orthogonal(index, site, k, context, w, torch.zeros(n_cand))


class PreActivationInit(Initializer):
    """Candidates with pre-activations orthogonal to the existing ones (NORTH-Pre, eq. 7).

    ``w = pinv([H_{l-1}; 1]^T) V' a``: ``V'`` spans the kernel of the existing
    pre-activations ``Z_l`` over the buffered samples, ``a`` is Gaussian. The bias is part
    of the solve (the paper's ``W_l`` includes it), so a candidate's pre-activation is
    exactly orthogonal to every existing one on the buffer. The kernel is sampled in the
    eigenbasis of the input's Gram matrix, so nothing of size ``n x n`` is formed. The
    candidates are then scored and selected as in ``SelectInit``.

    When the existing pre-activations already span everything the input can produce (a
    layer at least as wide as its input's rank), no orthogonal pre-activation exists and
    random candidates are used instead.

    Parameters
    ----------
    n_candidates : int, default=1000
    """

    needs_activations = True

    def __init__(self, n_candidates=1000):
        self.n_candidates = n_candidates

    def __call__(self, index, site, k, context, generator):
        n_cand = max(int(self.n_candidates), k)
        acts = context.activations(index)
        n = acts.inputs.shape[0]
        X = torch.cat([acts.inputs.double(), acts.inputs.new_ones(n, 1).double()], dim=1)
        # Input directions the metric can see; pinv restricted to them stays well scaled.
        eig, V = torch.linalg.eigh(X.T @ X)
        keep = eig > context.epsilon**2 * n
        V, sv = V[:, keep], eig[keep].sqrt()
        producer = site.producer
        W = producer.weight.detach().double().reshape(site.width, -1)
        b = producer.bias.detach().double() if producer.bias is not None else W.new_zeros(len(W))
        # Existing pre-activations in the orthonormal basis U = X V / sv: Z^T = U B.
        B = (V.T @ torch.cat([W, b[:, None]], dim=1).T) * sv[:, None]
        Ub, sb, _ = torch.linalg.svd(B, full_matrices=False)
        Qb = Ub[:, : _numerical_rank(sb, B.shape)]
        if Qb.shape[1] >= len(sv):
            w, _ = rescale_rows(random_fan_in(site, n_cand, generator), mean_fan_in_norm(site))
            return _select_most_orthogonal(index, site, k, context, w, torch.zeros(n_cand))
        a = torch.randn(len(sv), n_cand, generator=generator, dtype=torch.float64)
        a = a.to(V.device)
        a = a - Qb @ (Qb.T @ a)
        w_aug = (V @ (a / sv[:, None])).T  # (n_cand, fan_in + 1)
        w, factors = rescale_rows(w_aug[:, :-1], mean_fan_in_norm(site))
        bias = w_aug[:, -1] * factors
        w = w.reshape(n_cand, *site.fan_in_shape)
        return _select_most_orthogonal(index, site, k, context, w, bias)


class WeightInit(Initializer):
    """Fan-in in the kernel of the existing fan-in weights (NORTH-Weight, eq. 8).

    Random vectors have their component in the row space of ``W_l`` removed, are
    orthonormalised among themselves, and rescaled. Needs ``M_l + k <= fan_in``; neurons
    beyond the kernel's dimension fall back to random directions.
    """

    def __call__(self, index, site, k, context, generator):
        W = site.producer.weight.detach().double().reshape(site.width, -1).cpu()
        _, s, Vh = torch.linalg.svd(W, full_matrices=False)
        rows = Vh[: _numerical_rank(s, W.shape)]
        R = random_fan_in(site, k, generator).reshape(k, -1)
        P = R - (R @ rows.T) @ rows
        _, sp, Vp = torch.linalg.svd(P, full_matrices=False)
        m = int((sp > 1e-6 * sp.max()).sum()) if sp.numel() and sp.max() > 0 else 0
        # Orthonormal basis of the projected block: each new row adds one dimension.
        new = torch.cat([Vp[:m], R[m:]], dim=0)
        new, _ = rescale_rows(new, mean_fan_in_norm(site))
        return NewNeurons(fan_in=_to_site(site, new.reshape(k, *site.fan_in_shape)))


#: Initializer classes by name.
INITIALIZERS = {
    "random": RandomInit,
    "select": SelectInit,
    "preactivation": PreActivationInit,
    "weight": WeightInit,
}
