"""Exact values of the pure embedding-alignment functions on hand-written 2-column tensors."""

from __future__ import annotations

import torch

from tutti.merging.embed_permute import RowRule, align_vocab, default_rows, permute_rows

# two inputs: A has old tokens [a, b, c], B has [b, d]; output vocab [a, b, c, d, e]
A = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
B = torch.tensor([[20.0, 20.0], [40.0, 40.0]])
PERMS = torch.tensor([[0, 1, 2, -1, -1], [-1, 0, -1, 1, -1]])
NONE = torch.zeros(5, dtype=torch.bool)


def test_default_rows_copy_zero_mean() -> None:
    rules = {0: RowRule("copy", 0, 0), 3: RowRule("copy", 1, 1), 4: RowRule("zero"), 1: RowRule("mean")}
    rows = default_rows([A, B], PERMS, rules)
    assert rows[0].tolist() == [1.0, 1.0] and rows[3].tolist() == [40.0, 40.0]
    assert rows[4].tolist() == [0.0, 0.0] and rows[1].tolist() == [11.0, 11.0]  # (2 + 20) / 2


def test_permute_rows_own_rows_defaults_and_padding() -> None:
    defaults = {3: torch.tensor([9.0, 9.0]), 4: torch.tensor([0.0, 0.0])}
    out = permute_rows(A, PERMS[0], defaults, NONE, out_rows=7)
    real = [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [9.0, 9.0], [0.0, 0.0]]
    assert out.tolist() == [*real, [3.0, 3.0], [3.0, 3.0]]  # padding: mean of the 5 real rows


def test_forced_token_takes_the_default_even_where_present() -> None:
    forced = NONE.clone()
    forced[1] = True
    out = permute_rows(A, PERMS[0], {1: torch.tensor([7.0, 7.0])}, forced, out_rows=5)
    assert out[1].tolist() == [7.0, 7.0] and out[0].tolist() == [1.0, 1.0]


def test_align_vocab_promotes_dtype_and_leaves_inputs_untouched() -> None:
    a16, b = A.to(torch.bfloat16), B.clone()
    rules = {0: RowRule("copy", 0, 0), 2: RowRule("copy", 0, 2), 3: RowRule("copy", 1, 1), 4: RowRule("zero")}
    outs = align_vocab([a16, b], PERMS, rules, NONE, out_rows=5)
    assert all(o.dtype == torch.float32 and o.shape == (5, 2) for o in outs)
    assert outs[1].tolist() == [[1.0, 1.0], [20.0, 20.0], [3.0, 3.0], [40.0, 40.0], [0.0, 0.0]]
    assert torch.equal(b, B) and torch.equal(a16, A.to(torch.bfloat16))
