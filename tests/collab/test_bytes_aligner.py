"""The bytes aligner: exact next-byte distributions on a bigram stub, and a real cross-tokenizer run."""

from __future__ import annotations

import math

import pytest
import torch
from collab_stubs import stub_model, table_from

import tutti.collab
from tutti.collab.bytes_align import BytesAligner
from tutti.collab.combiners import Mean
from tutti.collab.composite import TokenComposite
from tutti.models.interface import SamplingParams

A, B, C, X, AN, EOS = 67, 68, 69, 90, 291, 2  # "a", "b", "c", "x", "an", <|im_end|>


def test_next_byte_distribution_is_exact_with_one_token_lookahead(tok) -> None:
    rows = {X: {A: 0.2, AN: 0.5, B: 0.3}, A: {C: 1.0}, AN: {EOS: 1.0}}
    m = stub_model(table_from(rows, 384), tok)
    comp = TokenComposite([m], BytesAligner([m], vocab_sizes=[384]), Mean(), name="bytes")
    first = comp.next_token_logprobs(["x"])[0].exp()
    assert first[ord("a")].item() == pytest.approx(0.7, abs=1e-6)
    assert first[ord("b")].item() == pytest.approx(0.3, abs=1e-6)
    out = comp.generate(["x"], params=SamplingParams(max_new_tokens=10, logprobs=True))[0][0]
    # "a" (0.7), then "n" (0.5/0.7: the longer token) over "c" (0.2/0.7: "a" then "c"), then EOS after "an"
    assert out.text == "an" and out.finish_reason == "stop"
    assert [lp.logprob for lp in out.logprobs] == pytest.approx([math.log(0.7), math.log(0.5 / 0.7)], abs=1e-5)
    # the member holds the token "an", not "a" + "n": the tentative "a" was withdrawn from its cache
    res = comp.loglikelihood([("x", "ac")])[0]
    assert res.logprob == pytest.approx(math.log(0.7) + math.log(0.2 / 0.7), abs=1e-5)


@pytest.mark.real_model
def test_bytes_ensemble_across_tokenizers(smollm2, gemma) -> None:
    ens = tutti.collab.load({"strategy": "ensemble", "members": ["a", "b"], "align": "bytes"},
                            members=[smollm2, gemma])
    lp = ens.next_token_logprobs(["The capital of France is"])
    assert lp.shape == (1, 257) and float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-4)
    assert int(lp.argmax()) == ord(" ")
    out = ens.generate(["The capital of France is"], params=SamplingParams(max_new_tokens=3))[0][0]
    assert out.text.startswith(" ") and len(out.text.encode()) <= 3
    assert torch.isfinite(torch.tensor(ens.loglikelihood([("The capital of France is", " P")])[0].logprob))
