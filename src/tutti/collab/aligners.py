"""Vocabulary aligners: put every member's next-token distribution in one common space, and feed the chosen
element back to every member in its own tokens.

- ``shared``: identical tokenizers (checked token by token); the common space is the vocabulary itself.
- ``union``: exact-string union of the vocabularies (as GaC), compared as exact bytes (:mod:`.vocab`).
- ``topk``: the union restricted, per step, to the union of each member's top-k (as UniTE); a member's mass for
  a candidate it cannot spell as one token is read from the first token of its own spelling.
- ``bytes``: each member's next-token distribution converted to a next-byte distribution (Phan et al. 2024),
  see :mod:`.bytes_align`.

A member that cannot spell the chosen element with one token re-tokenises the affected suffix of its output and
repairs its KV cache (withdraw the tokens that changed, append the new ones), instead of recomputing everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from tutti.collab.session import MemberSession
from tutti.collab.vocab import TokenBytes
from tutti.errors import TuttiError
from tutti.registry import Registry

EOS = "<eos>"
WINDOW = 4  # tokens re-tokenised around a change (enough for every merge seen in BPE/SentencePiece vocabularies)


class Aligner(Protocol):
    """What the decoding loop needs from an aligner."""

    size: int
    eos_index: int

    def to_common(self, member_logprobs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each member's ``(batch, V_i)`` log-probs as ``(batch, size)`` log-probs in the common space."""
        ...

    def element_bytes(self, index: int) -> bytes:
        """The text (bytes) that choosing ``index`` appends to the output."""
        ...

    def advance(self, sessions: Sequence[MemberSession], chosen: Sequence[int | None]) -> None:
        """Feed the chosen element of each row (``None`` = row finished) to every member."""
        ...

    def encode_continuation(self, context: Any, text: str) -> list[int]:
        """A continuation as common-space indices (teacher forcing in ``loglikelihood``)."""
        ...


ALIGNERS: Registry[Any] = Registry("aligner")


def _eos_ids(model: Any) -> set[int]:
    return {int(t) for t in model.eos_token_ids if t is not None}


class SharedAligner:
    """Members share one tokenizer: indices are token ids, appended to every member as they are."""

    def __init__(self, models: Sequence[Any], *, vocab_sizes: Sequence[int]) -> None:
        ref = models[0].tokenizer.get_vocab()
        for m in models[1:]:
            if m.tokenizer.get_vocab() != ref:
                raise TuttiError(
                    f"align: shared needs identical tokenizers, but {m.name!r} and {models[0].name!r} differ; "
                    "use align: union, topk or bytes"
                )
        self.models = models
        self.size = min(vocab_sizes)
        self.eos_index = next(iter(sorted(_eos_ids(models[0]))))
        self.eos_ids = set().union(*(_eos_ids(m) for m in models))
        self.tb = TokenBytes(models[0].tokenizer, self.size)

    def to_common(self, member_logprobs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        # extra logit columns past the shared vocabulary (padding rows of the embedding) are dropped
        out = []
        for lp in member_logprobs:
            x = lp[:, : self.size]
            out.append(x if lp.shape[1] == self.size else torch.log_softmax(x, dim=-1))
        return out

    def is_eos(self, index: int) -> bool:
        """Whether ``index`` ends a row."""
        return index in self.eos_ids

    def element_bytes(self, index: int) -> bytes:
        return self.tb.table[index]

    def advance(self, sessions: Sequence[MemberSession], chosen: Sequence[int | None]) -> None:
        new = [[c] if c is not None else [] for c in chosen]
        for s in sessions:
            s.step(new)

    def encode_continuation(self, context: Any, text: str) -> list[int]:
        return self.models[0].split_continuation(context, text)[1]


class UnionAligner:
    """Exact-string (byte) union of the members' vocabularies; EOS of every member is one element."""

    def __init__(self, models: Sequence[Any], *, vocab_sizes: Sequence[int]) -> None:
        self.models = models
        self.tbs = [TokenBytes(m.tokenizer, v) for m, v in zip(models, vocab_sizes, strict=True)]
        keys: dict[Any, int] = {EOS: 0}
        self.maps: list[torch.Tensor] = []  # member -> (V_i,) union index of each token
        self.rep: list[dict[int, int]] = []  # member -> union index -> its token for that element
        for i, (m, tb) in enumerate(zip(models, self.tbs, strict=True)):
            eos = _eos_ids(m)
            idx = torch.empty(len(tb), dtype=torch.long)
            rep: dict[int, int] = {}
            for t, data in enumerate(tb.table):
                if t in eos:
                    key: Any = EOS
                elif t in tb.special or not data:
                    key = (i, t)  # a control token only this member has
                else:
                    key = data
                u = keys.setdefault(key, len(keys))
                idx[t] = u
                # prefer a token that is not a byte-fallback piece when several spell the same bytes
                if u not in rep or (len(data) == 1 and tb.byte_ids[data[0]] == rep[u]):
                    rep[u] = t
            self.maps.append(idx)
            self.rep.append(rep)
        self.bytes_of: list[bytes] = [b""] * len(keys)
        for key, u in keys.items():
            if isinstance(key, bytes):
                self.bytes_of[u] = key
        self.size = len(keys)
        self.eos_index = 0

    def is_eos(self, index: int) -> bool:
        """Whether ``index`` ends a row."""
        return index == self.eos_index

    def to_common(self, member_logprobs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for lp, idx in zip(member_logprobs, self.maps, strict=True):
            lp = lp[:, : idx.numel()]
            probs = torch.zeros(lp.shape[0], self.size, dtype=torch.float32, device=lp.device)
            probs.scatter_add_(1, idx.to(lp.device).expand(lp.shape[0], -1), lp.float().exp())
            out.append(probs.log())
        return out

    def element_bytes(self, index: int) -> bytes:
        return self.bytes_of[index]

    def advance(self, sessions: Sequence[MemberSession], chosen: Sequence[int | None]) -> None:
        for i, s in enumerate(sessions):
            new: list[list[int]] = []
            drop: list[int] = []
            for r, c in enumerate(chosen):
                n, d = ([], 0) if c is None else self._member_update(i, s, r, c)
                new.append(n)
                drop.append(d)
            s.step(new, drop)

    def _member_update(self, i: int, s: MemberSession, row: int, u: int) -> tuple[list[int], int]:
        tok = self.rep[i].get(u)
        if tok is not None:
            return [tok], 0
        data = self.bytes_of[u]
        if not data:  # another member's control token: nothing to spell
            return [], 0
        return retokenize_suffix(self.tbs[i], s.generated(row), data)

    def encode_continuation(self, context: Any, text: str) -> list[int]:
        ids = self.models[0].split_continuation(context, text)[1]
        return [int(self.maps[0][t]) for t in ids]


def retokenize_suffix(tb: TokenBytes, generated: list[int], data: bytes) -> tuple[list[int], int]:
    """Append ``data`` to a member's output: re-tokenise its last few tokens plus ``data`` and return
    (tokens to append, how many trailing tokens to withdraw first). At least one token is appended."""
    window = generated[-WINDOW:]
    fresh = tb.encode(tb.decode(window) + data)
    keep = 0
    while keep < min(len(window), len(fresh)) and window[keep] == fresh[keep]:
        keep += 1
    if keep == len(fresh):  # cannot happen with non-empty data; guard for safety
        keep -= 1
    return fresh[keep:], len(window) - keep


class TopKAligner(UnionAligner):
    """UniTE: the union restricted to the union of each member's top-``k`` elements, renormalised per member.

    A candidate a member has no single token for gets the member's log-prob of the first token of its own
    spelling of the candidate (UniTE's rule).
    """

    def __init__(self, models: Sequence[Any], *, vocab_sizes: Sequence[int], k: int = 10) -> None:
        super().__init__(models, vocab_sizes=vocab_sizes)
        self.k = k
        self._first: list[dict[int, int]] = [{} for _ in models]

    def _first_token(self, i: int, u: int) -> int:
        cache = self._first[i]
        if u not in cache:
            ids = self.tbs[i].encode(self.bytes_of[u]) if self.bytes_of[u] else []
            cache[u] = ids[0] if ids else -1
        return cache[u]

    def to_common(self, member_logprobs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        full = super().to_common(member_logprobs)
        batch = full[0].shape[0]
        cand = torch.zeros(batch, self.size, dtype=torch.bool)
        for lp in full:  # a remote member's row may have fewer than k finite entries: -inf never counts
            vals, idx = lp.topk(min(self.k, lp.shape[-1]), dim=-1)
            cand |= torch.zeros_like(cand).scatter_(1, idx.cpu(), torch.isfinite(vals).cpu())
        out = []
        for i, lp in enumerate(full):
            x = lp.clone()
            for r in range(batch):
                for u in cand[r].nonzero().squeeze(-1).tolist():
                    if not torch.isfinite(x[r, u]) and (t := self._first_token(i, u)) >= 0:
                        x[r, u] = member_logprobs[i][r, t]
            x = x.masked_fill(~cand.to(x.device), float("-inf"))
            out.append(torch.log_softmax(x, dim=-1))
        return out


ALIGNERS.add("shared", SharedAligner, pretty_name="Shared vocabulary (identity)")
ALIGNERS.add("union", UnionAligner, pretty_name="Exact-string vocabulary union (GaC)", paper="https://arxiv.org/abs/2406.12585")
ALIGNERS.add("topk", TopKAligner, pretty_name="Top-k union (UniTE)", paper="https://arxiv.org/abs/2410.03777")


def build_aligner(name: str, models: Sequence[Any], *, vocab_sizes: Sequence[int], topk: int = 10) -> Any:
    """The aligner registered as ``name`` for these member models."""
    cls = ALIGNERS.get(name)
    if cls is TopKAligner:
        return cls(models, vocab_sizes=vocab_sizes, k=topk)
    return cls(models, vocab_sizes=vocab_sizes)
