"""Pairwise ranking (position-swap check), mixture-of-agents fusion with the proposer cache, debate."""

from __future__ import annotations

import json
import math
import re

import pytest

from tutti.aggregate import (
    Debate,
    DebateOptions,
    Fusion,
    FusionOptions,
    PairRank,
    RankOptions,
    Vote,
    VoteOptions,
)
from tutti.aggregate.rank import DEFAULT_TEMPLATE
from tutti.models.interface import SamplingParams

P = SamplingParams(max_new_tokens=16)


def _shown(prompt: str) -> tuple[str, str]:
    a = re.search(r"Answer A: (.*?)\n\nAnswer B", prompt, re.S).group(1)
    b = re.search(r"Answer B: (.*?)\n\nThe better", prompt, re.S).group(1)
    return a, b


def length_judge(prompt: str, cont: str) -> float:
    """Prefers the longer answer, whatever its position (log-probs -1 / -3)."""
    a, b = _shown(prompt)
    better = " A" if len(a) >= len(b) else " B"
    return -1.0 if cont == better else -3.0


def test_rank_full_picks_judges_favourite(stub) -> None:
    members = [stub("a", "short"), stub("b", "the longest answer here"), stub("c", "medium one")]
    judge = stub("judge", "", loglik=length_judge)
    r = PairRank(members, judge, RankOptions())
    out = r.generate(["q"], params=P)[0][0]
    assert out.text == "the longest answer here"
    assert out.info["comparisons"] == 6 and out.info["inconsistent"] == 0
    assert judge.loglik_requests == 12  # 3 pairs x 2 orders x 2 continuations
    p = 1 / (1 + math.exp(-2))  # softmax(-1, -3)[0]
    assert out.info["wins"] == [pytest.approx(2 * (1 - p), abs=1e-5), pytest.approx(2 * p, abs=1e-5),
                                pytest.approx(1.0, abs=1e-5)]


def test_rank_bubble_same_winner_fewer_calls(stub) -> None:
    members = [stub("a", "short"), stub("b", "the longest answer here"), stub("c", "medium one")]
    judge = stub("judge", "", loglik=length_judge)
    out = PairRank(members, judge, RankOptions(mode="bubble")).generate(["q"], params=P)[0][0]
    assert out.text == "the longest answer here" and out.info["comparisons"] == 4


def test_position_biased_judge_is_caught(stub) -> None:
    # always prefers whatever is shown first: every pair fails the swap check -> all ties -> first candidate
    judge = stub("judge", "", loglik=lambda p, c: -1.0 if c == " A" else -5.0)
    members = [stub("a", "x"), stub("b", "y y y"), stub("c", "z z")]
    out = PairRank(members, judge, RankOptions()).generate(["q"], params=P)[0][0]
    assert out.text == "x" and out.info["inconsistent"] == 3
    assert out.info["wins"] == [1.0, 1.0, 1.0]


def test_rank_template_check(stub) -> None:
    from tutti.errors import TuttiError

    with pytest.raises(TuttiError, match=r"\{b\}"):
        PairRank([stub("a", "x")], stub("j", ""), RankOptions(template="{input} {a}"))
    assert "{input}" in DEFAULT_TEMPLATE


def test_fusion_layers_references_and_cache(stub, tmp_path) -> None:
    p1, p2 = stub("p1", "Answer one"), stub("p2", "Answer two")
    agg = stub("agg", lambda prompt, i: "fused:" + str(len(re.findall(r"\[\d\]", prompt))))
    opts = FusionOptions(layers=2, aggregator=2, proposers=(0, 1), cache_dir=str(tmp_path))
    f = Fusion([p1, p2, agg], opts)
    out = f.generate(["What?"], params=P)[0][0]
    assert out.text == "fused:2"  # the aggregator saw the 2 references of the last layer
    # layer 2 proposers saw layer-1 answers in a system message
    chat = p1.prompts_seen[1]
    assert chat[0]["role"] == "system" and "[1] Answer one" in chat[0]["content"] and "[2] Answer two" in chat[0]["content"]
    assert chat[1] == {"role": "user", "content": "What?"}
    assert out.info["member_calls"] == 5 and out.info["proposals"] == 4
    # a re-run with another aggregator over the same cache does not call the proposers again
    q1, q2 = stub("p1", "Answer one"), stub("p2", "Answer two")
    vote = Vote([q1, q2], VoteOptions(cache_dir=str(tmp_path)))
    assert vote.generate(["What?"], params=P)[0][0].text == "Answer one"
    assert q1.generate_calls == 0 and q2.generate_calls == 0
    assert vote.cache.hits == 2
    lines = (tmp_path / "proposals.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("key" in json.loads(x) for x in lines)


def test_self_moa_one_member(stub) -> None:
    m = stub("m", lambda p, i: f"s{i}" if "[1]" not in p else "final")
    f = Fusion([m], FusionOptions(samples=3, temperature=0.7))
    out = f.generate(["q"], params=P)[0][0]
    assert out.text == "final" and out.info["proposals"] == 3
    assert "[3] s2" in m.prompts_seen[-1][0]["content"]


def test_fusion_streams_aggregator(stub) -> None:
    f = Fusion([stub("p", "a b"), stub("agg", "x y z")], FusionOptions(proposers=(0,), aggregator=1))
    chunks = list(f.stream("q", params=P))
    assert "".join(c.text for c in chunks).strip() == "x y z" and chunks[-1].finish_reason == "stop"


def test_debate_agents_converge_and_vote(stub) -> None:
    # agent 0 says 5 then keeps it; agents 1 and 2 switch to the majority after seeing the others
    def agent(fixed: str):
        def answer(prompt: str, i: int) -> str:
            if "Other agents answered" not in prompt:
                return f"The answer is {fixed}"
            return "The answer is 5" if prompt.count("The answer is 5") >= 2 else f"The answer is {fixed}"
        return answer

    members = [stub("a", agent("5")), stub("b", agent("5")), stub("c", agent("7"))]
    d = Debate(members, DebateOptions(rounds=2, extract="number"))
    out = d.generate(["What is 2+3?"], params=P)[0][0]
    assert out.text == "The answer is 5" and out.info["votes"] == {"5": 3.0}
    assert out.info["member_calls"] == 9  # 3 agents x (1 + 2 rounds)
    turn = members[2].prompts_seen[1]
    assert [m["role"] for m in turn] == ["user", "assistant", "user"]
    assert "Agent 1: The answer is 5" in turn[2]["content"]


def test_debate_zero_rounds_is_a_vote(stub) -> None:
    members = [stub("a", "3"), stub("b", "4"), stub("c", "4")]
    out = Debate(members, DebateOptions(rounds=0, extract="number")).generate(["q"], params=P)[0][0]
    assert out.text == "4" and out.info["member_calls"] == 3
