"""In-memory merging: the API the swarm search calls on every step (no files, no config objects).

Example::

    from tutti.merging import merge_state_dicts, merge_tensors

    merged = merge_state_dicts("ties", [sd_a, sd_b], base=sd_base, weight=[0.7, 0.3], density=0.5)
    w = merge_tensors("slerp", [x], base=b, t=0.3)

Parameters follow the method's signature (see :mod:`tutti.merging.base`): a scalar is used for every input, a list
gives one value per input for per-model parameters. Inputs are never modified; results are new tensors. Randomised
methods follow the seed contract (global ``seed``, tensor name, input index), so a call repeats bit-for-bit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from tutti.errors import ConfigError, TuttiError
from tutti.merging.base import MergeMethod, TensorContext, get_method

_LAYER = re.compile(r"\.(\d+)\.")


def _method(method: str | MergeMethod) -> MergeMethod:
    return method if isinstance(method, MergeMethod) else get_method(method)


def _check_base(m: MergeMethod, base: object | None) -> None:
    if m.base == "required" and base is None:
        raise ConfigError(f"merge_method {m.name!r} needs a base; pass base=...")
    if m.base == "none" and base is not None:
        raise ConfigError(f"merge_method {m.name!r} takes no base; pass it as one more input instead")


def merge_tensors(
    method: str | MergeMethod,
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    name: str = "tensor",
    seed: int = 0,
    layer_index: int | None = None,
    **params: Any,
) -> Tensor:
    """Merge one tensor.

    Args:
        method: registered method name or object.
        tensors: the non-base inputs (same shape).
        base: the base tensor (required or optional depending on the method).
        name: tensor name (feeds the seed contract and error messages).
        seed: global seed for randomised methods.
        layer_index: layer of the tensor, if known.
        **params: method parameters (scalar, or one value per input for per-model parameters).
    """
    m = _method(method)
    _check_base(m, base)
    m.check_inputs(len(tensors), base is not None, where=name)
    _check_shapes(name, [*tensors, *([base] if base is not None else [])])
    ctx = TensorContext(name=name, layer_index=layer_index, seed=seed)
    return m(list(tensors), base, ctx=ctx, **params)


def _check_shapes(name: str, ts: Sequence[Tensor]) -> None:
    shapes = [tuple(t.shape) for t in ts]
    if len(set(shapes)) > 1:
        bad = next(s for s in shapes if s != shapes[0])
        raise TuttiError(f"tensor {name!r}: shapes differ ({list(shapes[0])} vs {list(bad)})")


def merge_state_dicts(
    method: str | MergeMethod,
    state_dicts: Sequence[Mapping[str, Tensor]],
    base: Mapping[str, Tensor] | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    out_dtype: torch.dtype | None = None,
    strict: bool = True,
    **params: Any,
) -> dict[str, Tensor]:
    """Merge whole state dicts tensor by tensor.

    Args:
        method: registered method name or object.
        state_dicts: the non-base models.
        base: the base model's state dict.
        seed: global seed for randomised methods.
        dtype: compute dtype (inputs are cast to it; default: as given).
        out_dtype: dtype of the results (default: the compute dtype).
        strict: require every input to have exactly the base's (or first input's) keys; otherwise tensors missing
            from some inputs are merged from those that have them (a base-only tensor is copied).
        **params: method parameters (scalar, or one value per input for per-model parameters).

    Returns:
        A new state dict; non-floating tensors (buffers) are copied from the first input that has them.
    """
    m = _method(method)
    _check_base(m, base)
    m.check_inputs(len(state_dicts), base is not None, where="merge_state_dicts")
    ref = base if base is not None else state_dicts[0]
    if strict:
        for i, sd in enumerate(state_dicts):
            if set(sd) != set(ref):
                missing = sorted(set(ref) ^ set(sd))[0]
                raise TuttiError(f"state dict {i} and the {'base' if base is not None else 'first'} differ in "
                                 f"tensor {missing!r}; pass strict=False to merge the tensors present")
    kwargs = m.resolve(params, len(state_dicts), where="merge_state_dicts")
    names = list(ref) + [k for sd in state_dicts for k in sd if k not in ref]
    out: dict[str, Tensor] = {}
    for name in dict.fromkeys(names):
        idx = [i for i, sd in enumerate(state_dicts) if name in sd]
        xs = [state_dicts[i][name] for i in idx]
        b = base.get(name) if base is not None else None
        if not xs or not (xs[0].is_floating_point()):
            src = xs[0] if xs else b
            assert src is not None
            out[name] = src.clone()
            continue
        if dtype is not None:
            xs = [x.to(dtype) for x in xs]
            b = b.to(dtype) if b is not None else None
        _check_shapes(name, [*xs, *([b] if b is not None else [])])
        call = {k: ([v[i] for i in idx] if m.params[_cfg(m, k)].per_model else v) for k, v in kwargs.items()}
        if m.wants_ctx:
            layer = _LAYER.search(name)
            call["ctx"] = TensorContext(name=name, layer_index=int(layer[1]) if layer else None, seed=seed)
        if m.base != "none":
            call["base"] = b
        res = m.fn(xs, **call)
        out[name] = res.to(out_dtype) if out_dtype is not None else res
    return out


def _cfg(m: MergeMethod, arg: str) -> str:
    return next(s.name for s in m.params.values() if s.arg == arg)
