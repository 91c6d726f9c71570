"""Spherical methods: SLERP, NuSLERP, Multi-SLERP and the Karcher mean (torch on any device; float32 maths)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from tutti.errors import TuttiError
from tutti.merging.base import TensorContext, merge_method
from tutti.merging.methods.linear import weighted_sum


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def slerp_tensors(t: float, v0: Tensor, v1: Tensor, *, dot_threshold: float = 0.9995, eps: float = 1e-8) -> Tensor:
    """Spherical interpolation of two whole tensors (flattened); lerp when nearly (anti)parallel."""
    dt = _work_dtype(v0)
    a, b = v0.reshape(-1).to(dt), v1.reshape(-1).to(dt)
    if a.numel() == 0:
        return ((1 - t) * a + t * b).reshape(v0.shape).to(v0.dtype)
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    na = torch.where(na > eps, na, torch.ones_like(na))
    nb = torch.where(nb > eps, nb, torch.ones_like(nb))
    dot = (torch.dot(a, b) / (na * nb)).clamp(-1, 1)  # the unit vectors' dot, without unit-vector copies
    if dot.abs() > dot_threshold:
        ca, cb = torch.tensor(1 - t, dtype=dt), torch.tensor(t, dtype=dt)
    else:
        theta = torch.acos(dot)
        s = torch.sin(theta)
        ca, cb = torch.sin((1 - t) * theta) / s, torch.sin(t * theta) / s
    return torch.add(a * ca, b, alpha=float(cb)).reshape(v0.shape).to(v0.dtype)


@merge_method("slerp", pretty_name="SLERP", paper="https://en.wikipedia.org/wiki/Slerp", max_inputs=1)
def slerp(tensors: list[Tensor], base: Tensor, *, t: float) -> Tensor:
    """Spherical interpolation from the base (``t = 0``) to the other model (``t = 1``)."""
    return slerp_tensors(t, base, tensors[0])


def nuslerp_tensors(t: float, v0: Tensor, v1: Tensor, *, dim: int = -1, flatten: bool = False,
                    eps: float = 1e-8) -> Tensor:
    """SLERP along ``dim`` (per row/column) or of the flattened tensors; lerp where nearly colinear."""
    shape = v0.shape
    if flatten:
        return _nuslerp_flat(t, v0.reshape(-1), v1.reshape(-1), eps).reshape(shape)
    if dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (u0 * u1).sum(dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    res = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    res = torch.where(colinear, (1 - t) * v0 + t * v1, res)
    if dim != -1 and not flatten:
        res = res.transpose(dim, -1)
    return res.reshape(shape)


def _nuslerp_flat(t: float, v0: Tensor, v1: Tensor, eps: float) -> Tensor:
    """:func:`nuslerp_tensors` of two flat tensors: the angle from two norms and a dot product, then one pass
    ``c0 v0 + c1 v1`` with scalar coefficients (no unit-vector copies, no element-wise division)."""
    n0 = torch.linalg.vector_norm(v0).clamp(min=1e-7)
    n1 = torch.linalg.vector_norm(v1).clamp(min=1e-7)
    cos = (torch.dot(v0, v1) / (n0 * n1)).clamp(-1, 1) if v0.numel() else torch.ones((), dtype=v0.dtype)
    if float(1 - cos.square()) <= eps**2:  # colinear: lerp
        c0, c1 = torch.tensor(1 - t, dtype=v0.dtype), torch.tensor(t, dtype=v0.dtype)
    else:
        theta = torch.acos(cos)
        s = torch.sin(theta)
        c0, c1 = torch.sin((1 - t) * theta) / s, torch.sin(t * theta) / s
    return torch.add(v0 * c0, v1, alpha=float(c1))


@merge_method("nuslerp", pretty_name="NuSLERP", min_inputs=2, max_inputs=2)
def nuslerp(tensors: list[Tensor], base: Tensor | None = None, *, weight: list[float],
            nuslerp_row_wise: bool = False, nuslerp_flatten: bool = True) -> Tensor:
    """SLERP of two models (or of their task vectors when a base is given), ``t = w_2 / (w_1 + w_2)``."""
    total = weight[0] + weight[1]
    t = 0.5 if abs(total) < 1e-6 else weight[1] / total
    dim = 0 if nuslerp_row_wise else -1
    if base is not None:
        return base + nuslerp_tensors(t, tensors[0] - base, tensors[1] - base, dim=dim, flatten=nuslerp_flatten)
    return nuslerp_tensors(t, tensors[0], tensors[1], dim=dim, flatten=nuslerp_flatten)


@merge_method("multislerp", pretty_name="Multi-SLERP",
              paper="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea")
def multislerp(tensors: list[Tensor], base: Tensor | None = None, *, ctx: TensorContext, weight: list[float],
               normalize_weights: bool = True, eps: float = 1e-8) -> Tensor:
    """Barycentric interpolation on the hypersphere: one tangent-space step from the weighted mean direction."""
    if len(tensors) == 1:
        return tensors[0]
    shape = tensors[0].shape
    # one flat vector per model and scalar reductions, not reductions across a stacked (n, numel) tensor
    xs = [(x - base if base is not None else x).reshape(-1) for x in tensors]
    w = torch.tensor(weight, dtype=xs[0].dtype)
    if normalize_weights:
        w = w / w.sum()
    ws = [float(v) for v in w]
    norms = [torch.linalg.vector_norm(x) for x in xs]
    units = [x / (n + eps) for x, n in zip(xs, norms, strict=True)]
    mean = weighted_sum(units, ws)
    mean_norm = torch.linalg.vector_norm(mean)
    if mean_norm < eps:
        if len(xs) != 2:
            raise TuttiError(f"{ctx.name}: multislerp inputs cancel out (antipodal with balancing weights); "
                             "change the weights")
        res = weighted_sum(xs, ws).view(shape)
        return res + base if base is not None else res
    mean.div_(mean_norm)
    step = weighted_sum([u.sub_(mean * torch.dot(u, mean)) for u in units], ws)  # tangent vectors, in place
    step_norm = torch.linalg.vector_norm(step) + eps
    res = torch.add(mean * torch.cos(step_norm), step, alpha=float(torch.sin(step_norm) / step_norm))
    res = res.mul_(float(sum(n * wi for n, wi in zip(norms, ws, strict=True)))).view(shape)
    return res + base if base is not None else res


def karcher_mean(tensors: list[Tensor], alphas: list[float], *, max_iter: int = 10, tol: float = 1e-5) -> Tensor:
    """Weighted Riemannian (Karcher) mean of the directions, scaled by the weighted mean norm.

    mergekit's iteration (unit vectors, tangent ``sum_i a_i theta_i / sin(theta_i) (u_i - <m, u_i> m)``, an
    exponential-map step, renormalisation) carried out on coefficients: the mean stays a combination
    ``m = sum_j beta_j x_j`` of the inputs, so each step needs only their Gram matrix (k(k+1)/2 dot products in
    float64, one pass) and the result is one weighted sum, instead of several full-size temporaries per input and
    iteration.
    """
    dt = _work_dtype(tensors[0])
    gram = _gram([x.reshape(-1) for x in tensors])
    norms = [math.sqrt(max(float(gram[i, i]), 0.0)) for i in range(len(tensors))]
    valid = [i for i, n in enumerate(norms) if n > tol]
    if not valid:
        return sum((x * 0 for x in tensors[1:]), tensors[0] * 0)
    total = sum(alphas[i] for i in valid)
    a = np.array([alphas[i] / total for i in valid])
    g, n = gram[np.ix_(valid, valid)], np.array([norms[i] for i in valid])
    beta = a / n
    mn = _norm(beta, g)
    beta = (np.eye(len(valid))[0] / n[0]) if mn < tol else beta / mn
    for _ in range(max_iter):
        dots = np.clip(g @ beta / n, -1.0, 1.0)  # <m, u_i>
        theta = np.arccos(dots)
        live = theta >= tol
        c = np.where(live, a * theta / np.where(live, np.sin(theta), 1.0), 0.0)
        tangent = c / n - float((c * dots).sum()) * beta
        tn = _norm(tangent, g)
        if tn < tol:
            break
        beta = math.cos(tn) * beta + math.sin(tn) * tangent / tn
        un = _norm(beta, g)
        if un > tol:
            beta = beta / un
    scale = sum(ai * ni for ai, ni in zip(alphas, norms, strict=False))
    out = weighted_sum([tensors[i].to(dt) for i in valid], [float(scale * b) for b in beta])
    return out.to(tensors[0].dtype)


def _norm(coeffs: np.ndarray, gram: np.ndarray) -> float:
    """The norm of ``sum_j coeffs_j x_j`` from the inputs' Gram matrix."""
    return math.sqrt(max(float(coeffs @ gram @ coeffs), 0.0))


_CHUNK = 1 << 20


def _gram(flat: list[Tensor]) -> np.ndarray:
    """``<x_i, x_j>`` of the flat tensors, accumulated in float64 chunk by chunk (reused chunk buffers)."""
    k, n = len(flat), flat[0].numel()
    gram = np.zeros((k, k))
    size = min(n, _CHUNK)
    bufs = [torch.empty(size, dtype=torch.float64, device=flat[0].device) for _ in range(k)]
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        blk = [b[: e - s].copy_(f[s:e]) for b, f in zip(bufs, flat, strict=True)]
        for i in range(k):
            for j in range(i, k):
                gram[i, j] += float(torch.dot(blk[i], blk[j]))
    return np.triu(gram) + np.triu(gram, 1).T


@merge_method("karcher", pretty_name="Karcher Mean", paper="https://arxiv.org/abs/2603.04972")
def karcher(tensors: list[Tensor], *, max_iter: int = 10, tol: float = 1e-5, use_weights: bool = False,
            weight: list[float] = 1.0) -> Tensor:
    """Karcher mean with equal weights (mergekit); ``use_weights: true`` uses the per-model ``weight``s instead."""
    if len(tensors) == 1:
        return tensors[0]
    alphas = [w / sum(weight) for w in weight] if use_weights else [1.0 / len(tensors)] * len(tensors)
    return karcher_mean(tensors, alphas, max_iter=max_iter, tol=tol)
