"""Atomic swarm checkpoints: one safetensors file holding the tensors, with the JSON state in its metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from tutti.errors import CheckpointError
from tutti.paths import atomic_file
from tutti.swarm.core import Swarm

STATE_FILE = "swarm_state.safetensors"


def save_state(run_dir: str | Path, swarm: Swarm, extra: dict[str, Any] | None = None) -> Path:
    """Write the swarm's full state to ``run_dir/swarm_state.safetensors`` atomically (temp file + rename)."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    tensors, meta = swarm.state_dict()
    metadata = {"swarm": json.dumps(meta), "extra": json.dumps(extra or {})}
    with atomic_file(d / STATE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename, so a crash keeps the old state or the new one
    return d / STATE_FILE


def load_state(run_dir: str | Path) -> tuple[Swarm, dict[str, Any]]:
    """Read a state written by :func:`save_state`; returns the swarm and the ``extra`` dict."""
    p = Path(run_dir) / STATE_FILE
    if not p.is_file():
        raise CheckpointError(f"{run_dir}: no {STATE_FILE}; is this a swarm run folder (tutti swarm --out)?")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        swarm = Swarm.from_state(tensors, json.loads(meta["swarm"]))
        return swarm, json.loads(meta.get("extra", "{}"))
    except (KeyError, ValueError, OSError) as e:
        raise CheckpointError(f"{p}: unreadable swarm state ({e}); start a new run with --out") from None
