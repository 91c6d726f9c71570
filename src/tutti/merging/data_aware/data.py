"""The small prompt sets that data-aware merges run through each model.

A JSONL file, one JSON object per line:

* ``{"prompt": "..."}`` or ``{"prompt": [{"role": "user", "content": "..."}]}`` (a chat, rendered with the
  model's chat template), optionally with ``"completion": "..."``, the target continuation;
* or ``{"text": "..."}``, a whole sequence.

RegMean reads every token of prompt + completion. Fisher merging scores the completion given the prompt; rows
without one are completed by a sample from the model itself (the "true" Fisher), ``text`` rows are scored
whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tutti.errors import TuttiError


@dataclass(frozen=True)
class Example:
    """One row: a prompt (text or chat) and an optional target continuation."""

    prompt: str | tuple[dict[str, str], ...]
    completion: str | None = None
    whole_text: bool = False


def _row(obj: Any, where: str) -> Example:
    if not isinstance(obj, dict):
        raise TuttiError(f"{where}: each line must be a JSON object with 'prompt' (and optional 'completion') "
                         f"or 'text'")
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"]:
            raise TuttiError(f"{where}: 'text' must be a non-empty string")
        return Example(obj["text"], None, whole_text=True)
    if "prompt" not in obj:
        raise TuttiError(f"{where}: no 'prompt' or 'text' key (keys: {sorted(obj)}); add one")
    prompt = obj["prompt"]
    if isinstance(prompt, list):
        ok = all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                 for m in prompt)
        if not ok or not prompt:
            raise TuttiError(f"{where}: a chat 'prompt' must be a list of {{'role', 'content'}} strings")
        prompt = tuple({"role": m["role"], "content": m["content"]} for m in prompt)
    elif not isinstance(prompt, str) or not prompt:
        raise TuttiError(f"{where}: 'prompt' must be a non-empty string or a chat list")
    completion = obj.get("completion")
    if completion is not None and (not isinstance(completion, str) or not completion):
        raise TuttiError(f"{where}: 'completion' must be a non-empty string when given")
    return Example(prompt, completion)


def load_examples(path: str | Path, *, max_examples: int | None = None) -> list[Example]:
    """Read a prompt JSONL file (blank lines skipped), at most ``max_examples`` rows, with line-numbered errors."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise TuttiError(f"dataset {str(path)!r} not found; give a JSONL file of prompts (relative paths are from "
                         f"the current directory)")
    rows: list[Example] = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TuttiError(f"{p}:{i}: not valid JSON ({e.msg}); one JSON object per line") from None
        rows.append(_row(obj, f"{p}:{i}"))
        if max_examples is not None and len(rows) >= max_examples:
            break
    if not rows:
        raise TuttiError(f"{p}: no examples; add at least one JSON line")
    return rows


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_fingerprint(folder: str | Path) -> str:
    """A cheap identity of a model folder: resolved path plus name, size and mtime of every weight file."""
    root = Path(folder).resolve()
    parts = [str(root)]
    for f in sorted(root.glob("*.safetensors")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
