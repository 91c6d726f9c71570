"""Exact-match scoring after normalisation (case, whitespace, punctuation, numbers as numbers; not substring)."""

from __future__ import annotations

import re
import string

_PUNCT = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"^[-+]?\d[\d,]*(\.\d+)?$|^[-+]?\.\d+$")


def normalize_answer(text: str) -> str:
    """Canonical form of a short answer.

    Lower-cases, trims, drops a trailing full stop and surrounding quotes; a number (``"1,000"``, ``"62.0"``)
    becomes its canonical decimal form (``"1000"``, ``"62"``); other text loses its punctuation and has its
    whitespace collapsed.
    """
    t = text.strip().lower().strip("\"'`").strip()
    t = t.rstrip(".!").strip()
    if _NUMBER.match(t):
        value = float(t.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    return " ".join(t.translate(_PUNCT).split())


def exact_match(prediction: str, target: str) -> bool:
    """Whether ``prediction`` equals ``target`` after :func:`normalize_answer` (no substring matching)."""
    return normalize_answer(prediction) == normalize_answer(target)
