"""A remote OpenAI-compatible endpoint (another ``tutti serve``, vLLM, OpenAI...) behind the model interface.

So any endpoint can be a member of a composite: routers, cascades, vote and fusion need only ``generate``;
top-k token ensembles need ``next_token_logprobs``, which asks the endpoint for one token with
``top_logprobs`` and scatters the answer into a ``(batch, vocab)`` tensor over a local tokenizer's vocabulary
(``-inf`` outside the top k; the k values are the endpoint's own log-probabilities, not renormalised), and
:meth:`RemoteModel.open_session` makes the endpoint a member of the token-level decoding loop
(:class:`tutti.collab.remote_session.RemoteMemberSession`: token-id prompts, one request per step).
Tokens are mapped to ids through vLLM's ``return_tokens_as_token_ids`` convention when the endpoint honours it
(``tutti serve`` and vLLM do), else by encoding the token text.

Chats go to ``/chat/completions``, raw text to ``/completions``; a batch is sent as concurrent requests so the
endpoint can batch them itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Prompt,
    SamplingParams,
    StreamChunk,
    TokenLogprob,
)

if TYPE_CHECKING:
    import torch

    from tutti.config.serve import RemoteSpec


class RemoteModel:
    """An OpenAI-compatible endpoint implementing :class:`tutti.models.interface.Model`.

    Args:
        base_url: API root, e.g. ``http://127.0.0.1:8001/v1``.
        model: model id on the endpoint.
        api_key: bearer key (None = none sent).
        name: the name this model has inside tutti (defaults to ``model``).
        tokenizer: a loaded HF tokenizer, or a spec for ``AutoTokenizer`` (zoo name, folder, hub id); needed
            only for ``next_token_logprobs``.
        top_logprobs: alternatives asked for per position in ``next_token_logprobs``.
        timeout_s: HTTP timeout per call.
        max_concurrency: most requests in flight for one batch.
    """

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, name: str | None = None,
                 tokenizer: Any = None, top_logprobs: int = 20, timeout_s: float = 120.0,
                 max_concurrency: int = 8) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or model
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._tok_spec = tokenizer
        self._tok: Any = None if isinstance(tokenizer, str) else tokenizer
        self._eos: tuple[int, ...] | None = None

    @classmethod
    def from_spec(cls, spec: RemoteSpec, *, name: str | None = None) -> RemoteModel:
        """Build from a serve/composite config entry (the key is read from ``spec.api_key_env``)."""
        key = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise TuttiError(f"remote {spec.base_url}: environment variable {spec.api_key_env!r} is not set")
        return cls(spec.base_url, spec.model, api_key=key, name=name, tokenizer=spec.tokenizer,
                   top_logprobs=spec.top_logprobs, timeout_s=spec.timeout_s)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer used to map log-prob tokens to ids (loaded on first use)."""
        if self._tok is None:
            if self._tok_spec is None:
                raise TuttiError(f"remote model {self.name!r}: next_token_logprobs needs a local tokenizer; "
                                 "give 'tokenizer' (zoo name, folder or hub id) in its config")
            from transformers import AutoTokenizer

            from tutti.models.zoo import resolve_model

            self._tok = AutoTokenizer.from_pretrained(resolve_model(self._tok_spec))
        return self._tok

    # ------------------------------------------------------------------------------------------------ HTTP
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            r = self._http.post(path, json=body)
        except httpx.HTTPError as e:
            raise TuttiError(f"remote {self.base_url}{path}: {type(e).__name__} ({e})") from None
        if r.status_code != 200:
            raise TuttiError(f"remote {self.base_url}{path} answered {r.status_code}: {_error_message(r.text)}")
        return r.json()

    def _body(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "n": params.n}
        if params.top_k:
            body["top_k"] = params.top_k
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        want_lp = params.logprobs or params.top_logprobs > 0
        if isinstance(prompt, str):
            body["prompt"] = prompt
            if want_lp:
                body["logprobs"] = params.top_logprobs
            return "/completions", body
        body["messages"] = list(prompt)
        if want_lp:
            body.update(logprobs=True, top_logprobs=params.top_logprobs)
        return "/chat/completions", body

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # ------------------------------------------------------------------------------------------ interface
    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """Complete each prompt ``params.n`` times on the endpoint (one request per prompt, concurrent)."""
        def one(prompt: Prompt) -> list[GenerationOutput]:
            path, body = self._body(prompt, params)
            res = self._post(path, body)
            usage = res.get("usage") or {}
            choices = sorted(res.get("choices", []), key=lambda c: c.get("index", 0))
            per_choice = usage.get("completion_tokens", 0) // max(1, len(choices))
            outs = []
            for c in choices:
                text = c["message"]["content"] or "" if "message" in c else c.get("text", "")
                outs.append(GenerationOutput(
                    text=text, finish_reason=c.get("finish_reason") or "length",
                    prompt_tokens=int(usage.get("prompt_tokens", 0)), logprobs=_parse_logprobs(c.get("logprobs")),
                    info={"completion_tokens": per_choice, "remote": self.base_url},
                ))
            return outs

        return self._map(one, list(prompts))

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Stream one completion over server-sent events (closing the iterator closes the connection)."""
        import httpx

        if params.n != 1:
            raise TuttiError("streaming supports n=1 only")
        path, body = self._body(prompt, params)
        body["stream"] = True
        try:
            with self._http.stream("POST", path, json=body) as r:
                if r.status_code != 200:
                    raise TuttiError(f"remote {self.base_url}{path} answered {r.status_code}: "
                                     f"{_error_message(r.read().decode())}")
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    obj = json.loads(data)
                    if "error" in obj:
                        raise TuttiError(f"remote {self.base_url}{path}: {obj['error'].get('message')}")
                    for c in obj.get("choices", []):
                        text = (c.get("delta") or {}).get("content") or "" if "delta" in c else c.get("text", "")
                        lp = _parse_logprobs(c.get("logprobs"))
                        if text or c.get("finish_reason"):
                            yield StreamChunk(text, None, c.get("finish_reason"), lp[0] if lp else None)
        except httpx.HTTPError as e:
            raise TuttiError(f"remote {self.base_url}{path}: {type(e).__name__} ({e})") from None

    def top_logprobs_at(self, prompts: Sequence[Prompt], k: int | None = None) -> list[list[tuple[str, float]]]:
        """The endpoint's ``k`` most likely next tokens (text or ``token_id:N``) and log-probs per prompt."""
        k = k or self.top_logprobs
        params = SamplingParams(max_new_tokens=1, temperature=0.0, logprobs=True, top_logprobs=k)

        def one(prompt: Prompt) -> list[tuple[str, float]]:
            path, body = self._body(prompt, params)
            body["return_tokens_as_token_ids"] = True
            choice = self._post(path, body)["choices"][0]
            lps = _parse_logprobs(choice.get("logprobs"))
            if not lps:
                raise TuttiError(f"remote {self.base_url}{path} returned no log-probabilities")
            return list(lps[0].top)

        return self._map(one, list(prompts))

    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """``(batch, vocab)`` over the local tokenizer: the endpoint's top-k log-probs, ``-inf`` elsewhere."""
        return self._scatter(self.top_logprobs_at(prompts))

    def next_token_logprobs_ids(self, prompt_ids: Sequence[list[int]], k: int | None = None) -> torch.Tensor:
        """Like :meth:`next_token_logprobs` for token-id prompts, in one ``/completions`` request whose
        ``prompt`` is the list of id lists (exact context: nothing is re-tokenised)."""
        if not prompt_ids:
            return self._scatter([])
        body = {"model": self.model, "prompt": [list(p) for p in prompt_ids], "max_tokens": 1,
                "temperature": 0.0, "logprobs": k or self.top_logprobs, "return_tokens_as_token_ids": True}
        choices = sorted(self._post("/completions", body).get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(prompt_ids):
            raise TuttiError(f"remote {self.base_url}/completions returned {len(choices)} choices for "
                             f"{len(prompt_ids)} token-id prompts")
        tops = []
        for c in choices:
            lps = _parse_logprobs(c.get("logprobs"))
            if not lps:
                raise TuttiError(f"remote {self.base_url}/completions returned no log-probabilities")
            tops.append(list(lps[0].top))
        return self._scatter(tops)

    def _scatter(self, tops: Sequence[Sequence[tuple[str, float]]]) -> torch.Tensor:
        import torch

        out = torch.full((len(tops), len(self.tokenizer)), float("-inf"))
        for row, top in enumerate(tops):
            for t, lp in top:
                tid = self._token_id(t)
                if tid is not None and tid < out.shape[1]:
                    out[row, tid] = max(float(out[row, tid]), lp)
        return out

    # ---------------------------------------------------------------- token-level member (local tokenizer)
    sparse_logprobs = True  # next-token distributions are top-k only (-inf elsewhere)

    @property
    def vocab_size(self) -> int:
        """Width of :meth:`next_token_logprobs` rows: the local tokenizer's length."""
        return len(self.tokenizer)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The local tokenizer's EOS (and its generation config's, when the tokenizer spec is a folder)."""
        if self._eos is None:
            eos = {self.tokenizer.eos_token_id}
            if isinstance(self._tok_spec, str):
                try:
                    from transformers import GenerationConfig

                    from tutti.models.zoo import resolve_model

                    gen = GenerationConfig.from_pretrained(resolve_model(self._tok_spec)).eos_token_id
                    eos |= set(gen) if isinstance(gen, list | tuple) else {gen}
                except (OSError, ValueError, TuttiError):
                    pass
            self._eos = tuple(sorted(int(t) for t in eos if t is not None))
        return self._eos

    def render(self, prompt: Prompt) -> str:
        """Raw text for a prompt (chats through the local tokenizer's chat template)."""
        if isinstance(prompt, str):
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise TuttiError(f"remote model {self.name!r}: its tokenizer has no chat template; send plain text")
        return str(self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True))

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt with the local tokenizer (as :meth:`tutti.models.hf.HFModel.encode`)."""
        return list(self.tokenizer(self.render(prompt), add_special_tokens=isinstance(prompt, str))["input_ids"])

    def open_session(self, prompt_ids: Sequence[list[int]], *, prompt_nll: bool = False) -> Any:
        """A :class:`tutti.collab.remote_session.RemoteMemberSession`: this endpoint as a token-level member."""
        from tutti.collab.remote_session import RemoteMemberSession

        return RemoteMemberSession(self, prompt_ids, prompt_nll=prompt_nll)

    def _token_id(self, token: str) -> int | None:
        if token.startswith("token_id:"):
            return int(token[9:])
        ids = self.tokenizer.encode(token, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Not offered: chat endpoints do not score given text (use an in-process model for scoring)."""
        raise TuttiError(f"remote model {self.name!r} cannot score continuations (loglikelihood); "
                         "use a local model for log-likelihood tasks")


def _parse_logprobs(lp: dict[str, Any] | None) -> tuple[TokenLogprob, ...] | None:
    if not lp:
        return None
    if "content" in lp:  # chat shape
        return tuple(TokenLogprob(e["token"], float(e["logprob"]),
                                  tuple((t["token"], float(t["logprob"])) for t in e.get("top_logprobs") or []))
                     for e in lp["content"] or [])
    tops = lp.get("top_logprobs") or [None] * len(lp.get("tokens", []))
    return tuple(TokenLogprob(t, float(v), tuple((a, float(b)) for a, b in (top or {}).items()))
                 for t, v, top in zip(lp.get("tokens", []), lp.get("token_logprobs", []), tops, strict=False))


def _error_message(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:200]
