"""Fitted routers saved under ``$TUTTI_HOME/routers/`` and keyed by a hash of everything the fit depends on.

A ``router`` composite trains at load time; with the store, only the first load trains: the key hashes the
training matrix (the members' columns: prompts, ids, scores), the router name and settings and the featurizer, so any change
to them trains (and saves) a new router, while re-loading the same config reads the saved one and makes the same
decisions. Files are plain tensors (``torch.load(weights_only=True)``), never pickled objects.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from tutti.paths import atomic_file, tutti_home
from tutti.routing.matrix import CorrectnessMatrix

VERSION = 1  # bump when a router's state layout changes


def router_key(matrix: CorrectnessMatrix, *, router: str, router_options: dict[str, Any], features: str,
               features_model: str | None) -> str:
    """A hex key over the (column-selected) training matrix and every fit setting."""
    h = hashlib.sha256(json.dumps([matrix.ids, matrix.prompts, matrix.models]).encode())
    h.update(matrix.scores.double().contiguous().numpy().tobytes())
    spec = {"v": VERSION, "router": router, "options": router_options, "features": features,
            "features_model": features_model}
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def router_file(key: str, root: str | Path | None = None) -> Path:
    """Where the router of ``key`` lives (default root: ``$TUTTI_HOME/routers``)."""
    return (Path(root) if root is not None else tutti_home() / "routers") / f"{key}.pt"


def save_router(path: Path, router: Any) -> Path:
    """Write ``router.state()`` atomically."""
    with atomic_file(path) as tmp:
        torch.save({k: v.detach().clone() for k, v in router.state().items()}, tmp)
    return path


def load_router_state(path: Path) -> dict[str, torch.Tensor] | None:
    """The saved state, or None when there is none (or it cannot be read: the caller refits)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # a truncated or foreign file: refit and overwrite rather than fail the load
        return None
