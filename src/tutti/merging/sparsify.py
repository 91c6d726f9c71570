"""Sparsification of task vectors: magnitude top-k, Breadcrumbs band, DARE Bernoulli, DELLA rank-weighted drops.

Pure functions (inputs are never modified). Magnitude selections use ``kthvalue`` thresholds (O(n)) instead of a
full sort; ties at a threshold are broken by element index, so exactly ``k`` elements are kept, deterministically.
Random drops draw from a :class:`~tutti.merging.base.TensorContext` stream (the seed contract).

Rescaling: mergekit (and so tutti by default) rescales a pruned vector so its **L1 norm** matches the unpruned
one (``"l1"``); the DARE/DELLA papers divide each kept element by its keep probability (``"inverse_p"``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tutti.errors import ConfigError
from tutti.merging.base import TensorContext

RESCALE_MODES = ("l1", "inverse_p")


def rescale_l1(delta: Tensor, masked: Tensor, eps: float = 1e-7) -> Tensor:
    """``masked`` scaled so its L1 norm equals ``delta``'s (unchanged if either norm is below ``eps``)."""
    before = delta.abs().sum()
    after = masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


_SAMPLE = 1 << 20


def kth_smallest(w: Tensor, k: int) -> Tensor:
    """The ``k``-th smallest value (1-based) of flat ``w``, exactly, in O(n).

    Large tensors use a sample to bracket the answer, then an exact ``kthvalue`` on the few candidates inside the
    bracket (falling back to a full ``kthvalue`` if the bracket misses); the result never depends on the sample.
    """
    n = w.numel()
    if n <= 4 * _SAMPLE:
        return torch.kthvalue(w, k).values
    g = torch.Generator(device="cpu").manual_seed(n ^ k)
    sample = w[torch.randint(n, (_SAMPLE,), generator=g).to(w.device)]
    q = k / n
    margin = 6 * (q * (1 - q) / _SAMPLE) ** 0.5 + 2 / _SAMPLE
    lo_i = max(1, int((q - margin) * _SAMPLE))
    hi_i = min(_SAMPLE, int((q + margin) * _SAMPLE) + 1)
    lo_v = torch.kthvalue(sample, lo_i).values if q - margin > 0 else torch.tensor(float("-inf"), dtype=w.dtype)
    hi_v = torch.kthvalue(sample, hi_i).values if q + margin < 1 else torch.tensor(float("inf"), dtype=w.dtype)
    below = int((w < lo_v).sum())
    cand = w[(w >= lo_v) & (w <= hi_v)]
    r = k - below
    if 1 <= r <= cand.numel():
        return torch.kthvalue(cand, r).values
    return torch.kthvalue(w, k).values


def _ties_at(w: Tensor, value: Tensor, lo: int, hi: int) -> Tensor:
    """Indices of elements equal to ``value`` whose ascending rank (ties by index) lies in ``[lo, hi)``."""
    below = int((w < value).sum())
    eq = torch.nonzero(w == value).reshape(-1)
    start, stop = max(lo - below, 0), max(min(hi - below, eq.numel()), 0)
    return eq[start:stop]


def rank_band_mask(w: Tensor, lo: int, hi: int) -> Tensor:
    """Boolean mask of the elements of flat ``w`` whose ascending rank is in ``[lo, hi)`` (O(n), exact count)."""
    n = w.numel()
    lo, hi = max(lo, 0), min(hi, n)
    if hi <= lo:
        return torch.zeros(n, dtype=torch.bool, device=w.device)
    if lo == 0 and hi == n:
        return torch.ones(n, dtype=torch.bool, device=w.device)
    t_lo = kth_smallest(w, lo + 1) if lo > 0 else None
    t_hi = kth_smallest(w, hi) if hi < n else None
    if t_lo is None:
        mask = w < t_hi
    elif t_hi is None:
        mask = w > t_lo
    else:
        mask = (w > t_lo) & (w < t_hi)
    for t in (t_lo, t_hi):
        if t is not None and (t is t_lo or t_lo is None or bool(t != t_lo)):
            mask[_ties_at(w, t, lo, hi)] = True
    return mask


def _abs_flat(delta: Tensor) -> Tensor:
    w = delta.abs().reshape(-1)
    return w.float() if w.device.type == "cpu" and w.dtype != torch.float64 else w


def magnitude(delta: Tensor, density: float, *, rescale: bool = False) -> Tensor:
    """Keep the ``max(1, int(density * n))`` largest-magnitude entries (TIES trim); zeros if ``density <= 0``."""
    if density >= 1:
        return delta
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    mask = rank_band_mask(_abs_flat(delta), n - k, n).reshape(delta.shape)
    masked = delta * mask.to(delta.dtype)
    return rescale_l1(delta, masked) if rescale else masked


def magnitude_outliers(delta: Tensor, density: float, gamma: float, *, rescale: bool = False) -> Tensor:
    """Breadcrumbs: drop the ``gamma`` fraction of largest entries and the smallest, keeping ``int(density*n)``.

    Follows mergekit 0.1.5: with ``n_top = int(gamma*n)``, ``n_bot = max(0, n - int(density*n) - n_top)``, the
    kept entries are ascending ranks ``[n_bot, n_bot + int(density*n))``.
    """
    if density >= 1:
        return delta
    n = delta.numel()
    target = int(density * n)
    n_bot = max(0, n - target - int(gamma * n))
    mask = rank_band_mask(_abs_flat(delta), n_bot, n_bot + target).reshape(delta.shape)
    masked = delta * mask.to(delta.dtype)
    return rescale_l1(delta, masked) if rescale else masked


def bernoulli_drop(delta: Tensor, density: float, ctx: TensorContext, index: int, *, rescale: str | None) -> Tensor:
    """DARE: keep each entry with probability ``density``; ``rescale`` is ``"l1"``, ``"inverse_p"`` or ``None``."""
    if density >= 1:
        return delta
    work = delta if delta.dtype in (torch.float32, torch.float64) else delta.float()
    keep = ctx.bernoulli(torch.full_like(work, density), index)
    masked = work * keep
    if rescale == "l1":
        masked = rescale_l1(work, masked)
    elif rescale == "inverse_p":
        masked = masked / density if density > 0 else masked
    return masked.to(delta.dtype)


def della_magprune(delta: Tensor, density: float, epsilon: float, ctx: TensorContext, index: int, *,
                   rescale: str | None) -> Tensor:
    """DELLA: per row, keep probability rises linearly with magnitude rank from ``density-eps`` to ``density+eps``."""
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ConfigError(f"{ctx.name}: della needs 0 < density +/- epsilon < 1, got density={density}, "
                          f"epsilon={epsilon}; lower epsilon")
    work = delta if delta.dtype in (torch.float32, torch.float64) else delta.float()
    rows = work.unsqueeze(0) if work.dim() < 2 else work
    order = torch.argsort(rows.abs(), dim=1)  # (rows, cols) ascending
    ranks = torch.empty_like(rows)
    ar = torch.arange(rows.shape[1], dtype=rows.dtype, device=rows.device).expand_as(rows)
    ranks.scatter_(1, order, ar)
    span = float(rows.shape[1] - 1)
    rank_norm = (ranks / span).clamp(0, 1) if span > 0 else torch.zeros_like(ranks)
    probs = (density - epsilon) + rank_norm * (2 * epsilon)
    keep = ctx.bernoulli(probs, index)
    masked = rows * keep
    if rescale == "l1":
        masked = rescale_l1(rows, masked)
    elif rescale == "inverse_p":
        masked = masked / probs
    return masked.reshape(delta.shape).to(delta.dtype)
