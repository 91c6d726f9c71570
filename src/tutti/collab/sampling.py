"""Choosing the next token from log-probabilities: greedy, or sampling with temperature, top-k and top-p."""

from __future__ import annotations

import torch

from tutti.models.interface import SamplingParams


def warp(logprobs: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probabilities after temperature, top-k and top-p, renormalised (a new tensor).

    Args:
        logprobs: ``(batch, vocab)`` log-probabilities.
        params: sampling settings; greedy settings return the input renormalised.
    """
    x = logprobs.float()
    if not params.greedy:
        x = x / params.temperature
    if params.top_k and params.top_k < x.shape[-1]:
        kth = x.topk(params.top_k, dim=-1).values[:, -1:]  # (batch, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = x.sort(dim=-1, descending=True)
        probs = sorted_x.softmax(-1)
        # drop a token when the mass strictly before it already reaches top_p (the top token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return torch.log_softmax(x, dim=-1)


def choose(logprobs: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next index per row, ``(batch,)``: argmax when greedy, else a sample from the warped distribution."""
    if params.greedy:
        return logprobs.argmax(dim=-1)
    probs = warp(logprobs, params).exp()
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (or from the global RNG when ``None``)."""
    g = torch.Generator()
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return g
