"""Top-k token ensembles with a remote member: a second ``tutti serve`` process on loopback serves the tiny model.

[local tiny, remote tiny] must decode exactly like [tiny, tiny] in-process: the remote member's top-k (token ids
sent as ids, ids returned as ``token_id:N``) is the local model's top-k, and with ``align: topk`` both members
are renormalised over the same candidates.
"""

from __future__ import annotations

import httpx
import pytest
import torch

from tutti.errors import TuttiError
from tutti.models.interface import SamplingParams

from .conftest import REMOTE_KEY

CHAT = [{"role": "user", "content": "hello there"}]
PROMPTS = [CHAT, "The cat", "xyz 123"]


def _remote_member(remote_url, model_dir, top_logprobs=5):
    return {"remote": {"base_url": remote_url, "model": "tiny", "api_key_env": "TUTTI_TEST_REMOTE_KEY",
                       "tokenizer": str(model_dir), "top_logprobs": top_logprobs}}


@pytest.fixture()
def key(monkeypatch):
    monkeypatch.setenv("TUTTI_TEST_REMOTE_KEY", REMOTE_KEY)


def test_token_id_prompts_are_served_exactly(remote_url, tiny) -> None:
    """``/v1/completions`` with token-id prompts: the top-k are the in-process model's, ids exact."""
    ids = [tiny.encode(p) for p in PROMPTS[:2]]
    r = httpx.post(remote_url + "/completions", headers={"Authorization": f"Bearer {REMOTE_KEY}"}, json={
        "model": "tiny", "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": 4}, timeout=60)
    assert r.status_code == 200, r.text
    ref = tiny.next_token_logprobs(PROMPTS[:2])
    for row, choice in enumerate(r.json()["choices"]):
        top = choice["logprobs"]["top_logprobs"][0]
        vals, want = ref[row].topk(4)
        assert [int(t[9:]) for t in top] == want.tolist()
        assert list(top.values()) == pytest.approx(vals.tolist(), abs=1e-5)
    bad = httpx.post(remote_url + "/completions", headers={"Authorization": f"Bearer {REMOTE_KEY}"}, json={
        "model": "tiny", "prompt": ids[0], "max_tokens": 3, "temperature": 0}, timeout=60)
    assert bad.status_code == 400 and "token-id prompts" in bad.json()["error"]["message"]


def test_remote_topk_ensemble_equals_in_process(remote_url, tiny, varied_model_dir, key) -> None:
    from tutti.collab import load

    params = SamplingParams(max_new_tokens=8)
    cfg = {"strategy": "ensemble", "align": "topk", "topk": 5, "combine": {"method": "mean"}}
    local = load({**cfg, "members": ["a", "b"]}, members=[tiny, tiny])
    mixed = load({**cfg, "members": [str(varied_model_dir), _remote_member(remote_url, varied_model_dir)]})
    ref = local.generate(PROMPTS, params=params)
    got = mixed.generate(PROMPTS, params=params)
    assert [o[0].text for o in got] == [o[0].text for o in ref]
    assert all(len(o[0].text) > 0 for o in got)
    calls = got[0][0].info["member_forward_calls"]
    assert calls[1] <= calls[0]  # one request per step for the whole batch, like one forward pass
    # the combined distributions agree too, not only their argmax
    lp_ref, lp_got = local.next_token_logprobs(PROMPTS), mixed.next_token_logprobs(PROMPTS)
    assert torch.equal(torch.isfinite(lp_ref), torch.isfinite(lp_got))
    fin = torch.isfinite(lp_ref)
    assert torch.allclose(lp_ref[fin], lp_got[fin], atol=1e-4)
    # streaming goes through the same loop
    assert "".join(c.text for c in mixed.stream(CHAT, params=params)) == ref[0][0].text


@pytest.mark.parametrize("align", ["topk", "union", "shared"])
def test_weight_zero_on_the_remote_gives_the_local_greedy_output(remote_url, tiny, varied_model_dir, key,
                                                                  align) -> None:
    from tutti.collab import load

    params = SamplingParams(max_new_tokens=10)
    mixed = load({"strategy": "ensemble", "align": align, "topk": 5, "combine": {"method": "mean", "weights": [1, 0]},
                  "members": [str(varied_model_dir), _remote_member(remote_url, varied_model_dir)]})
    want = [o[0].text for o in tiny.generate(PROMPTS, params=params)]
    assert [o[0].text for o in mixed.generate(PROMPTS, params=params)] == want


def test_remote_token_members_refused_where_full_distributions_are_needed(remote_url, varied_model_dir,
                                                                           key) -> None:
    from tutti.collab import load

    local, far = str(varied_model_dir), _remote_member(remote_url, varied_model_dir)
    with pytest.raises(TuttiError, match="contrastive needs full next-token distributions"):
        load({"strategy": "contrastive", "members": [local, far]})
    with pytest.raises(TuttiError, match="align: bytes needs full"):
        load({"strategy": "ensemble", "align": "bytes", "members": [local, far]})
    with pytest.raises(TuttiError, match="perplexity needs prompt log-likelihoods"):
        load({"strategy": "ensemble", "combine": {"method": "perplexity"}, "members": [local, far]})
    with pytest.raises(TuttiError, match="fewer than topk: 10"):
        load({"strategy": "ensemble", "align": "topk", "topk": 10, "members": [local, far]})
