"""Pairwise ranking of the members' answers by a judge model (PairRanker-style, LLM-Blender arXiv 2306.02561).

The judge sees the question and two answers and continues with ``A`` or ``B``; ``P(A better)`` is the softmax of
the two continuations' log-likelihoods. Every pair is judged in both orders (the *position-swap check*):
``pref(a, b) = (P_ab(A) + P_ba(B)) / 2`` when both orders agree, and exactly 0.5 (a tie) when they disagree,
since then the judge preferred a position, not an answer. Aggregation: ``full`` sums ``pref`` over all pairs
(ties: lowest index); ``bubble`` keeps a running best in one pass (n - 1 comparisons).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tutti.aggregate.base import Candidate, PostHoc, cost, last_user_text, propose, proposer_params
from tutti.aggregate.cache import ProposalCache
from tutti.aggregate.config import RankOptions
from tutti.errors import TuttiError
from tutti.models.interface import Model, Prompt, SamplingParams

DEFAULT_TEMPLATE = (
    "Compare two answers to the same question and say which one is more correct and helpful.\n\n"
    "Question: {input}\n\nAnswer A: {a}\n\nAnswer B: {b}\n\nThe better answer is"
)


class PairRank(PostHoc):
    """Select the answer a judge prefers in pairwise comparisons with the position-swap check.

    Args:
        members: proposers.
        judge: the judge model (any model: only ``loglikelihood`` is used).
        options: :class:`RankOptions`.
        name: model id.
    """

    strategy = "rank"

    def __init__(self, members: Sequence[Model], judge: Model, options: RankOptions, *, name: str = "rank",
                 cache: Any = None) -> None:
        super().__init__(members, name=name, score_member=options.score_member,
                         cache=cache if cache is not None else ProposalCache(options.cache_dir))
        self.judge = judge
        self.options = options
        self.template = options.template or DEFAULT_TEMPLATE
        for field in ("{input}", "{a}", "{b}"):
            if field not in self.template:
                raise TuttiError(f"rank: options.template must contain {field}")

    def p_first(self, pairs: Sequence[tuple[str, str, str]]) -> list[float]:
        """``P(first shown answer is better)`` for each ``(question, first, second)``, one judge call."""
        reqs = []
        for q, a, b in pairs:
            prompt = self.template.replace("{input}", q).replace("{a}", a).replace("{b}", b)
            reqs += [(prompt, " A"), (prompt, " B")]
        res = self.judge.loglikelihood(reqs) if reqs else []
        out = []
        for i in range(0, len(res), 2):
            la, lb = res[i].logprob, res[i + 1].logprob
            m = max(la, lb)
            out.append(math.exp(la - m) / (math.exp(la - m) + math.exp(lb - m)))
        return out

    def preferences(self, question: str, x: Sequence[tuple[Candidate, Candidate]]) -> list[tuple[float, bool]]:
        """``(pref(a, b), consistent)`` for each pair, judged in both orders in one batch."""
        flat = [(question, a.text, b.text) for a, b in x] + [(question, b.text, a.text) for a, b in x]
        p = self.p_first(flat)
        n = len(x)
        out = []
        for i in range(n):
            ab, ba = p[i], 1.0 - p[n + i]  # both: P(a better)
            consistent = (ab > 0.5) == (ba > 0.5) and ab != 0.5 and ba != 0.5
            out.append(((ab + ba) / 2 if consistent else 0.5, consistent))
        return out

    def _rank_one(self, question: str, row: list[Candidate]) -> tuple[int, dict[str, Any]]:
        n = len(row)
        if n == 1:
            return 0, {"comparisons": 0, "inconsistent": 0}
        if self.options.mode == "full":
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
            prefs = self.preferences(question, [(row[i], row[j]) for i, j in pairs])
            wins = [0.0] * n
            for (i, j), (p, _) in zip(pairs, prefs, strict=True):
                wins[i] += p
                wins[j] += 1 - p
            best = max(range(n), key=lambda k: (round(wins[k], 12), -k))
            return best, {"comparisons": 2 * len(pairs), "inconsistent": sum(not c for _, c in prefs),
                          "wins": [round(w, 6) for w in wins]}
        best, bad = 0, 0
        for j in range(1, n):
            (p, ok), = self.preferences(question, [(row[j], row[best])])
            bad += not ok
            if p > 0.5:
                best = j
        return best, {"comparisons": 2 * (n - 1), "inconsistent": bad}

    def _answer(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[tuple[str, dict[str, Any]]]:
        o = self.options
        cands = propose(self.members, prompts, proposer_params(o, params, self._seed_offset), samples=o.samples, cache=self.cache)
        out = []
        for prompt, row in zip(prompts, cands, strict=True):
            best, info = self._rank_one(last_user_text(prompt), row)
            info = {**info, **cost(row)}
            info["judge_calls"] = info["comparisons"]
            out.append((row[best].text, {"chosen": best, "chosen_member": row[best].member, **info}))
        return out
