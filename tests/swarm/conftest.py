"""Swarm fixtures: a tiny base, LoRA experts trained in-test on halves of a synthetic task, and the task."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

LETTERS = "qwertyuiop"  # digit d -> LETTERS[d]


def make_task(root: Path, *, seed: int = 0, sizes: tuple[int, int, int] = (60, 30, 30)) -> Path:
    """A digit -> letter mapping task; splits differ in their random prefixes, not in the rule."""
    from tutti.evaluation.datasets import Example, write_split

    rng = random.Random(seed)
    for split, n in zip(("train", "dev", "test"), sizes, strict=True):
        ex = []
        for i in range(n):
            d = i % 10
            noise = "".join(rng.choice("abcdfghjklmnsvxz") for _ in range(3))
            ex.append(Example(f"{split}-{i}", f"{noise} {d} =", LETTERS[d],
                              tuple(LETTERS[(d + k) % 10] for k in range(4))))
        write_split(root / f"{split}.jsonl", ex)
    return root


def train_lora(base: Path, task: Path, digits: set[int], out: Path, *, steps: int, seed: int) -> Path:
    """A rank-4 LoRA on ``lm_head`` trained (Adam on cached final hidden states) for the given digits.

    Every expert shares the same ``A`` (PEFT's seeded init), so only ``B`` differs: combining factors is then
    linear in ``B`` and experts for different digits add up. Cheap: one forward pass of the frozen base.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tutti.evaluation.datasets import load_split

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    exs = [e for e in load_split(task, "train") if int(e.input.split()[1]) in digits]
    with torch.no_grad():
        h = []
        for e in exs:
            ids = torch.tensor([tok(e.input)["input_ids"]])
            h.append(model.model(input_ids=ids).last_hidden_state[0, -1])
        h = torch.stack(h)  # (n, hidden): the state that predicts the answer token
    y = torch.tensor([tok(e.target, add_special_tokens=False)["input_ids"][0] for e in exs])
    torch.manual_seed(0)  # the same A for every expert
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head"]))
    lm = peft_model.base_model.model.lm_head
    a, b = lm.lora_A["default"].weight, lm.lora_B["default"].weight
    scale = lm.scaling["default"]
    w = lm.base_layer.weight.detach()
    torch.manual_seed(seed)
    opt = torch.optim.Adam([b], lr=0.05)
    for _ in range(steps):
        logits = h @ w.T + scale * (h @ a.detach().T) @ b.T
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    peft_model.save_pretrained(out, save_embedding_layers=False)
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (and much faster than two threads on a shared, busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def swarm_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Base model, digit task, and three LoRA experts (digits 0-4, 5-9, and a weak one on all)."""
    from tutti.testing import make_tiny_llama

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("swarm")
    base = make_tiny_llama(root / "base", seed=0, tie_word_embeddings=False)
    task = make_task(root / "task")
    experts = [
        train_lora(base, task, {0, 1, 2, 3, 4}, root / "e_low", steps=60, seed=1),
        train_lora(base, task, {5, 6, 7, 8, 9}, root / "e_high", steps=60, seed=2),
        train_lora(base, task, set(range(10)), root / "e_all", steps=4, seed=3),
    ]
    torch.set_num_threads(n)
    return {"base": base, "task": task, "experts": experts, "root": root}
