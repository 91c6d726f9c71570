"""The built-in composite strategies, registered in :data:`tutti.collab.loader.STRATEGIES`.

Each builder takes the validated config and the loaded members (in role order) and returns a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tutti.collab.aligners import build_aligner
from tutti.collab.combiners import Contrastive, Proxy, build_combiner
from tutti.collab.composite import TokenComposite
from tutti.collab.loader import STRATEGIES
from tutti.config.composite import CompositeConfig
from tutti.errors import ConfigError, TuttiError


def _token_members(cfg: CompositeConfig, members: Sequence[Any]) -> list[Any]:
    for m in members:
        if getattr(m, "sparse_logprobs", False):  # a remote endpoint: top-k log-probs only
            _check_sparse_member(cfg, m)
            continue
        if not hasattr(m, "module") and not getattr(m, "nestable", False):
            raise TuttiError(
                f"member {getattr(m, 'name', m)!r} of a {cfg.strategy} composite must be a model, a merge, or a "
                "token-level composite with align: shared (nesting works token by token through one vocabulary)"
            )
    return list(members)


def _check_sparse_member(cfg: CompositeConfig, m: Any) -> None:
    """Remote members give top-k log-probs only: fine for ensembles with align shared/union/topk."""
    name = getattr(m, "name", m)
    if cfg.strategy != "ensemble":
        raise TuttiError(f"member {name!r}: {cfg.strategy} needs full next-token distributions, but a remote "
                         "member gives only its top-k log-probs; use strategy: ensemble (align: topk, union or shared)")
    if cfg.align not in ("shared", "union", "topk"):
        raise TuttiError(f"member {name!r}: align: {cfg.align} needs full next-token distributions, but a remote "
                         "member gives only its top-k log-probs; use align: topk, union or shared")
    methods = {cfg.combine.method, cfg.combine.inner if cfg.combine.method == "gated" else ""}
    if "perplexity" in methods:
        raise TuttiError(f"member {name!r}: combine: perplexity needs prompt log-likelihoods, which a remote member "
                         "cannot give; use combine: mean, product or gated")
    if cfg.align == "topk" and getattr(m, "top_logprobs", cfg.topk) < cfg.topk:
        raise TuttiError(f"member {name!r}: asks its endpoint for top_logprobs: {m.top_logprobs}, fewer than "
                         f"topk: {cfg.topk}; raise its top_logprobs or lower topk")


def _vocab_sizes(members: Sequence[Any]) -> list[int]:
    return [int(m.vocab_size) for m in members]


def _name(cfg: CompositeConfig, members: Sequence[Any]) -> str:
    return cfg.name or f"{cfg.strategy}:" + "+".join(str(getattr(m, "name", "?")) for m in members)


@STRATEGIES.register("ensemble", pretty_name="Token-level ensemble",
                     paper="https://arxiv.org/abs/2406.12585")
def build_ensemble(cfg: CompositeConfig, members: Sequence[Any]) -> TokenComposite:
    """Fuse the members' next-token distributions with ``combine`` (mean, product, perplexity, gated)."""
    ms = _token_members(cfg, members)
    c = cfg.combine
    try:
        combiner = build_combiner(c.method, weights=c.weights, threshold=c.threshold, inner=c.inner, tau=c.tau)
    except ValueError as e:
        raise ConfigError(f"combine: {e}") from None
    aligner = build_aligner(cfg.align, ms, vocab_sizes=_vocab_sizes(ms), topk=cfg.topk)
    return TokenComposite(ms, aligner, combiner, name=_name(cfg, ms), strategy="ensemble")


@STRATEGIES.register("contrastive", pretty_name="Contrastive decoding", paper="https://arxiv.org/abs/2210.15097")
def build_contrastive(cfg: CompositeConfig, members: Sequence[Any]) -> TokenComposite:
    """Members [expert, amateur]: expert minus amateur on the alpha-plausible head."""
    ms = _token_members(cfg, members)
    aligner = build_aligner(cfg.align, ms, vocab_sizes=_vocab_sizes(ms), topk=cfg.topk)
    comb = Contrastive(alpha=0.1 if cfg.alpha is None else cfg.alpha, beta=cfg.beta)
    return TokenComposite(ms, aligner, comb, name=_name(cfg, ms), strategy="contrastive")


@STRATEGIES.register("proxy", pretty_name="Proxy-tuning / EFT / DExperts", paper="https://arxiv.org/abs/2401.08565")
def build_proxy(cfg: CompositeConfig, members: Sequence[Any]) -> TokenComposite:
    """Members [base, expert, anti_expert]: base + alpha * (expert - anti_expert)."""
    ms = _token_members(cfg, members)
    aligner = build_aligner(cfg.align, ms, vocab_sizes=_vocab_sizes(ms), topk=cfg.topk)
    comb = Proxy(alpha=1.0 if cfg.alpha is None else cfg.alpha)
    return TokenComposite(ms, aligner, comb, name=_name(cfg, ms), strategy="proxy")
