"""Where the project keeps caches: ``$CEREB_CACHE`` or ``<project>/.cache``."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir(*parts: str) -> Path:
    """A cache folder (created on demand); never the user's home by surprise."""
    base = Path(os.environ.get("CEREB_CACHE") or PROJECT_ROOT / ".cache")
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
