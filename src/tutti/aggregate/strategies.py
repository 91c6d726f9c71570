"""Registers the after-inference strategies (``vote``, ``mbr``, ``rank``, ``fusion``, ``debate``) in the
composite strategy registry of :mod:`tutti.collab`, so they load from the same YAML and nest like any model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tutti.aggregate.cache import ProposalCache
from tutti.aggregate.config import (
    DebateOptions,
    FusionOptions,
    MBROptions,
    RankOptions,
    VoteOptions,
    parse_options,
)
from tutti.aggregate.debate import Debate
from tutti.aggregate.fusion import Fusion
from tutti.aggregate.mbr import MBR
from tutti.aggregate.rank import PairRank
from tutti.aggregate.vote import Vote
from tutti.collab.loader import STRATEGIES, load_member


def strategy_options(cfg: Any) -> dict[str, Any]:
    """The ``options`` mapping of a composite config (empty when absent)."""
    return dict(getattr(cfg, "options", None) or {})


def _name(cfg: Any, members: Sequence[Any]) -> str:
    return cfg.name or f"{cfg.strategy}:" + "+".join(str(getattr(m, "name", "?")) for m in members)


def _cache(opts: Any) -> ProposalCache:
    return ProposalCache(opts.cache_dir)


@STRATEGIES.register("vote", pretty_name="Majority vote / self-consistency", paper="https://arxiv.org/abs/2203.11171")
def build_vote(cfg: Any, members: Sequence[Any]) -> Vote:
    """Majority vote of extracted answers over members x samples."""
    o = parse_options(VoteOptions, strategy_options(cfg), "vote")
    return Vote(members, o, name=_name(cfg, members), cache=_cache(o))


@STRATEGIES.register("mbr", pretty_name="Minimum Bayes risk selection", paper="https://aclanthology.org/N04-1022")
def build_mbr(cfg: Any, members: Sequence[Any]) -> MBR:
    """The candidate with the highest mean chrF / BLEU / embedding similarity to the others."""
    o = parse_options(MBROptions, strategy_options(cfg), "mbr")
    return MBR(members, o, name=_name(cfg, members), cache=_cache(o))


@STRATEGIES.register("rank", pretty_name="Pairwise ranking (PairRanker-style)", paper="https://arxiv.org/abs/2306.02561")
def build_rank(cfg: Any, members: Sequence[Any]) -> PairRank:
    """The candidate a judge model prefers in position-swapped pairwise comparisons."""
    o = parse_options(RankOptions, strategy_options(cfg), "rank")
    judge = load_member(o.judge, dtype=cfg.dtype) if o.judge is not None else members[0]
    return PairRank(members, judge, o, name=_name(cfg, members), cache=_cache(o))


@STRATEGIES.register("fusion", pretty_name="Mixture-of-agents fusion", paper="https://arxiv.org/abs/2406.04692")
def build_fusion(cfg: Any, members: Sequence[Any]) -> Fusion:
    """Layers of proposers, then an aggregator writes the answer from their references."""
    o = parse_options(FusionOptions, strategy_options(cfg), "fusion")
    return Fusion(members, o, name=_name(cfg, members), cache=_cache(o))


@STRATEGIES.register("debate", pretty_name="Multi-agent debate", paper="https://arxiv.org/abs/2305.14325")
def build_debate(cfg: Any, members: Sequence[Any]) -> Debate:
    """Agents answer, read each other's answers for some rounds, then vote."""
    o = parse_options(DebateOptions, strategy_options(cfg), "debate")
    return Debate(members, o, name=_name(cfg, members), cache=_cache(o))
