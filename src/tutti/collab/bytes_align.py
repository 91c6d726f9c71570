"""The ``bytes`` aligner: each member's next-token distribution as a next-byte distribution (Phan et al. 2024,
arXiv 2410.09303), so members with any tokenizers are combined in one 257-way space (256 bytes + EOS).

Per member and row the aligner keeps a committed token boundary, the log-probs ``base`` there, and the bytes
chosen since (``pending``). The next-byte probability is

    P(b) ∝ Σ_{t : bytes(t) starts with pending + b} base(t)  +  base(t_p) · Σ_{u : bytes(u)[0] = b} after(u)

where ``t_p`` is the token spelling exactly ``pending`` (if any) and ``after`` is the distribution once ``t_p``
is appended (a tentative token in the KV cache: one forward pass, withdrawn again if a longer token wins).
After a byte is chosen, the member follows the likelier of the two paths (longer token, or ``t_p`` then a new
token). This is exact over one token of look-ahead; Phan et al.'s full enumeration of covering token sequences
is not done (documented limitation).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import torch

from tutti.collab.aligners import ALIGNERS, _eos_ids
from tutti.collab.session import MemberSession
from tutti.collab.vocab import TokenBytes

NEG = float("-inf")


class _Index:
    """Prefix lookups over one vocabulary's byte strings."""

    def __init__(self, tb: TokenBytes, eos: set[int]) -> None:
        self.tb = tb
        order = sorted((data, t) for t, data in enumerate(tb.table) if data)
        self.keys = [d for d, _ in order]
        self.ids = [t for _, t in order]
        first = torch.full((len(tb),), 256, dtype=torch.long)  # 256 = "no byte": specials land in a dead bucket
        for t, data in enumerate(tb.table):
            if data:
                first[t] = data[0]
        self.first = first
        self.eos = sorted(eos)
        self.exact: dict[bytes, int] = {}
        for t, data in enumerate(tb.table):
            if data and (data not in self.exact or tb.byte_ids[data[0]] == self.exact[data]):
                self.exact[data] = t

    def first_byte_probs(self, p: torch.Tensor) -> torch.Tensor:
        """``(258,)``: mass of tokens by first byte; 256 = EOS, 257 = other specials."""
        n = min(len(p), len(self.first))
        out = torch.zeros(258)
        out.scatter_add_(0, torch.where(self.first[:n] == 256, 257, self.first[:n]), p[:n].float())
        out[256] = float(p[self.eos].sum()) if self.eos else 0.0
        out[257] = 0.0
        return out

    def extensions(self, pending: bytes) -> tuple[list[int], list[int]]:
        """Ids of tokens strictly longer than ``pending`` that start with it, and their next byte."""
        lo = bisect.bisect_right(self.keys, pending)  # skip the exact match itself
        ids, nxt = [], []
        for j in range(lo, len(self.keys)):
            k = self.keys[j]
            if not k.startswith(pending):
                break
            ids.append(self.ids[j])
            nxt.append(k[len(pending)])
        return ids, nxt


class BytesAligner:
    """Members' distributions over the next byte (257 elements: bytes 0-255 and EOS = 256)."""

    def __init__(self, models: Sequence[Any], *, vocab_sizes: Sequence[int]) -> None:
        self.models = models
        self.idx = [_Index(TokenBytes(m.tokenizer, v), _eos_ids(m)) for m, v in zip(models, vocab_sizes, strict=True)]
        self.size = 257
        self.eos_index = 256
        self._state: list[list[dict[str, Any]]] | None = None

    def is_eos(self, index: int) -> bool:
        """Whether ``index`` ends a row."""
        return index == self.eos_index

    def element_bytes(self, index: int) -> bytes:
        return b"" if index == 256 else bytes([index])

    def attach(self, sessions: Sequence[MemberSession]) -> None:
        """Start tracking pending bytes for freshly prefilled sessions (the loop calls this)."""
        self._state = [[{"pending": b"", "base": s.logprobs()[r], "tent": None} for r in range(s.batch)]
                       for s in sessions]

    def _rows(self, i: int) -> list[dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("bytes aligner used before attach(sessions)")
        return self._state[i]

    def _byte_dist(self, i: int, st: dict[str, Any], after: torch.Tensor) -> torch.Tensor:
        ix = self.idx[i]
        p = st["base"].exp()
        if not st["pending"]:
            out = ix.first_byte_probs(p)[:257]
        else:
            out = torch.zeros(257)
            ids, nxt = ix.extensions(st["pending"])
            if ids:
                out.index_add_(0, torch.tensor(nxt), p[ids].float())
            if st["tent"] is not None:
                out += float(p[st["tent"]]) * ix.first_byte_probs(after.exp())[:257]
        total = out.sum()
        return (out / total).log() if total > 0 else torch.full((257,), NEG)

    def to_common(self, member_logprobs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i, cur in enumerate(member_logprobs):
            rows = self._rows(i)
            out.append(torch.stack([self._byte_dist(i, st, cur[r]) for r, st in enumerate(rows)]))
        return out

    def advance(self, sessions: Sequence[MemberSession], chosen: Sequence[int | None]) -> None:
        for i, s in enumerate(sessions):
            rows = self._rows(i)
            cur = s.logprobs()
            new: list[list[int]] = [[] for _ in rows]
            drop = [0] * len(rows)
            restore: dict[int, torch.Tensor] = {}
            for r, c in enumerate(chosen):
                if c is None or c == 256:
                    continue
                self._follow(i, rows[r], cur[r], c, r, new, drop, restore)
            only_drop = [d if not new[r] else 0 for r, d in enumerate(drop)]
            if any(only_drop):
                last = cur.clone()
                for r, lp in restore.items():
                    last[r] = lp
                s.rollback(only_drop, last)
            s.step(new, [d if new[r] else 0 for r, d in enumerate(drop)])
            fresh = s.logprobs()
            for r, st in enumerate(rows):
                if st.pop("rebase", False):
                    st["base"] = fresh[r]

    def _follow(self, i: int, st: dict[str, Any], after: torch.Tensor, b: int, r: int,
                new: list[list[int]], drop: list[int], restore: dict[int, torch.Tensor]) -> None:
        ix = self.idx[i]
        p = st["base"].exp()
        ids, nxt = ix.extensions(st["pending"])
        if st["pending"]:
            ext = sum(float(p[t]) for t, x in zip(ids, nxt, strict=True) if x == b)
        else:
            ext = float(p[(ix.first[: len(p)] == b).nonzero().squeeze(-1)].sum())
        comp = 0.0
        if st["tent"] is not None:
            comp = float(p[st["tent"]]) * float(ix.first_byte_probs(after.exp())[b])
        if st["tent"] is not None and comp > ext:
            st["base"], st["pending"], st["tent"] = after, bytes([b]), None  # the tentative token is committed
        else:
            if st["tent"] is not None:
                drop[r] = 1
                restore[r] = st["base"]
                st["tent"] = None
            st["pending"] = st["pending"] + bytes([b])
            if ext == 0.0:  # this member cannot follow with one token: spell the bytes and commit them
                new[r] = ix.tb.encode(st["pending"])
                st["pending"], st["rebase"] = b"", True
                return
        exact = ix.exact.get(st["pending"])
        if exact is not None:
            new[r] = [exact]  # tentative: gives the distribution after the pending token
            st["tent"] = exact

    def encode_continuation(self, context: Any, text: str) -> list[int]:
        return list(text.encode())


ALIGNERS.add("bytes", BytesAligner, pretty_name="Exact next-byte distributions (Phan et al. 2024)",
             paper="https://arxiv.org/abs/2410.09303")
