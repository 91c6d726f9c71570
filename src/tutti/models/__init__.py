"""Checkpoints, adapters, the offline zoo and backends: the only layer that touches disk or an engine."""

from tutti.models.checkpoint import Checkpoint
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Model,
    Prompt,
    SamplingParams,
    StreamChunk,
    TokenLogprob,
)
from tutti.models.lora import LoraAdapter, apply_lora, load_lora, save_lora
from tutti.models.writer import ShardedWriter, save_checkpoint

__all__ = [
    "Checkpoint",
    "GenerationOutput",
    "LoglikelihoodResult",
    "LoraAdapter",
    "Model",
    "Prompt",
    "SamplingParams",
    "ShardedWriter",
    "StreamChunk",
    "TokenLogprob",
    "apply_lora",
    "load_lora",
    "load_model",
    "save_checkpoint",
    "save_lora",
]


def load_model(spec: str, **kwargs: object) -> "HFModel":  # noqa: F821
    """Load a model (zoo name, path or hub id) with the default HF backend."""
    from tutti.models.hf import HFModel

    return HFModel.load(spec, **kwargs)  # type: ignore[arg-type]
