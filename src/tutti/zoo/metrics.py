"""The zoo's answer check: strict exact match after normalisation (one implementation, in
:mod:`tutti.evaluation.metrics`; re-exported here under the zoo's names)."""

from __future__ import annotations

from tutti.evaluation.metrics import normalize_answer
from tutti.evaluation.metrics import strict_match as exact_match

__all__ = ["exact_match", "normalize_answer"]
