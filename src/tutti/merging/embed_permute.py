"""Align vocab-indexed tensors (``embed_tokens``, ``lm_head``) of models with different vocabularies.

Pure tensor functions, no I/O: the executor calls them on the inputs of one vocab-indexed tensor just before the
merge method, so embeddings stream like every other tensor. The semantics follow mergekit 0.1.5's tokenizer
merging (``tokenizer:`` / ``tokenizer_source``):

1. Each model has a permutation ``new_id -> old_id`` (``-1`` when the model lacks the token).
2. A *default row* is chosen for every token that some model lacks or that is ``force``-d, by the first rule that
   applies: an explicit source (a model's own row, another token's row, or zeros); the only model that has the
   token; zeros when no model has it; the base model's row; else the mean over the models that have it.
3. Each model's matrix is rebuilt in the new order: its own row when it has the token and it is not forced, else
   the default row. Rows added by ``pad_to_multiple_of`` get the mean of the real rows (Hewitt, 2021,
   https://nlp.stanford.edu/~johnhew/vocab-expansion.html).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class RowRule:
    """Where the default row of one new token comes from.

    Args:
        kind: ``copy`` (row ``row`` of input ``model``), ``zero`` or ``mean`` (over the inputs that have it).
        model: input index (position in the job's input list) for ``copy``.
        row: row of that input's *original* tensor for ``copy``.
    """

    kind: Literal["copy", "zero", "mean"]
    model: int = -1
    row: int = -1


def default_rows(tensors: list[Tensor], perms: Tensor, rules: dict[int, RowRule]) -> dict[int, Tensor]:
    """The default row of every token in ``rules``.

    Args:
        tensors: each input's original ``(old_vocab_i, *d)`` tensor (all share ``d`` and a common dtype).
        perms: ``(n_inputs, new_vocab)`` long tensor, ``new_id -> old_id`` or ``-1``.
        rules: new token id -> :class:`RowRule`.

    Returns:
        new token id -> ``(*d,)`` row.
    """
    shape, ref = tensors[0].shape[1:], tensors[0]
    out: dict[int, Tensor] = {}
    for tid, rule in rules.items():
        if rule.kind == "copy":
            out[tid] = tensors[rule.model][rule.row]
        elif rule.kind == "zero":
            out[tid] = ref.new_zeros(shape)
        else:
            have = [i for i in range(len(tensors)) if int(perms[i, tid]) >= 0]
            acc = ref.new_zeros(shape)
            for i in have:
                acc = acc + tensors[i][int(perms[i, tid])]
            out[tid] = acc / len(have)
    return out


def permute_rows(tensor: Tensor, perm: Tensor, defaults: dict[int, Tensor], forced: Tensor,
                 out_rows: int) -> Tensor:
    """Rebuild one input's vocab-indexed tensor in the output token order.

    Args:
        tensor: the input's ``(old_vocab, *d)`` tensor.
        perm: ``(new_vocab,)`` long tensor, ``new_id -> old_id`` or ``-1``.
        defaults: new token id -> default row (used where the input lacks the token or it is forced).
        forced: ``(new_vocab,)`` bool tensor of tokens whose default row replaces every input's own row.
        out_rows: rows of the result (``new_vocab`` rounded up by ``pad_to_multiple_of``).

    Returns:
        A new ``(out_rows, *d)`` tensor; padding rows hold the mean of the first ``new_vocab`` rows.
    """
    n = perm.shape[0]
    out = tensor.new_zeros((out_rows, *tensor.shape[1:]))  # (out_rows, d)
    own = (perm >= 0) & ~forced
    out[:n][own] = tensor[perm[own]]
    for tid, row in defaults.items():
        if not bool(own[tid]):
            out[tid] = row
    if out_rows > n:
        out[n:] = out[:n].mean(dim=0)
    return out


def align_vocab(tensors: list[Tensor], perms: Tensor, rules: dict[int, RowRule], forced: Tensor,
                out_rows: int) -> list[Tensor]:
    """Every input of one vocab-indexed tensor rebuilt in the output order (see the module docstring).

    Args:
        tensors: each input's ``(old_vocab_i, *d)`` tensor, in the job's input order.
        perms: ``(n_inputs, new_vocab)`` permutations, same order.
        rules: default-row rules of the tokens that need one.
        forced: ``(new_vocab,)`` bool mask of forced tokens.
        out_rows: padded output vocabulary size.
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    tensors = [t.to(dtype) for t in tensors]
    defaults = default_rows(tensors, perms, rules)
    return [permute_rows(t, perms[i], defaults, forced, out_rows) for i, t in enumerate(tensors)]
