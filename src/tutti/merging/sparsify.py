"""Sparsification of task vectors: magnitude top-k, Breadcrumbs band, DARE Bernoulli, DELLA rank-weighted drops.

Pure functions (inputs are never modified). Magnitude selections use ``kthvalue`` thresholds (O(n)) instead of a
full sort; ties at a threshold are broken by element index, so exactly ``k`` elements are kept, deterministically.
Random drops draw from a :class:`~tutti.merging.base.TensorContext` stream (the seed contract).

Rescaling: mergekit (and so tutti by default) rescales a pruned vector so its **L1 norm** matches the unpruned
one (``"l1"``); the DARE/DELLA papers divide each kept element by its keep probability (``"inverse_p"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tutti.errors import ConfigError
from tutti.merging import magprune
from tutti.merging.base import TensorContext

RESCALE_MODES = ("l1", "inverse_p")


def rescale_l1(delta: Tensor, masked: Tensor, eps: float = 1e-7, *, in_place: bool = False) -> Tensor:
    """``masked`` scaled so its L1 norm equals ``delta``'s (unchanged if either norm is below ``eps``);
    ``in_place`` scales ``masked`` itself (a temporary of the caller's own)."""
    before = delta.abs().sum()  # faster than linalg.vector_norm(ord=1) on CPU
    after = masked.abs().sum()
    if before < eps or after < eps:
        return masked
    ratio = before / after
    return masked.mul_(ratio) if in_place else masked * ratio


_SAMPLE = 1 << 15


def select(w: Tensor, k: int) -> tuple[Tensor, int, int]:
    """The ``k``-th smallest value (1-based) of flat ``w``, exactly, with how many elements are below and equal to it.

    Tensors above ``8 * _SAMPLE`` elements use a random sample to bracket the answer, count the elements below the
    bracket, and run an exact ``kthvalue`` on the few candidates inside it (a full ``kthvalue`` if the bracket
    misses), so the cost is a few vectorised passes instead of a selection over every element; the result never
    depends on the sample.
    """
    n = w.numel()
    if n > 8 * _SAMPLE:
        lo_v, hi_v = bracket(w[sample_index(n, k).to(w.device)], k, n)
        below = int(torch.count_nonzero(w < lo_v)) if lo_v is not None else 0
        if lo_v is None:
            cand = w[w <= hi_v] if hi_v is not None else w
        else:
            cand = w[(w >= lo_v) & (w <= hi_v)] if hi_v is not None else w[w >= lo_v]
        r = k - below
        if 1 <= r <= cand.numel():
            v = torch.kthvalue(cand, r).values
            return v, below + int(torch.count_nonzero(cand < v)), int(torch.count_nonzero(cand == v))
    v = torch.kthvalue(w, k).values
    return v, int(torch.count_nonzero(w < v)), int(torch.count_nonzero(w == v))


def sample_index(n: int, k: int) -> Tensor:
    """The ``_SAMPLE`` positions :func:`select` samples to bracket rank ``k`` of ``n`` (fixed for ``(n, k)``)."""
    return torch.randint(n, (_SAMPLE,), generator=torch.Generator(device="cpu").manual_seed(n ^ k))


def bracket(sample: Tensor, k: int, n: int) -> tuple[Tensor | None, Tensor | None]:
    """Values of ``sample`` that bracket rank ``k`` of the ``n`` sampled from, with a six-sigma margin
    (``None``: that side is open)."""
    q, s = k / n, sample.numel()
    margin = 6 * (q * (1 - q) / s) ** 0.5 + 2 / s
    lo_v = torch.kthvalue(sample, max(1, int((q - margin) * s))).values if q - margin > 0 else None
    hi_v = torch.kthvalue(sample, min(s, int((q + margin) * s) + 1)).values if q + margin < 1 else None
    return lo_v, hi_v


def top_band(n: int, density: float) -> tuple[int, int]:
    """Ascending magnitude ranks ``[lo, hi)`` TIES keeps: the ``max(1, int(density * n))`` largest (all at 1)."""
    return (n - max(1, int(density * n)), n) if density < 1 else (0, n)


def outlier_band(n: int, density: float, gamma: float) -> tuple[int, int]:
    """Breadcrumbs' ranks, as mergekit 0.1.5: ``int(density * n)`` entries below the top ``int(gamma * n)``."""
    if density >= 1:
        return 0, n
    target = int(density * n)
    lo = max(0, n - target - int(gamma * n))
    return lo, lo + target


def kth_smallest(w: Tensor, k: int) -> Tensor:
    """The ``k``-th smallest value (1-based) of flat ``w``, exactly, in O(n) (see :func:`select`)."""
    return select(w, k)[0]


def _below(v: Tensor) -> float:
    """The largest float of ``v``'s dtype below ``v`` (so ``x > _below(v)`` is ``x >= v``)."""
    return float(torch.nextafter(v, torch.tensor(float("-inf"), dtype=v.dtype, device=v.device)))


def _band(delta: Tensor, w: Tensor, lo: int, hi: int) -> Tensor | None:
    """``delta`` with only the entries whose magnitude rank (ascending, flat ``w = |delta|``) is in ``[lo, hi)``.

    Float-only passes (``threshold``, ``copysign``; no boolean masks over the whole tensor), in place after the
    first (a fresh multi-MB result can cost more in page faults than the pass itself). Equal magnitudes that
    straddle a band edge are ranked by element index, as :func:`rank_band_mask` does. Returns ``None`` when the
    whole band lies inside one run of equal magnitudes (the caller then uses :func:`rank_band_mask`).
    """
    n = w.numel()
    kept, v_lo, lo_idx, v_hi, hi_idx = w, None, None, None, None
    if lo > 0:
        v_lo, less, eq = select(w, lo + 1)
        if less == lo:
            kept = F.threshold(w, _below(v_lo), 0.0)  # w >= v_lo, else 0
        else:  # equal magnitudes straddle the edge: keep w > v_lo and the last equal ones by index
            kept = F.threshold(w, float(v_lo), 0.0)
            lo_idx = torch.nonzero(w == v_lo).reshape(-1)[lo - less:]
    if hi < n:
        v_hi, less, eq = select(w, hi)
        if v_lo is not None and bool(v_hi == v_lo):
            return None
        neg = kept.neg_() if kept is not w else -kept  # in place on our own temporary (w is still needed)
        if less + eq == hi:
            kept = F.threshold_(neg, _below(-v_hi), 0.0)  # -x for x <= v_hi, else 0
        else:  # keep x < v_hi and the first equal ones by index
            kept = F.threshold_(neg, float(-v_hi), 0.0)
            hi_idx = torch.nonzero(w == v_hi).reshape(-1)[: hi - less]
    if lo_idx is not None:
        kept[lo_idx] = v_lo if v_hi is None else -v_lo
    if hi_idx is not None:
        kept[hi_idx] = -v_hi
    return kept.reshape(delta.shape).copysign_(delta)  # kept is ours: in place (a fresh result costs page faults)


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


def _masked_band(delta: Tensor, lo: int, hi: int) -> Tensor:
    """``delta`` zeroed outside magnitude ranks ``[lo, hi)`` (ties at an edge broken by element index)."""
    w = _abs_flat(delta)
    fast = _band(delta, w, lo, hi) if delta.is_floating_point() else None
    if fast is not None:
        return fast.to(delta.dtype)
    return delta * rank_band_mask(w, lo, hi).reshape(delta.shape).to(delta.dtype)


def magnitude(delta: Tensor, density: float, *, rescale: bool = False) -> Tensor:
    """Keep the ``max(1, int(density * n))`` largest-magnitude entries (TIES trim); zeros if ``density <= 0``."""
    if density >= 1:
        return delta
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    masked = _masked_band(delta, *top_band(n, density))
    return rescale_l1(delta, masked) if rescale else masked


def magnitude_outliers(delta: Tensor, density: float, gamma: float, *, rescale: bool = False) -> Tensor:
    """Breadcrumbs: drop the ``gamma`` fraction of largest entries and the smallest, keeping ``int(density*n)``.

    Follows mergekit 0.1.5: with ``n_top = int(gamma*n)``, ``n_bot = max(0, n - int(density*n) - n_top)``, the
    kept entries are ascending ranks ``[n_bot, n_bot + int(density*n))``.
    """
    if density >= 1:
        return delta
    masked = _masked_band(delta, *outlier_band(delta.numel(), density, gamma))
    return rescale_l1(delta, masked) if rescale else masked


def bernoulli_drop(delta: Tensor, density: float, ctx: TensorContext, index: int, *, rescale: str | None) -> Tensor:
    """DARE: keep each entry with probability ``density``; ``rescale`` is ``"l1"``, ``"inverse_p"`` or ``None``."""
    if density >= 1:
        return delta
    work = delta if delta.dtype in (torch.float32, torch.float64) else delta.float()
    masked = work * ctx.keep_mask(density, index, like=work).view(torch.uint8)  # x uint8: fast; x bool: slow
    if rescale == "l1":
        masked = rescale_l1(work, masked, in_place=True)
    elif rescale == "inverse_p":
        masked = masked.div_(density) if density > 0 else masked
    return masked.to(delta.dtype)


def check_della(density: float, epsilon: float, name: str) -> None:
    """DELLA's bounds: ``0 < density +/- epsilon < 1`` wherever ``0 < density < 1``."""
    if 0 < density < 1 and (density + epsilon >= 1 or density - epsilon <= 0):
        raise ConfigError(f"{name}: della needs 0 < density +/- epsilon < 1, got density={density}, "
                          f"epsilon={epsilon}; lower epsilon")


def della_magprune(delta: Tensor, density: float, epsilon: float, ctx: TensorContext, index: int, *,
                   rescale: str | None) -> Tensor:
    """DELLA: per row, keep probability rises linearly with magnitude rank from ``density-eps`` to ``density+eps``.

    Rows as mergekit ranks them: a 1-D tensor is one row, higher ones are ranked along dimension 1. The
    decisions (:mod:`tutti.merging.magprune`) are computed on the CPU in float32 whatever the device.
    """
    if density >= 1:
        return delta
    if density <= 0:
        return torch.zeros_like(delta)
    check_della(density, epsilon, ctx.name)
    work = delta if delta.dtype in (torch.float32, torch.float64) else delta.float()
    rows = work.reshape(1, -1) if work.dim() < 2 else work.movedim(1, -1)
    shape = rows.shape
    x = rows.detach().reshape(-1, shape[-1]).to("cpu", torch.float32).contiguous().numpy()
    cols = x.shape[1]
    keep = magprune.keep_mask(x, ctx.keep_draws(index), magprune.rank_thresholds(cols, density, epsilon))
    masked = rows * torch.from_numpy(keep).view(torch.uint8).reshape(shape).to(rows.device)
    if rescale == "l1":
        masked = rescale_l1(rows, masked, in_place=True)
    elif rescale == "inverse_p":
        p = magprune.rank_probabilities(cols, density, epsilon)[magprune.row_ranks(x)]
        masked = masked.div_(torch.from_numpy(p).to(rows.dtype).reshape(shape).to(rows.device))
    masked = masked.reshape(1, -1) if work.dim() < 2 else masked.movedim(-1, 1)
    return masked.reshape(delta.shape).to(delta.dtype)
