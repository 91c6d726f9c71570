"""Train one LoRA expert on one zoo task: a short supervised schedule on CPU, loss on the answer tokens only.

Steps: render each question through the base model's chat template, append the target and the end-of-turn
token, mask the prompt out of the labels, and run AdamW with linear warm-up and linear decay on a PEFT LoRA
(rank 8 on the attention projections by default). The adapter is saved in fp16 with a portable config.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from tutti.errors import TuttiError


class ExpertTrainConfig(BaseModel):
    """Hyperparameters of an expert's training run (the committed experts use these defaults).

    Args:
        r: LoRA rank.
        alpha: LoRA alpha (scale = alpha / r).
        target_modules: linear layers that get an adapter.
        steps: optimiser steps.
        batch_size: examples per step.
        lr: peak learning rate.
        warmup: linear warm-up steps.
        seed: seed of the LoRA initialisation and the batch order.
        max_length: longest training sequence in tokens (longer ones are cut from the left of the prompt).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    steps: int = 20
    batch_size: int = 4
    lr: float = 2e-3
    warmup: int = 3
    seed: int = 0
    max_length: int = 128


def encode_example(tokenizer: Any, row: dict[str, Any], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt) of one chat-formatted question and its answer."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": row["input"]}], tokenize=False,
                                           add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    eot = tokenizer.eos_token or ""
    a_ids = tokenizer(row["target"] + eot, add_special_tokens=False)["input_ids"]
    ids = (p_ids + a_ids)[-max_length:]
    labels = ([-100] * len(p_ids) + a_ids)[-max_length:]
    return ids, labels


def _batch(items: Sequence[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    width = max(len(i) for i, _ in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for r, (i, lab) in enumerate(items):  # right padding: positions start at 0 for every row
        ids[r, : len(i)] = torch.tensor(i)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens; the LM head runs on answer positions only (CPU-cheap)."""
    inner = model.get_base_model()
    hidden = inner.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]  # (batch, seq - 1): position t predicts token t + 1
    keep = target != -100
    logits = inner.lm_head(hidden[:, :-1][keep])  # (answer tokens, vocab)
    return torch.nn.functional.cross_entropy(logits.float(), target[keep])


def _lr_at(step: int, cfg: ExpertTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - cfg.warmup))


def train_expert(
    base_dir: str | Path,
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    cfg: ExpertTrainConfig | None = None,
    base_name: str = "smollm2-135m-instruct",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a LoRA expert on ``rows`` and save it as a PEFT folder in fp16.

    Args:
        base_dir: the base model's HF folder (resolved already).
        rows: training rows ``{"input", "target", ...}``.
        out_dir: destination PEFT folder (overwritten).
        cfg: hyperparameters (defaults: :class:`ExpertTrainConfig`).
        base_name: what ``base_model_name_or_path`` records in the adapter config (a zoo name, portable).
        log: called with a progress line every 10 steps.

    Returns:
        A summary: steps, final mean loss of the last 10 steps, seconds, trainable parameters.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = cfg or ExpertTrainConfig()
    if not rows:
        raise TuttiError("no training rows: the task has no train split (mixed-skill tasks have no expert)")
    torch.manual_seed(cfg.seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0, target_modules=list(cfg.target_modules),
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    encoded = [encode_example(tok, r, cfg.max_length) for r in rows]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    order: list[int] = []
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:  # reshuffle once the epoch runs out
            order += rng.sample(range(len(encoded)), len(encoded))
        idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        loss = answer_loss(model, _batch([encoded[i] for i in idx], pad))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log and (step + 1) % 10 == 0:
            log(f"step {step + 1}/{cfg.steps} loss {sum(losses[-10:]) / len(losses[-10:]):.4f} "
                f"({time.perf_counter() - t0:.0f}s)")
    if not all(math.isfinite(x) for x in losses):
        raise TuttiError(f"training diverged (loss {losses[-1]}); lower the learning rate")
    _save_fp16(model, Path(out_dir), base_name)
    return {"steps": cfg.steps, "final_loss": sum(losses[-10:]) / len(losses[-10:]),
            "seconds": round(time.perf_counter() - t0, 1), "trainable_params": sum(p.numel() for p in params)}


def _save_fp16(model: Any, out_dir: Path, base_name: str) -> None:
    from peft import get_peft_model_state_dict

    from tutti.models.lora import LoraAdapter, save_lora

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in get_peft_model_state_dict(model).items()}
    config = json.loads(json.dumps(model.peft_config["default"].to_dict(), default=list))
    config["base_model_name_or_path"] = base_name
    if isinstance(config.get("target_modules"), list):  # peft keeps a set: fix the order for stable bytes
        config["target_modules"] = sorted(config["target_modules"])
    config["inference_mode"] = True
    save_lora(LoraAdapter(config, state), out_dir)
