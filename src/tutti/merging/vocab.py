"""Tokenizer options of a merge config: ``tokenizer_source`` / ``tokenizer`` and ``chat_template``.

Supported now: every source (``base``, ``union`` or a model) when all referenced models share one vocabulary (the
common case of fine-tunes of one base): the vocab-sized tensors are merged row for row and the chosen tokenizer is
written. Vocabularies that differ need embedding permutation, which is not implemented yet and is refused with a
clear error (never silently truncated).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tutti.config.merge import MergeConfig, ModelRef
from tutti.errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
BUILTIN_TEMPLATES = {"chatml": CHATML}


def _source(config: MergeConfig) -> str | ModelRef:
    if config.tokenizer is not None:
        return config.tokenizer.source
    return config.tokenizer_source  # type: ignore[return-value]


def _vocab(folder: Path) -> Any:
    f = folder / "tokenizer.json"
    if f.is_file():
        data = json.loads(f.read_text())
        return (json.dumps(data.get("model", {}).get("vocab"), sort_keys=True),
                json.dumps([t.get("content") for t in data.get("added_tokens", [])]))
    return None


def check_tokenizer_config(config: MergeConfig) -> None:
    """Refuse tokenizer options this version cannot honour exactly (before any output is written)."""
    if config.tokenizer is not None and (config.tokenizer.tokens or config.tokenizer.pad_to_multiple_of):
        raise ConfigError("tokenizer.tokens and tokenizer.pad_to_multiple_of are not supported yet; remove them")


def _folders(plan: Any) -> list[Path]:
    return [m.folder for m in plan.models]


def write_tokenizer(plan: Any, writer: Any) -> None:
    """Write the output tokenizer for ``tokenizer_source`` / ``tokenizer`` (shared vocabulary only)."""
    folders = _folders(plan)
    vocabs = {str(f): _vocab(f) for f in folders}
    if len({json.dumps(v) for v in vocabs.values()}) > 1:
        raise ConfigError("the models' tokenizers differ; merging different vocabularies (embedding permutation) "
                          "is not supported yet. Use models that share a tokenizer")
    src = _source(plan.config)
    if isinstance(src, ModelRef):
        folder = next(m.folder for m in plan.models if str(m.ref) == str(src))
    else:
        folder = plan.donor.folder
    writer.copy_files(folder, (*TOKENIZER_FILES, "chat_template.jinja", "generation_config.json"))


def write_chat_template(plan: Any, writer: Any) -> None:
    """Write ``chat_template.jinja`` for ``chat_template: auto | chatml | <jinja string>``."""
    name = plan.config.chat_template
    if name == "auto":
        found = [(m.folder / "chat_template.jinja").read_text() for m in plan.models
                 if (m.folder / "chat_template.jinja").is_file()]
        if not found:
            return
        text = Counter(found).most_common(1)[0][0]
    elif name in BUILTIN_TEMPLATES:
        text = BUILTIN_TEMPLATES[name]
    elif "{" in name and len(name) >= 20:
        text = name
    else:
        raise ConfigError(f"chat_template {name!r} is not 'auto', a built-in ({', '.join(BUILTIN_TEMPLATES)}) or a "
                          "Jinja template string")
    writer.write_text("chat_template.jinja", text)
