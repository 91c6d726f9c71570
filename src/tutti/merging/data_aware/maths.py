"""The closed forms of the data-aware merges, as pure tensor functions (no I/O, inputs untouched).

* Fisher merging (Matena & Raffel, NeurIPS 2022, arXiv 2111.09832): per entry,
  ``θ* = Σ_t w_t F_t θ_t / Σ_t w_t F_t`` with the diagonal Fisher ``F_t`` of model ``t`` floored at
  ``fisher_floor`` (so entries no model has information about get the weighted average).
* RegMean (Jin et al., ICLR 2023, arXiv 2212.09849): for a linear layer ``y = x Wᵀ`` with input Gram
  ``G_t = X_tᵀ X_t`` collected on model ``t``'s inputs, the minimiser of ``Σ_t ‖X_t Wᵀ - X_t W_tᵀ‖²`` is
  ``Wᵀ = (Σ_t G_t)⁻¹ Σ_t G_t W_tᵀ``. The off-diagonal entries of each Gram are scaled by ``alpha`` first
  (``alpha = 1``: plain RegMean; ``alpha = 0``: a per-input-feature weighted average), which regularises the
  solve towards averaging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def weighted_average(tensors: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """``Σ_t w_t θ_t / Σ_t w_t`` in fp32."""
    total = float(sum(weights))
    if total == 0:
        raise ValueError("the weights sum to zero")
    return sum((w * t.float() for t, w in zip(tensors, weights, strict=True)), torch.zeros(())) / total


def fisher_merge(
    tensors: Sequence[Tensor],
    fishers: Sequence[Tensor],
    weights: Sequence[float] | None = None,
    *,
    fisher_floor: float = 1e-6,
) -> Tensor:
    """Fisher-weighted average of one parameter.

    Args:
        tensors: the parameter in each model, one shape.
        fishers: the diagonal Fisher of each model for this parameter, same shape (non-negative).
        weights: per-model weights ``w_t`` (default 1).
        fisher_floor: lower bound applied to every Fisher entry.

    Returns:
        The merged parameter (fp32).
    """
    w = [1.0] * len(tensors) if weights is None else list(weights)
    num = torch.zeros(tensors[0].shape)
    den = torch.zeros(tensors[0].shape)
    for t, f, wi in zip(tensors, fishers, w, strict=True):
        fw = wi * f.float().clamp(min=fisher_floor)
        num = num + fw * t.float()
        den = den + fw
    return num / den


def regmean_merge(
    weights: Sequence[Tensor],
    grams: Sequence[Tensor],
    coefficients: Sequence[float] | None = None,
    *,
    alpha: float = 0.95,
) -> Tensor:
    """RegMean merge of one linear weight.

    Args:
        weights: ``W_t`` of shape ``(out, in)`` (``y = x Wᵀ``), one per model.
        grams: input Grams ``G_t = X_tᵀ X_t`` of shape ``(in, in)``.
        coefficients: per-model scale of each Gram (default 1).
        alpha: scale of the Grams' off-diagonal entries, in ``[0, 1]``.

    Returns:
        ``W* = (Σ_t c_t G̃_t W_tᵀ)ᵀ (Σ_t c_t G̃_t)⁻ᵀ`` in fp32, shape ``(out, in)``.
    """
    c = [1.0] * len(weights) if coefficients is None else list(coefficients)
    n_in = weights[0].shape[1]
    g_sum = torch.zeros(n_in, n_in, dtype=torch.float64)
    gw_sum = torch.zeros(n_in, weights[0].shape[0], dtype=torch.float64)
    for w, g, ci in zip(weights, grams, c, strict=True):
        g = g.double()
        g = alpha * g + (1 - alpha) * torch.diag(torch.diagonal(g))  # (in, in)
        g_sum += ci * g
        gw_sum += ci * (g @ w.double().T)  # (in, out)
    # input features no model ever saw (zero Gram row) are unconstrained by the data: average them instead
    dead = torch.diagonal(g_sum) <= 0
    if dead.any():
        idx = dead.nonzero().flatten()
        g_sum[idx, idx] = 1.0
        gw_sum[idx] = (weighted_average([w.T[idx] for w in weights], c)).double()
    try:
        sol = torch.linalg.solve(g_sum, gw_sum)
    except RuntimeError:  # singular (e.g. dead input features): least-squares / pseudo-inverse solution
        sol = torch.linalg.lstsq(g_sum, gw_sum, driver="gelsd").solution
    return sol.T.float()
