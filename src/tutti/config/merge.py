"""The merge config: mergekit 0.1.5's YAML schema, accepted unchanged, validated strictly.

A config names a ``merge_method`` and its inputs in one of two forms: ``models:`` (whole models) or ``slices:``
(layer ranges, "frankenmerges"). Parameters are scalars, layer gradients (a list of numbers interpolated over the
layers of the output slice) or filtered lists (``[{filter: mlp, value: 0.5}, {value: 0}]``, first substring match
wins). Unlike mergekit, unknown keys are errors, not silently ignored.

This module imports no torch: it is pure data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tutti.config._io import read_yaml, validation_message
from tutti.errors import ConfigError

Scalar = bool | int | float | str
DTYPES = ("float32", "bfloat16", "float16", "int64")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRef(_Frozen):
    """A model reference: ``path_or_hub_id[@revision][+lora_path[@revision]]``.

    Args:
        path: local folder, zoo name or hub id.
        revision: hub revision (ignored for local folders).
        lora: optional PEFT LoRA adapter applied on the fly (streamed, per tensor).
        lora_revision: hub revision of the adapter.
        override_architecture: replaces ``config.architectures`` of the model (mergekit's dict form).
    """

    path: str
    revision: str | None = None
    lora: str | None = None
    lora_revision: str | None = None
    override_architecture: str | None = None

    @classmethod
    def parse(cls, value: Any) -> ModelRef:
        """Parse mergekit's string or dict form."""
        if isinstance(value, ModelRef):
            return value
        if isinstance(value, str):
            if value.count("+") > 1:
                raise ConfigError(f"model reference {value!r} has more than one '+'; use 'model+lora'")
            model, _, lora = value.partition("+")
            path, rev = _split_rev(model, value)
            lpath, lrev = _split_rev(lora, value) if lora else (None, None)
            return cls(path=path, revision=rev, lora=lpath, lora_revision=lrev)
        if isinstance(value, dict):
            data = dict(value)
            inner = data.pop("model", None)
            lora = data.pop("lora", None)
            arch = data.pop("override_architecture", None)
            if data:
                raise ConfigError(f"model reference: unknown key(s) {sorted(data)}; known: model, lora, "
                                  "override_architecture")
            base = _path_dict(inner, "model")
            lo = _path_dict(lora, "lora") if lora is not None else (None, None)
            return cls(path=base[0], revision=base[1], lora=lo[0], lora_revision=lo[1], override_architecture=arch)
        raise ConfigError(f"model reference {value!r} must be a string or a mapping")

    def __str__(self) -> str:
        s = self.path + (f"@{self.revision}" if self.revision else "")
        if self.lora:
            s += f"+{self.lora}" + (f"@{self.lora_revision}" if self.lora_revision else "")
        return s


def _split_rev(text: str, whole: str) -> tuple[str, str | None]:
    if text.count("@") > 1:
        raise ConfigError(f"model reference {whole!r} has more than one '@' in {text!r}")
    path, _, rev = text.partition("@")
    return path, rev or None


def _path_dict(value: Any, what: str) -> tuple[str, str | None]:
    if isinstance(value, str):
        return _split_rev(value, value)
    if isinstance(value, dict) and set(value) <= {"path", "revision"} and "path" in value:
        return str(value["path"]), value.get("revision")
    raise ConfigError(f"model reference: {what!r} must be a string or {{path, revision}}, got {value!r}")


class Conditional(_Frozen):
    """One entry of a filtered parameter list: ``value`` applies to tensors whose name contains ``filter``."""

    value: Scalar | list[Scalar]
    filter: str | None = None


Setting = Conditional | list[Conditional] | Scalar | list[Scalar]
Params = dict[str, Setting]


class _WithModel(_Frozen):
    model: ModelRef
    parameters: Params | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _ref(cls, v: Any) -> ModelRef:
        return ModelRef.parse(v)


class InputModel(_WithModel):
    """An entry of ``models:``: a whole model and its per-model parameters."""


class InputSlice(_WithModel):
    """A source of a slice: layers ``[start, end)`` of ``model``."""

    layer_range: tuple[int, int]

    @field_validator("layer_range")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 0 or v[1] < v[0]:
            raise ValueError(f"layer_range {list(v)} must satisfy 0 <= start <= end")
        return v


class OutputSlice(_Frozen):
    """An output slice: its sources are merged layer by layer."""

    sources: list[InputSlice] = Field(min_length=1)
    base_model: ModelRef | None = None
    residual_weight: float | None = None  # parsed for compatibility; mergekit does not use it either
    parameters: Params | None = None

    @field_validator("base_model", mode="before")
    @classmethod
    def _ref(cls, v: Any) -> ModelRef | None:
        return None if v is None else ModelRef.parse(v)

    @model_validator(mode="after")
    def _same_length(self) -> OutputSlice:
        lengths = {s.layer_range[1] - s.layer_range[0] for s in self.sources}
        if len(lengths) > 1:
            ranges = [list(s.layer_range) for s in self.sources]
            raise ValueError(f"all sources of a slice must span the same number of layers, got {ranges}")
        return self


class TokenSource(_Frozen):
    """Where the embedding row of one token comes from (``kind: model_token`` or ``kind: zero``)."""

    kind: Literal["model_token", "zero"]
    model: ModelRef | None = None
    token: str | None = None
    token_id: int | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _ref(cls, v: Any) -> ModelRef | None:
        return None if v is None else ModelRef.parse(v)


class TokenEmbedding(_Frozen):
    """Per-token embedding rule of ``tokenizer.tokens``."""

    source: ModelRef | TokenSource | None = None
    force: bool = False

    @field_validator("source", mode="before")
    @classmethod
    def _src(cls, v: Any) -> Any:
        return ModelRef.parse(v) if isinstance(v, str) else v


class TokenizerConfig(_Frozen):
    """The modern ``tokenizer:`` block."""

    source: Literal["union", "base"] | ModelRef = "union"
    tokens: dict[str, TokenEmbedding] | None = None
    pad_to_multiple_of: int | None = None

    @field_validator("source", mode="before")
    @classmethod
    def _src(cls, v: Any) -> Any:
        return v if v in ("union", "base") else ModelRef.parse(v)


class MergeConfig(_Frozen):
    """A whole merge config (mergekit 0.1.5 schema; unknown keys rejected).

    Args:
        merge_method: registered method name.
        models: whole-model inputs (exclusive with ``slices``).
        slices: layer-range inputs (exclusive with ``models``).
        base_model: base for task-vector methods; its ``config.json`` is cloned for the output.
        parameters: global parameters (lowest precedence).
        dtype: compute dtype (every input is cast to it).
        out_dtype: dtype of the saved tensors.
        tokenizer_source: legacy tokenizer option (``union``, ``base`` or a model).
        tokenizer: modern tokenizer block.
        chat_template: ``auto``, a built-in name or a Jinja string.
    """

    merge_method: str
    models: list[InputModel] | None = None
    slices: list[OutputSlice] | None = None
    modules: dict[str, Any] | None = None
    base_model: ModelRef | None = None
    parameters: Params | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: Literal["union", "base"] | ModelRef | None = None
    tokenizer: TokenizerConfig | None = None
    chat_template: str | None = None

    @field_validator("base_model", mode="before")
    @classmethod
    def _ref(cls, v: Any) -> ModelRef | None:
        return None if v is None else ModelRef.parse(v)

    @field_validator("tokenizer_source", mode="before")
    @classmethod
    def _tsrc(cls, v: Any) -> Any:
        return v if v in (None, "union", "base") else ModelRef.parse(v)

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPES:
            raise ValueError(f"dtype {v!r} is not one of {', '.join(DTYPES)}")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> MergeConfig:
        given = [k for k in ("models", "slices", "modules") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'models' or 'slices'")
        if self.modules:
            raise ValueError("'modules:' (multi-module models such as VLMs) is not supported yet; use 'models:' "
                             "or 'slices:'")
        if self.tokenizer_source is not None and self.tokenizer is not None:
            raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
        return self

    def output_slices(self) -> list[OutputSlice] | None:
        """The config's slices (``None`` for the ``models:`` form, which the planner turns into one slice)."""
        return self.slices

    def referenced_models(self) -> list[ModelRef]:
        """Every model named by the config, first occurrence first (base first)."""
        seen: dict[str, ModelRef] = {}
        refs: list[ModelRef] = [self.base_model] if self.base_model else []
        refs += [m.model for m in self.models or []]
        for s in self.slices or []:
            refs += ([s.base_model] if s.base_model else []) + [src.model for src in s.sources]
        for r in refs:
            seen.setdefault(str(r), r)
        return list(seen.values())

    def to_yaml(self) -> str:
        """The config as YAML (for ``mergekit_config.yml`` and the model card)."""
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(_refs_to_str(data), sort_keys=False)


def _refs_to_str(data: Any) -> Any:
    if isinstance(data, dict):
        if "path" in data and set(data) <= set(ModelRef.model_fields):
            return str(ModelRef(**data)) if not data.get("override_architecture") else data
        return {k: _refs_to_str(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_refs_to_str(v) for v in data]
    return data


def evaluate_setting(setting: Any, tensor_name: str, t: float) -> Any:
    """Resolve a parameter setting for one tensor at layer position ``t`` in [0, 1].

    A scalar is returned as is; a list of numbers is interpolated piecewise-linearly over evenly spaced anchors;
    a list of non-numbers is a step function; a filtered list returns the first entry whose ``filter`` is unset,
    ``"*"``, or a substring of ``tensor_name`` (``None`` if none matches).
    """
    if isinstance(setting, Conditional):
        setting = [setting]
    if isinstance(setting, dict):
        setting = [Conditional(**setting)]
    if not isinstance(setting, list):
        return setting
    if not setting:
        return None
    if all(isinstance(e, Conditional | dict) for e in setting):
        for c in setting:
            c = c if isinstance(c, Conditional) else Conditional(**c)
            if c.filter is None or c.filter == "*" or c.filter in tensor_name:
                return evaluate_setting(c.value, tensor_name, t)
        return None
    numeric = all(isinstance(e, int | float) and not isinstance(e, bool) for e in setting)
    if not numeric:
        return setting[int(t * (len(setting) - 1))]
    scaled = t * (len(setting) - 1)
    i0 = int(scaled)
    i1 = min(len(setting) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * setting[i0] + frac * setting[i1]


def parse_merge_config(data: Any, *, source: str = "config") -> MergeConfig:
    """Validate a dict (parsed YAML) as a :class:`MergeConfig`; errors are one-line :class:`ConfigError`."""
    if isinstance(data, MergeConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a merge config must be a mapping with 'merge_method', got {type(data).__name__}")
    try:
        return MergeConfig.model_validate(data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except ValidationError as e:
        raise ConfigError(validation_message(e, source=source)) from None


def load_merge_config(path_or_data: str | Path | dict[str, Any] | MergeConfig) -> MergeConfig:
    """Read a YAML file (or take a dict or config) and validate it."""
    if isinstance(path_or_data, MergeConfig | dict):
        return parse_merge_config(path_or_data)
    p = Path(path_or_data)
    return parse_merge_config(read_yaml(p, what="merge config"), source=str(p))
