"""Shared pieces of the blocked (CPU, float32) task-vector paths: the block size, the scratch, the fused combine
(:mod:`tutti.merging.combiner`, NumPy on views that share memory with the torch tensors) and when they apply."""

from __future__ import annotations

import torch
from torch import Tensor

from tutti.merging.combiner import Combiner, combinable
from tutti.merging.scratch import BLOCK, scratch

__all__ = ["BLOCK", "Combiner", "blockable", "scratch"]


def blockable(tensors: list[Tensor], base: Tensor, weight: list[float], *, consensus: bool) -> bool:
    """Whether the blocked paths apply: float32 CPU inputs and the fused combine's weights."""
    return (bool(tensors) and base.numel() > 0 and base.dtype == torch.float32 and base.device.type == "cpu"
            and all(x.dtype == torch.float32 and x.device.type == "cpu" for x in tensors)
            and combinable(weight, consensus=consensus))
