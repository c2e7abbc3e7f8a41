"""Tests of ``load_cifar`` on small files written here in the exact CIFAR formats.

Each batch is what the authors' python distribution holds: a dict with bytes keys, pickled
at protocol 2, whose ``b"data"`` is a uint8 array with one row of 3072 values per image (the
1024 red pixels row by row, then the green, then the blue). There is no CIFAR copy here; a
test reads the real one where ``../shared/data/cifar`` has it.
"""

import datetime
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from sklearn_north import datasets
from sklearn_north.datasets import load_cifar

REAL_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar"

CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
CIFAR100_FINE_NAMES = [f"fine_{i:02d}" for i in range(100)]
CIFAR100_COARSE_NAMES = [f"coarse_{i:02d}" for i in range(20)]

# Images per CIFAR-10 file: a few, different per batch so that order mistakes show.
CIFAR10_SIZES = {
    "data_batch_1": 3,
    "data_batch_2": 2,
    "data_batch_3": 4,
    "data_batch_4": 1,
    "data_batch_5": 2,
    "test_batch": 3,
}
CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def pickled(content):
    return pickle.dumps(content, protocol=2)


def random_rows(n, seed):
    """``n`` random CIFAR rows (uint8, 3072 values each)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def cifar10_files():
    """name -> (file content, rows, labels) of a small CIFAR-10 distribution."""
    files = {}
    for seed, (name, n) in enumerate(CIFAR10_SIZES.items()):
        rows = random_rows(n, seed)
        labels = [(7 * seed + 3 * i) % 10 for i in range(n)]
        content = {
            b"batch_label": f"batch {name}".encode(),
            b"labels": labels,
            b"data": rows,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        files[name] = (pickled(content), rows, labels)
    meta = {
        b"num_cases_per_batch": 3,
        b"label_names": [name.encode() for name in CIFAR10_NAMES],
        b"num_vis": 3072,
    }
    files["batches.meta"] = (pickled(meta), None, None)
    return files


def cifar100_files():
    """name -> (file content, rows, (fine, coarse)) of a small CIFAR-100 distribution."""
    files = {}
    for seed, (name, n) in enumerate([("train", 5), ("test", 3)]):
        rows = random_rows(n, 10 + seed)
        fine = [(37 * seed + 41 * i + 99) % 100 for i in range(n)]  # 99 (the last) first
        coarse = [(5 * seed + 7 * i + 19) % 20 for i in range(n)]
        content = {
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name} batch".encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": rows,
        }
        files[name] = (pickled(content), rows, (fine, coarse))
    meta = {
        b"fine_label_names": [name.encode() for name in CIFAR100_FINE_NAMES],
        b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE_NAMES],
    }
    files["meta"] = (pickled(meta), None, None)
    return files


FAKE = {"cifar10": cifar10_files(), "cifar100": cifar100_files()}
FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
ARCHIVE = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}


def write_folder(home, name="cifar10", replace=None):
    """Write the fake distribution ``name`` as its extracted folder under ``home``;
    ``replace`` maps file names to other contents (None: leave the file out)."""
    folder = home / FOLDER[name]
    folder.mkdir(parents=True)
    for file, (content, _, _) in FAKE[name].items():
        content = (replace or {}).get(file, content)
        if content is not None:
            (folder / file).write_bytes(content)
    return folder


def archive_bytes(name="cifar10", extra=()):
    """A tar.gz archive of the fake distribution ``name`` laid out as the original (its
    folder, then its files), plus the ``extra`` (TarInfo, bytes or None) members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        folder = tarfile.TarInfo(FOLDER[name])
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for file, (content, _, _) in FAKE[name].items():
            info = tarfile.TarInfo(f"{FOLDER[name]}/{file}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for info, content in extra:
            tar.addfile(info, None if content is None else io.BytesIO(content))
    return buffer.getvalue()


def accept_archive(monkeypatch, name, content):
    """Make ``content`` the published archive of ``name`` (and only it)."""
    checksums = {**datasets.CIFAR_CHECKSUMS, ARCHIVE[name]: hashlib.md5(content).hexdigest()}
    monkeypatch.setattr(datasets, "CIFAR_CHECKSUMS", checksums)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that would open a URL (tests that download patch it again)."""

    def urlopen(*args, **kwargs):
        raise AssertionError("a test tried to open a URL")

    monkeypatch.setattr(datasets, "urlopen", urlopen)


def expected_cifar10(files):
    rows = np.concatenate([FAKE["cifar10"][file][1] for file in files])
    labels = np.concatenate([FAKE["cifar10"][file][2] for file in files])
    return rows, labels


# --------------------------------------------------------------------------- reading


def test_pixel_placement_follows_the_cifar_row_layout(tmp_path):
    """Row value ``c * 1024 + h * 32 + w`` is the pixel of channel c at row h, column w."""
    rows = random_rows(2, 99)
    batch = pickled({b"data": rows, b"labels": [4, 9]})
    write_folder(tmp_path, replace={"data_batch_1": batch})
    images = load_cifar(tmp_path, normalize=False).images[:2]
    assert images.shape == (2, 3, 32, 32)
    for i in range(2):
        for c in range(3):
            for h in range(32):
                for w in range(32):
                    assert images[i, c, h, w] == rows[i, c * 1024 + h * 32 + w]
    # The same in words: red top-left, red bottom-right, green top-left, blue (5, 7).
    assert images[1, 0, 0, 0] == rows[1, 0] and images[1, 0, 31, 31] == rows[1, 1023]
    assert images[1, 1, 0, 0] == rows[1, 1024] and images[1, 2, 5, 7] == rows[1, 2048 + 167]


def test_cifar10_round_trip(tmp_path):
    write_folder(tmp_path)
    bunch = load_cifar(tmp_path)
    rows, labels = expected_cifar10(CIFAR10_TRAIN)
    n = sum(CIFAR10_SIZES[file] for file in CIFAR10_TRAIN)
    assert bunch.data.shape == (n, 3, 32, 32) and bunch.data.dtype == np.float32
    assert bunch.data.flags.writeable and bunch.data.flags.c_contiguous
    # float32 pixels are the raw values / 255, in [0, 1].
    np.testing.assert_array_equal(
        bunch.data.reshape(n, 3072), rows.astype(np.float32) / np.float32(255)
    )
    assert bunch.images is bunch.data
    assert bunch.target.dtype == np.int64
    np.testing.assert_array_equal(bunch.target, labels)
    assert list(bunch.target_names) == CIFAR10_NAMES
    assert bunch.target_names.dtype.kind == "U"
    folder = tmp_path / "cifar-10-batches-py"
    assert bunch.filenames == [str(folder / f) for f in (*CIFAR10_TRAIN, "batches.meta")]
    assert "CIFAR-10" in bunch.DESCR and "(n_samples, 3, 32, 32)" in bunch.DESCR

    X, y = load_cifar(tmp_path, subset="test", normalize=False, return_X_y=True)
    assert X.dtype == np.uint8 and X.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(X.reshape(3, 3072), FAKE["cifar10"]["test_batch"][1])
    np.testing.assert_array_equal(y, FAKE["cifar10"]["test_batch"][2])

    # flatten=True: the files' own rows; "all": training images first.
    X, y = load_cifar(tmp_path, subset="all", normalize=False, flatten=True, return_X_y=True)
    rows, labels = expected_cifar10([*CIFAR10_TRAIN, "test_batch"])
    assert X.shape == (n + 3, 3072)
    np.testing.assert_array_equal(X, rows)
    np.testing.assert_array_equal(y, labels)
    bunch = load_cifar(tmp_path, flatten=True)
    assert bunch.data.shape == (n, 3072) and bunch.images.shape == (n, 3, 32, 32)
    assert np.shares_memory(bunch.data, bunch.images)


def test_pixel_scale(tmp_path):
    rows = np.zeros((1, 3072), np.uint8)
    rows[0, :4] = [0, 255, 128, 1]
    write_folder(tmp_path, replace={"data_batch_1": pickled({b"data": rows, b"labels": [0]})})
    X, _ = load_cifar(tmp_path, return_X_y=True)
    np.testing.assert_array_equal(X[0, 0, 0, :4], np.array([0, 1, 128 / 255, 1 / 255], "f4"))
    assert X.min() == 0 and X.max() == 1


def test_cifar100_fine_and_coarse_labels(tmp_path):
    write_folder(tmp_path, "cifar100")
    files = FAKE["cifar100"]
    bunch = load_cifar(tmp_path, name="cifar100")
    assert bunch.data.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(bunch.data.reshape(5, 3072) * 255, files["train"][1])
    np.testing.assert_array_equal(bunch.target, files["train"][2][0])
    assert list(bunch.target_names) == CIFAR100_FINE_NAMES
    assert "CIFAR-100" in bunch.DESCR
    folder = tmp_path / "cifar-100-python"
    assert bunch.filenames == [str(folder / "train"), str(folder / "meta")]

    coarse = load_cifar(tmp_path, name="cifar100", subset="test", label_mode="coarse")
    np.testing.assert_array_equal(coarse.target, files["test"][2][1])
    assert list(coarse.target_names) == CIFAR100_COARSE_NAMES
    _, y = load_cifar(tmp_path, name="cifar100", subset="all", return_X_y=True)
    np.testing.assert_array_equal(y, files["train"][2][0] + files["test"][2][0])


def test_str_keys_are_read_as_bytes_keys(tmp_path):
    # A batch re-pickled by Python 3 with str keys holds the same data.
    rows = random_rows(2, 5)
    write_folder(tmp_path, replace={"data_batch_1": pickled({"data": rows, "labels": [1, 2]})})
    X, y = load_cifar(tmp_path, normalize=False, flatten=True, return_X_y=True)
    np.testing.assert_array_equal(X[:2], rows)
    np.testing.assert_array_equal(y[:2], [1, 2])


def py2_pickle(rows, labels):
    """A batch pickled as Python 2 and numpy 1 did for the original files (written opcode
    by opcode: Python 3 cannot produce it): protocol 2, str keys and data as 8-bit strings
    (BINSTRING), the array rebuilt by numpy.core.multiarray._reconstruct."""

    def string(value):
        return b"T" + struct.pack("<i", len(value)) + value

    def integer(value):
        return b"J" + struct.pack("<i", value)

    dtype = (
        b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"  # dtype("u1")
        + b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0)
        + b"tb"  # its state: version 3, no byte order, itemsize -1, alignment -1, flags 0
    )  # fmt: skip
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b") + b"\x87R"
        + b"(" + integer(1) + integer(len(rows)) + integer(3072) + b"\x86" + dtype
        + b"\x89" + string(rows.tobytes()) + b"tb"  # state: version 1, shape, dtype, C order
    )  # fmt: skip
    labels = b"](" + b"".join(integer(label) for label in labels) + b"e"
    return (
        b"\x80\x02}(" + string(b"batch_label") + string(b"training batch 1 of 5")
        + string(b"labels") + labels + string(b"data") + array + b"u."
    )  # fmt: skip


def test_python2_pickles_as_the_originals(tmp_path):
    rows = random_rows(4, 7)
    content = py2_pickle(rows, [9, 0, 3, 3])
    np.testing.assert_array_equal(pickle.loads(content, encoding="bytes")[b"data"], rows)
    write_folder(tmp_path, replace={"data_batch_1": content})
    X, y = load_cifar(tmp_path, normalize=False, flatten=True, return_X_y=True)
    np.testing.assert_array_equal(X[:4], rows)
    np.testing.assert_array_equal(y[:4], [9, 0, 3, 3])


def test_data_home_may_be_the_extracted_folder(tmp_path):
    folder = write_folder(tmp_path)
    bunch = load_cifar(folder, subset="test")
    np.testing.assert_array_equal(bunch.target, FAKE["cifar10"]["test_batch"][2])
    assert bunch.filenames[0] == str(folder / "test_batch")


def test_default_folder(tmp_path, monkeypatch):
    write_folder(tmp_path / "root" / "cifar")
    monkeypatch.setenv("SKLEARN_NORTH_DATA", str(tmp_path / "root"))
    np.testing.assert_array_equal(
        load_cifar(subset="test").target, FAKE["cifar10"]["test_batch"][2]
    )
    write_folder(tmp_path / "home" / "sklearn_north_data" / "cifar", "cifar100")
    monkeypatch.delenv("SKLEARN_NORTH_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    bunch = load_cifar(name="cifar100", subset="test")
    assert bunch.filenames[0] == str(
        tmp_path / "home" / "sklearn_north_data" / "cifar" / "cifar-100-python" / "test"
    )


# --------------------------------------------------------------------------- bad files

GOOD_BATCH = FAKE["cifar10"]["data_batch_2"][0]
TWO_ROWS = random_rows(2, 3)


@pytest.mark.parametrize(
    "file, content, match",
    [
        ("data_batch_2", GOOD_BATCH[:-40], "not a readable CIFAR pickle file"),
        ("data_batch_2", b"not a pickle at all", "not a readable CIFAR pickle file"),
        ("data_batch_2", b"", "not a readable CIFAR pickle file"),
        ("data_batch_2", pickled([1, 2, 3]), "expected a pickled dict, got list"),
        ("data_batch_2", pickled({b"labels": [1, 2]}), "no 'data' entry"),
        ("data_batch_2", pickled({b"data": TWO_ROWS}), "no 'labels' entry"),
        (
            "data_batch_2",
            pickled({b"data": TWO_ROWS[:, :-1], b"labels": [1, 2]}),
            r"shape \(n_images, 3072\), got shape \(2, 3071\)",
        ),
        (
            "data_batch_2",
            pickled({b"data": TWO_ROWS.astype(np.float32), b"labels": [1, 2]}),
            "got shape .* of float32",
        ),
        ("data_batch_2", pickled({b"data": TWO_ROWS, b"labels": [1]}), "expected 2 integer"),
        ("data_batch_2", pickled({b"data": TWO_ROWS, b"labels": [1, 10]}), "between 0 and 9"),
        ("data_batch_2", pickled({b"data": TWO_ROWS, b"labels": [-1, 0]}), "between 0 and 9"),
        (
            "data_batch_2",
            pickled({b"data": TWO_ROWS, b"labels": [0, datetime.date(2000, 1, 1)]}),
            "refers to datetime.date",
        ),
        (
            "batches.meta",
            pickled({b"label_names": [n.encode() for n in CIFAR10_NAMES[:9]]}),
            "expected 10 class names",
        ),
    ],
    ids=[
        "truncated",
        "garbage",
        "empty",
        "list",
        "no-data",
        "no-labels",
        "row-length",
        "dtype",
        "label-count",
        "label-too-large",
        "label-negative",
        "foreign-global",
        "meta-names",
    ],
)
def test_corrupt_files_are_rejected(tmp_path, file, content, match):
    folder = write_folder(tmp_path, replace={file: content})
    with pytest.raises(ValueError, match=match) as info:
        load_cifar(tmp_path)
    assert str(folder / file) in str(info.value)  # the message names the file


def test_foreign_global_is_never_called(tmp_path):
    # A pickle whose loading calls a function (here: one that creates a file) is refused.
    marker = tmp_path / "called"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    content = pickled({b"data": Payload()})
    write_folder(tmp_path, replace={"data_batch_1": content})
    with pytest.raises(ValueError, match=r"refers to io\.open"):
        load_cifar(tmp_path)
    assert not marker.exists()
    pickle.loads(content)  # what a plain unpickler would have done
    assert marker.exists()


@pytest.mark.parametrize("file", ["data_batch_4", "batches.meta"])
def test_missing_batch_file(tmp_path, file):
    folder = write_folder(tmp_path, replace={file: None})
    with pytest.raises(FileNotFoundError, match=f"missing from {folder}: {file}"):
        load_cifar(tmp_path)
    # Only the files of the subset asked for are needed.
    if file != "batches.meta":
        load_cifar(tmp_path, subset="test")


# --------------------------------------------------------------------------- archives


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_archive_is_checked_and_extracted(tmp_path, monkeypatch, name):
    content = archive_bytes(name)
    (tmp_path / ARCHIVE[name]).write_bytes(content)
    accept_archive(monkeypatch, name, content)
    X, y = load_cifar(tmp_path, name=name, subset="test", normalize=False, return_X_y=True)
    test_file = "test_batch" if name == "cifar10" else "test"
    _, rows, labels = FAKE[name][test_file]
    np.testing.assert_array_equal(X.reshape(len(rows), 3072), rows)
    expected_labels = labels if name == "cifar10" else labels[0]  # CIFAR-100: fine labels
    np.testing.assert_array_equal(y, expected_labels)
    # The folder is in place, with exactly the archive's files, and nothing else was left.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([ARCHIVE[name], FOLDER[name]])
    assert sorted(p.name for p in (tmp_path / FOLDER[name]).iterdir()) == sorted(FAKE[name])
    for file, (file_content, _, _) in FAKE[name].items():
        assert (tmp_path / FOLDER[name] / file).read_bytes() == file_content

    # The next call reads the folder: the archive is neither needed nor checked.
    (tmp_path / ARCHIVE[name]).unlink()
    monkeypatch.setattr(datasets, "CIFAR_CHECKSUMS", {})
    assert len(load_cifar(tmp_path, name=name, subset="test").target) == len(rows)


def test_archive_checksum_mismatch(tmp_path, monkeypatch):
    # A valid archive that is not the published one.
    content = archive_bytes()
    (tmp_path / ARCHIVE["cifar10"]).write_bytes(content)
    published = datasets.CIFAR_CHECKSUMS["cifar-10-python.tar.gz"]
    assert published == "c58f30108f718f92721af3b95e74349a"
    with pytest.raises(OSError, match=f"MD5 checksum is .*, expected {published}"):
        load_cifar(tmp_path)
    assert not (tmp_path / FOLDER["cifar10"]).exists()

    # One flipped bit in an otherwise accepted archive.
    accept_archive(monkeypatch, "cifar10", content)
    flipped = bytearray(content)
    flipped[len(flipped) // 2] ^= 1
    (tmp_path / ARCHIVE["cifar10"]).write_bytes(bytes(flipped))
    with pytest.raises(OSError, match="corrupt, truncated or not the original archive"):
        load_cifar(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [ARCHIVE["cifar10"]]


def test_corrupt_archive(tmp_path, monkeypatch):
    # With the right checksum (a table entry for it), a truncated archive is still refused.
    content = archive_bytes()[:-100]
    (tmp_path / ARCHIVE["cifar10"]).write_bytes(content)
    accept_archive(monkeypatch, "cifar10", content)
    with pytest.raises(ValueError, match="corrupt or truncated archive"):
        load_cifar(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [ARCHIVE["cifar10"]]


def test_failed_extraction_leaves_no_partial_folder(tmp_path, monkeypatch):
    content = archive_bytes()
    (tmp_path / ARCHIVE["cifar10"]).write_bytes(content)
    accept_archive(monkeypatch, "cifar10", content)
    copy = datasets.shutil.copyfileobj
    copied = []

    def copy_until_the_disk_is_full(source, target, *args):
        if len(copied) == 3:
            raise OSError(28, "No space left on device")
        copied.append(target.name)
        copy(source, target, *args)

    monkeypatch.setattr(datasets.shutil, "copyfileobj", copy_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left on device"):
        load_cifar(tmp_path)
    assert len(copied) == 3  # three files were written before the failure ...
    assert [p.name for p in tmp_path.iterdir()] == [ARCHIVE["cifar10"]]  # ... and removed
    monkeypatch.setattr(datasets.shutil, "copyfileobj", copy)
    assert len(load_cifar(tmp_path, subset="test").target) == CIFAR10_SIZES["test_batch"]


def member(name, type_=tarfile.REGTYPE, size=0, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = type_, size, linkname
    return info


# Members that must not be extracted; "{outside}" stands for a folder next to data_home.
@pytest.mark.parametrize(
    "name, type_, linkname, match",
    [
        ("../evil", tarfile.REGTYPE, "", "points outside the extraction folder"),
        ("cifar-10-batches-py/../../evil", tarfile.REGTYPE, "", "points outside the extraction"),
        ("{outside}/evil", tarfile.REGTYPE, "", "points outside the extraction folder"),
        ("cifar-10-batches-py/link", tarfile.SYMTYPE, "{outside}/evil", "is a link"),
        ("cifar-10-batches-py/hard", tarfile.LNKTYPE, "{outside}/evil", "is a link"),
        ("elsewhere/evil", tarfile.REGTYPE, "", "lies outside cifar-10-batches-py/"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "other-folder"],
)
def test_unsafe_archive_members_are_refused(tmp_path, monkeypatch, name, type_, linkname, match):
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "outside"
    info = member(name.format(outside=outside), type_, linkname=linkname.format(outside=outside))
    content = b"evil" if type_ == tarfile.REGTYPE else None
    info.size = len(content or b"")
    archive = archive_bytes(extra=[(info, content)])
    (home / ARCHIVE["cifar10"]).write_bytes(archive)
    accept_archive(monkeypatch, "cifar10", archive)
    with pytest.raises(ValueError, match=match):
        load_cifar(home)
    # Nothing was written: no data folder, no staging folder, nothing outside.
    assert [p.name for p in home.iterdir()] == [ARCHIVE["cifar10"]]
    assert [p.name for p in tmp_path.iterdir()] == ["home"]


# --------------------------------------------------------------------------- downloads


class FailingStream(io.BytesIO):
    """A response that serves ``content`` then fails with ``error``."""

    def __init__(self, content, error):
        super().__init__(content)
        self.error = error

    def read(self, size=-1):
        chunk = super().read(size)
        if not chunk:
            raise self.error
        return chunk


def test_download(tmp_path, monkeypatch):
    content = archive_bytes("cifar100")
    accept_archive(monkeypatch, "cifar100", content)
    requested = []
    responses = [io.BytesIO(content[:-1]), io.BytesIO(content)]  # corrupt, then intact

    def urlopen(request, timeout=None):
        requested.append((request.full_url, timeout))
        return responses.pop(0)

    monkeypatch.setattr(datasets, "urlopen", urlopen)
    home = tmp_path / "new" / "cifar"
    bunch = load_cifar(home, name="cifar100", download_if_missing=True, delay=0)
    np.testing.assert_array_equal(bunch.target, FAKE["cifar100"]["train"][2][0])
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert [full_url for full_url, _ in requested] == [url, url]  # retried after the MD5
    assert all(timeout is not None for _, timeout in requested)
    assert sorted(p.name for p in home.iterdir()) == ["cifar-100-python", ARCHIVE["cifar100"]]
    assert (home / ARCHIVE["cifar100"]).read_bytes() == content

    # The next call reads the folder without opening a URL.
    monkeypatch.setattr(datasets, "urlopen", None)
    assert len(load_cifar(home, name="cifar100", download_if_missing=True).target) == 5


def test_offline(tmp_path, monkeypatch):
    calls = []

    def urlopen(request, timeout=None):
        calls.append(request.full_url)
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "urlopen", urlopen)
    home = tmp_path / "data" / "cifar"
    with pytest.raises(OSError, match="offline") as info:
        load_cifar(home, download_if_missing=True, n_retries=1, delay=0)
    message = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "Temporary failure in name resolution" in message
    assert str(home) in message and "data_home" in message
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py" in message
    assert len(calls) == 2  # one retry
    assert list(home.iterdir()) == []  # no partial file left behind


@pytest.mark.parametrize(
    "error, raised",
    [(ConnectionResetError("reset by peer"), OSError), (KeyboardInterrupt(), KeyboardInterrupt)],
    ids=["connection-reset", "interrupted"],
)
def test_failed_download_leaves_no_partial_file(tmp_path, monkeypatch, error, raised):
    content = archive_bytes()
    accept_archive(monkeypatch, "cifar10", content)

    def urlopen(request, timeout=None):
        return FailingStream(content[:1000], error)

    monkeypatch.setattr(datasets, "urlopen", urlopen)
    with pytest.raises(raised):
        load_cifar(tmp_path, download_if_missing=True, n_retries=0)
    assert list(tmp_path.iterdir()) == []


def test_missing_without_download(tmp_path):
    home = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(home, name="cifar100")
    message = str(info.value)
    assert f"looked in {home}" in message
    assert "cifar-100-python" in message and "cifar-100-python.tar.gz" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert "download_if_missing=True" in message and "data_home" in message
    assert not home.exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "cifar1000"}, "'name' parameter"),
        ({"subset": "validation"}, "'subset' parameter"),
        ({"label_mode": "medium"}, "'label_mode' parameter"),
        ({"label_mode": "coarse"}, "label_mode='coarse' is defined for name='cifar100' only"),
        ({"n_retries": -1}, "'n_retries' parameter"),
        ({"normalize": "yes"}, "'normalize' parameter"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    write_folder(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_cifar(tmp_path, **kwargs)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not REAL_CIFAR.is_dir(), reason="no CIFAR copy in ../shared/data/cifar")
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_real_cifar(name):
    if not any((REAL_CIFAR / p).exists() for p in (FOLDER[name], ARCHIVE[name])):
        pytest.skip(f"no {name} in {REAL_CIFAR}")
    n_classes = 10 if name == "cifar10" else 100
    for subset, n_samples in [("train", 50000), ("test", 10000)]:
        X, y = load_cifar(REAL_CIFAR, name=name, subset=subset, return_X_y=True)
        assert X.shape == (n_samples, 3, 32, 32) and X.dtype == np.float32
        assert X.min() == 0 and X.max() == 1
        # Both data sets are balanced, in both subsets.
        np.testing.assert_array_equal(np.bincount(y), [n_samples // n_classes] * n_classes)
    if name == "cifar10":
        assert list(load_cifar(REAL_CIFAR, subset="test").target_names) == CIFAR10_NAMES
    else:
        coarse = load_cifar(REAL_CIFAR, name=name, label_mode="coarse")
        assert len(coarse.target_names) == 20
        np.testing.assert_array_equal(np.bincount(coarse.target), [2500] * 20)
