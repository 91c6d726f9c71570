"""Combiners: pure functions from member next-token log-probabilities to one distribution.

Every combiner has one signature, ``(input_ids, member_logprobs, state) -> logprobs``:

- ``input_ids``: ``(batch, t)`` indices chosen so far in the common space (may be empty);
- ``member_logprobs``: one ``(batch, vocab)`` tensor per member, already in the common space (``-inf`` where a
  member gives no mass);
- ``state``: a dict shared across steps of one generation (prompt perplexities, gate counters);

and returns a new ``(batch, vocab)`` tensor of log-probabilities, never editing its inputs. Combiners compose in
a :class:`Chain`: the first reduces the members to one distribution, each later one maps ``[previous]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tutti.registry import Registry

State = dict[str, Any]
Combiner = Callable[[torch.Tensor, Sequence[torch.Tensor], State], torch.Tensor]
COMBINERS: Registry[Callable[..., Combiner]] = Registry("combiner")
NEG_INF = float("-inf")


def _weights(weights: Sequence[float] | None, n: int, ref: torch.Tensor) -> torch.Tensor:
    w = torch.full((n,), 1.0 / n) if weights is None else torch.tensor([float(x) for x in weights])
    if w.numel() != n:
        raise ValueError(f"{w.numel()} weights for {n} members")
    return (w / w.sum()).to(ref.device, torch.float32)


def _finite_floor(x: torch.Tensor) -> torch.Tensor:
    """``x`` with ``-inf`` replaced by the row's smallest finite value (a member's "very unlikely")."""
    finite = torch.isfinite(x)
    floor = torch.where(finite, x, torch.full_like(x, math.inf)).amin(-1, keepdim=True)
    return torch.where(finite, x, floor.expand_as(x))


def mean_probs(members: Sequence[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """``log sum_i w_i p_i`` row-wise; ``w`` is ``(n,)`` or ``(batch, n)``."""
    stacked = torch.stack([m.float() for m in members], dim=1)  # (batch, n, vocab)
    w = w if w.dim() == 2 else w.expand(stacked.shape[0], -1)
    logw = torch.log(w).unsqueeze(-1)  # (batch, n, 1); log 0 = -inf drops the member
    return torch.logsumexp(stacked + logw, dim=1)


def product_logprobs(members: Sequence[torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """``log_softmax(sum_i w_i log p_i)``; members with weight 0 are left out (no ``0 * -inf``)."""
    w = w if w.dim() == 2 else w.expand(members[0].shape[0], -1)
    total = torch.zeros_like(members[0], dtype=torch.float32)
    for i, m in enumerate(members):
        wi = w[:, i:i + 1]
        total = total + torch.where(wi > 0, wi * m.float(), torch.zeros_like(total))
    return torch.log_softmax(total, dim=-1)


@dataclass(frozen=True)
class Mean:
    """Weighted mean of probabilities (GaC, UniTE): ``log sum_i w_i p_i``."""

    weights: tuple[float, ...] | None = None

    def __call__(self, input_ids: torch.Tensor, members: Sequence[torch.Tensor], state: State) -> torch.Tensor:
        return mean_probs(members, _weights(self.weights, len(members), members[0]))


@dataclass(frozen=True)
class Product:
    """Product of experts: weighted sum of log-probabilities, renormalised."""

    weights: tuple[float, ...] | None = None

    def __call__(self, input_ids: torch.Tensor, members: Sequence[torch.Tensor], state: State) -> torch.Tensor:
        return product_logprobs(members, _weights(self.weights, len(members), members[0]))


def perplexity_weights(prompt_nll: torch.Tensor, tau: float) -> torch.Tensor:
    """PackLLM-sim weights ``softmax(-nll / tau)`` per row from ``(batch, n)`` mean prompt NLLs."""
    return torch.softmax(-prompt_nll.float() / tau, dim=-1)


@dataclass(frozen=True)
class PerplexityWeighted:
    """PackLLM-sim: weighted mean with per-prompt weights from each member's perplexity on the prompt.

    Needs ``state["prompt_nll"]``: ``(batch, n)`` mean negative log-likelihood of the prompt per member (per
    byte, so members with different tokenizers compare). Weights are ``softmax(-nll / tau)``.
    """

    tau: float = 1.0

    def __call__(self, input_ids: torch.Tensor, members: Sequence[torch.Tensor], state: State) -> torch.Tensor:
        w = perplexity_weights(state["prompt_nll"], self.tau).to(members[0].device)
        state["weights"] = w
        return mean_probs(members, w)


@dataclass(frozen=True)
class Gated:
    """GaC's threshold mode: the first member alone where its top probability is >= ``threshold``, the
    ``inner`` combination of all members elsewhere. Counts positions in ``state["gate_steps"]`` and
    ``state["gate_ensembled"]`` (``(batch,)`` tensors; rows marked done in ``state["active"]`` are not counted).
    """

    inner: Combiner
    threshold: float = 0.5

    def __call__(self, input_ids: torch.Tensor, members: Sequence[torch.Tensor], state: State) -> torch.Tensor:
        first = members[0].float()
        unsure = first.exp().amax(-1) < self.threshold  # (batch,)
        active = state.get("active", torch.ones_like(unsure))
        state["gate_steps"] = state.get("gate_steps", torch.zeros_like(unsure, dtype=torch.long)) + active
        state["gate_ensembled"] = state.get("gate_ensembled", torch.zeros_like(unsure, dtype=torch.long)) + (
            unsure & active
        )
        if not bool(unsure.any()):
            return first.clone()
        mixed = self.inner(input_ids, members, state)
        return torch.where(unsure[:, None], mixed, first)


@dataclass(frozen=True)
class Contrastive:
    """Contrastive decoding over ``[expert, amateur]`` with the alpha plausibility mask.

    ``beta=None`` is Li et al. 2023 (``log pE - log pA``); a number is O'Brien & Lewis 2023
    (``(1+beta) log pE - beta log pA``). Tokens with ``pE < alpha * max pE`` get ``-inf``. The result is
    renormalised (log-softmax), so it can be sampled from as well as argmaxed.
    """

    alpha: float = 0.1
    beta: float | None = None

    def __call__(self, input_ids: torch.Tensor, members: Sequence[torch.Tensor], state: State) -> torch.Tensor:
        expert, amateur = members[0].float(), _finite_floor(members[1].float())
        head = expert >= expert.amax(-1, keepdim=True) + math.log(self.alpha)  # (batch, vocab)
        score = expert - amateur if self.beta is None else (1 + self.beta) * expert - self.beta * amateur
        return torch.log_softmax(score.masked_fill(~head, NEG_INF), dim=-1)


@dataclass(frozen=True)
class Proxy:
    """Proxy-tuning / emulated fine-tuning / DExperts over ``[base, expert, anti_expert]``:
    ``log_softmax(log p_base + alpha * (log p_expert - log p_anti))``."""

    alpha: float = 1.0

    def __call__(self, input_ids: torch.Tensor, members: Sequence[torch.Tensor], state: State) -> torch.Tensor:
        base, expert, anti = members[0].float(), _finite_floor(members[1].float()), _finite_floor(members[2].float())
        return torch.log_softmax(base + self.alpha * (expert - anti), dim=-1)


@dataclass(frozen=True)
class Chain:
    """Combiners applied in order: the first to the members, each later one to ``[previous result]``."""

    steps: tuple[Combiner, ...]

    def __call__(self, input_ids: torch.Tensor, members: Sequence[torch.Tensor], state: State) -> torch.Tensor:
        out = self.steps[0](input_ids, members, state)
        for step in self.steps[1:]:
            out = step(input_ids, [out], state)
        return out


COMBINERS.add("mean", Mean, pretty_name="Weighted mean of probabilities", paper="https://arxiv.org/abs/2406.12585")
COMBINERS.add("product", Product, pretty_name="Product of experts (weighted log-prob sum)")
COMBINERS.add("perplexity", PerplexityWeighted, pretty_name="Perplexity-weighted fusion (PackLLM-sim)",
              paper="https://arxiv.org/abs/2404.11531")
COMBINERS.add("gated", Gated, pretty_name="Gated ensemble (GaC threshold mode)", paper="https://arxiv.org/abs/2406.12585")
COMBINERS.add("contrastive", Contrastive, pretty_name="Contrastive decoding", paper="https://arxiv.org/abs/2210.15097")
COMBINERS.add("proxy", Proxy, pretty_name="Proxy-tuning / EFT / DExperts", paper="https://arxiv.org/abs/2401.08565")


def build_combiner(method: str, *, weights: Sequence[float] | None = None, threshold: float = 0.5,
                   inner: str = "mean", tau: float = 1.0) -> Combiner:
    """The ensemble combiner named ``method`` with its settings (see :class:`tutti.config.composite.CombineConfig`)."""
    cls = COMBINERS.get(method)
    w = tuple(weights) if weights is not None else None
    if cls is Gated:
        if inner == "gated":
            raise ValueError("gated cannot be its own inner combiner")
        return Gated(build_combiner(inner, weights=weights, tau=tau), threshold)
    if cls is PerplexityWeighted:
        return PerplexityWeighted(tau)
    if cls in (Mean, Product):
        return cls(w)
    raise ValueError(f"combiner {method!r} is not an ensemble combiner; use its strategy instead")
