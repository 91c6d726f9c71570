"""Fixtures for the server tests: real uvicorn servers on 127.0.0.1 and the official ``openai`` client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY = "test-key"
REMOTE_KEY = "remote-key"


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


@pytest.fixture(scope="session")
def gated():
    """The :class:`Gated` wrapper class."""
    return Gated


@pytest.fixture(scope="session")
def make_server():
    """Build a (not yet started) :class:`BackgroundServer` over in-process models; use it in ``with``."""
    from tutti.server import BackgroundServer, Server

    return lambda models, **kw: BackgroundServer(Server(models, **kw))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def remote_url(varied_model_dir: Path):
    """``tutti serve DIR --id tiny`` in its own process (the real CLI), stopped after the module."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUTTI_API_KEY": REMOTE_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tutti.cli.main", "serve", str(varied_model_dir), "--id", "tiny", "--port", str(port),
         "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tutti serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tutti serve did not start in 180 s")
            time.sleep(0.25)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def remote(remote_url, varied_model_dir):
    """A :class:`RemoteModel` of the other process's ``tiny`` (tokenizer given, top-5 log-probs)."""
    from tutti.models.remote import RemoteModel

    m = RemoteModel(remote_url, "tiny", api_key=REMOTE_KEY, tokenizer=str(varied_model_dir), top_logprobs=5)
    yield m
    m.close()
