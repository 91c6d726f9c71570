"""Methods that select or weight task-vector entries: SCE, RAM / RAM+, Model Stock and Arcee Fusion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tutti.merging.base import TensorContext, merge_method
from tutti.merging.methods.linear import weighted_sum
from tutti.merging.sparsify import rank_band_mask


def _population_var(tvs: Tensor) -> Tensor:
    """Variance over the first dimension (``1/n``), two passes over the few rows (``torch.var(dim=0)`` reduces
    across a strided dimension and is ~40x slower on CPU)."""
    mean = sum(tvs.unbind(0)) / tvs.shape[0]
    return sum((t - mean).square_() for t in tvs.unbind(0)) / tvs.shape[0]


def _sign_mask(tvs: Tensor) -> Tensor:
    elected = torch.where(tvs.sum(dim=0) >= 0, 1.0, -1.0).to(tvs.dtype)
    return (tvs.sign() == elected).to(tvs.dtype)


@merge_method("sce", pretty_name="SCE", paper="https://arxiv.org/abs/2408.07990", min_inputs=0)
def sce(tensors: list[Tensor], base: Tensor, *, select_topk: float = 1.0, int8_mask: bool = False) -> Tensor:
    """Select high-variance entries, weight each task vector by its mean square, erase minority signs.

    Steps: ``TV_i = x_i - b``; keep the top ``select_topk`` fraction (of non-zero-variance positions) by variance
    across models; ``omega_i = mean(TV_i^2) / sum_j mean(TV_j^2)``; TIES sign mask on the TVs;
    ``out = b + sum_i omega_i m_i TV_i / clamp(sum_i omega_i m_i, 1e-6)``.
    """
    del int8_mask
    if not tensors:
        return base.clone()
    tvs = torch.stack([x - base for x in tensors])  # (n, *shape)
    if select_topk < 1:
        keep = torch.zeros(base.numel(), dtype=torch.bool, device=tvs.device)
        if select_topk > 0:
            var = _population_var(tvs).reshape(-1)
            k = int(int(torch.count_nonzero(var)) * select_topk)
            if k > 0:  # the k largest (rank_band_mask: linear-time selection, not a top-k sort)
                keep = rank_band_mask(var, var.numel() - k, var.numel())
        tvs = tvs * keep.reshape(base.shape).unsqueeze(0)
    msq = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
    total = float(msq.sum())
    omega = torch.full_like(msq, 1.0 / msq.numel()) if abs(total) < 1e-6 else msq / total
    omega = omega.reshape(-1, *([1] * base.dim()))
    erased = omega * _sign_mask(tvs)
    merged = (tvs * erased).sum(dim=0) / erased.sum(dim=0).clamp(min=1e-6)
    return base + merged


def _ram_terms(tensors: list[Tensor], base: Tensor, epsilon: float) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Flat task vectors zeroed where inactive (``|tv| <= epsilon``), each already divided by the number of active
    models at each entry (at least 1), with the activity masks and that count.

    One pass per model instead of reductions over a stacked ``(n, numel)`` tensor (strided, ~10x slower on CPU).
    Each term equals the reference's ``tv * unique + tv * overlap / counts`` entry for entry: ``x / 1 == x``.
    """
    tvs = [(x - base).reshape(-1) for x in tensors]
    active = [tv.abs() > epsilon for tv in tvs]
    count = active[0].to(base.dtype)
    for a in active[1:]:
        count.add_(a)
    denom = count.clamp(min=1)
    terms = [tv.mul_(a).div_(denom) for tv, a in zip(tvs, active, strict=True)]
    return terms, active, count


@merge_method("ram", pretty_name="Reinforced Agent Merging", paper="https://arxiv.org/abs/2601.13572", min_inputs=0)
def ram(tensors: list[Tensor], base: Tensor, *, epsilon: float = 1e-5) -> Tensor:
    """Unique deltas (one active model) at full strength, shared deltas averaged over their contributors."""
    if not tensors:
        return base.clone()
    terms, _, _ = _ram_terms(tensors, base, epsilon)
    return base + weighted_sum(terms, [1.0] * len(terms)).reshape(base.shape)


@merge_method("ramplus_tl", pretty_name="Reinforced Agent Merging Plus (Tensor-Local)",
              paper="https://arxiv.org/abs/2601.13572", min_inputs=0)
def ramplus_tl(tensors: list[Tensor], base: Tensor, *, r: float = 0.1, alpha: float = 0.2,
               epsilon: float = 1e-5) -> Tensor:
    """RAM with unique deltas boosted by ``1 + r * clamp(shared/unique, 0, alpha)`` per model and tensor."""
    if not tensors:
        return base.clone()
    terms, active, count = _ram_terms(tensors, base, epsilon)
    unique = count == 1
    for t, a in zip(terms, active, strict=True):
        # counts of a bool mask: count_nonzero runs at 0.35 ns per entry here, bool sum() at 7 (the same int64)
        n_unique = torch.count_nonzero(a & unique)
        rho = (torch.count_nonzero(a) - n_unique) / n_unique.clamp(min=epsilon)  # active where shared / unique
        lam = 1 + r * rho.clamp(min=0, max=alpha)
        t.mul_(torch.where(unique, lam.to(t.dtype), torch.ones((), dtype=t.dtype)))
    return base + weighted_sum(terms, [1.0] * len(terms)).reshape(base.shape)


@merge_method("model_stock", pretty_name="Model Stock", paper="https://arxiv.org/abs/2403.19522", min_inputs=2)
def model_stock(tensors: list[Tensor], base: Tensor, *, filter_wise: bool = False) -> Tensor:
    """Interpolate between the average fine-tune and the base by ``t = k cos / (1 + (k-1) cos)``."""
    shape = base.shape
    if filter_wise:
        w0 = base.unsqueeze(0) if base.dim() == 1 else base
        ws = [x.unsqueeze(0) if x.dim() == 1 else x for x in tensors]
    else:
        w0, ws = base.reshape(-1), [x.reshape(-1) for x in tensors]
    offsets = [x - w0 for x in ws]
    norms = [torch.norm(a, dim=-1) for a in offsets]
    cos = []
    for i, a in enumerate(offsets):
        for j in range(i + 1, len(offsets)):
            b = offsets[j]
            denom = (norms[i] * norms[j]).clamp(min=1e-6)
            dots = torch.dot(a, b) if a.dim() == 1 else (a * b).sum(dim=-1)  # flat: no product copy
            cos.append((dots / denom).clamp(-1, 1))
    c = torch.stack(cos).mean(dim=0).unsqueeze(-1)
    k = len(ws)
    denom = 1 + (k - 1) * c
    singular = denom.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(c), (k * c) / torch.where(singular, torch.ones_like(denom), denom))
    avg = weighted_sum(ws, [1.0] * k).div_(k)
    return avg.mul_(t).add_((1 - t) * w0).reshape(shape)


_QUANTILE_SAMPLE = 1_000_000


def _sorted_at(flat: Tensor, positions: list[int]) -> list[Tensor]:
    """The entries a full ascending sort of ``flat`` would put at the ascending ``positions``.

    On CPU: linear-time NumPy partitions, the middle position first and then each outer one inside its half
    (~5 ms for a million floats, against ~60 ms for a torch sort and, oddly, ~30 ms for one multi-kth partition).
    """
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        a = flat.numpy().copy()
        out: dict[int, float] = {}

        def pick(lo: int, hi: int, ps: list[int]) -> None:  # a[lo:hi] holds exactly the ranks lo..hi-1
            if not ps:
                return
            mid = ps[len(ps) // 2]
            a[lo:hi].partition(mid - lo)
            out[mid] = float(a[mid])
            pick(lo, mid, ps[: len(ps) // 2])
            pick(mid + 1, hi, ps[len(ps) // 2 + 1:])

        pick(0, a.size, sorted(set(positions)))
        return [torch.tensor(out[i], dtype=flat.dtype) for i in positions]
    srt = torch.sort(flat).values
    return [srt[i] for i in positions]


@merge_method("arcee_fusion", pretty_name="Arcee Fusion", paper="https://arcee.ai", randomized=True, max_inputs=1)
def arcee_fusion(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext) -> Tensor:
    """Take the fine-tune's change where ``|delta| * KL(softmax rows)`` passes ``median + 1.5 IQR``.

    Quantiles are read from a sorted sample of 1e6 entries (drawn from the seed contract) on larger tensors.
    """
    x = tensors[0]
    p = F.softmax(x, dim=-1) + 1e-8
    q = F.softmax(base, dim=-1) + 1e-8
    importance = (x - base).abs() * (p * torch.log(p / q)).sum(dim=-1, keepdim=True)
    flat = importance.reshape(-1)
    if flat.numel() > _QUANTILE_SAMPLE:
        idx = torch.randint(flat.numel(), (_QUANTILE_SAMPLE,), generator=ctx.generator(0))
        flat = flat[idx.to(flat.device)]
    q1, med, q3 = _sorted_at(flat, [int(q * (flat.numel() - 1)) for q in (0.25, 0.5, 0.75)])
    mask = (importance >= med + 1.5 * (q3 - q1)).float()
    return base + (x - base) * mask
