"""Cascades (FrugalGPT arXiv 2305.05176, AutoMix arXiv 2310.12963): cheaper members first, escalate when unsure.

Steps: member 0 answers every prompt; a scorer rates each answer; answers scoring at least the stage's threshold
are kept, the others go to the next member; the last member's answers are always kept. Scorers
(:data:`SCORERS`): ``probability`` (the member's own answer probability, exp of the mean token log-prob),
``consistency`` (agreement of extra samples with the answer, as MoT cascades) and ``verifier`` (a verifier
model's P(yes) that the answer is correct, as AutoMix's self-verification). Thresholds are learned on dev data
by :func:`learn_thresholds` (exhaustive search over score quantiles, under a cost budget or cost weight).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from tutti.aggregate.answers import EXTRACTORS
from tutti.aggregate.base import last_user_text
from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Model,
    Prompt,
    SamplingParams,
    StreamChunk,
)
from tutti.registry import Registry

Scorer = Callable[[Model, Sequence[Prompt], Sequence[GenerationOutput], SamplingParams], list[float]]
SCORERS = Registry[Any]("cascade scorer")


def _mean_prob(o: GenerationOutput) -> float:
    if not o.logprobs:
        return 0.0
    return math.exp(sum(t.logprob for t in o.logprobs) / len(o.logprobs))


@SCORERS.register("probability", pretty_name="answer probability")
class ProbabilityScorer:
    """exp(mean token log-probability) of the member's own answer (members must report log-probs)."""

    needs_logprobs = True

    def __call__(self, member: Model, prompts: Sequence[Prompt], outs: Sequence[GenerationOutput],
                 params: SamplingParams) -> list[float]:
        """One score per answer."""
        return [_mean_prob(o) for o in outs]


@SCORERS.register("consistency", pretty_name="self-consistency agreement")
class ConsistencyScorer:
    """Share of ``samples`` sampled answers whose extracted answer equals the kept answer's.

    Args:
        samples: extra samples per prompt; temperature: their temperature; extract: answer extractor; seed.
    """

    needs_logprobs = False

    def __init__(self, *, samples: int = 4, temperature: float = 0.7, extract: str = "answer", seed: int = 0) -> None:
        self.samples, self.temperature, self.seed = samples, temperature, seed
        self.extract = EXTRACTORS.get(extract)

    def __call__(self, member: Model, prompts: Sequence[Prompt], outs: Sequence[GenerationOutput],
                 params: SamplingParams) -> list[float]:
        """One agreement in [0, 1] per answer."""
        p = SamplingParams(max_new_tokens=params.max_new_tokens, temperature=self.temperature, seed=self.seed,
                           stop=params.stop, n=self.samples)
        extra = member.generate(list(prompts), params=p)
        scores = []
        for o, xs in zip(outs, extra, strict=True):
            key = self.extract(o.text)
            keys = [self.extract(x.text) for x in xs]
            scores.append(sum(k == key for k in keys) / len(keys) if key is not None else 0.0)
        return scores


VERIFIER_TEMPLATE = ("Question: {input}\nProposed answer: {answer}\n"
                     "Is the proposed answer correct? Answer yes or no.\nVerdict:")


@SCORERS.register("verifier", pretty_name="verifier model")
class VerifierScorer:
    """P(" yes") against P(" no") of a verifier model on a verification prompt.

    Args:
        verifier: a loaded model (any: only ``loglikelihood`` is used); template with ``{input}``, ``{answer}``.
    """

    needs_logprobs = False

    def __init__(self, verifier: Model, *, template: str = VERIFIER_TEMPLATE) -> None:
        self.verifier, self.template = verifier, template

    def __call__(self, member: Model, prompts: Sequence[Prompt], outs: Sequence[GenerationOutput],
                 params: SamplingParams) -> list[float]:
        """One P(yes) per answer."""
        reqs = []
        for p, o in zip(prompts, outs, strict=True):
            q = self.template.replace("{input}", last_user_text(p)).replace("{answer}", o.text.strip())
            reqs += [(q, " yes"), (q, " no")]
        res = self.verifier.loglikelihood(reqs)
        return [1.0 / (1.0 + math.exp(res[i + 1].logprob - res[i].logprob)) for i in range(0, len(res), 2)]


def simulate(scores: torch.Tensor, correct: torch.Tensor, costs: Sequence[float], thresholds: Sequence[float]
             ) -> tuple[float, float, torch.Tensor]:
    """Accuracy, mean cost and stopping stage of a cascade on pre-computed per-stage scores and correctness.

    Args:
        scores, correct: ``(n, stages)``: each member's scorer value and correctness on each prompt.
        costs: per-call cost of each stage (a prompt that stops at stage s pays stages 0..s).
        thresholds: ``stages - 1`` thresholds (accept at stage s when ``score >= thresholds[s]``).
    """
    n, k = scores.shape
    accept = torch.ones(n, k, dtype=torch.bool)
    accept[:, :-1] = scores[:, :-1] >= torch.as_tensor(thresholds, dtype=scores.dtype)
    stage = accept.float().argmax(1)  # first accepting stage (the last always accepts)
    cum = torch.cumsum(torch.as_tensor(costs, dtype=torch.float64), 0)
    rows = torch.arange(n)
    return float(correct[rows, stage].float().mean()), float(cum[stage].mean()), stage


def learn_thresholds(scores: torch.Tensor, correct: torch.Tensor, costs: Sequence[float], *,
                     max_cost: float | None = None, cost_weight: float = 0.0, grid: int = 21) -> list[float]:
    """Thresholds maximising dev accuracy (minus ``cost_weight`` x mean cost) with mean cost <= ``max_cost``.

    Candidates per stage are the score quantiles on a ``grid`` plus +inf (always escalate); the search is
    exhaustive over stages (fine for the 2-4 stages cascades have). Ties go to the cheaper setting.
    """
    _n, k = scores.shape
    if k < 2:
        raise TuttiError("a cascade needs at least two members")
    if len(costs) != k:
        raise TuttiError(f"cascade: {len(costs)} costs for {k} stages")
    qs = torch.linspace(0, 1, grid, dtype=torch.float64)
    cands = [sorted({*torch.quantile(scores[:, s].double(), qs).tolist(), math.inf}) for s in range(k - 1)]
    best: tuple[float, float, list[float]] | None = None
    for thr in itertools.product(*cands):
        acc, cost, _ = simulate(scores.double(), correct, costs, thr)
        if max_cost is not None and cost > max_cost + 1e-12:
            continue
        obj = acc - cost_weight * cost
        if best is None or obj > best[0] + 1e-12 or (abs(obj - best[0]) <= 1e-12 and cost < best[1]):
            best = (obj, cost, list(thr))
    if best is None:
        raise TuttiError(f"no cascade setting costs at most {max_cost}; the first member alone costs {costs[0]}")
    return best[2]


class Cascade:
    """Members tried in order until the scorer accepts an answer.

    Args:
        members: cheapest first.
        scorer: a :data:`SCORERS` instance.
        thresholds: ``len(members) - 1`` acceptance thresholds.
        costs: per-call cost of each member (default 1 each).
        name: model id.
    """

    def __init__(self, members: Sequence[Model], scorer: Any, thresholds: Sequence[float], *,
                 costs: Sequence[float] | None = None, name: str = "cascade") -> None:
        self.members = list(members)
        if len(self.members) < 2:
            raise TuttiError("a cascade needs at least two members")
        if len(thresholds) != len(self.members) - 1:
            raise TuttiError(f"cascade: {len(thresholds)} thresholds for {len(self.members)} members (need members - 1)")
        self.scorer = scorer
        self.thresholds = list(thresholds)
        self.costs = list(costs) if costs is not None else [1.0] * len(self.members)
        self.name = name

    def _member_params(self, params: SamplingParams) -> SamplingParams:
        if getattr(self.scorer, "needs_logprobs", False) and not params.logprobs:
            return SamplingParams(**{**params.__dict__, "logprobs": True})
        return params

    def stage_outputs(self, member: int, prompts: Sequence[Prompt], params: SamplingParams
                      ) -> tuple[list[GenerationOutput], list[float]]:
        """Answers of one member and their scores."""
        outs = [o[0] for o in self.members[member].generate(list(prompts), params=self._member_params(params))]
        return outs, self.scorer(self.members[member], prompts, outs, params)

    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """One answer per prompt from the first member whose answer the scorer accepts."""
        if params.n != 1:
            raise TuttiError("a cascade returns one answer per prompt; use n=1")
        pending = list(range(len(prompts)))
        out: list[list[GenerationOutput]] = [[] for _ in prompts]
        trail: list[list[float]] = [[] for _ in prompts]
        for s in range(len(self.members)):
            if not pending:
                break
            outs, scores = self.stage_outputs(s, [prompts[i] for i in pending], params)
            keep, nxt = [], []
            for i, o, sc in zip(pending, outs, scores, strict=True):
                trail[i].append(round(sc, 6))
                last = s == len(self.members) - 1
                (keep if last or sc >= self.thresholds[s] else nxt).append((i, o))
            for i, o in keep:
                out[i] = [GenerationOutput(
                    text=o.text, token_ids=o.token_ids, finish_reason=o.finish_reason, prompt_tokens=o.prompt_tokens,
                    logprobs=o.logprobs if params.logprobs else None,
                    info={"strategy": "cascade", "stage": s, "answered_by": self.members[s].name,
                          "scores": trail[i], "member_calls": s + 1, "cost": sum(self.costs[:s + 1])})]
            pending = [i for i, _ in nxt]
        return out

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """The accepted answer as one chunk (acceptance needs the whole answer)."""
        o = self.generate([prompt], params=params)[0][0]
        yield StreamChunk(o.text)
        yield StreamChunk("", None, o.finish_reason)

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Not defined for a cascade (the answering member is known only after generation)."""
        raise TuttiError("a cascade has no next-token distribution (the answering member is chosen after "
                         "generation); evaluate it with a generation utility")

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Not defined for a cascade (see :meth:`next_token_logprobs`)."""
        raise TuttiError("a cascade has no log-likelihood (the answering member is chosen after generation); "
                         "evaluate it with a generation utility such as exact_match")

    def fit(self, prompts: Sequence[Prompt], targets: Sequence[str], *, metric: Callable[[str, str], float],
            params: SamplingParams, max_cost: float | None = None, cost_weight: float = 0.0) -> list[float]:
        """Learn the thresholds on dev data: every member answers every prompt once, then :func:`learn_thresholds`.

        Returns:
            The thresholds (also set on the cascade).
        """
        cols_s, cols_c = [], []
        for s in range(len(self.members)):
            outs, scores = self.stage_outputs(s, prompts, params)
            cols_s.append(scores)
            cols_c.append([metric(o.text, t) for o, t in zip(outs, targets, strict=True)])
        self.thresholds = learn_thresholds(torch.tensor(cols_s).T, torch.tensor(cols_c).T, self.costs,
                                           max_cost=max_cost, cost_weight=cost_weight)
        return self.thresholds


__all__ = ["SCORERS", "Cascade", "learn_thresholds", "simulate"]
