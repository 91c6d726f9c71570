"""A remote member of a token-level ensemble: next-token top-k log-probs asked from an OpenAI-compatible endpoint.

The session keeps each row's token ids (prompt + generated, in the remote model's tokenizer, which the member
holds locally) and, after every step, asks the endpoint for one greedy token with ``logprobs: k`` for the rows
that changed, in one ``/completions`` request whose ``prompt`` is the list of token-id lists (OpenAI's legacy
shape, accepted by vLLM and ``tutti serve``). Sending ids rather than text keeps the remote context exactly
the local one (re-tokenising ``prompt + generated`` text can split differently). The endpoint's own prefix
cache is its business; nothing is cached here.

The distribution is sparse: the endpoint's top-``k`` log-probabilities, ``-inf`` elsewhere (UniTE only ever
uses the top k of each member: Yao et al. 2024, https://arxiv.org/abs/2410.03777). Aligners ``topk``, ``union``
and ``shared`` handle such rows; strategies that need whole distributions (contrastive, proxy, perplexity
weights, bytes alignment, speculative) refuse remote members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tutti.collab.session import RowState
from tutti.errors import TuttiError


class RemoteMemberSession(RowState):
    """Incremental next-token top-k log-probabilities of a remote model for a batch of token-id prompts
    (``logprobs()`` rows: top k finite, ``-inf`` elsewhere).

    Args:
        model: a :class:`tutti.models.remote.RemoteModel` (with a local tokenizer).
        prompt_ids: token ids of each row's prompt, in the remote model's tokenizer.
        prompt_nll: refused: an endpoint does not give prompt log-likelihoods this way.
    """

    def __init__(self, model: Any, prompt_ids: Sequence[list[int]], *, prompt_nll: bool = False) -> None:
        if prompt_nll:
            raise TuttiError(f"remote member {model.name!r} cannot give prompt perplexities; "
                             "use combine: mean, product or gated with remote members")
        self.model = model
        self.rows: list[list[int]] = [list(p) for p in prompt_ids]
        self.prompt_len = [len(p) for p in prompt_ids]
        self.prompt_nll_sum = torch.zeros(len(self.rows))
        self.forward_calls = 0  # requests sent
        self._last = self._fetch(list(range(len(self.rows))))

    def _fetch(self, rows: list[int]) -> torch.Tensor:
        self.forward_calls += 1
        return self.model.next_token_logprobs_ids([self.rows[r] for r in rows])

    def step(self, new: Sequence[list[int]], drop: Sequence[int] | None = None) -> None:
        """Withdraw ``drop[r]`` trailing tokens of each row, append ``new[r]``, and ask the endpoint again for
        the rows that changed (one request); rows with nothing new keep their distribution."""
        drop = self._checked_drop(new, drop)
        for r, (d, n) in enumerate(zip(drop, new, strict=True)):
            if d:
                del self.rows[r][len(self.rows[r]) - d:]
            self.rows[r].extend(n)
        changed = [r for r, n in enumerate(new) if n]
        if changed:
            fresh = self._fetch(changed)
            last = self._last.clone()
            last[changed] = fresh
            self._last = last
