"""Majority vote and self-consistency over the members' sampled answers (Wang et al. 2023, arXiv 2203.11171).

Steps: every member writes ``samples`` answers (cached); an extractor turns each into an answer key; the
weighted plurality key wins (ties: first appearance, or best mean log-probability with ``tie_break: score``);
the output is the first candidate carrying the winning key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tutti.aggregate.answers import EXTRACTORS, majority_vote
from tutti.aggregate.base import PostHoc, cost, propose, proposer_params
from tutti.aggregate.cache import ProposalCache
from tutti.aggregate.config import VoteOptions
from tutti.errors import TuttiError
from tutti.models.interface import Model, Prompt, SamplingParams


class Vote(PostHoc):
    """Majority vote of answers from one model (self-consistency) or several (multi-model vote).

    Args:
        members: the voters.
        options: :class:`VoteOptions`.
        name: model id.
    """

    strategy = "vote"

    def __init__(self, members: Sequence[Model], options: VoteOptions, *, name: str = "vote", cache: Any = None
                 ) -> None:
        super().__init__(members, name=name, score_member=options.score_member,
                         cache=cache if cache is not None else ProposalCache(options.cache_dir))
        self.options = options
        self.extract = EXTRACTORS.get(options.extract)
        if options.weights is not None and len(options.weights) != len(self.members):
            raise TuttiError(f"vote: {len(options.weights)} weights for {len(self.members)} members")

    def _answer(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[tuple[str, dict[str, Any]]]:
        o = self.options
        cands = propose(self.members, prompts, proposer_params(o, params, self._seed_offset), samples=o.samples, cache=self.cache)
        out = []
        for row in cands:
            keys = [self.extract(c.text) for c in row]
            weights = [o.weights[c.member] for c in row] if o.weights else None
            scores = [c.score for c in row] if o.tie_break == "score" else None
            v = majority_vote(keys, weights=weights, scores=scores)
            text = row[v.winner].text if v.winner is not None else (row[0].text if row else "")
            out.append((text, {"answer": v.key, "votes": v.tally, "agreement": v.agreement, "tied": v.tied,
                               "candidates": len(row), **cost(row)}))
        return out
