"""Merge methods on NumPy float32 arrays, for the NumPy engine (:mod:`tutti.merging.np_engine`): no torch.

Each function has the signature of the torch method of the same name (``tests/merging/test_np_engine.py`` checks
that the parameters, defaults and input contract are equal) and runs the kernel that method runs on float32 CPU
tensors (:mod:`tutti.merging.drop_blocked`, :class:`tutti.merging.combiner.Combiner`), so the two engines write the
same bits. ``accepts`` says, from a
tensor's resolved parameters and shape, whether that kernel applies; where it does not (negative TIES weights,
DELLA's ``inverse_p`` or a tensor of more than two dimensions, a parameter the torch method rejects), the whole
merge runs on the torch engine instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tutti.merging.combiner import Combiner, combinable
from tutti.merging.draws import KeepDraws, keep_draws
from tutti.merging.drop_blocked import dare_combine, della_combine
from tutti.merging.scratch import BLOCK, scratch
from tutti.merging.spec import MergeMethod, method_from_function

RESCALE_MODES = ("l1", "inverse_p")  # as tutti.merging.sparsify.RESCALE_MODES (checked by the tests)


@dataclass(frozen=True)
class ArrayContext:
    """:class:`tutti.merging.base.TensorContext` for NumPy methods: the tensor's name and the seed contract.

    Args:
        name: output tensor name.
        layer_index: output layer index (``None`` for embeddings, final norm and head).
        num_layers: layers in the output model.
        seed: the global seed.
        empty: lends an uninitialised float32 array of a shape for the result (a reused buffer in the engine).
    """

    name: str
    layer_index: int | None = None
    num_layers: int | None = None
    seed: int = 0
    empty: Callable[[tuple[int, ...]], np.ndarray] = field(
        default=lambda shape: np.empty(shape, dtype=np.float32), compare=False, repr=False)

    def keep_draws(self, input_index: int) -> KeepDraws:
        """The input's keep/drop decision stream (the same as ``TensorContext.keep_draws``)."""
        return keep_draws(self.seed, self.name, input_index)


@dataclass(frozen=True)
class ArrayMethod:
    """A NumPy method: its :class:`MergeMethod` (signature, for the planner) and when its kernel applies."""

    method: MergeMethod
    accepts: Callable[[dict[str, Any], tuple[int, ...]], bool]


NP_METHODS: dict[str, ArrayMethod] = {}


def _register(name: str, accepts: Callable[[dict[str, Any], tuple[int, ...]], bool],
              **kw: Any) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        NP_METHODS[name] = ArrayMethod(method_from_function(name, fn, **kw), accepts)
        return fn

    return deco


def _dare_accepts(consensus: bool) -> Callable[[dict[str, Any], tuple[int, ...]], bool]:
    def accepts(kw: dict[str, Any], shape: tuple[int, ...]) -> bool:
        return (math.prod(shape) > 0 and kw["rescale_mode"] in RESCALE_MODES
                and combinable(kw["weight"], consensus=consensus))

    return accepts


def _della_accepts(consensus: bool) -> Callable[[dict[str, Any], tuple[int, ...]], bool]:
    def accepts(kw: dict[str, Any], shape: tuple[int, ...]) -> bool:
        bounds = all(not (0 < p < 1) or (p + e < 1 and p - e > 0)  # tutti.merging.sparsify.check_della
                     for p, e in zip(kw["density"], kw["epsilon"], strict=True))
        mode = kw["rescale_mode"] if kw["rescale"] else None
        return (math.prod(shape) > 0 and len(shape) <= 2 and kw["rescale_mode"] in RESCALE_MODES
                and mode != "inverse_p" and bounds and combinable(kw["weight"], consensus=consensus))

    return accepts


def _dare(xs: list[np.ndarray], base: np.ndarray, ctx: ArrayContext, weight: list[float], density: list[float], *,
          consensus: bool, normalize: bool, rescale: bool, rescale_mode: str, lambda_: float) -> np.ndarray:
    out = ctx.empty(base.shape)
    dare_combine([x.reshape(-1) for x in xs], base.reshape(-1), out.reshape(-1), ctx.keep_draws, weight, density,
                 rescale=rescale_mode if rescale else None, consensus=consensus, normalize=normalize,
                 lambda_=lambda_)
    return out


def _della(xs: list[np.ndarray], base: np.ndarray, ctx: ArrayContext, weight: list[float], density: list[float],
           epsilon: list[float], *, consensus: bool, normalize: bool, rescale: bool, rescale_mode: str,
           lambda_: float) -> np.ndarray:
    out = ctx.empty(base.shape)
    della_combine([x.reshape(-1) for x in xs], base.reshape(-1), out.reshape(-1), ctx.keep_draws, weight, density,
                  epsilon, cols=base.shape[-1] if base.ndim > 0 else 1, rescale=rescale_mode if rescale else None,
                  consensus=consensus, normalize=normalize, lambda_=lambda_)
    return out


@_register("dare_ties", _dare_accepts(True), randomized=True, min_inputs=0)
def dare_ties(tensors: list[np.ndarray], base: np.ndarray, *, ctx: ArrayContext, weight: list[float],
              density: list[float] = 1.0, normalize: bool = False, rescale: bool = True, int8_mask: bool = False,
              lambda_: float = 1.0, rescale_mode: str = "l1") -> np.ndarray:
    """Random drop (keep prob. ``density``), rescale, then TIES sign consensus."""
    del int8_mask
    return _dare(tensors, base, ctx, weight, density, consensus=True, normalize=normalize, rescale=rescale,
                 rescale_mode=rescale_mode, lambda_=lambda_)


@_register("dare_linear", _dare_accepts(False), randomized=True, min_inputs=0)
def dare_linear(tensors: list[np.ndarray], base: np.ndarray, *, ctx: ArrayContext, weight: list[float],
                density: list[float] = 1.0, normalize: bool = False, rescale: bool = True, int8_mask: bool = False,
                lambda_: float = 1.0, rescale_mode: str = "l1") -> np.ndarray:
    """Random drop (keep prob. ``density``), rescale, weighted sum."""
    del int8_mask
    return _dare(tensors, base, ctx, weight, density, consensus=False, normalize=normalize, rescale=rescale,
                 rescale_mode=rescale_mode, lambda_=lambda_)


@_register("della", _della_accepts(True), randomized=True, min_inputs=0)
def della(tensors: list[np.ndarray], base: np.ndarray, *, ctx: ArrayContext, weight: list[float],
          density: list[float] = 1.0, epsilon: list[float] = 0.15, normalize: bool = True, rescale: bool = True,
          int8_mask: bool = False, lambda_: float = 1.0, rescale_mode: str = "l1") -> np.ndarray:
    """Magnitude-ranked random drop (MagPrune), rescale, TIES sign consensus."""
    del int8_mask
    return _della(tensors, base, ctx, weight, density, epsilon, consensus=True, normalize=normalize,
                  rescale=rescale, rescale_mode=rescale_mode, lambda_=lambda_)


@_register("della_linear", _della_accepts(False), randomized=True, min_inputs=0)
def della_linear(tensors: list[np.ndarray], base: np.ndarray, *, ctx: ArrayContext, weight: list[float],
                 density: list[float] = 1.0, epsilon: list[float] = 0.15, normalize: bool = False,
                 rescale: bool = True, int8_mask: bool = False, lambda_: float = 1.0,
                 rescale_mode: str = "l1") -> np.ndarray:
    """Magnitude-ranked random drop (MagPrune), rescale, weighted sum."""
    del int8_mask
    return _della(tensors, base, ctx, weight, density, epsilon, consensus=False, normalize=normalize,
                  rescale=rescale, rescale_mode=rescale_mode, lambda_=lambda_)


def _any(kw: dict[str, Any], shape: tuple[int, ...]) -> bool:
    return math.prod(shape) > 0


@_register("task_arithmetic", _any, min_inputs=0, elementwise=True)
def task_arithmetic(tensors: list[np.ndarray], base: np.ndarray, *, weight: list[float], density: list[float] = 1.0,
                    normalize: bool = False, rescale: bool = False, int8_mask: bool = False,
                    lambda_: float = 1.0) -> np.ndarray:
    """``b + lambda * sum_i w_i (x_i - b)`` (divided by ``sum w_i`` when ``normalize``)."""
    del density, rescale, int8_mask  # accepted for mergekit compatibility; they do not change the result
    out = np.empty(base.shape, dtype=np.float32)
    fb, fo, fx = base.reshape(-1), out.reshape(-1), [x.reshape(-1) for x in tensors]
    if not fx:
        np.copyto(fo, fb)
        return out
    size = min(fb.size, BLOCK)
    combine = Combiner(weight, size, consensus=False, normalize=normalize, lambda_=lambda_)
    work = [scratch(f"ta.delta{i}", size) for i in range(len(fx))]
    for s in range(0, fb.size, BLOCK):
        e = min(fb.size, s + BLOCK)
        deltas = [np.subtract(x[s:e], fb[s:e], out=w[: e - s]) for x, w in zip(fx, work, strict=True)]
        combine(fb[s:e], deltas, fo[s:e])
    return out


@_register("passthrough", _any, elementwise=True, max_inputs=1)
def passthrough(tensors: list[np.ndarray], *, scale: list[float] = 1.0) -> np.ndarray:
    """Copy the single input, optionally multiplied by ``scale`` (used with ``slices`` for layer stacking)."""
    return tensors[0] if scale[0] == 1.0 else tensors[0] * np.float32(scale[0])
