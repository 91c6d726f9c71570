"""Speculative decoding (Leviathan et al. 2023, arXiv 2211.17192; Chen et al. 2023, arXiv 2302.01318).

Steps of one round, for one sequence:

1. the draft proposes up to ``k`` tokens from its own KV cache (``q`` = its warped distributions);
2. the target scores the pending token and all proposals in **one** forward pass (``p``);
3. greedy: accept proposals while they equal the target's argmax; sampling: accept ``x`` with probability
   ``min(1, p(x)/q(x))`` and on the first rejection sample from ``norm(max(0, p - q))``; when all are accepted
   one more token comes from ``p`` (so every round yields at least one target token);
4. both caches roll back to the accepted prefix (no recomputation); the target's new token is fed with the
   next round's proposals.

The output distribution is the target's exactly; greedy output equals the target's own greedy output. Members
with different tokenizers work greedily by re-tokenising text: the draft's proposal is spelled in the target's
tokens, and the draft is re-synchronised to the accepted text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tutti.collab.loader import STRATEGIES
from tutti.collab.sampling import make_generator, warp
from tutti.collab.session import MemberSession
from tutti.collab.vocab import TokenBytes
from tutti.config.composite import CompositeConfig
from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Prompt,
    SamplingParams,
    StreamChunk,
    cut_at_stop,
)


def accept_reject(p: torch.Tensor, q: torch.Tensor, drafts: Sequence[int], generator: torch.Generator | None,
                  *, greedy: bool) -> tuple[int, int]:
    """Verify draft tokens; returns (number accepted, the target's next token).

    Args:
        p: ``(m + 1, vocab)`` target probabilities before each draft token and after the last one.
        q: ``(m, vocab)`` draft probabilities the drafts were drawn from.
        drafts: the ``m`` proposed tokens.
        generator: random source (sampling only).
        greedy: accept while drafts equal the target's argmax.
    """
    for j, d in enumerate(drafts):
        if greedy:
            best = int(p[j].argmax())
            if best != d:
                return j, best
            continue
        ratio = float(p[j, d]) / max(float(q[j, d]), 1e-30)
        if float(torch.rand((), generator=generator)) >= min(1.0, ratio):
            residual = (p[j] - q[j]).clamp(min=0)
            total = float(residual.sum())
            dist = residual / total if total > 0 else p[j]
            return j, int(torch.multinomial(dist, 1, generator=generator))
    last = p[len(drafts)]
    nxt = int(last.argmax()) if greedy else int(torch.multinomial(last, 1, generator=generator))
    return len(drafts), nxt


@dataclass
class _Stats:
    rounds: int = 0
    proposed: int = 0
    accepted: int = 0


class SpeculativeModel:
    """A target model sped up by a draft; behaves exactly like the target.

    Args:
        target: the model whose distribution is produced (HF-backed).
        draft: the proposer (HF-backed); a different tokenizer works for greedy decoding.
        num_draft_tokens: proposals per round (``k``).
        name: model id.
    """

    def __init__(self, target: Any, draft: Any, *, num_draft_tokens: int = 4, name: str = "speculative") -> None:
        for m in (target, draft):
            if not hasattr(m, "module"):
                kind = "remote endpoint" if type(m).__name__ == "RemoteModel" else "composite"
                raise TuttiError(f"speculative members must be in-process models or merges (the target verifies "
                                 f"drafts in one forward pass over its own KV cache), got {kind} {m.name!r}")
        self.target, self.draft, self.k, self.name = target, draft, num_draft_tokens, name
        self.shared = target.tokenizer.get_vocab() == draft.tokenizer.get_vocab()
        self.ttb = TokenBytes(target.tokenizer, target.vocab_size)
        self.dtb = self.ttb if self.shared else TokenBytes(draft.tokenizer, draft.vocab_size)
        self.t_eos = set(target.eos_token_ids)
        self.d_eos = set(draft.eos_token_ids)
        self._lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        """The target's vocabulary size."""
        return int(self.target.vocab_size)

    @property
    def tokenizer(self) -> Any:
        """The target's tokenizer."""
        return self.target.tokenizer

    # ------------------------------------------------------------------ one sequence
    def _propose(self, d: MemberSession, params: SamplingParams, gen: torch.Generator | None, budget: int
                 ) -> tuple[list[int], list[torch.Tensor]]:
        drafts: list[int] = []
        qs: list[torch.Tensor] = []
        for j in range(budget):
            q = warp(d.logprobs()[0:1], params)[0].exp()  # (vocab,)
            tok = int(q.argmax()) if params.greedy else int(torch.multinomial(q, 1, generator=gen))
            drafts.append(tok)
            qs.append(q)
            if tok in self.d_eos or j == budget - 1:
                break
            d.step([[tok]])
        return drafts, qs

    def _rounds(self, prompt: Prompt, params: SamplingParams, gen: torch.Generator | None, stats: _Stats
                ) -> Iterator[list[int]]:
        """Yield the target tokens accepted in each round (EOS included when reached)."""
        t = MemberSession(self.target, [self.target.encode(prompt)])
        d = MemberSession(self.draft, [self.draft.encode(prompt)])
        pending: list[int] = []
        made = 0
        out_bytes = b""
        while made < params.max_new_tokens:
            budget = min(self.k, params.max_new_tokens - made)
            drafts, qs = self._propose(d, params, gen, budget)
            if self.shared:
                proposal, q_t = drafts, qs
            else:  # spell the draft's text in target tokens; greedy verification needs no q
                text = self.dtb.decode([x for x in drafts if x not in self.d_eos])
                proposal = self.ttb.encode(text)[:budget] if text else []
                q_t = []
            scored = t.score([pending + proposal])[0]  # (1 + len(pending) + m, vocab)
            p = warp(scored[len(pending):], params).exp()  # (m + 1, vocab)
            q = torch.stack(q_t) if q_t else torch.zeros((len(proposal), p.shape[-1]))
            a, nxt = accept_reject(p, q, proposal, gen, greedy=params.greedy)
            stats.rounds += 1
            stats.proposed += len(proposal)
            stats.accepted += a
            new = [*proposal[:a], nxt]
            t.rollback([len(proposal) - a], scored[len(pending) + a: len(pending) + a + 1])
            pending = [nxt]
            made += len(new)
            out_bytes += self.ttb.decode(new)
            yield new
            if any(x in self.t_eos for x in new):
                return
            self._sync_draft(d, drafts, a, nxt, out_bytes)

    def _sync_draft(self, d: MemberSession, drafts: list[int], a: int, nxt: int, out_bytes: bytes) -> None:
        fed = len(drafts) - 1  # the last proposal was never fed to the draft
        if self.shared:
            if a <= fed:
                d.step([[nxt]], [fed - a])
            else:
                d.step([[drafts[-1], nxt]])
            return
        gen_ids = d.generated(0)
        keep, acc = 0, b""
        for tok in gen_ids:  # longest prefix of the draft's tokens that spells a prefix of the output
            piece = self.dtb.table[tok]
            if not out_bytes.startswith(acc + piece):
                break
            acc += piece
            keep += 1
        rest = out_bytes[len(acc):]
        drop = len(gen_ids) - keep
        if not rest and keep:  # nothing new to spell: re-feed the last kept token so the cache stays live
            keep -= 1
            drop += 1
            rest = self.dtb.table[gen_ids[keep]]
        if rest:
            d.step([self.dtb.encode(rest)], [drop])

    # ------------------------------------------------------------------ the model interface
    def _one(self, prompt: Prompt, params: SamplingParams, gen: torch.Generator | None) -> GenerationOutput:
        stats = _Stats()
        toks: list[int] = []
        for new in self._rounds(prompt, params, gen, stats):
            toks.extend(new)
        toks = toks[: params.max_new_tokens]
        stopped = False
        for j, x in enumerate(toks):
            if x in self.t_eos:
                toks, stopped = toks[:j], True
                break
        text, hit = cut_at_stop(self.target.tokenizer.decode(toks, skip_special_tokens=True), params.stop)
        info = {
            "strategy": "speculative",
            "acceptance_rate": stats.accepted / stats.proposed if stats.proposed else 0.0,
            "target_calls": stats.rounds + 1,
            "target_calls_per_token": (stats.rounds + 1) / max(len(toks), 1),
            "draft_tokens_proposed": stats.proposed,
            "draft_tokens_accepted": stats.accepted,
        }
        return GenerationOutput(text=text, token_ids=tuple(toks), finish_reason="stop" if stopped or hit else "length",
                                prompt_tokens=len(self.target.encode(prompt)), info=info)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """Complete each prompt ``params.n`` times (sequences are verified one at a time)."""
        if not params.greedy and not self.shared:
            raise TuttiError("speculative sampling across tokenizers is not supported; use temperature 0 "
                             "(greedy) or a draft with the target's tokenizer")
        gen = make_generator(params.seed) if not params.greedy else None
        with self._lock:
            return [[self._one(p, params, gen) for _ in range(params.n)] for p in prompts]

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Complete one prompt, yielding the text accepted in each round."""
        from tutti.collab.engine import stream_deltas

        if params.n != 1:
            raise TuttiError("streaming supports n=1 only")
        if not params.greedy and not self.shared:
            raise TuttiError("speculative sampling across tokenizers is not supported; use temperature 0")
        gen = make_generator(params.seed) if not params.greedy else None

        def texts() -> Iterator[tuple[str, bool]]:
            toks: list[int] = []
            with self._lock, torch.inference_mode():
                for new in self._rounds(prompt, params, gen, _Stats()):
                    eos = any(x in self.t_eos for x in new)
                    toks.extend(x for x in new if x not in self.t_eos)
                    toks = toks[: params.max_new_tokens]
                    done = eos or len(toks) >= params.max_new_tokens
                    yield self.target.tokenizer.decode(toks, skip_special_tokens=True), done
                    if done:
                        return

        for delta in stream_deltas(texts(), params.stop):
            yield StreamChunk(delta)
        yield StreamChunk("", None, "stop")

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """The target's next-token log-probabilities (speculation does not change the distribution)."""
        return self.target.next_token_logprobs(prompts)

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """The target's log-likelihoods."""
        return self.target.loglikelihood(requests)


@STRATEGIES.register("speculative", pretty_name="Speculative decoding", paper="https://arxiv.org/abs/2211.17192")
def build_speculative(cfg: CompositeConfig, members: Sequence[Any]) -> SpeculativeModel:
    """Members [target, draft]; ``num_draft_tokens`` proposals per target call."""
    target, draft = members
    name = cfg.name or f"speculative:{target.name}+{draft.name}"
    return SpeculativeModel(target, draft, num_draft_tokens=cfg.num_draft_tokens, name=name)
