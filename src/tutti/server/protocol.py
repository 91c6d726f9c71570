"""OpenAI request schemas, their translation to :class:`SamplingParams`, and response bodies.

Requests follow OpenAI's Chat Completions and (legacy) Completions APIs. Fields a client sends through the
``openai`` client's ``extra_body`` arrive at the top level: ``collab`` (strategy overrides for a composite) and
``return_tokens_as_token_ids`` (vLLM's convention: log-prob tokens as ``"token_id:N"``). Unknown fields are
ignored, as OpenAI-compatible servers do, so clients written for other servers keep working.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tutti.models.interface import GenerationOutput, SamplingParams, TokenLogprob


class ChatMessageIn(BaseModel):
    """One chat message; content may be a string or a list of ``{"type": "text", "text": ...}`` parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        """The message content as plain text (only text parts are supported)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ValueError(f"content part of type {part.get('type')!r} is not supported; send text only")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk with token counts."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # vLLM extension
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    collab: dict[str, Any] | None = None
    return_tokens_as_token_ids: bool = False

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        stops = [v] if isinstance(v, str) else v
        if stops is not None and len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return stops

    def sampling(self, max_new_tokens: int, top_logprobs: int, want_logprobs: bool) -> SamplingParams:
        """The model-side decoding parameters."""
        return SamplingParams(
            max_new_tokens=max_new_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            seed=self.seed, stop=tuple(s for s in (self.stop or []) if s), n=self.n,
            logprobs=want_logprobs, top_logprobs=top_logprobs,
        )


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=0)

    def prompt(self) -> list[dict[str, str]]:
        """The chat as the model interface takes it."""
        return [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in self.messages]

    @property
    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` (new name) or ``max_tokens``."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def want_logprobs(self) -> tuple[bool, int]:
        """(return log-probs, how many alternatives)."""
        return self.logprobs, self.top_logprobs if self.logprobs else 0


class CompletionRequest(_Common):
    """``POST /v1/completions`` (``logprobs`` is the number of alternatives).

    ``prompt`` is a string, a list of strings, a list of token ids or a list of token-id lists (OpenAI's legacy
    shapes; ids are served for one greedy token with ``logprobs``, what remote ensemble members ask)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    @property
    def requested_max_tokens(self) -> int | None:
        """``max_tokens`` as sent (OpenAI's legacy default is 16; we use the server default)."""
        return self.max_tokens

    @property
    def want_logprobs(self) -> tuple[bool, int]:
        """(return log-probs, how many alternatives)."""
        return self.logprobs is not None, self.logprobs or 0


# ---------------------------------------------------------------------------------------------------- responses
def new_id(prefix: str) -> str:
    """A fresh response id."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _tok(t: str, as_ids: bool, tid: int | None = None) -> str:
    return f"token_id:{tid}" if as_ids and tid is not None else t


def chat_logprobs(lps: tuple[TokenLogprob, ...], ids: tuple[int, ...], as_ids: bool) -> dict[str, Any]:
    """``choices[i].logprobs`` of a chat completion."""
    content = []
    for j, lp in enumerate(lps):
        tid = ids[j] if j < len(ids) else None
        content.append({
            "token": _tok(lp.token, as_ids, tid), "logprob": lp.logprob, "bytes": list(lp.token.encode()),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in lp.top],
        })
    return {"content": content}


def completion_logprobs(lps: tuple[TokenLogprob, ...], ids: tuple[int, ...], as_ids: bool) -> dict[str, Any]:
    """``choices[i].logprobs`` of a legacy completion."""
    offsets, pos = [], 0
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return {
        "tokens": [_tok(lp.token, as_ids, ids[j] if j < len(ids) else None) for j, lp in enumerate(lps)],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [_first_wins(lp.top) for lp in lps],
        "text_offset": offsets,
    }


def _first_wins(top: tuple[tuple[str, float], ...]) -> dict[str, float]:
    # distinct tokens may decode to the same text; the legacy dict keeps the most likely one
    out: dict[str, float] = {}
    for t, v in top:
        out.setdefault(t, v)
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_tokens(out: GenerationOutput) -> int:
    """Generated tokens of one output (composites without a vocabulary may report it in ``info``)."""
    return out.completion_tokens or int(out.info.get("completion_tokens", 0))


def chat_response(model: str, outs: list[GenerationOutput], as_ids: bool) -> dict[str, Any]:
    """A ``chat.completion`` body."""
    choices = [{
        "index": i, "finish_reason": o.finish_reason,
        "message": {"role": "assistant", "content": o.text},
        "logprobs": chat_logprobs(o.logprobs, o.token_ids, as_ids) if o.logprobs is not None else None,
    } for i, o in enumerate(outs)]
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices,
            "usage": usage(outs[0].prompt_tokens if outs else 0, sum(completion_tokens(o) for o in outs))}


def completion_response(model: str, groups: list[list[GenerationOutput]], echo_prompts: list[str] | None,
                        as_ids: bool) -> dict[str, Any]:
    """A ``text_completion`` body (one group of ``n`` outputs per prompt)."""
    choices = []
    for p, outs in enumerate(groups):
        for o in outs:
            text = (echo_prompts[p] if echo_prompts else "") + o.text
            choices.append({
                "index": len(choices), "text": text, "finish_reason": o.finish_reason,
                "logprobs": completion_logprobs(o.logprobs, o.token_ids, as_ids) if o.logprobs is not None else None,
            })
    prompt_tokens = sum(g[0].prompt_tokens for g in groups if g)
    done = sum(completion_tokens(o) for g in groups for o in g)
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(prompt_tokens, done)}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
