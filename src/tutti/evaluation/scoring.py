"""Batched log-likelihood scoring with tokenisation done once (the fast path of the swarm's evaluation).

:class:`PreparedLoglik` tokenises fixed ``(context, continuation)`` requests for an :class:`HFModel` once, groups
them into left-padded batches of similar length, and then scores them with one forward pass per batch that
computes logits only for the continuation positions (``logits_to_keep``). The weights may change between calls
(in-place particle swaps); the token batches do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tutti.errors import TuttiError
from tutti.models.interface import LoglikelihoodResult, Model, Prompt


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
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, list[tuple[int, int]]]] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            width = max(len(s) for _, s, _ in chunk)
            keep = max(n for _, _, n in chunk) + 1
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (_, s, _) in enumerate(chunk):  # left padding: every continuation ends at the last column
                ids[r, width - len(s):] = torch.tensor(s)
                mask[r, width - len(s):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            self.batches.append((ids, mask, pos, keep, [(i, n) for i, _, n in chunk]))

    @torch.inference_mode()
    def __call__(self, model: Any | None = None) -> list[LoglikelihoodResult]:
        """Score every request with the current weights of ``model`` (default: the model it was prepared for)."""
        m = model if model is not None else self.model
        module, dev = m.module, m.device
        out: list[LoglikelihoodResult | None] = [None] * self.n
        for ids, mask, pos, keep, rows in self.batches:
            logits = module(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                            logits_to_keep=keep).logits  # (batch, keep, vocab)
            logp = torch.log_softmax(logits.float(), -1).cpu()
            tail = ids[:, -keep:]
            for r, (i, n) in enumerate(rows):
                span = logp[r, keep - n - 1: keep - 1]  # (n, vocab): predictions of the continuation tokens
                target = tail[r, keep - n:]
                tok = span.gather(-1, target[:, None]).squeeze(-1)
                out[i] = LoglikelihoodResult(float(tok.sum()), bool((span.argmax(-1) == target).all()), n)
        return out  # type: ignore[return-value]


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
        key = id(model.tokenizer)
        if key not in self._prepared:
            self._prepared[key] = PreparedLoglik(model, self.requests, batch_size=self.batch_size)
        return self._prepared[key](model)
