"""``GrowingMLPClassifier``: a multi-layer perceptron that grows its hidden layers."""

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseGrowingClassifier, _as_widths, _check_maximum, _per_layer
from .nn import ACTIVATIONS, GrowableMLP


class GrowingMLPClassifier(BaseGrowingClassifier):
    """Multi-layer perceptron classifier whose hidden layers grow during training.

    Each hidden layer starts at ``hidden_layer_sizes`` neurons. After every optimizer step a
    *trigger* decides, per layer, how many neurons to add, and an *initializer* sets them
    (Maile et al., 2022, "When, where, and how to add new neurons to ANNs"). The NORTH*
    strategies add function-preserving neurons when the layer's post-activations (or
    weights) stay more orthogonal than at initialisation.

    Parameters
    ----------
    strategy : str or tuple (trigger, initializer), default="north-select"
        Trigger and initializer pair: a name of ``sklearn_north.STRATEGIES`` (paper,
        Table 1: ``"north-select"``, ``"north-pre"``, ``"north-random"``,
        ``"north-weight"``, and the gradient-based ``"gradmax"``, ``"firefly"``,
        ``"nest"``; ``"static"`` never grows), or a custom pair of objects,
        e.g. ``(LinearSchedule(), SelectInit(n_candidates=100))`` from
        ``sklearn_north.growth``: instances of ``Trigger`` and ``Initializer`` subclasses
        or any objects with their protocols (see ``sklearn_north.growth.triggers`` and
        ``.initializers``). Fit copies the objects and never modifies them; to be cloned
        and pickled they must follow ``ParamsMixin`` (every ``__init__`` argument stored
        under its name) and be defined at module level.
    hidden_layer_sizes : int or tuple of int, default=(64, 64)
        Initial width of each hidden layer.
    max_hidden_layer_sizes : int, tuple of int or None, default=None
        Maximum width of each hidden layer (an int applies to every layer). ``None``: ten
        times the initial width.
    schedule : {"linear", "batched"} or None, default=None
        Replace the strategy's trigger by a preset growth schedule, keeping its initializer
        (so ``"static"`` cannot have one): every layer grows from its initial width to
        ``schedule_target`` by the fraction ``schedule_end`` of the planned training,
        ``max_epochs * ceil(n_samples / batch_size)`` optimizer steps (planned at the first
        ``fit`` or ``partial_fit``; continued training keeps the widths reached).
        ``"linear"``: one neuron at a time along a straight line; ``"batched"``: 8
        evenly spaced stages of equal size (see ``sklearn_north.growth.schedules``).
    schedule_target : int, tuple of int or None, default=None
        Target widths of the schedule (an int applies to every layer), between
        ``hidden_layer_sizes`` and ``max_hidden_layer_sizes``. ``None``: the maximum
        widths. Ignored without ``schedule``.
    schedule_end : float in (0, 1], default=0.75
        Fraction of the planned training by which the schedule reaches its target (the
        paper: 0.75 for MLPs).
    gamma : float in (0, 1] or None, default=None
        Trigger threshold: the fraction of a layer's initial orthogonality metric it must
        keep. ``None``: 0.97 for activation triggers, 0.99 for the weight trigger. Unused
        by the gradient trigger of gradmax/firefly/nest. Applies to named strategies only
        (a custom pair's objects keep their own parameters), as do ``epsilon`` and
        ``n_candidates``.
    trigger_rounding : {"floor_threshold", "floor_difference"}, default="floor_threshold"
        How many neurons T_act and T_weight add. ``"floor_threshold"`` (the authors' code,
        which produced the paper's figures): ``rank - floor(M * gamma * phi_0)``, so a
        layer grows whenever its metric ``phi = rank / M`` is above ``gamma * phi_0``.
        ``"floor_difference"`` (the printed eq. 3): ``floor(M * (phi - gamma * phi_0))``,
        one neuron fewer whenever ``M * gamma * phi_0`` is not an integer; a full-rank
        layer narrower than ``1 / (1 - gamma)`` then never grows (e.g. 64 neurons at
        gamma 0.99). Named strategies only.
    epsilon : float, default=0.01
        Singular values (of normalised activations or weights) above ``epsilon`` count
        towards the effective dimension.
    n_candidates : int, default=1000
        Candidate neurons scored per growth event by ``north-select`` and ``north-pre``.
    trigger_interval : int or "auto", default="auto"
        When the triggers are evaluated. An int: every this many optimizer steps (1 = the
        paper's protocol). ``"auto"``: for triggers that measure activations on the sample
        buffer (NORTH-Select, -Pre, -Random), after every step while the network grows;
        after an evaluation at which nothing grew the wait doubles, up to the steps the
        buffer takes to renew (``buffer_size / batch_size``); growth resets it to 1.
        Growing layers are watched as in the paper, quiet ones at a fraction of the cost.
        Other triggers (weight, gradient, schedules) are evaluated after every step (see
        ``sklearn_north.growth.GrowthCallback``).
    buffer_size : int or None, default=None
        Recent training samples on which activations are measured. ``None``: twice the
        largest maximum width. Must be larger than every maximum width for the strategies
        that measure activations (the metric needs more samples than neurons). When
        ``fit``'s training set is no larger, the buffer is the training set itself, each
        sample once (repeats would add nothing but cost).
    activation_source : {"buffer", "training"}, default="buffer"
        Where the activation trigger and ``north-select``/``north-pre`` read activations.
        ``"buffer"`` (the paper): a forward pass of the sample buffer with the current
        weights at every evaluation. ``"training"`` (fast mode, an approximation): the
        activations that the training forward passes already computed for the last
        ``buffer_size`` samples, each as old as the step it was trained at; saves one
        forward pass of ``buffer_size`` samples per evaluation. Its effect on widths,
        accuracy and cost is measured in ``benchmarks/results/cost_fast.md``.
    growth_gate : HeldOutGate or None, default=None
        A task-aware gate on growth, beyond the paper (``sklearn_north.growth.HeldOutGate``):
        ``fit`` holds out ``growth_gate.validation_fraction`` of the training data
        (stratified; the network is not trained on it), measures the loss on it after
        every epoch, and stops growing a layer once that loss has not improved for
        ``patience`` epochs while the layer grew. The orthogonality metric does not look
        at the labels, so without a gate widths follow the number of samples and the cap
        even on pure-noise labels. ``None``: no gate, all data trained on (the paper).
        Continuing fits train on all the data they are given.
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
    optimizer : {"adam", "adamw", "sgd", "rmsprop"} or torch optimizer class, default="adam"
    optimizer_params : dict or None, default=None
        Extra keyword arguments of the optimizer (e.g. ``{"momentum": 0.9}``).
    lr : float, default=3e-4
        Learning rate (the paper's 3e-4; at 3e-3 almost nothing grows).
    batch_size : int or "auto", default=128
        Samples per mini-batch (the paper's 128). ``"auto"``: ``min(200, n_samples)``, as
        ``MLPClassifier``.
    max_epochs : int, default=100
        Epochs per ``fit``, at most (see ``n_iter_no_change``); ``partial_fit`` trains one
        epoch. ``MLPClassifier``'s ``max_iter``.
    alpha : float, default=0.0
        L2 penalty on the weights (not the biases), ``MLPClassifier``'s: each mini-batch's
        loss adds ``0.5 * alpha * ||W||^2`` divided by the batch's total sample weight (its
        size, without ``sample_weight``). The paper trains without one, hence the default 0.
    shuffle : bool, default=True
        Shuffle the samples at every epoch.
    tol : float, default=1e-4
        Improvement the training loss (the validation score under ``early_stopping``) must
        make to count, as ``MLPClassifier``.
    n_iter_no_change : int or None, default=10
        Training stops once more than this many consecutive epochs failed to improve the
        training loss (the validation score under ``early_stopping``) by ``tol``, as
        ``MLPClassifier``. ``None``: always train ``max_epochs`` epochs (the paper's
        protocol; preset schedules plan for all of them). ``partial_fit`` never stops.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), score the
        accuracy on it after every epoch (``validation_scores_``), stop as
        ``n_iter_no_change`` says and end with the network of the best epoch: its
        architecture (the widths it had then), weights, optimizer state and growth state.
        It provides the validation split (``valid_loss``, ``valid_acc`` in ``net_.history``)
        that skorch callbacks such as ``EarlyStopping`` or ``EpochScoring(on_train=False)``
        need. ``fit`` only; ``partial_fit`` trains on all it is given.
    validation_fraction : float in (0, 1), default=0.1
        Fraction of the training data held out under ``early_stopping``.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks (e.g. ``skorch.callbacks.LRScheduler``), instances or
        ``(name, callback)`` pairs; they see the same optimizer before and after growth.
        Callbacks that read the validation split (``EarlyStopping(monitor="valid_loss")``,
        ``EpochScoring(on_train=False)``) need ``early_stopping=True``, which provides one
        (``ValueError`` before training otherwise). ``EarlyStopping`` ends a fit normally,
        but not with ``load_best=True`` on a strategy that grows (``ValueError``: the best
        epoch's weights may not fit the grown network; ``early_stopping=True`` keeps the
        best grown network). A ``KeyboardInterrupt`` raised by any other callback aborts
        the call as an error does (see ``fit``).
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``; ``"auto"``: CUDA where torch sees a GPU, else the
        CPU. On a GPU the network, the sample buffer and the
        growth statistics live on the device; the metric's LDL^T factorisation runs on the
        host CPU, where it is faster at these sizes. Determinism is promised on the CPU
        only (CUDA kernels may reduce in a different order from run to run).
    n_threads : int or None, default=None
        torch's intra-op threads during ``fit``, ``partial_fit`` and prediction; the
        previous setting is restored afterwards. ``None``: torch's setting is left alone
        (by default one thread per core). Use 1 under ``GridSearchCV(n_jobs=...)`` or on a
        machine whose cores other processes use: threads that share cores spin against
        each other and slow a fit several-fold.
    warm_start : bool, default=False
        If True, ``fit`` on a fitted estimator continues training and growing the current
        network instead of starting over. A continuing fit (``partial_fit`` too) takes
        new values of the training parameters (``lr``, ``batch_size``, ``max_epochs``,
        ``alpha``, ``shuffle``, ``tol``, ``n_iter_no_change``, ``early_stopping``,
        ``validation_fraction``, ``n_threads``, ``verbose``); any other parameter changed
        since the network was built is a ``ValueError``, and leaves the model untouched.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and candidate generation. The same seed
        gives the same widths and predictions on CPU.
    verbose : int, default=0
        If > 0, print a line per epoch (loss, widths, duration).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined only when ``X`` has string column names.
    hidden_layer_sizes_ : tuple of int
        Final widths of the hidden layers.
    growth_history_ : pandas.DataFrame
        One row per growth event: ``step``, ``epoch``, ``layer``, ``n_added``, ``width``
        (after the event), ``metric`` and ``threshold`` (the trigger's values; for a
        schedule, the planned width and the width before the event).
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Epochs trained.
    net_ : skorch.NeuralNetClassifier
        The underlying skorch net; ``net_.module_`` is the torch network.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_north import GrowingMLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = GrowingMLPClassifier(hidden_layer_sizes=(16, 16), max_epochs=5,
    ...                            random_state=0).fit(X / 16, y)
    >>> len(clf.hidden_layer_sizes_)
    2
    """

    _parameter_constraints = {
        **BaseGrowingClassifier._parameter_constraints,
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "max_hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left"), None],
        "activation": [StrOptions(set(ACTIVATIONS))],
    }

    def __init__(
        self,
        strategy="north-select",
        hidden_layer_sizes=(64, 64),
        max_hidden_layer_sizes=None,
        schedule=None,
        schedule_target=None,
        schedule_end=0.75,
        gamma=None,
        trigger_rounding="floor_threshold",
        epsilon=0.01,
        n_candidates=1000,
        trigger_interval="auto",
        buffer_size=None,
        activation_source="buffer",
        growth_gate=None,
        activation="relu",
        optimizer="adam",
        optimizer_params=None,
        lr=3e-4,
        batch_size=128,
        max_epochs=100,
        alpha=0.0,
        shuffle=True,
        tol=1e-4,
        n_iter_no_change=10,
        early_stopping=False,
        validation_fraction=0.1,
        callbacks=None,
        device="cpu",
        n_threads=None,
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.strategy = strategy
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_hidden_layer_sizes = max_hidden_layer_sizes
        self.schedule = schedule
        self.schedule_target = schedule_target
        self.schedule_end = schedule_end
        self.gamma = gamma
        self.trigger_rounding = trigger_rounding
        self.epsilon = epsilon
        self.n_candidates = n_candidates
        self.trigger_interval = trigger_interval
        self.buffer_size = buffer_size
        self.activation_source = activation_source
        self.growth_gate = growth_gate
        self.activation = activation
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.alpha = alpha
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.device = device
        self.n_threads = n_threads
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

    def _widths(self):
        # Hidden layers: the initial widths, and ten times them unless capped.
        initial = _as_widths(self.hidden_layer_sizes, "hidden_layer_sizes")
        if self.max_hidden_layer_sizes is None:
            maximum = tuple(10 * w for w in initial)
        else:
            maximum = _per_layer(self.max_hidden_layer_sizes, "max_hidden_layer_sizes", initial)
        _check_maximum(
            initial, maximum, "hidden_layer_sizes", "max_hidden_layer_sizes", unit="layer"
        )
        return initial, maximum

    def _module_spec(self, X, n_classes, initial, maximum):
        return GrowableMLP, {
            "n_features": X.shape[1],
            "hidden_layer_sizes": initial,
            "n_outputs": n_classes,
            "activation": self.activation,
            "max_hidden_layer_sizes": maximum,
        }

    @property
    def coefs_(self):
        """Weight matrices, ``coefs_[i]`` of shape (n_in, n_out) as in ``MLPClassifier``."""
        return [
            layer.weight.detach().cpu().numpy().T.astype(np.float64)
            for layer in self.module_.layers
        ]

    @property
    def intercepts_(self):
        """Bias vectors, ``intercepts_[i]`` of shape (n_out,)."""
        return [
            layer.bias.detach().cpu().numpy().astype(np.float64) for layer in self.module_.layers
        ]
