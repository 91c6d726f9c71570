"""Spectral (per-matrix SVD) data-free merges that mergekit lacks: TSV-M, Iso-C and Iso-CTS.

All three work on the task matrices ``ΔW_t = W_t - W_0`` of each 2-D weight, computed in fp32:

* **TSV-M** (Gargiulo et al., *Task Singular Vectors*, CVPR 2025, arXiv 2412.00081):
  1. SVD of each task matrix, keep its top ``k = rank_fraction * min(m, n)`` singular triplets
     (``rank_fraction`` defaults to ``1/T``);
  2. concatenate the kept left vectors ``U = [U_1 .. U_T]``, singular values ``S`` and right vectors ``V``;
  3. decorrelate: replace ``U`` and ``V`` by their nearest orthogonal matrices (polar factor, ``P Qᵀ`` from
     ``U = P Σ Qᵀ``), which whitens the interference between tasks;
  4. ``ΔW = α · U⊥ diag(S) V⊥ᵀ``.
* **Iso-C** (Marczak et al., *No Task Left Behind: Isotropic Model Merging*, ICML 2025, arXiv 2502.04959):
  SVD of the summed task matrix ``Σ_t ΔW_t = U S Vᵀ``; replace every singular value by their mean (a flat,
  isotropic spectrum): ``ΔW = α · mean(S) · U Vᵀ``.
* **Iso-CTS** (same paper): keep the top ``common_space_fraction`` of the summed matrix's singular directions
  (the common subspace), give each task ``(rank - k_common) / T`` directions of its own, taken from the SVD of its
  task matrix with the common subspace projected out, orthogonalise the concatenated bases as TSV-M does, and
  flatten the spectrum to the mean of the kept singular values.

Low-rank task matrices (experts that are LoRA fine-tunes, or a sum of a few of them) have a null space whose
singular vectors any SVD routine may choose freely. Taken literally, the formulas would flatten those zero
singular values too and add an arbitrary, implementation-defined orthogonal map to the weights. tutti keeps only
the numerical rank (singular values above ``s_max · max(m, n) · eps``, NumPy's ``matrix_rank`` tolerance): the
same result as the papers for full-rank task matrices, and a deterministic one otherwise.

1-D tensors (norms, biases) and scalars have no spectrum: like the papers' code, they fall back to task
arithmetic with the mean task vector, ``W_0 + α · mean_t ΔW_t``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tutti.errors import ConfigError
from tutti.merging.base import merge_method

_TSV_PAPER = "https://arxiv.org/abs/2412.00081"
_ISO_PAPER = "https://arxiv.org/abs/2502.04959"


def _mean_delta(deltas: Sequence[Tensor]) -> Tensor:
    return torch.stack([d.float() for d in deltas]).mean(0)


def numerical_rank(s: Tensor, shape: tuple[int, ...]) -> int:
    """Singular values above ``s_max · max(m, n) · eps`` (NumPy's ``matrix_rank`` tolerance), at least 1."""
    tol = float(s.max()) * max(shape) * torch.finfo(s.dtype).eps if s.numel() else 0.0
    return max(1, int((s > tol).sum()))


def nearest_orthogonal(x: Tensor) -> Tensor:
    """The polar factor ``P Qᵀ`` of ``x = P Σ Qᵀ``: the closest matrix with orthonormal columns (or rows)."""
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def tsv_merge(deltas: Sequence[Tensor], *, alpha: float = 1.0, rank_fraction: float | None = None) -> Tensor:
    """TSV-M merged task vector of one tensor (pure; inputs are not modified).

    Args:
        deltas: task vectors ``W_t - W_0`` of one tensor, all of one shape.
        alpha: global scale of the merged task vector.
        rank_fraction: fraction of each task matrix's rank kept (default ``1/T``; at least one direction).

    Returns:
        The merged task vector (fp32, the inputs' shape).
    """
    if deltas[0].dim() != 2:
        return alpha * _mean_delta(deltas)
    frac = 1.0 / len(deltas) if rank_fraction is None else rank_fraction
    us, ss, vs = [], [], []
    for d in deltas:
        u, s, vh = torch.linalg.svd(d.float(), full_matrices=False)
        k = max(1, min(int(s.shape[0] * frac), numerical_rank(s, tuple(d.shape))))
        us.append(u[:, :k])
        ss.append(s[:k])
        vs.append(vh[:k])
    u_cat, s_cat, v_cat = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 0)  # (m, Tk), (Tk,), (Tk, n)
    return alpha * (nearest_orthogonal(u_cat) * s_cat) @ nearest_orthogonal(v_cat)


def iso_c_merge(deltas: Sequence[Tensor], *, alpha: float = 1.0) -> Tensor:
    """Iso-C merged task vector: the summed task matrix with its spectrum flattened to its mean.

    Args:
        deltas: task vectors of one tensor.
        alpha: global scale.

    Returns:
        ``alpha * mean(S) * U Vᵀ`` for 2-D tensors (so its Frobenius norm is ``alpha * mean(S) * sqrt(rank)``),
        ``alpha * mean_t(delta_t)`` otherwise.
    """
    if deltas[0].dim() != 2:
        return alpha * _mean_delta(deltas)
    total = torch.stack([d.float() for d in deltas]).sum(0)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    r = numerical_rank(s, tuple(total.shape))
    return alpha * s[:r].mean() * (u[:, :r] @ vh[:r])


def iso_cts_merge(
    deltas: Sequence[Tensor], *, alpha: float = 1.0, common_space_fraction: float = 0.8
) -> Tensor:
    """Iso-CTS merged task vector: a common subspace plus task-specific subspaces, isotropically scaled.

    Args:
        deltas: task vectors of one tensor.
        alpha: global scale.
        common_space_fraction: share of the rank given to the common subspace of the summed task matrix; the
            rest is split evenly between tasks (rounded so every task gets the same number of directions).

    Returns:
        The merged task vector (fp32).
    """
    if deltas[0].dim() != 2:
        return alpha * _mean_delta(deltas)
    n_tasks = len(deltas)
    mats = [d.float() for d in deltas]
    total = torch.stack(mats).sum(0)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    union = torch.cat(mats, 1)  # (m, T·n): its rank is the dimension of all tasks' column spaces together
    rank = min(min(total.shape), numerical_rank(torch.linalg.svdvals(union), tuple(union.shape)))
    k_common = int(rank * common_space_fraction)
    per_task = round((rank - k_common) / n_tasks)
    k_common = rank - per_task * n_tasks
    if k_common <= 0:  # more tasks than directions left: shrink the task share, keep one common direction
        per_task = (rank - 1) // n_tasks
        k_common = rank - per_task * n_tasks
    uc, sc, vc = u[:, :k_common], s[:k_common], vh[:k_common]
    us, ss, vs = [uc], [sc], [vc]
    if per_task > 0:
        for m in mats:
            residual = m - uc @ (uc.T @ m)  # project the common subspace out
            ut, st, vt = torch.linalg.svd(residual, full_matrices=False)
            k = min(per_task, numerical_rank(st, tuple(m.shape)) if float(st.max()) > 0 else 0)
            us.append(ut[:, :k])
            ss.append(st[:k])
            vs.append(vt[:k])
    u_cat, s_cat, v_cat = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 0)
    return alpha * s_cat.mean() * (nearest_orthogonal(u_cat) @ nearest_orthogonal(v_cat))


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}; fix the merge parameters")


def _apply(base: Tensor, delta: Tensor) -> Tensor:
    return (base.float() + delta).to(base.dtype)


@merge_method("tsv", pretty_name="TSV-M (task singular vectors)", paper=_TSV_PAPER, mergekit=False,
              data="none")
def tsv(tensors: list[Tensor], base: Tensor, *, alpha: float = 1.0, rank_fraction: float = 0.0) -> Tensor:
    """TSV-M: low-rank task matrices with decorrelated (orthogonalised) singular vectors.

    ``rank_fraction`` 0 means ``1/T`` (the paper's default).
    """
    _fraction("tsv: rank_fraction", rank_fraction)
    deltas = [t.float() - base.float() for t in tensors]
    return _apply(base, tsv_merge(deltas, alpha=alpha, rank_fraction=rank_fraction or None))


@merge_method("iso_c", pretty_name="Iso-C (isotropic merging, common subspace)", paper=_ISO_PAPER,
              mergekit=False, data="none")
def iso_c(tensors: list[Tensor], base: Tensor, *, alpha: float = 1.0) -> Tensor:
    """Iso-C: the summed task matrix with a flat spectrum (every singular value set to the mean)."""
    deltas = [t.float() - base.float() for t in tensors]
    return _apply(base, iso_c_merge(deltas, alpha=alpha))


@merge_method("iso_cts", pretty_name="Iso-CTS (isotropic merging, common + task-specific subspaces)",
              paper=_ISO_PAPER, mergekit=False, data="none")
def iso_cts(tensors: list[Tensor], base: Tensor, *, alpha: float = 1.0,
            common_space_fraction: float = 0.8) -> Tensor:
    """Iso-CTS: a common subspace plus per-task subspaces, then a flat spectrum."""
    _fraction("iso_cts: common_space_fraction", common_space_fraction)
    deltas = [t.float() - base.float() for t in tensors]
    return _apply(base, iso_cts_merge(deltas, alpha=alpha, common_space_fraction=common_space_fraction))
