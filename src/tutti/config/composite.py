"""The composite-model YAML schema (frozen pydantic; imports no torch).

A composite names a ``strategy`` and its ``members``; members are zoo names, paths, hub ids, merge configs
(a path to a mergekit YAML or an inline dict with ``merge_method``) or other composites (a path to a composite
YAML or an inline dict with ``strategy``)::

    strategy: ensemble            # ensemble | contrastive | proxy | speculative (a registry: more can be added)
    members: [smollm2-135m-instruct, gemma-3-270m]
    align: union                  # shared | union | topk | bytes
    combine: {method: mean, weights: [0.6, 0.4]}

Member order carries each strategy's roles: ``contrastive`` = [expert, amateur]; ``proxy`` = [base, expert,
anti_expert]; ``speculative`` = [target, draft].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tutti.config._io import read_yaml, validate
from tutti.errors import ConfigError

Member = str | dict[str, Any]


class CombineConfig(BaseModel):
    """How member distributions are combined at each step (``ensemble`` strategy).

    Args:
        method: a registered combiner: ``mean`` (weighted mean of probabilities), ``product`` (weighted sum of
            log-probabilities, renormalised), ``perplexity`` (PackLLM-sim: weights from each member's prompt
            perplexity), ``gated`` (the first member alone unless its top probability is below ``threshold``).
        weights: one weight per member (normalised to sum 1); default uniform.
        threshold: gate of the ``gated`` method (GaC's threshold mode).
        inner: what ``gated`` does at uncertain positions (``mean`` | ``product`` | ``perplexity``).
        tau: temperature of the ``perplexity`` weights (PackLLM-sim).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = "mean"
    weights: tuple[float, ...] | None = None
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    inner: str = "mean"
    tau: float = Field(1.0, gt=0.0)

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and (any(w < 0 for w in v) or sum(v) <= 0):
            raise ValueError("weights must be >= 0 with a positive sum")
        return v


class CompositeConfig(BaseModel):
    """A composite model: a strategy over members.

    Args:
        strategy: a registered strategy (``ensemble``, ``contrastive``, ``proxy``, ``speculative``).
        members: models in role order (see the module docstring).
        name: the model id shown in outputs and by the server (default: derived from the strategy).
        align: vocabulary aligner (``shared``, ``union``, ``topk``, ``bytes``).
        topk: k of the ``topk`` aligner (UniTE uses 10).
        combine: combiner of the ``ensemble`` strategy.
        alpha: plausibility cut of ``contrastive`` (0.1) or the expert weight of ``proxy`` (1.0).
        beta: ``contrastive`` only: ``None`` = Li et al. (``log pE - log pA``); a number = O'Brien & Lewis
            (``(1+beta) log pE - beta log pA``, 0.5 in the paper).
        num_draft_tokens: ``speculative``: tokens the draft proposes per target call.
        dtype: dtype of loaded member models (fp32 on CPU).
        options: settings of strategies registered outside ``tutti.collab`` (router, cascade, vote, mbr, rank,
            fusion, debate), validated by those strategies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    members: tuple[Member, ...]
    name: str | None = None
    align: str = "shared"
    topk: int = Field(10, ge=1)
    combine: CombineConfig = CombineConfig()
    alpha: float | None = None
    beta: float | None = None
    num_draft_tokens: int = Field(4, ge=1, le=64)
    dtype: str = "float32"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("members")
    @classmethod
    def _members(cls, v: tuple[Member, ...]) -> tuple[Member, ...]:
        if not v:
            raise ValueError("a composite needs at least one member")
        return v

    @field_validator("combine", mode="before")
    @classmethod
    def _combine(cls, v: Any) -> Any:
        return {"method": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _roles(self) -> CompositeConfig:
        need = {"contrastive": 2, "proxy": 3, "speculative": 2}.get(self.strategy)
        if need is not None and len(self.members) != need:
            raise ValueError(f"strategy {self.strategy!r} takes exactly {need} members, got {len(self.members)}")
        w = self.combine.weights
        if self.strategy == "ensemble" and w is not None and len(w) != len(self.members):
            raise ValueError(f"combine.weights has {len(w)} entries for {len(self.members)} members")
        return self


def parse_composite(data: dict[str, Any], *, source: str = "composite config") -> CompositeConfig:
    """Validate a composite dict; errors become one-line :class:`ConfigError` messages naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'strategy' and 'members', got {type(data).__name__}")
    return validate(CompositeConfig, data, source=source, hint="see docs/composites.md")


def load_composite_config(path: str | Path) -> CompositeConfig:
    """Read and validate a composite YAML file."""
    return parse_composite(read_yaml(path, what="composite config"), source=str(path))


def is_composite_dict(data: Any) -> bool:
    """True for a dict that describes a composite (it names a ``strategy``)."""
    return isinstance(data, dict) and "strategy" in data


def is_merge_dict(data: Any) -> bool:
    """True for a dict that looks like a mergekit merge config."""
    return isinstance(data, dict) and "merge_method" in data
