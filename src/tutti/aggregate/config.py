"""Options of the after-inference strategies (frozen pydantic; no torch).

They sit under ``options:`` of a composite YAML::

    strategy: vote
    members: [smollm2-135m-instruct]
    options: {samples: 5, temperature: 0.7, extract: number}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tutti.config._io import validate


class SampleOptions(BaseModel):
    """How candidates are drawn from the members.

    Args:
        samples: completions per member and prompt (self-consistency / Self-MoA when > 1).
        temperature: sampling temperature of the members (0 = greedy, then ``samples`` must be 1).
        top_p: nucleus mass.
        max_new_tokens: per candidate (default: the caller's ``max_new_tokens``).
        seed: sampling seed (candidates repeat across runs, so they can be cached).
        cache_dir: folder of the proposer-output cache shared by re-runs and other aggregators.
        score_member: member index that answers log-likelihood requests (default: refuse them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(1, ge=1, le=256)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int | None = Field(None, ge=1)
    seed: int = 0
    cache_dir: str | None = None
    score_member: int | None = None

    @model_validator(mode="after")
    def _greedy(self) -> SampleOptions:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0 (greedy samples are all identical)")
        return self


class VoteOptions(SampleOptions):
    """Majority vote / self-consistency.

    Args:
        extract: answer extractor (``number``, ``answer``, ``choice``, ``exact``).
        weights: one vote weight per member (default 1).
        tie_break: ``first`` (the key that appeared first, member order) or ``score`` (highest mean token
            log-probability among the tied keys' candidates, then first).
    """

    extract: str = "answer"
    weights: tuple[float, ...] | None = None
    tie_break: Literal["first", "score"] = "first"


class MBROptions(SampleOptions):
    """Minimum Bayes risk selection; ``utility``: ``chrf``, ``bleu`` or ``embedding`` (MiniLM cosine)."""

    utility: str = "chrf"


class RankOptions(SampleOptions):
    """Pairwise ranking by a judge (PairRanker-style).

    Args:
        judge: the judge model (zoo name, path, composite); default: the first member.
        mode: ``full`` (every pair, both orders) or ``bubble`` (one bubble pass, n-1 comparisons).
        template: judge prompt with ``{input}``, ``{a}``, ``{b}``; the judge continues with ``A`` or ``B``.
    """

    judge: str | dict[str, Any] | None = None
    mode: Literal["full", "bubble"] = "full"
    template: str | None = None


class FusionOptions(SampleOptions):
    """Mixture-of-agents.

    Args:
        layers: proposer layers (1 = proposers then aggregator; MoA's default 3 layers = 2 proposer layers).
        aggregator: index of the member that writes the final answer.
        proposers: indices of the proposing members (default all).
    """

    layers: int = Field(1, ge=1, le=8)
    aggregator: int = 0
    proposers: tuple[int, ...] | None = None


class DebateOptions(SampleOptions):
    """Multi-agent debate: every member is an agent (``samples`` agents each); ``rounds`` of revision after the
    first answers; final majority vote with ``extract``."""

    rounds: int = Field(2, ge=0, le=10)
    extract: str = "answer"


def parse_options(cls: type[BaseModel], data: dict[str, Any] | None, strategy: str) -> Any:
    """Validate ``options`` of a strategy into ``cls``; errors become one-line :class:`ConfigError`."""
    return validate(cls, dict(data or {}), source=f"strategy {strategy!r}", prefix="options.")
