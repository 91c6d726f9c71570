"""Multi-agent debate (Du et al., ICML 2024, arXiv 2305.14325): agents answer, read each other, revise, vote.

Steps: every agent (each member, ``samples`` agents per member) answers; for each of ``rounds`` rounds every
agent sees the other agents' latest answers and writes an updated answer; the final answers are majority-voted
with an answer extractor (ties: first agent in member order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tutti.aggregate.answers import EXTRACTORS, majority_vote
from tutti.aggregate.base import Candidate, PostHoc, as_chat, cost, propose, proposer_params
from tutti.aggregate.cache import ProposalCache
from tutti.aggregate.config import DebateOptions
from tutti.models.interface import Model, Prompt, SamplingParams


def debate_turn(prompt: Prompt, own: str, others: Sequence[str]) -> list[dict[str, str]]:
    """The chat an agent sees in a revision round: the question, its answer, the others' answers."""
    listing = "".join(f"\n\nAgent {i + 1}: {t.strip()}" for i, t in enumerate(others))
    return [*as_chat(prompt), {"role": "assistant", "content": own},
            {"role": "user", "content": "Other agents answered the same question:" + listing +
             "\n\nTaking their reasoning into account, give your final answer to the original question."}]


class Debate(PostHoc):
    """Rounds of mutual revision among agents, then a vote.

    Args:
        members: agent models.
        options: :class:`DebateOptions`.
        name: model id.
    """

    strategy = "debate"

    def __init__(self, members: Sequence[Model], options: DebateOptions, *, name: str = "debate",
                 cache: Any = None) -> None:
        super().__init__(members, name=name, score_member=options.score_member,
                         cache=cache if cache is not None else ProposalCache(options.cache_dir))
        self.options = options
        self.extract = EXTRACTORS.get(options.extract)

    def _answer(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[tuple[str, dict[str, Any]]]:
        o = self.options
        p = proposer_params(o, params, self._seed_offset)
        current = propose(self.members, prompts, p, samples=o.samples, cache=self.cache)
        spent = [list(r) for r in current]
        for _ in range(o.rounds):
            nxt: list[list[Candidate]] = [[] for _ in prompts]
            # agent a of member m revises with one greedy-or-sampled completion of its own chat
            for a in range(len(current[0])):
                m = current[0][a].member
                asks = [debate_turn(pr, row[a].text, [c.text for j, c in enumerate(row) if j != a])
                        for pr, row in zip(prompts, current, strict=True)]
                got = propose([self.members[m]], asks, p, samples=1, cache=self.cache, salt=f"agent{a}")
                for i, g in enumerate(got):
                    nxt[i].append(Candidate(g[0].text, m, a, g[0].score, g[0].tokens, g[0].calls))
                    spent[i].append(nxt[i][-1])
            current = nxt
        out = []
        for row, s in zip(current, spent, strict=True):
            v = majority_vote([self.extract(c.text) for c in row])
            text = row[v.winner].text if v.winner is not None else row[0].text
            out.append((text, {"answer": v.key, "votes": v.tally, "rounds": o.rounds, "agents": len(row),
                               **cost(s)}))
        return out
