"""Element-wise methods: linear (model soups), passthrough (frankenmerges) and NearSwap."""

from __future__ import annotations

import torch
from torch import Tensor

from tutti.merging.base import merge_method


def weighted_sum(xs: list[Tensor], ws: list[float]) -> Tensor:
    """``sum_i ws[i] * xs[i]`` as a new tensor, accumulated in place in ``xs[0]``'s dtype (one pass per input)."""
    out = xs[0] * ws[0]
    for x, wi in zip(xs[1:], ws[1:], strict=True):
        out.add_(x, alpha=wi)
    return out


@merge_method("linear", pretty_name="Linear", paper="https://arxiv.org/abs/2203.05482", elementwise=True)
def linear(tensors: list[Tensor], *, weight: list[float], normalize: bool = True) -> Tensor:
    """``sum_i w_i x_i`` (divided by ``sum_i w_i`` when ``normalize``), accumulated in float32.

    A configured ``base_model`` is one more ordinary input (it then needs a ``weight`` too), as in mergekit.
    """
    first = tensors[0]
    acc_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    w = torch.tensor(weight, dtype=acc_dtype, device=first.device)
    out = torch.zeros_like(first, dtype=acc_dtype)
    for x, wi in zip(tensors, w, strict=True):
        out.addcmul_(x.to(acc_dtype), wi)
    if normalize:
        out = out / w.sum()
    return out.to(first.dtype)


@merge_method("passthrough", pretty_name="Passthrough", elementwise=True, max_inputs=1)
def passthrough(tensors: list[Tensor], *, scale: list[float] = 1.0) -> Tensor:
    """Copy the single input, optionally multiplied by ``scale`` (used with ``slices`` for layer stacking)."""
    return tensors[0] if scale[0] == 1.0 else tensors[0] * scale[0]


@merge_method("nearswap", pretty_name="NearSwap", paper="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
              elementwise=True, max_inputs=1)
def nearswap(tensors: list[Tensor], base: Tensor, *, t: float) -> Tensor:
    """Take the secondary model's value where it is within ``t`` of the base: ``w = clamp(t/|b-x|, 0, 1)``."""
    x = tensors[0]
    weight = (t / (base - x).abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * x + (1 - weight) * base
