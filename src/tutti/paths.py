"""Where tutti keeps its caches (``$TUTTI_HOME``, default ``~/.cache/tutti``)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def tutti_home() -> Path:
    """The cache root: ``$TUTTI_HOME`` or ``~/.cache/tutti``."""
    return Path(os.environ.get("TUTTI_HOME") or Path.home() / ".cache" / "tutti").expanduser()


def models_cache() -> Path:
    """Folder of materialised zoo models (safetensors converted from GGUF, copied folders)."""
    return tutti_home() / "models"


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, on failure it is
    removed, so readers see the old file or the whole new one, never a partial write."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
