"""Shared fixtures: the real MNIST directory, synthetic IDX files, and a table of broken MNIST dirs."""
from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import numpy as np
import pytest

# The real MNIST test set (read-only; never write there). Override with CEREB_TEST_MNIST.
REAL_MNIST = Path(os.environ.get("CEREB_TEST_MNIST", "/work/shared/data/mnist"))
REAL_T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


@pytest.fixture(autouse=True)
def _no_user_data_env(monkeypatch):
    """Tests never depend on the caller's CEREB_DATA; those that need it set it themselves."""
    monkeypatch.delenv("CEREB_DATA", raising=False)


@pytest.fixture(autouse=True)
def _restore_logging():
    """``run_command`` reconfigures the root logger (onto a captured stream); put it back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module of tiny matrices: with two OpenMP threads on a busy
    two-core machine each product waits ~15 ms for the other thread; one thread takes
    microseconds. Used as ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    if not (REAL_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {REAL_MNIST} (set CEREB_TEST_MNIST)")
    return REAL_MNIST


# ----------------------------------------------------------------------------- synthetic IDX
def idx_bytes(magic: int, dims: tuple[int, ...], data) -> bytes:
    """An IDX file: big-endian magic, big-endian dimension sizes, then uint8 data."""
    payload = np.asarray(data, dtype=np.uint8).tobytes()
    return struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims) + payload


def write_file(path: Path, raw: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def synthetic_images(n: int) -> np.ndarray:
    """``(n, 28, 28)`` uint8: pixel (0, 0) = 255, pixel (1, 1) = image index, rest 0 except a
    2x2 block of 255 at rows 26-27, cols 26-27 (so a 14x14 block mean gives exactly 1.0 there)."""
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    x[:, 0, 0] = 255
    x[:, 1, 1] = np.arange(n) % 256
    x[:, 26:28, 26:28] = 255
    return x


def synthetic_labels(n: int, offset: int = 0) -> np.ndarray:
    return ((np.arange(n) + offset) % 10).astype(np.uint8)


def write_split(directory: Path, stem: str, x: np.ndarray, y: np.ndarray, gz: bool = False) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    fi = write_file(directory / f"{stem}-images-idx3-ubyte", idx_bytes(IMAGES_MAGIC, x.shape, x), gz)
    fl = write_file(directory / f"{stem}-labels-idx1-ubyte", idx_bytes(LABELS_MAGIC, y.shape, y), gz)
    return fi, fl


# ----------------------------------------------------------------------------- broken dirs
def _valid(d: Path, n: int = 20, gz: bool = False) -> tuple[Path, Path]:
    return write_split(d, "t10k", synthetic_images(n), synthetic_labels(n), gz)


def _missing_dir(d):
    return d / "does-not-exist"


def _empty_dir(d):
    d.mkdir()
    return d


def _images_only(d):
    _, fl = _valid(d)
    fl.unlink()
    return d


def _labels_only(d):
    fi, _ = _valid(d, gz=True)
    fi.unlink()
    return d


def _swapped(d):
    fi, fl = _valid(d)
    a, b = fi.read_bytes(), fl.read_bytes()
    fi.write_bytes(b)
    fl.write_bytes(a)
    return d


def _truncated(d):
    fi, _ = _valid(d)
    fi.write_bytes(fi.read_bytes()[:-100])
    return d


def _truncated_header(d):
    fi, _ = _valid(d)
    fi.write_bytes(fi.read_bytes()[:6])
    return d


def _trailing_bytes(d):
    _, fl = _valid(d)
    fl.write_bytes(fl.read_bytes() + b"\x00\x01\x02")
    return d


def _count_mismatch(d):
    x = synthetic_images(20)
    y = synthetic_labels(19)
    write_split(d, "t10k", x, y)
    return d


def _corrupt_gz(d):
    _valid(d, gz=True)
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all" * 10)
    return d


def _truncated_gz(d):
    fi, _ = _valid(d, gz=True)
    fi.write_bytes(fi.read_bytes()[: len(fi.read_bytes()) // 2])
    return d


def _label_too_big(d):
    y = synthetic_labels(20)
    y[3] = 12
    write_split(d, "t10k", synthetic_images(20), y)
    return d


def _wrong_image_size(d):
    x = np.zeros((20, 10, 10), dtype=np.uint8)
    write_split(d, "t10k", x, synthetic_labels(20))
    return d


def _train_labels_missing(d):
    _valid(d)
    fi, fl = write_split(d, "train", synthetic_images(30), synthetic_labels(30))
    fl.unlink()
    return d


# name -> (builder(tmp_dir) -> data dir, fragments the error message must contain)
BAD_MNIST = {
    "missing_dir": (_missing_dir, ["does-not-exist", "does not exist", "--data-dir", "CEREB_DATA"]),
    "empty_dir": (
        _empty_dir,
        ["no MNIST test files", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "LeCun", "--data-dir"],
    ),
    "images_only": (_images_only, ["found t10k-images-idx3-ubyte", "not the matching t10k labels file"]),
    "labels_only": (_labels_only, ["found t10k-labels-idx1-ubyte.gz", "not the matching t10k images file"]),
    "swapped": (_swapped, ["t10k-images-idx3-ubyte", "wrong magic number 2049", "expected 2051", "swapped"]),
    "truncated": (_truncated, ["t10k-images-idx3-ubyte", "truncated", "20 x 28 x 28", "15680 bytes"]),
    "truncated_header": (_truncated_header, ["t10k-images-idx3-ubyte", "truncated", "6 bytes"]),
    "trailing_bytes": (_trailing_bytes, ["t10k-labels-idx1-ubyte", "3 unexpected bytes"]),
    "count_mismatch": (_count_mismatch, ["20 images", "19 labels"]),
    "corrupt_gz": (_corrupt_gz, ["t10k-images-idx3-ubyte.gz", "cannot be read as gzip"]),
    "truncated_gz": (_truncated_gz, ["t10k-images-idx3-ubyte.gz", "cannot be read as gzip"]),
    "label_too_big": (_label_too_big, ["t10k-labels-idx1-ubyte", "label 12 is not a digit"]),
    "wrong_image_size": (_wrong_image_size, ["t10k-images-idx3-ubyte", "28x28", "(20, 10, 10)"]),
    "train_labels_missing": (_train_labels_missing, ["found train-images-idx3-ubyte", "train labels"]),
}


@pytest.fixture(params=sorted(BAD_MNIST))
def bad_mnist(request, tmp_path) -> tuple[Path, list[str]]:
    """A broken MNIST directory and the fragments its error message must contain."""
    build, fragments = BAD_MNIST[request.param]
    return build(tmp_path / "mnist"), fragments
