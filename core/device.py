"""The torch device of the rate model, the MLP, the surrogate and the torch attacks.

``--set device=auto`` (the default) takes a CUDA GPU when torch sees one and the CPU otherwise;
``device=cpu`` forces the CPU; ``device=cuda`` (or ``cuda:N``) asks for a GPU and is an error
without one. The device is not part of a run's configuration (a run computed on a GPU is reused
by a CPU-only rerun of the same configuration, and the other way round): the requested and the
resolved device go to ``meta.json``. The spiking network itself always runs on the CPU (Brian2's
Cython runtime); see ``docs/gpu.md`` for its route to a GPU.
"""
from __future__ import annotations

from typing import Any

from core.errors import CerebError, ConfigError

DEFAULT = "auto"


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the platform has one (so
    ``taskset -c 0 cereb study ...`` or a cluster's CPU binding is respected), else ``os.cpu_count()``."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def pop_device(overrides: dict) -> tuple[dict, str]:
    """Split the top-level ``device`` key off a configuration's overrides: ``(rest, device)``."""
    rest = dict(overrides)
    spec = rest.pop("device", DEFAULT)
    if not isinstance(spec, str):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    return rest, spec


def resolve_device(spec: str = DEFAULT) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> the torch device to use (``cpu``, ``cuda:0``, ...)."""
    import torch

    spec = str(spec).strip().lower()
    if spec == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise CerebError(f"device={spec}: no CUDA GPU is available (torch {torch.__version__}, {build}); "
                             "use device=auto or device=cpu")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise CerebError(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return f"cuda:{index}"
    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def device_meta(spec: str, resolved: str) -> dict[str, Any]:
    """What ``meta.json`` records: the requested and the resolved device (and the GPU's name)."""
    out: dict[str, Any] = {"device_requested": spec, "device": resolved}
    if resolved.startswith("cuda"):
        import torch

        out["device_name"] = torch.cuda.get_device_name(int(resolved.split(":")[1]))
    return out
