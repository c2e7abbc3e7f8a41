"""Sparse input (SciPy CSR/CSC): densified a mini-batch (or a buffer) at a time, never as a
whole, and trained on exactly as its dense array."""

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.datasets import load_digits

from sklearn_north import GrowingMLPClassifier
from sklearn_north._batches import BatchIterator
from sklearn_north.growth import ActivationTrigger, GrowthCallback, HeldOutGate, SelectInit
from sklearn_north.growth.gate import held_out_loss

_SPARSE_CLASSES = [
    sparse.csr_matrix,
    sparse.csr_array,
    sparse.csc_matrix,
    sparse.csc_array,
    sparse.coo_matrix,
    sparse.coo_array,
]


@pytest.fixture
def densified(monkeypatch):
    """The number of rows of every ``toarray()`` (``todense()`` goes through it) of a
    SciPy sparse matrix or array while the test runs."""
    rows = []
    for cls in _SPARSE_CLASSES:

        def toarray(self, *args, _original=cls.toarray, **kwargs):
            rows.append(self.shape[0])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "toarray", toarray)
    return rows


def _two_classes(n, seed=0):
    """Mostly-zero inputs (half the entries) with a linear two-class target."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    X[rng.random(X.shape) < 0.5] = 0
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


# -- the growth engine, without the estimator ----------------------------------------------


def _engine_fit(make_growth_net, X, y, held):
    callback = GrowthCallback(
        ActivationTrigger(),
        SelectInit(n_candidates=20),
        random_state=0,
        gate=HeldOutGate(check_interval=2),
        gate_data=held,
    )
    net = make_growth_net(
        callback, max_hidden=(12, 12), iterator_train=BatchIterator, iterator_valid=BatchIterator
    )
    return net.set_params(iterator_train__shuffle=True).fit(X, y)


def test_growth_callback_and_gate_on_sparse_input_equal_dense(make_growth_net, densified):
    X, y = _two_classes(140)
    X_sparse = sparse.csr_matrix(X)
    fits = [
        _engine_fit(make_growth_net, data[:120], y[:120], (data[120:], y[120:]))
        for data in (X, X_sparse)
    ]
    dense, ours = (dict(net.callbacks_)["growth"] for net in fits)
    assert dense.events_  # it grew
    assert ours.events_ == dense.events_
    assert ours.gate_.losses_ == dense.gate_.losses_ and len(dense.gate_.losses_) > 1
    assert torch.equal(ours.buffer_.samples(), dense.buffer_.samples())
    for a, b in zip(fits[0].module_.parameters(), fits[1].module_.parameters()):
        assert torch.equal(a, b)
    # Batches (16 rows), the first buffer (24 = 2 * 12 rows), the held-out slice (20): never
    # the 120 training rows at once.
    assert densified and max(densified) <= 24


def test_held_out_loss_on_sparse_input_equals_dense_across_chunks(make_growth_net):
    # More rows than one chunk of 1024: the sparse rows are densified chunk by chunk.
    X, y = _two_classes(1100, seed=1)
    net = make_growth_net(GrowthCallback(ActivationTrigger(), SelectInit())).initialize()
    expected = held_out_loss(net, X, y)
    for to_sparse in (sparse.csr_matrix, sparse.csr_array):
        assert held_out_loss(net, to_sparse(X), y) == expected


# -- the estimator ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16, y[:300]


_PARAMS = dict(
    hidden_layer_sizes=(8, 8),
    max_hidden_layer_sizes=24,
    n_candidates=20,
    batch_size=32,
    max_epochs=2,
    lr=1e-2,
    random_state=0,
)


def _assert_same_fit(ours, dense, X):
    assert ours.hidden_layer_sizes_ == dense.hidden_layer_sizes_
    assert ours.loss_curve_ == dense.loss_curve_
    assert ours.growth_history_.equals(dense.growth_history_)
    for a, b in zip(ours.module_.parameters(), dense.module_.parameters()):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(ours.predict_proba(X), dense.predict_proba(X))


@pytest.mark.parametrize("strategy", ["north-select", "gradmax"])
@pytest.mark.parametrize("to_sparse", [sparse.csr_matrix, sparse.csc_matrix, sparse.csr_array])
def test_a_fit_on_sparse_input_is_the_fit_on_its_dense_array(digits, strategy, to_sparse):
    X, y = digits
    dense = GrowingMLPClassifier(strategy=strategy, **_PARAMS).fit(X, y)
    ours = GrowingMLPClassifier(strategy=strategy, **_PARAMS).fit(to_sparse(X), y)
    assert dense.hidden_layer_sizes_ != (8, 8)  # it grew
    _assert_same_fit(ours, dense, X)
    # Prediction on sparse input: the same as on the dense array.
    X_sparse = to_sparse(X)
    np.testing.assert_array_equal(ours.predict_proba(X_sparse), dense.predict_proba(X))
    np.testing.assert_array_equal(ours.predict(X_sparse), dense.predict(X))


@pytest.mark.parametrize(
    "extra",
    [
        {"growth_gate": HeldOutGate(check_interval=2)},
        {"early_stopping": True, "n_iter_no_change": 1, "max_epochs": 3},
    ],
    ids=["gate", "early_stopping"],
)
def test_held_out_splits_of_sparse_input_are_those_of_the_dense_array(digits, extra):
    X, y = digits
    params = {**_PARAMS, **extra}
    dense = GrowingMLPClassifier(**params).fit(X, y)
    ours = GrowingMLPClassifier(**params).fit(sparse.csr_matrix(X), y)
    _assert_same_fit(ours, dense, X)
    assert ours.validation_scores_ == dense.validation_scores_
    if "growth_gate" in extra:
        assert ours.net_.history[:, "held_out_loss"] == dense.net_.history[:, "held_out_loss"]


def test_partial_fit_on_sparse_input_is_partial_fit_on_its_dense_array(digits):
    X, y = digits
    dense, ours = GrowingMLPClassifier(**_PARAMS), GrowingMLPClassifier(**_PARAMS)
    for part in (slice(0, 150), slice(150, 300)):
        dense.partial_fit(X[part], y[part], classes=np.unique(y))
        ours.partial_fit(sparse.csr_matrix(X[part]), y[part], classes=np.unique(y))
        _assert_same_fit(ours, dense, X)


def test_nothing_densifies_the_whole_matrix(digits, densified):
    X, y = digits
    gate = HeldOutGate(check_interval=2)
    clf = GrowingMLPClassifier(**{**_PARAMS, "growth_gate": gate, "early_stopping": True})
    clf.fit(sparse.csc_matrix(X), y)
    clf.partial_fit(sparse.csr_matrix(X), y)
    clf.predict_proba(sparse.csr_array(X))
    # The largest pieces: a batch (32 rows) and the growth buffer (2 * 24 rows).
    assert densified and max(densified) <= 48 < len(X)
