"""What triggers and initializers look at: the sample buffer and per-step statistics.

Statistics are gathered once per growth evaluation and shared by all sites, so no layer's
forward pass runs twice for the same samples. After a site grows, the cache is dropped:
later sites read a larger input, and the grown site has new neurons.
"""

import inspect

import torch

from . import metrics


class SampleBuffer:
    """FIFO of the most recent training inputs (SPEC section 2).

    The activation metric is computed on these samples with the current weights. Its
    capacity must exceed the layer widths (``n > M``), by default twice the largest
    maximum width, as in the paper's reference code.
    """

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self.data = None
        self.size = 0
        self._next = 0

    def __len__(self):
        return self.size

    def extend(self, X):
        """Push the rows of ``X``, overwriting the oldest ones when full."""
        X = X.detach().reshape(X.shape[0], -1) if X.ndim == 1 else X.detach()
        if self.data is None:
            self.data = X.new_empty((self.capacity, *X.shape[1:]))
        X = X.to(device=self.data.device, dtype=self.data.dtype)
        if X.shape[0] >= self.capacity:
            self._write(0, self.capacity, X[-self.capacity :])
            self.size, self._next = self.capacity, 0
            return
        end = self._next + X.shape[0]
        if end <= self.capacity:
            self._write(self._next, end, X)
        else:
            split = self.capacity - self._next
            self._write(self._next, self.capacity, X[:split])
            self._write(0, end - self.capacity, X[split:])
        self._next = end % self.capacity
        self.size = min(self.size + X.shape[0], self.capacity)

    def _write(self, start, stop, rows):
        """Store ``rows`` at ring positions ``start:stop`` (subclasses track writes)."""
        self.data[start:stop] = rows

    def samples(self):
        """The buffered samples (row order is irrelevant to every statistic)."""
        if self.data is None:
            raise RuntimeError("The sample buffer is empty.")
        return self.data[: self.size]

    def to(self, device):
        if self.data is not None:
            self.data = self.data.to(device)
        return self


class SiteActivations:
    """Activations of one site on the buffer, sample-major.

    ``inputs``: the producer's input (n, fan_in); ``pre``: pre-activations (n, M);
    ``post``: post-activations (n, M), what the activation metric measures. ``post`` may
    be given as ``activation`` instead, applied to ``pre`` the first time ``post`` is read
    (fast mode: a site nobody evaluates never pays for it). ``post_gram``: a function
    returning ``post``'s float64 Gram matrix, where its owner keeps one up to date (fast
    mode's rings); by default it is formed from ``post``.
    """

    def __init__(self, inputs, pre, post=None, activation=None, post_gram=None):
        if post is None and activation is None:
            raise ValueError("Give post or activation.")
        self.inputs = inputs
        self.pre = pre
        self._post = post
        self._activation = activation
        self._post_gram = post_gram

    @property
    def post(self):
        if self._post is None:
            self._post = self._activation(self.pre)
        return self._post

    def post_gram(self):
        """Float64 Gram matrix ``post^T post`` (M x M)."""
        if self._post_gram is not None:
            return self._post_gram()
        return metrics.gram(self.post)


class GrowthContext:
    """Lazily computed statistics for one growth evaluation.

    Parameters
    ----------
    module : nn.Module
        A growable network: ``growth_sites()`` and ``site_activations(X)``.
    samples : torch.Tensor or None
        The sample buffer's contents, on the module's device.
    epsilon : float
        The effective-dimension threshold, shared by the metric and by initializers that
        need a numerical rank.
    step : int, default=0
        Optimizer steps taken so far in this training (``t``).
    total_steps : int or None, default=None
        Optimizer steps the training is planned for (``T``, see ``GrowthCallback``);
        preset schedules grow by a fraction of it. ``None``: no plan is known.
    gradients : GradientSnapshot or None, default=None
        Gradient statistics of the training step just taken (see ``gradients``), for
        triggers and initializers with ``needs_gradients``.
    recorder : ActivationRecorder or None, default=None
        Fast mode: activations are read from what the training forward passes recorded
        (see ``activations``) instead of a forward pass of ``samples``.
    n_sites : int or None, default=None
        Only the first ``n_sites`` sites are evaluated: the forward pass of ``samples``
        stops after them (passed to ``module.site_activations`` where it takes it). Sites
        past it have no activations. ``None``: all.
    """

    def __init__(
        self,
        module,
        samples=None,
        epsilon=0.01,
        step=0,
        total_steps=None,
        gradients=None,
        recorder=None,
        n_sites=None,
    ):
        self.module = module
        self.n_sites = n_sites
        self.samples = samples
        self.epsilon = epsilon
        self.step = step
        self.total_steps = total_steps
        self._gradients = gradients
        self._recorder = recorder
        self._activations = None
        self._grams = {}
        self._input_grams = {}
        self._sample_grams = {}

    def activations(self, index):
        """``SiteActivations`` of site ``index`` with the current weights (or, in fast
        mode, as the training forward passes computed them)."""
        return self.activations_all()[index]

    def activations_all(self):
        """``SiteActivations`` of every site (see ``activations``)."""
        if self._activations is None and self._recorder is not None:
            # None: nothing recorded yet (no training batch since the recorder began).
            self._activations = self._recorder.site_activations()
        if self._activations is None:
            if self.samples is None:
                raise RuntimeError("This growth evaluation has no samples.")
            with torch.no_grad():
                self._activations = self._forward()
        return self._activations

    def _forward(self):
        if self.n_sites is None:
            return self.module.site_activations(self.samples)
        # Modules written for the protocol without n_sites compute every site.
        if "n_sites" not in inspect.signature(self.module.site_activations).parameters:
            return self.module.site_activations(self.samples)
        return self.module.site_activations(self.samples, n_sites=self.n_sites)

    def post_gram(self, index):
        """Float64 Gram matrix ``H^T H`` (M x M) of site ``index``'s post-activations.

        Shared by the activation trigger (its eigenvalues) and by initializers that score
        candidates against the existing neurons, so it is formed once per evaluation.
        """
        if index not in self._grams:
            self._grams[index] = self.activations(index).post_gram()
        return self._grams[index]

    def input_gram(self, index):
        """Float64 Gram matrix ``[X, 1]^T [X, 1]`` of site ``index``'s inputs ``X`` with a
        column of ones appended (the bias's input), shape ``(fan_in + 1, fan_in + 1)``.

        When the inputs are the previous site's post-activations (an MLP), its
        ``post_gram`` is reused: the trigger has usually formed it in this evaluation.
        """
        if index not in self._input_grams:
            X = self.activations(index).inputs
            # Identity before the reshape: a reshape returns a new tensor object.
            if index > 0 and X is self.activations(index - 1).post:
                XtX = self.post_gram(index - 1)
            else:
                X = X.reshape(X.shape[0], -1)
                XtX = metrics.gram(X)
            sums = X.sum(dim=0, dtype=torch.float64)[:, None]
            n = XtX.new_full((1, 1), X.shape[0])
            self._input_grams[index] = torch.cat(
                [torch.cat([XtX, sums], dim=1), torch.cat([sums.T, n], dim=1)]
            )
        return self._input_grams[index]

    def input_sample_gram(self, index):
        """Float64 Gram matrix ``X X^T`` (n x n) of the samples of site ``index``'s inputs
        ``X`` (one row per buffered sample, flattened).

        The sample-space counterpart of ``input_gram`` for inputs with more columns than
        samples: ``[X, 1][X, 1]^T``, this plus one in every entry, has the same non-zero
        eigenvalues as ``input_gram``. Its cost grows linearly with the input's width,
        ``input_gram``'s quadratically.
        """
        if index not in self._sample_grams:
            X = self.activations(index).inputs
            # The Gram of X^T's columns; metrics.gram converts a block of input columns to
            # float64 at a time, never the whole (n, fan_in) matrix.
            self._sample_grams[index] = metrics.gram(X.reshape(X.shape[0], -1).T)
        return self._sample_grams[index]

    def gradients(self, index):
        """``SiteGradients`` of site ``index`` on the last training mini-batch.

        ``inputs`` (n, fan_in), ``delta = dL/dZ_{l+1}`` (n, n_out), the auxiliary gradient
        ``G = delta^T inputs`` (n_out, fan_in) of eq. (6) and the step's parameter
        gradients (see ``gradients.SiteGradients``).
        """
        if self._gradients is None:
            raise RuntimeError("This growth evaluation has no gradient statistics.")
        return self._gradients[index]

    def invalidate(self):
        """Forget cached statistics (call after the network changed)."""
        self._activations = None
        self._grams = {}
        self._input_grams = {}
        self._sample_grams = {}

    def site_grew(self, index, new):
        """Call after ``new`` (``NewNeurons``) were added to site ``index``: forgets the
        cached activations and brings the gradient statistics of the sites that read the
        grown one up to date (``GradientSnapshot.site_grew``)."""
        self.invalidate()
        if self._recorder is None and self._gradients is None:
            return
        sites = self.module.growth_sites()
        if self._recorder is not None:
            self._recorder.site_grew(index, sites, new)
        if self._gradients is not None:
            self._gradients.site_grew(index, sites, new)
