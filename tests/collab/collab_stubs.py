"""Bigram stub models with hand-written logits, for exact tests of the decoding paths."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from tutti.models.hf import HFModel

NEG = -1e9


class BigramModule(torch.nn.Module):
    """A causal LM whose next-token logits depend only on the current token: ``table[token]``.

    It takes the same keyword arguments as an HF model (mask, positions, cache) and ignores the cache, which a
    bigram model does not need, so every decoding path runs on exactly known distributions.
    """

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table.float()
        self.head = torch.nn.Linear(1, table.shape[1], bias=False)  # gives .parameters() and the vocab width
        self.generation_config = SimpleNamespace(eos_token_id=None)
        self.config = SimpleNamespace(max_position_embeddings=4096)
        self.calls = 0

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.head

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0, **_: Any) -> Any:
        self.calls += 1
        logits = self.table[input_ids]  # (batch, width, vocab)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits)


def stub_model(table: torch.Tensor, tokenizer: Any, name: str = "stub") -> HFModel:
    """An :class:`HFModel` around a bigram table (rows: current token, columns: next-token logits)."""
    return HFModel(BigramModule(table), tokenizer, name=name)


def table_from(rows: dict[int, dict[int, float]], vocab: int, *, default: dict[int, float] | None = None
               ) -> torch.Tensor:
    """A ``(vocab, vocab)`` bigram table of log-probabilities: ``rows[prev] = {next: prob}`` (others ~0)."""
    t = torch.full((vocab, vocab), NEG)
    for prev in range(vocab):
        spec = rows.get(prev, default or {})
        for nxt, p in spec.items():
            t[prev, nxt] = float(torch.log(torch.tensor(p)))
    return t
