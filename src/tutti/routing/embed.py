"""Sentence embeddings for routers and MBR: all-MiniLM-L6-v2 from the offline zoo, mean pooling, unit norm."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from tutti.errors import TuttiError


class Embedder:
    """A BERT-style encoder turned into a sentence embedder (mean of token states over the attention mask).

    Args:
        spec: zoo name, folder or hub id of the encoder (default ``minilm-l6``).
        batch_size: sentences per forward pass.
        max_length: tokens kept per sentence.
    """

    def __init__(self, spec: str = "minilm-l6", *, batch_size: int = 64, max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        from tutti.models.zoo import resolve_model

        path = resolve_model(spec)
        self.name = spec
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.module: Any = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self.module.config.hidden_size)

    @torch.no_grad()  # not inference_mode: routers train heads on these features
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings, ``(len(texts), dim)`` fp32; repeated texts are computed once."""
        if any(not isinstance(t, str) for t in texts):
            raise TuttiError("embedder: every input must be a string")
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            hidden = self.module(**enc).last_hidden_state  # (batch, seq, dim)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            for t, v in zip(chunk, torch.nn.functional.normalize(mean, dim=-1), strict=True):
                self._cache[t] = v
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[t] for t in texts])


@functools.lru_cache(maxsize=4)
def default_embedder(spec: str = "minilm-l6") -> Embedder:
    """One shared :class:`Embedder` per spec per process."""
    return Embedder(spec)
