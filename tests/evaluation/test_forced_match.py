"""Teacher-forced greedy match: exact verdicts on stub logits and on a hand-wired bigram LLaMA whose greedy
generations are known, the prefix-cached fast path against the interface, and the lower-bound invariant on the
real SmolLM2 with a zoo expert."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from tutti.config.swarm import UtilityConfig
from tutti.evaluation.datasets import Example, write_split
from tutti.evaluation.forced import greedy_reproduces
from tutti.evaluation.utilities import build_utility
from tutti.models.interface import SamplingParams

EOS, STOP = 9, 7  # stub vocabulary: 9 ends the sequence, 7 is a stop token


def _logits(path: list[int], vocab: int = 10) -> torch.Tensor:
    """Stub logits whose argmax at position ``j`` is ``path[j]``."""
    out = torch.zeros(len(path), vocab)
    out[torch.arange(len(path)), torch.tensor(path)] = 5.0
    return out


@pytest.mark.parametrize(("path", "budget", "want"), [
    ([3, 4, EOS], 8, True),     # the reference, then end of sequence
    ([3, 4, STOP], 8, True),    # the reference, then a stop token
    ([3, 5, EOS], 8, False),    # differs at the last answer token
    ([3, 4, 6], 8, False),      # the reference, but decoding would go on ("34" + more text)
    ([3, 4, 6], 2, True),       # ... unless the answer fills the token budget
    ([3, 4, EOS], 1, False),    # the budget cuts the answer
])
def test_greedy_reproduces_on_stub_logits(path, budget, want):
    greedy = _logits(path).argmax(-1).tolist()
    assert greedy_reproduces(greedy, [3, 4], stops=lambda t: t in (EOS, STOP), max_new_tokens=budget) is want


def _bigram_model(tmp_path, tokenizer, chains: list[list[int]]):
    """A real tiny LLaMA wired so that its next token depends only on the current one: attention and MLP
    outputs are zero, each chain token gets its own embedding axis, and ``lm_head`` maps it to its successor."""
    from transformers import AutoModelForCausalLM

    from tutti.models.hf import HFModel
    from tutti.testing import make_tiny_llama

    path = make_tiny_llama(tmp_path / "bigram", seed=0, tokenizer=tokenizer, tie_word_embeddings=False)
    module = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        for layer in module.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        module.model.embed_tokens.weight.zero_()
        module.lm_head.weight.zero_()
        axis = 0
        for chain in chains:
            for cur, nxt in pairwise(chain):
                module.model.embed_tokens.weight[cur, axis] = 1.0
                module.lm_head.weight[nxt, axis] = 1.0
                axis += 1
    return HFModel(module, tokenizer, batch_size=2)


def test_forced_match_agrees_with_real_greedy_generation(tmp_path, tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    newline = tiny_tokenizer("\n", add_special_tokens=False)["input_ids"]
    prompts = ["Q1 >", "Q2 <"]
    last = [tiny_tokenizer(p, add_special_tokens=False)["input_ids"][-1] for p in prompts]
    answers = ["rain", "sky"]  # no shared characters: the byte-level vocabulary spells them letter by letter
    ids = [tiny_tokenizer(p + a, add_special_tokens=False)["input_ids"][len(tiny_tokenizer(p, add_special_tokens=False)["input_ids"]):]
           for p, a in zip(prompts, answers, strict=True)]
    assert len(newline) == 1 and len({*ids[0], *ids[1], *last}) == len(ids[0]) + len(ids[1]) + 2  # distinct links
    assert len(ids[0]) > len(ids[1])
    # prompt 1 answers "rain" then EOS; prompt 2 answers "sky" then a newline ("\n" maps to itself)
    model = _bigram_model(tmp_path, tiny_tokenizer, [[last[0], *ids[0], eos], [last[1], *ids[1], newline[0], newline[0]]])
    write_split(tmp_path / "t" / "dev.jsonl", [
        Example("1", prompts[0], answers[0]), Example("2", prompts[1], answers[1]),
        Example("3", prompts[0], answers[0][:-1] + "x"),  # differs at the last character
        Example("4", prompts[0], answers[0][:-1]),  # a prefix: greedy decoding would go on
        Example("5", prompts[0], "Rain"),  # exact match accepts "rain": a case variant
    ])
    outs = model.generate(prompts, params=SamplingParams(max_new_tokens=8, stop=("\n",)))
    assert [o[0].text for o in outs] == ["rain", "sky"]  # the wiring does what it says

    def scores(**opts):
        u = build_utility(UtilityConfig(name="forced_match", task=str(tmp_path / "t"),
                                        options={"choice_prefix": "", **opts}))
        return u(model).scores

    assert scores(max_new_tokens=8) == (1.0, 1.0, 0.0, 0.0, 1.0)
    assert scores(max_new_tokens=8, variants=False) == (1.0, 1.0, 0.0, 0.0, 0.0)
    assert scores(max_new_tokens=8, stop=[]) == (1.0, 0.0, 0.0, 0.0, 1.0)  # a newline no longer stops prompt 2
    # a budget of 3 tokens: "sky" fills it, and so does "rai" (decoding "rain" is cut after three letters)
    assert scores(max_new_tokens=len(ids[1]), stop=[]) == (0.0, 1.0, 0.0, 1.0, 0.0)
    for opts, want in (({"max_new_tokens": 8}, (1.0, 1.0, 0.0, 0.0, 1.0)),
                       ({"max_new_tokens": len(ids[1]), "stop": []}, (0.0, 1.0, 0.0, 1.0, 0.0))):
        gen = build_utility(UtilityConfig(name="exact_match", task=str(tmp_path / "t"), options=opts))
        assert gen(model).scores == want  # generation + exact match, the quantity it bounds, agrees


def test_fast_path_equals_interface_path_with_chat_prompts(tiny_model_dir, tmp_path):
    """The prefix-cached batches (the chat template's shared head run once) give the interface's numbers."""
    from tutti.evaluation.scoring import PreparedLoglik, option_greedy
    from tutti.models.hf import HFModel

    m = HFModel.load(tiny_model_dir, batch_size=3)
    reqs = [([{"role": "user", "content": q}], a) for q, a in
            [("2+3?", "5"), ("capital of France?", "Paris"), ("10+5?", "15 apples"), ("hi", "hello there")]]
    prepared, slow = PreparedLoglik(m, reqs, batch_size=3), m.loglikelihood(reqs)
    assert max(b.prefix.shape[1] for b in prepared.batches) > 5  # the template's head is shared
    for f, s in zip(prepared(m), slow, strict=True):
        assert f.logprob == pytest.approx(s.logprob, abs=1e-4)
        assert (f.is_greedy, f.num_tokens) == (s.is_greedy, s.num_tokens)
    opts = [[a, a.upper(), "\n\n"] for _, a in reqs]  # this random model's greedy answers start with a newline
    greedy = option_greedy(m, [c for c, _ in reqs], opts, batch_size=3)
    for (c, _), os_, row in zip(reqs, opts, greedy, strict=True):
        for res, s in zip(row, m.loglikelihood([(c, o) for o in os_]), strict=True):
            assert res.logprob == pytest.approx(s.logprob, abs=1e-4)
            assert (res.is_greedy, res.num_tokens) == (s.is_greedy, s.num_tokens)
    pruned = option_greedy(m, [c for c, _ in reqs], opts, batch_size=3, greedy_only=True)
    assert sum(not math.isnan(p.logprob) for row in pruned for p in row) == 4  # the newline option of each
    for full, part in zip(greedy, pruned, strict=True):  # pruning never skips an option greedy decoding produces
        for f, p in zip(full, part, strict=True):
            if math.isnan(p.logprob):
                assert not f.is_greedy and p.greedy == f.greedy[:1]
            else:
                assert p.logprob == pytest.approx(f.logprob, abs=1e-4) and (p.greedy, p.reference) == (f.greedy, f.reference)
    write_split(tmp_path / "dev.jsonl", [Example(str(i), q[0]["content"], a) for i, (q, a) in enumerate(reqs)])
    u = build_utility(UtilityConfig(name="forced_match", task=str(tmp_path), options={"chat": True, "max_new_tokens": 4}))

    class Proxy:  # not an HF model: the utility generates and compares the text
        name = "proxy"

        def generate(self, prompts, *, params):
            return m.generate(prompts, params=params)

    assert u(m).scores == u(Proxy()).scores


@pytest.mark.real_model
def test_real_smollm2_forced_match_is_a_lower_bound_of_generation(smollm2):
    """Every example forced_match counts is also right by greedy generation + exact match (24 dev examples)."""
    from tutti.zoo import expert_path
    from tutti.zoo.evaluate import ExpertSwitcher
    from tutti.zoo.tasks import DATA_ROOT

    opts = {"chat": True, "max_new_tokens": 8}
    cfgs = {k: UtilityConfig(name=k, task=str(DATA_ROOT / "sentiment"), split="dev", limit=24, options=opts)
            for k in ("forced_match", "exact_match")}
    switcher = ExpertSwitcher(smollm2)
    try:
        switcher.use(expert_path("sentiment"))
        forced, gen = (build_utility(c)(smollm2) for c in cfgs.values())
    finally:
        switcher.use(None)
    print(f"sentiment expert on 24 sentiment dev examples: forced {forced.value:.3f}, generation {gen.value:.3f}")
    assert all(g == 1.0 for f, g in zip(forced.scores, gen.scores, strict=True) if f == 1.0)
    assert forced.value >= 0.5  # the expert answers in the bare format, so the bound is not vacuous


def test_options_that_leave_the_greedy_path_are_not_run():
    from tutti.evaluation.scoring import ForcedResult, _may_be_greedy

    run = ForcedResult(0.0, (7, 3, 0, 5), (7, 3, 0, 6, 2))  # greedy follows 7 3 0, then takes 6 (not 5)
    assert _may_be_greedy((7, 3, 0, 6), run)  # leaves the run where greedy does
    assert not _may_be_greedy((7, 3, 1, 6), run) and not _may_be_greedy((7, 4), run)  # leaves it elsewhere
    assert not _may_be_greedy((7, 3, 0, 5, 2, 9), run)  # extends the run, which greedy already left
    run = ForcedResult(0.0, (7, 3), (7, 3, 8))
    assert _may_be_greedy((7, 3, 8, 1), run) and not _may_be_greedy((7, 3, 9), run)
