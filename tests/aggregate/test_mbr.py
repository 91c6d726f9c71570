"""MBR: chrF and BLEU against sacreBLEU as the oracle, exact selection on fixed candidates, MiniLM utility."""

from __future__ import annotations

import pytest
import torch

from tutti.aggregate import MBR, MBROptions, chrf, mbr_select, sentence_bleu
from tutti.models.interface import SamplingParams

PAIRS = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("a quick brown fox jumps", "the quick brown fox jumped over"),
    ("hello world", "goodbye moon"),
    ("Paris is the capital of France", "The capital of France is Paris"),
    ("x", "x"),
]


@pytest.mark.parametrize(("hyp", "ref"), PAIRS)
def test_chrf_and_bleu_match_sacrebleu(hyp: str, ref: str) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    assert chrf(hyp, ref) == pytest.approx(sacrebleu.sentence_chrf(hyp, [ref]).score, abs=1e-6)
    assert sentence_bleu(hyp, ref) == pytest.approx(sacrebleu.sentence_bleu(hyp, [ref]).score, abs=1e-6)


def test_mbr_select_exact() -> None:
    u = torch.tensor([[1.0, 0.2, 0.3], [0.2, 1.0, 0.9], [0.3, 0.9, 1.0]], dtype=torch.float64)
    best, exp = mbr_select(u)
    assert (best == 1 and exp == pytest.approx([0.25, 0.55, 0.6])) or best == 2
    assert mbr_select(u)[0] == 2  # 0.6 > 0.55
    tie = torch.ones(3, 3, dtype=torch.float64)
    assert mbr_select(tie)[0] == 0  # ties -> lowest index


def test_mbr_picks_consensus_candidate(stub) -> None:
    members = [stub("a", "the cat sat on the mat"), stub("b", "a dog ran in the park"),
               stub("c", "the cat sat on a mat"), stub("d", "the cat is on the mat")]
    for utility in ("chrf", "bleu"):
        out = MBR(members, MBROptions(utility=utility)).generate(["describe"], params=SamplingParams())[0][0]
        assert out.text == "the cat sat on the mat", utility
        assert out.info["chosen_member"] == 0
        assert out.info["expected_utility"][1] == min(out.info["expected_utility"])


@pytest.mark.real_model
def test_mbr_embedding_utility(stub) -> None:
    members = [stub("a", "Paris is the capital of France."), stub("b", "Bananas are yellow fruit."),
               stub("c", "France's capital city is Paris."), stub("d", "The capital of France is Paris.")]
    out = MBR(members, MBROptions(utility="embedding")).generate(["q"], params=SamplingParams())[0][0]
    assert out.info["chosen_member"] in (0, 2, 3)
    assert out.info["expected_utility"][1] < 0.3 < min(out.info["expected_utility"][i] for i in (0, 2, 3))
