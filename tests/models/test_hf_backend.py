"""The HF backend behind the narrow interface: batching with left padding, streaming, scoring, real SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tutti.errors import TuttiError
from tutti.models.hf import HFModel
from tutti.models.interface import Model, SamplingParams


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> HFModel:
    from tutti.testing import make_tiny_llama

    # a larger init makes the random model's greedy choices clear-cut (no near-ties between tokens)
    d = make_tiny_llama(tmp_path_factory.mktemp("hf") / "m", seed=3, init_std=0.2)
    return HFModel.load(d, name="tiny", batch_size=4)


PROMPTS = ["The quick brown fox", "Paris is", "12 plus 30 is the answer to everything we", "a"]


def test_implements_interface(tiny: HFModel) -> None:
    assert isinstance(tiny, Model)


def test_batched_greedy_equals_one_by_one(tiny: HFModel) -> None:
    params = SamplingParams(max_new_tokens=8)
    batched = [o[0].token_ids for o in tiny.generate(PROMPTS, params=params)]
    single = [tiny.generate([p], params=params)[0][0].token_ids for p in PROMPTS]
    assert batched == single
    assert all(len(t) > 0 for t in batched)


def test_greedy_equals_manual_argmax_loop(tiny: HFModel) -> None:
    out = tiny.generate(["Paris is"], params=SamplingParams(max_new_tokens=6))[0][0]
    ids = torch.tensor([tiny.encode("Paris is")])
    manual = []
    with torch.no_grad():
        for _ in range(len(out.token_ids)):
            nxt = int(tiny.module(ids).logits[0, -1].argmax())
            manual.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert list(out.token_ids) == manual


def test_sampling_is_seeded(tiny: HFModel) -> None:
    p = SamplingParams(max_new_tokens=10, temperature=1.0, seed=7, n=3)
    a = [o.token_ids for o in tiny.generate(["a"], params=p)[0]]
    b = [o.token_ids for o in tiny.generate(["a"], params=p)[0]]
    assert a == b and len(a) == 3
    assert len(set(a)) > 1  # three samples of a random model differ


def test_stream_equals_generate(tiny: HFModel) -> None:
    params = SamplingParams(max_new_tokens=10)
    for prompt in PROMPTS[:2]:
        full = tiny.generate([prompt], params=params)[0][0]
        chunks = list(tiny.stream(prompt, params=params))
        assert "".join(c.text for c in chunks) == full.text
        assert chunks[-1].finish_reason == full.finish_reason


def test_stop_string_cuts_text(tiny: HFModel) -> None:
    base = tiny.generate(["Paris is"], params=SamplingParams(max_new_tokens=12))[0][0].text
    assert len(base) > 3
    stop = base[2:4]
    out = tiny.generate(["Paris is"], params=SamplingParams(max_new_tokens=12, stop=(stop,)))[0][0]
    assert out.text == base[: base.find(stop)]
    assert out.finish_reason == "stop"


def test_next_token_logprobs_match_forward(tiny: HFModel) -> None:
    lp = tiny.next_token_logprobs(PROMPTS)
    assert lp.shape == (len(PROMPTS), tiny.vocab_size)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(len(PROMPTS)))
    for i, p in enumerate(PROMPTS):
        with torch.no_grad():
            ref = torch.log_softmax(tiny.module(torch.tensor([tiny.encode(p)])).logits[0, -1], -1)
        torch.testing.assert_close(lp[i], ref, rtol=1e-4, atol=1e-4)


def test_loglikelihood_matches_manual(tiny: HFModel) -> None:
    reqs = [("Paris is", " the capital"), ("a", " b c d"), ("The quick brown", " fox")]
    res = tiny.loglikelihood(reqs)
    for (ctx, cont), r in zip(reqs, res, strict=True):
        c, k = tiny.split_continuation(ctx, cont)
        ids = torch.tensor([c + k])
        with torch.no_grad():
            lp = torch.log_softmax(tiny.module(ids).logits[0], -1)
        manual = sum(float(lp[len(c) - 1 + j, t]) for j, t in enumerate(k))
        assert r.logprob == pytest.approx(manual, abs=1e-4)
        assert r.num_tokens == len(k)


def test_chat_prompt_uses_template(tiny: HFModel) -> None:
    text = tiny.render([{"role": "user", "content": "hi"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_too_long_prompt_is_a_clear_error(tiny: HFModel) -> None:
    with pytest.raises(TuttiError, match="longer than"):
        tiny.generate(["word " * 600], params=SamplingParams(max_new_tokens=4))


@pytest.mark.real_model
def test_real_smollm2_answers(smollm2: HFModel) -> None:
    q = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    out = smollm2.generate([q], params=SamplingParams(max_new_tokens=16))[0][0]
    assert "Paris" in out.text
    right, wrong = smollm2.loglikelihood([(q, " Paris"), (q, " Berlin")])
    assert right.logprob > wrong.logprob


@pytest.mark.real_model
def test_real_smollm2_batched_matches_single(smollm2: HFModel) -> None:
    qs = [[{"role": "user", "content": c}] for c in ("What is 2+2?", "Name a colour.")]
    params = SamplingParams(max_new_tokens=8)
    batched = [o[0].text for o in smollm2.generate(qs, params=params)]
    single = [smollm2.generate([q], params=params)[0][0].text for q in qs]
    assert batched == single


@pytest.mark.real_model
def test_gguf_and_safetensors_logits_identical(smollm2_dir: Path) -> None:
    """The converted cache gives exactly the GGUF-loaded model's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tutti.models.zoo import ZOO, package_dir

    entry = ZOO.get("smollm2-135m-instruct")
    pkg = package_dir(entry)
    assert pkg is not None
    gguf_model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=entry.file, dtype=torch.float32)
    st_model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = torch.tensor([tok.encode("Model merging combines checkpoints in weight space.")])
    with torch.no_grad():
        assert torch.equal(gguf_model(ids).logits, st_model(ids).logits)


def test_stop_string_not_matched_in_the_prompt(tiny: HFModel) -> None:
    """A stop string that spans the prompt/answer boundary must not stop generation."""
    base = tiny.generate(["Paris is"], params=SamplingParams(max_new_tokens=6))[0][0]
    first = tiny.tokenizer.decode([base.token_ids[0]])
    stop = "is" + first  # "is" ends the prompt; only prompt + first token would contain it
    assert stop not in base.text  # precondition: only the boundary could match
    assert len(base.token_ids) > 1
    out = tiny.generate(["Paris is"], params=SamplingParams(max_new_tokens=6, stop=(stop,)))[0][0]
    assert out.token_ids == base.token_ids
    assert out.finish_reason == base.finish_reason
