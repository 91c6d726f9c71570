"""Text-similarity utilities for MBR: chrF, sentence BLEU and MiniLM-embedding cosine, plus MBR selection.

Minimum Bayes risk selection (Kumar & Byrne 2004; used as LLM consensus by ``ZurichNLP/mbr``, ``naist-nlp/mbrs``)
picks ``argmax_h (1/|R|) sum_{r in R, r != h} u(h, r)`` with the candidates as their own pseudo-references.
Each utility returns the full ``(n, n)`` matrix ``U[h, r] = u(h, r)`` so that embedding utilities run batched.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import torch

from tutti.registry import Registry

PairwiseUtility = Callable[[Sequence[str]], torch.Tensor]
MBR_UTILITIES = Registry[PairwiseUtility]("MBR utility")


def _char_ngrams(text: str, n: int) -> Counter[str]:
    s = "".join(text.split())  # chrF ignores whitespace
    return Counter(s[i:i + n] for i in range(len(s) - n + 1))


def chrf(hypothesis: str, reference: str, *, order: int = 6, beta: float = 2.0) -> float:
    """Character n-gram F-score (Popović 2015) in [0, 100], as sacreBLEU's sentence chrF (char order 6, beta 2).

    Precision and recall are averaged over the orders that have n-grams on both sides, then combined into F-beta.
    """
    prec, rec, effective = 0.0, 0.0, 0
    for n in range(1, order + 1):
        h, r = _char_ngrams(hypothesis, n), _char_ngrams(reference, n)
        nh, nr = sum(h.values()), sum(r.values())
        if nh == 0 or nr == 0:
            continue
        effective += 1
        match = sum((h & r).values())
        prec += match / nh
        rec += match / nr
    if not effective or prec + rec == 0:
        return 0.0
    p, r_ = prec / effective, rec / effective
    factor = beta**2
    return 100.0 * (1 + factor) * p * r_ / (factor * p + r_)


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text)


def sentence_bleu(hypothesis: str, reference: str, *, max_order: int = 4) -> float:
    """Sentence BLEU in [0, 100] with exponential smoothing and effective order (sacreBLEU's sentence defaults;
    no matching unigram at all gives 0).

    Tokens are words and single punctuation marks (sacreBLEU's ``13a`` on plain text behaves the same).
    """
    hyp, ref = _words(hypothesis), _words(reference)
    if not hyp or not ref:
        return 0.0
    log_sum, smooth, effective, any_match = 0.0, 1.0, 0, False
    for n in range(1, max_order + 1):
        hc = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        rc = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        tot = sum(hc.values())
        if tot == 0:
            break
        effective += 1
        match = sum((hc & rc).values())
        any_match = any_match or match > 0
        if match == 0:
            smooth *= 2
            p = 1.0 / (smooth * tot)
        else:
            p = match / tot
        log_sum += math.log(p)
    if not any_match:
        return 0.0
    bp = 1.0 if len(hyp) >= len(ref) else math.exp(1 - len(ref) / len(hyp))
    return 100.0 * bp * math.exp(log_sum / effective)


def _pairwise(fn: Callable[[str, str], float], texts: Sequence[str]) -> torch.Tensor:
    n = len(texts)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            out[i, j] = fn(texts[i], texts[j]) / 100.0
    return out


@MBR_UTILITIES.register("chrf", pretty_name="chrF", paper="https://aclanthology.org/W15-3049")
def chrf_matrix(texts: Sequence[str]) -> torch.Tensor:
    """``U[h, r] = chrF(h, r) / 100``."""
    return _pairwise(chrf, texts)


@MBR_UTILITIES.register("bleu", pretty_name="sentence BLEU", paper="https://aclanthology.org/P02-1040")
def bleu_matrix(texts: Sequence[str]) -> torch.Tensor:
    """``U[h, r] = BLEU(h, r) / 100``."""
    return _pairwise(sentence_bleu, texts)


@MBR_UTILITIES.register("embedding", pretty_name="MiniLM cosine", paper="https://arxiv.org/abs/1908.10084")
def embedding_matrix(texts: Sequence[str]) -> torch.Tensor:
    """``U[h, r] = cos(emb(h), emb(r))`` with all-MiniLM-L6-v2 mean-pooled sentence embeddings."""
    from tutti.routing.embed import default_embedder

    e = default_embedder().embed(list(texts)).double()  # (n, 384), unit norm
    return e @ e.T


def mbr_select(utility_matrix: torch.Tensor) -> tuple[int, list[float]]:
    """The MBR choice from a ``(n, n)`` utility matrix.

    Args:
        utility_matrix: ``U[h, r]``; the diagonal (a candidate against itself) is ignored.

    Returns:
        (index of the chosen candidate, expected utility of every candidate). Ties go to the lowest index.
    """
    n = utility_matrix.shape[0]
    if n == 1:
        return 0, [1.0]
    off = utility_matrix.clone().fill_diagonal_(0.0)
    expected = (off.sum(1) / (n - 1)).tolist()
    best = max(range(n), key=lambda i: (round(expected[i], 12), -i))
    return best, expected
