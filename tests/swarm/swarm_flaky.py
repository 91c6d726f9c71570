"""A custom utility that fails on every k-th call (to test fault handling)."""

from __future__ import annotations

import os

_calls = {"n": 0}


def utility(model, examples) -> float:
    """Mean log-likelihood of the first example's target; raises on every k-th call."""
    _calls["n"] += 1
    if _calls["n"] % int(os.environ.get("TUTTI_TEST_FAIL_EVERY", "1000")) == 0:
        raise RuntimeError("flaky utility failed on purpose")
    return model.loglikelihood([(examples[0].input, examples[0].target)])[0].logprob
