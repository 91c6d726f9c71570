"""tutti: make several language models work as one (merge, swarm, ensemble and cooperate).

Heavy modules (torch, transformers) are imported lazily so ``import tutti`` and ``tutti --help`` stay fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "tutti.models",
    "SamplingParams": "tutti.models.interface",
    "TuttiError": "tutti.errors",
    "merge": "tutti.merging",
    "merge_state_dicts": "tutti.merging",
    "merge_tensors": "tutti.merging",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tutti' has no attribute {name!r}")
