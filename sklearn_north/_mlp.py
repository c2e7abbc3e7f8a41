"""``GrowingMLPClassifier``: a multi-layer perceptron that grows its hidden layers."""

import numpy as np
from sklearn.utils._param_validation import StrOptions

from ._base import BaseGrowingClassifier
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
    strategy : {"north-select", "north-pre", "north-random", "north-weight", "static"}, \
default="north-select"
        Trigger and initializer pair (paper, Table 1). ``"static"`` never grows.
    hidden_layer_sizes : int or tuple of int, default=(64, 64)
        Initial width of each hidden layer.
    max_hidden_layer_sizes : int, tuple of int or None, default=None
        Maximum width of each hidden layer (an int applies to every layer). ``None``: ten
        times the initial width.
    gamma : float in (0, 1] or None, default=None
        Trigger threshold: the fraction of a layer's initial orthogonality metric it must
        keep. ``None``: 0.97 for activation triggers, 0.99 for the weight trigger.
    epsilon : float, default=0.01
        Singular values (of normalised activations or weights) above ``epsilon`` count
        towards the effective dimension.
    n_candidates : int, default=1000
        Candidate neurons scored per growth event by ``north-select`` and ``north-pre``.
    trigger_interval : int, default=1
        Evaluate the triggers every this many optimizer steps (1 = the paper).
    buffer_size : int or None, default=None
        Recent training samples on which activations are measured. ``None``: twice the
        largest maximum width (the metric needs more samples than neurons).
    activation : {"relu", "tanh", "logistic", "identity"}, default="relu"
    optimizer : {"adam", "adamw", "sgd", "rmsprop"} or torch optimizer class, default="adam"
    optimizer_params : dict or None, default=None
        Extra keyword arguments of the optimizer (e.g. ``{"momentum": 0.9}``).
    lr : float, default=3e-4
        Learning rate (the paper's 3e-4; at 3e-3 almost nothing grows).
    batch_size : int, default=128
    max_epochs : int, default=100
        Epochs per ``fit``; ``partial_fit`` trains one epoch.
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks (e.g. ``skorch.callbacks.LRScheduler``); they see the same
        optimizer before and after growth.
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``.
    warm_start : bool, default=False
        If True, ``fit`` on a fitted estimator continues training and growing the current
        network instead of starting over.
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
        (after the event), ``metric`` and ``threshold`` (the trigger's values).
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
        "activation": [StrOptions(set(ACTIVATIONS))],
    }

    def __init__(
        self,
        strategy="north-select",
        hidden_layer_sizes=(64, 64),
        max_hidden_layer_sizes=None,
        gamma=None,
        epsilon=0.01,
        n_candidates=1000,
        trigger_interval=1,
        buffer_size=None,
        activation="relu",
        optimizer="adam",
        optimizer_params=None,
        lr=3e-4,
        batch_size=128,
        max_epochs=100,
        callbacks=None,
        device="cpu",
        warm_start=False,
        random_state=None,
        verbose=0,
    ):
        self.strategy = strategy
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_hidden_layer_sizes = max_hidden_layer_sizes
        self.gamma = gamma
        self.epsilon = epsilon
        self.n_candidates = n_candidates
        self.trigger_interval = trigger_interval
        self.buffer_size = buffer_size
        self.activation = activation
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.callbacks = callbacks
        self.device = device
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose

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
