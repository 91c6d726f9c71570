"""One member's decoding state: a KV cache over a left-padded batch, extended a few tokens at a time.

Rows may grow by different numbers of tokens per step (cross-tokenizer members), and a row can take back its
last tokens (re-tokenisation repair). Both are handled with the attention mask: padding inside a step and
withdrawn tokens become masked holes, position ids count only real tokens, and when every row withdraws the
same trailing columns the cache is cropped instead (``DynamicCache.crop``). Nothing is ever recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class RowState:
    """What every member session shares: each row's token ids (prompt + generated) and its current next-token
    log-probabilities (``self._last``); subclasses fill them."""

    rows: list[list[int]]
    prompt_len: list[int]
    _last: torch.Tensor

    @property
    def batch(self) -> int:
        """Number of rows."""
        return len(self.rows)

    def logprobs(self) -> torch.Tensor:
        """Next-token log-probabilities of every row, ``(batch, vocab)`` fp32."""
        return self._last

    def generated(self, row: int) -> list[int]:
        """Tokens of ``row`` after its prompt."""
        return self.rows[row][self.prompt_len[row]:]

    def _checked_drop(self, new: Sequence[list[int]], drop: Sequence[int] | None) -> list[int]:
        """``drop`` as a list (zeros when None); a row that withdraws tokens must append at least one."""
        out = list(drop) if drop is not None else [0] * self.batch
        for r, (d, n) in enumerate(zip(out, new, strict=True)):
            if d and not n:
                raise ValueError(f"row {r} withdraws {d} tokens but appends none")
        return out


class MemberSession(RowState):
    """Incremental next-token log-probabilities of one HF model for a batch of prompts.

    Args:
        model: an :class:`tutti.models.hf.HFModel` (or anything with ``.module`` and ``.tokenizer``).
        prompt_ids: token ids of each row's prompt.
        prompt_nll: also compute each row's summed prompt negative log-likelihood (``self.prompt_nll_sum``).
    """

    def __init__(self, model: Any, prompt_ids: Sequence[list[int]], *, prompt_nll: bool = False) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = model.device
        self.rows: list[list[int]] = [list(p) for p in prompt_ids]
        self.prompt_len = [len(p) for p in prompt_ids]
        self.forward_calls = 0
        width = max(len(p) for p in prompt_ids)
        pad = model.tokenizer.pad_token_id or 0
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        self.mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for r, p in enumerate(prompt_ids):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            self.mask[r, width - len(p):] = 1
        self.cache = DynamicCache()
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        out = self._forward(ids, pos, keep_all=prompt_nll)
        logits = out.logits.float()  # (batch, width or 1, vocab)
        self._last = torch.log_softmax(logits[:, -1, :], dim=-1)
        self.prompt_nll_sum = torch.zeros(len(prompt_ids))
        if prompt_nll:
            lp = torch.log_softmax(logits[:, :-1, :], dim=-1)
            tok_lp = lp.gather(-1, ids[:, 1:, None].to(lp.device)).squeeze(-1)  # (batch, width-1)
            self.prompt_nll_sum = -(tok_lp * self.mask[:, 1:].to(lp.device)).sum(-1).cpu()

    def _forward(self, ids: torch.Tensor, pos: torch.Tensor, *, keep_all: bool = False) -> Any:
        self.forward_calls += 1
        return self.model.module(
            input_ids=ids.to(self.device), attention_mask=self.mask.to(self.device),
            position_ids=pos.to(self.device), past_key_values=self.cache, use_cache=True,
            logits_to_keep=0 if keep_all else ids.shape[1],
        )

    def _withdraw(self, drop: Sequence[int]) -> None:
        """Mask out the last ``drop[r]`` real tokens of each row (crop the cache when they are all trailing)."""
        for r, k in enumerate(drop):
            if k <= 0:
                continue
            real = self.mask[r].nonzero().squeeze(-1)
            self.mask[r, real[-k:]] = 0
            del self.rows[r][len(self.rows[r]) - k:]
        live = self.mask.any(0).nonzero()
        keep = int(live[-1]) + 1 if live.numel() else 0
        if keep < self.mask.shape[1]:
            self.cache.crop(keep - self.mask.shape[1])  # negative: remove that many trailing positions
            self.mask = self.mask[:, :keep]

    @torch.inference_mode()
    def step(self, new: Sequence[list[int]], drop: Sequence[int] | None = None) -> None:
        """Withdraw ``drop[r]`` trailing tokens of each row, then append ``new[r]`` (one forward pass).

        A row that withdraws tokens must append at least one (its next distribution is read after its last
        new token); rows with nothing new keep their previous distribution.
        """
        drop = self._checked_drop(new, drop)
        if any(drop):
            self._withdraw(drop)
        width = max(len(n) for n in new)
        if width == 0:
            return
        pad = self.model.tokenizer.pad_token_id or 0
        ids = torch.full((self.batch, width), pad, dtype=torch.long)
        new_mask = torch.zeros((self.batch, width), dtype=torch.long)
        for r, n in enumerate(new):
            if n:
                ids[r, : len(n)] = torch.tensor(n, dtype=torch.long)
                new_mask[r, : len(n)] = 1
                self.rows[r].extend(n)
        base = self.mask.sum(-1, keepdim=True)  # (batch, 1): real tokens so far
        pos = (base + new_mask.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        logits = self._forward(ids, pos).logits.float()  # (batch, width, vocab)
        last = torch.tensor([max(len(n) - 1, 0) for n in new])
        fresh = torch.log_softmax(logits[torch.arange(self.batch), last.to(logits.device)], dim=-1)
        has_new = torch.tensor([bool(n) for n in new], device=fresh.device)
        self._last = torch.where(has_new[:, None], fresh, self._last)

    @torch.inference_mode()
    def score(self, new: Sequence[list[int]]) -> torch.Tensor:
        """Append ``new[r]`` and return the log-probabilities *before* each new token and after the last one,
        ``(batch, width + 1, vocab)`` (speculative verification: one forward for all draft tokens)."""
        width = max(len(n) for n in new)
        prev = self._last
        if width == 0:
            return prev[:, None]
        pad = self.model.tokenizer.pad_token_id or 0
        ids = torch.full((self.batch, width), pad, dtype=torch.long)
        new_mask = torch.zeros((self.batch, width), dtype=torch.long)
        for r, n in enumerate(new):
            ids[r, : len(n)] = torch.tensor(n, dtype=torch.long)
            new_mask[r, : len(n)] = 1
            self.rows[r].extend(n)
        base = self.mask.sum(-1, keepdim=True)
        pos = (base + new_mask.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        lp = torch.log_softmax(self._forward(ids, pos).logits.float(), dim=-1)  # (batch, width, vocab)
        self._last = lp[:, -1]
        return torch.cat([prev[:, None], lp], dim=1)

    def rollback(self, drop: Sequence[int], last: torch.Tensor) -> None:
        """Withdraw ``drop[r]`` trailing tokens without a forward pass; ``last`` becomes the current
        next-token distribution (the caller read it from :meth:`score`)."""
        if any(drop):
            self._withdraw(drop)
        self._last = last
