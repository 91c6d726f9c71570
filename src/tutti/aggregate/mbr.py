"""Minimum Bayes risk selection among the members' answers (chrF, BLEU or MiniLM-embedding utility).

Steps: sample candidates (cached); build the ``(n, n)`` utility matrix; return the candidate with the highest
mean utility against the others (ties: lowest index, i.e. member order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tutti.aggregate.base import PostHoc, cost, propose, proposer_params
from tutti.aggregate.cache import ProposalCache
from tutti.aggregate.config import MBROptions
from tutti.aggregate.similarity import MBR_UTILITIES, mbr_select
from tutti.models.interface import Model, Prompt, SamplingParams


class MBR(PostHoc):
    """Consensus selection: ``argmax_h mean_{r != h} u(h, r)`` over the candidates.

    Args:
        members: proposers.
        options: :class:`MBROptions`.
        name: model id.
    """

    strategy = "mbr"

    def __init__(self, members: Sequence[Model], options: MBROptions, *, name: str = "mbr", cache: Any = None
                 ) -> None:
        super().__init__(members, name=name, score_member=options.score_member,
                         cache=cache if cache is not None else ProposalCache(options.cache_dir))
        self.options = options
        self.utility = MBR_UTILITIES.get(options.utility)

    def _answer(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[tuple[str, dict[str, Any]]]:
        o = self.options
        cands = propose(self.members, prompts, proposer_params(o, params, self._seed_offset), samples=o.samples, cache=self.cache)
        out = []
        for row in cands:
            best, expected = mbr_select(self.utility([c.text for c in row]))
            out.append((row[best].text, {"chosen": best, "chosen_member": row[best].member,
                                         "expected_utility": [round(x, 6) for x in expected], **cost(row)}))
        return out
