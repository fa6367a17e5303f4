"""Shared plumbing imported by every package: errors, configuration, run folders, paths.

Nothing here knows about neurons, attacks or datasets; it sits below all other packages.
"""
from core.errors import CerebError, ConfigError, DataError, CheckpointError

__all__ = ["CerebError", "ConfigError", "DataError", "CheckpointError"]
