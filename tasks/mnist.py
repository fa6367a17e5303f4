"""Reader for the MNIST handwritten digits in their original IDX format.

The files (gzipped or not) are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (LeCun, Cortes & Burges, 1998).
An IDX file starts with a big-endian magic number (2051 for images, 2049 for labels)
followed by the dimension sizes, then uint8 data. Every way a file can be wrong raises a
:class:`~core.errors.DataError` that names the file and the problem.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from core.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SPLITS = {"train": "train", "test": "t10k"}
WHERE = (
    "MNIST is distributed as four IDX files (train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), "
    "e.g. from the MNIST page of Yann LeCun or its mirrors; put them in one directory and pass "
    "--data-dir DIR or set CEREB_DATA=DIR"
)

__all__ = ["read_idx", "find_files", "load_mnist_arrays", "check_mnist_dir", "resolve_data_dir"]


def resolve_data_dir(data_dir: str | None) -> Path:
    """The MNIST directory: ``data_dir`` if given, else ``$CEREB_DATA``; it must exist."""
    chosen = data_dir or os.environ.get("CEREB_DATA")
    if not chosen:
        raise DataError(f"the mnist tasks need a data directory. {WHERE}")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataError(f"MNIST data directory {path} does not exist. {WHERE}")
    return path


def _open(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'a file'} ({exc})") from None


def read_idx(path: str | Path, expect_magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes and check its header against its length.

    Returns an array of shape ``(n, rows, cols)`` for images or ``(n,)`` for labels.
    """
    path = Path(path)
    data = _open(path)
    if len(data) < 8:
        raise DataError(f"{path}: truncated: {len(data)} bytes is shorter than an IDX header")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expect_magic:
        what = "images" if expect_magic == IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path}: wrong magic number {magic} (expected {expect_magic} for IDX {what}); "
            "not an MNIST file, or images and labels swapped"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated inside its header")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    expected = int(np.prod(dims))
    got = len(data) - header
    if got < expected:
        raise DataError(
            f"{path}: truncated: header says {' x '.join(map(str, dims))} values "
            f"({expected} bytes) but only {got} bytes follow"
        )
    if got > expected:
        raise DataError(f"{path}: {got - expected} unexpected bytes after the data (corrupt file)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_files(directory: Path, split: str) -> tuple[Path, Path] | None:
    """Image and label files of ``split`` ('train' or 'test'), gzipped or not; None if absent."""
    stem = SPLITS[split]
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        cands = [directory / f"{stem}-{kind}", directory / f"{stem}-{kind}.gz"]
        hit = next((c for c in cands if c.is_file()), None)
        found.append(hit)
    if all(f is None for f in found):
        return None
    if any(f is None for f in found):
        have, missing = (found[0], "labels") if found[0] else (found[1], "images")
        raise DataError(f"{directory}: found {have.name} but not the matching {stem} {missing} file. {WHERE}")
    return found[0], found[1]


def _load_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, IMAGES_MAGIC)
    y = read_idx(labels, LABELS_MAGIC)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DataError(f"{images}: expected 28x28 MNIST images, got an array of shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{labels}: expected a 1-d label array, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{images.name} has {len(x)} images but {labels.name} has {len(y)} labels")
    if y.size and int(y.max()) > 9:
        raise DataError(f"{labels}: label {int(y.max())} is not a digit 0-9 (corrupt file)")
    return x, y


def load_mnist_arrays(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load every split present in ``directory``: ``{"train": (x, y), "test": (x, y)}``.

    The test split is required; the training split is optional (when it is missing the
    caller splits the test set).
    """
    out = {}
    for split in ("train", "test"):
        files = find_files(directory, split)
        if files is not None:
            out[split] = _load_pair(*files)
    if "test" not in out:
        raise DataError(
            f"no MNIST test files (t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]) in {directory}. {WHERE}"
        )
    return out


def check_mnist_dir(directory: str | Path) -> list[str]:
    """Human-readable lines describing the MNIST files in ``directory`` (raises on problems)."""
    directory = resolve_data_dir(str(directory))
    arrays = load_mnist_arrays(directory)
    lines = []
    for split, (x, y) in arrays.items():
        counts = np.bincount(y, minlength=10)
        lines.append(
            f"{split}: {len(x)} images of {x.shape[1]}x{x.shape[2]}, class counts {counts.tolist()}"
        )
    if "train" not in arrays:
        lines.append("no training files: the mnist task splits the 10k test set (see task.mnist_train_size)")
    return lines
