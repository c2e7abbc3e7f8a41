"""Data sets of the paper's experiments: the toy generator, MNIST and CIFAR loaders.

- :func:`make_independent_features`: the toy classification task of Maile et al. (2022),
  section 4.1, whose inputs have a chosen number of independent features (their rank).
- :func:`load_mnist`: MNIST from the four original IDX files, read from a folder and, for
  users without a copy, downloaded from a list of mirrors with checksum verification.
- :func:`read_idx`: the IDX reader behind it, for any IDX file (e.g. Fashion-MNIST).
- :func:`load_cifar`: CIFAR-10 and CIFAR-100 from the python-pickle distribution, read from
  a folder or extracted from the checksum-verified archive, which it downloads on request.
"""

import gzip
import hashlib
import math
import os
import pickle
import shutil
import struct
import tarfile
import time
import zlib
from numbers import Integral, Real
from pathlib import Path, PurePosixPath
from tempfile import NamedTemporaryFile, mkdtemp
from urllib.request import Request, urlopen

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

__all__ = [
    "CIFAR_CHECKSUMS",
    "CIFAR_URL",
    "MNIST_CHECKSUMS",
    "MNIST_MIRRORS",
    "load_cifar",
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


def _data_home(data_home, subfolder):
    """Folder of a data set: ``data_home``, else ``$SKLEARN_NORTH_DATA/<subfolder>``,
    else ``~/sklearn_north_data/<subfolder>``."""
    if data_home is None:
        root = os.environ.get("SKLEARN_NORTH_DATA") or os.path.join("~", "sklearn_north_data")
        return Path(root).expanduser() / subfolder
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


def _pixels(blocks, normalize):
    """The uint8 pixel ``blocks`` as one new array: float32 in [0, 1] (``normalize``),
    converted block by block (no float copy of the uint8 whole), or uint8."""
    pixels = np.concatenate(blocks, dtype=np.float32 if normalize else np.uint8)
    if normalize:
        pixels /= 255
    return pixels


def _fetch(url, target, check):
    """Download ``url`` to ``target`` through a temporary file beside it, moved into place
    only once ``check(path)`` returned: a failed, rejected or interrupted download leaves
    nothing behind (a temporary name never looks like the data). Raises what the
    download or ``check`` raises."""
    temp = NamedTemporaryFile(prefix=f"{target.name}.part_", dir=target.parent, delete=False)
    try:
        with temp:
            request = Request(url, headers={"User-Agent": "sklearn-north"})
            with urlopen(request, timeout=_DOWNLOAD_TIMEOUT) as response:
                shutil.copyfileobj(response, temp, 1 << 20)
        check(temp.name)
    except BaseException:
        os.unlink(temp.name)
        raise
    os.replace(temp.name, target)
    return target


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
            try:
                # Parsing and the checksum raise unless the file is intact.
                return _fetch(url, target, lambda path: _load_mnist_file(path, name))
            except (OSError, ValueError) as exc:
                errors.append(f"{url}: {exc}")
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
    folder = _data_home(data_home, "mnist")
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
    pixels = _pixels(images, normalize)
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


# --------------------------------------------------------------------------- CIFAR

#: Base URL from which :func:`load_cifar` downloads the CIFAR archives (the authors' page).
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"

#: CIFAR archive name -> MD5 of the archive, as published on the authors' page.
CIFAR_CHECKSUMS = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}

_CIFAR_DESCR = """\
{title} (A. Krizhevsky, V. Nair, G. Hinton), a labelled subset of the 80 million tiny
images.

60,000 colour images of 32x32 pixels: 50,000 for training ("train") and 10,000 for testing
("test"). {classes} Images are (n_samples, 3, 32, 32) arrays, channels (red, green, blue)
first as convolutional networks in torch take them, with values 0-255 scaled to [0, 1]
unless normalize=False. Read from the python-pickle distribution ({archive}, whose
published MD5 checksum is verified).

A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical report,
University of Toronto, 2009.
"""


class _CifarLayout:
    """Where a CIFAR variant keeps what: archive, folder, batch files, label keys."""

    def __init__(self, title, archive, folder, subsets, meta, label_modes, classes):
        self.title = title
        self.archive = archive  # name of the .tar.gz on the authors' page
        self.folder = folder  # the folder the archive holds
        self.subsets = subsets  # subset -> batch files, in the order they are concatenated
        self.meta = meta  # file of the class names
        # label_mode -> (labels key in a batch, names key in the meta file, number of classes)
        self.label_modes = label_modes
        self.descr = _CIFAR_DESCR.format(title=title, classes=classes, archive=archive)


_CIFAR = {
    "cifar10": _CifarLayout(
        title="CIFAR-10",
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        subsets={
            "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
            "test": ("test_batch",),
        },
        meta="batches.meta",
        label_modes={"fine": ("labels", "label_names", 10)},
        classes="10 mutually exclusive classes (airplane, automobile, bird, cat, deer, dog, "
        "frog, horse, ship, truck), 6,000 images each.",
    ),
    "cifar100": _CifarLayout(
        title="CIFAR-100",
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        subsets={"train": ("train",), "test": ("test",)},
        meta="meta",
        label_modes={
            "fine": ("fine_labels", "fine_label_names", 100),
            "coarse": ("coarse_labels", "coarse_label_names", 20),
        },
        classes="100 classes of 600 images each (label_mode='fine'), grouped into 20 "
        "superclasses of 5 classes each (label_mode='coarse').",
    ),
}
for _layout in _CIFAR.values():
    _layout.subsets["all"] = _layout.subsets["train"] + _layout.subsets["test"]
del _layout

_CIFAR_IMAGE_SHAPE = (3, 32, 32)  # channels (R, G, B), rows, columns
_CIFAR_ROW_LENGTH = math.prod(_CIFAR_IMAGE_SHAPE)

# What a CIFAR pickle may refer to: a dict of numpy arrays, lists, ints and strings needs
# nothing else; refusing every other global means an untrusted file cannot run code.
_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]
_NUMPY_SCALAR = np.int64(0).__reduce__()[0]


def _latin1_bytes(text, encoding):
    """How Python 3 pickles bytes at protocol 2: ``_codecs.encode(text, "latin1")``."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected encoding {encoding!r} of a bytes object")
    return text.encode("latin1")


_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, lists, strings, numbers and numpy arrays."""

    def find_class(self, module, name):
        try:
            return _CIFAR_PICKLE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a CIFAR file never does (refused, "
                "as loading it could run code)"
            ) from None


def _unpickle_cifar(path):
    """The dict pickled in the CIFAR file ``path`` (Python 2 strings become bytes)."""
    try:
        with open(path, "rb") as file:
            content = _CifarUnpickler(file, encoding="bytes").load()
    except OSError:
        raise
    except Exception as exc:  # a corrupt pickle can fail in many ways, all mean the same
        raise ValueError(
            f"{path}: not a readable CIFAR pickle file ({type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(content).__name__}.")
    return content


def _cifar_entry(content, key, path):
    """``content[key]``, under a bytes key as in the originals or a str key."""
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    raise ValueError(
        f"{path}: no {key!r} entry; its keys are {sorted(map(repr, content))}. Is it a "
        "CIFAR file of the python version?"
    )


def _read_cifar_batch(path, labels_key, n_classes):
    """Checked (rows, labels) of a CIFAR batch file: uint8 (n, 3072) and int64 (n,)."""
    content = _unpickle_cifar(path)
    rows = _cifar_entry(content, "data", path)
    if not (
        isinstance(rows, np.ndarray)
        and rows.dtype == np.uint8
        and rows.ndim == 2
        and rows.shape[1] == _CIFAR_ROW_LENGTH
    ):
        description = (
            f"shape {rows.shape} of {rows.dtype}"
            if isinstance(rows, np.ndarray)
            else type(rows).__name__
        )
        raise ValueError(
            f"{path}: expected 'data' as a uint8 array of shape (n_images, "
            f"{_CIFAR_ROW_LENGTH}), got {description}."
        )
    labels = np.asarray(_cifar_entry(content, labels_key, path))
    if labels.ndim != 1 or len(labels) != len(rows) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: expected {len(rows)} integer labels in {labels_key!r} (one per image), "
            f"got shape {labels.shape} of {labels.dtype}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{path}: labels in {labels_key!r} must be between 0 and {n_classes - 1}; got "
            f"{labels.min()} to {labels.max()}."
        )
    return rows, labels.astype(np.int64)


def _read_cifar_names(path, names_key, n_classes):
    """The ``n_classes`` class names stored under ``names_key`` in the meta file ``path``."""
    names = _cifar_entry(_unpickle_cifar(path), names_key, path)
    if (
        not isinstance(names, (list, tuple))
        or len(names) != n_classes
        or not all(isinstance(name, (bytes, str)) for name in names)
    ):
        raise ValueError(f"{path}: expected {n_classes} class names in {names_key!r}.")
    return np.array([name.decode() if isinstance(name, bytes) else name for name in names])


def _check_archive_md5(path, archive):
    """Raise OSError unless the MD5 of the file ``path`` is the published one of
    ``archive``."""
    expected = CIFAR_CHECKSUMS[archive]
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        raise OSError(
            f"{path}: its MD5 checksum is {actual}, expected {expected} (the published "
            f"{archive}): the file is corrupt, truncated or not the original archive. "
            "Delete it to download it again, or replace it."
        )


def _check_member(member, top, archive):
    """Raise ValueError unless the tar ``member`` is a file or folder inside ``top/``."""
    name = member.name
    parts = PurePosixPath(name).parts
    # Absolute names, drive letters and '..' would write outside the extraction folder.
    if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in name:
        raise ValueError(
            f"{archive}: member {name!r} points outside the extraction folder (absolute "
            "path or '..'); refusing to extract this archive (path traversal)."
        )
    if not (member.isfile() or member.isdir()):
        raise ValueError(
            f"{archive}: member {name!r} is a link or a special file, which the CIFAR "
            "archives never hold; refusing to extract this archive."
        )
    if not parts or parts[0] != top:
        raise ValueError(
            f"{archive}: member {name!r} lies outside {top}/, unlike every member of the "
            "CIFAR archive; refusing to extract it."
        )


def _extract_cifar(archive, top, folder):
    """Extract the folder ``top`` of the CIFAR ``archive`` into ``folder``.

    Every member is checked before anything is written, and the folder is extracted into a
    staging folder first, moved into place once complete: a failure leaves nothing behind
    that a later call would take for the extracted data.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, top, archive)
            staging = Path(mkdtemp(prefix=f".{top}.part_", dir=folder))
            try:
                for member in members:
                    if member.isdir():
                        continue
                    target = staging.joinpath(*PurePosixPath(member.name).parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as source, open(target, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                if not (staging / top).is_dir():
                    raise ValueError(f"{archive}: no files in {top}/; not a CIFAR archive.")
                try:
                    os.replace(staging / top, folder / top)
                except OSError:
                    if not (folder / top).is_dir():  # else: extracted meanwhile by another
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{archive}: corrupt or truncated archive ({exc}).") from exc


def _download_cifar(layout, folder, n_retries, delay):
    """Download ``layout.archive`` into ``folder``, checked before it is moved in place."""
    folder.mkdir(parents=True, exist_ok=True)
    url = f"{CIFAR_URL}{layout.archive}"
    target = folder / layout.archive
    errors = []
    for attempt in range(n_retries + 1):
        if attempt:
            time.sleep(delay)
        try:
            return _fetch(url, target, lambda path: _check_archive_md5(path, layout.archive))
        except OSError as exc:
            errors.append(f"attempt {attempt + 1}: {exc}")
    raise OSError(
        f"Could not download {url}; is this machine offline? Errors:\n  "
        + "\n  ".join(errors)
        + f"\nGet {layout.archive} (about 170 MB) elsewhere and put it, or the folder "
        f"{layout.folder} it holds, in {folder}; or pass the folder that holds them as "
        "data_home (or set SKLEARN_NORTH_DATA to a folder with a 'cifar' subfolder)."
    )


def _cifar_batches_folder(home, layout, download_if_missing, n_retries, delay):
    """Folder of the CIFAR batch files, extracted (and downloaded) if need be."""
    if home.name == layout.folder and home.is_dir():
        return home  # data_home is the extracted folder itself
    batches = home / layout.folder
    if batches.is_dir():
        return batches
    archive = home / layout.archive
    if archive.is_file():
        _check_archive_md5(archive, layout.archive)
    elif download_if_missing:
        archive = _download_cifar(layout, home, n_retries, delay)  # checked there
    else:
        raise FileNotFoundError(
            f"{layout.title} not found: looked in {home} for the folder {layout.folder} "
            f"and the archive {layout.archive}. Download {CIFAR_URL}{layout.archive} "
            f"(about 170 MB) and put it there (extracted or not), pass the folder that "
            "holds it as data_home (or set SKLEARN_NORTH_DATA to a folder with a 'cifar' "
            "subfolder), or pass download_if_missing=True to download it."
        )
    _extract_cifar(archive, layout.folder, home)
    return batches


@validate_params(
    {
        "data_home": [str, os.PathLike, None],
        "name": [StrOptions({"cifar10", "cifar100"})],
        "subset": [StrOptions({"train", "test", "all"})],
        "label_mode": [StrOptions({"fine", "coarse"})],
        "normalize": ["boolean"],
        "flatten": ["boolean"],
        "return_X_y": ["boolean"],
        "download_if_missing": ["boolean"],
        "n_retries": [Interval(Integral, 0, None, closed="left")],
        "delay": [Interval(Real, 0, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def load_cifar(
    data_home=None,
    *,
    name="cifar10",
    subset="train",
    label_mode="fine",
    normalize=True,
    flatten=False,
    return_X_y=False,
    download_if_missing=False,
    n_retries=1,
    delay=1.0,
):
    """Load CIFAR-10 or CIFAR-100 (classification of 32x32 colour images).

    =================   ================================================
    Classes             10 (CIFAR-10); 100 fine or 20 coarse (CIFAR-100)
    Samples total       60000 (50000 + 10000)
    Dimensionality      3072 (3 x 32 x 32)
    Features            pixels in [0, 1] (float32), or 0-255 (uint8)
    =================   ================================================

    Reads the python version of the data set as its authors distribute it: the folder
    ``cifar-10-batches-py`` (``data_batch_1`` to ``data_batch_5``, ``test_batch``,
    ``batches.meta``) or ``cifar-100-python`` (``train``, ``test``, ``meta``) in
    ``data_home``. Where that folder is missing, the archive ``cifar-10-python.tar.gz``
    or ``cifar-100-python.tar.gz`` in ``data_home`` is checked against its published MD5
    checksum (``CIFAR_CHECKSUMS``) and extracted there (only the data folder; members
    that would land outside it, and links, are refused). Where the archive is missing
    too, it is downloaded from ``CIFAR_URL`` if ``download_if_missing``, and checked
    before it is moved into place.

    The batch files are pickles; they are read with an unpickler that builds nothing but
    dicts, lists, strings, numbers and numpy arrays, so a tampered file cannot run code.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder that holds the CIFAR folder or archive (and receives the downloaded or
        extracted ones), or the extracted folder itself (``.../cifar-10-batches-py``).
        ``None``: ``$SKLEARN_NORTH_DATA/cifar`` if the environment variable
        ``SKLEARN_NORTH_DATA`` is set, else ``~/sklearn_north_data/cifar``.
    name : {"cifar10", "cifar100"}, default="cifar10"
        The data set.
    subset : {"train", "test", "all"}, default="train"
        The 50,000 training images, the 10,000 test images, or all 60,000 (training
        images first). The training images come in the order of the files (CIFAR-10:
        ``data_batch_1`` first).
    label_mode : {"fine", "coarse"}, default="fine"
        For CIFAR-100, the 100 classes ("fine") or their 20 superclasses ("coarse").
        CIFAR-10 has a single set of 10 classes: "fine".
    normalize : bool, default=True
        If True, pixels are float32 in [0, 1] (the raw values divided by 255); if False,
        the raw uint8 values 0-255.
    flatten : bool, default=False
        If False, ``data`` has shape (n_samples, 3, 32, 32): channels (red, green, blue),
        rows, columns, the NCHW layout a torch convolutional network takes. If True, one
        row of 3072 values per image in that order (the files' own layout: the 1024
        red pixels row by row, then the green, then the blue), for estimators that take
        2-D input.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    download_if_missing : bool, default=False
        If True, download the archive (about 170 MB) when neither the folder nor the
        archive is in ``data_home``; if False (the default: a large download happens only
        on request), raise a ``FileNotFoundError`` that says where to put the data.
    n_retries : int, default=1
        Number of further download attempts after a failed one.
    delay : float, default=1.0
        Seconds between two download attempts.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        data : ndarray of shape (n_samples, 3, 32, 32) or (n_samples, 3072)
            The images, float32 in [0, 1] or uint8 (see ``normalize``, ``flatten``).
        images : ndarray of shape (n_samples, 3, 32, 32)
            The same images in NCHW layout (the same memory as ``data``).
        target : ndarray of shape (n_samples,), dtype int64
            The class of each image, an index into ``target_names``.
        target_names : ndarray of shape (n_classes,), dtype str
            The class names, from the meta file (e.g. ``"airplane"``).
        filenames : list of str
            Paths of the files read: the batch files, then the meta file.
        DESCR : str
            Description of the data set.

    (data, target) : tuple if ``return_X_y`` is True
        The arrays ``data`` and ``target`` described above.

    Raises
    ------
    FileNotFoundError
        If neither the folder nor the archive is in ``data_home`` and
        ``download_if_missing`` is False (the message says where to put them), or if a
        file is missing from the folder.
    OSError
        If the archive's MD5 checksum differs from the published one, or if the
        download failed (e.g. offline: the message says where to put the data).
    ValueError
        If a file is not a CIFAR file (corrupt or truncated pickle, wrong content,
        labels out of range), if the archive is corrupt or holds a member that would be
        extracted outside its folder, or for ``label_mode="coarse"`` with CIFAR-10.

    References
    ----------
    A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", technical
    report, University of Toronto, 2009.

    Examples
    --------
    >>> from sklearn_north.datasets import load_cifar
    >>> X, y = load_cifar("data/cifar", return_X_y=True)  # doctest: +SKIP
    >>> X.shape, X.dtype, y[:5]  # doctest: +SKIP
    ((50000, 3, 32, 32), dtype('float32'), array([6, 9, 9, 4, 1]))
    >>> coarse = load_cifar("data/cifar", name="cifar100", label_mode="coarse")  # doctest: +SKIP
    >>> len(coarse.target_names)  # doctest: +SKIP
    20
    """
    layout = _CIFAR[name]
    if label_mode not in layout.label_modes:
        raise ValueError(
            f"label_mode={label_mode!r} is defined for name='cifar100' only; {layout.title} "
            "has a single set of classes: use label_mode='fine'."
        )
    labels_key, names_key, n_classes = layout.label_modes[label_mode]
    batches = _cifar_batches_folder(
        _data_home(data_home, "cifar"), layout, download_if_missing, n_retries, delay
    )
    paths = [batches / file for file in (*layout.subsets[subset], layout.meta)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{layout.title} files missing from {batches}: {', '.join(missing)}. Delete the "
            f"folder to extract it again from {layout.archive}, or replace the files."
        )

    all_rows, all_labels = [], []
    for path in paths[:-1]:
        rows, labels = _read_cifar_batch(path, labels_key, n_classes)
        all_rows.append(rows)
        all_labels.append(labels)
    target_names = _read_cifar_names(paths[-1], names_key, n_classes)

    pixels = _pixels(all_rows, normalize)
    # Each row is the red plane, then the green, then the blue, each 32 rows of 32 pixels:
    # a C-order reshape gives (channel, row, column) directly.
    images = pixels.reshape(len(pixels), *_CIFAR_IMAGE_SHAPE)
    target = np.concatenate(all_labels)
    data = pixels if flatten else images
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        images=images,
        target=target,
        target_names=target_names,
        filenames=[str(path) for path in paths],
        DESCR=layout.descr,
    )
