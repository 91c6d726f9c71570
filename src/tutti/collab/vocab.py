"""The exact bytes behind every token of a tokenizer, and byte-exact (re-)tokenisation.

Byte-level BPE tokenizers (GPT-2 style: SmolLM2, LLaMA-3, Qwen) spell each byte as one printable character;
SentencePiece-style tokenizers (LLaMA-2, Gemma) use ``▁`` for a space and ``<0xNN>`` byte-fallback tokens. A
:class:`TokenBytes` table hides both, so aligners compare tokens of different tokenizers as exact byte strings
(no per-family whitespace hacks).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any


@cache
def _gpt2_unicode_to_byte() -> dict[str, int]:
    # the GPT-2 printable alphabet: bytes that print as themselves keep their code point, the rest map to 256+
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cps = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            cps.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(keep, cps, strict=True)}


def _decoder_types(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return ""
    return json.dumps(json.loads(backend.to_str()).get("decoder"))


class TokenBytes:
    """Token id <-> exact bytes for one tokenizer.

    Args:
        tokenizer: a Hugging Face (fast) tokenizer.
        vocab_size: width of the model's logits (ids past the tokenizer's length are unused).

    Attributes:
        table: ``table[i]`` is the byte string of token ``i`` (``b""`` for special and unused ids).
        special: ids of special (control) tokens.
        byte_ids: ``byte_ids[b]`` is the id of the single-byte token for byte ``b`` (or -1 when missing).
    """

    def __init__(self, tokenizer: Any, vocab_size: int | None = None) -> None:
        self.tokenizer = tokenizer
        n = max(vocab_size or 0, len(tokenizer))
        self.byte_level = "ByteLevel" in _decoder_types(tokenizer)
        self.special: set[int] = set(tokenizer.all_special_ids)
        for tid, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                self.special.add(int(tid))
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        u2b = _gpt2_unicode_to_byte()
        self.table: list[bytes] = [b""] * n
        self.byte_ids: list[int] = [-1] * 256
        for i, piece in enumerate(pieces):
            if piece is None or i in self.special:
                continue
            if self.byte_level:
                try:
                    data = bytes(u2b[c] for c in piece)
                except KeyError:  # an added non-byte-level token: its text is its content
                    data = piece.encode()
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                data = bytes([int(piece[3:5], 16)])
                self.byte_ids[data[0]] = i
            else:
                data = piece.replace("▁", " ").encode()
            self.table[i] = data
            if self.byte_level and len(data) == 1 and self.byte_ids[data[0]] < 0:
                self.byte_ids[data[0]] = i

    def __len__(self) -> int:
        return len(self.table)

    def decode(self, ids: list[int]) -> bytes:
        """Exact bytes of a token sequence (special tokens contribute nothing)."""
        return b"".join(self.table[i] for i in ids)

    def encode(self, data: bytes) -> list[int]:
        """Token ids whose bytes are exactly ``data`` (the tokenizer's own split; a dangling incomplete UTF-8
        tail, or anything the tokenizer would change, is spelled with single-byte tokens; a byte the vocabulary cannot
        spell at all, which only happens for bytes that never occur in UTF-8, is left out)."""
        if not data:
            return []
        text, tail = _split_utf8(data)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        got = self.decode(ids)
        if got != text.encode():
            # a normaliser or dummy prefix changed the text: drop the prefix it added, else spell bytes
            ids = self._repair(ids, got, text.encode())
        return ids + [t for b in tail if (t := self.byte_ids[b]) >= 0]

    def _repair(self, ids: list[int], got: bytes, want: bytes) -> list[int]:
        if got == b" " + want and ids and self.table[ids[0]].startswith(b" "):
            first = self.table[ids[0]][1:]
            return self.encode(first) + ids[1:] if first else ids[1:]
        return [t for b in want if (t := self.byte_ids[b]) >= 0]


def _split_utf8(data: bytes) -> tuple[str, bytes]:
    """The longest prefix of ``data`` that is valid UTF-8 (as text), and the remaining bytes."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8"), data[cut:]
        except UnicodeDecodeError:
            continue
    # invalid bytes in the middle: decode what we can and spell the rest
    good = data.decode("utf-8", errors="ignore").encode()
    i = 0
    while i < min(len(good), len(data)) and good[i] == data[i]:
        i += 1
    return data[:i].decode("utf-8", errors="ignore"), data[i:]
