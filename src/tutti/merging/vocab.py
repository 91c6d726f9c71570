"""Tokenizer options of a merge config: ``tokenizer_source`` / ``tokenizer`` and ``chat_template``.

mergekit 0.1.5 semantics, for models with the same or with different vocabularies:

1. **Output tokenizer.** The base is ``base_model`` (else the first referenced model), with every token whose id is
   ``>= vocab_size`` of its config stripped (fast BPE tokenizers only; anything else with such tokens is refused).
   ``base`` keeps it; a model reference takes that model's tokenizer as is; ``union`` adds every other model's
   tokens missing from the base as *added tokens* (``add_tokens``; first definition of an added token wins).
   The keys of ``tokenizer.tokens`` are then added when missing.
2. **Permutations.** Each model gets ``new_id -> old_id`` (``-1`` where it lacks the token or the id is past its
   ``vocab_size``).
3. **Embeddings.** Every vocab-indexed tensor (``embed_tokens``, ``lm_head``...) is realigned per input before the
   merge method (:mod:`tutti.merging.embed_permute`); the default-row rules are decided here at plan time, so
   every error comes before any output is written. The output ``vocab_size`` is the new vocabulary, rounded up to
   ``pad_to_multiple_of``.

When every model already uses the output vocabulary (fine-tunes of one base), nothing is realigned and the
tokenizer files are copied byte for byte. Two deliberate differences from mergekit: union tokens get their ids in
the order of their ids in their model (mergekit iterates a hash map, so its ids change from run to run), and a
``tokens`` entry without ``source`` uses the automatic rules (mergekit fails on it).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tutti.config.merge import MergeConfig, ModelRef, TokenEmbedding, TokenSource
from tutti.errors import ConfigError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
BUILTIN_TEMPLATES = {"chatml": CHATML}
VOCAB_HINTS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out", "output.weight")


@dataclass
class VocabPlan:
    """The output tokenizer and each model's permutation.

    Args:
        tokenizer: the output tokenizer (a ``transformers`` tokenizer).
        vocab: output token -> id.
        out_rows: rows of every vocab-indexed output tensor (``len(vocab)`` padded).
        perms: model key -> ``(len(vocab),)`` long tensor ``new_id -> old_id`` (``-1`` if absent).
        old_vocabs: model key -> that model's own token -> id.
        identity: every model already has exactly the output vocabulary (nothing to realign).
        tokens: the ``tokenizer.tokens`` rules.
        source_folder: folder whose tokenizer files are copied when ``identity``.
        aligned: output tensor name -> ``(perms, rules, forced)`` for :func:`~tutti.merging.embed_permute.align_vocab`.
    """

    tokenizer: Any
    vocab: dict[str, int]
    out_rows: int
    perms: dict[str, Any]
    old_vocabs: dict[str, dict[str, int]]
    identity: bool
    tokens: dict[str, TokenEmbedding]
    source_folder: Path
    aligned: dict[str, tuple[Any, dict[int, Any], Any]] = field(default_factory=dict)


def _source(config: MergeConfig) -> str | ModelRef:
    if config.tokenizer is not None:
        return config.tokenizer.source
    return config.tokenizer_source  # type: ignore[return-value]


def _vocab_size(cfg: dict[str, Any]) -> int | None:
    for holder in (cfg, cfg.get("text_config") or {}):
        if isinstance(holder.get("vocab_size"), int):
            return int(holder["vocab_size"])
    return None


def set_config_vocab(cfg: dict[str, Any], size: int) -> None:
    """Write the output vocabulary size where the config keeps it (top level or ``text_config``)."""
    holder = cfg if "vocab_size" in cfg or not isinstance(cfg.get("text_config"), dict) else cfg["text_config"]
    holder["vocab_size"] = size


def _load(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError):
        return None


def _stripped(tok: Any, vocab_size: int, where: Path) -> Any:
    """``tok`` without the tokens whose id is ``>= vocab_size`` (they have no embedding row)."""
    from tokenizers import Tokenizer

    unused = {t for t, i in tok.get_vocab().items() if i >= vocab_size}
    if not unused:
        return tok
    data = json.loads(tok.backend_tokenizer.to_str()) if tok.is_fast else None
    kind = data["model"]["type"] if data else "a slow (non-fast) tokenizer"
    if kind != "BPE":
        raise ConfigError(f"{where}: its tokenizer has {len(unused)} token(s) with ids >= vocab_size {vocab_size}; "
                          f"stripping them is supported for fast BPE tokenizers only, not {kind}")
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < vocab_size]
    for t in unused:
        data["model"]["vocab"].pop(t, None)
    pairs = [m.split(" ") if isinstance(m, str) else m for m in data["model"]["merges"]]
    # a merge goes when a part or its product is stripped (mergekit keeps the latter and then cannot load it)
    data["model"]["merges"] = [m for m, p in zip(data["model"]["merges"], pairs, strict=True)
                               if not (set(p) & unused or "".join(p) in unused)]
    tok._tokenizer = Tokenizer.from_str(json.dumps(data))  # keep the wrapper's special tokens and template
    return tok


def _copy(tok: Any) -> Any:
    """A fresh copy of ``tok``: tokens added to the output must not change a model's own vocabulary."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        return AutoTokenizer.from_pretrained(d, use_fast=True)


def _union(base: Any, toks: list[tuple[Any, int]]) -> Any:
    """The base tokenizer plus every other token of ``toks`` (tokenizer, vocab_size) as added tokens."""
    plain: dict[str, None] = {}
    added: dict[str, Any] = {}
    for tok, size in toks:
        special = tok.added_tokens_decoder
        names = {info.content for info in special.values()}
        for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):  # by id: deterministic output ids
            if i < size and t not in names:
                plain.setdefault(t, None)
        for i, info in special.items():
            if i < size:
                added.setdefault(info.content, info)
    out = _copy(base)
    base_vocab = base.get_vocab()
    new = [t for t in plain if t not in added and t not in base_vocab]
    if new:  # one call for all: adding 10^4 tokens one at a time is quadratic
        out.add_tokens(new)
    if added:
        out.add_tokens(list(added.values()))
    return out


def build_vocab_plan(config: MergeConfig, models: dict[str, Any]) -> VocabPlan:
    """Build the output tokenizer and the permutations (reads tokenizers and configs only)."""
    import torch

    keys = list(models)
    base_key = str(config.base_model) if config.base_model else keys[0]
    sizes: dict[str, int] = {}
    toks: dict[str, Any] = {}
    for k, src in models.items():
        tok = _load(src.folder)
        if tok is None and k == base_key:
            raise ConfigError(f"{src.folder}: no tokenizer to build the output tokenizer from")
        sizes[k] = _vocab_size(src.ckpt.config) or (len(tok.get_vocab()) if tok is not None else 0)
        toks[k] = tok
    toks[base_key] = _stripped(toks[base_key], sizes[base_key], models[base_key].folder)
    for k in keys:  # mergekit: a model whose tokenizer cannot be loaded is assumed to share the base's
        if toks[k] is None:
            toks[k] = toks[base_key]
    src = _source(config)
    if isinstance(src, ModelRef):
        from tutti.models.zoo import resolve_model

        folder = models[str(src)].folder if str(src) in models else resolve_model(src.path)
        out = _load(folder)
        if out is None:
            raise ConfigError(f"tokenizer source {src}: {folder} has no tokenizer")
    elif src == "base":
        out, folder = _copy(toks[base_key]), models[base_key].folder
    else:
        order = [base_key, *[k for k in keys if k != base_key]]
        out, folder = _union(toks[base_key], [(toks[k], sizes[k]) for k in order]), models[base_key].folder
    tokens = dict((config.tokenizer.tokens or {}) if config.tokenizer else {})
    existing = set(out.get_vocab())
    for t in tokens:
        if t not in existing:
            out.add_tokens(t)
            existing.add(t)
    vocab = out.get_vocab()
    n = len(vocab)
    if max(vocab.values()) >= n:
        raise ConfigError(f"output tokenizer ids are not contiguous (max id {max(vocab.values())} for {n} tokens)")
    pad = config.tokenizer.pad_to_multiple_of if config.tokenizer else None
    out_rows = -(-n // pad) * pad if pad else n
    perms, old_vocabs = {}, {}
    for k in keys:
        old = toks[k].get_vocab()
        old_vocabs[k] = old
        p = [-1] * n
        for t, i in vocab.items():
            j = old.get(t, -1)
            p[i] = j if j < sizes[k] else -1
        perms[k] = torch.tensor(p, dtype=torch.long)
    ident = torch.arange(n)
    identity = out_rows == n and not any(e.force for e in tokens.values()) and all(
        sizes[k] == n and bool((perms[k] == ident).all()) for k in keys)
    return VocabPlan(tokenizer=out, vocab=vocab, out_rows=out_rows, perms=perms, old_vocabs=old_vocabs,
                     identity=identity, tokens=tokens, source_folder=folder)


def _explicit(vp: VocabPlan, token: str, tid: int, src: ModelRef | TokenSource, keys: list[str],
              rows: list[int], name: str) -> Any:
    from tutti.merging.embed_permute import RowRule

    if isinstance(src, TokenSource) and src.kind == "zero":
        return RowRule("zero")
    ref = src.model if isinstance(src, TokenSource) else src
    if ref is None or str(ref) not in keys:
        raise ConfigError(f"tokenizer.tokens[{token!r}]: source model {ref} is not an input of {name!r}")
    m = keys.index(str(ref))
    if isinstance(src, TokenSource):
        if (src.token is None) == (src.token_id is None):
            raise ConfigError(f"tokenizer.tokens[{token!r}]: give exactly one of 'token' or 'token_id'")
        row = src.token_id if src.token is None else vp.old_vocabs[str(ref)].get(src.token, -1)
        if src.token is not None and row < 0:
            raise ConfigError(f"tokenizer.tokens[{token!r}]: token {src.token!r} is not in {ref}'s tokenizer")
        if not 0 <= row < rows[m]:  # type: ignore[operator]
            raise ConfigError(f"tokenizer.tokens[{token!r}]: token id {row} is out of range for {ref} "
                              f"({rows[m]} rows)")
        return RowRule("copy", m, int(row))  # type: ignore[arg-type]
    row = int(vp.perms[str(ref)][tid])
    if row < 0:
        raise ConfigError(f"tokenizer.tokens[{token!r}]: {ref} does not have that token; use "
                          "{kind: model_token, model: ..., token: ...} or {kind: zero}")
    return RowRule("copy", m, row)


def plan_alignment(vp: VocabPlan, name: str, keys: list[str], rows: list[int], base_key: str | None) -> None:
    """Decide the default-row rules of one vocab-indexed tensor whose inputs are the models ``keys`` (in order).

    Args:
        vp: the vocabulary plan (``vp.aligned[name]`` is set).
        name: output tensor name.
        keys: model key of each input, in the executor's input order.
        rows: each input's number of rows.
        base_key: the base model's key, if any.
    """
    import torch

    from tutti.merging.embed_permute import RowRule

    perms = torch.stack([vp.perms[k] for k in keys])  # (n_inputs, new_vocab)
    for k, r in zip(keys, rows, strict=True):
        if int(vp.perms[k].max()) >= r:
            raise ConfigError(f"tensor {name!r} of {k} has {r} rows but its tokenizer uses id "
                              f"{int(vp.perms[k].max())}; the config's vocab_size is wrong")
    count = (perms >= 0).sum(0).tolist()
    forced = torch.zeros(perms.shape[1], dtype=torch.bool)
    rules: dict[int, Any] = {}
    b = keys.index(base_key) if base_key in keys else None
    for token, tid in vp.vocab.items():
        cfg = vp.tokens.get(token)
        force = cfg is not None and cfg.force
        if not force and count[tid] == len(keys):
            continue  # every input has its own row: no default needed
        forced[tid] = force
        col = perms[:, tid].tolist()
        if cfg is not None and cfg.source is not None:
            rules[tid] = _explicit(vp, token, tid, cfg.source, keys, rows, name)
        elif count[tid] == 1:
            m = next(i for i, r in enumerate(col) if r >= 0)
            rules[tid] = RowRule("copy", m, col[m])
        elif count[tid] == 0:
            rules[tid] = RowRule("zero")
        elif b is not None and col[b] >= 0:
            rules[tid] = RowRule("copy", b, col[b])
        else:
            rules[tid] = RowRule("mean")
    vp.aligned[name] = (perms, rules, forced)


def align_inputs(vp: VocabPlan, name: str, tensors: list[Any]) -> list[Any]:
    """The inputs of output tensor ``name`` realigned to the output vocabulary (unchanged if not vocab-indexed)."""
    if name not in vp.aligned:
        return tensors
    from tutti.merging.embed_permute import align_vocab

    perms, rules, forced = vp.aligned[name]
    return align_vocab(tensors, perms, rules, forced, vp.out_rows)


def resolve_chat_template(plan: Any) -> str | None:
    """The text of ``chat_template: auto | chatml | <jinja string>`` (``None`` when auto finds none)."""
    name = plan.config.chat_template
    if name == "auto":
        found = [(m.folder / "chat_template.jinja").read_text() for m in plan.models
                 if (m.folder / "chat_template.jinja").is_file()]
        return Counter(found).most_common(1)[0][0] if found else None
    if name in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name]
    if "{" in name and len(name) >= 20:
        return name
    raise ConfigError(f"chat_template {name!r} is not 'auto', a built-in ({', '.join(BUILTIN_TEMPLATES)}) or a "
                      "Jinja template string")


def write_tokenizer(plan: Any, writer: Any) -> None:
    """Write the output tokenizer: the source's files when no vocabulary changed, else the built tokenizer."""
    vp: VocabPlan = plan.vocab
    if vp.identity:
        writer.copy_files(vp.source_folder, (*TOKENIZER_FILES, "chat_template.jinja", "generation_config.json"))
        return
    with tempfile.TemporaryDirectory() as d:
        vp.tokenizer.save_pretrained(d)
        writer.copy_files(d, tuple(sorted(p.name for p in Path(d).iterdir() if p.is_file())))


def write_chat_template(plan: Any, writer: Any) -> None:
    """Write ``chat_template.jinja`` for ``chat_template: auto | chatml | <jinja string>``."""
    text = resolve_chat_template(plan)
    if text is not None:
        writer.write_text("chat_template.jinja", text)
