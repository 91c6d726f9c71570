"""Fusion by mixture-of-agents (Wang et al., arXiv 2406.04692): layers of proposers, then an aggregator.

Steps: layer 1 answers the user prompt; each later layer answers again with the previous layer's answers given
as references in a system message; the aggregator writes the final answer from the last layer's references.
With one member and ``samples > 1`` this is Self-MoA (arXiv 2502.00674), the compute-matched baseline.
Layer-1 answers come from the proposer cache, so trying another aggregator does not regenerate them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tutti.aggregate.base import Candidate, PostHoc, as_chat, cost, propose, proposer_params
from tutti.aggregate.cache import ProposalCache
from tutti.aggregate.config import FusionOptions
from tutti.errors import TuttiError
from tutti.models.interface import Model, Prompt, SamplingParams, StreamChunk

REFERENCES_HEADER = (
    "Several assistants answered the user's latest message. Their answers are listed below. Read them "
    "critically: some may be wrong. Write one answer of your own that keeps what is correct and fixes what is "
    "not; do not mention the other answers.\n"
)


def with_references(prompt: Prompt, references: Sequence[str]) -> list[dict[str, str]]:
    """The chat of ``prompt`` with ``references`` listed in a system message (merged into an existing one)."""
    refs = "".join(f"\n[{i + 1}] {r.strip()}" for i, r in enumerate(references))
    chat = as_chat(prompt)
    note = REFERENCES_HEADER + refs
    if chat and chat[0]["role"] == "system":
        return [{"role": "system", "content": chat[0]["content"] + "\n\n" + note}, *chat[1:]]
    return [{"role": "system", "content": note}, *chat]


class Fusion(PostHoc):
    """Mixture-of-agents composite.

    Args:
        members: models; ``options.proposers`` picks the proposers, ``options.aggregator`` the aggregator.
        options: :class:`FusionOptions`.
        name: model id.
    """

    strategy = "fusion"

    def __init__(self, members: Sequence[Model], options: FusionOptions, *, name: str = "fusion",
                 cache: Any = None) -> None:
        super().__init__(members, name=name, score_member=options.score_member,
                         cache=cache if cache is not None else ProposalCache(options.cache_dir))
        self.options = options
        n = len(self.members)
        idx = options.proposers if options.proposers is not None else tuple(range(n))
        if not idx or any(not 0 <= i < n for i in (*idx, options.aggregator)):
            raise TuttiError(f"fusion: proposers {list(idx)} / aggregator {options.aggregator} out of range for "
                             f"{n} members")
        self.proposers = [self.members[i] for i in idx]
        self.aggregator = self.members[options.aggregator]

    def references(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Candidate]]:
        """Every proposer layer; returns, per prompt, all candidates generated (last layer last)."""
        o = self.options
        p = proposer_params(o, params, self._seed_offset)
        layer = propose(self.proposers, prompts, p, samples=o.samples, cache=self.cache)
        spent = [list(r) for r in layer]
        for _ in range(o.layers - 1):
            asks = [with_references(pr, [c.text for c in row]) for pr, row in zip(prompts, layer, strict=True)]
            layer = propose(self.proposers, asks, p, samples=o.samples, cache=self.cache)
            for s, row in zip(spent, layer, strict=True):
                s.extend(row)
        self._last = layer
        return spent

    def _answer(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[tuple[str, dict[str, Any]]]:
        spent = self.references(prompts, params)
        asks = [with_references(pr, [c.text for c in row]) for pr, row in zip(prompts, self._last, strict=True)]
        finals = self.aggregator.generate(asks, params=params)
        out = []
        for row, f in zip(spent, finals, strict=True):
            c = cost(row)
            c["member_calls"] += 1
            c["generated_tokens"] += int(f[0].info.get("generated_tokens", f[0].completion_tokens))
            out.append((f[0].text, {"proposals": len(row), "layers": self.options.layers, **c}))
        return out

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Proposers first (not streamed), then the aggregator's answer streamed as it is written."""
        self.references([prompt], params)
        ask = with_references(prompt, [c.text for c in self._last[0]])
        yield from self.aggregator.stream(ask, params=params)
