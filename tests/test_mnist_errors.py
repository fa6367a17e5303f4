"""The MNIST IDX reader: every way a directory or file can be wrong names the problem."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    idx_bytes,
    synthetic_images,
    synthetic_labels,
    write_file,
    write_split,
)
from core.errors import CerebError, DataError
from tasks import TaskConfig, load_task
from tasks.mnist import check_mnist_dir, load_mnist_arrays, read_idx, resolve_data_dir


def test_bad_directory_raises_data_error_naming_the_problem(bad_mnist):
    directory, fragments = bad_mnist
    with pytest.raises(DataError) as info:
        check_mnist_dir(directory)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} missing from: {msg}"
    assert "\n" not in msg  # shown to the user as one line


def test_bad_directory_also_fails_through_load_task(bad_mnist):
    directory, fragments = bad_mnist
    with pytest.raises(DataError) as info:
        load_task(TaskConfig(name="mnist", data_dir=str(directory)))
    assert fragments[-1] in str(info.value)


def test_data_error_is_a_cereb_error():
    assert issubclass(DataError, CerebError)


def test_no_data_directory_at_all_says_how_to_give_one():
    with pytest.raises(DataError, match="need a data directory") as info:
        resolve_data_dir(None)
    assert "--data-dir" in str(info.value) and "CEREB_DATA" in str(info.value)


def test_a_file_instead_of_a_directory_is_rejected(tmp_path):
    f = tmp_path / "t10k-images-idx3-ubyte"
    f.write_bytes(b"")
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(str(f))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_round_trips_synthetic_files(tmp_path, gz):
    x = synthetic_images(7)
    y = synthetic_labels(7, offset=3)
    fi, fl = write_split(tmp_path, "t10k", x, y, gz=gz)
    assert fi.name.endswith(".gz") == gz
    got_x = read_idx(fi, IMAGES_MAGIC)
    got_y = read_idx(fl, LABELS_MAGIC)
    assert got_x.shape == (7, 28, 28) and got_x.dtype == np.uint8
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, [3, 4, 5, 6, 7, 8, 9])


def test_read_idx_checks_magic_against_expectation(tmp_path):
    f = write_file(tmp_path / "labels", idx_bytes(LABELS_MAGIC, (3,), [1, 2, 3]))
    with pytest.raises(DataError, match="wrong magic number 2049 .expected 2051 for IDX images"):
        read_idx(f, IMAGES_MAGIC)
    g = write_file(tmp_path / "garbage", b"\x00\x00\x00\x00" + b"\x00" * 10)
    with pytest.raises(DataError, match="wrong magic number 0 .expected 2049 for IDX labels"):
        read_idx(g, LABELS_MAGIC)


def test_empty_file_is_truncated(tmp_path):
    f = tmp_path / "t10k-labels-idx1-ubyte"
    f.write_bytes(b"")
    with pytest.raises(DataError, match="truncated: 0 bytes"):
        read_idx(f, LABELS_MAGIC)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_valid_tiny_test_only_set_loads_with_pixel_values_scaled(tmp_path, gz):
    n = 40
    write_split(tmp_path, "t10k", synthetic_images(n), synthetic_labels(n), gz=gz)
    arrays = load_mnist_arrays(tmp_path)
    assert set(arrays) == {"test"}
    ds = load_task(TaskConfig(name="mnist", data_dir=str(tmp_path), mnist_train_size=30))
    assert (len(ds.y_train), len(ds.y_test)) == (30, 10)
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (30, 784)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert np.all(x[:, 0] == 1.0)  # pixel 255 -> 1.0
        index = np.rint(x[:, 29] * 255).astype(int)  # pixel (1, 1) holds the image index
        np.testing.assert_array_equal(y, index % 10)  # each image kept its own label
        assert x.max() == 1.0 and x.min() == 0.0
    idx = np.concatenate([np.rint(ds.x_train[:, 29] * 255), np.rint(ds.x_test[:, 29] * 255)]).astype(int)
    assert sorted(idx) == list(range(n))  # a partition of the 40 images
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.ones(10))  # stratified
    assert "t10k split 30/10" in ds.info["split"]


def test_block_averaging_of_synthetic_images(tmp_path):
    write_split(tmp_path, "t10k", synthetic_images(20), synthetic_labels(20))
    ds = load_task(TaskConfig(name="mnist", data_dir=str(tmp_path), mnist_train_size=10, image_size=14))
    assert ds.x_train.shape == (10, 196) and ds.image_shape == (14, 14)
    img = ds.x_train.reshape(-1, 14, 14)
    # block (0, 0) averages 255, 0, 0, pixel(1,1) -> (255 + index) / 4 / 255
    index = np.rint((img[:, 0, 0] * 4 - 1) * 255).astype(int)
    np.testing.assert_array_equal(ds.y_train, index % 10)
    np.testing.assert_allclose(img[:, 13, 13], 1.0)  # the 2x2 block of 255
    assert np.all(img[:, 5, 5] == 0)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_full_train_and_test_set_uses_the_official_split(tmp_path, gz):
    x_tr, y_tr = synthetic_images(50), synthetic_labels(50)
    x_te, y_te = synthetic_images(20)[::-1].copy(), synthetic_labels(20, offset=5)
    write_split(tmp_path, "train", x_tr, y_tr, gz=gz)
    write_split(tmp_path, "t10k", x_te, y_te, gz=not gz)  # mixed compression in one directory
    assert set(load_mnist_arrays(tmp_path)) == {"train", "test"}
    ds = load_task(TaskConfig(name="mnist", data_dir=str(tmp_path)))
    assert ds.info["split"] == "official train/test"
    assert (len(ds.y_train), len(ds.y_test)) == (50, 20)
    np.testing.assert_array_equal(ds.x_train, x_tr.reshape(50, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.x_test, x_te.reshape(20, -1) / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)
    lines = check_mnist_dir(tmp_path)
    assert any(line.startswith("train: 50 images of 28x28") for line in lines)
    assert any(line.startswith("test: 20 images of 28x28, class counts [2, 2,") for line in lines)
    assert not any("no training files" in line for line in lines)


def test_test_only_set_smaller_than_mnist_train_size_is_a_data_error(tmp_path):
    # (was a ValueError from numpy: an empty test split)
    write_split(tmp_path, "t10k", synthetic_images(20), synthetic_labels(20))
    for name in ("mnist", "mnist01"):
        with pytest.raises(DataError, match=r"only 20 test images.*mnist_train_size \(8000\)"):
            load_task(TaskConfig(name=name, data_dir=str(tmp_path)))


def test_mnist01_without_zeros_and_ones_is_a_data_error(tmp_path):
    y = (np.arange(20) % 8 + 2).astype(np.uint8)  # digits 2-9 only
    write_split(tmp_path, "train", synthetic_images(20), y)
    write_split(tmp_path, "t10k", synthetic_images(20), y)
    with pytest.raises(DataError, match="mnist01: 0 training and 0 test examples"):
        load_task(TaskConfig(name="mnist01", data_dir=str(tmp_path)))
