"""The OpenAI-compatible API on a real uvicorn server with a real tiny HF model, through the official client."""

from __future__ import annotations

import httpx
import openai
import pytest

from tutti.models.interface import SamplingParams

from .conftest import KEY

CHAT = [{"role": "user", "content": "hello there"}]


def test_models_list_and_get(client) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "tutti"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_equals_the_model_and_counts_usage(client, tiny) -> None:
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0)
    ref = tiny.generate([CHAT], params=SamplingParams(max_new_tokens=12))[0][0]
    assert r.choices[0].message.content == ref.text
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == ref.finish_reason
    assert r.usage.prompt_tokens == len(tiny.encode(CHAT)) == ref.prompt_tokens
    assert r.usage.completion_tokens == len(ref.token_ids) == 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_stream_equals_non_stream_greedy(client) -> None:
    kw = {"model": "tiny", "messages": CHAT, "max_tokens": 20, "temperature": 0}
    full = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # really streamed
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert chunks[-1].choices == []


def test_sse_wire_format_ends_with_done(tiny_server) -> None:
    body = {"model": "tiny", "prompt": "abc", "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", tiny_server.url + "/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [x for x in r.iter_lines() if x]
    assert all(x.startswith("data: ") for x in lines)
    assert lines[-1] == "data: [DONE]"


def test_completions_logprobs_match_the_model(client, tiny) -> None:
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=6, temperature=0, logprobs=3)
    ref = tiny.generate(["abc"], params=SamplingParams(max_new_tokens=6, logprobs=True, top_logprobs=3))[0][0]
    lp = r.choices[0].logprobs
    assert r.choices[0].text == ref.text
    assert lp.token_logprobs == pytest.approx([t.logprob for t in ref.logprobs], abs=1e-5)
    # legacy shape: a {token: logprob} dict per position (tokens decoding to the same text share a key)
    assert lp.top_logprobs == [pytest.approx(dict(reversed(t.top)), abs=1e-5) for t in ref.logprobs]
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs)
    assert lp.tokens == [t.token for t in ref.logprobs]
    assert lp.token_logprobs[0] == pytest.approx(max(lp.top_logprobs[0].values()), abs=1e-6)  # greedy = top-1


def test_chat_top_logprobs_shape(client) -> None:
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=3, temperature=0, logprobs=True,
                                       top_logprobs=4)
    content = r.choices[0].logprobs.content
    assert len(content) == 3 and all(len(c.top_logprobs) == 4 for c in content)
    assert all(c.logprob <= 0 for c in content)


def test_seeded_sampling_repeats_and_n(client) -> None:
    kw = {"model": "tiny", "prompt": "abc", "max_tokens": 8, "temperature": 1.0, "seed": 7, "n": 3}
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert a.usage.completion_tokens == 24


def test_stop_string_cuts_text(client, tiny) -> None:
    full = client.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0).choices[0].text
    stop = full[5:7]
    assert stop and stop not in full[:5] + "hello"[-2:]
    r = client.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.find(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_echo_prepends_prompt(client) -> None:
    r = client.completions.create(model="tiny", prompt="abc", max_tokens=3, temperature=0, echo=True)
    assert r.choices[0].text.startswith("abc")


# ------------------------------------------------------------------------------------------------ errors
def test_unknown_model_404_openai_shape(tiny_server) -> None:
    r = httpx.post(tiny_server.url + "/chat/completions", json={"model": "tiny2", "messages": CHAT},
                   headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["type"] == "invalid_request_error"
    assert "did you mean 'tiny'" in err["message"]


@pytest.mark.parametrize("bad", [{"temperature": 3}, {"top_p": 0}, {"max_tokens": -1}, {"n": 99},
                                 {"stop": ["a", "b", "c", "d", "e"]}, {"messages": []},
                                 {"messages": [{"role": "wizard", "content": "x"}]}])
def test_invalid_parameters_400(client, bad) -> None:
    kw = {"model": "tiny", "messages": CHAT, **bad}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**kw)
    assert e.value.status_code == 400
    assert e.value.body["type"] == "invalid_request_error"


def test_stream_with_n_above_1_is_400(client) -> None:
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.chat.completions.create(model="tiny", messages=CHAT, n=2, stream=True)


def test_prompt_longer_than_context_400(client, tiny) -> None:
    long = "a b c " * 400  # > 512 tokens of the tiny model's context
    assert len(tiny.encode(long)) > tiny.max_length
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=long, max_tokens=4)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="maximum context length is 512"):
        client.completions.create(model="tiny", prompt="abc", max_tokens=600)
    with pytest.raises(openai.BadRequestError, match="context"):  # before any byte of the stream
        client.completions.create(model="tiny", prompt=long, max_tokens=4, stream=True)


def test_default_max_tokens_is_clamped_to_the_context(client, tiny) -> None:
    words = [f"w{i} " for i in range(600)]
    lo, hi = 0, 600  # largest prefix shorter than the context minus 4 (binary search)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(tiny.encode("".join(words[:mid]))) < tiny.max_length - 4 else (lo, mid)
    n = lo
    prompt = "".join(words[:n])  # leaves fewer than default_max_tokens=16 positions
    left = tiny.max_length - len(tiny.encode(prompt))
    assert 0 < left < 16
    r = client.completions.create(model="tiny", prompt=prompt, temperature=0)
    assert r.usage.completion_tokens <= left


def test_api_key_401(tiny_server) -> None:
    for key in ("wrong", ""):
        c = openai.OpenAI(base_url=tiny_server.url, api_key=key or "x", max_retries=0,
                          default_headers={} if key else {"Authorization": ""})
        with pytest.raises(openai.AuthenticationError) as e:
            c.models.list()
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    assert httpx.get(tiny_server.url + "/models").status_code == 401
    assert httpx.get(tiny_server.url.removesuffix("/v1") + "/health").status_code == 200  # health stays open


def test_health_and_metrics(client, tiny_server) -> None:
    client.completions.create(model="tiny", prompt="abc", max_tokens=4, temperature=0)
    root = tiny_server.url.removesuffix("/v1")
    assert httpx.get(root + "/health").json()["models"] == {"tiny": {"queue_depth": 0}}
    text = httpx.get(root + "/metrics").text
    for name in ("tutti_requests_total", "tutti_completion_tokens_total", "tutti_request_latency_seconds_bucket",
                 "tutti_queue_depth", "tutti_batch_size_bucket", "tutti_time_to_first_token_seconds"):
        assert name in text
    assert 'tutti_queue_depth{model="tiny"} 0' in text
    assert 'tutti_requests_total{endpoint="/v1/completions",status="200"}' in text
