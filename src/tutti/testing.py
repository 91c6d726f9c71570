"""Tiny real models built in code, for tests, examples and benchmarks.

They are real HF folders (``config.json`` + safetensors + a real tokenizer) with random weights, so every code
path that loads, merges, decodes or serves a model runs on them in seconds.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. What is 12 plus 30? The answer is 42. "
    "Paris is the capital of France; Rome is the capital of Italy. Convert 3 km to m: 3000 m. "
    "def add(a, b): return a + b  # code! café naïve 東京 😀 "
)


@cache
def _byte_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 384) -> Any:
    """A real byte-level BPE tokenizer (trained deterministically on a fixed text) with a ChatML template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_byte_tokenizer_json(vocab_size)),
        bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
    )
    tok.chat_template = CHATML
    return tok


def tiny_llama_config(vocab_size: int = 384, *, hidden: int = 64, layers: int = 2, **overrides: Any) -> Any:
    """A LLaMA config: 2 layers, hidden 64, 4 heads / 2 KV heads, tied embeddings by default."""
    from transformers import LlamaConfig

    kw: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, rms_norm_eps=1e-5,
    )
    kw.update(overrides)
    return LlamaConfig(**kw)


def make_tiny_llama(
    out_dir: str | Path,
    *,
    seed: int = 0,
    tokenizer: Any | None = None,
    hidden: int = 64,
    layers: int = 2,
    max_shard_size: str | int | None = None,
    init_std: float = 0.02,
    **config_overrides: Any,
) -> Path:
    """Build a random LLaMA model and save it as an HF folder.

    Args:
        out_dir: destination folder.
        seed: seed of the random weights.
        tokenizer: tokenizer to save alongside (default: :func:`tiny_tokenizer`); its size sets the vocab.
        hidden: hidden size.
        layers: number of decoder layers.
        max_shard_size: pass e.g. ``"100KB"`` for a sharded folder.
        init_std: std of the normal init (larger gives peakier, more varied outputs).
        config_overrides: any other LlamaConfig field.
    """
    from transformers import LlamaForCausalLM

    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    cfg = tiny_llama_config(len(tok), hidden=hidden, layers=layers, initializer_range=init_std,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.pad_token_id, **config_overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    out = Path(out_dir)
    kw: dict[str, Any] = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out, **kw)
    tok.save_pretrained(out)
    return out
