"""Fixtures of the merge tests: a tiny base LLaMA and three fine-tune-like copies (base + small noise).

Realistic task vectors are small differences from one base, not differences between unrelated random inits, so
TIES/DARE/Breadcrumbs see the kind of deltas they were designed for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def _perturbed_copy(src: Path, dst: Path, *, seed: int, scale: float) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    sd = load_file(str(src / "model.safetensors"))
    g = torch.Generator().manual_seed(seed)
    out = {k: v + scale * v.abs().mean() * torch.randn(v.shape, generator=g) for k, v in sd.items()}
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="session")
def merge_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``M0`` (a 4-layer tiny LLaMA, hidden 32) and ``M1``..``M3`` (M0 plus 25 % relative noise, seeds 1-3)."""
    from tutti.testing import make_tiny_llama

    root = tmp_path_factory.mktemp("merge_models")
    base = make_tiny_llama(root / "M0", seed=0, hidden=32, layers=4)
    models = {"M0": base}
    for i in (1, 2, 3):
        models[f"M{i}"] = _perturbed_copy(base, root / f"M{i}", seed=i, scale=0.25)
    return models


@pytest.fixture(scope="session")
def other_vocab_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA of the same shape as ``M0`` except its vocabulary (400 tokens instead of 384)."""
    from tutti.testing import make_tiny_llama, tiny_tokenizer

    return make_tiny_llama(tmp_path_factory.mktemp("vocab400") / "V", seed=5, hidden=32, layers=4,
                           tokenizer=tiny_tokenizer(400))


@pytest.fixture(scope="session")
def with_models(merge_models: dict[str, Path]):
    """A function that puts the real paths of ``M0``..``M3`` into a config dict."""
    return lambda config: substitute(config, merge_models)


def substitute(node: object, models: dict[str, Path]) -> object:
    """Replace the model placeholders ``M0``..``M3`` (also inside ``M1+LORA``-style refs) by real paths."""
    if isinstance(node, dict):
        return {k: substitute(v, models) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, models) for v in node]
    if isinstance(node, str) and node.split("+")[0] in models:
        head, *rest = node.split("+")
        return "+".join([str(models[head]), *[str(models.get(r, r)) for r in rest]])
    return node
