"""Where tutti keeps its caches (``$TUTTI_HOME``, default ``~/.cache/tutti``)."""

from __future__ import annotations

import os
from pathlib import Path


def tutti_home() -> Path:
    """The cache root: ``$TUTTI_HOME`` or ``~/.cache/tutti``."""
    return Path(os.environ.get("TUTTI_HOME") or Path.home() / ".cache" / "tutti").expanduser()


def models_cache() -> Path:
    """Folder of materialised zoo models (safetensors converted from GGUF, copied folders)."""
    return tutti_home() / "models"
