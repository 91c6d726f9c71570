"""Fixtures for the server tests: real uvicorn servers on 127.0.0.1 and the official ``openai`` client."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

KEY = "test-key"


class Gated:
    """Wraps a real model; every call waits until ``gate`` is set (to hold a worker busy deterministically)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def generate(self, prompts: Sequence[Any], *, params: Any) -> Any:
        self.entered.set()
        self.gate.wait(30)
        return self.inner.generate(prompts, params=params)

    def stream(self, prompt: Any, *, params: Any) -> Iterator[Any]:
        self.entered.set()
        self.gate.wait(30)
        yield from self.inner.stream(prompt, params=params)


@pytest.fixture(scope="session")
def varied_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaMA with large init (std 0.5), so greedy text varies instead of repeating one byte."""
    from tutti.testing import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("varied") / "model", seed=0, init_std=0.5)


@pytest.fixture(scope="session")
def tiny(varied_model_dir: Path):
    """The varied tiny LLaMA loaded once (served as ``tiny``)."""
    from tutti.models.hf import HFModel

    return HFModel.load(varied_model_dir, name="tiny")


@pytest.fixture(scope="session")
def repeater(tiny_model_dir: Path):
    """The shared seed-0 tiny LLaMA (std 0.02): greedy decoding repeats the last byte and never emits EOS."""
    from tutti.models.hf import HFModel

    return HFModel.load(tiny_model_dir, name="tiny")


@pytest.fixture(scope="module")
def tiny_server(tiny):
    """A real server with the tiny model under id ``tiny`` and API key ``test-key``."""
    from tutti.server import BackgroundServer, Server

    with BackgroundServer(Server({"tiny": tiny}, api_key=KEY, default_max_tokens=16)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(tiny_server):
    """The official OpenAI client pointed at ``tiny_server``."""
    import openai

    return openai.OpenAI(base_url=tiny_server.url, api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture
def gated():
    """The :class:`Gated` wrapper class."""
    return Gated


@pytest.fixture
def make_server():
    """Build a (not yet started) :class:`BackgroundServer` over in-process models; use it in ``with``."""
    from tutti.server import BackgroundServer, Server

    return lambda models, **kw: BackgroundServer(Server(models, **kw))
