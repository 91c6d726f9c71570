"""Ensembles of real models: weights [1, 0] reproduce the first member's greedy output exactly, with a shared
tokenizer (SmolLM2 + a SmolLM2-tokenizer model) and across tokenizers (SmolLM2 + Gemma-3, both directions)."""

from __future__ import annotations

import pytest

import tutti.collab
from tutti.models.interface import SamplingParams

pytestmark = pytest.mark.real_model


def test_shared_vocab_weights_one_zero_is_smollm2(smollm2, tiny_smol) -> None:
    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    params = SamplingParams(max_new_tokens=8)
    ref = smollm2.generate([chat], params=params)[0][0]
    ens = tutti.collab.load({"strategy": "ensemble", "members": ["a", "b"], "combine": {"weights": [1, 0]}},
                            members=[smollm2, tiny_smol])
    out = ens.generate([chat], params=params)[0][0]
    assert out.token_ids == ref.token_ids and out.text == ref.text


@pytest.mark.parametrize("align", ["union", "topk"])
def test_cross_tokenizer_weights_one_zero_reproduce_each_member(smollm2, gemma, align: str) -> None:
    prompt = "The capital of France is"
    params = SamplingParams(max_new_tokens=4 if align == "union" else 3)
    for first, second in ((smollm2, gemma), (gemma, smollm2)):
        if align == "topk" and first is gemma:
            continue  # one direction is enough for the top-k variant (time budget)
        ref = first.generate([prompt], params=params)[0][0]
        ens = tutti.collab.load({"strategy": "ensemble", "members": ["a", "b"], "align": align,
                                 "combine": {"weights": [1, 0]}}, members=[first, second])
        out = ens.generate([prompt], params=params)[0][0]
        assert out.text == ref.text, (first.name, align)


def test_cross_tokenizer_gated_mean_reports_share(smollm2, gemma) -> None:
    ens = tutti.collab.load({"strategy": "ensemble", "members": ["a", "b"], "align": "union",
                             "combine": {"method": "gated", "threshold": 0.5}}, members=[smollm2, gemma])
    out = ens.generate(["def add(a, b):"], params=SamplingParams(max_new_tokens=4))[0][0]
    assert out.text and 0.0 <= out.info["ensembled_share"] <= 1.0
    # PackLLM weights across tokenizers come from per-byte prompt perplexity and sum to one
    pk = tutti.collab.load({"strategy": "ensemble", "members": ["a", "b"], "align": "union",
                            "combine": "perplexity"}, members=[smollm2, gemma])
    o = pk.generate(["def add(a, b):"], params=SamplingParams(max_new_tokens=1))[0][0]
    assert sum(o.info["weights"]) == pytest.approx(1.0, abs=1e-3)
