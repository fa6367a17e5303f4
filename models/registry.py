"""The model registry: what ``cereb train --model NAME`` can build.

Each entry names the module that provides, for that model kind:

``model_config(kind)`` -> the frozen dataclass of its ``model.*`` section,
``train_config(kind)`` -> the frozen dataclass of its ``train.*`` section,
``fit(kind, dataset, model_cfg, train_cfg, seed, run, progress)`` -> metrics dict
    (must contain ``train_accuracy`` and ``test_accuracy``); writes ``checkpoint.npz`` and
    ``learning_curve.csv`` into ``run.path``.

Modules are imported lazily so that ``cereb --help`` does not import torch or Brian2.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from core.errors import ConfigError

MODELS: dict[str, str] = {
    "rate": "models.rate",
    "mlp": "models.rate",
    "spiking": "models.spiking.train",
}

__all__ = ["MODELS", "model_module"]


def model_module(kind: str) -> ModuleType:
    """The module implementing model ``kind``."""
    if kind not in MODELS:
        raise ConfigError(f"unknown model '{kind}' (known models: {', '.join(MODELS)})")
    return importlib.import_module(MODELS[kind])
