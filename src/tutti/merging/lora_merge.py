"""LoRA-native merging of PEFT adapters, in factor space (no dense ``out x in`` matrices are formed).

Two combinations, for adapters ``(A_i, B_i, s_i)`` (``delta_i = s_i B_i A_i``) and weights ``w_i``:

* **exact** (``merge_lora_exact``): the weighted sum of the dense updates ``Σ_i w_i s_i B_i A_i`` written as one
  adapter of rank ``Σ_i r_i``: ``A' = concat_rows(w_i s_i A_i)``, ``B' = concat_cols(B_i)``, scale 1. This is
  exact (``B' A' = Σ_i w_i s_i B_i A_i``). With ``rank=R`` it is re-compressed to rank ``R`` by a truncated SVD
  computed from QR factors of ``B'`` and ``A'ᵀ`` (an ``r' x r'`` SVD per module); the relative Frobenius error
  of every module is returned.
* **factor-wise** (``merge_lora_factors``): ``A' = Σ_i w_i A_i`` and ``B' = Σ_i w_i B_i`` separately, as
  Model Swarms and peft's element-wise ``add_weighted_adapter`` combinations do. Its update is
  ``s Σ_i Σ_j w_i w_j B_i A_j``: it has cross terms, so it is **not** the weighted sum of the updates unless the
  adapters are identical or only one weight is non-zero.

Adapters with DoRA, LoRA biases, trainable ``modules_to_save`` or mixed ``fan_in_fan_out`` are refused with a
:class:`~tutti.errors.TuttiError` instead of being merged wrongly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tutti.errors import TuttiError
from tutti.models.lora import LoraAdapter, LoraPair
from tutti.registry import Registry

_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraMergeResult:
    """A merged adapter and, after re-compression, the relative error of each module.

    Args:
        adapter: the merged adapter (save it with :func:`tutti.models.lora.save_lora`).
        errors: module -> ``‖ΔW_exact - ΔW_R‖_F / ‖ΔW_exact‖_F`` (empty when nothing was truncated).
    """

    adapter: LoraAdapter
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        """Largest relative error over modules (0 when exact)."""
        return max(self.errors.values(), default=0.0)


def _check_supported(adapters: Sequence[LoraAdapter], weights: Sequence[float]) -> None:
    if not adapters:
        raise TuttiError("merge-lora: give at least one adapter")
    if len(weights) != len(adapters):
        raise TuttiError(f"merge-lora: {len(weights)} weights for {len(adapters)} adapters; give one per adapter")
    for i, a in enumerate(adapters):
        cfg = a.config
        for key, bad in (("use_dora", True), ("lora_bias", True)):
            if cfg.get(key) == bad:
                raise TuttiError(f"adapter {i}: {key}=true is not supported by LoRA merging; merge it densely instead")
        if cfg.get("modules_to_save"):
            raise TuttiError(f"adapter {i}: modules_to_save {cfg['modules_to_save']} cannot be merged as LoRA factors")
        if str(cfg.get("bias", "none")) != "none":
            raise TuttiError(f"adapter {i}: bias={cfg['bias']!r} is not supported; only bias='none' adapters merge")
    fifo = {bool(a.config.get("fan_in_fan_out", False)) for a in adapters}
    if len(fifo) > 1:
        raise TuttiError("merge-lora: adapters disagree on fan_in_fan_out; they cannot target the same layers")
    bases = {a.config.get("base_model_name_or_path") for a in adapters} - {None, ""}
    if len(bases) > 1:
        raise TuttiError(f"merge-lora: adapters were trained on different base models {sorted(bases)}")


def _out_config(adapters: Sequence[LoraAdapter], ranks: dict[str, int], scales: dict[str, float]) -> dict[str, Any]:
    """Config with the most common rank as ``r`` and patterns for the rest; ``alpha`` gives each module's scale."""
    cfg = copy.deepcopy(adapters[0].config)
    common = max(set(ranks.values()), key=list(ranks.values()).count)
    common_scale = scales[next(m for m, r in ranks.items() if r == common)]
    cfg["use_rslora"] = False
    cfg["r"] = common
    cfg["lora_alpha"] = common * common_scale
    cfg["rank_pattern"] = {m: r for m, r in ranks.items() if r != common}
    cfg["alpha_pattern"] = {m: ranks[m] * s for m, s in scales.items() if ranks[m] != common or s != common_scale}
    targets: set[str] = set()
    for a in adapters:
        t = a.config.get("target_modules") or []
        targets.update([t] if isinstance(t, str) else t)
    if targets:
        cfg["target_modules"] = sorted(targets)
    return cfg


def _tensors(pairs: dict[str, tuple[Tensor, Tensor]], dtype: torch.dtype) -> dict[str, Tensor]:
    out = {}
    for module, (a, b) in sorted(pairs.items()):
        out[f"{_PREFIX}{module}.lora_A.weight"] = a.to(dtype).contiguous()
        out[f"{_PREFIX}{module}.lora_B.weight"] = b.to(dtype).contiguous()
    return out


def _dtype(adapters: Sequence[LoraAdapter]) -> torch.dtype:
    return next(iter(adapters[0].tensors.values())).dtype if adapters[0].tensors else torch.float32


def truncate_factors(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor, float]:
    """Best rank-``rank`` factors of ``b @ a`` without forming it, and the relative Frobenius error.

    Args:
        a: ``(r, in)`` factor.
        b: ``(out, r)`` factor.
        rank: target rank.

    Returns:
        ``(a_R, b_R, error)`` with ``b_R @ a_R`` the truncated SVD of ``b @ a`` (singular values split evenly
        between the factors) and ``error = ‖b a - b_R a_R‖_F / ‖b a‖_F``.
    """
    qb, rb = torch.linalg.qr(b.double())  # (out, r), (r, r)
    qa, ra = torch.linalg.qr(a.double().T)  # (in, r), (r, r)
    u, s, vh = torch.linalg.svd(rb @ ra.T)  # b a = qb (rb raᵀ) qaᵀ
    k = min(rank, s.shape[0])
    root = s[:k].sqrt()
    b_r = (qb @ u[:, :k]) * root
    a_r = root[:, None] * (vh[:k] @ qa.T)
    total = float(s.square().sum())
    err = math.sqrt(float(s[k:].square().sum()) / total) if total > 0 else 0.0
    return a_r.float(), b_r.float(), err


def merge_lora_exact(
    adapters: Sequence[LoraAdapter], weights: Sequence[float] | None = None, *, rank: int | None = None
) -> LoraMergeResult:
    """Merge adapters as the exact weighted sum of their updates (optionally re-compressed to ``rank``).

    Args:
        adapters: PEFT LoRA adapters of one base model.
        weights: one weight per adapter (default: all 1, i.e. the plain sum of the updates).
        rank: target rank per module; ``None`` keeps the exact concatenated rank ``Σ_i r_i``.

    Returns:
        The merged adapter and per-module relative errors of the re-compression.
    """
    w = [1.0] * len(adapters) if weights is None else [float(x) for x in weights]
    _check_supported(adapters, w)
    if rank is not None and rank < 1:
        raise TuttiError(f"merge-lora: rank must be >= 1, got {rank}")
    modules: dict[str, list[tuple[float, LoraPair]]] = {}
    for wi, adapter in zip(w, adapters, strict=True):
        for module, pair in adapter.pairs().items():
            modules.setdefault(module, []).append((wi, pair))
    merged: dict[str, tuple[Tensor, Tensor]] = {}
    errors: dict[str, float] = {}
    for module, items in modules.items():
        a = torch.cat([wi * p.scale * p.A.float() for wi, p in items], 0)  # (Σr, in)
        b = torch.cat([p.B.float() for _, p in items], 1)  # (out, Σr)
        if rank is not None and rank < a.shape[0]:
            a, b, errors[module] = truncate_factors(a, b, rank)
        merged[module] = (a, b)
    ranks = {m: int(a.shape[0]) for m, (a, _) in merged.items()}
    cfg = _out_config(adapters, ranks, dict.fromkeys(merged, 1.0))
    return LoraMergeResult(LoraAdapter(cfg, _tensors(merged, _dtype(adapters))), errors)


def merge_lora_factors(adapters: Sequence[LoraAdapter], weights: Sequence[float] | None = None) -> LoraMergeResult:
    """Merge adapters factor by factor: ``A' = Σ w_i A_i``, ``B' = Σ w_i B_i`` (Model Swarms, peft ``linear``).

    Every adapter must adapt the same modules with the same rank. When the adapters' scales differ, each factor
    takes ``sqrt(s_i)`` and the output scale is 1; otherwise the common scale is kept.

    Args:
        adapters: PEFT LoRA adapters of one base model.
        weights: one weight per adapter (default: uniform ``1/n``, so identical adapters give themselves back).
    """
    w = [1.0 / len(adapters)] * len(adapters) if weights is None else [float(x) for x in weights]
    _check_supported(adapters, w)
    all_pairs = [a.pairs() for a in adapters]
    names = set(all_pairs[0])
    for i, p in enumerate(all_pairs[1:], 1):
        if set(p) != names:
            diff = sorted(set(p) ^ names)[:3]
            raise TuttiError(f"merge-lora: adapter {i} adapts other modules than adapter 0 (e.g. {diff}); "
                             f"use --method exact")
    merged: dict[str, tuple[Tensor, Tensor]] = {}
    scales: dict[str, float] = {}
    for module in sorted(names):
        pairs = [p[module] for p in all_pairs]
        if len({p.A.shape[0] for p in pairs}) > 1:
            raise TuttiError(f"merge-lora: module {module!r} has ranks {[p.A.shape[0] for p in pairs]}; "
                             f"factor-wise merging needs equal ranks, use --method exact")
        same_scale = len({p.scale for p in pairs}) == 1
        fold = [1.0 if same_scale else math.sqrt(p.scale) for p in pairs]
        a = sum(wi * f * p.A.float() for wi, f, p in zip(w, fold, pairs, strict=True))
        b = sum(wi * f * p.B.float() for wi, f, p in zip(w, fold, pairs, strict=True))
        merged[module] = (a, b)
        scales[module] = pairs[0].scale if same_scale else 1.0
    ranks = {m: int(a.shape[0]) for m, (a, _) in merged.items()}
    return LoraMergeResult(LoraAdapter(_out_config(adapters, ranks, scales), _tensors(merged, _dtype(adapters))))


LORA_MERGES: Registry[Callable[..., LoraMergeResult]] = Registry("LoRA merge method")
LORA_MERGES.add("exact", merge_lora_exact, pretty_name="exact (concatenated ranks, optional SVD re-compression)")
LORA_MERGES.add("factors", merge_lora_factors, pretty_name="factor-wise (A and B averaged separately)")
