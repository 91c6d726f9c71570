"""The decoding loop on bigram stubs (exact) and on tiny real models (equality with HF generate)."""

from __future__ import annotations

import pytest
import torch
from collab_stubs import stub_model, table_from

from tutti.collab.aligners import SharedAligner, UnionAligner
from tutti.collab.combiners import Contrastive, Mean, Proxy
from tutti.collab.composite import TokenComposite
from tutti.collab.session import MemberSession
from tutti.models.interface import SamplingParams

A, B, C, D, X, EOS = 67, 68, 69, 70, 90, 2
V = 384


def composite(models, combiner, aligner_cls=SharedAligner) -> TokenComposite:
    aligner = aligner_cls(models, vocab_sizes=[m.vocab_size for m in models])
    return TokenComposite(models, aligner, combiner, name="t")


def test_contrastive_decoding_picks_what_the_expert_knows_better(tok) -> None:
    expert = stub_model(table_from({}, V, default={A: 0.6, B: 0.3, C: 0.05, D: 0.05}), tok)
    amateur = stub_model(table_from({}, V, default={A: 0.7, B: 0.1, C: 0.1, D: 0.1}), tok)
    params = SamplingParams(max_new_tokens=3)
    assert composite([expert], Mean()).generate(["x"], params=params)[0][0].text == "aaa"
    out = composite([expert, amateur], Contrastive(alpha=0.1)).generate(["x"], params=params)[0][0]
    assert out.text == "bbb" and out.token_ids == (B, B, B) and out.finish_reason == "length"
    # alpha=0.5 leaves only the expert's top token plausible
    assert composite([expert, amateur], Contrastive(alpha=0.5)).generate(["x"], params=params)[0][0].text == "aaa"


def test_proxy_tuning_moves_the_base_by_the_expert_delta(tok) -> None:
    base = stub_model(table_from({}, V, default={A: 0.6, B: 0.4}), tok)
    expert = stub_model(table_from({}, V, default={A: 0.2, B: 0.8}), tok)
    anti = stub_model(table_from({}, V, default={A: 0.5, B: 0.5}), tok)
    params = SamplingParams(max_new_tokens=2, logprobs=True)
    out = composite([base, expert, anti], Proxy(alpha=1.0)).generate(["x"], params=params)[0][0]
    assert out.text == "bb"
    assert out.logprobs[0].logprob == pytest.approx(torch.tensor(0.64 / 0.88).log().item(), abs=1e-5)
    weak = composite([base, expert, anti], Proxy(alpha=0.1)).generate(["x"], params=params)[0][0]
    assert weak.text == "aa"


def test_eos_stop_strings_and_length(tok) -> None:
    m = stub_model(table_from({X: {A: 1.0}, A: {B: 1.0}, B: {EOS: 1.0}}, V), tok)
    c = composite([m], Mean())
    full = c.generate(["x"], params=SamplingParams(max_new_tokens=10))[0][0]
    assert (full.text, full.finish_reason, full.token_ids) == ("ab", "stop", (A, B))
    cut = c.generate(["x"], params=SamplingParams(max_new_tokens=10, stop=("b",)))[0][0]
    assert (cut.text, cut.finish_reason) == ("a", "stop")
    short = c.generate(["x"], params=SamplingParams(max_new_tokens=1))[0][0]
    assert (short.text, short.finish_reason) == ("a", "length")
    chunks = list(c.stream("x", params=SamplingParams(max_new_tokens=10)))
    assert "".join(ch.text for ch in chunks) == "ab" and chunks[-1].finish_reason == "stop"


def test_any_members_eos_ends_the_row(tok) -> None:
    m1 = stub_model(table_from({X: {A: 1.0}, A: {EOS: 1.0}}, V), tok)
    m2 = stub_model(table_from({X: {A: 1.0}, A: {C: 1.0}}, V), tok)
    out = composite([m1, m2], Mean((0.6, 0.4))).generate(["x"], params=SamplingParams(max_new_tokens=5))[0][0]
    assert (out.text, out.finish_reason) == ("a", "stop")


def test_loglikelihood_and_next_token_logprobs_are_the_combined_distribution(tok) -> None:
    m1 = stub_model(table_from({}, V, default={A: 0.5, B: 0.5}), tok)
    m2 = stub_model(table_from({}, V, default={A: 0.1, B: 0.9}), tok)
    c = composite([m1, m2], Mean())
    nxt = c.next_token_logprobs(["x"])
    assert nxt.shape == (1, V) and nxt[0, A].exp().item() == pytest.approx(0.3)
    res = c.loglikelihood([("x", "ab"), ("x", "b")])
    assert res[0].logprob == pytest.approx(float(torch.tensor(0.3 * 0.7).log()), abs=1e-5)
    assert (res[0].num_tokens, res[0].is_greedy, res[1].is_greedy) == (2, False, True)


def test_single_member_loop_equals_hf_generate_batched(tiny_pair) -> None:
    m = tiny_pair[0]
    prompts = ["The quick brown fox", "What is 12 plus", [{"role": "user", "content": "Paris?"}]]
    params = SamplingParams(max_new_tokens=12)
    ours = composite([m], Mean()).generate(prompts, params=params)
    ref = m.generate(prompts, params=params)
    assert [o[0].token_ids for o in ours] == [r[0].token_ids for r in ref]
    assert [o[0].text for o in ours] == [r[0].text for r in ref]
    alone = [composite([m], Mean()).generate([p], params=params)[0][0].token_ids for p in prompts]
    assert alone == [o[0].token_ids for o in ours]


def test_sampling_is_seeded_and_n_gives_several(tiny_pair) -> None:
    c = composite(tiny_pair, Mean())
    p = SamplingParams(max_new_tokens=8, temperature=1.5, seed=7, n=3)
    a = c.generate(["The quick"], params=p)[0]
    b = c.generate(["The quick"], params=p)[0]
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert len({o.token_ids for o in a}) > 1
    other = c.generate(["The quick"], params=SamplingParams(max_new_tokens=8, temperature=1.5, seed=8, n=3))[0]
    assert [o.token_ids for o in other] != [o.token_ids for o in a]


def test_weights_one_zero_reproduce_the_first_member(tiny_pair) -> None:
    params = SamplingParams(max_new_tokens=10)
    ref = tiny_pair[0].generate(["Rome is"], params=params)[0][0]
    out = composite(tiny_pair, Mean((1.0, 0.0))).generate(["Rome is"], params=params)[0][0]
    assert out.token_ids == ref.token_ids
    both = composite(tiny_pair, Mean()).generate(["Rome is"], params=params)[0][0]
    steps = len(both.token_ids) + (both.finish_reason == "stop")  # one forward per step per member (KV cache)
    assert both.info["member_forward_calls"] == [steps, steps]


def test_union_aligner_with_different_vocabularies_reproduces_member_greedy(tmp_path, tiny_pair) -> None:
    from tutti.models.hf import HFModel
    from tutti.testing import make_tiny_llama, tiny_tokenizer

    other = HFModel.load(make_tiny_llama(tmp_path / "v320", seed=5, tokenizer=tiny_tokenizer(320), init_std=0.2))
    params = SamplingParams(max_new_tokens=12)
    for first, second in ((tiny_pair[0], other), (other, tiny_pair[0])):
        ref = first.generate(["café 東京 is"], params=params)[0][0]
        out = composite([first, second], Mean((1.0, 0.0)), UnionAligner).generate(["café 東京 is"], params=params)
        assert out[0][0].text == ref.text


def test_session_repair_equals_fresh_computation(tiny_pair) -> None:
    m = tiny_pair[0]
    p1, p2 = m.encode("The quick brown"), m.encode("Paris")
    s = MemberSession(m, [p1, p2])
    s.step([[5, 6, 7], [8]])
    s.step([[9], [10, 11]], drop=[2, 0])  # row 0 takes back 6, 7 (a hole), row 1 only grows
    fresh = MemberSession(m, [[*p1, 5, 9], [*p2, 8, 10, 11]])
    assert torch.allclose(s.logprobs(), fresh.logprobs(), atol=1e-4)
    assert s.generated(0) == [5, 9] and s.generated(1) == [8, 10, 11]
    s.step([[12], [13]], drop=[1, 1])  # both rows withdraw their trailing token: the cache is cropped
    fresh = MemberSession(m, [[*p1, 5, 12], [*p2, 8, 10, 13]])
    assert torch.allclose(s.logprobs(), fresh.logprobs(), atol=1e-4)
