"""Initializers: how new neurons are set (SPEC section 4).

The NORTH* initializers are function-preserving: new neurons get zero fan-out (and, except
for Pre-activation, zero bias), so the network's output does not change when they are
added; gradient descent then integrates them. New fan-in vectors are rescaled to the mean
fan-in norm of the site's existing neurons. The gradient-based ones (GradMax, Firefly,
NeST; ``needs_gradients = True``) read the last training step's auxiliary gradient
(``context.gradients``, see ``gradients``): GradMax has zero fan-in and is
function-preserving, Firefly preserves the function up to a small noise, NeST changes it.

The initializer protocol. Any object is an initializer (e.g. in a custom strategy
``strategy=(trigger, initializer)``) if it is callable as
``init(index, site, k, context, generator) -> NewNeurons`` for ``k >= 1`` neurons of site
``index``: ``NewNeurons(fan_in, bias=None, fan_out=None)`` with ``fan_in`` of shape
``(k, *site.fan_in_shape)`` on the site's device and dtype, ``bias`` of shape ``(k,)``
(``None``: zeros) and ``fan_out`` one block per consumer (``None``: zeros, which preserves
the network's function). ``context`` is the trigger's ``GrowthContext``. Random numbers
come from ``generator`` (a CPU ``torch.Generator``) so that a fit is reproducible from its
``random_state``. Optional members: ``needs_activations = False`` (``True`` makes the
callback keep the sample buffer for ``context.activations``), ``needs_gradients = False``
(``True`` makes it record the last training step's ``context.gradients``) and
``check_params()``, which raises ``ValueError`` for invalid parameters when fit starts. The
callback deep-copies the initializer before training; cloning and pickling work as for
triggers (see ``triggers``): subclass ``Initializer`` (a ``ParamsMixin``), define it at
module level.

Numerical ranks. Where a span or kernel decides the *result* of a method, it is taken at
machine precision (Weight's kernel, Pre-activation's kernel of ``Z`` and, by default, its
pseudo-inverse of the input), so the documented orthogonality holds exactly. Where it only
scores, it is the metric's own threshold ``epsilon * sqrt(n)`` (Select's projection away
from the existing activations): a direction the metric does not count is not treated as
taken.
"""

import math
import numbers

import numpy as np
import torch

from . import metrics
from ._host import host
from ._params import ParamsMixin
from .gradients import per_neuron_rows
from .sites import GrowthSite, NewNeurons


class Initializer(ParamsMixin):
    """Base class of initializers."""

    #: Whether the network's function is unchanged by the new neurons.
    function_preserving = True
    #: Whether the initializer reads activations on the sample buffer.
    needs_activations = False
    #: Whether the initializer reads the last training step's gradient statistics
    #: (``context.gradients``); the callback then records them with hooks.
    needs_gradients = False
    #: Whether it can grow a convolution's channels (``GrowthSite.is_conv``).
    grows_convs = True

    def check_params(self):
        """Raise ``ValueError`` for an invalid parameter value (the callback calls this when
        fit starts, before any training)."""

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
    # In place: Select draws 1000 candidates per event, no temporaries of that size.
    return torch.rand(shape, generator=generator, dtype=torch.float64).mul_(2).sub_(1)


def random_rescaled_fan_in(site, k, generator):
    """``random_fan_in`` rescaled (in place) to the site's mean fan-in norm."""
    w, _ = rescale_rows(random_fan_in(site, k, generator), mean_fan_in_norm(site), inplace=True)
    return w


def tied_fan_in(producer, k, generator):
    """Fan-in of ``k`` new output channels of a producer tied to a growing site (SPEC
    section 8: the authors' code gives them a random fan-in and zero fan-out): Glorot
    directions rescaled to its mean filter norm, on its device and dtype. A zero fan-in
    would leave them dead: zero values read through zero weights get no gradient."""
    site = GrowthSite(name="tied", producer=producer, consumers=[], activation=None)
    return _to_site(site, random_rescaled_fan_in(site, k, generator))


def rescale_rows(w, target, inplace=False):
    """Scale each row of ``w`` (k, ...) to L2 norm ``target``; return (rows, factors).

    ``inplace=True`` scales ``w`` itself (for a tensor the caller owns)."""
    norms = w.reshape(w.shape[0], -1).norm(dim=1)
    factors = torch.where(norms > 0, target / norms.clamp_min(1e-300), torch.zeros_like(norms))
    factors_b = factors.reshape(-1, *([1] * (w.ndim - 1)))
    return (w.mul_(factors_b) if inplace else w * factors_b), factors


def _to_site(site, tensor):
    like = site.producer.weight
    return tensor.to(device=like.device, dtype=like.dtype)


def _numerical_rank(s, shape):
    # numpy.linalg.matrix_rank's tolerance.
    if s.numel() == 0:
        return 0
    tol = s.max() * max(shape) * torch.finfo(s.dtype).eps
    return int((s > tol).sum())


def _column_space(B, rank, complement=False):
    """Orthonormal basis of the column space of ``B`` (r x M) of numerical rank ``rank``
    (r x rank), or of its orthogonal complement (r x (r - rank)) with ``complement``.

    From a QR when the columns are independent (the usual case: ~3x cheaper than the
    SVD's vectors), from the SVD otherwise.
    """
    if rank == B.shape[1]:
        Q = torch.linalg.qr(B, mode="complete" if complement else "reduced").Q
    else:
        Q = torch.linalg.svd(B, full_matrices=complement).U
    return Q[:, rank:] if complement else Q[:, :rank]


def _row_space(W):
    """Orthonormal basis (rank x F) of the row space of ``W`` (M x F), rank at
    ``matrix_rank``'s tolerance.

    A QR of the tall orientation; at full rank its orthonormal factor is the basis (``I``
    for a tall ``W``), otherwise its square factor's singular vectors give it. The same
    span as ``W``'s own SVD at ~1/3 of its cost for a wide layer (256 x 4459: 46 ms
    against 164 ms on one thread); full rank is usually certified without any singular
    value (``_certainly_full_rank``): 640 x 784 in 21 ms instead of 98.
    """
    M, F = W.shape
    tall = M > F
    Q, R = torch.linalg.qr(W if tall else W.T)  # W = Q R, or W = R^T Q^T
    full = min(M, F)
    if not _certainly_full_rank(R, W.shape):
        # One SVD gives the rank and the basis: uncertified factors are mostly of lower
        # rank (the zero fan-out columns of the layer before's new neurons; 42 of 311
        # events of north-weight on MNIST-10k, where singular values then vectors took
        # 39 + 50 ms).
        _, s, Vh = torch.linalg.svd(R if tall else R.T)
        rank = _numerical_rank(s, W.shape)
        if rank < full:
            return Vh[:rank] if tall else Vh[:rank] @ Q.T
    return torch.eye(F, dtype=W.dtype, device=W.device) if tall else Q.T


def _certainly_full_rank(R, shape):
    """Whether the square triangular factor ``R`` of a QR of a matrix of ``shape`` has all
    its singular values above ``matrix_rank``'s tolerance, ``sigma_max max(shape) eps``,
    decided from bounds: ``sigma_min >= 1 / ||R^-1||_F`` and ``sigma_max <= ||R||_F``.
    ``False`` means "not certain" (a condition number near ``1 / (max(shape) eps)``, or
    a singular ``R``): then the singular values decide. One triangular inverse,
    ``M^3 / 3`` flops, instead of a bidiagonalisation (640 x 640: 3 ms against 44 ms)."""
    if R.numel() == 0:
        return True
    eye = torch.eye(R.shape[0], dtype=R.dtype, device=R.device)
    inverse = torch.linalg.solve_triangular(R, eye, upper=True)
    norms = torch.stack([torch.linalg.matrix_norm(R), torch.linalg.matrix_norm(inverse)])
    norm, inverse_norm = norms.tolist()
    # 2x: a margin for the inverse's rounding error (relative kappa * eps, tiny here).
    eps = torch.finfo(R.dtype).eps
    return math.isfinite(inverse_norm) and 2 * norm * inverse_norm * max(shape) * eps < 1


#: Candidates scored at a time by Select and Pre-activation: bounds the memory of their
#: (n_samples x chunk) activation blocks.
CANDIDATE_CHUNK = 256


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
    return _ResidualScorer(existing, threshold, gram)(candidates)


class _ResidualScorer:
    """``orthogonal_residual_norms`` against fixed ``existing`` activations: the Cholesky
    factor is computed once, candidates are scored in blocks."""

    def __init__(self, existing, threshold, gram=None):
        G = metrics.gram(existing) if gram is None else gram
        eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
        self.existing = existing
        self.L = torch.linalg.cholesky(G + threshold**2 * eye)

    def __call__(self, candidates):
        proj = (self.existing.T @ candidates).double()
        proj = torch.linalg.solve_triangular(self.L, proj, upper=False)
        # Squares summed in the candidates' dtype: no float64 copy of the (n, K) block.
        residual2 = candidates.square().sum(dim=0).double() - proj.square().sum(dim=0)
        return residual2.clamp_min(0).sqrt()


def _most_orthogonal(index, site, k, context, post_blocks, largest=True):
    """Indices of the k candidates whose post-activations are most orthogonal to the
    site's (``largest=False``: the least orthogonal, see
    ``SelectInit._keep_most_orthogonal``). ``post_blocks`` yields the candidates'
    post-activations on the buffer, laid out as the site's (rows: samples, or positions
    of samples on a conv site), blocks of (n, chunk) in order, in the site's dtype."""
    acts = context.activations(index)
    # n: the rows the metric normalises by (N * H * W on a conv site).
    n = acts.post.shape[0]
    scorer = _ResidualScorer(acts.post, context.epsilon * math.sqrt(n), context.post_gram(index))
    scores = torch.cat([scorer(z) for z in post_blocks])
    return torch.topk(scores, k, largest=largest).indices


def _select_most_orthogonal(index, site, k, context, fan_in, bias, largest=True):
    """Keep the k candidates whose post-activations are most orthogonal to the site's
    (see ``_most_orthogonal``)."""
    inputs = context.activations(index).inputs
    fan_in = _to_site(site, fan_in)
    bias = _to_site(site, bias)
    # Blocks of candidates: the (n, K) activations are never held at once.
    blocks = (
        site.candidate_post(inputs, w, b)
        for w, b in zip(fan_in.split(CANDIDATE_CHUNK), bias.split(CANDIDATE_CHUNK))
    )
    chosen = _most_orthogonal(index, site, k, context, blocks, largest)
    return NewNeurons(fan_in=fan_in[chosen], bias=bias[chosen])


# --- the initializers -------------------------------------------------------------------


class RandomInit(Initializer):
    """Random fan-in (Glorot direction, rescaled), zero bias, zero fan-out."""

    def __call__(self, index, site, k, context, generator):
        w = random_rescaled_fan_in(site, k, generator)
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
    # False keeps the least orthogonal candidates, as the reference code's dense path
    # does (a mistake, SPEC section 4): only benchmarks set it, to measure its effect.
    _keep_most_orthogonal = True

    def __init__(self, n_candidates=1000):
        self.n_candidates = n_candidates

    def __call__(self, index, site, k, context, generator):
        n_cand = max(int(self.n_candidates), k)
        w = random_rescaled_fan_in(site, n_cand, generator)
        return _select_most_orthogonal(
            index, site, k, context, w, torch.zeros(n_cand), largest=self._keep_most_orthogonal
        )


#: ``PreActivationInit``'s named ``inverse_cutoff`` values (a float is a relative tolerance).
INVERSE_CUTOFFS = ("pinv", "epsilon")


class PreActivationInit(Initializer):
    """Candidates with pre-activations orthogonal to the existing ones (NORTH-Pre, eq. 7).

    ``w = pinv([H_{l-1}; 1]^T) V' a``: ``V'`` spans the kernel of the existing
    pre-activations ``Z_l`` over the buffered samples, ``a`` is Gaussian. The bias is part
    of the solve (the paper's ``W_l`` includes it), so a candidate's pre-activation is
    exactly orthogonal to every existing one on the buffer. The candidates are then scored
    and selected as in ``SelectInit``.

    The kernel is sampled in the eigenbasis of the smaller of the two Gram matrices of the
    augmented input ``A = [H_{l-1}^T, 1]`` (n samples, ``fan_in + 1`` columns), which
    have the same non-zero eigenvalues (the squared singular values of ``A``):

    - ``n >= fan_in + 1`` (the usual case): ``A^T A`` (``context.input_gram``), its
      eigenvectors the right singular vectors ``V``; nothing of size ``n x n`` is formed.
    - ``n < fan_in + 1`` (inputs wider than the buffer, e.g. a first layer on many
      features): ``A A^T`` (``context.input_sample_gram``), its eigenvectors the left
      singular vectors ``U``, and ``V = A^T U / sv``. A candidate is then a combination of
      the samples, ``w = A^T c``: its pre-activations on the buffer are ``A A^T c`` and
      its fan-in norm ``sqrt(c^T H_{l-1}^T H_{l-1} c)``, so candidates are scored without
      their weights, and only the ``k`` kept ones are formed. Nothing of size
      ``fan_in^2`` or ``n_candidates x fan_in`` is formed: the cost grows linearly with
      ``fan_in``.

    Both keep the same directions (see ``inverse_cutoff``) and draw the candidates from
    the same distribution (the draws differ with the singular vectors' arbitrary signs).

    When the existing pre-activations already span everything the input can produce (a
    layer at least as wide as its input's rank), no orthogonal pre-activation exists and
    random candidates are used instead.

    Parameters
    ----------
    n_candidates : int, default=1000
    inverse_cutoff : "pinv", "epsilon" or float in (0, 1), default="pinv"
        Which directions of the input the left inverse uses: those whose singular value
        on the buffer is above a cutoff. ``"pinv"``: the Moore-Penrose pseudo-inverse
        (eq. 7) at ``torch.linalg.pinv``'s default tolerance for the input's dtype,
        ``eps * max(n, fan_in + 1)`` times the largest singular value (float32, 1568
        samples: 1.9e-4). A float: that relative tolerance instead. ``"epsilon"``: the
        metric's own threshold ``epsilon * sqrt(n)`` (not the paper's). A weak input
        direction needs a large weight to produce a unit pre-activation, so the smaller
        the cutoff, the more the candidates' weights are made of the input's weakest
        directions, and once rescaled to the layer's mean fan-in norm their activations on
        the data are small. MNIST (fast mode, seed 0, 20 epochs; the paper: 281-172, test
        accuracy 0.977): 1e-6: 147-81 (0.976); 1e-5: 193-85 (0.978); Julia's ``pinv``
        default for Float32 (``eps * min(n, fan_in + 1)``), 9.4e-5: 366-76 (0.980);
        ``"pinv"``: 422-94 (0.981); ``"epsilon"``: 784-91 (0.981). Over 5 seeds in exact
        mode ``"pinv"`` gave 389-89 (0.981). The cutoffs are on the singular values of
        ``A`` whichever Gram matrix is decomposed (``"pinv"``'s ``max(n, fan_in + 1)``
        included).
    """

    grows_convs = False  # dense layers only in this version

    needs_activations = True
    # Which Gram matrix to decompose: None decides by the input's shape (the samples' when
    # n < fan_in + 1); True or False forces the samples' or the features'. Tests and the
    # scaling benchmark force it to compare the two.
    _sample_space = None

    def __init__(self, n_candidates=1000, inverse_cutoff="pinv"):
        self.n_candidates = n_candidates
        self.inverse_cutoff = inverse_cutoff

    def check_params(self):
        cutoff = self.inverse_cutoff
        if isinstance(cutoff, str):
            valid = cutoff in INVERSE_CUTOFFS
        else:
            valid = isinstance(cutoff, numbers.Real) and 0 < cutoff < 1
        if not valid:
            raise ValueError(
                f"inverse_cutoff must be 'pinv', 'epsilon' or a float in (0, 1), got {cutoff!r}."
            )

    def _kept_directions(self, eig, inputs, n_columns, epsilon):
        """Mask of the input Gram's eigenvalues ``eig`` (float64) whose directions the
        inverse uses (see ``inverse_cutoff``); ``n_columns`` is ``fan_in + 1`` for either
        Gram matrix. The rounding floor is relative to the size of the Gram matrix that was
        decomposed (``len(eig)``)."""
        self.check_params()
        n = inputs.shape[0]
        if self.inverse_cutoff == "epsilon":
            return eig > epsilon**2 * n
        if self.inverse_cutoff == "pinv":
            rtol = torch.finfo(inputs.dtype).eps * max(n, n_columns)
        else:
            rtol = float(self.inverse_cutoff)
        # Singular values squared; below len(eig) * eps64 of the largest eigenvalue the
        # float64 Gram's eigenvalues are rounding noise (float64 inputs only).
        floor = len(eig) * torch.finfo(eig.dtype).eps
        return eig > max(rtol**2, floor) * eig.max()

    def __call__(self, index, site, k, context, generator):
        if site.is_conv:
            # Eq. 7 inverts the layer's input matrix; the paper defines it for dense
            # layers (its code runs Select on convolutions).
            raise ValueError(
                f"The pre-activation initializer (north-pre) is defined for dense layers "
                f"only; site {site.name!r} is a convolution. Use north-select on "
                f"convolutional networks, as the paper does."
            )
        n_cand = max(int(self.n_candidates), k)
        inputs = context.activations(index).inputs
        n_columns = math.prod(inputs.shape[1:]) + 1
        sample_space = self._sample_space
        if sample_space is None:
            sample_space = inputs.shape[0] < n_columns
        if sample_space:
            return self._from_samples(index, site, k, n_cand, context, generator)
        eig, V = self._feature_directions(index, context)
        sv = eig.sqrt()
        producer = site.producer
        W = producer.weight.detach().double().reshape(site.width, -1)
        b = producer.bias.detach().double() if producer.bias is not None else W.new_zeros(len(W))
        # Existing pre-activations in the orthonormal basis U = X V / sv: Z = U B.
        B = (V.T @ torch.cat([W, b[:, None]], dim=1).T) * sv[:, None]
        # float64: this sum cancels heavily (kernel directions have singular values ~1e4
        # below the largest); in float32 the candidates lose their orthogonality and, on
        # MNIST, the first layer stalled at 548 neurons.
        w_aug = _kernel_draws(B, n_cand, generator, V / sv)  # V a / sv, (fan_in + 1, n_cand)
        if w_aug is None:
            return self._random_candidates(index, site, k, n_cand, context, generator)
        w_aug = w_aug.T
        w, factors = rescale_rows(w_aug[:, :-1], mean_fan_in_norm(site))
        bias = w_aug[:, -1] * factors
        w = w.reshape(n_cand, *site.fan_in_shape)
        return _select_most_orthogonal(index, site, k, context, w, bias)

    @staticmethod
    def _random_candidates(index, site, k, n_cand, context, generator):
        # The existing pre-activations span all the input can produce: no orthogonal
        # candidate exists, random ones are scored instead.
        w = random_rescaled_fan_in(site, n_cand, generator)
        return _select_most_orthogonal(index, site, k, context, w, torch.zeros(n_cand))

    def _feature_directions(self, index, context):
        """Kept eigenvalues (float64, ascending) of ``A^T A`` and their eigenvectors ``V``
        (``fan_in + 1``, r): the right singular vectors of ``A = [X, 1]``."""
        inputs = context.activations(index).inputs
        G = context.input_gram(index)
        # Inputs that are zero on every buffered sample (MNIST's border pixels) are zero rows
        # and columns of G: leaving them out of the eigendecomposition changes no
        # eigenpair it keeps, and such a weight would never see a non-zero input.
        used = (G.diagonal() > 0).nonzero().squeeze(1)
        eig, V_used = torch.linalg.eigh(G[used][:, used])
        keep = self._kept_directions(eig, inputs, G.shape[0], context.epsilon)
        V = G.new_zeros((G.shape[0], int(keep.sum())))
        V[used] = V_used[:, keep]
        return eig[keep], V

    def _sample_directions(self, index, context):
        """Kept eigenvalues (float64, ascending) of ``A A^T`` and their eigenvectors ``U``
        (n, r): the left singular vectors of ``A = [X, 1]``."""
        inputs = context.activations(index).inputs
        # [X, 1][X, 1]^T: the ones column adds one to every entry.
        eig, U = torch.linalg.eigh(context.input_sample_gram(index) + 1)
        n_columns = math.prod(inputs.shape[1:]) + 1
        keep = self._kept_directions(eig, inputs, n_columns, context.epsilon)
        return eig[keep], U[:, keep]

    def _from_samples(self, index, site, k, n_cand, context, generator):
        """``__call__`` in the sample space (``n < fan_in + 1``; see the class docstring):
        the same draws, candidates ``w = A^T c``, only the ``k`` kept ones formed."""
        X = context.activations(index).inputs
        X = X.reshape(X.shape[0], -1)
        eig, U = self._sample_directions(index, context)
        producer = site.producer
        W = producer.weight.detach().double().reshape(site.width, -1)
        b = producer.bias.detach().double() if producer.bias is not None else W.new_zeros(len(W))
        # The existing pre-activations Z = A [W, b]^T in the basis U: Z = U B with
        # B = U^T Z = sv V^T [W, b]^T, the feature path's B.
        B = U.T @ (_matmul_float64(X, W.T) + b)
        # w = V a / sv = A^T c with c = U a / sv^2: a candidate's fan-in is X^T c, its
        # bias sum(c), its pre-activations A A^T c = X X^T c + sum(c) (= U a).
        C = _kernel_draws(B, n_cand, generator, U / eig)  # (n, n_cand)
        if C is None:
            return self._random_candidates(index, site, k, n_cand, context, generator)
        XXc = context.input_sample_gram(index) @ C
        bias = C.sum(dim=0)
        # |X^T c|^2 = c^T X X^T c: the fan-in norms without the fan-in vectors.
        norms = (C * XXc).sum(dim=0).clamp_min(0).sqrt()
        factors = torch.where(norms > 0, mean_fan_in_norm(site) / norms.clamp_min(1e-300), 0)
        pre = (XXc + bias) * factors
        blocks = (site.activation(_to_site(site, z)) for z in pre.split(CANDIDATE_CHUNK, dim=1))
        chosen = _most_orthogonal(index, site, k, context, blocks)
        C = C[:, chosen] * factors[chosen]
        w = _matmul_float64(X.T, C).T  # (k, fan_in): formed for the kept candidates only
        return NewNeurons(
            fan_in=_to_site(site, w.reshape(k, *site.fan_in_shape)),
            bias=_to_site(site, C.sum(dim=0)),
        )


def _kernel_draws(B, n_cand, generator, basis):
    """``basis @ a`` for ``n_cand`` Gaussian coefficient vectors ``a`` (columns, float64) in
    the orthonormal basis where the existing pre-activations are the columns of ``B``
    (r x M), with their part in ``B``'s column space removed; ``None`` when that space is
    all of ``R^r`` (rank at ``matrix_rank``'s tolerance).

    A standard Gaussian of ``R^r`` projected onto the complement is a standard Gaussian of
    the complement. Where the complement is the narrower part (a layer close to its
    input's rank: e.g. 120 of 641 dimensions) the draws are made there directly, in an
    orthonormal basis ``N`` of it, and ``basis @ N`` is formed before them; otherwise
    ``r``-dimensional draws are projected. The same distribution either way, at the cost
    of the smaller side.

    The rank usually needs no singular value: a QR of ``B`` (of ``B^T`` when ``B`` is
    wide) whose triangular factor is certified of full rank (``_certainly_full_rank``)
    gives it, and the QR's orthonormal factor is the column space: 1000 draws at 641 x 440
    take 20 ms instead of 36 (singular values, then a QR), at 641 x 600 18 instead of 51.
    """
    r, M = B.shape
    if M >= r:  # at least as many columns as dimensions: full rank leaves no complement
        if _certainly_full_rank(torch.linalg.qr(B.T, mode="r").R, B.shape):
            return None
    else:
        # At full column rank (certified), the QR's orthonormal factor is the column
        # space, or its complement's basis too with mode="complete".
        complement = r - M <= M
        Q, R = torch.linalg.qr(B, mode="complete" if complement else "reduced")
        if _certainly_full_rank(R[:M], B.shape):
            return _draws_off(Q[:, M:] if complement else Q, complement, n_cand, generator, basis)
    rank = _numerical_rank(torch.linalg.svdvals(B), B.shape)
    if rank >= r:
        return None
    complement = r - rank <= rank
    space = _column_space(B, rank, complement=complement)
    return _draws_off(space, complement, n_cand, generator, basis)


def _draws_off(space, complement, n_cand, generator, basis):
    """``_kernel_draws``' draws from an orthonormal basis of the complement
    (``complement=True``: drawn in it) or of the column space (``False``: projected off)."""
    r = space.shape[0]
    if complement:
        g = torch.randn(space.shape[1], n_cand, generator=generator, dtype=torch.float64)
        return (basis @ space) @ g.to(space.device)
    a = torch.randn(r, n_cand, generator=generator, dtype=torch.float64).to(space.device)
    return basis @ (a - space @ (space.T @ a))


def _matmul_float64(A, B):
    """``A @ B`` in float64 (``B`` float64, ``A`` of any dtype), a block of
    ``GRAM_CHUNK_ROWS`` rows or columns of ``A`` (along its longer side) converted at a
    time: no float64 copy of a wide ``A`` is made."""
    chunk = metrics.GRAM_CHUNK_ROWS
    if A.shape[0] >= A.shape[1]:
        return torch.cat([rows.double() @ B for rows in A.split(chunk)])
    out = B.new_zeros((A.shape[0], B.shape[1]))
    for cols, rows in zip(A.split(chunk, dim=1), B.split(chunk)):
        out.addmm_(cols.double(), rows)
    return out


class WeightInit(Initializer):
    """Fan-in in the kernel of the existing fan-in weights (NORTH-Weight, eq. 8).

    Random vectors have their component in the row space of ``W_l`` removed, are
    orthonormalised among themselves, and rescaled. Needs ``M_l + k <= fan_in``; neurons
    beyond the kernel's dimension fall back to random directions.
    """

    def __call__(self, index, site, k, context, generator):
        W = site.producer.weight.detach().double().reshape(site.width, -1).cpu()
        rows = _row_space(W)
        R = random_fan_in(site, k, generator).reshape(k, -1)
        P = R - (R @ rows.T) @ rows
        _, sp, Vp = torch.linalg.svd(P, full_matrices=False)
        m = int((sp > 1e-6 * sp.max()).sum()) if sp.numel() and sp.max() > 0 else 0
        # Orthonormal basis of the projected block: each new row adds one dimension.
        new = torch.cat([Vp[:m], R[m:]], dim=0)
        new, _ = rescale_rows(new, mean_fan_in_norm(site))
        return NewNeurons(fan_in=_to_site(site, new.reshape(k, *site.fan_in_shape)))


# --- gradient-based initializers (GradMax, Firefly, NeST) --------------------------------


def mean_fan_out_norm(site):
    """Mean L2 norm of the existing neurons' fan-out weights, over all consumers."""
    sq = 0.0
    for consumer in site.consumers:
        w = consumer.module.weight.detach()
        # (out, M * spatial, ...) -> (M, everything one neuron owns)
        w = w.unflatten(1, (site.width, consumer.spatial)).transpose(0, 1)
        sq = sq + w.reshape(site.width, -1).square().sum(dim=1)
    return float(torch.as_tensor(sq).sqrt().mean())


def _unit_columns(A):
    norms = metrics.column_norms(A)[None]
    return torch.where(norms > 0, A / norms.clamp_min(1e-300), torch.zeros_like(A))


def _fan_out_blocks(site, grads, columns):
    """Split ``(n_out, k)`` fan-out columns into the per-consumer blocks of ``NewNeurons``,
    shaped as ``site.fan_out_shape``: a conv site's rows are ``(o, tap)`` of a conv
    consumer or ``(o, map position)`` of a dense one, row-major."""
    blocks = []
    for c, block in zip(site.consumers, grads.split_fan_out(columns)):
        k = block.shape[1]
        shape = site.fan_out_shape(c, k)
        block = block.reshape(shape[0], -1, k).transpose(1, 2).reshape(shape)
        blocks.append(block.to(device=c.module.weight.device, dtype=c.module.weight.dtype))
    return blocks


def _random_directions(n_rows, k, generator, like):
    r = torch.randn(n_rows, k, generator=generator, dtype=torch.float64)
    return _unit_columns(r).to(device=like.device)


class GradMaxInit(Initializer):
    """Zero fan-in, fan-out along the top left singular vectors of ``G`` (GradMax).

    Evci et al. (2022). A new neuron with zero fan-in (and zero bias) has pre-activation 0
    on every sample; with fan-out ``u`` the gradient of the batch loss with respect to its
    fan-in is ``act'(0) u^T G``, ``G = dL/dZ_{l+1} H_{l-1}^T`` the auxiliary gradient
    (``context.gradients(index).G``, shape ``(n_out, fan_in)``). Among orthonormal fan-outs
    (GradMax's constraint), those that maximise the new fan-ins' total gradient norm
    ``||U^T G||_F`` are the top-``k`` left singular vectors of ``G``: directions in the
    consumers' output space. It needs ``act'(0) != 0``; the
    package's ``"relu"`` has derivative 1 at 0 for this reason.

    Scale: every fan-out column is rescaled to the mean fan-out norm of the existing neurons
    (the SPEC's common rule; unit norm if they are all zero). Sign: a singular vector's sign
    is arbitrary and does not change the gradient norm; each is fixed so that its entry of
    largest magnitude is positive, so the result is deterministic. Beyond the
    ``min(n_out, fan_in)`` singular vectors, random unit directions (from ``generator``)
    are used.

    Function-preserving: the new neurons output ``act(0)`` on every sample. That is 0 for
    relu, tanh and identity. Where it is not (logistic: 0.5), the consumers' biases are
    reduced in place by ``act(0) * u`` so that the output is still unchanged.
    """

    needs_gradients = True

    def __call__(self, index, site, k, context, generator):
        grads = context.gradients(index)
        # G's left singular vectors, from at most a batch's columns where G has more.
        G = grads.left_factor.detach().double()
        U = top_left_singular_vectors(host(G), k).to(G.device)
        if U.shape[1] < k:
            U = torch.cat([U, _random_directions(G.shape[0], k - U.shape[1], generator, U)], 1)
        rows = torch.arange(U.shape[1], device=U.device)
        signs = torch.sign(U[U.abs().argmax(dim=0), rows])
        U = U * torch.where(signs == 0, torch.ones_like(signs), signs)
        target = mean_fan_out_norm(site)
        fan_out = U * (target if target > 0 else 1.0)
        fan_in = site.producer.weight.new_zeros((k, *site.fan_in_shape))
        bias = fan_in.new_zeros(k)
        blocks = _fan_out_blocks(site, grads, fan_out)
        _compensate_constant_output(site, blocks, site.activation(bias[:1]))
        return NewNeurons(fan_in=fan_in, bias=bias, fan_out=blocks)


def top_left_singular_vectors(G, k):
    """Orthonormal left singular vectors of ``G`` (2-D, float64) for its ``min(k, n)``
    largest singular values (``n`` its rows), as columns, as a thin SVD gives them (up
    to signs), from the eigendecomposition of its smaller Gram matrix.

    A conv site's ``G`` is tall (fan-out coordinates by fan-in, e.g. 12 544 x 576 at the
    conv -> dense boundary): forming ``G^T G`` is one matrix product, several times faster
    than a thin SVD of ``G``, and its top eigenvectors ``v`` give ``u = G v / s`` for the
    singular values ``s`` above ``1e-6 s_max`` (which the float64 Gram keeps to ~1e-4
    relative accuracy at worst). Directions beyond those (null space, ``s`` ~ 0) complete
    the basis orthonormally, deterministically, as the SVD's do."""
    n, m = G.shape
    k = min(k, n)
    if n <= m:  # the Gram is in the left space itself: its eigenvectors are the answer
        _, vectors = torch.linalg.eigh(G @ G.T)
        return vectors.flip(1)[:, :k]
    values, vectors = torch.linalg.eigh(G.T @ G)
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k]
    s = values.clamp_min(0).sqrt()
    keep = s > 1e-6 * s[0] if k and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
    U = G @ vectors[:, keep] / s[keep]
    if U.shape[1] < k:
        # Householder QR of [U, I]: Q's first columns are U's (up to sign), the others an
        # orthonormal completion.
        Q = torch.linalg.qr(torch.cat([U, torch.eye(n, k, dtype=G.dtype, device=G.device)], 1))
        U = torch.cat([U, Q.Q[:, U.shape[1] : k]], 1)
    return U


def _compensate_constant_output(site, blocks, value):
    # New neurons that output the constant ``value`` on every sample add value * u to
    # their consumers' pre-activations; subtracting it from the consumers' biases keeps the
    # function unchanged.
    value = float(value.reshape(-1)[0])
    if value == 0.0:
        return
    with torch.no_grad():
        for consumer, block in zip(site.consumers, blocks):
            if consumer.module.bias is not None:
                consumer.module.bias.sub_(value * block.sum(dim=1))


class FireflyInit(Initializer):
    """Best ``k`` of split and new candidate neurons by gradient norm (Firefly).

    Wu et al. (2020). Candidates:

    - *splits*: a copy of an existing neuron ``j``'s fan-in plus noise of norm
      ``noise * ||w_j||`` (random direction), same bias; its fan-out is half of ``j``'s;
    - *new*: random fan-in (Glorot direction, rescaled to the mean fan-in norm), zero
      bias, and an ``noise``-small fan-out: ``noise * (mean fan-out norm)`` along the
      direction that decreases the batch loss (``-g / ||g||``, ``g`` below).

    Each candidate is scored by the gradient norm of its fan-out on the last training
    mini-batch, ``||g||`` with ``g = dL/dZ_{l+1}^T act(H_{l-1}^T w + b)`` (all candidates at
    once: one matrix product), and the ``k`` largest are kept. A split is scored without
    its noise, which moves its score by a relative ``noise`` at most to first order: the
    noise is drawn for the kept splits only (one draw per kept split instead of one per
    candidate, a quarter of Firefly's time on digits).

    A kept split halves the fan-out of the neuron it splits: **this modifies the existing
    consumers' weights in place** (under ``torch.no_grad``; the optimizer state of those
    columns is kept as it is), and the copy takes the other half. Old and new neuron then
    compute ``u/2 * act(z) + u/2 * act(z + noise)``, the function is preserved up to the
    noise; new candidates add ``noise``-small outputs. The change of the output is of
    relative order ``noise`` (1e-4), not zero: ``function_preserving`` is ``False``.

    Parameters
    ----------
    n_candidates : int or None, default=None
        Number of candidates; half of them (at most one per existing neuron, each neuron
        split at most once) are splits, the others new. ``None``: twice the layer width
        (every neuron split once, as many new ones) on a dense site, ``100 + k`` on a conv
        site (the authors' conv code; each candidate is a whole activation map).

    On a conv site the neurons are channels: fan-ins are filters, a candidate's fan-out
    gradient is the consumers' weight gradient for it as an extra input channel
    (``SiteGradients.candidate_fan_out_gradients``).
    noise : float, default=1e-4
        Relative size of the split noise and of the new neurons' fan-out.
    """

    function_preserving = False  # up to the noise
    needs_gradients = True

    def __init__(self, n_candidates=None, noise=1e-4):
        self.n_candidates = n_candidates
        self.noise = noise

    def __call__(self, index, site, k, context, generator):
        grads = context.gradients(index)
        width = site.width
        if self.n_candidates is not None:
            n_cand = int(self.n_candidates)
        else:
            n_cand = 100 + k if site.is_conv else 2 * width
        n_cand = max(n_cand, k)
        n_split = min((n_cand + 1) // 2, width)
        n_new = n_cand - n_split

        producer = site.producer
        W = producer.weight.detach().double().reshape(width, -1).cpu()
        b = producer.bias.detach().double().cpu() if producer.bias is not None else None
        split = torch.randperm(width, generator=generator)[:n_split]
        new_w = random_rescaled_fan_in(site, n_new, generator)
        fan_in = torch.cat([W[split], new_w.reshape(n_new, -1)])
        bias = torch.cat([b[split] if b is not None else W.new_zeros(n_split), W.new_zeros(n_new)])

        inputs = grads.inputs
        fan_in_t = fan_in.to(device=inputs.device, dtype=inputs.dtype)
        bias_t = bias.to(device=inputs.device, dtype=inputs.dtype)
        fan_in_t = fan_in_t.reshape(-1, *site.fan_in_shape)
        g = grads.candidate_fan_out_gradients(site, fan_in_t, bias_t)  # (rows, n_cand)
        chosen = torch.topk(metrics.column_norms(g), k).indices.cpu()
        fan_in = fan_in[chosen]
        is_split = chosen < n_split
        # The kept splits' noise: random directions of norm noise * ||w_j||.
        noise = torch.randn(int(is_split.sum()), W.shape[1], generator=generator, dtype=W.dtype)
        noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-300)
        fan_in[is_split] += noise * (self.noise * fan_in[is_split].norm(dim=1, keepdim=True))

        weights = [c.module.weight.detach() for c in site.consumers]
        fan_outs = per_neuron_rows(weights, width).double()
        neurons = split[chosen[is_split]]  # existing neurons that are split (each at most once)
        columns = torch.empty(fan_outs.shape[0], k, dtype=torch.float64, device=g.device)
        columns[:, is_split.to(g.device)] = fan_outs[:, neurons.to(fan_outs.device)].to(g) / 2
        eps_out = self.noise * mean_fan_out_norm(site)
        direction = _unit_columns(g[:, chosen[~is_split].to(g.device)])
        columns[:, (~is_split).to(g.device)] = -eps_out * direction
        with torch.no_grad():
            for consumer in site.consumers:
                w = consumer.module.weight
                # (out, width * spatial, ...): a neuron's columns are its spatial block.
                w.unflatten(1, (width, consumer.spatial))[:, neurons.to(w.device)] *= 0.5
        # A split copies its neuron's normalisation entries; a new candidate gets identity.
        norm_sources = torch.full((k,), -1, dtype=torch.long)
        norm_sources[is_split.cpu()] = neurons.cpu()
        return NewNeurons(
            fan_in=_to_site(site, fan_in.reshape(k, *site.fan_in_shape)),
            bias=_to_site(site, bias[chosen]),
            fan_out=_fan_out_blocks(site, grads, columns),
            norm_sources=norm_sources,
        )


class NeSTInit(Initializer):
    """Neurons bridging the input/output pairs with large auxiliary gradient (NeST).

    Dai et al. (2019). From ``G = dL/dZ_{l+1} H_{l-1}^T`` (n_out, fan_in), keep the entries
    with ``|G_oi|`` above the ``quantile`` (40th percentile) of ``|G|``. A new neuron
    connects the kept inputs to the kept outputs, each weight of magnitude the square root
    of the gradient mass it bridges, so that fan-out times fan-in reproduces ``|G|``'s
    pattern: fan-in ``|w_i| ∝ sqrt(sum_o |G_oi|)``, fan-out ``|u_o| ∝ sqrt(sum_i |G_oi|)``
    (sums over the kept entries; for a single kept pair this is ``sqrt(|G_oi|)`` on both
    sides, NeST's rule).

    Signs: the fan-in signs are random (one draw per new neuron, so the ``k`` neurons
    differ). Each fan-out sign is chosen to decrease the batch loss: with the new neuron's
    activations ``a = act(H_{l-1}^T w)`` on the last mini-batch, the gradient of the loss
    with respect to its fan-out is ``g = dL/dZ_{l+1}^T a`` and ``u_o = -sign(g_o) |u_o|``,
    so the first-order change of the loss, ``u . g``, is never positive.

    Scale: fan-in rescaled to the mean fan-in norm, fan-out to the mean fan-out norm of the
    existing neurons; bias 0. Not function-preserving (by design, SPEC section 4).

    On a conv site ``G`` is the conv auxiliary matrix (rows: the consumers' output
    channel and tap, columns: the filter's entries): a new channel's filter and fan-out
    kernels follow its pattern as a neuron's fan-in and fan-out do.

    Parameters
    ----------
    quantile : float in [0, 1), default=0.4
        Entries of ``|G|`` above this quantile are kept.
    """

    function_preserving = False
    needs_gradients = True

    def __init__(self, quantile=0.4):
        self.quantile = quantile

    def __call__(self, index, site, k, context, generator):
        grads = context.gradients(index)
        A = grads.G.detach().double().abs()
        kept = A * (A > _lower_quantile_value(A, float(self.quantile)))
        in_mass = kept.sum(dim=0).sqrt().cpu()  # (fan_in,)
        out_mass = kept.sum(dim=1).sqrt()  # (n_out,)
        signs = torch.randint(0, 2, (k, in_mass.numel()), generator=generator) * 2 - 1
        if in_mass.max() > 0:
            fan_in = signs.double() * in_mass
        else:  # no gradient at all: random directions
            fan_in = random_fan_in(site, k, generator).reshape(k, -1)
        fan_in, _ = rescale_rows(fan_in, mean_fan_in_norm(site))

        inputs = grads.inputs
        fan_in_t = fan_in.to(inputs).reshape(k, *site.fan_in_shape)
        # dL/d(fan-out) at u = 0, (rows, k)
        g = grads.candidate_fan_out_gradients(site, fan_in_t, inputs.new_zeros(k))
        fan_out = -torch.sign(g) * out_mass[:, None]
        fan_out = _unit_columns(fan_out) * mean_fan_out_norm(site)
        return NewNeurons(
            fan_in=_to_site(site, fan_in.reshape(k, *site.fan_in_shape)),
            bias=site.producer.weight.new_zeros(k),
            fan_out=_fan_out_blocks(site, grads, fan_out),
        )


def _lower_quantile_value(values, q):
    """The order statistic ``v`` of ``values`` below (or at) their ``q``-quantile, such that
    ``values > v`` keeps exactly the entries ``values > torch.quantile(values, q)`` keeps.

    ``torch.quantile`` interpolates between the sorted values at ``floor(q (N - 1))`` and
    the next; no value lies strictly between those two, so "above the interpolated
    quantile" and "above the lower one" select the same entries. One partial sort
    (``numpy.partition``) instead of ``torch.quantile``'s full sort: 0.5 ms against 36 ms
    for a 640 x 784 ``G``.

    Zeros are counted, not sorted: ``|G|`` of a layer whose inputs are zero on the whole
    batch (MNIST's border pixels, dead units) is ~40 % zeros, often where the quantile
    falls, and a partial sort through that many ties took up to 3 ms; counted, 0.02 ms.
    Elsewhere the partial sort decides, as before.
    """
    flat = host(values.detach()).flatten().numpy()
    position = math.floor(q * (flat.size - 1))
    negative = int(np.count_nonzero(flat < 0))
    if negative <= position < negative + int(np.count_nonzero(flat == 0)):
        return 0.0
    return float(np.partition(flat, position)[position])


#: Initializer classes by name.
INITIALIZERS = {
    "random": RandomInit,
    "select": SelectInit,
    "preactivation": PreActivationInit,
    "weight": WeightInit,
    "gradmax": GradMaxInit,
    "firefly": FireflyInit,
    "nest": NeSTInit,
}
