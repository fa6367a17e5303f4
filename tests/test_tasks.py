"""The task registry: arrays in [0, 1], integer labels, right sizes, deterministic splits."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import REAL_MNIST, REAL_T10K_COUNTS
from core.errors import ConfigError, DataError
from tasks import TASKS, Dataset, TaskConfig, describe_tasks, load_task, stratified_split

# name -> (config overrides, n_inputs, n_classes, n_train, n_test)
EXPECTED = {
    "digits": ({}, 64, 10, 1438, 359),
    "patterns": ({}, 64, 2, 200, 400),
    "mnist": ({}, 784, 10, 8000, 2000),
    "mnist01": ({}, 784, 2, 1692, 423),
}


def test_registry_is_what_the_tests_cover():
    assert set(TASKS) == set(EXPECTED)


class _Loaded(dict):
    """Datasets by name; an MNIST task skips its test when the real files are absent."""

    def __missing__(self, name):
        pytest.skip(f"real MNIST not found in {REAL_MNIST} (set CEREB_TEST_MNIST)")


@pytest.fixture(scope="module")
def datasets() -> dict[str, Dataset]:
    """Every registry task loaded once (real MNIST from the t10k files)."""
    have_mnist = (REAL_MNIST / "t10k-images-idx3-ubyte.gz").is_file()
    return _Loaded(
        {name: load_task(TaskConfig(name=name, data_dir=str(REAL_MNIST)))
         for name in TASKS if have_mnist or not name.startswith("mnist")}
    )


@pytest.fixture(scope="module")
def mnist_seed1(real_mnist_dir) -> Dataset:
    return load_task(TaskConfig(name="mnist", data_dir=str(real_mnist_dir), split_seed=1))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_task_gives_float32_in_unit_interval_and_integer_labels(datasets, name):
    _, n_inputs, n_classes, n_train, n_test = EXPECTED[name]
    ds = datasets[name]
    assert ds.name == name
    assert ds.n_inputs == n_inputs and ds.n_classes == n_classes
    for x, y, n in ((ds.x_train, ds.y_train, n_train), (ds.x_test, ds.y_test, n_test)):
        assert x.dtype == np.float32 and x.shape == (n, n_inputs)
        assert x.flags.c_contiguous
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert np.issubdtype(y.dtype, np.integer) and y.shape == (n,)
        assert set(np.unique(y)) <= set(range(n_classes))
    assert set(np.unique(ds.y_train)) == set(range(n_classes))  # every class is trained


def test_mnist_uses_the_real_test_files_split_8000_2000(datasets, real_mnist_dir):
    ds = datasets["mnist"]
    assert ds.image_shape == (28, 28)
    assert ds.info["source"] == str(real_mnist_dir)
    assert ds.info["split"] == "t10k split 8000/2000 (split_seed 0)"
    total = np.bincount(ds.y_train, minlength=10) + np.bincount(ds.y_test, minlength=10)
    assert total.tolist() == REAL_T10K_COUNTS  # train + test partition the 10,000 images
    assert ds.x_train.max() == 1.0  # pixel 255 -> 1.0


def test_mnist01_is_the_zeros_and_ones_of_mnist(datasets):
    ds, full = datasets["mnist01"], datasets["mnist"]
    assert set(np.unique(ds.y_train)) == {0, 1} and set(np.unique(ds.y_test)) == {0, 1}
    assert len(ds.y_train) + len(ds.y_test) == REAL_T10K_COUNTS[0] + REAL_T10K_COUNTS[1]
    # the same split as mnist, restricted to digits 0 and 1
    np.testing.assert_array_equal(ds.x_train, full.x_train[full.y_train <= 1])
    np.testing.assert_array_equal(ds.y_test, full.y_test[full.y_test <= 1])


def test_mnist_image_size_14_gives_196_block_averaged_inputs(datasets, real_mnist_dir):
    ds = load_task(TaskConfig(name="mnist", data_dir=str(real_mnist_dir), image_size=14))
    full = datasets["mnist"]
    assert ds.n_inputs == 196 and ds.image_shape == (14, 14)
    assert ds.x_train.shape == (8000, 196) and ds.x_test.shape == (2000, 196)
    np.testing.assert_array_equal(ds.y_train, full.y_train)  # same split, only coarser images
    expected = full.x_train[:5].reshape(5, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(5, 196)
    np.testing.assert_allclose(ds.x_train[:5], expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["digits", "patterns", "mnist"])
def test_same_split_seed_gives_identical_splits(datasets, name):
    first = datasets[name]
    again = load_task(TaskConfig(name=name, data_dir=str(REAL_MNIST)))
    for attr in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, attr), getattr(first, attr))


@pytest.mark.parametrize("name", ["digits", "patterns"])
def test_other_split_seed_gives_another_split(datasets, name):
    other = load_task(TaskConfig(name=name, split_seed=1))
    assert not np.array_equal(other.x_test, datasets[name].x_test)
    assert not np.array_equal(other.y_train, datasets[name].y_train)


def test_other_split_seed_gives_another_mnist_split(datasets, mnist_seed1):
    assert not np.array_equal(mnist_seed1.y_train, datasets["mnist"].y_train)
    assert mnist_seed1.info["split"].endswith("(split_seed 1)")
    # still a stratified partition of the same 10,000 images
    total = np.bincount(mnist_seed1.y_train, minlength=10) + np.bincount(mnist_seed1.y_test, minlength=10)
    assert total.tolist() == REAL_T10K_COUNTS


def _row_keys(x: np.ndarray) -> list[bytes]:
    return [row.tobytes() for row in np.ascontiguousarray(x)]


def test_digits_train_and_test_partition_the_data(datasets):
    from sklearn.datasets import load_digits

    ds = datasets["digits"]
    all_rows = _row_keys((load_digits().data / 16.0).astype(np.float32))
    assert len(set(all_rows)) == len(all_rows)  # no duplicate images, so rows identify samples
    train, test = set(_row_keys(ds.x_train)), set(_row_keys(ds.x_test))
    assert train.isdisjoint(test)
    assert train | test == set(all_rows)


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_split_keeps_class_proportions(datasets, name):
    ds = datasets[name]
    y_all = np.concatenate([ds.y_train, ds.y_test])
    expected = np.bincount(y_all) * len(ds.y_test) / len(y_all)
    got = np.bincount(ds.y_test, minlength=ds.n_classes)
    assert np.all(np.abs(got - expected) < 1)  # largest-remainder rounding: off by less than one


def test_stratified_split_exact_counts():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    tr, te = stratified_split(y, 10, np.random.default_rng(0))
    assert np.bincount(y[te]).tolist() == [5, 3, 2]
    assert len(set(tr) | set(te)) == 100 and set(tr).isdisjoint(te)


def test_subsampling_is_stratified():
    ds = load_task(TaskConfig(name="digits", n_train=100, n_test=50))
    assert (len(ds.y_train), len(ds.y_test)) == (100, 50)
    assert np.all(np.abs(np.bincount(ds.y_train, minlength=10) - 10) <= 1)
    assert np.all(np.abs(np.bincount(ds.y_test, minlength=10) - 5) <= 1)


@pytest.mark.parametrize("noise", [0.05, 0.2])
def test_binary_patterns_test_inputs_are_noisy_copies(noise):
    cfg = TaskConfig(name="patterns", n_patterns=300, dim=100, noise=noise, coding_level=0.2, test_per_pattern=3)
    ds = load_task(cfg)
    assert set(np.unique(ds.x_train)) == {0.0, 1.0}
    assert abs(ds.x_train.mean() - 0.2) < 0.01  # coding level
    clean = np.repeat(ds.x_train, 3, axis=0)
    np.testing.assert_array_equal(ds.y_test, np.repeat(ds.y_train, 3))
    flipped = (ds.x_test != clean).mean()  # 90,000 bits: std of the rate < 0.0014
    assert abs(flipped - noise) < 0.01


def test_gaussian_patterns_test_inputs_are_noisy_copies():
    ds = load_task(TaskConfig(name="patterns", pattern_kind="gaussian", noise=0.5, n_patterns=200, dim=50))
    assert abs(ds.x_train.mean() - 0.5) < 0.02 and 0.15 < ds.x_train.std() < 0.25
    diff = ds.x_test - np.repeat(ds.x_train, 2, axis=0)
    assert 0.05 < diff.std() < 0.11  # noise * 0.2 = 0.1 before clipping
    assert ds.info["pattern_kind"] == "gaussian"


def test_patterns_without_noise_repeat_the_training_set():
    ds = load_task(TaskConfig(name="patterns", noise=0.0, n_classes=3))
    np.testing.assert_array_equal(ds.x_test, np.repeat(ds.x_train, 2, axis=0))
    assert set(np.unique(ds.y_train)) == {0, 1, 2} and ds.n_classes == 3


def test_cereb_data_env_var_is_honoured(monkeypatch, real_mnist_dir, datasets):
    monkeypatch.setenv("CEREB_DATA", str(real_mnist_dir))
    ds = load_task("mnist")
    assert ds.info["source"] == str(real_mnist_dir)
    np.testing.assert_array_equal(ds.y_test, datasets["mnist"].y_test)


def test_data_dir_wins_over_cereb_data(monkeypatch, real_mnist_dir):
    monkeypatch.setenv("CEREB_DATA", "/nonexistent/mnist")
    ds = load_task(TaskConfig(name="mnist01", data_dir=str(real_mnist_dir), n_test=10))
    assert len(ds.y_test) == 10
    with pytest.raises(DataError, match="/nonexistent/mnist does not exist"):
        load_task("mnist01")


def test_mnist_without_any_data_directory():
    with pytest.raises(DataError, match="need a data directory"):
        load_task("mnist")


def test_unknown_task_name_raises_config_error():
    with pytest.raises(ConfigError, match=r"unknown task 'cifar' \(known tasks: digits, mnist, mnist01, patterns\)"):
        load_task("cifar")
    with pytest.raises(ConfigError, match="unknown task 'cifar'"):
        load_task(TaskConfig(name="cifar"))  # type: ignore[arg-type]  (bypassing resolve)


def test_describe_tasks_without_and_with_data(real_mnist_dir):
    rows = {r["task"]: r for r in describe_tasks()}
    assert set(rows) == set(TASKS)
    assert (rows["digits"]["n_inputs"], rows["digits"]["n_train"], rows["digits"]["n_test"]) == (64, 1438, 359)
    assert rows["mnist"]["n_inputs"] is None and rows["mnist"]["note"] == "needs --data-dir or CEREB_DATA"
    rows = {r["task"]: r for r in describe_tasks(str(real_mnist_dir))}
    assert (rows["mnist"]["n_train"], rows["mnist"]["n_test"]) == (8000, 2000)
    assert rows["mnist01"]["n_classes"] == 2
