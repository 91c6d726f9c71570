"""Speculative decoding: the sampler's output distribution is the target's (chi-square), greedy is lossless."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from collab_stubs import stub_model, table_from

from tutti.collab.speculative import SpeculativeModel, accept_reject
from tutti.models.interface import SamplingParams

# chi-square critical values at p = 0.001
CRIT = {3: 16.27, 4: 18.47, 8: 26.12, 15: 37.70}


def chi2(counts: Counter, probs: dict, n: int) -> float:
    return sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in probs.items() if p > 0)


def test_accept_reject_output_distribution_is_the_targets() -> None:
    p = torch.tensor([[0.1, 0.4, 0.2, 0.2, 0.1], [0.3, 0.3, 0.2, 0.1, 0.1]])
    q = torch.tensor([[0.5, 0.1, 0.1, 0.1, 0.2]])
    g = torch.Generator().manual_seed(0)
    n = 8000
    first: Counter = Counter()
    accepted = 0
    for _ in range(n):
        d = int(torch.multinomial(q[0], 1, generator=g))
        a, nxt = accept_reject(p, q, [d], g, greedy=False)
        first[d if a == 1 else nxt] += 1
        accepted += a
    assert chi2(first, dict(enumerate(p[0].tolist())), n) < CRIT[4]
    # acceptance rate = sum_x min(p, q)
    assert accepted / n == pytest.approx(float(torch.minimum(p[0], q[0]).sum()), abs=0.02)


def test_accept_reject_greedy_accepts_while_drafts_equal_argmax() -> None:
    p = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])
    assert accept_reject(p, torch.zeros(2, 2), [1, 0], None, greedy=True) == (2, 1)
    assert accept_reject(p, torch.zeros(2, 2), [1, 1], None, greedy=True) == (1, 0)
    assert accept_reject(p, torch.zeros(2, 2), [0, 0], None, greedy=True) == (0, 1)


A, B, C, D, X = 67, 68, 69, 70, 90
V = 384


def test_speculative_sampling_two_tokens_matches_target_joint_distribution(tok) -> None:
    target_rows = {X: {A: 0.5, B: 0.3, C: 0.2}, A: {A: 0.1, B: 0.6, C: 0.3}, B: {A: 0.4, B: 0.4, C: 0.2},
                   C: {A: 0.7, B: 0.2, C: 0.1}}
    draft_rows = {X: {A: 0.2, B: 0.2, C: 0.6}, A: {A: 0.6, B: 0.2, C: 0.2}, B: {A: 0.1, B: 0.8, C: 0.1},
                  C: {A: 0.3, B: 0.3, C: 0.4}}
    target = stub_model(table_from(target_rows, V), tok, "target")
    draft = stub_model(table_from(draft_rows, V), tok, "draft")
    spec = SpeculativeModel(target, draft, num_draft_tokens=2)
    n = 1200
    outs = spec.generate(["x"], params=SamplingParams(max_new_tokens=2, temperature=1.0, seed=0, n=n))[0]
    joint = Counter(o.token_ids for o in outs)
    expect = {(a, b): target_rows[X][a] * target_rows[a][b] for a in (A, B, C) for b in (A, B, C)}
    assert set(joint) <= set(expect)
    assert chi2(joint, expect, n) < CRIT[8]
    rate = sum(o.info["draft_tokens_accepted"] for o in outs) / sum(o.info["draft_tokens_proposed"] for o in outs)
    assert 0.0 < rate < 1.0


def test_speculative_greedy_stub_counts_target_calls(tok) -> None:
    rows = {X: {A: 1.0}, A: {B: 1.0}, B: {C: 1.0}, C: {A: 1.0}}
    target = stub_model(table_from(rows, V), tok)
    draft = stub_model(table_from(rows, V), tok)
    out = SpeculativeModel(target, draft, num_draft_tokens=4).generate(
        ["x"], params=SamplingParams(max_new_tokens=10))[0][0]
    assert out.text == "abcabcabca"
    assert out.info["acceptance_rate"] == 1.0
    # 10 tokens in rounds of 4 + 1: prefill + 2 verification calls
    assert out.info["target_calls"] == 3
    assert target.module.calls == 3


@pytest.mark.real_model
def test_speculative_greedy_equals_target_greedy_on_smollm2(smollm2, tiny_smol, tiny_pair) -> None:
    chat = [{"role": "user", "content": "Name three colors."}]
    params = SamplingParams(max_new_tokens=6)
    ref_chat, ref_code = (r[0].token_ids for r in smollm2.generate([chat, "def add(a, b):"], params=params))
    weak = SpeculativeModel(smollm2, tiny_smol, num_draft_tokens=3).generate([chat], params=params)[0][0]
    assert weak.token_ids == ref_chat
    itself = SpeculativeModel(smollm2, smollm2, num_draft_tokens=3).generate([chat], params=params)[0][0]
    assert itself.token_ids == ref_chat
    # every proposal accepted: prefill + 2 verification calls (3 drafts + 1 bonus, then 2 + 1) for 6 tokens
    assert itself.info["acceptance_rate"] == 1.0 and itself.info["target_calls"] == 3
    assert itself.info["target_calls_per_token"] == 0.5
    cross = SpeculativeModel(smollm2, tiny_pair[0], num_draft_tokens=3)  # another tokenizer: text re-tokenised
    assert not cross.shared
    assert cross.generate(["def add(a, b):"], params=params)[0][0].token_ids == ref_code
