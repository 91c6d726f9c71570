"""The merge-method contract: one registry, one decorator, the signature is the schema.

A merge method is a **pure function on tensors** that merges *one* tensor (the same weight from every input
model) and is registered with :func:`merge_method`. The executor (streaming, on disk) and the in-memory API
(:func:`tutti.merging.merge_state_dicts`) call it once per output tensor with parameters already resolved for
that tensor (layer gradients and name filters evaluated), so the function only sees plain numbers.

How the signature is read (``typing.get_type_hints``; ``from __future__ import annotations`` is fine):

* the first positional parameter, ``tensors: list[Tensor]``, receives the inputs that are not the base model, in
  config order, already cast to the compute dtype and moved to the compute device;
* ``base: Tensor`` (no default) means the method **requires** a base model; ``base: Tensor | None = None`` means
  the base is optional; no ``base`` parameter means the method takes none, and a configured ``base_model`` is then
  treated as one more ordinary input (mergekit's behaviour for ``linear`` and ``karcher``);
* ``ctx: TensorContext`` (optional) receives the per-tensor context: tensor name, layer index and the seed
  contract (below);
* every other keyword-only parameter is a config parameter. ``float``, ``int``, ``bool`` or ``str`` make a
  **global** parameter (one value per tensor); ``list[float]``, ``list[int]`` or ``list[bool]`` make a **per-model**
  parameter (one value per entry of ``tensors``), whose default is a scalar broadcast to every input. No default
  means required. A trailing underscore is dropped from the config name (``lambda_`` is configured as ``lambda``).

Seed contract: a randomised method (``randomized=True``) must draw its randomness only through ``ctx``:
``ctx.generator(i)``, ``ctx.raw32(n, i)``, ``ctx.keep_mask(p, i)``, ``ctx.keep_draws(i)`` or
``ctx.bernoulli(p, i)``, where ``i`` is the index of the input the draw belongs to. The stream is seeded from
``(global seed, tensor name, input index)`` alone, never from execution order, so a merge repeats bit-for-bit
whatever the thread count, schedule or row-blocking. Draws are made on the CPU and then moved, so the masks are
also identical across devices.

Example (a complete, registered method)::

    from torch import Tensor
    from tutti.merging.base import TensorContext, merge_method

    @merge_method("dare_sum", pretty_name="DARE sum", paper="https://arxiv.org/abs/2311.03099",
                  randomized=True)
    def dare_sum(tensors: list[Tensor], base: Tensor, *, ctx: TensorContext,
                 weight: list[float], density: list[float] = 1.0) -> Tensor:
        '''Drop-and-rescale each task vector, then add the weighted sum to the base.'''
        out = base.clone()
        for i, (x, w, d) in enumerate(zip(tensors, weight, density)):
            keep = ctx.bernoulli(d, i, like=x)   # seeded by (seed, ctx.name, i)
            out += w * (x - base) * keep / d
        return out

It is then usable from YAML (``merge_method: dare_sum`` with per-model ``weight``/``density``), from
``merge_state_dicts("dare_sum", [sd1, sd2], base=sd0, weight=[0.5, 0.5])`` and from ``tutti merge --list``.
Functions must not modify their inputs in place and must return a new tensor of the inputs' shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tutti.merging.buffers import OutputPool
from tutti.merging.draws import KeepDraws, keep_draws, seed_for, threshold, thresholds
from tutti.merging.spec import MergeMethod, ParamSpec, method_from_function, unknown_param_message
from tutti.registry import Registry

__all__ = ["MERGE_METHODS", "MergeMethod", "ParamSpec", "TensorContext", "get_method", "merge_method",
           "method_from_function", "unknown_param_message"]


@dataclass(frozen=True)
class TensorContext:
    """What a merge method may know about the tensor it merges.

    Args:
        name: output tensor name, e.g. ``model.layers.3.mlp.up_proj.weight``.
        layer_index: output layer index, or ``None`` for embeddings, final norm and head.
        num_layers: number of layers in the output model (``None`` when unknown, e.g. in-memory merges).
        seed: the global seed (``--random-seed``; 0 when not given).
        sources: for each entry of ``tensors``, ``(model, tensor name in that model)``, where ``model`` is the
            resolved model folder the executor read it from. Data-aware methods (Fisher, RegMean) use it to find
            each input's statistics; empty in in-memory merges.
        pool: the executor's reused output buffers (:meth:`empty_like` draws on it); None in in-memory merges.
    """

    name: str
    layer_index: int | None = None
    num_layers: int | None = None
    seed: int = 0
    sources: tuple[tuple[str, str], ...] = ()
    pool: OutputPool | None = field(default=None, compare=False, repr=False)

    def empty_like(self, t: Tensor) -> Tensor:
        """An uninitialised tensor like ``t`` for a method's result: a reused buffer when the executor lends one
        (it is written out and taken back after the method returns, so return it, or a view of it, as is)."""
        if self.pool is None or t.device.type != "cpu":
            return torch.empty_like(t, memory_format=torch.contiguous_format)
        return self.pool.empty(tuple(t.shape), t.dtype)

    def seed_for(self, input_index: int, stream: str = "") -> int:
        """The 63-bit seed of input ``input_index`` for this tensor: a hash of (seed, name, input index), and of
        ``stream`` when given (an independent second stream of the same input)."""
        return seed_for(self.seed, self.name, input_index, stream)

    def generator(self, input_index: int) -> torch.Generator:
        """A fresh CPU generator seeded by :meth:`seed_for` (draw on CPU, then move, for device independence)."""
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed_for(input_index))
        return g

    def raw32(self, n: int, input_index: int) -> np.ndarray:
        """``n`` uniform 32-bit integers from the input's SFC64 stream (two per 64-bit draw, on CPU: about ten
        times the speed of ``torch.rand``)."""
        return np.random.SFC64(self.seed_for(input_index)).random_raw((n + 1) // 2).view(np.uint32)[:n]

    def keep_draws(self, input_index: int) -> KeepDraws:
        """The input's keep/drop decisions as a stream (:class:`tutti.merging.draws.KeepDraws`), for taking them
        block by block; :meth:`keep_mask` is one call to it."""
        return keep_draws(self.seed, self.name, input_index)

    def keep_mask(self, p: Tensor | float, input_index: int, *, like: Tensor | None = None) -> Tensor:
        """A boolean mask, true with probability ``p``, from the input's stream.

        The decision is ``u < ceil(p * 2**24)`` for a uniform 24-bit ``u``, read a byte at a time
        (:mod:`tutti.merging.draws`): exact to ``2**-24``. ``p`` is a number or a tensor broadcastable to the mask's
        shape, which is ``like``'s when given (else ``p``'s); the mask is on that tensor's device.
        """
        ref = like if like is not None else p
        if not isinstance(ref, Tensor):
            raise TypeError("keep_mask with a scalar p needs like=")
        t = threshold(p) if not isinstance(p, Tensor) else thresholds(p.detach().double().cpu().numpy())
        keep = self.keep_draws(input_index).take(t, tuple(ref.shape))
        return torch.from_numpy(keep).to(ref.device)

    def bernoulli(self, p: Tensor | float, input_index: int, *, like: Tensor | None = None) -> Tensor:
        """:meth:`keep_mask` as 0/1 values of ``p``'s (or ``like``'s) dtype."""
        ref = like if like is not None else p
        return self.keep_mask(p, input_index, like=like).to(ref.dtype)  # type: ignore[union-attr]


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


def merge_method(
    name: str,
    *,
    pretty_name: str | None = None,
    paper: str | None = None,
    randomized: bool = False,
    elementwise: bool = False,
    min_inputs: int = 1,
    max_inputs: int | None = None,
    **extra: Any,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register a pure tensor function as merge method ``name`` (returns the function unchanged).

    Args:
        name: the YAML ``merge_method`` name.
        pretty_name: display name for ``--list`` and model cards.
        paper: link to the paper.
        randomized: the method draws random numbers (it must then take ``ctx``).
        elementwise: the method may be applied to row blocks independently.
        min_inputs: fewest non-base inputs.
        max_inputs: most non-base inputs (``None``: unbounded).
        **extra: free-form metadata kept on the method (e.g. ``mergekit=False`` for methods mergekit lacks).
    """

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        method = method_from_function(name, fn, randomized=randomized, elementwise=elementwise,
                                      min_inputs=min_inputs, max_inputs=max_inputs, **extra)
        MERGE_METHODS.add(name, method, pretty_name=pretty_name, paper=paper)
        return fn

    return deco


def get_method(name: str) -> MergeMethod:
    """The registered method ``name`` (did-you-mean :class:`TuttiError` if unknown); loads all methods first."""
    import tutti.merging.methods  # noqa: F401  (registers every method module)

    return MERGE_METHODS.get(name)
