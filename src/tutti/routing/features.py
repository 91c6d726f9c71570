"""Prompt featurizers for routers: MiniLM sentence embeddings, or a causal LM's mean-pooled hidden states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from tutti.registry import Registry


class Featurizer(Protocol):
    """Maps prompt texts to a ``(n, dim)`` float tensor."""

    name: str

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """Features of each text."""
        ...


FEATURIZERS = Registry[Any]("router featurizer")


@FEATURIZERS.register("minilm", pretty_name="all-MiniLM-L6-v2 (mean pooling)")
class MiniLMFeatures:
    """Unit-norm sentence embeddings of an encoder (default the zoo's all-MiniLM-L6-v2)."""

    def __init__(self, spec: str = "minilm-l6") -> None:
        from tutti.routing.embed import default_embedder

        self.embedder = default_embedder(spec)
        self.name = f"minilm:{spec}"

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n, 384)`` embeddings."""
        return self.embedder.embed(list(texts))


@FEATURIZERS.register("causal_lm", pretty_name="causal LM hidden states")
class CausalLMFeatures:
    """Mean-pooled last hidden states of a causal LM (default SmolLM2-135M-Instruct), unit norm.

    Args:
        spec: zoo name / path / hub id, or an already loaded :class:`tutti.models.hf.HFModel`.
        batch_size: texts per forward pass.
    """

    def __init__(self, spec: Any = "smollm2-135m-instruct", *, batch_size: int = 16) -> None:
        from tutti.models.hf import HFModel

        self.model = spec if isinstance(spec, HFModel) else HFModel.load(spec)
        self.name = f"causal_lm:{self.model.name}"
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()  # not inference_mode: routers train heads on these features
    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n, hidden)`` features."""
        tok, module = self.model.tokenizer, self.model.module
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            enc = tok(chunk, padding=True, truncation=True, max_length=512, return_tensors="pt")
            h = module(**enc, output_hidden_states=True).hidden_states[-1]  # (batch, seq, hidden)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            mean = (h.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            for t, v in zip(chunk, torch.nn.functional.normalize(mean, dim=-1), strict=True):
                self._cache[t] = v
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, 1)
