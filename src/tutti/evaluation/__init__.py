"""Tasks (JSONL with dev/test splits), metrics with normalisation, and the utility-function registry."""

from tutti.evaluation.datasets import Example, load_split
from tutti.evaluation.utilities import UTILITIES, Utility, UtilityResult, build_utility

__all__ = ["UTILITIES", "Example", "Utility", "UtilityResult", "build_utility", "load_split"]
