"""Datasets and tasks: float32 inputs in [0, 1] of shape ``(n, n_inputs)`` and integer labels.

Registry
--------
``digits``    scikit-learn's embedded 8x8 handwritten digits (1,797 images, 64 inputs, 10 classes;
              Alpaydin & Kaynak 1998). The default: needs no download.
``mnist``     MNIST from IDX files in ``task.data_dir`` (or ``$CEREB_DATA``). When only the 10k
              test files are present they are split deterministically (8,000 / 2,000 by default).
              ``task.image_size`` < 28 block-averages the images (e.g. 14 -> 196 inputs).
``mnist01``   the 0-vs-1 subset of ``mnist`` (the seed paper's binary task), labels 0/1.
``patterns``  random-pattern association (Marr 1969; Albus 1971): P random patterns of dimension D,
              Gaussian or binary with a coding level, random labels in C classes; the test
              patterns are the training patterns with noise.

Every split is a deterministic function of ``task.split_seed`` (independent of the model seed,
so that runs with different model seeds are evaluated on the same test images).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TaskName = Literal["digits", "mnist", "mnist01", "patterns"]

__all__ = ["TaskConfig", "Dataset", "TASKS", "load_task", "describe_tasks"]


@dataclass(frozen=True)
class TaskConfig:
    """Which task, and how to split and subsample it.

    Attributes
    ----------
    name : task in the registry.
    data_dir : MNIST directory (falls back to ``$CEREB_DATA``); ignored by digits and patterns.
    split_seed : seed of the train/test split and of subsampling.
    test_fraction : digits only: fraction held out for testing (0.2 -> 1,438 / 359).
    mnist_train_size : when only the 10k MNIST test files exist, how many become training data.
    image_size : MNIST side after block averaging (28, 14, 7 or 4).
    n_train, n_test : optional stratified subsample sizes (None = all).
    n_patterns, dim, pattern_kind, coding_level, n_classes, noise, test_per_pattern : patterns task.
    """

    name: TaskName = "digits"
    data_dir: str | None = None
    split_seed: int = 0
    test_fraction: float = 0.2
    mnist_train_size: int = 8000
    image_size: int = 28
    n_train: int | None = None
    n_test: int | None = None
    # patterns
    n_patterns: int = 200
    dim: int = 64
    pattern_kind: Literal["gaussian", "binary"] = "binary"
    coding_level: float = 0.2
    n_classes: int = 2
    noise: float = 0.05
    test_per_pattern: int = 2

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"task.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.image_size not in (28, 14, 7, 4, 2, 1):
            raise ValueError(f"task.image_size must divide 28 (28, 14, 7, 4, 2, 1), got {self.image_size}")
        for name in ("n_train", "n_test"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"task.{name} must be positive, got {v}")
        if not 0 < self.coding_level < 1:
            raise ValueError(f"task.coding_level must be in (0, 1), got {self.coding_level}")
        if not 0 <= self.noise <= 1:
            raise ValueError(f"task.noise must be in [0, 1], got {self.noise}")
        if self.n_classes < 2 or self.n_patterns < 1 or self.dim < 1 or self.test_per_pattern < 1:
            raise ValueError("task.n_classes >= 2, task.n_patterns, task.dim and task.test_per_pattern >= 1")
        if not 0 < self.mnist_train_size < 10000:
            raise ValueError(f"task.mnist_train_size must be in (0, 10000), got {self.mnist_train_size}")


@dataclass(frozen=True)
class Dataset:
    """A task's arrays. ``x_*``: float32 ``(n, n_inputs)`` in [0, 1]; ``y_*``: int64 ``(n,)``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple[int, int] | None = None
    info: dict = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        return int(self.x_train.shape[1])


# ----------------------------------------------------------------------------- helpers
def stratified_split(y: np.ndarray, n_test: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with class proportions kept (largest-remainder rounding)."""
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * n_test / len(y)
    take = np.floor(exact).astype(int)
    rest = n_test - take.sum()
    take[np.argsort(-(exact - take), kind="stable")[:rest]] += 1
    test = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(y == c)
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def _subsample(x, y, n, rng):
    if n is None or n >= len(y):
        return x, y
    _, keep = stratified_split(y, n, rng)
    return x[keep], y[keep]


def _block_mean(images: np.ndarray, side: int) -> np.ndarray:
    n, h, w = images.shape
    f = h // side
    return images.reshape(n, side, f, side, f).mean(axis=(2, 4))


def _finish(name, x_tr, y_tr, x_te, y_te, n_classes, cfg: TaskConfig, rng, image_shape=None, info=None) -> Dataset:
    x_tr, y_tr = _subsample(x_tr, y_tr, cfg.n_train, rng)
    x_te, y_te = _subsample(x_te, y_te, cfg.n_test, rng)
    if len(y_tr) == 0 or len(y_te) == 0:
        raise DataError(f"task {name}: {len(y_tr)} training and {len(y_te)} test examples; both must be non-empty")
    ds = Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_tr, dtype=np.float32),
        y_train=np.asarray(y_tr, dtype=np.int64),
        x_test=np.ascontiguousarray(x_te, dtype=np.float32),
        y_test=np.asarray(y_te, dtype=np.int64),
        n_classes=n_classes,
        image_shape=image_shape,
        info=info or {},
    )
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    return ds


# ----------------------------------------------------------------------------- loaders
def _load_digits(cfg: TaskConfig) -> Dataset:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float32) / 16.0
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(cfg.split_seed)
    n_test = int(round(cfg.test_fraction * len(y)))
    tr, te = stratified_split(y, n_test, rng)
    return _finish("digits", x[tr], y[tr], x[te], y[te], 10, cfg, rng, (8, 8), {"source": "sklearn.datasets.load_digits"})


def _mnist_arrays(cfg: TaskConfig):
    from tasks.mnist import load_mnist_arrays, resolve_data_dir

    directory = resolve_data_dir(cfg.data_dir)
    arrays = load_mnist_arrays(directory)
    rng = np.random.default_rng(cfg.split_seed)
    if "train" in arrays:
        (x_tr, y_tr), (x_te, y_te) = arrays["train"], arrays["test"]
        info = {"source": str(directory), "split": "official train/test"}
    else:
        x, y = arrays["test"]
        if len(y) <= cfg.mnist_train_size:
            raise DataError(
                f"{directory}: only {len(y)} test images and no training files; "
                f"task.mnist_train_size ({cfg.mnist_train_size}) must be smaller"
            )
        tr, te = stratified_split(y, len(y) - cfg.mnist_train_size, rng)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        info = {"source": str(directory), "split": f"t10k split {len(tr)}/{len(te)} (split_seed {cfg.split_seed})"}
    return x_tr, y_tr, x_te, y_te, rng, info


def _prepare_images(x: np.ndarray, side: int) -> np.ndarray:
    x = x.astype(np.float32) / 255.0
    if side != x.shape[1]:
        x = _block_mean(x, side)
    return x.reshape(len(x), x.shape[1] * x.shape[2])


def _load_mnist(cfg: TaskConfig) -> Dataset:
    x_tr, y_tr, x_te, y_te, rng, info = _mnist_arrays(cfg)
    s = cfg.image_size
    return _finish("mnist", _prepare_images(x_tr, s), y_tr, _prepare_images(x_te, s), y_te, 10, cfg, rng, (s, s), info)


def _load_mnist01(cfg: TaskConfig) -> Dataset:
    x_tr, y_tr, x_te, y_te, rng, info = _mnist_arrays(cfg)
    s = cfg.image_size
    mtr, mte = y_tr <= 1, y_te <= 1
    return _finish(
        "mnist01", _prepare_images(x_tr[mtr], s), y_tr[mtr], _prepare_images(x_te[mte], s), y_te[mte], 2, cfg, rng, (s, s), info
    )


def _load_patterns(cfg: TaskConfig) -> Dataset:
    """Random patterns; test inputs are noisy copies of the training patterns.

    Binary patterns: each input is 1 with probability ``coding_level``; noise flips each bit
    with probability ``noise``. Gaussian patterns: ``clip(0.5 + 0.2 z, 0, 1)``; noise adds
    ``noise`` times an independent Gaussian of the same scale.
    """
    rng = np.random.default_rng(cfg.split_seed)
    P, D = cfg.n_patterns, cfg.dim
    y = rng.integers(0, cfg.n_classes, size=P)
    if cfg.pattern_kind == "binary":
        x = (rng.random((P, D)) < cfg.coding_level).astype(np.float32)
        reps = np.repeat(x, cfg.test_per_pattern, axis=0)
        flip = rng.random(reps.shape) < cfg.noise
        x_te = np.where(flip, 1 - reps, reps)
    else:
        x = np.clip(0.5 + 0.2 * rng.standard_normal((P, D)), 0, 1).astype(np.float32)
        reps = np.repeat(x, cfg.test_per_pattern, axis=0)
        x_te = np.clip(reps + cfg.noise * 0.2 * rng.standard_normal(reps.shape), 0, 1)
    y_te = np.repeat(y, cfg.test_per_pattern)
    info = {"pattern_kind": cfg.pattern_kind, "coding_level": cfg.coding_level, "noise": cfg.noise}
    return _finish("patterns", x, y, x_te, y_te, cfg.n_classes, cfg, rng, None, info)


TASKS: dict[str, Callable[[TaskConfig], Dataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "mnist01": _load_mnist01,
    "patterns": _load_patterns,
}


def load_task(cfg: TaskConfig | str) -> Dataset:
    """Load the task named in ``cfg`` (a :class:`TaskConfig` or a task name)."""
    if isinstance(cfg, str):
        if cfg not in TASKS:
            raise ConfigError(f"unknown task '{cfg}' (known tasks: {', '.join(TASKS)})")
        cfg = TaskConfig(name=cfg)
    if cfg.name not in TASKS:
        raise ConfigError(f"unknown task '{cfg.name}' (known tasks: {', '.join(TASKS)})")
    ds = TASKS[cfg.name](cfg)
    log.info("task %s: %d train, %d test, %d inputs, %d classes", ds.name, len(ds.y_train), len(ds.y_test), ds.n_inputs, ds.n_classes)
    return ds


def describe_tasks(data_dir: str | None = None) -> list[dict]:
    """One row per task: name, inputs, classes, train and test sizes (or why it is unavailable)."""
    rows = []
    for name in TASKS:
        cfg = TaskConfig(name=name, data_dir=data_dir)
        try:
            ds = load_task(cfg)
            rows.append({"task": name, "n_inputs": ds.n_inputs, "n_classes": ds.n_classes,
                         "n_train": len(ds.y_train), "n_test": len(ds.y_test), "note": ds.info.get("split", ds.info.get("source", ""))})
        except DataError as exc:
            msg = "needs --data-dir or CEREB_DATA" if "need" in str(exc) and "data directory" in str(exc) else str(exc)
            rows.append({"task": name, "n_inputs": None, "n_classes": None, "n_train": None, "n_test": None, "note": msg})
    return rows
