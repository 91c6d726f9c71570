"""The real SmolLM2-135M-Instruct behind the server, through the official ``openai`` client."""

from __future__ import annotations

import openai
import pytest

from tutti.models.interface import SamplingParams

pytestmark = pytest.mark.real_model

CHAT = [{"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def smol_client(smollm2, make_server):
    with make_server({"smol": smollm2}, api_key="k") as srv:
        yield openai.OpenAI(base_url=srv.url, api_key="k", max_retries=0, timeout=120)


def test_real_chat_stream_equals_non_stream_equals_model(smol_client, smollm2) -> None:
    kw = {"model": "smol", "messages": CHAT, "max_tokens": 20, "temperature": 0}
    full = smol_client.chat.completions.create(**kw)
    chunks = list(smol_client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ref = smollm2.generate([CHAT], params=SamplingParams(max_new_tokens=20))[0][0]
    assert full.choices[0].message.content == streamed == ref.text
    assert "Paris" in ref.text
    assert full.usage.prompt_tokens == ref.prompt_tokens == chunks[-1].usage.prompt_tokens
    assert full.usage.completion_tokens == len(ref.token_ids)
    assert full.choices[0].finish_reason == ref.finish_reason


def test_real_completion_logprobs(smol_client, smollm2) -> None:
    r = smol_client.completions.create(model="smol", prompt="The capital of France is", max_tokens=3,
                                       temperature=0, logprobs=3)
    ref = smollm2.generate(["The capital of France is"],
                           params=SamplingParams(max_new_tokens=3, logprobs=True, top_logprobs=3))[0][0]
    assert r.choices[0].text == ref.text
    assert r.choices[0].logprobs.token_logprobs == pytest.approx([t.logprob for t in ref.logprobs], abs=1e-4)


def test_real_prompt_longer_than_context(smol_client, smollm2) -> None:
    long = "word " * (smollm2.max_length + 10)
    with pytest.raises(openai.BadRequestError) as e:
        smol_client.completions.create(model="smol", prompt=long, max_tokens=1)
    assert e.value.code == "context_length_exceeded"
    assert f"maximum context length is {smollm2.max_length}" in e.value.message
