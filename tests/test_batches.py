import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.datasets import load_digits
from skorch.dataset import Dataset
from torch.utils.data import DataLoader, Subset

import sklearn_north._base as base
from sklearn_north import GrowingMLPClassifier
from sklearn_north._batches import BatchIterator


class _OwnDataset(Dataset):
    """A subclass may index differently: BatchIterator goes through its __getitem__."""


def _dataset(n=23, y=True, kind=Dataset):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    return kind(X, np.arange(n) if y else None)


@pytest.mark.parametrize("kind", [Dataset, _OwnDataset])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [1, 5, 23, 40])
def test_same_batches_and_generator_state_as_dataloader(kind, shuffle, drop_last, batch_size):
    dataset = _dataset(kind=kind)
    torch.manual_seed(3)
    ours = [
        (torch.as_tensor(X), torch.as_tensor(y))
        for X, y in BatchIterator(dataset, batch_size, shuffle=shuffle, drop_last=drop_last)
    ]
    after_ours = torch.get_rng_state()
    torch.manual_seed(3)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
    theirs = list(loader)
    assert torch.equal(after_ours, torch.get_rng_state())
    assert len(ours) == len(theirs) == len(loader)
    assert len(ours) == len(BatchIterator(dataset, batch_size, drop_last=drop_last))
    for (X, y), (X_ref, y_ref) in zip(ours, theirs):
        assert torch.equal(X, X_ref)
        assert torch.equal(y, y_ref)


def test_each_iteration_reshuffles():
    it = BatchIterator(_dataset(50), batch_size=50, shuffle=True)
    torch.manual_seed(0)
    first, second = (next(iter(it))[1] for _ in range(2))
    assert sorted(first) == sorted(second) == list(range(50))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("kind", [Dataset, _OwnDataset])
def test_without_targets_yields_the_rows_in_order(kind):
    batches = BatchIterator(_dataset(y=False, kind=kind), batch_size=4)
    X = np.concatenate([np.asarray(X) for X, _ in batches])
    np.testing.assert_array_equal(X, _dataset().X)


def test_rejects_a_non_positive_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        BatchIterator(_dataset(), batch_size=0)


def test_a_growing_fit_is_the_one_torchs_dataloader_would_give(monkeypatch):
    # The estimators cut batches with BatchIterator; with torch's DataLoader in its place
    # (same batches, row by row) the grown network must be the same, bit for bit.
    X, y = load_digits(return_X_y=True)
    X = X[:400] / 16
    params = dict(
        strategy="north-select",
        hidden_layer_sizes=(16, 16),
        max_hidden_layer_sizes=48,
        batch_size=50,
        max_epochs=3,
        n_candidates=20,
        random_state=0,
    )
    ours = GrowingMLPClassifier(**params).fit(X, y[:400])
    monkeypatch.setattr(base, "BatchIterator", DataLoader)
    theirs = GrowingMLPClassifier(**params).fit(X, y[:400])
    assert ours.hidden_layer_sizes_ == theirs.hidden_layer_sizes_
    assert ours.hidden_layer_sizes_ != (16, 16)  # it grew
    for a, b in zip(ours.module_.parameters(), theirs.module_.parameters()):
        assert torch.equal(a, b)


_SPARSE_FORMATS = [sparse.csr_matrix, sparse.csr_array, sparse.csc_matrix, sparse.csc_array]


def _sparse_pair(n=23, to_sparse=sparse.csr_matrix):
    """A dense float32 matrix with many zeros and the same matrix in ``to_sparse``."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    X[X < 0.3] = 0
    return X, to_sparse(X)


def _batches(dataset, batch_size, shuffle, seed=3):
    torch.manual_seed(seed)
    batches = list(BatchIterator(dataset, batch_size, shuffle=shuffle))
    return batches, torch.get_rng_state()


@pytest.mark.parametrize("to_sparse", _SPARSE_FORMATS)
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 5, 40])
@pytest.mark.parametrize("with_y", [True, False])
def test_sparse_X_yields_the_dense_arrays_batches(to_sparse, shuffle, batch_size, with_y):
    X, X_sparse = _sparse_pair(to_sparse=to_sparse)
    y = np.arange(len(X)) if with_y else None
    dense, dense_state = _batches(Dataset(X, y), batch_size, shuffle)
    ours, our_state = _batches(Dataset(X_sparse, y), batch_size, shuffle)
    assert torch.equal(dense_state, our_state)
    assert len(ours) == len(dense) == -(-len(X) // batch_size)
    for (Xb, yb), (Xb_ref, yb_ref) in zip(ours, dense):
        # Dense NumPy rows, as for the dense array (skorch turns them into tensors).
        assert type(Xb) is np.ndarray and Xb.dtype == np.float32 and Xb.flags.c_contiguous
        np.testing.assert_array_equal(Xb, Xb_ref)
        if with_y:
            np.testing.assert_array_equal(yb, yb_ref)
    if shuffle and batch_size < len(X):  # the order really was shuffled
        assert not np.array_equal(np.concatenate([Xb for Xb, _ in ours]), X)


@pytest.mark.parametrize("to_sparse", [None, sparse.csr_matrix, sparse.csc_array])
@pytest.mark.parametrize("shuffle", [False, True])
def test_a_subset_yields_the_batches_torchs_dataloader_would_give(to_sparse, shuffle):
    # skorch's ValidSplit wraps the dataset in torch Subsets: indexed through their rows,
    # in one call (skorch's Dataset cannot index several rows of a sparse matrix at once).
    X, _ = _sparse_pair(n=30)
    y = np.arange(30)
    rows = np.random.default_rng(0).permutation(30)[:21]
    inner = Subset(Dataset(X if to_sparse is None else to_sparse(X), y), rows)
    nested = Subset(inner, list(range(20, 1, -2)))
    reference = Subset(Subset(Dataset(X, y), rows), list(range(20, 1, -2)))
    ours, our_state = _batches(nested, 3, shuffle)
    torch.manual_seed(3)
    theirs = list(DataLoader(reference, batch_size=3, shuffle=shuffle))
    assert torch.equal(our_state, torch.get_rng_state())
    assert len(ours) == len(theirs) == 4
    for (Xb, yb), (Xb_ref, yb_ref) in zip(ours, theirs):
        assert torch.equal(torch.as_tensor(Xb), Xb_ref)
        assert torch.equal(torch.as_tensor(yb), yb_ref)
