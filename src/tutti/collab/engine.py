"""The one multi-model decoding loop.

Each step: every member gives next-token log-probs from its own KV cache (:class:`.session.MemberSession`), the
aligner maps them into one common space, the combiner fuses them, one element is chosen per row (greedy or
sampled), and the aligner feeds it back to every member in that member's own tokens. Rows stop on EOS (any
member's EOS maps to the common EOS), on a stop string, or after ``max_new_tokens`` steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tutti.collab.combiners import Combiner
from tutti.collab.sampling import choose, make_generator
from tutti.collab.session import MemberSession
from tutti.models.interface import Prompt, SamplingParams, cut_at_stop


@dataclass
class Step:
    """One decoding step.

    Args:
        chosen: the element chosen for each row (``None`` for rows already finished).
        logprobs: the combined ``(batch, size)`` log-probabilities the choice was made from.
        finished: rows that finished at this step, with their reason (``"stop"`` or ``"length"``).
    """

    chosen: list[int | None]
    logprobs: torch.Tensor
    finished: dict[int, str] = field(default_factory=dict)


@dataclass
class LoopState:
    """What a generation leaves behind: per-row output bytes, chosen indices, and strategy statistics."""

    out: list[bytearray]
    ids: list[list[int]]
    prompt_tokens: list[int]
    finish: list[str | None]
    combine_state: dict[str, Any]
    sessions: list[MemberSession]


def open_member_session(model: Any, prompt_ids: Sequence[list[int]], *, prompt_nll: bool = False) -> Any:
    """A session for one member: its own (a nested composite) or a KV-cached :class:`MemberSession`."""
    if hasattr(model, "open_session"):
        return model.open_session(prompt_ids, prompt_nll=prompt_nll)
    return MemberSession(model, prompt_ids, prompt_nll=prompt_nll)


def open_sessions(models: Sequence[Any], prompts: Sequence[Prompt], *, prompt_nll: bool = False
                  ) -> tuple[list[MemberSession], torch.Tensor | None, list[int]]:
    """Prefill one session per member; returns the sessions, the ``(batch, n)`` prompt NLL per byte (when
    asked) and the first member's prompt lengths in tokens."""
    sessions, nll = [], []
    for m in models:
        encoded = [m.encode(p) for p in prompts]
        s = open_member_session(m, encoded, prompt_nll=prompt_nll)
        sessions.append(s)
        if prompt_nll:
            nbytes = torch.tensor([max(len(m.render(p).encode()), 1) for p in prompts], dtype=torch.float32)
            nll.append(s.prompt_nll_sum / nbytes)
    return sessions, (torch.stack(nll, dim=1) if prompt_nll else None), sessions[0].prompt_len[:]


def decode(
    models: Sequence[Any],
    aligner: Any,
    combiner: Combiner,
    prompts: Sequence[Prompt],
    params: SamplingParams,
    *,
    prompt_nll: bool = False,
    forced: Sequence[list[int]] | None = None,
    state: dict[str, Any] | None = None,
) -> Iterator[tuple[Step, LoopState]]:
    """Run the loop over ``prompts``; yields after every step.

    Args:
        models: member models (HF-backed: ``.module``, ``.tokenizer``, ``.encode``, ``.render``).
        aligner: a :class:`tutti.collab.aligners.Aligner`.
        combiner: ``(input_ids, [member log-probs], state) -> log-probs``.
        prompts: one prompt per row (repeat a prompt for ``n`` samples).
        params: decoding settings (greedy/sampling, seed, stop strings, max tokens).
        prompt_nll: compute each member's prompt perplexity (``state["prompt_nll"]``, PackLLM).
        forced: teacher forcing: the elements to choose for each row (scoring); rows end when theirs run out.
        state: the combiner state dict to fill (a new one by default).
    """
    sessions, nll, plen = open_sessions(models, prompts, prompt_nll=prompt_nll)
    if hasattr(aligner, "attach"):  # aligners with per-row state (bytes) start from the prefilled sessions
        aligner.attach(sessions)
    batch = len(prompts)
    cstate: dict[str, Any] = state if state is not None else {}
    if nll is not None:
        cstate["prompt_nll"] = nll
    loop = LoopState([bytearray() for _ in range(batch)], [[] for _ in range(batch)], plen, [None] * batch,
                     cstate, sessions)
    gen = make_generator(params.seed) if not params.greedy else None
    limit = max(len(f) for f in forced) if forced is not None else params.max_new_tokens
    hold = max((len(s) for s in params.stop), default=0)
    for t in range(limit):
        active = torch.tensor([f is None for f in loop.finish])
        cstate["active"] = active
        member_lp = aligner.to_common([s.logprobs() for s in sessions])
        width = max(len(x) for x in loop.ids)
        input_ids = torch.tensor([x + [0] * (width - len(x)) for x in loop.ids], dtype=torch.long)
        combined = combiner(input_ids, member_lp, cstate)  # (batch, size)
        picks = choose(combined, params, gen).tolist() if forced is None else [
            f[t] if t < len(f) else aligner.eos_index for f in forced
        ]
        step = Step([None] * batch, combined)
        for r in range(batch):
            if loop.finish[r] is not None:
                continue
            c = int(picks[r])
            step.chosen[r] = c
            loop.ids[r].append(c)
            if forced is not None and t >= len(forced[r]):
                step.chosen[r] = None
                loop.ids[r].pop()
                loop.finish[r] = step.finished[r] = "stop"
                continue
            if forced is None and aligner.is_eos(c):
                loop.finish[r] = step.finished[r] = "stop"
                continue
            loop.out[r] += aligner.element_bytes(c)
            if params.stop:
                tail = bytes(loop.out[r][-(4 * hold + 8) - 4:]).decode("utf-8", errors="ignore")
                if cut_at_stop(tail, params.stop)[1]:
                    loop.finish[r] = step.finished[r] = "stop"
                    continue
            if forced is None and t + 1 >= limit:
                loop.finish[r] = step.finished[r] = "length"
        alive = [c if loop.finish[r] is None else None for r, c in enumerate(step.chosen)]
        yield step, loop
        if all(f is not None for f in loop.finish) or t + 1 >= limit:
            break
        aligner.advance(sessions, alive)
    for r in range(batch):
        if loop.finish[r] is None:
            loop.finish[r] = "length"


def output_text(data: bytes, stop: Sequence[str]) -> tuple[str, bool]:
    """Output bytes as text cut before the first stop string (invalid UTF-8 shows as U+FFFD)."""
    return cut_at_stop(data.decode("utf-8", errors="replace"), stop)


def stream_deltas(texts: Iterator[tuple[str, bool]], stop: Sequence[str]) -> Iterator[str]:
    """Turn successive full texts (text so far, finished) into safe deltas: hold back an incomplete character
    and any tail that could start a stop string."""
    sent = ""
    hold = max((len(s) - 1 for s in stop), default=0)
    for text, done in texts:
        cut, hit = cut_at_stop(text, stop)
        if hit or done:
            if len(cut) > len(sent):
                yield cut[len(sent):]
            return
        if cut.endswith("\ufffd"):
            continue
        safe = cut[: len(cut) - hold] if hold else cut
        if len(safe) > len(sent):
            yield safe[len(sent):]
            sent = safe
