"""Tests of ``sklearn_north.datasets``: the toy generator and the MNIST loader.

The loader is tested on small IDX files the tests write themselves; the network is never
touched (``urlopen`` is replaced in every test, and downloads are served from memory).
One test reads the real MNIST files from the sibling ``shared/data/mnist`` if present.
"""

import gzip
import hashlib
import io
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from sklearn_north import datasets
from sklearn_north.datasets import load_mnist, make_independent_features, read_idx

REAL_MNIST = Path(__file__).parents[2] / "shared" / "data" / "mnist"

# ----------------------------------------------------------------------------- toy data


def test_toy_shapes_and_dtypes():
    X, y = make_independent_features(300, 20, 3, random_state=0)
    assert X.shape == (300, 20) and X.dtype == np.float64
    assert y.shape == (300,) and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1}


@pytest.mark.parametrize("k", [1, 2, 8, 32, 64])
def test_toy_rank_is_the_number_of_independent_features(k):
    X, _ = make_independent_features(500, 64, k, random_state=k)
    assert np.linalg.matrix_rank(X) == k
    # The first k columns are the independent ones; the others lie in their span.
    assert np.linalg.matrix_rank(X[:, :k]) == k
    coef, *_ = np.linalg.lstsq(X[:, :k], X[:, k:], rcond=None)
    np.testing.assert_allclose(X[:, :k] @ coef, X[:, k:], atol=1e-8)
    # The independent features are standard normal.
    assert np.all(np.abs(X[:, :k].mean(axis=0)) < 0.2)
    assert np.all(np.abs(X[:, :k].std(axis=0) - 1) < 0.15)


@pytest.mark.parametrize("k", [1, 4, 32])
def test_toy_labels_are_balanced(k):
    for seed in range(3):
        _, y = make_independent_features(5000, 64, k, random_state=seed)
        assert 0.45 < y.mean() < 0.55


def test_toy_labels_follow_the_rule():
    # Without noise, y says whether the sum of the features is above its mean.
    X, y = make_independent_features(2000, 16, 4, noise=0.0, random_state=0)
    total = X.sum(axis=1)
    np.testing.assert_array_equal(y, (total > total.mean()).astype(int))
    # With the default noise (0.9 * sum + 0.1 * N(0, 1)), they seldom disagree ...
    X, y = make_independent_features(2000, 16, 4, random_state=1)
    total = X.sum(axis=1)
    agreement = np.mean(y == (total > total.mean()))
    assert 0.97 < agreement < 1
    # ... and with noise only, the labels ignore X.
    X, y = make_independent_features(2000, 16, 4, noise=1.0, random_state=2)
    total = X.sum(axis=1)
    assert 0.4 < np.mean(y == (total > total.mean())) < 0.6


@pytest.mark.parametrize("k", [1, 3, 8])
def test_toy_every_dependent_feature_mixes_every_independent_one(k):
    # Each dependent feature is sum_i c_i x_i over all k independent features, with
    # standard normal c: no coefficient is zero (a feature left out of the mix would
    # still give rank k).
    X, _ = make_independent_features(400, 64, k, random_state=10 + k)
    coef, *_ = np.linalg.lstsq(X[:, :k], X[:, k:], rcond=None)
    assert coef.shape == (k, 64 - k)
    assert np.abs(coef).min() > 1e-6, np.unravel_index(np.abs(coef).argmin(), coef.shape)
    # Standard normal coefficients (k * (64 - k) of them: 63 to 448), within 3-4 standard
    # errors of their mean and standard deviation.
    assert abs(coef.mean()) < 4 / np.sqrt(coef.size)
    assert abs(coef.std() - 1) < 3 / np.sqrt(2 * coef.size)


@pytest.mark.parametrize("noise", [0.1, 0.5, 0.8])
def test_toy_noise_share_matches_the_definition(noise):
    # One feature: r = (1 - noise) x + noise e with x, e independent N(0, 1), so r and x
    # have correlation rho = (1 - noise) / sqrt((1 - noise)^2 + noise^2), and the label
    # (r above its mean, ~0) agrees with x > 0 with probability 1 - arccos(rho) / pi.
    X, y = make_independent_features(40_000, 1, 1, noise=noise, random_state=0)
    rho = (1 - noise) / np.hypot(1 - noise, noise)
    expected = 1 - np.arccos(rho) / np.pi  # 0.965, 0.75, 0.58
    agreement = np.mean(y == (X[:, 0] > 0))
    assert abs(agreement - expected) < 0.01, (agreement, expected)


def test_toy_random_state():
    X1, y1 = make_independent_features(200, 10, 3, random_state=7)
    X2, y2 = make_independent_features(200, 10, 3, random_state=np.random.RandomState(7))
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    X3, _ = make_independent_features(200, 10, 3, random_state=8)
    assert not np.allclose(X1, X3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_independent": 65}, "n_independent must be between 1 and n_features=64"),
        ({"n_independent": 0}, "n_independent"),
        ({"n_samples": 0}, "n_samples"),
        ({"n_features": 0}, "n_features"),
        ({"noise": -0.1}, "noise"),
        ({"noise": 1.5}, "noise"),
    ],
)
def test_toy_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_independent_features(**kwargs)


# ----------------------------------------------------------------------------- IDX files


def idx_bytes(array):
    """IDX encoding of ``array``."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype.str[1:]], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, content, compress):
    path = Path(f"{path}.gz") if compress else Path(path)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-3, 0, 7], dtype=np.int8),
        np.array([[-300, 2], [5, 30000]], dtype=np.int16),
        np.array([1, -(2**31), 2**31 - 1], dtype=np.int32),
        np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        np.array([np.pi, -np.e]),
    ],
    ids=lambda a: str(a.dtype) if isinstance(a, np.ndarray) else None,
)
def test_read_idx_round_trip(tmp_path, array, compress):
    path = write(tmp_path / "data-idx", idx_bytes(array), compress)
    result = read_idx(path)
    assert result.dtype == array.dtype and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\x00\x00", "fewer than a magic number"),
        (b"\x00\x01\x08\x01" + bytes(8), "magic number 0x00010801"),
        (b"\x00\x00\x07\x01" + bytes(8), "magic number 0x00000701"),
        (b"\x00\x00\x08\x00" + bytes(8), "magic number 0x00000800"),
        (b"\x00\x00\x08\x03" + struct.pack(">2I", 5, 28), "fewer than its 16-byte header"),
        (idx_bytes(np.zeros((5, 4), np.uint8))[:-1], "truncated IDX file: 19 bytes"),
        (idx_bytes(np.zeros(3, np.int32)) + b"\x00", "trailing bytes"),
    ],
)
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_rejects_invalid_files(tmp_path, content, match, compress):
    path = write(tmp_path / "bad-idx", content, compress)
    with pytest.raises(ValueError, match=match):
        read_idx(path)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "data-idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))[:-20])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        read_idx(path)


# ----------------------------------------------------------------------------- MNIST

TRAIN_LABELS = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
TEST_LABELS = np.array([9, 2, 6], dtype=np.uint8)


def fake_images(n, offset):
    """``n`` 28x28 uint8 images with known, distinct pixels."""
    i, r, c = np.indices((n, 28, 28))
    return ((offset + 37 * i + 3 * r + c) % 256).astype(np.uint8)


FAKE_MNIST = {
    "train-images-idx3-ubyte": idx_bytes(fake_images(5, 0)),
    "train-labels-idx1-ubyte": idx_bytes(TRAIN_LABELS),
    "t10k-images-idx3-ubyte": idx_bytes(fake_images(3, 100)),
    "t10k-labels-idx1-ubyte": idx_bytes(TEST_LABELS),
}
FAKE_CHECKSUMS = {name: hashlib.md5(data).hexdigest() for name, data in FAKE_MNIST.items()}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that would open a URL (tests that download patch it again)."""

    def urlopen(*args, **kwargs):
        raise AssertionError("a test tried to open a URL")

    monkeypatch.setattr(datasets, "urlopen", urlopen)


@pytest.fixture
def fake_checksums(monkeypatch):
    """Make ``load_mnist`` accept the fake files (and only them)."""
    monkeypatch.setattr(datasets, "MNIST_CHECKSUMS", FAKE_CHECKSUMS)


def write_fake_mnist(folder, compress=True, files=FAKE_MNIST):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write(folder / name, content, compress)


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_round_trip(tmp_path, fake_checksums, compress):
    write_fake_mnist(tmp_path, compress)
    bunch = load_mnist(tmp_path)
    expected = fake_images(5, 0)
    assert bunch.data.shape == (5, 784) and bunch.data.dtype == np.float32
    np.testing.assert_array_equal(bunch.data, expected.reshape(5, 784) / np.float32(255))
    np.testing.assert_array_equal(bunch.images, expected / np.float32(255))
    assert bunch.target.dtype == np.int64
    np.testing.assert_array_equal(bunch.target, TRAIN_LABELS)
    np.testing.assert_array_equal(bunch.target_names, np.arange(10))
    suffix = ".gz" if compress else ""
    assert bunch.filenames == [
        str(tmp_path / f"train-images-idx3-ubyte{suffix}"),
        str(tmp_path / f"train-labels-idx1-ubyte{suffix}"),
    ]
    assert "MNIST" in bunch.DESCR
    assert bunch.data.flags.writeable

    X, y = load_mnist(tmp_path, subset="test", normalize=False, flatten=False, return_X_y=True)
    assert X.dtype == np.uint8 and X.shape == (3, 28, 28)
    np.testing.assert_array_equal(X, fake_images(3, 100))
    np.testing.assert_array_equal(y, TEST_LABELS)

    X, y = load_mnist(tmp_path, subset="all", normalize=False, return_X_y=True)
    np.testing.assert_array_equal(
        X, np.concatenate([fake_images(5, 0), fake_images(3, 100)]).reshape(8, 784)
    )
    np.testing.assert_array_equal(y, np.concatenate([TRAIN_LABELS, TEST_LABELS]))


def test_load_mnist_pixel_scale(tmp_path, monkeypatch):
    extremes = {
        "train-images-idx3-ubyte": idx_bytes(np.array([[[0, 255], [128, 1]]], np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(np.array([0], np.uint8)),
    }
    monkeypatch.setattr(
        datasets,
        "MNIST_CHECKSUMS",
        {name: hashlib.md5(data).hexdigest() for name, data in extremes.items()},
    )
    write_fake_mnist(tmp_path, files=extremes)
    X, _ = load_mnist(tmp_path, return_X_y=True)
    np.testing.assert_array_equal(X, np.array([[0, 1, 128 / 255, 1 / 255]], np.float32))


def test_load_mnist_default_folder(tmp_path, monkeypatch, fake_checksums):
    write_fake_mnist(tmp_path / "root" / "mnist")
    monkeypatch.setenv("SKLEARN_NORTH_DATA", str(tmp_path / "root"))
    np.testing.assert_array_equal(load_mnist().target, TRAIN_LABELS)

    write_fake_mnist(tmp_path / "home" / "sklearn_north_data" / "mnist", compress=False)
    monkeypatch.delenv("SKLEARN_NORTH_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bunch = load_mnist()
    assert bunch.filenames[0] == str(
        tmp_path / "home" / "sklearn_north_data" / "mnist" / "train-images-idx3-ubyte"
    )


@pytest.mark.parametrize(
    "name, content",
    [
        (
            "train-images-idx3-ubyte",
            b"\x00\x01\x08\x03" + FAKE_MNIST["train-images-idx3-ubyte"][4:],
        ),
        ("train-images-idx3-ubyte", FAKE_MNIST["train-images-idx3-ubyte"][:-100]),
        ("train-labels-idx1-ubyte", FAKE_MNIST["train-labels-idx1-ubyte"][:-1]),
    ],
    ids=["magic", "truncated-images", "truncated-labels"],
)
@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_rejects_corrupt_files(tmp_path, fake_checksums, name, content, compress):
    write_fake_mnist(tmp_path, compress, {**FAKE_MNIST, name: content})
    with pytest.raises(ValueError, match=r"not an IDX file|truncated IDX file"):
        load_mnist(tmp_path)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([3, 1, 4, 1], np.uint8), "expected 5 labels"),
        (np.array([3, 1, 4, 1, 10], np.uint8), "labels above 9"),
        (np.array([3, 1, 4, 1, 5], np.int32), "expected 5 labels"),
    ],
)
def test_load_mnist_rejects_non_mnist_content(tmp_path, monkeypatch, labels, match):
    files = {**FAKE_MNIST, "train-labels-idx1-ubyte": idx_bytes(labels)}
    checksums = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    monkeypatch.setattr(datasets, "MNIST_CHECKSUMS", checksums)
    write_fake_mnist(tmp_path, files=files)
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path)


def test_load_mnist_checksum_mismatch(tmp_path, monkeypatch):
    # Valid IDX files that are not the published MNIST ones.
    write_fake_mnist(tmp_path / "fake")
    published = datasets.MNIST_CHECKSUMS["train-images-idx3-ubyte"]
    with pytest.raises(OSError, match=f"MD5 checksum .* expected {published}"):
        load_mnist(tmp_path / "fake")
    # One flipped bit in an otherwise accepted file.
    monkeypatch.setattr(datasets, "MNIST_CHECKSUMS", FAKE_CHECKSUMS)
    load_mnist(tmp_path / "fake")
    pixels = fake_images(5, 0)
    pixels[2, 10, 10] ^= 1
    files = {**FAKE_MNIST, "train-images-idx3-ubyte": idx_bytes(pixels)}
    write_fake_mnist(tmp_path / "flipped", files=files)
    with pytest.raises(OSError, match="corrupt or is not the original MNIST"):
        load_mnist(tmp_path / "flipped")


def test_load_mnist_download(tmp_path, monkeypatch, fake_checksums):
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", ("https://a.invalid/m/", "https://b.invalid/"))
    served = {f"https://b.invalid/{name}.gz": gzip.compress(d) for name, d in FAKE_MNIST.items()}
    bad = gzip.compress(FAKE_MNIST["t10k-images-idx3-ubyte"][:-1])  # truncated content
    requested = []

    def urlopen(request, timeout=None):
        requested.append(request.full_url)
        if request.full_url.startswith("https://a.invalid/"):
            return io.BytesIO(bad)  # a mirror serving a corrupt file
        return io.BytesIO(served[request.full_url])

    monkeypatch.setattr(datasets, "urlopen", urlopen)
    folder = tmp_path / "new" / "mnist"
    write_fake_mnist(
        folder, files={"train-images-idx3-ubyte": FAKE_MNIST["train-images-idx3-ubyte"]}
    )

    X, y = load_mnist(folder, subset="all", normalize=False, return_X_y=True)
    np.testing.assert_array_equal(y, np.concatenate([TRAIN_LABELS, TEST_LABELS]))
    np.testing.assert_array_equal(X[5:], fake_images(3, 100).reshape(3, 784))
    # Only the missing files were fetched, each first from the corrupt mirror, then from b.
    missing = ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    assert requested == [
        url
        for name in missing
        for url in (f"https://a.invalid/m/{name}.gz", f"https://b.invalid/{name}.gz")
    ]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.gz" for name in FAKE_MNIST)
    for name in missing:
        assert gzip.decompress((folder / f"{name}.gz").read_bytes()) == FAKE_MNIST[name]

    # The next call reads the downloaded files without opening a URL.
    monkeypatch.setattr(datasets, "urlopen", None)
    np.testing.assert_array_equal(load_mnist(folder, subset="test").target, TEST_LABELS)


def test_load_mnist_offline(tmp_path, monkeypatch):
    calls = []

    def urlopen(request, timeout=None):
        calls.append(request.full_url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "urlopen", urlopen)
    folder = tmp_path / "data" / "mnist"
    with pytest.raises(OSError, match="offline") as info:
        load_mnist(folder, n_retries=1, delay=0)
    message = str(info.value)
    assert str(folder) in message and "data_home" in message
    assert "Temporary failure in name resolution" in message
    assert "train-images-idx3-ubyte.gz" in message
    assert len(calls) == 2 * len(datasets.MNIST_MIRRORS)  # one retry round
    assert list(folder.iterdir()) == []  # no partial file left behind


def test_load_mnist_missing_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        load_mnist(tmp_path / "empty", subset="test", download_if_missing=False)
    assert str(tmp_path / "empty") in str(info.value)
    assert not (tmp_path / "empty").exists()


def test_load_mnist_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="subset"):
        load_mnist(tmp_path, subset="validation")
    with pytest.raises(ValueError, match="n_retries"):
        load_mnist(tmp_path, n_retries=-1)


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="no MNIST copy in ../shared/data/mnist")
def test_load_real_mnist():
    # The checksum table is that of the real files (uncompressed).
    for name, md5 in datasets.MNIST_CHECKSUMS.items():
        content = gzip.decompress((REAL_MNIST / f"{name}.gz").read_bytes())
        assert hashlib.md5(content).hexdigest() == md5
    expected_counts = {
        "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    }
    for subset, n_samples in [("train", 60000), ("test", 10000)]:
        X, y = load_mnist(REAL_MNIST, subset=subset, download_if_missing=False, return_X_y=True)
        assert X.shape == (n_samples, 784) and X.dtype == np.float32
        assert X.min() == 0 and X.max() == 1
        assert y.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(y, minlength=10), expected_counts[subset])
    np.testing.assert_array_equal(y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])  # test set
