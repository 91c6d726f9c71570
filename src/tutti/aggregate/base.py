"""What every after-inference strategy shares: sampling candidates from members (cached) and the model interface.

A post-hoc composite generates whole answers with its members, then selects or fuses them. It implements
:class:`tutti.models.interface.Model`: ``generate`` (one answer per prompt), ``stream`` (the final answer; fusion
streams its aggregator), and token-level scoring only through a member named by ``score_member`` (there is no
meaningful log-probability of a vote), otherwise a clear :class:`TuttiError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tutti.aggregate.cache import ProposalCache, cache_key
from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Model,
    Prompt,
    SamplingParams,
    StreamChunk,
    cut_at_stop,
)


@dataclass(frozen=True)
class Candidate:
    """One proposed answer.

    Args:
        text: the completion.
        member: index of the member that wrote it.
        sample: sample index within that member's completions of the prompt.
        score: mean token log-probability when the member reported it, else 0.
        tokens: completion length in tokens.
    """

    text: str
    member: int
    sample: int
    score: float = 0.0
    tokens: int = 0
    calls: int = 1


def _to_dict(o: GenerationOutput) -> dict[str, Any]:
    lp = [t.logprob for t in o.logprobs] if o.logprobs else []
    tokens = int(o.info.get("generated_tokens", o.completion_tokens))
    return {"text": o.text, "tokens": tokens or len(lp), "score": sum(lp) / len(lp) if lp else 0.0,
            "calls": int(o.info.get("member_calls", 1))}


def cost(*groups: Sequence[Candidate]) -> dict[str, float]:
    """``member_calls`` and ``generated_tokens`` spent on the candidates (cache hits included: it is the
    compute the answer needs, not what this run paid)."""
    cands = [c for g in groups for c in g]
    return {"member_calls": sum(c.calls for c in cands), "generated_tokens": sum(c.tokens for c in cands)}


def propose(
    members: Sequence[Model],
    prompts: Sequence[Prompt],
    params: SamplingParams,
    *,
    samples: int | Sequence[int] = 1,
    cache: ProposalCache | None = None,
    salt: str = "",
) -> list[list[Candidate]]:
    """Candidates of every member for every prompt, ``samples`` per member, read from ``cache`` when present.

    Each member is called once, batched over the prompts it has not answered yet, with ``n = samples``.

    Returns:
        ``candidates[prompt]``: member-major, sample-minor order.
    """
    per = [samples] * len(members) if isinstance(samples, int) else list(samples)
    found: list[list[list[dict[str, Any]] | None]] = [[None] * len(members) for _ in prompts]
    for m, (member, k) in enumerate(zip(members, per, strict=True)):
        p = SamplingParams(**{**params.__dict__, "n": k, "logprobs": True})
        keys = [cache_key(member.name, pr, p, salt) for pr in prompts]
        todo = []
        for i, key in enumerate(keys):
            hit = cache.get(key) if cache is not None else None
            if hit is None:
                todo.append(i)
            else:
                found[i][m] = hit
        if todo:
            outs = member.generate([prompts[i] for i in todo], params=p)
            for i, o in zip(todo, outs, strict=True):
                rows = [_to_dict(x) for x in o]
                found[i][m] = rows
                if cache is not None:
                    cache.put(keys[i], rows)
    return [[Candidate(r["text"], m, s, r["score"], r["tokens"], r["calls"])
             for m, rows in enumerate(row) for s, r in enumerate(rows or [])] for row in found]


def as_chat(prompt: Prompt) -> list[dict[str, str]]:
    """A chat version of a prompt (raw text becomes one user message)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def last_user_text(prompt: Prompt) -> str:
    """The text a router or judge reads: the prompt itself, or the last user turn of a chat."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return users[-1] if users else (prompt[-1].get("content", "") if prompt else "")


class PostHoc(ABC):
    """Base of the after-inference composites (one level of inheritance, by design).

    Args:
        members: member models.
        name: model id shown in outputs.
        score_member: member that answers ``loglikelihood`` / ``next_token_logprobs`` (None: refuse).
        cache: proposer-output cache (shared between strategies to avoid regeneration).
    """

    strategy = "post-hoc"

    def __init__(self, members: Sequence[Model], *, name: str, score_member: int | None = None,
                 cache: ProposalCache | None = None) -> None:
        if not members:
            raise TuttiError(f"strategy {self.strategy!r} needs at least one member")
        if score_member is not None and not 0 <= score_member < len(members):
            raise TuttiError(f"score_member {score_member} is out of range for {len(members)} members")
        self.members = list(members)
        self.name = name
        self.score_member = score_member
        self.cache = cache if cache is not None else ProposalCache()
        self._seed_offset = 0

    @abstractmethod
    def _answer(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[tuple[str, dict[str, Any]]]:
        """One (text, info) per prompt; info holds at least the :func:`cost` of the answer."""

    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """One aggregated answer per prompt; with ``n > 1`` the whole strategy runs ``n`` times, the members'
        sampling seed shifted by the run index (so a nested vote can be sampled by a consistency scorer)."""
        if not prompts:
            return []
        out: list[list[GenerationOutput]] = [[] for _ in prompts]
        one = SamplingParams(**{**params.__dict__, "n": 1})
        for k in range(params.n):
            self._seed_offset = k
            for row, (text, info) in zip(out, self._answer(prompts, one), strict=True):
                cut, _ = cut_at_stop(text, params.stop)
                row.append(GenerationOutput(text=cut, finish_reason="stop", info={"strategy": self.strategy, **info}))
        self._seed_offset = 0
        return out

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """The final answer as one chunk (it is only known once every candidate is in)."""
        out = self.generate([prompt], params=params)[0][0]
        yield StreamChunk(out.text)
        yield StreamChunk("", None, out.finish_reason)

    def _scorer(self) -> Model:
        if self.score_member is None:
            raise TuttiError(
                f"strategy {self.strategy!r} has no token-level scores; set options.score_member to the member "
                "that should answer log-likelihood requests, or use a generation utility"
            )
        return self.members[self.score_member]

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> Any:
        """Delegated to ``score_member``."""
        return self._scorer().next_token_logprobs(prompts)

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Delegated to ``score_member``."""
        return self._scorer().loglikelihood(requests)


def proposer_params(opts: Any, params: SamplingParams, seed_offset: int = 0) -> SamplingParams:
    """Member decoding settings: the strategy's sampling options, the caller's length and stop strings."""
    return SamplingParams(max_new_tokens=opts.max_new_tokens or params.max_new_tokens,
                          temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed + seed_offset,
                          stop=params.stop)
