"""The shared-context multiple-choice scorer gives the same log-likelihoods as scoring every (context, option)."""

from __future__ import annotations

import pytest

from tutti.evaluation.scoring import PreparedLoglik, option_logprobs
from tutti.models.hf import HFModel


def test_option_logprobs_match_pairwise_scoring(tiny_model_dir) -> None:
    model = HFModel.load(str(tiny_model_dir))
    contexts = ["Question: which is larger, 12 or 21? Answer:", "Question: the opposite of hot? Answer:",
                "Question: true or false: not True? Answer:", "Q", "Question: pick a fruit among these"]
    options = [[" 12", " 21"], [" cold", " warm", " tepid and mild", " x"], [" true", " false"],
               [" a", " bb", " ccc"], [" apple pie", " pear"]]
    got = option_logprobs(model, contexts, options, batch_size=2)  # several batches, ragged option counts
    reqs = [(c, o) for c, opts in zip(contexts, options, strict=True) for o in opts]
    want = [r.logprob for r in PreparedLoglik(model, reqs, batch_size=4)()]
    assert [len(g) for g in got] == [len(o) for o in options]
    assert [x for g in got for x in g] == pytest.approx(want, abs=1e-4)
    assert got[1][0] != pytest.approx(got[1][2], abs=1e-3)  # real, different scores (not a constant)
