"""Answer metrics with normalisation: strict exact match (numbers as numbers), token F1, choice parsing.

Unlike the official Model Swarms code, exact match is *not* a substring test: ``"15"`` does not match ``"5"``.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?%?|[-+]?\.\d+")
_ANSWER_IS = re.compile(r"(?:answer is|answer:|####)\s*(.+)", re.I)
_PUNCT = str.maketrans("", "", string.punctuation)
_WHOLE_NUMBER = re.compile(r"^[-+]?\d[\d,]*(\.\d+)?$|^[-+]?\.\d+$")


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace."""
    t = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", t).split())


def parse_number(text: str) -> float | None:
    """``"1,000"``, ``"$5"``, ``"5.0"``, ``"-3"``, ``"50%"`` -> float; ``None`` if ``text`` is not one number."""
    t = text.strip().rstrip(".").strip()
    if not t or not re.fullmatch(_NUMBER, t):
        return None
    try:
        return float(t.replace(",", "").replace("$", "").replace("%", ""))
    except ValueError:
        return None


def extract_answer(text: str) -> str:
    """The answer part of a generation: after "answer is"/"####" if present, else the first non-empty line."""
    m = _ANSWER_IS.search(text)
    if m:
        return m.group(1).strip().splitlines()[0] if m.group(1).strip() else ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else ""


def last_number(text: str) -> float | None:
    """The last number written in ``text``."""
    found = _NUMBER.findall(text)
    return parse_number(found[-1]) if found else None


def exact_match(prediction: str, target: str) -> float:
    """1.0 when the extracted answer equals the target after normalisation, else 0.0.

    A numeric target is compared as a number with the last number of the extracted answer (``"The answer is
    15."`` matches ``15`` and ``15.0``, not ``5``); other targets compare normalised text for equality.
    """
    answer = extract_answer(prediction)
    tnum = parse_number(target)
    if tnum is not None:
        pnum = last_number(answer)
        return float(pnum is not None and math.isclose(pnum, tnum, rel_tol=1e-9, abs_tol=1e-9))
    return float(normalize_text(answer) == normalize_text(target))


def normalize_answer(text: str) -> str:
    """Canonical form of a short answer, for :func:`strict_match`.

    Lower-cases, trims, drops a trailing full stop and surrounding quotes; a number (``"1,000"``, ``"62.0"``)
    becomes its canonical decimal form (``"1000"``, ``"62"``); other text loses its punctuation and has its
    whitespace collapsed.
    """
    t = text.strip().lower().strip("\"'`").strip()
    t = t.rstrip(".!").strip()
    if _WHOLE_NUMBER.match(t):
        value = float(t.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    return " ".join(t.translate(_PUNCT).split())


def strict_match(prediction: str, target: str) -> bool:
    """Whether the *whole* prediction equals ``target`` after :func:`normalize_answer` (no answer extraction,
    no substring test): ``"The answer is 62"`` does not match ``62``. The zoo's expert-by-task matrix uses it."""
    return normalize_answer(prediction) == normalize_answer(target)


def token_f1(prediction: str, target: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (SQuAD-style)."""
    p, t = normalize_text(prediction).split(), normalize_text(target).split()
    if not p or not t:
        return float(p == t)
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def parse_choice(text: str, choices: tuple[str, ...] | list[str]) -> int | None:
    """Index of the option a generated answer names, or ``None`` when it is not clear.

    Accepted: a letter at the start (``"B"``, ``"(B)"``, ``"B."``, ``"B: ..."``), ``"answer is B"``, or text
    that equals exactly one option after normalisation. Unlike the official parser this never guesses from
    letters found elsewhere in the text.
    """
    letters = "".join(chr(ord("A") + i) for i in range(len(choices)))
    t = text.strip()
    m = re.match(rf"^\(?([{letters}])(?:[).:\s]|$)", t) or re.search(rf"answer is:?\s*\(?([{letters}])\b", t, re.I)
    if m:
        return letters.index(m.group(1).upper())
    norm = normalize_text(extract_answer(t))
    hits = [i for i, c in enumerate(choices) if normalize_text(c) == norm]
    return hits[0] if len(hits) == 1 else None
