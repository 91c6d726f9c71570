"""Checkpoints, adapters, the offline zoo and backends: the only layer that touches disk or an engine.

Everything is imported lazily (PEP 562): ``tutti.models.zoo`` or the checkpoint headers do not pull in torch, so a
NumPy-engine merge (:mod:`tutti.merging.np_engine`) never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tutti.models.hf import HFModel

_LAZY = {
    "Checkpoint": "tutti.models.checkpoint",
    "GenerationOutput": "tutti.models.interface",
    "LoglikelihoodResult": "tutti.models.interface",
    "Model": "tutti.models.interface",
    "Prompt": "tutti.models.interface",
    "SamplingParams": "tutti.models.interface",
    "StreamChunk": "tutti.models.interface",
    "TokenLogprob": "tutti.models.interface",
    "LoraAdapter": "tutti.models.lora",
    "apply_lora": "tutti.models.lora",
    "load_lora": "tutti.models.lora",
    "save_lora": "tutti.models.lora",
    "ShardedWriter": "tutti.models.writer",
    "save_checkpoint": "tutti.models.writer",
}

__all__ = [*_LAZY, "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tutti.models' has no attribute {name!r}")


def load_model(spec: str, **kwargs: object) -> HFModel:
    """Load a model (zoo name, path or hub id) with the default HF backend."""
    from tutti.models.hf import HFModel

    return HFModel.load(spec, **kwargs)  # type: ignore[arg-type]
