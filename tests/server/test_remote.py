"""A second ``tutti serve`` process on loopback as a remote model: same greedy output as the in-process model."""

from __future__ import annotations

import openai
import pytest
import torch

from tutti.errors import TuttiError
from tutti.models.interface import SamplingParams
from tutti.models.remote import RemoteModel

from .conftest import REMOTE_KEY, free_port

CHAT = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize("prompt", [CHAT, "The cat"])
def test_remote_generate_equals_in_process(remote, tiny, prompt) -> None:
    params = SamplingParams(max_new_tokens=12, logprobs=True, top_logprobs=2)
    got, ref = remote.generate([prompt, prompt], params=params), tiny.generate([prompt, prompt], params=params)
    assert [o[0].text for o in got] == [o[0].text for o in ref]
    assert [o[0].finish_reason for o in got] == [o[0].finish_reason for o in ref]
    assert got[0][0].prompt_tokens == ref[0][0].prompt_tokens
    assert [t.logprob for t in got[0][0].logprobs] == pytest.approx([t.logprob for t in ref[0][0].logprobs], abs=1e-5)


def test_remote_seeded_sampling_n(remote, tiny) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=0.8, seed=3, n=2)
    got = remote.generate(["The cat"], params=params)[0]
    assert [o.text for o in got] == [o.text for o in tiny.generate(["The cat"], params=params)[0]]


def test_remote_stream_equals_generate(remote, tiny) -> None:
    params = SamplingParams(max_new_tokens=16)
    chunks = list(remote.stream(CHAT, params=params))
    assert "".join(c.text for c in chunks) == tiny.generate([CHAT], params=params)[0][0].text
    assert chunks[-1].finish_reason in ("stop", "length")


def test_remote_next_token_logprobs_are_the_exact_top_k(remote, tiny) -> None:
    prompts = [CHAT, "The cat"]
    got, ref = remote.next_token_logprobs(prompts), tiny.next_token_logprobs(prompts)
    assert got.shape == (2, len(tiny.tokenizer))
    for row in range(2):
        vals, ids = ref[row].topk(5)
        finite = torch.isfinite(got[row])
        assert sorted(finite.nonzero().squeeze(-1).tolist()) == sorted(ids.tolist())
        assert torch.allclose(got[row, ids], vals, atol=1e-5)


def test_remote_errors_are_one_line(remote_url, varied_model_dir) -> None:
    with pytest.raises(TuttiError, match="answered 401"):
        RemoteModel(remote_url, "tiny", api_key="wrong").generate(["x"], params=SamplingParams(max_new_tokens=1))
    with pytest.raises(TuttiError, match=r"answered 404.*did you mean"):
        RemoteModel(remote_url, "tinyy", api_key=REMOTE_KEY).generate(["x"], params=SamplingParams(max_new_tokens=1))
    with pytest.raises(TuttiError, match="ConnectError"):
        RemoteModel(f"http://127.0.0.1:{free_port()}/v1", "tiny").generate(["x"], params=SamplingParams())
    with pytest.raises(TuttiError, match="cannot score"):
        RemoteModel(remote_url, "tiny").loglikelihood([("a", "b")])
    with pytest.raises(TuttiError, match="needs a local tokenizer"):
        RemoteModel(remote_url, "tiny", api_key=REMOTE_KEY).next_token_logprobs(["x"])


def test_served_remote_entry_chains_two_servers(remote_url, tiny, monkeypatch) -> None:
    """Client -> in-process server (config entry ``remote:``) -> the other process: same greedy text."""
    from tutti.config.serve import parse_serve_config
    from tutti.server import BackgroundServer, build_server

    monkeypatch.setenv("REMOTE_KEY_FOR_TEST", REMOTE_KEY)
    cfg = parse_serve_config({"models": [{"id": "far", "remote": {
        "base_url": remote_url, "model": "tiny", "api_key_env": "REMOTE_KEY_FOR_TEST"}}]})
    with BackgroundServer(build_server(cfg)) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0)
        r = c.chat.completions.create(model="far", messages=CHAT, max_tokens=10, temperature=0)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            model="far", messages=CHAT, max_tokens=10, temperature=0, stream=True))
    ref = tiny.generate([CHAT], params=SamplingParams(max_new_tokens=10))[0][0].text
    assert r.choices[0].message.content == streamed == ref
