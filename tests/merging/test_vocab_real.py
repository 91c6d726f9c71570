"""Tokenizer merging with the real SmolLM2 tokenizer (49 152 tokens) and the real SmolLM2-135M weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_conformance import run_mergekit
from test_vocab_conformance import _variant, assert_same_vocab_merge

pytestmark = pytest.mark.real_model


@pytest.mark.slow  # mergekit's per-token Python loops take ~20 s on 49k tokens; tutti ~8 s
def test_real_tokenizer_union_matches_mergekit(smollm_tokenizer_model_dir: Path, tmp_path: Path) -> None:
    """A tiny LLaMA with SmolLM2's tokenizer merged with a copy that adds two tokens, against mergekit."""
    from transformers import AutoTokenizer

    import tutti

    tok = AutoTokenizer.from_pretrained(smollm_tokenizer_model_dir)
    tok.add_tokens(["<tool>", "<think>"])
    other = _variant(smollm_tokenizer_model_dir, tmp_path / "other", tok, seed=1)
    base = str(smollm_tokenizer_model_dir)
    config = {"merge_method": "linear", "base_model": base, "dtype": "float32",
              "models": [{"model": base, "parameters": {"weight": 0.6}}, {"model": str(other), "parameters": {"weight": 0.4}}],
              "tokenizer": {"source": "union", "pad_to_multiple_of": 64,
                            "tokens": {"<|im_end|>": {"source": str(other), "force": True}}}}
    ours = tutti.merge(config, tmp_path / "tutti")
    assert_same_vocab_merge(ours, run_mergekit(config, tmp_path / "mergekit"))
    assert json.loads((ours / "config.json").read_text())["vocab_size"] == 49216  # 49 154 rounded up to 64


def test_real_model_with_a_new_token(smollm2_dir: Path, tmp_path: Path) -> None:
    """SmolLM2-135M (first 2 layers) with a new <tool> token copied from <|im_start|>: rows exact, model loads."""
    import torch
    from transformers import AutoTokenizer

    import tutti
    from tutti.models.checkpoint import Checkpoint

    m = str(smollm2_dir)
    config = {"merge_method": "linear", "slices": [{"sources": [{"model": m, "layer_range": [0, 2],
                                                                 "parameters": {"weight": 1.0}}]}],
              "tokenizer": {"source": "base", "pad_to_multiple_of": 64, "tokens": {
                  "<tool>": {"source": {"kind": "model_token", "model": m, "token": "<|im_start|>"}}}}}
    out = tutti.merge(config, tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 49153 and tok.convert_ids_to_tokens(tok("a <tool>")["input_ids"])[-1] == "<tool>"
    new, old = Checkpoint(out).get("model.embed_tokens.weight"), Checkpoint(smollm2_dir).get("model.embed_tokens.weight")
    assert new.shape == (49216, old.shape[1]) and torch.equal(new[:49152], old)
    assert torch.equal(new[49152], old[1])  # <|im_start|> is id 1
    assert torch.allclose(new[49153:].float(), new[:49153].float().mean(0).expand(63, -1), atol=1e-2)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 49216
