"""Composites behind the server: a token-level ensemble, strategy overrides in ``extra_body``, and a composite
whose member is another ``tutti serve`` process (remote member) giving the in-process member's greedy output."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tutti.models.interface import SamplingParams

CHAT = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def ensemble_server(varied_model_dir: Path, tiny_model_dir: Path):
    """``duo``: a token-level ensemble of two tiny models from a serve config; ``solo``: a plain model."""
    from tutti.config.serve import parse_serve_config
    from tutti.server import BackgroundServer, build_server

    cfg = parse_serve_config({"models": [
        {"id": "duo", "composite": {"strategy": "ensemble", "members": [str(varied_model_dir), str(tiny_model_dir)],
                                    "combine": {"method": "mean", "weights": [0.5, 0.5]}}},
        {"id": "solo", "model": str(varied_model_dir)},
    ]})
    with BackgroundServer(build_server(cfg)) as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(ensemble_server):
    return openai.OpenAI(base_url=ensemble_server.url, api_key="-", max_retries=0, timeout=120)


def test_ensemble_stream_equals_non_stream_equals_direct(ensemble_server, oai) -> None:
    kw = {"model": "duo", "messages": CHAT, "max_tokens": 12, "temperature": 0}
    full = oai.chat.completions.create(**kw).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(**kw, stream=True))
    direct = ensemble_server.server.models["duo"].generate([CHAT], params=SamplingParams(max_new_tokens=12))
    assert full == streamed == direct[0][0].text
    assert [m.id for m in oai.models.list().data] == ["duo", "solo"]


def test_strategy_override_in_extra_body(oai, repeater) -> None:
    """Weights (0, 1) make the mean ensemble exactly its second member."""
    kw = {"model": "duo", "messages": CHAT, "max_tokens": 12, "temperature": 0}
    second_only = oai.chat.completions.create(**kw, extra_body={"collab": {"combine": {"weights": [0.0, 1.0]}}})
    ref = repeater.generate([CHAT], params=SamplingParams(max_new_tokens=12))[0][0].text
    assert second_only.choices[0].message.content == ref
    both = oai.chat.completions.create(**kw).choices[0].message.content
    assert both != ref  # without the override the first member weighs in


@pytest.mark.parametrize(("model", "collab", "match"), [
    ("solo", {"combine": {"weights": [1.0, 0.0]}}, "not a composite"),
    ("duo", {"combine": {"weights": [1.0]}}, "weights"),
    ("duo", {"members": ["x"]}, "members"),
    ("duo", {"no_such_key": 1}, "no_such_key"),
])
def test_bad_overrides_are_400(oai, model, collab, match) -> None:
    with pytest.raises(openai.BadRequestError, match=match):
        oai.chat.completions.create(model=model, messages=CHAT, max_tokens=2, extra_body={"collab": collab})


@pytest.mark.parametrize("strategy", ["fusion", "vote"])
def test_remote_member_gives_the_in_process_members_output(strategy, remote, tiny, repeater, make_server) -> None:
    pytest.importorskip("tutti.aggregate.strategies")
    from tutti.collab import load

    spec = {"strategy": strategy, "members": ["tiny", "repeater"]}
    local = load(spec, members=[tiny, repeater])
    with_remote = load(spec, members=[remote, repeater])
    params = SamplingParams(max_new_tokens=10)
    expected = local.generate([CHAT], params=params)[0][0].text
    assert with_remote.generate([CHAT], params=params)[0][0].text == expected
    with make_server({"mixed": with_remote}) as srv:  # and served: client -> composite -> remote process
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=120)
        got = c.chat.completions.create(model="mixed", messages=CHAT, max_tokens=10, temperature=0)
    assert got.choices[0].message.content == expected


def test_strategy_in_the_model_name(tiny, repeater, make_server) -> None:
    """``ensemble:tiny+rep`` builds a composite of served models on first use (optillm / RouteLLM style)."""
    from tutti.collab import load

    ref = load({"strategy": "ensemble", "members": ["tiny", "rep"]}, members=[tiny, repeater])
    expected = ref.generate([CHAT], params=SamplingParams(max_new_tokens=8))[0][0].text
    with make_server({"tiny": tiny, "rep": repeater}) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=120)
        got = c.chat.completions.create(model="ensemble:tiny+rep", messages=CHAT, max_tokens=8, temperature=0)
        assert got.choices[0].message.content == expected
        assert got.model == "ensemble:tiny+rep"
        with pytest.raises(openai.BadRequestError, match="ensemble"):
            c.chat.completions.create(model="ensembel:tiny+rep", messages=CHAT, max_tokens=2)
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="ensemble:tiny+nope", messages=CHAT, max_tokens=2)


def test_remote_member_from_a_composite_dict(remote_url, tiny, repeater, varied_model_dir, tiny_model_dir,
                                             monkeypatch) -> None:
    """A ``{remote: {...}}`` member in a composite config gives the in-process member's greedy output."""
    from tutti.collab import load
    from tutti.errors import ConfigError

    from .conftest import REMOTE_KEY

    monkeypatch.setenv("TUTTI_TEST_REMOTE_KEY", REMOTE_KEY)
    remote_member = {"remote": {"base_url": remote_url, "model": "tiny", "api_key_env": "TUTTI_TEST_REMOTE_KEY",
                                "tokenizer": str(varied_model_dir)}}
    params = SamplingParams(max_new_tokens=10)
    expected = load({"strategy": "vote", "members": ["tiny", "rep"]}, members=[tiny, repeater])
    composite = load({"strategy": "vote", "members": [remote_member, str(tiny_model_dir)]})
    assert composite.generate([CHAT], params=params)[0][0].text == expected.generate([CHAT], params=params)[0][0].text
    with pytest.raises(ConfigError, match="base_url"):
        load({"strategy": "vote", "members": [{"remote": {"model": "tiny"}}, str(tiny_model_dir)]})
