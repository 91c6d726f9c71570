"""The narrow, batched model interface every model and every composite implements.

A *prompt* is either raw text (``str``, tokenised as is) or a chat (a list of ``{"role", "content"}`` dicts,
rendered with the model's chat template and a generation prompt). Single models, merges and composites all
expose the same three batched calls, so composites nest, evaluate and serve like one model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

ChatMessage = dict[str, str]
Prompt = str | list[ChatMessage]


@dataclass(frozen=True)
class SamplingParams:
    """How to decode.

    Args:
        max_new_tokens: most tokens to generate per prompt.
        temperature: 0 means greedy; otherwise logits are divided by it before sampling.
        top_k: keep the k most likely tokens (0 = all).
        top_p: nucleus sampling mass (1.0 = all).
        seed: seed of the sampling generator (None = nondeterministic).
        stop: strings that end generation; the text is cut before the first one found.
        n: completions per prompt.
        logprobs: return the chosen token's log-probability at each step.
        top_logprobs: also return this many most likely alternatives per step.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.n < 1 or self.top_logprobs < 0:
            raise ValueError("top_k and top_logprobs must be >= 0 and n >= 1")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        """True when decoding takes the argmax at every step."""
        return self.temperature == 0.0


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one generated token and, optionally, its top alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GenerationOutput:
    """One completion.

    Args:
        text: generated text, cut before any stop string, without special tokens.
        token_ids: generated token ids (in the model's own vocabulary; empty for composites without one).
        finish_reason: ``"stop"`` (EOS or a stop string) or ``"length"`` (max_new_tokens reached).
        prompt_tokens: number of prompt tokens.
        logprobs: per-token log-probabilities when asked for.
        info: strategy-specific facts (acceptance rate, share of positions ensembled, member calls...).
    """

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: str = "length"
    prompt_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        """Number of generated tokens."""
        return len(self.token_ids)


@dataclass(frozen=True)
class StreamChunk:
    """One step of a streamed generation: the new text since the previous chunk."""

    text: str
    token_id: int | None = None
    finish_reason: str | None = None
    logprob: TokenLogprob | None = None


@dataclass(frozen=True)
class LoglikelihoodResult:
    """Log-likelihood of a continuation given a context.

    Args:
        logprob: sum of the continuation tokens' log-probabilities.
        is_greedy: whether every continuation token is the argmax at its position.
        num_tokens: number of continuation tokens.
    """

    logprob: float
    is_greedy: bool
    num_tokens: int


@runtime_checkable
class Model(Protocol):
    """What every model and composite offers: three batched calls, plus streaming."""

    name: str

    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """Complete each prompt; returns ``params.n`` outputs per prompt."""
        ...

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Complete one prompt, yielding text deltas as they are decided (``n`` must be 1)."""
        ...

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Log-probabilities of the next token after each prompt, shape ``(batch, vocab)``."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Log-likelihood of each ``(context, continuation)`` pair."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; returns (text, whether a stop string was found)."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
