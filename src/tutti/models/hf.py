"""The default backend: a Hugging Face ``transformers`` causal LM behind the narrow model interface.

fp32 on CPU by default (bf16 is about 6x slower on CPUs without bf16 units). Prompts are batched with left
padding; chats go through the tokenizer's chat template; each sequence decodes with its own KV cache rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from queue import Queue
from typing import Any

import torch
from transformers import StoppingCriteria

from tutti.errors import TuttiError
from tutti.models.interface import (
    GenerationOutput,
    LoglikelihoodResult,
    Prompt,
    SamplingParams,
    StreamChunk,
    TokenLogprob,
    cut_at_stop,
)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``"bf16"`` / a torch dtype -> torch dtype, with a clear error."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise TuttiError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}") from None


class HFModel:
    """A transformers causal LM implementing :class:`tutti.models.interface.Model`.

    Args:
        module: the ``PreTrainedModel`` (put in eval mode).
        tokenizer: its tokenizer; a pad token is set to EOS when missing.
        name: model id shown in outputs and servers.
        batch_size: most sequences per forward pass in scoring calls.
    """

    def __init__(self, module: Any, tokenizer: Any, *, name: str = "model", batch_size: int = 8) -> None:
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        gen_eos = getattr(module.generation_config, "eos_token_id", None)
        eos = gen_eos if gen_eos is not None else tokenizer.eos_token_id
        self.eos_token_ids: tuple[int, ...] = tuple(eos) if isinstance(eos, list | tuple) else (eos,)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        spec: str | Path,
        *,
        dtype: str | torch.dtype = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        name: str | None = None,
        batch_size: int = 8,
    ) -> HFModel:
        """Load a zoo name, local folder or hub id (see :func:`tutti.models.zoo.resolve_model`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tutti.models.checkpoint import Checkpoint
        from tutti.models.device import check_device
        from tutti.models.zoo import resolve_model

        check_device(device)
        path = resolve_model(spec)
        Checkpoint(path)  # clear errors for missing config, truncated or pickle-only weights
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        module = AutoModelForCausalLM.from_pretrained(
            path, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
        ).to(device)
        return cls(module, tok, name=name or str(spec), batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return next(self.module.parameters()).device

    @property
    def vocab_size(self) -> int:
        """Width of the logits."""
        return int(self.module.get_output_embeddings().weight.shape[0])

    @property
    def max_length(self) -> int:
        """Longest sequence the model takes."""
        return int(getattr(self.module.config, "max_position_embeddings", 2048))

    # ------------------------------------------------------------------ prompts
    def render(self, prompt: Prompt) -> str:
        """Raw text for a prompt: chats go through the chat template with a generation prompt."""
        if isinstance(prompt, str):
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise TuttiError(f"model {self.name!r} has no chat template; pass a plain-text prompt instead")
        return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt (special tokens added for plain text only; templates carry their own)."""
        text = self.render(prompt)
        return list(self.tokenizer(text, add_special_tokens=isinstance(prompt, str))["input_ids"])

    def _left_pad(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s):] = torch.tensor(s)
                mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _check_length(self, ids: list[int], extra: int = 0) -> None:
        if len(ids) + extra > self.max_length:
            raise TuttiError(
                f"prompt of {len(ids)} tokens (+{extra} new) is longer than {self.name!r}'s context of "
                f"{self.max_length}; shorten it"
            )

    # ------------------------------------------------------------------ generation
    def _gen_kwargs(self, params: SamplingParams, prompt_width: int) -> dict[str, Any]:
        from transformers import StoppingCriteriaList

        kw: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": list(self.eos_token_ids),
            "do_sample": not params.greedy,
            "return_dict_in_generate": True,
            "output_logits": params.logprobs or params.top_logprobs > 0,
        }
        if params.greedy:
            kw.update(temperature=None, top_p=None, top_k=None)
        else:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
        # stop strings are matched in the generated text only (transformers' stop_strings also look at the
        # prompt, so a prompt ending in "\n" would stop a "\n\n" stop string after one token)
        kw["stopping_criteria"] = StoppingCriteriaList(
            [_StopStrings(self.tokenizer, params.stop, prompt_width)] if params.stop else []
        )
        return kw

    def _finish(self, new_ids: list[int], params: SamplingParams, scores: list[torch.Tensor] | None,
                prompt_tokens: int) -> GenerationOutput:
        # drop trailing pads and the EOS; remember whether we stopped
        stopped = False
        for j, t in enumerate(new_ids):
            if t in self.eos_token_ids:
                new_ids, stopped = new_ids[:j], True
                break
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        text, hit = cut_at_stop(text, params.stop)
        lps = None
        if scores is not None:
            lps = tuple(self._token_logprob(s, t, params.top_logprobs) for s, t in zip(scores, new_ids, strict=False))
        return GenerationOutput(
            text=text, token_ids=tuple(new_ids), finish_reason="stop" if stopped or hit else "length",
            prompt_tokens=prompt_tokens, logprobs=lps,
        )

    def _token_logprob(self, logits: torch.Tensor, token: int, k: int) -> TokenLogprob:
        lp = torch.log_softmax(logits.float(), dim=-1)
        top: tuple[tuple[str, float], ...] = ()
        if k:
            v, i = lp.topk(k)
            top = tuple((self.tokenizer.decode([int(t)]), float(x)) for x, t in zip(v, i, strict=True))
        return TokenLogprob(self.tokenizer.decode([token]), float(lp[token]), top)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], *, params: SamplingParams) -> list[list[GenerationOutput]]:
        """Complete every prompt ``params.n`` times (batched, left-padded)."""
        encoded = [self.encode(p) for p in prompts]
        for e in encoded:
            self._check_length(e, params.max_new_tokens)
        flat = [e for e in encoded for _ in range(params.n)]
        outs: list[GenerationOutput] = []
        with self._lock, torch.random.fork_rng(devices=[]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for start in range(0, len(flat), self.batch_size):
                chunk = flat[start:start + self.batch_size]
                ids, mask = self._left_pad(chunk)
                res = self.module.generate(input_ids=ids, attention_mask=mask,
                                           **self._gen_kwargs(params, ids.shape[1]))
                seqs = res.sequences[:, ids.shape[1]:].tolist()
                for row, (seq, e) in enumerate(zip(seqs, chunk, strict=True)):
                    scores = [s[row] for s in res.logits] if res.logits is not None else None
                    outs.append(self._finish(seq, params, scores, len(e)))
        return [outs[i * params.n:(i + 1) * params.n] for i in range(len(prompts))]

    def stream(self, prompt: Prompt, *, params: SamplingParams) -> Iterator[StreamChunk]:
        """Complete one prompt, yielding text deltas as tokens are decided."""
        from transformers import StoppingCriteria
        from transformers.generation.streamers import BaseStreamer

        if params.n != 1:
            raise TuttiError("streaming supports n=1 only")
        ids = self.encode(prompt)
        self._check_length(ids, params.max_new_tokens)
        q: Queue[Any] = Queue()
        cancelled = threading.Event()  # set when the consumer stops early (closes the generator)

        class _Streamer(BaseStreamer):
            first = True

            def put(self, value: torch.Tensor) -> None:
                if self.first:  # the prompt comes first
                    self.first = False
                    return
                q.put(int(value.reshape(-1)[0]))

            def end(self) -> None:
                q.put(None)

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        def run() -> None:
            try:
                with self._lock, torch.inference_mode(), torch.random.fork_rng(devices=[]):
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    t, m = self._left_pad([ids])
                    kw = self._gen_kwargs(params, t.shape[1])
                    kw["output_logits"] = False
                    kw["stopping_criteria"].append(_Cancelled())
                    self.module.generate(input_ids=t, attention_mask=m, streamer=_Streamer(), **kw)
            except BaseException as e:  # surface errors in the consumer
                q.put(e)

        threading.Thread(target=run, daemon=True).start()
        try:
            yield from self._stream_text(q, params)
        finally:  # a consumer that stops early (e.g. an HTTP client that disconnects) stops the decoding loop
            cancelled.set()

    def _stream_text(self, q: Queue[Any], params: SamplingParams) -> Iterator[StreamChunk]:
        new: list[int] = []
        sent = ""
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if item in self.eos_token_ids:
                yield StreamChunk("", item, "stop")
                return
            new.append(item)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            cut, hit = cut_at_stop(text, params.stop)
            if hit:
                if len(cut) > len(sent):
                    yield StreamChunk(cut[len(sent):], item)
                yield StreamChunk("", None, "stop")
                return
            if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
                continue
            # hold back a tail that could be the start of a stop string
            hold = max((len(s) - 1 for s in params.stop), default=0)
            safe = text[: len(text) - hold] if hold else text
            if len(safe) > len(sent):
                yield StreamChunk(safe[len(sent):], item)
                sent = safe
        text = cut_at_stop(self.tokenizer.decode(new, skip_special_tokens=True), params.stop)[0]
        yield StreamChunk(text[len(sent):], None, "length")

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def next_token_logprobs(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        """Next-token log-probabilities after each prompt, ``(batch, vocab)`` fp32 on CPU."""
        encoded = [self.encode(p) for p in prompts]
        rows = []
        for start in range(0, len(encoded), self.batch_size):
            ids, mask = self._left_pad(encoded[start:start + self.batch_size])
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = self.module(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1, :]
            rows.append(torch.log_softmax(logits.float(), dim=-1).cpu())
        return torch.cat(rows)

    def split_continuation(self, context: Prompt, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation, tokenised together so the boundary is natural."""
        ctx_text = self.render(context)
        special = isinstance(context, str)
        ctx = list(self.tokenizer(ctx_text, add_special_tokens=special)["input_ids"])
        whole = list(self.tokenizer(ctx_text + continuation, add_special_tokens=special)["input_ids"])
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            return ctx, whole[len(ctx):]
        return ctx, list(self.tokenizer(continuation, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[tuple[Prompt, str]]) -> list[LoglikelihoodResult]:
        """Sum of log-probabilities of each continuation given its context (one forward pass per batch)."""
        items = []
        for i, (ctx, cont) in enumerate(requests):
            c, k = self.split_continuation(ctx, cont)
            if not k:
                raise TuttiError(f"request {i}: the continuation {cont!r} has no tokens")
            seq = (c + k)[-self.max_length:]
            items.append((i, seq, len(k)))
        items.sort(key=lambda x: -len(x[1]))  # similar lengths share a batch
        results: dict[int, LoglikelihoodResult] = {}
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            width = max(len(s) for _, s, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, (_, s, _) in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            logp = torch.log_softmax(
                self.module(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float(), -1
            ).cpu()
            for r, (i, s, n) in enumerate(chunk):
                span = logp[r, len(s) - n - 1: len(s) - 1]  # (n, vocab): predictions of the continuation
                target = torch.tensor(s[len(s) - n:])
                tok_lp = span.gather(-1, target[:, None]).squeeze(-1)
                greedy = bool((span.argmax(-1) == target).all())
                results[i] = LoglikelihoodResult(float(tok_lp.sum()), greedy, n)
        return [results[i] for i in range(len(requests))]


class _StopStrings(StoppingCriteria):
    """Stop a row once its generated text (not the prompt) contains a stop string."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_width: int) -> None:
        self.tokenizer, self.stop, self.prompt_width = tokenizer, tuple(stop), prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)
