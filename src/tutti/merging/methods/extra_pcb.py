"""PCB-Merging: parameter competition balancing (Du et al., NeurIPS 2024, arXiv 2410.02396).

Per tensor, with ``T`` task vectors ``τ_t`` flattened to ``d`` entries:

1. **intra-balancing** (how much a weight matters to its own task):
   ``β_intra,t = softmax(T · Norm(τ_t ⊙ τ_t))``;
2. **inter-balancing** (how much the tasks agree on it):
   ``β_inter,t = Σ_j softmax(Norm(τ_t ⊙ τ_j))``;
3. ``β_t = β_intra,t ⊙ β_inter,t``;
4. **drop**: keep the ``density`` fraction of largest ``β_t`` of each task, zero the rest (``β̂_t``);
5. **rescale**: ``τ_m = Σ_t β̂_t ⊙ τ_t / Σ_t β̂_t`` (0 where every task dropped the weight);
6. ``W = W_0 + λ · τ_m``.

``Norm`` is min-max normalisation over the tensor's entries and the softmax runs over the tensor's entries, as
in the paper's equations; the paper flattens the whole model, tutti applies them per tensor (the executor
streams tensor by tensor). The log-domain form below avoids underflow on large tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tutti.errors import ConfigError
from tutti.merging.base import merge_method


def minmax_normalize(x: Tensor) -> Tensor:
    """``(x - min) / (max - min)`` over all entries; all zeros when ``x`` is constant."""
    lo, hi = x.min(), x.max()
    if hi <= lo:
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def pcb_scores(deltas: Sequence[Tensor]) -> Tensor:
    """Balancing scores ``β_t = β_intra,t ⊙ β_inter,t``, stacked ``(T, d)`` for flattened inputs, in log space.

    Returns:
        ``log β`` of shape ``(T, d)``.
    """
    d = torch.stack([x.float().flatten() for x in deltas])  # (T, d)
    n = d.shape[0]
    log_intra = torch.stack([torch.log_softmax(n * minmax_normalize(x * x), 0) for x in d])
    out = []
    for t in range(n):
        log_inter = torch.log_softmax(minmax_normalize(d[t] * d[0]), 0)
        for j in range(1, n):  # log Σ_j softmax(...), accumulated to keep memory at O(d)
            log_inter = torch.logaddexp(log_inter, torch.log_softmax(minmax_normalize(d[t] * d[j]), 0))
        out.append(log_intra[t] + log_inter)
    return torch.stack(out)


def pcb_merge(deltas: Sequence[Tensor], *, density: float = 0.2, lambda_: float = 1.0) -> Tensor:
    """PCB-merged task vector of one tensor (fp32, the inputs' shape; inputs untouched).

    Args:
        deltas: task vectors of one tensor.
        density: fraction of entries each task keeps after the drop step (``1 - r`` in the paper).
        lambda_: scale of the merged task vector.
    """
    shape = deltas[0].shape
    d = torch.stack([x.float().flatten() for x in deltas])  # (T, d)
    log_beta = pcb_scores(deltas)
    k = int(density * d.shape[1])
    keep = torch.zeros_like(d, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, log_beta.topk(k, dim=1).indices, True)
    # β̂ / max β̂ per entry keeps the ratio Σβ̂τ / Σβ̂ exact without leaving log space for tiny numbers
    log_beta = torch.where(keep, log_beta, torch.full_like(log_beta, float("-inf")))
    top = log_beta.max(0).values
    beta = torch.where(keep, torch.exp(log_beta - torch.where(torch.isfinite(top), top, 0.0)), 0.0)
    den = beta.sum(0)
    merged = torch.where(den > 0, (beta * d).sum(0) / torch.where(den > 0, den, 1.0), 0.0)
    return (lambda_ * merged).view(shape)


@merge_method("pcb", pretty_name="PCB-Merging (parameter competition balancing)",
              paper="https://arxiv.org/abs/2410.02396", mergekit=False, data="none")
def pcb(tensors: list[Tensor], base: Tensor, *, density: float = 0.2, lambda_: float = 1.0) -> Tensor:
    """PCB-Merging: intra- and inter-task balancing scores, drop the low scores, score-weighted mean."""
    if not 0.0 <= density <= 1.0:
        raise ConfigError(f"pcb: density must be in [0, 1], got {density}")
    deltas = [t.float() - base.float() for t in tensors]
    return (base.float() + pcb_merge(deltas, density=density, lambda_=lambda_)).to(base.dtype)
