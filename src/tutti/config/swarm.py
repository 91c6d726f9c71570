"""``SwarmConfig``: every hyperparameter of a Model Swarms run, frozen and validated (no torch import).

Defaults follow the paper and its official code (Feng et al., arXiv 2410.11163); the search ranges the paper
samples from are given in each field's description. A YAML file maps one to one onto this schema::

    base: smollm2-135m-instruct          # base model of the LoRA experts (zoo name, folder or hub id)
    experts: [experts/math, experts/code, experts/chat]
    representation: lora_factors          # lora_factors | lora_delta | dense
    utility: {name: exact_match, task: tasks/gsm, split: dev}
    n_particles: 10
    seed: 0
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tutti.config._io import read_yaml, validate
from tutti.errors import ConfigError

Representation = Literal["lora_factors", "lora_delta", "dense"]
Split = Literal["train", "dev", "test"]


class UtilityConfig(BaseModel):
    """Which utility the search maximises, on which task and split.

    Args:
        name: a registered utility (``tutti swarm --list-utilities``).
        task: task folder with ``train/dev/test.jsonl`` (or one ``.jsonl`` file), when the utility needs data.
        split: split scored during search; ``test`` is refused unless ``allow_test_set_in_search``.
        limit: use only the first ``limit`` examples of the split.
        options: utility-specific settings (prompt template, max_new_tokens, judge model...).
        parts: sub-utilities of ``multitask``.
        weights: weights of ``parts`` (``multitask`` mean only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    task: str | None = None
    split: Split = "dev"
    limit: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)
    parts: tuple[UtilityConfig, ...] = ()
    weights: tuple[float, ...] | None = None


class SwarmConfig(BaseModel):
    """A Model Swarms search: experts, utility, and the particle-swarm hyperparameters.

    Paper grids (the official scripts sample one value per run): inertia {0.1, 0.2, 0.3}, cognitive
    {0.1 ... 0.5}, social {0.2 ... 0.6}, repel {0.01, 0.05, 0.1}, step_length {0.5 ... 1.0}.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    experts: tuple[str, ...] = Field(description="PEFT LoRA folders of one base, or full checkpoints of one base")
    base: str | None = Field(default=None, description="base model of LoRA experts (default: from the adapter config)")
    representation: Representation = Field(
        default="lora_factors",
        description="lora_factors: combine A and B separately (paper); lora_delta: combine B·A; dense: full weights",
    )
    utility: UtilityConfig
    n_particles: int = Field(default=20, ge=2, description="swarm size N; experts are crossed over up to N (paper 20)")
    init_weight: Literal["paper", "code"] = Field(
        default="code", description="crossover weight U(0,1) (paper) or U(0,2) (official code: half extrapolation)"
    )
    init_velocity: Literal["random", "zero", "best"] = Field(default="random", description="initial velocity")
    inertia: float = Field(default=0.2, ge=0, description="phi_v, paper grid {0.1, 0.2, 0.3}")
    cognitive: float = Field(default=0.3, ge=0, description="phi_p, paper grid {0.1 ... 0.5}")
    social: float = Field(default=0.4, ge=0, description="phi_g, paper grid {0.2 ... 0.6}")
    repel: float = Field(default=0.05, ge=0, description="phi_w, paper grid {0.01, 0.05, 0.1}; 0 disables")
    step_length: float = Field(default=1.0, gt=0, description="initial lambda, paper grid {0.5 ... 1.0}")
    step_decay: float = Field(default=0.95, gt=0, le=1, description="lambda <- max(lambda*decay, step_min)")
    step_min: float = Field(default=0.1, ge=0)
    randomness: bool = Field(default=True, description="scalar U(0,1) factor per term (False: all factors 1)")
    patience: int = Field(default=10, ge=1, description="stop after this many iterations without a new global best")
    max_iterations: int = Field(default=200, ge=0)
    restart: bool = Field(default=True, description="restart stray particles at their personal best")
    restart_patience: float = Field(default=0.67, gt=0, description="fraction of patience (official scripts 0.67)")
    restart_cooldown: int | None = Field(
        default=None, ge=0, description="iterations without restart after one (None: int(restart_patience*patience))"
    )
    seed: int = 0
    top_k: int = Field(default=1, ge=1, description="write the k best personal bests")
    allow_test_set_in_search: bool = False
    batch_size: int = Field(default=16, ge=1, description="sequences per forward pass in evaluation")
    dtype: str = "float32"
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                        description="where each worker's resident model (and an LLM judge) runs: cpu, cuda, cuda:N")

    @model_validator(mode="after")
    def _check(self) -> SwarmConfig:
        if len(self.experts) < 2:
            raise ValueError("give at least 2 experts")
        if self.inertia + self.cognitive + self.social + self.repel <= 0:
            raise ValueError("at least one of inertia, cognitive, social, repel must be > 0")
        _check_split(self.utility, self.allow_test_set_in_search)
        return self

    @property
    def restart_after(self) -> int:
        """Evaluations without a strict personal improvement that trigger a restart (official code's count)."""
        # the official rule len(hist) - hist.index(best) >= rp*patience, with hist counting the best itself
        return max(1, math.ceil(self.restart_patience * self.patience) - 1)

    @property
    def cooldown(self) -> int:
        """Iterations during which a just-restarted particle is not restarted again."""
        return int(self.restart_patience * self.patience) if self.restart_cooldown is None else self.restart_cooldown


def _check_split(u: UtilityConfig, allow_test: bool) -> None:
    if u.split == "test" and not allow_test:
        raise ValueError(
            f"utility {u.name!r} asks for the test split during search; use split: dev, or set "
            "allow_test_set_in_search (--allow-test-set-in-search) if you really mean it"
        )
    for p in u.parts:
        _check_split(p, allow_test)


def swarm_config_from_dict(data: dict[str, Any], *, source: str = "config") -> SwarmConfig:
    """Validate a dict as a :class:`SwarmConfig`, raising a one-line :class:`ConfigError`."""
    return validate(SwarmConfig, data, source=source)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` (dotted keys, YAML values) overrides to a config dict; returns a new dict."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        node = out
        *parents, last = key.strip().split(".")
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {k!r} is not a mapping")
        node[last] = yaml.safe_load(value)
    return out


def load_swarm_config(path: str | Path, overrides: list[str] | None = None) -> SwarmConfig:
    """Read a YAML swarm config; relative expert/task/base paths are resolved against the file's folder."""
    p = Path(path)
    data = read_yaml(p, what="swarm config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    data = apply_overrides(data, overrides or [])
    root = p.parent
    if isinstance(data.get("experts"), list):
        data["experts"] = [_rel(root, e) for e in data["experts"]]
    if isinstance(data.get("base"), str):
        data["base"] = _rel(root, data["base"])
    if isinstance(data.get("utility"), dict):
        data["utility"] = _fix_tasks(root, data["utility"])
    return swarm_config_from_dict(data, source=str(p))


def _rel(root: Path, value: Any) -> Any:
    # only rewrite relative paths that exist beside the config (zoo names and hub ids stay as they are)
    if isinstance(value, str) and not Path(value).is_absolute() and (root / value).exists():
        return str((root / value).resolve())
    return value


def _fix_tasks(root: Path, u: dict[str, Any]) -> dict[str, Any]:
    u = dict(u)
    if "task" in u:
        u["task"] = _rel(root, u["task"])
    if isinstance(u.get("parts"), list):
        u["parts"] = [_fix_tasks(root, p) if isinstance(p, dict) else p for p in u["parts"]]
    return u
