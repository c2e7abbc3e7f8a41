"""Mini-batches cut from the whole array at once, for skorch's ``iterator_train/valid``.

torch's ``DataLoader`` indexes a dataset one sample at a time and stacks the rows: on MNIST
(batch 512, 784 features) that per-sample Python loop took about half the wall time of a
small MLP's training step. ``BatchIterator`` indexes the arrays with a whole batch of
indices (one NumPy fancy-indexing call) and yields the same batches in the same order as a
``DataLoader`` without workers would.

Sparse inputs (SciPy CSR/CSC) are densified one batch at a time, never as a whole.
"""

import math

import numpy as np
import torch
from scipy import sparse
from skorch.dataset import Dataset
from torch.utils.data import Subset


class BatchIterator:
    """Iterate over a skorch ``Dataset`` in mini-batches, one indexing call per batch.

    Same batches, in the same order, as ``torch.utils.data.DataLoader(dataset, batch_size,
    shuffle, drop_last)`` with no workers: it draws the same two numbers from torch's
    global generator when an iteration starts (the loader's base seed, then the shuffling
    seed), so a seeded training run is unchanged. A skorch ``Dataset`` of NumPy arrays
    or of a SciPy sparse ``X`` (what the estimators build), or a torch ``Subset`` of one
    (skorch's ``ValidSplit``), is indexed directly and NumPy arrays come out (skorch
    converts them to tensors): a sparse ``X`` is densified batch by batch (``toarray()``:
    C order, its dtype), so the batches equal those of ``X.toarray()`` without the whole
    matrix ever being dense. Any other dataset is indexed with ``dataset[indices]``.

    Parameters
    ----------
    dataset : skorch.dataset.Dataset
        Any dataset whose ``__getitem__`` accepts an integer array.
    batch_size : int, default=128
    shuffle : bool, default=False
        A new random order at every iteration.
    drop_last : bool, default=False
        Leave out the last, incomplete batch.
    """

    def __init__(self, dataset, batch_size=128, shuffle=False, drop_last=False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last

    def __len__(self):
        n = len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        # DataLoader's base seed for its workers: drawn, unused (no workers), so that the
        # global generator is where a DataLoader would have left it.
        torch.empty((), dtype=torch.int64).random_()
        order = None
        if self.shuffle:
            # RandomSampler's seed and permutation.
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
        take = self._indexer()
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            yield take(order[lo:hi] if order is not None else slice(lo, hi))

    def _indexer(self):
        dataset, rows = _unwrap_subsets(self.dataset)
        X, y = getattr(dataset, "X", None), getattr(dataset, "y", None)
        if type(dataset) is Dataset and _is_rows(X) and (y is None or _is_array(y)):
            # skorch's own indexing turns an index array into a list and type-checks
            # every element (~0.6 ms per array for 512 rows), and cannot densify a sparse
            # batch of more than one row.
            if sparse.issparse(X) and X.format != "csr":
                X = X.tocsr()  # the format whose rows are cheap to take (no densifying)

            def take(i):
                if rows is not None:
                    i = rows[i]
                X_batch = X[i]
                if sparse.issparse(X_batch):
                    X_batch = X_batch.toarray()
                return dataset.transform(X_batch, None if y is None else y[i])

            return take
        dataset = self.dataset
        return lambda i: dataset[np.arange(len(dataset))[i] if isinstance(i, slice) else i]


def _unwrap_subsets(dataset):
    """The dataset under any torch ``Subset`` wrappers and the rows of it they select
    (``None``: all, in order): ``Subset(d, rows)[i]`` is ``d[rows[i]]``."""
    rows = None
    while isinstance(dataset, Subset):
        indices = np.asarray(dataset.indices, dtype=np.intp)
        rows = indices if rows is None else indices[rows]
        dataset = dataset.dataset
    return dataset, rows


def _is_array(a):
    return isinstance(a, np.ndarray) and a.ndim >= 1


def _is_rows(X):
    """Whether ``X`` is indexed by rows directly: a NumPy array or a 2-D sparse matrix."""
    return _is_array(X) or (sparse.issparse(X) and X.ndim == 2)
