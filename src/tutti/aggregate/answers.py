"""Answer extraction and majority vote (self-consistency, multi-model vote, the final vote of a debate).

Self-consistency (Wang et al., ICLR 2023, arXiv 2203.11171) samples several reasoning paths and keeps the most
frequent *final answer*; "More Agents" (arXiv 2402.05120) does the same across samples or models. Steps:

1. extract a comparable answer key from each candidate text (an extractor from :data:`EXTRACTORS`);
2. sum the weight of every candidate per key (candidates with no key abstain);
3. pick the key with the largest total; ties are broken deterministically (see :func:`majority_vote`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tutti.evaluation.metrics import extract_answer, last_number, normalize_text
from tutti.registry import Registry

Extractor = Callable[[str], str | None]
EXTRACTORS = Registry[Extractor]("answer extractor")


@EXTRACTORS.register("number", pretty_name="last number")
def extract_number(text: str) -> str | None:
    """The last number of the answer part (``"so 1,200 apples"`` -> ``"1200"``); ``None`` without one."""
    n = last_number(extract_answer(text)) if extract_answer(text) else None
    if n is None:
        n = last_number(text)
    if n is None:
        return None
    return str(int(n)) if float(n).is_integer() else repr(float(n))


@EXTRACTORS.register("answer", pretty_name="answer text")
def extract_text_answer(text: str) -> str | None:
    """The normalised answer part: after "answer is"/"####" when present, else the first non-empty line."""
    a = normalize_text(extract_answer(text))
    return a or None


@EXTRACTORS.register("choice", pretty_name="choice letter")
def extract_choice(text: str) -> str | None:
    """A choice letter after "answer is", or alone at the start (``"B"``, ``"(B)"``, ``"B."``, ``"B: ..."``).

    A capital followed by a space (``"I think"``) is a word, not a choice, so it does not count.
    """
    import re

    m = re.search(r"answer is:?\s*\(?([A-Za-z])\b", text, re.I) or re.match(r"^\s*\(?([A-Z])(?:[).:]|\s*$)", text)
    return m.group(1).upper() if m else None


@EXTRACTORS.register("exact", pretty_name="whole text")
def extract_exact(text: str) -> str | None:
    """The whole normalised text (free-form answers vote on identical outputs)."""
    t = normalize_text(text)
    return t or None


@dataclass(frozen=True)
class VoteResult:
    """The outcome of a vote.

    Args:
        winner: index of the chosen candidate (the first candidate carrying the winning key), or ``None`` when
            no candidate had an extractable answer.
        key: the winning answer key.
        tally: total weight per key, in order of first appearance.
        agreement: winning weight / total weight of candidates with a key (0 when none).
        tied: whether several keys shared the top weight before tie-breaking.
    """

    winner: int | None
    key: str | None
    tally: dict[str, float]
    agreement: float
    tied: bool


def majority_vote(
    keys: Sequence[str | None],
    *,
    weights: Sequence[float] | None = None,
    scores: Sequence[float] | None = None,
) -> VoteResult:
    """Weighted plurality vote over answer keys, with deterministic tie-breaking.

    Args:
        keys: one extracted key per candidate (``None`` abstains).
        weights: one weight per candidate (default 1 each).
        scores: optional per-candidate confidence (e.g. mean token log-probability). Among tied keys the one
            whose best candidate has the highest score wins; without scores (or on equal scores) the key that
            appeared first wins, so the result never depends on hash order.

    Returns:
        A :class:`VoteResult`.
    """
    w = list(weights) if weights is not None else [1.0] * len(keys)
    if len(w) != len(keys) or (scores is not None and len(scores) != len(keys)):
        raise ValueError("keys, weights and scores must have the same length")
    tally: dict[str, float] = {}
    first: dict[str, int] = {}
    best: dict[str, float] = {}
    for i, k in enumerate(keys):
        if k is None:
            continue
        tally[k] = tally.get(k, 0.0) + w[i]
        first.setdefault(k, i)
        if scores is not None:
            best[k] = max(best.get(k, float("-inf")), float(scores[i]))
    if not tally:
        return VoteResult(None, None, {}, 0.0, False)
    top = max(tally.values())
    leaders = [k for k in tally if abs(tally[k] - top) <= 1e-12]
    # dict order is first appearance, so min(first[k]) and the order of `leaders` agree
    key = max(leaders, key=lambda k: (best.get(k, 0.0), -first[k]))
    total = sum(tally.values())
    return VoteResult(first[key], key, tally, tally[key] / total if total else 0.0, len(leaders) > 1)
