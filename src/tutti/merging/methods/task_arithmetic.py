"""The task-vector family: task arithmetic, TIES, DARE, Breadcrumbs and DELLA (mergekit's nine names).

Steps, for a base ``b`` and inputs ``x_i`` with weights ``w_i``:

1. task vectors ``d_i = x_i - b``;
2. optional sparsification of each ``d_i`` (magnitude top-k, Breadcrumbs band, DARE Bernoulli, DELLA);
3. weighting ``D_i = w_i * d_i`` (mergekit weights *before* the sign election; ``sign_on="unweighted"`` votes on
   the unweighted vectors as the TIES paper does);
4. with consensus (TIES): elect the sign of ``sum_i D_i`` (zero counts as +), keep only agreeing entries, and
   divide by the sum of agreeing weights; without: sum and divide by the sum of weights;
5. divide only if ``normalize``, then multiply by ``lambda``; ``out = b + merged``.

Papers: task arithmetic https://arxiv.org/abs/2212.04089, TIES https://arxiv.org/abs/2306.01708,
DARE https://arxiv.org/abs/2311.03099, Breadcrumbs https://arxiv.org/abs/2312.06795,
DELLA https://arxiv.org/abs/2406.11617.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from tutti.errors import ConfigError
from tutti.merging import sparsify as sp
from tutti.merging.base import TensorContext, merge_method
from tutti.merging.drop_blocked import dare_combine, della_combine
from tutti.merging.methods.band_blocked import band_combine
from tutti.merging.methods.blocks import BLOCK, Combiner, blockable

Sparsifier = Callable[[Tensor, int], Tensor]


def combine_task_vectors(
    base: Tensor,
    deltas: list[Tensor],
    weights: list[float],
    *,
    consensus: bool,
    normalize: bool,
    lambda_: float,
    sign_on: str = "weighted",
    block_elems: int = 1 << 22,
    own: bool = False,
    out: Tensor | None = None,
) -> Tensor:
    """Steps 3-5 above on already sparsified task vectors ``deltas`` (each shaped like ``base``).

    Element-wise, so it runs over blocks of ``block_elems`` entries to keep its temporaries small. float32 inputs
    with non-negative weights take a fused path (no stacking, no boolean masks, in place on its own temporaries)
    that gives the same numbers as the general one (on CPU with ``own``, NumPy's :class:`combiner.Combiner`, the same
    bits again). ``own``: the deltas are the caller's temporaries (the fast path then weights them in place instead
    of copying). ``out``: where to write the result (shaped like ``base``; a new tensor when None).
    """
    if not deltas:
        return base.clone()
    fast = (base.dtype == torch.float32 and all(d.dtype == torch.float32 for d in deltas)
            and (not consensus or (sign_on == "weighted" and min(weights) >= 0 and max(weights) > 0)))
    flat_base = base.reshape(-1)
    flat = [d.reshape(-1) for d in deltas]
    out = torch.empty_like(flat_base) if out is None else out.reshape(-1)
    if fast and own and base.device.type == "cpu":  # NumPy's kernels in cache-sized blocks: the same bits
        nb, no, nd = flat_base.detach().numpy(), out.detach().numpy(), [d.detach().numpy() for d in flat]
        combine = Combiner(weights, min(nb.size, BLOCK), consensus=consensus, normalize=normalize, lambda_=lambda_)
        for start in range(0, nb.size, BLOCK):
            sl = slice(start, start + BLOCK)
            combine(nb[sl], [d[sl] for d in nd], no[sl])
        return out.reshape(base.shape)
    combine = _combine_fast if fast else _combine_general
    extra = {"own": own} if fast else {}
    for start in range(0, flat_base.numel(), block_elems):
        sl = slice(start, start + block_elems)
        combine(flat_base[sl], [d[sl] for d in flat], weights, out[sl], consensus=consensus, normalize=normalize,
                lambda_=lambda_, sign_on=sign_on, **extra)
    return out.reshape(base.shape)


def _combine_general(base: Tensor, deltas: list[Tensor], weights: list[float], out: Tensor, *, consensus: bool,
                     normalize: bool, lambda_: float, sign_on: str) -> None:
    """mergekit's formulation on one flat block: stack, weight, elect, mask, sum, divide."""
    stacked = torch.stack(deltas)  # (n, block)
    w = torch.tensor(weights, dtype=stacked.dtype, device=base.device).reshape(-1, 1)  # (n, 1)
    weighted = stacked * w
    if consensus:
        voters = weighted if sign_on == "weighted" else stacked
        elected = torch.where(voters.sum(dim=0) >= 0, 1.0, -1.0).to(stacked.dtype)
        mask = (weighted.sign() == elected).to(stacked.dtype)  # zero entries never agree
        merged = (weighted * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    else:
        merged = weighted.sum(dim=0)
        divisor = w.sum(dim=0).expand_as(merged)
        divisor = torch.where(divisor.abs() < 1e-8, torch.ones_like(divisor), divisor)
    if normalize:
        merged = merged / divisor
    if lambda_ != 1:
        merged = merged * lambda_
    out.copy_(base + merged)


def _combine_fast(base: Tensor, deltas: list[Tensor], weights: list[float], out: Tensor, *, consensus: bool,
                  normalize: bool, lambda_: float, sign_on: str, own: bool = False) -> None:
    """:func:`_combine_general` for float32 (and, with consensus, non-negative weights), fused and in place.

    With the elected sign ``e`` (``+1`` where ``sum_i w_i d_i >= 0``), an entry agrees iff ``w_i d_i e > 0``, so
    ``c_i = max(w_i d_i e, 0)`` is the agreeing magnitude, ``sum_i c_i`` the merged magnitude and ``sign(c_i)``
    the agreement mask; multiplying by ``e`` last is exact, so the result equals the general path's. ``own``:
    the deltas are the caller's temporaries and are weighted in place.
    """
    del sign_on  # always "weighted" here
    wf = torch.tensor(weights, dtype=torch.float32)
    ws = [float(x) for x in wf]  # each weight rounded to float32, as the general path's weight tensor
    weighted = [d.mul_(w) if own else d * w for d, w in zip(deltas, ws, strict=True)]  # own temporaries now
    total = weighted[0].clone() if len(weighted) == 1 else weighted[0] + weighted[1]
    for x in weighted[2:]:
        total.add_(x)
    if not consensus:
        merged = total
        if normalize:
            divisor = wf.sum()
            merged.div_(divisor if float(divisor.abs()) >= 1e-8 else 1.0)
        if lambda_ != 1:
            merged.mul_(lambda_)
        torch.add(base, merged, out=out)
        return
    elected = torch.ones_like(total).copysign_(total)  # +0 elects +1; -0 only where every entry is zero
    for x in weighted:
        x.mul_(elected).clamp_min_(0)
    magnitude = weighted[0].clone() if len(weighted) == 1 else weighted[0] + weighted[1]
    for x in weighted[2:]:
        magnitude.add_(x)
    if normalize:
        divisor = weighted[0].sign().mul_(ws[0])
        for x, w in zip(weighted[1:], ws[1:], strict=True):
            divisor.add_(x.sign_().mul_(w))
        # a zero divisor means no entry agreed (weights are >= 0), so the magnitude there is 0 too
        divisor.clamp_min_(min(w for w in ws if w > 0) / 2)
        magnitude.div_(divisor)
    if lambda_ != 1:
        magnitude.mul_(lambda_)
    torch.addcmul(base, magnitude, elected, out=out)


def _deltas(tensors: list[Tensor], base: Tensor, prune: Sparsifier | None) -> list[Tensor]:
    out = []
    for i, x in enumerate(tensors):
        d = x.to(base.dtype) - base
        out.append(prune(d, i) if prune is not None else d)
    return out


def _flat(tensors: list[Tensor]) -> list[np.ndarray]:
    return [x.reshape(-1).numpy() for x in tensors]


def _rescale_mode(rescale: bool, mode: str, ctx: TensorContext) -> str | None:
    if mode not in sp.RESCALE_MODES:
        raise ConfigError(f"{ctx.name}: rescale_mode {mode!r} is not one of {', '.join(sp.RESCALE_MODES)}")
    return mode if rescale else None


def _check_sign_on(sign_on: str) -> None:
    if sign_on not in ("weighted", "unweighted"):
        raise ConfigError(f"sign_on must be 'weighted' (mergekit) or 'unweighted' (TIES paper), got {sign_on!r}")


@merge_method("task_arithmetic", pretty_name="Task Arithmetic", paper="https://arxiv.org/abs/2212.04089",
              min_inputs=0, elementwise=True)
def task_arithmetic(tensors: list[Tensor], base: Tensor, *, weight: list[float], density: list[float] = 1.0,
                    normalize: bool = False, rescale: bool = False, int8_mask: bool = False,
                    lambda_: float = 1.0) -> Tensor:
    """``b + lambda * sum_i w_i (x_i - b)`` (divided by ``sum w_i`` when ``normalize``)."""
    del density, rescale, int8_mask  # accepted for mergekit compatibility; they do not change the result
    return combine_task_vectors(base, _deltas(tensors, base, None), weight, own=True, consensus=False,
                                normalize=normalize, lambda_=lambda_)


@merge_method("ties", pretty_name="TIES", paper="https://arxiv.org/abs/2306.01708", min_inputs=0)
def ties(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext, weight: list[float], density: list[float] = 1.0,
         normalize: bool = True, rescale: bool = False, int8_mask: bool = False, lambda_: float = 1.0,
         sign_on: str = "weighted") -> Tensor:
    """Trim to the top-``density`` magnitudes, elect signs, merge agreeing entries."""
    del int8_mask  # only a memory option in mergekit
    _check_sign_on(sign_on)
    if (not rescale and sign_on == "weighted" and min(density) > 0  # density <= 0 keeps nothing, not 1 entry
            and blockable(tensors, base, weight, consensus=True)):
        bands = [sp.top_band(base.numel(), p) for p in density]
        return band_combine(tensors, base, bands, weight, consensus=True, normalize=normalize, lambda_=lambda_,
                            out=ctx.empty_like(base))
    deltas = _deltas(tensors, base, lambda d, i: sp.magnitude(d, density[i], rescale=rescale))
    return combine_task_vectors(base, deltas, weight, own=True, consensus=True, normalize=normalize, lambda_=lambda_,
                                sign_on=sign_on)


def _dare(tensors: list[Tensor], base: Tensor, ctx: TensorContext, weight: list[float], density: list[float],
          *, consensus: bool, normalize: bool, rescale: bool, rescale_mode: str, lambda_: float) -> Tensor:
    mode = _rescale_mode(rescale, rescale_mode, ctx)
    if blockable(tensors, base, weight, consensus=consensus):
        out = ctx.empty_like(base)
        dare_combine(_flat(tensors), base.reshape(-1).numpy(), out.reshape(-1).numpy(), ctx.keep_draws, weight,
                     density, rescale=mode, consensus=consensus, normalize=normalize, lambda_=lambda_)
        return out
    deltas = _deltas(tensors, base, lambda d, i: sp.bernoulli_drop(d, density[i], ctx, i, rescale=mode))
    return combine_task_vectors(base, deltas, weight, own=True, consensus=consensus, normalize=normalize,
                                lambda_=lambda_)


@merge_method("dare_ties", pretty_name="DARE TIES", paper="https://arxiv.org/abs/2311.03099", randomized=True,
              min_inputs=0)
def dare_ties(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext, weight: list[float],
              density: list[float] = 1.0, normalize: bool = False, rescale: bool = True, int8_mask: bool = False,
              lambda_: float = 1.0, rescale_mode: str = "l1") -> Tensor:
    """Random drop (keep prob. ``density``), rescale, then TIES sign consensus."""
    del int8_mask
    return _dare(tensors, base, ctx, weight, density, consensus=True, normalize=normalize, rescale=rescale,
                 rescale_mode=rescale_mode, lambda_=lambda_)


@merge_method("dare_linear", pretty_name="Linear DARE", paper="https://arxiv.org/abs/2311.03099", randomized=True,
              min_inputs=0)
def dare_linear(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext, weight: list[float],
                density: list[float] = 1.0, normalize: bool = False, rescale: bool = True, int8_mask: bool = False,
                lambda_: float = 1.0, rescale_mode: str = "l1") -> Tensor:
    """Random drop (keep prob. ``density``), rescale, weighted sum."""
    del int8_mask
    return _dare(tensors, base, ctx, weight, density, consensus=False, normalize=normalize, rescale=rescale,
                 rescale_mode=rescale_mode, lambda_=lambda_)


def _breadcrumbs(tensors: list[Tensor], base: Tensor, ctx: TensorContext, weight: list[float], density: list[float],
                 gamma: list[float], *, consensus: bool, normalize: bool, rescale: bool, lambda_: float) -> Tensor:
    bands = [sp.outlier_band(base.numel(), p, g) for p, g in zip(density, gamma, strict=True)]
    if not rescale and all(hi > lo for lo, hi in bands) and blockable(tensors, base, weight, consensus=consensus):
        return band_combine(tensors, base, bands, weight, consensus=consensus, normalize=normalize, lambda_=lambda_,
                            out=ctx.empty_like(base))
    deltas = _deltas(tensors, base, lambda d, i: sp.magnitude_outliers(d, density[i], gamma[i], rescale=rescale))
    return combine_task_vectors(base, deltas, weight, own=True, consensus=consensus, normalize=normalize,
                                lambda_=lambda_)


@merge_method("breadcrumbs", pretty_name="Model Breadcrumbs", paper="https://arxiv.org/abs/2312.06795", min_inputs=0)
def breadcrumbs(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext, weight: list[float],
                density: list[float] = 1.0,
                gamma: list[float] = 0.01, normalize: bool = False, rescale: bool = False, int8_mask: bool = False,
                lambda_: float = 1.0) -> Tensor:
    """Drop the largest ``gamma`` and the smallest entries of each task vector, then sum."""
    del int8_mask
    return _breadcrumbs(tensors, base, ctx, weight, density, gamma, consensus=False, normalize=normalize,
                        rescale=rescale, lambda_=lambda_)


@merge_method("breadcrumbs_ties", pretty_name="Model Breadcrumbs with TIES", paper="https://arxiv.org/abs/2312.06795",
              min_inputs=0)
def breadcrumbs_ties(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext, weight: list[float],
                     density: list[float] = 1.0,
                     gamma: list[float] = 0.01, normalize: bool = False, rescale: bool = False,
                     int8_mask: bool = False, lambda_: float = 1.0) -> Tensor:
    """Breadcrumbs pruning with TIES sign consensus."""
    del int8_mask
    return _breadcrumbs(tensors, base, ctx, weight, density, gamma, consensus=True, normalize=normalize,
                        rescale=rescale, lambda_=lambda_)


def _della(tensors: list[Tensor], base: Tensor, ctx: TensorContext, weight: list[float], density: list[float],
           epsilon: list[float], *, consensus: bool, normalize: bool, rescale: bool, rescale_mode: str,
           lambda_: float) -> Tensor:
    mode = _rescale_mode(rescale, rescale_mode, ctx)
    for p, eps in zip(density, epsilon, strict=True):
        sp.check_della(p, eps, ctx.name)
    if mode != "inverse_p" and base.dim() <= 2 and blockable(tensors, base, weight, consensus=consensus):
        out = ctx.empty_like(base)
        della_combine(_flat(tensors), base.reshape(-1).numpy(), out.reshape(-1).numpy(), ctx.keep_draws, weight,
                      density, epsilon, cols=base.shape[-1] if base.dim() > 0 else 1, rescale=mode,
                      consensus=consensus, normalize=normalize, lambda_=lambda_)
        return out
    deltas = _deltas(tensors, base,
                     lambda d, i: sp.della_magprune(d, density[i], epsilon[i], ctx, i, rescale=mode))
    return combine_task_vectors(base, deltas, weight, own=True, consensus=consensus, normalize=normalize,
                                lambda_=lambda_, out=ctx.empty_like(base))


@merge_method("della", pretty_name="DELLA", paper="https://arxiv.org/abs/2406.11617", randomized=True, min_inputs=0)
def della(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext, weight: list[float],
          density: list[float] = 1.0, epsilon: list[float] = 0.15, normalize: bool = True, rescale: bool = True,
          int8_mask: bool = False, lambda_: float = 1.0, rescale_mode: str = "l1") -> Tensor:
    """Magnitude-ranked random drop (MagPrune), rescale, TIES sign consensus."""
    del int8_mask
    return _della(tensors, base, ctx, weight, density, epsilon, consensus=True, normalize=normalize,
                  rescale=rescale, rescale_mode=rescale_mode, lambda_=lambda_)


@merge_method("della_linear", pretty_name="Linear DELLA", paper="https://arxiv.org/abs/2406.11617", randomized=True,
              min_inputs=0)
def della_linear(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext, weight: list[float],
                 density: list[float] = 1.0, epsilon: list[float] = 0.15, normalize: bool = False,
                 rescale: bool = True, int8_mask: bool = False, lambda_: float = 1.0,
                 rescale_mode: str = "l1") -> Tensor:
    """Magnitude-ranked random drop (MagPrune), rescale, weighted sum."""
    del int8_mask
    return _della(tensors, base, ctx, weight, density, epsilon, consensus=False, normalize=normalize,
                  rescale=rescale, rescale_mode=rescale_mode, lambda_=lambda_)
