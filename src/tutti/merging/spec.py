"""What a merge method declares, read from its signature: parameters, base mode, input counts (no torch here).

:class:`MergeMethod` and :func:`method_from_function` serve both engines: the torch methods registered in
:data:`tutti.merging.base.MERGE_METHODS` and the NumPy ones of :mod:`tutti.merging.np_methods`, so the planner
(:mod:`tutti.merging.plan`) checks and resolves parameters the same way for either without importing torch.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tutti.errors import ConfigError

BaseMode = Literal["required", "optional", "none"]
_SCALAR_TYPES: dict[Any, type] = {float: float, int: int, bool: bool, str: str}
_REQUIRED = inspect.Parameter.empty

@dataclass(frozen=True)
class ParamSpec:
    """One config parameter of a merge method, read from the function signature.

    Args:
        name: the config name (``lambda`` for a Python parameter ``lambda_``).
        arg: the Python parameter name.
        kind: ``float``, ``int``, ``bool`` or ``str``.
        per_model: one value per input model (``list[...]`` annotation) instead of one global value.
        default: the default value, or ``inspect.Parameter.empty`` when required.
    """

    name: str
    arg: str
    kind: type
    per_model: bool
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        """Whether the config must give a value."""
        return self.default is _REQUIRED

    def coerce(self, value: Any, where: str) -> Any:
        """Check and convert one scalar value (YAML gives ints where floats are meant)."""
        ok = {
            float: isinstance(value, int | float) and not isinstance(value, bool),
            int: isinstance(value, int) and not isinstance(value, bool),
            bool: isinstance(value, bool),
            str: isinstance(value, str),
        }[self.kind]
        if value is None and not self.required:
            return self.default
        if not ok:
            raise ConfigError(
                f"{where}: parameter {self.name!r} must be a {self.kind.__name__}, got {value!r}; fix the value"
            )
        return self.kind(value)


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: the pure function plus what its signature declares.

    Args:
        name: registry name (the YAML ``merge_method``).
        fn: the pure tensor function.
        params: config parameters by config name.
        base: ``"required"``, ``"optional"`` or ``"none"``.
        randomized: draws random numbers (through :class:`TensorContext`).
        elementwise: output element ``j`` depends only on input elements ``j``, so the executor may split the
            tensor into row blocks to bound memory.
        min_inputs: fewest non-base inputs accepted.
        max_inputs: most non-base inputs accepted (``None``: unbounded).
        wants_ctx: the function takes ``ctx``.
    """

    name: str
    fn: Callable[..., Any]
    params: dict[str, ParamSpec]
    base: BaseMode
    randomized: bool = False
    elementwise: bool = False
    min_inputs: int = 1
    max_inputs: int | None = None
    wants_ctx: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check_inputs(self, n_inputs: int, has_base: bool, where: str = "merge") -> None:
        """Raise :class:`ConfigError` when the number of inputs or the base does not fit the method."""
        if self.base == "required" and not has_base:
            raise ConfigError(f"{where}: merge_method {self.name!r} needs a base model; add 'base_model: <model>'")
        if n_inputs < self.min_inputs:
            raise ConfigError(
                f"{where}: merge_method {self.name!r} needs at least {self.min_inputs} model(s) besides the base, "
                f"got {n_inputs}"
            )
        if self.max_inputs is not None and n_inputs > self.max_inputs:
            raise ConfigError(
                f"{where}: merge_method {self.name!r} takes at most {self.max_inputs} model(s) besides the base, "
                f"got {n_inputs}"
            )

    def unknown_params(self, names: Sequence[str]) -> list[str]:
        """The names in ``names`` that the method does not take."""
        return [n for n in names if n not in self.params]

    def resolve(self, values: Mapping[str, Any], n_inputs: int, where: str = "merge") -> dict[str, Any]:
        """Turn config values into keyword arguments for :attr:`fn`.

        Args:
            values: config name -> scalar (global parameters) or scalar / list of ``n_inputs`` scalars
                (per-model parameters). Missing names take their default.
            n_inputs: number of non-base inputs.
            where: context for error messages (e.g. the tensor name).
        """
        for bad in self.unknown_params(list(values)):
            raise ConfigError(unknown_param_message(self, bad, where))
        kwargs: dict[str, Any] = {}
        for spec in self.params.values():
            value = values.get(spec.name)
            if spec.per_model:
                seq = list(value) if isinstance(value, list | tuple) else [value] * n_inputs
                if len(seq) != n_inputs:
                    raise ConfigError(f"{where}: {spec.name!r} has {len(seq)} values for {n_inputs} models")
                if spec.required and any(v is None for v in seq):
                    raise ConfigError(
                        f"{where}: merge_method {self.name!r} needs parameter {spec.name!r} for every model; "
                        f"add it under the model's 'parameters:' (or globally)"
                    )
                kwargs[spec.arg] = [spec.coerce(v, where) for v in seq]
            else:
                if value is None and spec.required:
                    raise ConfigError(
                        f"{where}: merge_method {self.name!r} needs parameter {spec.name!r}; add it under 'parameters:'"
                    )
                kwargs[spec.arg] = spec.coerce(value, where) if value is not None else spec.default
        return kwargs

    def __call__(
        self,
        tensors: Sequence[Any],
        base: Any = None,
        *,
        ctx: Any = None,
        **params: Any,
    ) -> Any:
        """Merge one tensor: ``params`` are config values (scalars, or lists for per-model parameters)."""
        if ctx is None:
            from tutti.merging.base import TensorContext

            ctx = TensorContext(name="tensor")
        kwargs = self.resolve(params, len(tensors), where=ctx.name)
        if self.wants_ctx:
            kwargs["ctx"] = ctx
        if self.base != "none":
            kwargs["base"] = base
        elif base is not None:
            raise ConfigError(f"merge_method {self.name!r} takes no base model; pass it as an ordinary input")
        return self.fn(list(tensors), **kwargs)


def unknown_param_message(method: MergeMethod, bad: str, where: str) -> str:
    """One-line did-you-mean message for a parameter the method does not take."""
    import difflib

    close = difflib.get_close_matches(bad, list(method.params), n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(sorted(method.params)) or "none"
    return f"{where}: merge_method {method.name!r} takes no parameter {bad!r}.{hint} It takes: {known}."


def _param_from(p: inspect.Parameter, hint: Any, fn_name: str) -> ParamSpec:
    origin = typing.get_origin(hint)
    per_model = origin in (list, Sequence)
    kind = typing.get_args(hint)[0] if per_model else hint
    if kind not in _SCALAR_TYPES:
        raise TypeError(f"{fn_name}: parameter {p.name!r} has unsupported type {hint!r}")
    if p.kind is not inspect.Parameter.KEYWORD_ONLY:
        raise TypeError(f"{fn_name}: config parameter {p.name!r} must be keyword-only (after '*')")
    return ParamSpec(name=p.name.rstrip("_"), arg=p.name, kind=_SCALAR_TYPES[kind], per_model=per_model,
                     default=p.default)


def method_from_function(
    name: str,
    fn: Callable[..., Any],
    *,
    randomized: bool = False,
    elementwise: bool = False,
    min_inputs: int = 1,
    max_inputs: int | None = None,
    **extra: Any,
) -> MergeMethod:
    """Build a :class:`MergeMethod` by reading ``fn``'s signature (see the module docstring)."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    names = list(sig.parameters)
    if not names or names[0] in ("base", "ctx"):
        raise TypeError(f"{fn.__name__}: the first parameter must be 'tensors: list[Tensor]'")
    base: BaseMode = "none"
    params: dict[str, ParamSpec] = {}
    wants_ctx = False
    for pname in names[1:]:
        p = sig.parameters[pname]
        if pname == "base":
            base = "required" if p.default is _REQUIRED else "optional"
        elif pname == "ctx":
            wants_ctx = True
        else:
            spec = _param_from(p, hints[pname], fn.__name__)
            params[spec.name] = spec
    if randomized and not wants_ctx:
        raise TypeError(f"{fn.__name__}: a randomised method must take 'ctx: TensorContext' (seed contract)")
    return MergeMethod(name=name, fn=fn, params=params, base=base, randomized=randomized, elementwise=elementwise,
                       min_inputs=min_inputs, max_inputs=max_inputs, wants_ctx=wants_ctx, extra=dict(extra))
