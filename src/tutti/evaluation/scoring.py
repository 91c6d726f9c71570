"""Batched log-likelihood scoring with tokenisation done once (the fast path of the swarm's evaluation).

:class:`PreparedLoglik` tokenises fixed ``(context, continuation)`` requests for an :class:`HFModel` once, groups
them into left-padded batches of similar length, and then scores them with one forward pass per batch that
computes logits only for the continuation positions (``logits_to_keep``), after running the batch's common
token prefix (e.g. a chat template's system prompt) once as a KV cache. The weights may change between calls
(in-place particle swaps); the token batches do not. :func:`option_logprobs` and :func:`option_greedy` run each
context once and its options (or answer variants) as short continuations of its KV cache.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tutti.errors import TuttiError
from tutti.models.interface import LoglikelihoodResult, Model, Prompt


@dataclass(frozen=True)
class ForcedResult:
    """A teacher-forced continuation: its summed log-probability, its tokens, and the most likely token at
    each of its positions and after it (``len(reference) + 1`` ids: what greedy decoding would emit there)."""

    logprob: float
    reference: tuple[int, ...]
    greedy: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        """Tokens in the continuation."""
        return len(self.reference)

    @property
    def is_greedy(self) -> bool:
        """Whether every continuation token is the most likely one."""
        return self.greedy[:-1] == self.reference


class PreparedLoglik:
    """Fixed log-likelihood requests, tokenised and batched once for one HF model.

    Args:
        model: an :class:`tutti.models.hf.HFModel`.
        requests: ``(context, continuation)`` pairs.
        batch_size: sequences per forward pass.
    """

    def __init__(self, model: Any, requests: Sequence[tuple[Prompt, str]], *, batch_size: int = 16) -> None:
        self.model = model
        items = []
        for i, (ctx, cont) in enumerate(requests):
            c, k = model.split_continuation(ctx, cont)
            if not k:
                raise TuttiError(f"request {i}: the continuation {cont!r} has no tokens")
            seq = (c + k)[-model.max_length:]
            items.append((i, seq, len(k)))
        items.sort(key=lambda x: -len(x[1]))
        pad = model.tokenizer.pad_token_id
        self.n = len(items)
        self.batches: list[_Batch] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            # the rows' common token prefix (a chat template's system prompt) runs once per batch, as a KV cache;
            # every row keeps its continuation and the token before it out of the prefix
            seqs = [s for _, s, _ in chunk]
            head = max(0, min(len(s) - n - 1 for _, s, n in chunk))
            head = next((t for t in range(head) if any(s[t] != seqs[0][t] for s in seqs)), head)
            width = max(len(s) for s in seqs) - head
            keep = max(n for _, _, n in chunk) + 1
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.ones(len(chunk), head + width, dtype=torch.long)
            for r, s in enumerate(seqs):  # left padding after the prefix: every continuation ends at the last column
                ids[r, width - len(s) + head:] = torch.tensor(s[head:])
                mask[r, head:head + width - len(s) + head] = 0
            pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, head:]
            self.batches.append(_Batch(torch.tensor([seqs[0][:head]], dtype=torch.long), ids, mask, pos, keep,
                                       [(i, n) for i, _, n in chunk]))

    @torch.inference_mode()
    def __call__(self, model: Any | None = None) -> list[LoglikelihoodResult]:
        """Score every request with the current weights of ``model`` (default: the model it was prepared for)."""
        m = model if model is not None else self.model
        module, dev = m.module, m.device
        out: list[LoglikelihoodResult | None] = [None] * self.n
        for b in self.batches:
            kw: dict[str, Any] = {}
            if b.prefix.shape[1]:
                kw = {"past_key_values": _prefix_cache(module, dev, b.prefix, b.ids.shape[0]), "use_cache": True}
            logits = module(input_ids=b.ids.to(dev), attention_mask=b.mask.to(dev), position_ids=b.pos.to(dev),
                            logits_to_keep=b.keep, **kw).logits  # (batch, keep, vocab)
            logp = torch.log_softmax(logits.float(), -1).cpu()
            tail = b.ids[:, -b.keep:]
            for r, (i, n) in enumerate(b.rows):
                span = logp[r, b.keep - n - 1: b.keep - 1]  # (n, vocab): predictions of the continuation tokens
                target = tail[r, b.keep - n:]
                tok = span.gather(-1, target[:, None]).squeeze(-1)
                out[i] = LoglikelihoodResult(float(tok.sum()), bool((span.argmax(-1) == target).all()), n)
        return out  # type: ignore[return-value]


def _prefix_cache(module: Any, dev: Any, prefix: torch.Tensor, rows: int) -> Any:
    """KV cache of ``prefix`` ``(1, head)``, repeated for ``rows`` rows."""
    cache = module(input_ids=prefix.to(dev), use_cache=True, logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(rows)
    return cache


@dataclass(frozen=True)
class _Batch:
    """One forward pass of :class:`PreparedLoglik`: the shared prefix ``(1, head)``, the left-padded rest
    ``(batch, width)``, its mask over prefix and rest ``(batch, head + width)``, positions, logits to keep and
    ``(request index, continuation length)`` per row."""

    prefix: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor
    keep: int
    rows: list[tuple[int, int]]


class LoglikCache:
    """Per-model :class:`PreparedLoglik` objects, so each utility tokenises its requests once per model."""

    def __init__(self, requests: Sequence[tuple[Prompt, str]], batch_size: int = 16) -> None:
        self.requests = list(requests)
        self.batch_size = batch_size
        self._prepared: dict[int, PreparedLoglik] = {}

    def __call__(self, model: Model) -> list[LoglikelihoodResult]:
        """Log-likelihoods of the requests under ``model`` (fast path for HF models, interface call otherwise)."""
        from tutti.models.hf import HFModel

        if not isinstance(model, HFModel):
            return list(model.loglikelihood(self.requests))
        return self.prepared(model)(model)

    def prepared(self, model: Any) -> PreparedLoglik:
        """The :class:`PreparedLoglik` of an HF model (built on first use, one per tokenizer)."""
        key = id(model.tokenizer)
        if key not in self._prepared:
            self._prepared[key] = PreparedLoglik(model, self.requests, batch_size=self.batch_size)
        return self._prepared[key]


def option_logprobs(model: Any, contexts: Sequence[Prompt], options: Sequence[Sequence[str]], *,
                    batch_size: int = 16) -> list[list[float]]:
    """Summed log-probability of every option of every multiple-choice example, the context run once per example.

    The same numbers as :class:`PreparedLoglik` on ``(context, option)`` pairs, about ``options`` times cheaper:
    each batch of contexts is run once with a KV cache (their common token prefix, e.g. a chat template's system
    prompt, once for the batch), then each option slot is scored as a short continuation of that cache (which is
    cropped back to the contexts before the next slot).

    Args:
        model: an :class:`tutti.models.hf.HFModel`.
        contexts: one prompt per example.
        options: the option strings of each example (continuations, e.g. ``" " + choice``).
        batch_size: examples per forward pass.
    """
    return [[r.logprob for r in row] for row in option_greedy(model, contexts, options, batch_size=batch_size)]


@torch.inference_mode()
def option_greedy(model: Any, contexts: Sequence[Prompt], options: Sequence[Sequence[str]], *,
                  batch_size: int = 16, greedy_only: bool = False) -> list[list[ForcedResult]]:
    """Every option of every example teacher-forced after its context, as :func:`option_logprobs` runs them:
    its summed log-probability, its tokens and the most likely token at each of its positions and after it.

    With ``greedy_only``, an option whose first token is not the most likely one after the context (so greedy
    decoding cannot produce it) is not run: its ``logprob`` is NaN and its ``greedy`` holds that first token only.
    """
    items = []
    for i, (ctx, opts) in enumerate(zip(contexts, options, strict=True)):
        split = [model.split_continuation(ctx, o) for o in opts]
        if any(not k for _, k in split):
            raise TuttiError(f"example {i}: an option has no tokens")
        c = split[0][0]
        if any(s[0] != c for s in split):  # the boundary merged differently: no shared context to reuse
            c = c[:min(len(s[0]) for s in split)]
            split = [(c, s[0][len(c):] + s[1]) for s in split]
        items.append((i, c[-(model.max_length - max(len(k) for _, k in split)):], [k for _, k in split]))
    items.sort(key=lambda x: -len(x[1]))
    module, dev, pad = model.module, model.device, model.tokenizer.pad_token_id
    out: list[list[ForcedResult]] = [[] for _ in contexts]
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        cache, head = _shared_prefix(module, dev, [c for _, c, _ in chunk])
        width = max(len(c) for _, c, _ in chunk) - head
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.ones(len(chunk), head + width, dtype=torch.long)
        for r, (_, c, _) in enumerate(chunk):  # left padding after the shared head: contexts end at the last column
            ids[r, width - len(c) + head:] = torch.tensor(c[head:])
            mask[r, head:head + width - len(c) + head] = 0
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, head:]
        res = module(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                     past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(res.logits[:, -1].float(), -1).cpu()  # (batch, vocab): the first option token
        cache, lens = res.past_key_values, mask.sum(-1)
        top = first.argmax(-1).tolist()  # (batch,): the token greedy decoding emits first
        for r, (i, _, ks) in enumerate(chunk):
            out[i] = [ForcedResult(math.nan, tuple(k), (top[r],)) for k in ks]
        # each row's options still to run, in order; with greedy_only, only those greedy decoding can start
        todo = {r: [o for o, k in enumerate(ks) if not greedy_only or k[0] == top[r]]
                for r, (_, _, ks) in enumerate(chunk)}
        while any(todo.values()):
            rows = [r for r in range(len(chunk)) if todo[r]]
            conts = [chunk[r][2][todo[r][0]] for r in rows]
            logp = _continue(module, dev, pad, cache, mask, lens, rows, conts)  # (rows, n, vocab)
            for x, r in enumerate(rows):
                i, o, toks = chunk[r][0], todo[r].pop(0), torch.tensor(conts[x])
                lp = first[r, toks[0]] + logp[x, torch.arange(len(toks) - 1), toks[1:]].sum()
                res = ForcedResult(float(lp), tuple(conts[x]), (top[r], *logp[x, :len(toks)].argmax(-1).tolist()))
                out[i][o] = res
                if greedy_only:  # the greedy path is now known along this option: drop options that leave it
                    todo[r] = [q for q in todo[r] if _may_be_greedy(chunk[r][2][q], res)]
    return out


def _continue(module: Any, dev: Any, pad: int, cache: Any, mask: torch.Tensor, lens: torch.Tensor, rows: list[int],
              conts: list[list[int]]) -> torch.Tensor:
    """Log-probabilities ``(len(rows), n, vocab)`` of continuations of some rows of a batch's context cache.

    The cache is cropped back to the contexts afterwards (a copy is cut down to ``rows`` when not every row runs).
    """
    n = max(len(k) for k in conts)
    cid = torch.full((len(rows), n), pad, dtype=torch.long)
    cmask = torch.zeros_like(cid)
    for x, k in enumerate(conts):  # right padding: pads come after the scored tokens
        cid[x, :len(k)] = torch.tensor(k)
        cmask[x, :len(k)] = 1
    idx = torch.tensor(rows)
    if len(rows) < mask.shape[0]:
        cache = copy.deepcopy(cache)
        cache.batch_select_indices(idx.to(dev))
    cpos = lens[idx, None] + torch.arange(n)[None]
    logits = module(input_ids=cid.to(dev), attention_mask=torch.cat([mask[idx], cmask], 1).to(dev),
                    position_ids=cpos.to(dev), past_key_values=cache, use_cache=True).logits
    if len(rows) == mask.shape[0]:
        cache.crop(-n)  # back to the contexts (a negative count removes that many tokens)
    return torch.log_softmax(logits.float(), -1).cpu()


def _may_be_greedy(option: Sequence[int], run: ForcedResult) -> bool:
    """Whether greedy decoding could still produce ``option``, given the greedy path along another option ``run``:
    up to where the two differ, the path must follow them, and there it must take ``option``'s token."""
    ref, path = run.reference, run.greedy
    t = next((t for t in range(min(len(option), len(ref))) if option[t] != ref[t]), min(len(option), len(ref)))
    if tuple(path[:t]) != tuple(option[:t]):
        return False
    return t >= len(option) or path[t] == option[t]


def _shared_prefix(module: Any, dev: Any, contexts: Sequence[Sequence[int]]) -> tuple[Any, int]:
    """KV cache of the contexts' common prefix, repeated for the batch, and its length (short of every context)."""
    head = min(len(c) for c in contexts) - 1  # each context keeps a token: its last position predicts the option
    for c in contexts[1:]:
        head = next((t for t in range(head) if c[t] != contexts[0][t]), head)
    if head <= 0:
        return None, 0
    res = module(input_ids=torch.tensor([list(contexts[0][:head])], device=dev), use_cache=True, logits_to_keep=1)
    cache = res.past_key_values
    cache.batch_repeat_interleave(len(contexts))
    return cache, head
