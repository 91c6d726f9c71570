"""TALL masks and consensus merging over task arithmetic or TIES (Wang et al., ICML 2024, arXiv 2405.07813).

Steps, per tensor, with task vectors ``τ_t = W_t - W_0``:

1. build the multi-task vector ``τ_MTL`` with the base method (task arithmetic ``λ Σ_t w_t τ_t`` or TIES);
2. TALL mask of each task: ``m_t = 1[|τ_t| >= λ_t · |τ_MTL - τ_t|]`` (the weights for which the merged model is
   closer to task ``t``'s fine-tune than to the base);
3. consensus mask: keep the weights that at least ``k`` tasks' masks select (``k = 2`` drops "selfish" weights
   used by one task only and "catastrophic" weights used by none);
4. ``W = W_0 + mask ⊙ τ_MTL``.

Everything is element-wise, so 1-D tensors take the same path as matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tutti.errors import ConfigError
from tutti.merging.base import merge_method

_PAPER = "https://arxiv.org/abs/2405.07813"


def tall_masks(deltas: Sequence[Tensor], merged: Tensor, *, mask_lambda: float = 0.6) -> Tensor:
    """TALL masks ``m_t = |τ_t| >= λ · |τ_MTL - τ_t|``, stacked as bools of shape ``(T, *shape)``."""
    d = torch.stack([x.float() for x in deltas])
    return d.abs() >= mask_lambda * (merged.float().unsqueeze(0) - d).abs()


def consensus_mask(masks: Tensor, *, k: int = 2) -> Tensor:
    """Weights selected by at least ``k`` of the stacked task masks ``(T, *shape)`` -> bool ``shape``."""
    return masks.sum(0) >= k


def task_arithmetic_delta(deltas: Sequence[Tensor], weights: Sequence[float], *, lambda_: float = 1.0) -> Tensor:
    """``λ Σ_t w_t τ_t`` (fp32)."""
    return lambda_ * sum((w * d.float() for d, w in zip(deltas, weights, strict=True)), torch.zeros(()))


def magnitude_trim(delta: Tensor, density: float) -> Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries of ``delta`` (ties broken by position)."""
    if density >= 1.0:
        return delta.clone()
    k = int(density * delta.numel())
    if k <= 0:
        return torch.zeros_like(delta)
    flat = delta.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k).indices] = True
    return torch.where(keep.view_as(delta), delta, torch.zeros_like(delta))


def ties_delta(
    deltas: Sequence[Tensor], weights: Sequence[float], densities: Sequence[float], *, lambda_: float = 1.0
) -> Tensor:
    """TIES-merged task vector: trim each ``τ_t`` to its density, elect the sign of the weighted sum, then the
    weighted mean over the tasks that agree with it (Yadav et al., arXiv 2306.01708)."""
    trimmed = torch.stack([w * magnitude_trim(d.float(), p) for d, w, p in zip(deltas, weights, densities,
                                                                                strict=True)])
    sign = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)  # elected sign; a zero total elects +
    agree = torch.sign(trimmed) == sign  # trimmed-away zeros never agree
    w = torch.tensor([float(x) for x in weights]).view(-1, *([1] * (trimmed.dim() - 1)))
    num = (trimmed * agree).sum(0)
    den = (w * agree).sum(0)
    den = torch.where(den.abs() < 1e-8, torch.ones_like(den), den)
    return lambda_ * num / den


def consensus_merge(deltas: Sequence[Tensor], merged: Tensor, *, k: int = 2, mask_lambda: float = 0.6) -> Tensor:
    """Consensus-masked multi-task vector ``1[Σ_t m_t >= k] ⊙ τ_MTL`` (fp32)."""
    mask = consensus_mask(tall_masks(deltas, merged, mask_lambda=mask_lambda), k=k)
    return torch.where(mask, merged.float(), torch.zeros_like(merged, dtype=torch.float32))


def _check(k: int, mask_lambda: float) -> None:
    if k < 0:
        raise ConfigError(f"consensus: k must be >= 0, got {k}")
    if mask_lambda < 0:
        raise ConfigError(f"consensus: mask_lambda must be >= 0, got {mask_lambda}")


@merge_method("consensus_task_arithmetic", pretty_name="Consensus task arithmetic (TALL masks)", paper=_PAPER,
              elementwise=True, mergekit=False, data="none")
def consensus_task_arithmetic(tensors: list[Tensor], base: Tensor, *, weight: list[float] = 1.0,
                              lambda_: float = 1.0, k: int = 2, mask_lambda: float = 0.6) -> Tensor:
    """Task arithmetic restricted to the weights at least ``k`` tasks' TALL masks agree on."""
    _check(k, mask_lambda)
    deltas = [t.float() - base.float() for t in tensors]
    merged = task_arithmetic_delta(deltas, weight, lambda_=lambda_)
    return (base.float() + consensus_merge(deltas, merged, k=k, mask_lambda=mask_lambda)).to(base.dtype)


@merge_method("consensus_ties", pretty_name="Consensus TIES (TALL masks)", paper=_PAPER, mergekit=False,
              data="none")
def consensus_ties(tensors: list[Tensor], base: Tensor, *, weight: list[float] = 1.0,
                   density: list[float] = 0.2, lambda_: float = 1.0, k: int = 2,
                   mask_lambda: float = 0.6) -> Tensor:
    """TIES restricted to the weights at least ``k`` tasks' TALL masks agree on."""
    _check(k, mask_lambda)
    for d in density:
        if not 0.0 <= d <= 1.0:
            raise ConfigError(f"consensus_ties: density must be in [0, 1], got {d}")
    deltas = [t.float() - base.float() for t in tensors]
    merged = ties_delta(deltas, weight, density, lambda_=lambda_)
    return (base.float() + consensus_merge(deltas, merged, k=k, mask_lambda=mask_lambda)).to(base.dtype)
