"""Aligners: exact byte tables and round trips on the real SmolLM2 and Gemma-3 tokenizers (hypothesis), and
exact union/top-k/shared behaviour on small vocabularies."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutti.collab.aligners import SharedAligner, TopKAligner, UnionAligner, retokenize_suffix
from tutti.collab.vocab import TokenBytes
from tutti.errors import TuttiError

ALPHABET = st.sampled_from(
    list("abcXYZ019 \n\t.,;:!?'\"()[]{}#_-+=*/\\<>@$%&|~`") + list("éèàçñüöß") + list("東京日本語中文") + ["😀", "🚀"]
)
TEXTS = st.lists(st.one_of(ALPHABET, st.sampled_from([" the", "def ", "    return", " café", "\n\n", "  "])),
                 max_size=24).map("".join)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def smol_tb(smollm2_dir) -> TokenBytes:
    from transformers import AutoTokenizer

    return TokenBytes(AutoTokenizer.from_pretrained(smollm2_dir))


@pytest.fixture(scope="module")
def gemma_tb(gemma_tokenizer) -> TokenBytes:
    return TokenBytes(gemma_tokenizer)


@pytest.mark.real_model
@SETTINGS
@given(text=TEXTS)
def test_token_bytes_spell_the_tokenizers_own_output(smol_tb, gemma_tb, text: str) -> None:
    for tb in (smol_tb, gemma_tb):
        ids = list(tb.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert tb.decode(ids) == text.encode()
        assert tb.encode(text.encode()) == ids


@pytest.mark.real_model
@SETTINGS
@given(text=TEXTS, cut=st.integers(min_value=0, max_value=200))
def test_cross_tokenizer_round_trip_and_partial_characters(smol_tb, gemma_tb, text: str, cut: int) -> None:
    data = text.encode()
    prefix = data[: min(cut, len(data))]  # may end inside a multi-byte character
    for a, b in ((smol_tb, gemma_tb), (gemma_tb, smol_tb)):
        assert b.decode(b.encode(a.decode(a.encode(data)))) == data
        assert a.decode(a.encode(prefix)) == prefix  # byte tokens spell the dangling bytes


@pytest.mark.real_model
@SETTINGS
@given(first=TEXTS, more=TEXTS)
def test_retokenize_suffix_keeps_text_exact(smol_tb, gemma_tb, first: str, more: str) -> None:
    for tb in (smol_tb, gemma_tb):
        gen = tb.encode(first.encode())
        new, drop = retokenize_suffix(tb, gen, more.encode() or b"x")
        assert drop <= min(len(gen), 4)
        assert tb.decode(gen[: len(gen) - drop] + new) == first.encode() + (more.encode() or b"x")


@pytest.mark.real_model
def test_special_cases_leading_spaces_byte_fallback(smol_tb, gemma_tb) -> None:
    assert gemma_tb.table[gemma_tb.byte_ids[0xE6]] == b"\xe6"  # <0xE6> byte-fallback token
    assert gemma_tb.tokenizer.convert_ids_to_tokens(gemma_tb.byte_ids[0x41]) == "<0x41>"
    for tb in (smol_tb, gemma_tb):
        for text in (" leading", "  two", "\ttab", "trailing ", "東", "😀"):
            assert tb.decode(tb.encode(text.encode())) == text.encode()
        assert tb.decode(tb.encode("😀".encode()[:2])) == "😀".encode()[:2]
        assert all(tb.table[i] == b"" for i in tb.special)


class _Tok:
    def __init__(self, tokenizer, name: str, vocab: int) -> None:
        self.tokenizer, self.name, self.vocab_size = tokenizer, name, vocab
        self.eos_token_ids = (tokenizer.eos_token_id,)


def test_shared_aligner_refuses_different_tokenizers(tok) -> None:
    from tutti.testing import tiny_tokenizer

    with pytest.raises(TuttiError, match=r"identical tokenizers.*union"):
        SharedAligner([_Tok(tok, "a", 384), _Tok(tiny_tokenizer(320), "b", 320)], vocab_sizes=[384, 320])


def test_union_maps_every_token_to_its_exact_bytes(tok) -> None:
    from tutti.testing import tiny_tokenizer

    small = tiny_tokenizer(320)
    al = UnionAligner([_Tok(tok, "a", 400), _Tok(small, "b", 320)], vocab_sizes=[400, 320])
    for i, m in enumerate(al.maps):
        tb = al.tbs[i]
        for t in range(len(tb)):
            if tb.table[t]:
                assert al.bytes_of[int(m[t])] == tb.table[t]
    # shared strings share one element; EOS of both is element 0; padding ids (384..399) have their own
    assert int(al.maps[0][2]) == int(al.maps[1][2]) == al.eos_index == 0
    assert int(al.maps[0][67]) == int(al.maps[1][67])
    lp = torch.log_softmax(torch.randn(1, 400), -1)
    common = al.to_common([lp, torch.log_softmax(torch.randn(1, 320), -1)])
    assert torch.allclose(common[0].exp().sum(-1), torch.ones(1), atol=1e-5)
    assert common[0][0, int(al.maps[0][67])] == pytest.approx(float(lp[0, 67]), abs=1e-5)


def test_topk_renormalises_over_the_union_of_top_k(tok) -> None:
    from tutti.testing import tiny_tokenizer

    small = tiny_tokenizer(320)
    al = TopKAligner([_Tok(tok, "a", 384), _Tok(small, "b", 320)], vocab_sizes=[384, 320], k=2)
    a = torch.full((1, 384), -30.0)
    a[0, 67], a[0, 68], a[0, 69] = 0.0, -1.0, -2.0  # top-2 of a: 67, 68
    b = torch.full((1, 320), -30.0)
    b[0, 69], b[0, 67] = 0.0, -0.5  # top-2 of b: 69, 67
    ca, cb = al.to_common([torch.log_softmax(a, -1), torch.log_softmax(b, -1)])
    cand = [int(al.maps[0][t]) for t in (67, 68, 69)]
    expect_a = torch.softmax(torch.tensor([0.0, -1.0, -2.0]), -1)
    assert torch.allclose(ca[0, cand].exp(), expect_a, atol=1e-5)
    assert torch.isinf(ca).sum() == ca.numel() - 3
    expect_b = torch.softmax(torch.tensor([-0.5, -30.0, 0.0]), -1)
    assert torch.allclose(cb[0, cand].exp(), expect_b, atol=1e-5)
