"""Proposer-output cache: a re-run with another aggregator reuses the candidates instead of regenerating them.

A key is the SHA-256 of (member name, prompt, decoding settings); the value is the list of completions. The
cache lives in memory and, with a folder, in an append-only ``proposals.jsonl`` (one ``{"key", "outputs"}``
per line) that later runs and other strategies read back.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from tutti.errors import TuttiError
from tutti.models.interface import Prompt, SamplingParams


def cache_key(member: str, prompt: Prompt, params: SamplingParams, salt: str = "") -> str:
    """A stable key for the completions of ``member`` on ``prompt`` with ``params``."""
    fields = {k: getattr(params, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p", "seed",
                                             "stop", "n")}
    blob = json.dumps([member, prompt, fields, salt], sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()


class ProposalCache:
    """Completions by key, optionally persisted to ``<folder>/proposals.jsonl``.

    Args:
        folder: where to persist (``None`` = memory only).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self._data: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        if self.folder is not None:
            f = self.folder / "proposals.jsonl"
            if f.is_file():
                for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        self._data[row["key"]] = row["outputs"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise TuttiError(f"{f}:{n}: corrupt proposal cache line; delete the file to rebuild it") from None

    def get(self, key: str) -> list[dict[str, Any]] | None:
        """The cached outputs of ``key`` (counted as a hit or a miss)."""
        with self._lock:
            out = self._data.get(key)
            if out is None:
                self.misses += 1
            else:
                self.hits += 1
            return out

    def put(self, key: str, outputs: list[dict[str, Any]]) -> None:
        """Store (and append to disk) the outputs of ``key``."""
        with self._lock:
            self._data[key] = outputs
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
                with (self.folder / "proposals.jsonl").open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"key": key, "outputs": outputs}) + "\n")

    def __len__(self) -> int:
        return len(self._data)
