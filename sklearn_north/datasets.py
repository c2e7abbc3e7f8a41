"""Data sets of the paper's experiments: the toy generator and an MNIST loader.

- :func:`make_independent_features`: the toy classification task of Maile et al. (2022),
  section 4.1, whose inputs have a chosen number of independent features (their rank).
- :func:`load_mnist`: MNIST from the four original IDX files, read from a folder and, for
  users without a copy, downloaded from a list of mirrors with checksum verification.
- :func:`read_idx`: the IDX reader behind it, for any IDX file (e.g. Fashion-MNIST).
"""

import gzip
import hashlib
import math
import os
import shutil
import struct
import time
import zlib
from numbers import Integral, Real
from pathlib import Path
from tempfile import NamedTemporaryFile
from urllib.request import Request, urlopen

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

__all__ = [
    "MNIST_CHECKSUMS",
    "MNIST_MIRRORS",
    "load_mnist",
    "make_independent_features",
    "read_idx",
]

# --------------------------------------------------------------------------- toy data


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_features": [Interval(Integral, 1, None, closed="left")],
        "n_independent": [Interval(Integral, 1, None, closed="left")],
        "noise": [Interval(Real, 0, 1, closed="both")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_independent_features(
    n_samples=5000, n_features=64, n_independent=8, *, noise=0.1, random_state=None
):
    """Generate the paper's toy binary task, whose inputs have rank ``n_independent``.

    The toy data of Maile et al. (2022), section 4.1, as in the authors' code: the first
    ``n_independent`` (k) features are independent standard normal; each of the other
    ``n_features - k`` is a random linear combination of those k, with standard normal
    coefficients, so that ``X`` has rank k. The response sums all the features plus
    Gaussian noise,

    ``r = (1 - noise) * X.sum(axis=1) + noise * N(0, 1)``

    (``0.9 * sum + 0.1 * N(0, 1)`` at the default ``noise=0.1``), and the label says
    whether ``r`` is above its mean over the samples. The classes are therefore balanced
    up to sampling noise. The paper uses 5000 samples, 64 features and
    k in {1, 2, 4, 8, 16, 32}, split 80/20.

    Parameters
    ----------
    n_samples : int, default=5000
        Number of samples.
    n_features : int, default=64
        Number of features.
    n_independent : int, default=8
        Number of independent features k, between 1 and ``n_features``: the rank of
        ``X`` (when ``n_samples >= n_independent``).
    noise : float in [0, 1], default=0.1
        Share of noise in the response (the reference code's ``noiseportion``): 0 makes
        the label a deterministic function of ``X``, 1 makes it independent of ``X``.
    random_state : int, RandomState instance or None, default=None
        Seed of the samples, the combination coefficients and the noise. Pass an int for
        reproducible output across calls.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float64
        Inputs; the first ``n_independent`` columns are the independent features.
    y : ndarray of shape (n_samples,), dtype int64
        Labels, 0 or 1.

    References
    ----------
    K. Maile, E. Rachelson, H. Luga, D. G. Wilson, "When, where, and how to add new
    neurons to ANNs", AutoML Conference 2022 (section 4.1).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_north.datasets import make_independent_features
    >>> X, y = make_independent_features(1000, 64, 4, random_state=0)
    >>> X.shape, int(np.linalg.matrix_rank(X)), round(float(y.mean()), 2)
    ((1000, 64), 4, 0.51)
    """
    if n_independent > n_features:
        raise ValueError(
            f"n_independent must be between 1 and n_features={n_features}; "
            f"got n_independent={n_independent}."
        )
    rng = check_random_state(random_state)
    independent = rng.standard_normal((n_samples, n_independent))
    mixing = rng.standard_normal((n_independent, n_features - n_independent))
    X = np.hstack([independent, independent @ mixing])
    response = (1 - noise) * X.sum(axis=1) + noise * rng.standard_normal(n_samples)
    y = (response > response.mean()).astype(np.int64)
    return X, y


# --------------------------------------------------------------------------- IDX files

# IDX type code (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _read_bytes(path):
    """Content of ``path``, gunzipped if it is gzip-compressed (by content, not name)."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({exc}).") from exc
    return data


def _parse_idx(data, source):
    """Array stored in the IDX bytes ``data`` (read-only view); ``source`` names them."""
    if len(data) < 4:
        raise ValueError(
            f"{source}: not an IDX file: {len(data)} bytes, fewer than a magic number."
        )
    code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{source}: not an IDX file: magic number 0x{data[:4].hex()}, expected "
            "0x0000TTNN with a type code TT in {08, 09, 0b, 0c, 0d, 0e} and NN >= 1 "
            "dimensions."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{source}: truncated IDX file: {len(data)} bytes, fewer than its "
            f"{header}-byte header ({ndim} dimensions)."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        problem = "truncated IDX file" if actual < expected else "IDX file with trailing bytes"
        raise ValueError(
            f"{source}: {problem}: {actual} bytes of data, expected {expected} for "
            f"shape {shape} of {dtype.name}."
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header)
    return array.reshape(shape)


def read_idx(path):
    """Read an IDX file, gzip-compressed or not, into a numpy array.

    IDX is the format of the MNIST files (and of Fashion-MNIST, EMNIST, ...): a magic
    number ``0x0000TTNN`` (type code TT, NN dimensions), NN big-endian uint32 sizes, then
    the values in C order, big-endian.

    Parameters
    ----------
    path : str or path-like
        The file; gzip compression is recognised from the content, whatever the name.

    Returns
    -------
    array : ndarray
        The values, in native byte order, with the dtype of the file's type code
        (uint8, int8, int16, int32, float32 or float64) and its shape.

    Raises
    ------
    ValueError
        If the file is not a valid IDX file: wrong magic number, truncated, trailing
        bytes, or a corrupt gzip stream.
    """
    array = _parse_idx(_read_bytes(path), str(path))
    return array.astype(array.dtype.newbyteorder("="))


# --------------------------------------------------------------------------- MNIST

#: Base URLs from which :func:`load_mnist` downloads missing MNIST files, tried in order;
#: each serves the four ``<name>.gz`` files.
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: MNIST file name -> MD5 of its uncompressed content (the published originals).
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# subset -> (images file, labels file) pairs, in the order they are concatenated.
_MNIST_SUBSETS = {
    "train": (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),),
    "test": (("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),),
}
_MNIST_SUBSETS["all"] = _MNIST_SUBSETS["train"] + _MNIST_SUBSETS["test"]

_DOWNLOAD_TIMEOUT = 60  # seconds, per connection attempt

_MNIST_DESCR = """\
MNIST database of handwritten digits (Y. LeCun, C. Cortes, C. J. C. Burges).

70,000 grey-level images of 28x28 pixels, each a handwritten digit 0-9, centred by centre
of mass: 60,000 for training ("train") and 10,000 for testing ("test"), written by
disjoint sets of writers. Pixel values: 0 (background) to 255 (ink), scaled to [0, 1]
unless normalize=False. Read from the four original IDX files, whose uncompressed MD5
checksums are verified.
"""


def _mnist_home(data_home):
    """Folder of the MNIST files: ``data_home``, else ``$SKLEARN_NORTH_DATA/mnist``,
    else ``~/sklearn_north_data/mnist``."""
    if data_home is None:
        root = os.environ.get("SKLEARN_NORTH_DATA") or os.path.join("~", "sklearn_north_data")
        return Path(root).expanduser() / "mnist"
    return Path(data_home).expanduser()


def _find(folder, name):
    """Path of ``name`` or ``name.gz`` in ``folder``, or None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _check_md5(data, name, source):
    """Raise OSError unless the MD5 of ``data`` is the published one of ``name``."""
    expected = MNIST_CHECKSUMS[name]
    actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise OSError(
            f"{source}: the MD5 checksum of its uncompressed content is {actual}, expected "
            f"{expected} (the published {name}): the file is corrupt or is not the "
            "original MNIST. Delete it to download it again, or replace it."
        )


def _load_mnist_file(path, name):
    """Checked array of the MNIST file ``name`` stored at ``path`` (read-only)."""
    data = _read_bytes(path)
    array = _parse_idx(data, str(path))
    _check_md5(data, name, str(path))
    return array


def _download(name, folder, n_retries, delay):
    """Download ``name.gz`` into ``folder`` from the first mirror that serves it intact."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.gz"
    errors = []
    for attempt in range(n_retries + 1):
        if attempt:
            time.sleep(delay)
        for base in MNIST_MIRRORS:
            url = f"{base}{name}.gz"
            temp = NamedTemporaryFile(prefix=f"{name}.gz.part_", dir=folder, delete=False)
            try:
                with temp:
                    request = Request(url, headers={"User-Agent": "sklearn-north"})
                    with urlopen(request, timeout=_DOWNLOAD_TIMEOUT) as response:
                        shutil.copyfileobj(response, temp)
                _load_mnist_file(temp.name, name)  # raises unless intact
            except (OSError, ValueError) as exc:
                os.unlink(temp.name)
                errors.append(f"{url}: {exc}")
                continue
            except BaseException:
                os.unlink(temp.name)
                raise
            os.replace(temp.name, target)
            return target
    all_files = ", ".join(f"{file}.gz" for file in MNIST_CHECKSUMS)
    raise OSError(
        f"Could not download the MNIST file {name}.gz from any mirror; is this machine "
        "offline? Errors:\n  " + "\n  ".join(errors) + "\nGet the MNIST files "
        f"({all_files}; gzip-compressed or not) elsewhere and put "
        f"them in {folder}, or pass the folder that holds them as data_home (or set "
        "SKLEARN_NORTH_DATA to a folder with a 'mnist' subfolder)."
    )


@validate_params(
    {
        "data_home": [str, os.PathLike, None],
        "subset": [StrOptions({"train", "test", "all"})],
        "normalize": ["boolean"],
        "flatten": ["boolean"],
        "return_X_y": ["boolean"],
        "download_if_missing": ["boolean"],
        "n_retries": [Interval(Integral, 0, None, closed="left")],
        "delay": [Interval(Real, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def load_mnist(
    data_home=None,
    *,
    subset="train",
    normalize=True,
    flatten=True,
    return_X_y=False,
    download_if_missing=True,
    n_retries=1,
    delay=1.0,
):
    """Load the MNIST handwritten digits (classification, 10 classes).

    =================   ======================
    Classes                                 10
    Samples total       70000 (60000 + 10000)
    Dimensionality      784 (28 x 28)
    Features            pixels in [0, 1] (float32), or 0-255 (uint8)
    =================   ======================

    Reads the four original IDX files, ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each gzip-compressed (``<name>.gz``, as distributed) or
    not, from the folder ``data_home``, and checks the MD5 of their uncompressed content
    against the published checksums (``MNIST_CHECKSUMS``). Files missing there are
    downloaded, if ``download_if_missing``, from the mirrors of ``MNIST_MIRRORS``, checked
    before they are moved into place.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder that holds the MNIST files (and receives the downloaded ones). ``None``:
        ``$SKLEARN_NORTH_DATA/mnist`` if the environment variable ``SKLEARN_NORTH_DATA``
        is set, else ``~/sklearn_north_data/mnist``.
    subset : {"train", "test", "all"}, default="train"
        The 60,000 training images, the 10,000 test images, or all 70,000 (training
        images first).
    normalize : bool, default=True
        If True, pixels are float32 in [0, 1] (the raw values divided by 255); if False,
        the raw uint8 values 0-255.
    flatten : bool, default=True
        If True, ``data`` has one row of 784 pixels per image (row by row); if False, its
        shape is (n_samples, 28, 28).
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    download_if_missing : bool, default=True
        If False, raise a ``FileNotFoundError`` when files are missing instead of
        downloading them.
    n_retries : int, default=1
        Number of further rounds over all the mirrors when every mirror failed.
    delay : float, default=1.0
        Seconds between two rounds.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        data : ndarray of shape (n_samples, 784) or (n_samples, 28, 28)
            The images, float32 in [0, 1] or uint8 (see ``normalize``, ``flatten``).
        images : ndarray of shape (n_samples, 28, 28)
            The same images as 2-D arrays (a view of ``data``).
        target : ndarray of shape (n_samples,), dtype int64
            The digits, 0 to 9.
        target_names : ndarray of shape (10,)
            The classes, 0 to 9.
        filenames : list of str
            Paths of the files read.
        DESCR : str
            Description of the data set.

    (data, target) : tuple if ``return_X_y`` is True
        The arrays ``data`` and ``target`` described above.

    Raises
    ------
    FileNotFoundError
        If files are missing and ``download_if_missing`` is False.
    OSError
        If a download failed on every mirror (e.g. offline: the message says where to
        put the files), or if a file's MD5 checksum differs from the published one.
    ValueError
        If a file is not a valid IDX file (wrong magic number, truncated, corrupt gzip)
        or its content is not MNIST-shaped.

    Examples
    --------
    >>> from sklearn_north.datasets import load_mnist
    >>> X, y = load_mnist(return_X_y=True)  # doctest: +SKIP
    >>> X.shape, X.dtype, y[:5]  # doctest: +SKIP
    ((60000, 784), dtype('float32'), array([5, 0, 4, 1, 9]))
    """
    folder = _mnist_home(data_home)
    names = [name for pair in _MNIST_SUBSETS[subset] for name in pair]
    paths = {name: _find(folder, name) for name in names}
    missing = [name for name in names if paths[name] is None]
    if missing and not download_if_missing:
        raise FileNotFoundError(
            f"MNIST files not found in {folder}: {', '.join(missing)} (or their .gz). "
            "Put them there, pass the folder that holds them as data_home, or set "
            "download_if_missing=True to download them."
        )
    for name in missing:
        paths[name] = _download(name, folder, n_retries, delay)

    images, labels = [], []
    for images_name, labels_name in _MNIST_SUBSETS[subset]:
        pixels = _load_mnist_file(paths[images_name], images_name)
        digits = _load_mnist_file(paths[labels_name], labels_name)
        if pixels.ndim != 3 or pixels.dtype != np.uint8:
            raise ValueError(
                f"{paths[images_name]}: expected images (3-D uint8 IDX), got shape "
                f"{pixels.shape} of {pixels.dtype}."
            )
        if digits.ndim != 1 or digits.dtype != np.uint8 or len(digits) != len(pixels):
            raise ValueError(
                f"{paths[labels_name]}: expected {len(pixels)} labels (1-D uint8 IDX), got "
                f"shape {digits.shape} of {digits.dtype}."
            )
        if digits.size and digits.max() > 9:
            raise ValueError(f"{paths[labels_name]}: labels above 9 ({digits.max()}).")
        images.append(pixels)
        labels.append(digits)

    # A new, writeable array (the parsed ones are read-only views of the file's bytes).
    pixels = np.concatenate(images, dtype=np.float32 if normalize else np.uint8)
    if normalize:
        pixels /= 255
    target = np.concatenate(labels).astype(np.int64)
    data = pixels.reshape(len(pixels), -1) if flatten else pixels
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        images=pixels,
        target=target,
        target_names=np.arange(10),
        filenames=[str(paths[name]) for name in names],
        DESCR=_MNIST_DESCR,
    )
