"""Stub models with fixed answers, for exact tests of routers, cascades and after-inference strategies."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

import torch

from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Prompt,
    SamplingParams,
    StreamChunk,
    TokenLogprob,
)


def render(prompt: Prompt) -> str:
    """A stub's view of a prompt: raw text, or the chat as JSON."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


class StubModel:
    """Answers from ``answer(prompt_text, sample_index) -> text``; optional per-answer mean log-prob.

    ``loglik(context_text, continuation) -> float`` answers log-likelihood requests (for judges).
    """

    def __init__(self, name: str, answer: Callable[[str, int], str] | Sequence[str] | str,
                 *, score: float = -1.0, loglik: Callable[[str, str], float] | None = None) -> None:
        self.name = name
        if isinstance(answer, str):
            self._answer: Callable[[str, int], str] = lambda p, i, a=answer: a
        elif callable(answer):
            self._answer = answer
        else:
            seq = list(answer)
            self._answer = lambda p, i: seq[i % len(seq)]
        self.score = score
        self._loglik = loglik
        self.generate_calls = 0
        self.prompts_seen: list[Prompt] = []
        self.loglik_requests = 0

    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        self.generate_calls += 1
        out = []
        for p in prompts:
            self.prompts_seen.append(p)
            row = []
            for i in range(params.n):
                text = self._answer(render(p), i)
                ntok = max(1, len(text.split()))
                lps = tuple(TokenLogprob("t", self.score) for _ in range(ntok)) if params.logprobs else None
                row.append(GenerationOutput(text=text, token_ids=tuple(range(ntok)), finish_reason="stop",
                                            logprobs=lps))
            out.append(row)
        return out

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        text = self.generate([prompt], params=params)[0][0].text
        for w in text.split(" "):
            yield StreamChunk(w + " ")
        yield StreamChunk("", None, "stop")

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        return torch.log_softmax(torch.arange(4, dtype=torch.float32).repeat(len(prompts), 1), -1)

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        self.loglik_requests += len(requests)
        if self._loglik is None:
            return [LoglikelihoodResult(-float(len(c)), True, 1) for _, c in requests]
        return [LoglikelihoodResult(self._loglik(render(p), c), True, 1) for p, c in requests]

