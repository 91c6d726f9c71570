"""Weight-space merging: mergekit's methods on mergekit's YAML, plus the survey methods mergekit lacks.

Public API (imported lazily): :func:`merge` (config -> checkpoint folder), :func:`merge_state_dicts` and
:func:`merge_tensors` (in memory), and the method registry :data:`tutti.merging.base.MERGE_METHODS`.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "merge": "tutti.merging.run",
    "merge_state_dicts": "tutti.merging.memory",
    "merge_tensors": "tutti.merging.memory",
    "MERGE_METHODS": "tutti.merging.base",
    "merge_method": "tutti.merging.base",
    "get_method": "tutti.merging.base",
    "TensorContext": "tutti.merging.base",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tutti.merging' has no attribute {name!r}")
