"""Small shared fixtures for the growth-engine tests."""

import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from sklearn_north.nn import GrowableMLP


@pytest.fixture
def make_mlp():
    """Factory of seeded ``GrowableMLP`` networks (float32, CPU), optionally perturbed as if
    trained (``trained=True`` or a scale)."""

    def make(
        n_features=6, hidden=(5, 4), n_outputs=3, activation="relu", seed=0, trained=None,
        **kwargs,
    ):  # fmt: skip
        torch.manual_seed(seed)
        module = GrowableMLP(n_features, hidden, n_outputs, activation=activation, **kwargs)
        if trained:
            # Move every weight and bias away from its initial value, as training would
            # (``trained``: the scale of the perturbation; True means 0.3).
            scale = 0.3 if trained is True else trained
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(scale * torch.randn(p.shape, generator=g))
        return module

    return make


@pytest.fixture
def make_growth_net():
    """Factory of seeded skorch classifiers around a ``GrowableMLP`` with ``callback`` as
    their ``"growth"`` callback: Adam lr 0.01, no validation split, batches in order."""

    def make(
        callback, n_features=6, hidden=(3, 3), max_hidden=(6, 5), max_epochs=2, batch_size=16,
        **kwargs,
    ):  # fmt: skip
        torch.manual_seed(0)
        return NeuralNetClassifier(
            GrowableMLP,
            module__n_features=n_features,
            module__hidden_layer_sizes=hidden,
            module__n_outputs=2,
            module__max_hidden_layer_sizes=max_hidden,
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.Adam,
            lr=0.01,
            batch_size=batch_size,
            max_epochs=max_epochs,
            train_split=None,
            iterator_train__shuffle=False,
            callbacks=[("growth", callback)],
            verbose=0,
            **kwargs,
        )

    return make


@pytest.fixture
def inputs():
    """Factory of seeded standard-normal input matrices."""

    def make(n_samples=64, n_features=6, seed=1):
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n_samples, n_features, generator=generator)

    return make


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run the tests with one intra-op torch thread (restored afterwards).

    The tests use tiny tensors: a second thread only adds synchronisation, which on a
    loaded 2-core machine makes them over ten times slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
