"""Majority vote / self-consistency: extraction, weights, deterministic tie-breaking, cost accounting."""

from __future__ import annotations

import pytest

from tutti.aggregate import Vote, VoteOptions, majority_vote
from tutti.aggregate.answers import extract_choice, extract_number, extract_text_answer
from tutti.errors import ConfigError, TuttiError
from tutti.models.interface import SamplingParams

P = SamplingParams(max_new_tokens=16)


def test_extractors_exact() -> None:
    assert extract_number("We add them: 1,200 + 5 = 1205. The answer is 1205.") == "1205"
    assert extract_number("so the total is 2.50 dollars") == "2.5"
    assert extract_number("no digits here") is None
    assert extract_text_answer("The answer is Paris.") == "paris"
    assert extract_choice("(B) because ...") == "B"
    assert extract_choice("I think the answer is c") == "C"
    assert extract_choice("maybe") is None


def test_majority_vote_plurality_and_abstain() -> None:
    v = majority_vote(["4", None, "5", "4"])
    assert (v.winner, v.key, v.tied) == (0, "4", False)
    assert v.tally == {"4": 2.0, "5": 1.0}
    assert v.agreement == pytest.approx(2 / 3)
    assert majority_vote([None, None]).winner is None


def test_tie_break_first_then_score() -> None:
    v = majority_vote(["7", "8", "8", "7"])
    assert (v.key, v.winner, v.tied) == ("7", 0, True)  # first appearance wins
    v = majority_vote(["7", "8", "8", "7"], scores=[-3.0, -1.0, -2.0, -4.0])
    assert (v.key, v.winner) == ("8", 1)  # best candidate score among tied keys
    v = majority_vote(["7", "8"], scores=[-1.0, -1.0])
    assert v.key == "7"  # equal scores -> first


def test_weights_change_the_winner() -> None:
    assert majority_vote(["a", "b", "b"], weights=[3.0, 1.0, 1.0]).key == "a"


def test_self_consistency_one_member(stub) -> None:
    m = stub("m", ["The answer is 12.", "I get 13", "answer: 12", "13", "The answer is 12"])
    sc = Vote([m], VoteOptions(samples=5, temperature=0.7, extract="number"))
    out = sc.generate(["What is 5+7?"], params=P)[0][0]
    assert out.text == "The answer is 12."
    assert out.info["votes"] == {"12": 3.0, "13": 2.0}
    assert out.info["candidates"] == 5 and out.info["member_calls"] == 5
    assert m.generate_calls == 1  # one batched call with n=5


def test_multi_model_vote_tie_goes_to_member_order(stub) -> None:
    a, b = stub("a", "The answer is 3"), stub("b", "The answer is 4")
    v = Vote([a, b], VoteOptions(extract="number"))
    assert v.generate(["q"], params=P)[0][0].text == "The answer is 3"
    v = Vote([b, a], VoteOptions(extract="number"))
    assert v.generate(["q"], params=P)[0][0].text == "The answer is 4"
    v = Vote([a, b], VoteOptions(extract="number", weights=(1.0, 2.0)))
    assert v.generate(["q"], params=P)[0][0].text == "The answer is 4"


def test_vote_batches_prompts_and_cuts_stop(stub) -> None:
    m = stub("m", lambda p, i: f"{len(p)}\nextra")
    out = Vote([m], VoteOptions(extract="number")).generate(["ab", "abcd"], params=SamplingParams(stop=("\n",)))
    assert [o[0].text for o in out] == ["2", "4"]


def test_vote_errors(stub) -> None:
    with pytest.raises(TuttiError, match=r"unknown answer extractor 'numbr'.*Did you mean 'number'"):
        Vote([stub("m", "x")], VoteOptions(extract="numbr"))
    with pytest.raises(ValueError, match=r"temperature > 0"):
        VoteOptions(samples=3)
    # n > 1 reruns the vote with shifted member seeds
    m = stub("m", lambda p, i: "a")
    two = Vote([m], VoteOptions(samples=2, temperature=0.5)).generate(["q"], params=SamplingParams(n=2))
    assert [o.text for o in two[0]] == ["a", "a"] and m.generate_calls == 2
    with pytest.raises(TuttiError, match="score_member"):
        Vote([stub("m", "x")], VoteOptions()).loglikelihood([("q", " a")])
    v = Vote([stub("m", "x")], VoteOptions(score_member=0))
    assert v.loglikelihood([("q", "abc")])[0].logprob == -3.0
    from tutti.aggregate.config import parse_options

    with pytest.raises(ConfigError, match=r"unknown key .options\.sample."):
        parse_options(VoteOptions, {"sample": 3}, "vote")
