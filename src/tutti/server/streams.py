"""Greedy streams that progress together: one KV-cached decoding state per stream, stepped in turn by the worker.

``HFModel.stream`` runs one ``generate`` call from start to end, so a worker serving it alone makes every other
request wait for the whole stream. A :class:`SteppedStream` instead keeps the stream's own KV cache
(:class:`tutti.collab.session.MemberSession`) and decodes **one token per call** of :meth:`SteppedStream.step`;
the worker steps every open stream in turn and takes new requests between steps, so a stream that arrives
while another runs starts at once (continuous batching by interleaving, the scheduling idea of Orca, Yu et al.
2022, https://www.usenix.org/conference/osdi22/presentation/yu, without batching the forward passes).

Only greedy decoding on in-process HF models is stepped: the chosen token is the argmax of the same
next-token distribution ``generate`` uses, so streamed text equals non-streamed text. Text deltas follow
``HFModel.stream``: an incomplete character and a tail that could start a stop string are held back.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from tutti.models.interface import Prompt, SamplingParams, StreamChunk, cut_at_stop


def steppable(model: Any, prompt: Prompt, params: SamplingParams) -> bool:
    """Whether a stream can be stepped: a greedy, single-sample request to an in-process HF model."""
    from tutti.models.hf import HFModel

    return (isinstance(model, HFModel) and isinstance(prompt, str | list) and params.greedy and params.n == 1
            and params.max_new_tokens > 0)


class SteppedStream:
    """One greedy stream decoded a token at a time.

    Args:
        model: an :class:`tutti.models.hf.HFModel`.
        prompt: text or chat.
        params: greedy decoding settings (``max_new_tokens``, ``stop``).
    """

    def __init__(self, model: Any, prompt: Prompt, params: SamplingParams) -> None:
        from tutti.collab.session import MemberSession

        self.model = model
        self.params = params
        self.new: list[int] = []
        self.sent = ""
        self.done = False
        ids = model.encode(prompt)
        with self._locked(), torch.inference_mode():
            self.session = MemberSession(model, [ids])
        self.hold = max((len(s) - 1 for s in params.stop), default=0)

    def _locked(self) -> Any:
        lock = getattr(self.model, "_lock", None)
        return lock if lock is not None else contextlib.nullcontext()

    def step(self) -> list[StreamChunk]:
        """Choose the next token, feed it to the cache, and return the chunks it completes (the last one has a
        ``finish_reason`` and sets :attr:`done`)."""
        tok = int(self.session.logprobs()[0].argmax())
        if tok in self.model.eos_token_ids:
            self.done = True
            return [StreamChunk("", tok, "stop")]
        self.new.append(tok)
        out: list[StreamChunk] = []
        text = self.model.tokenizer.decode(self.new, skip_special_tokens=True)
        cut, hit = cut_at_stop(text, self.params.stop)
        if hit:
            if len(cut) > len(self.sent):
                out.append(StreamChunk(cut[len(self.sent):], tok))
            self.done = True
            return [*out, StreamChunk("", None, "stop")]
        if not text.endswith("\ufffd"):  # an incomplete multi-byte character waits for the next token
            safe = text[: len(text) - self.hold] if self.hold else text
            if len(safe) > len(self.sent):
                out.append(StreamChunk(safe[len(self.sent):], tok))
                self.sent = safe
        if len(self.new) >= self.params.max_new_tokens:
            self.done = True
            out.append(StreamChunk(cut[len(self.sent):], None, "length"))
            return out
        with self._locked():
            self.session.step([[tok]])
        return out
