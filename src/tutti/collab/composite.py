"""Token-level composites (ensemble, contrastive, proxy) behind the narrow model interface.

A :class:`TokenComposite` is members + an aligner + a combiner; it implements ``generate``, ``stream``,
``next_token_logprobs`` and ``loglikelihood`` with the one decoding loop of :mod:`.engine`, so it can be
generated from, evaluated and served like a single model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from tutti.collab.combiners import Combiner, Gated, PerplexityWeighted
from tutti.collab.engine import decode, open_member_session, open_sessions, output_text, stream_deltas
from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Prompt,
    SamplingParams,
    StreamChunk,
    TokenLogprob,
)


def _needs_prompt_nll(c: Any) -> bool:
    return isinstance(c, PerplexityWeighted) or (isinstance(c, Gated) and _needs_prompt_nll(c.inner))


class TokenComposite:
    """Several HF-backed members decoded as one model.

    Args:
        models: member models (``HFModel``-like: ``.module``, ``.tokenizer``, ``.encode``, ``.render``).
        aligner: a :class:`tutti.collab.aligners.Aligner` built for these members.
        combiner: ``(input_ids, [member log-probs], state) -> log-probs``.
        name: model id shown in outputs and by the server.
        strategy: strategy name reported in ``info``.
    """

    def __init__(self, models: Sequence[Any], aligner: Any, combiner: Combiner, *, name: str,
                 strategy: str = "ensemble") -> None:
        self.models = list(models)
        self.aligner = aligner
        self.combiner = combiner
        self.name = name
        self.strategy = strategy
        self.prompt_nll = _needs_prompt_nll(combiner)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ nesting (align: shared only)
    @property
    def nestable(self) -> bool:
        """Whether this composite can be a token-level member of another (its space is a tokenizer's)."""
        return type(self.aligner).__name__ == "SharedAligner"

    @property
    def tokenizer(self) -> Any:
        """The shared tokenizer (``align: shared``), so a token-level composite can nest in another."""
        return self.models[0].tokenizer

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """EOS ids of every member."""
        return tuple(sorted(set().union(*(set(m.eos_token_ids) for m in self.models))))

    def render(self, prompt: Prompt) -> str:
        """The first member's rendering of a prompt."""
        return self.models[0].render(prompt)

    def encode(self, prompt: Prompt) -> list[int]:
        """The first member's token ids of a prompt (all members share the tokenizer when nested)."""
        return self.models[0].encode(prompt)

    def split_continuation(self, context: Prompt, continuation: str) -> tuple[list[int], list[int]]:
        """The first member's split of context and continuation tokens."""
        return self.models[0].split_continuation(context, continuation)

    def open_session(self, prompt_ids: Sequence[list[int]], *, prompt_nll: bool = False) -> CompositeSession:
        """A decoding session over token ids, so this composite can be a member of another."""
        if not self.nestable:
            raise TuttiError(f"composite {self.name!r} uses align: {type(self.aligner).__name__}; only composites "
                             "with align: shared can be token-level members of another composite")
        return CompositeSession(self, prompt_ids)

    @property
    def vocab_size(self) -> int:
        """Size of the common space."""
        return int(self.aligner.size)

    def element_text(self, index: int) -> str:
        """Text of one common-space element (``""`` for EOS and control tokens)."""
        return self.aligner.element_bytes(index).decode("utf-8", errors="replace")

    def _info(self, state: dict[str, Any], sessions: Sequence[Any], row: int) -> dict[str, Any]:
        info: dict[str, Any] = {
            "strategy": self.strategy,
            "members": [m.name for m in self.models],
            "member_forward_calls": [s.forward_calls for s in sessions],
        }
        if "gate_steps" in state:
            steps = int(state["gate_steps"][row])
            info["ensembled_share"] = int(state["gate_ensembled"][row]) / steps if steps else 0.0
        if "weights" in state:
            info["weights"] = [round(float(w), 4) for w in state["weights"][row]]
        return info

    def _logprob(self, lp: torch.Tensor, index: int, k: int) -> TokenLogprob:
        top: tuple[tuple[str, float], ...] = ()
        if k:
            v, i = lp.topk(k)
            top = tuple((self.element_text(int(t)), float(x)) for x, t in zip(v, i, strict=True))
        return TokenLogprob(self.element_text(index), float(lp[index]), top)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """Complete every prompt ``params.n`` times (one batched loop)."""
        flat = [p for p in prompts for _ in range(params.n)]
        if not flat:
            return []
        want_lp = params.logprobs or params.top_logprobs > 0
        lps: list[list[TokenLogprob]] = [[] for _ in flat]
        with self._lock:
            loop = None
            for step, state in decode(self.models, self.aligner, self.combiner, flat, params,
                                      prompt_nll=self.prompt_nll):
                loop = state
                if want_lp:
                    for r, c in enumerate(step.chosen):
                        if c is not None and not self.aligner.is_eos(c):
                            lps[r].append(self._logprob(step.logprobs[r], c, params.top_logprobs))
        assert loop is not None
        shared = type(self.aligner).__name__ == "SharedAligner"
        outs = []
        for r in range(len(flat)):
            text, hit = output_text(bytes(loop.out[r]), params.stop)
            ids = [i for i in loop.ids[r] if not self.aligner.is_eos(i)]
            outs.append(GenerationOutput(
                text=text, token_ids=tuple(ids) if shared else (),
                finish_reason="stop" if hit or loop.finish[r] == "stop" else "length",
                prompt_tokens=loop.prompt_tokens[r], logprobs=tuple(lps[r]) if want_lp else None,
                info=self._info(loop.combine_state, loop.sessions, r),
            ))
        return [outs[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Complete one prompt, yielding text deltas as elements are chosen."""
        if params.n != 1:
            raise TuttiError("streaming supports n=1 only")
        finish: list[str] = []

        def texts() -> Iterator[tuple[str, bool]]:
            with self._lock, torch.inference_mode():
                for step, loop in decode(self.models, self.aligner, self.combiner, [prompt], params,
                                         prompt_nll=self.prompt_nll):
                    done = 0 in step.finished
                    if done:
                        finish.append(step.finished[0])
                    yield bytes(loop.out[0]).decode("utf-8", errors="replace"), done

        for delta in stream_deltas(texts(), params.stop):
            yield StreamChunk(delta)
        yield StreamChunk("", None, finish[0] if finish else "stop")

    @torch.inference_mode()
    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Combined next-token log-probabilities in the common space, ``(batch, size)``."""
        with self._lock:
            sessions, nll, _ = open_sessions(self.models, prompts, prompt_nll=self.prompt_nll)
            state: dict[str, Any] = {"prompt_nll": nll} if nll is not None else {}
            if hasattr(self.aligner, "attach"):
                self.aligner.attach(sessions)
            members = self.aligner.to_common([s.logprobs() for s in sessions])
            empty = torch.zeros((len(prompts), 0), dtype=torch.long)
            return self.combiner(empty, members, state).cpu()

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Log-likelihood of each continuation under the combined distribution (teacher-forced loop)."""
        if not requests:
            return []
        forced = []
        for i, (ctx, cont) in enumerate(requests):
            f = self.aligner.encode_continuation(ctx, cont)
            if not f:
                raise TuttiError(f"request {i}: the continuation {cont!r} has no tokens")
            forced.append(f)
        total = [0.0] * len(requests)
        greedy = [True] * len(requests)
        params = SamplingParams(max_new_tokens=max(len(f) for f in forced))
        with self._lock:
            for step, _ in decode(self.models, self.aligner, self.combiner, [c for c, _ in requests], params,
                                  prompt_nll=self.prompt_nll, forced=forced):
                for r, c in enumerate(step.chosen):
                    if c is None:
                        continue
                    total[r] += float(step.logprobs[r, c])
                    greedy[r] = greedy[r] and int(step.logprobs[r].argmax()) == c
        return [LoglikelihoodResult(total[r], greedy[r], len(forced[r])) for r in range(len(requests))]


class CompositeSession:
    """A nested shared-vocabulary composite seen as one member: its members' sessions, combined."""

    def __init__(self, comp: TokenComposite, prompt_ids: Sequence[list[int]]) -> None:
        self.comp = comp
        self.inner = [open_member_session(m, prompt_ids, prompt_nll=comp.prompt_nll) for m in comp.models]
        self.state: dict[str, Any] = {}
        if comp.prompt_nll:
            counts = torch.tensor([max(len(p) - 1, 1) for p in prompt_ids], dtype=torch.float32)
            self.state["prompt_nll"] = torch.stack([s.prompt_nll_sum / counts for s in self.inner], dim=1)
        self.prompt_nll_sum = self.inner[0].prompt_nll_sum
        self.prompt_len = self.inner[0].prompt_len
        self._last: torch.Tensor | None = None

    @property
    def forward_calls(self) -> int:
        """Forward passes of all nested members."""
        return sum(s.forward_calls for s in self.inner)

    def generated(self, row: int) -> list[int]:
        """Tokens of ``row`` after its prompt."""
        return self.inner[0].generated(row)

    def logprobs(self) -> torch.Tensor:
        """The nested composite's combined next-token log-probabilities."""
        if self._last is None:
            members = self.comp.aligner.to_common([s.logprobs() for s in self.inner])
            empty = torch.zeros((members[0].shape[0], 0), dtype=torch.long)
            self._last = self.comp.combiner(empty, members, self.state)
        return self._last

    def step(self, new: Sequence[list[int]], drop: Sequence[int] | None = None) -> None:
        """Feed the same tokens to every nested member."""
        for s in self.inner:
            s.step(new, drop)
        self._last = None
