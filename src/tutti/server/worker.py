"""One worker thread per served model: a bounded queue, batching of compatible requests, cancellation, timeouts.

The worker is the only thread that calls its model, so a model needs no thread safety of its own. Steps:

1. An HTTP handler submits a :class:`Job`; a full queue raises :class:`QueueFull` (the server answers 503).
2. The worker takes the oldest job, *prepares* it (counts prompt tokens, clamps ``max_tokens`` to the context
   left, builds :class:`SamplingParams`), waits up to ``batch_wait_s`` for more, and takes every waiting job
   with the same model and parameters (up to ``max_batch_size``) into one ``generate`` call.
3. A greedy stream on an in-process HF model joins the worker's open streams (:mod:`.streams`): the worker
   decodes one token for each open stream in turn and takes new requests between steps, so concurrent
   streams progress together and a new request never waits for a long stream to end. Other streams
   (sampled, composites, remote) run alone through ``model.stream``. Each chunk is handed to the event loop
   at once, so a slow reader never holds the worker. Between chunks the worker checks the job's cancel event
   (set when the client disconnects) and its deadline, and stops decoding.
4. A non-streamed job whose client disconnects is dropped from the queue, or, when its batch already runs,
   not delivered (both count in ``cancelled_total``).
5. A failing batch is retried one job at a time, so one bad prompt cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tutti.errors import TuttiError
from tutti.models.interface import GenerationOutput, Model, Prompt, SamplingParams, TokenLogprob
from tutti.server.metrics import Metrics
from tutti.server.streams import SteppedStream, steppable

END = object()  # end of a stream


class QueueFull(Exception):
    """The model's queue holds ``queue_size`` jobs already."""


class ContextTooLong(TuttiError):
    """The prompt (plus ``max_tokens``) does not fit the model's context."""


@dataclass(eq=False)
class Job:
    """One request for one prompt.

    Args:
        model: the model (or a composite with request-level overrides) that runs it.
        prompt: text or chat.
        max_tokens: as requested; None = the server default, clamped to the context left.
        make_params: builds the sampling parameters once ``max_new_tokens`` is known.
        loop: the event loop of the HTTP handler that waits for the result.
        stream: run through ``model.stream`` and deliver chunks to ``chunks``.
        deadline: ``time.monotonic()`` after which the job is dropped or stopped.
    """

    model: Model
    prompt: Prompt
    max_tokens: int | None
    make_params: Callable[[int], SamplingParams]
    loop: asyncio.AbstractEventLoop
    stream: bool = False
    token_ids: bool = False
    deadline: float = float("inf")
    cancel: threading.Event = field(default_factory=threading.Event)
    future: asyncio.Future[Any] | None = None
    chunks: asyncio.Queue[Any] | None = None
    params: SamplingParams | None = None
    prompt_tokens: int = 0
    enqueued: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.stream:
            self.chunks = asyncio.Queue()
        else:
            self.future = self.loop.create_future()

    def deliver(self, item: Any) -> None:
        """Hand a result, an exception or a stream item to the waiting handler (thread-safe)."""
        def _set() -> None:
            if self.chunks is not None:
                self.chunks.put_nowait(item)
            elif self.future is not None and not self.future.done():
                if isinstance(item, BaseException):
                    self.future.set_exception(item)
                else:
                    self.future.set_result(item)

        with contextlib.suppress(RuntimeError):  # a closed loop: the server is shutting down
            self.loop.call_soon_threadsafe(_set)

    @property
    def dead(self) -> bool:
        """Cancelled by the client or past its deadline."""
        return self.cancel.is_set() or time.monotonic() > self.deadline


@dataclass(frozen=True)
class TokenPrompt:
    """A prompt given as token ids (``/v1/completions`` with ``prompt: [ids]``, OpenAI's legacy shape).

    Served for what remote token-level members ask (one greedy token with ``logprobs``), exactly: the ids go
    to the model's decoding session as they are, nothing is re-tokenised.
    """

    ids: tuple[int, ...]


def prepare(job: Job, default_max_tokens: int) -> None:
    """Count prompt tokens and fix ``max_new_tokens`` (raises :class:`ContextTooLong`)."""
    encode = getattr(job.model, "encode", None)
    limit = getattr(job.model, "max_length", None)
    ids = isinstance(job.prompt, TokenPrompt)
    counted = ids or callable(encode)
    try:
        n = len(job.prompt.ids) if ids else len(encode(job.prompt)) if callable(encode) else 0
    except TuttiError:  # e.g. a remote model without a local tokenizer: it has no context limit to check
        if isinstance(limit, int):
            raise
        n, counted = 0, False
    want = job.max_tokens
    if isinstance(limit, int) and counted:
        if n >= limit or (want is not None and n + want > limit):
            raise ContextTooLong(
                f"this model's maximum context length is {limit} tokens; the prompt has {n} tokens and "
                f"max_tokens is {want if want is not None else 'unset'}; shorten the prompt or lower max_tokens"
            )
        if want is None:
            want = min(default_max_tokens, limit - n)
    job.prompt_tokens = n
    job.params = job.make_params(default_max_tokens if want is None else want)
    sessionable = hasattr(job.model, "open_session") or hasattr(job.model, "module")
    if ids and not (sessionable and exact_topk_possible(job.model, job.params)):
        raise TuttiError("token-id prompts are served only for one greedy token with logprobs (what a remote "
                         "member of a token-level ensemble asks for); send text for anything else")


def exact_topk_possible(model: Model, params: SamplingParams) -> bool:
    """Whether a one-token greedy request with top log-probs can be answered exactly from the full distribution."""
    return (params.max_new_tokens == 1 and params.greedy and params.top_logprobs > 0 and not params.stop
            and params.n == 1 and not getattr(model, "sparse_logprobs", False)  # a remote model: pass it on
            and hasattr(model, "tokenizer") and hasattr(model, "eos_token_ids"))


@torch.inference_mode()
def exact_topk(model: Any, prompts: list[Prompt], k: int) -> list[list[GenerationOutput]]:
    """Greedy one-token completions whose top alternatives are ``token_id:N`` (exact ids, for token ensembles).

    Equal to ``generate`` with ``max_new_tokens=1`` at temperature 0, but the alternatives keep their ids, so a
    remote caller can scatter them into its vocabulary without re-tokenising decoded text.
    """
    if any(isinstance(p, TokenPrompt) for p in prompts):  # ids go straight into a decoding session
        from tutti.collab.engine import open_member_session

        id_lists = [list(p.ids) if isinstance(p, TokenPrompt) else model.encode(p) for p in prompts]
        lp = open_member_session(model, id_lists).logprobs().cpu()
    else:
        lp = model.next_token_logprobs(prompts)  # (batch, vocab)
    outs = []
    for p, row in zip(prompts, lp, strict=True):
        vals, ids = row.topk(k)
        best = int(ids[0])
        top = tuple((f"token_id:{int(i)}", float(v)) for v, i in zip(vals, ids, strict=True))
        stop = best in model.eos_token_ids
        text = "" if stop else model.tokenizer.decode([best], skip_special_tokens=True)
        outs.append([GenerationOutput(
            text=text, token_ids=() if stop else (best,), finish_reason="stop" if stop else "length",
            prompt_tokens=len(p.ids) if isinstance(p, TokenPrompt) else len(model.encode(p)),
            logprobs=(TokenLogprob(model.tokenizer.decode([best]), float(vals[0]), top),),
        )])
    return outs


def _batchable(p: SamplingParams) -> bool:
    # a seeded sampled request must give the same text whatever else is in flight, so it runs alone
    return p.greedy or p.seed is None


class ModelWorker:
    """The queue and thread serving one model id.

    Args:
        model_id: the served id (for metrics and errors).
        metrics: the server's metrics.
        queue_size: most waiting jobs; more raise :class:`QueueFull`.
        max_batch_size: most jobs per ``generate`` call.
        batch_wait_s: how long to wait for companions after the first job arrives.
        default_max_tokens: ``max_tokens`` when a request gives none.
    """

    def __init__(self, model_id: str, *, metrics: Metrics, queue_size: int = 64, max_batch_size: int = 8,
                 batch_wait_s: float = 0.005, default_max_tokens: int = 256) -> None:
        self.model_id = model_id
        self.metrics = metrics
        self.queue_size = queue_size
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.default_max_tokens = default_max_tokens
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._streams: list[tuple[Job, SteppedStream]] = []  # open greedy streams, stepped in turn
        self._thread = threading.Thread(target=self._loop, name=f"tutti-worker-{model_id}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting (not counting the one running)."""
        return len(self._jobs)

    def submit(self, job: Job) -> None:
        """Queue a job; raises :class:`QueueFull` when ``queue_size`` jobs are waiting."""
        with self._cv:
            if self._closed:
                raise QueueFull(f"model {self.model_id!r} is shutting down")
            if len(self._jobs) >= self.queue_size:
                raise QueueFull(f"model {self.model_id!r} has {self.queue_size} requests waiting; retry later")
            self._jobs.append(job)
            self._cv.notify()

    def close(self) -> None:
        """Stop the thread after the running job; waiting jobs are cancelled."""
        with self._cv:
            self._closed = True
            for job in self._jobs:
                job.deliver(TuttiError("server shutting down"))
            self._jobs.clear()
            self._cv.notify()
        self._thread.join(timeout=10)

    # ---------------------------------------------------------------------------------------------- thread
    def _take(self) -> Job | None:
        """The oldest waiting job; waits for one only while no stream is open (open streams need steps)."""
        with self._cv:
            while not self._jobs and not self._closed and not self._streams:
                self._cv.wait()
            return None if self._closed or not self._jobs else self._jobs.popleft()

    def _ready(self, job: Job) -> bool:
        """Prepare a job; False (and the handler told why) when it cannot run."""
        if job.dead:
            self.metrics.inc("cancelled_total", model=self.model_id)
            job.deliver(TimeoutError("request timed out in the queue") if not job.cancel.is_set() else END)
            return False
        if job.params is None:
            try:
                prepare(job, self.default_max_tokens)
            except Exception as e:
                job.deliver(e)
                return False
        return True

    def _companions(self, first: Job) -> list[Job]:
        assert first.params is not None
        batch = [first]
        if first.stream or not _batchable(first.params) or self.max_batch_size == 1:
            return batch
        until = time.monotonic() + self.batch_wait_s
        with self._cv:
            while len(self._jobs) < self.max_batch_size - 1 and (left := until - time.monotonic()) > 0:
                self._cv.wait(timeout=left)
            for job in list(self._jobs):
                if len(batch) >= self.max_batch_size:
                    break
                if job.stream or job.model is not first.model:
                    continue
                if job.params is None and not self._ready_unlocked(job):
                    continue
                same_kind = isinstance(job.prompt, TokenPrompt) == isinstance(first.prompt, TokenPrompt)
                if job.params == first.params and job.token_ids == first.token_ids and same_kind:
                    self._jobs.remove(job)
                    batch.append(job)
        return batch

    def _ready_unlocked(self, job: Job) -> bool:
        if self._ready(job):
            return True
        self._jobs.remove(job)
        return False

    def _loop(self) -> None:
        while not self._closed:
            if (job := self._take()) is not None:
                self._start(job)
            if self._streams:
                self._step_streams()
        for job, _ in self._streams:
            job.deliver(TuttiError("server shutting down"))

    def _start(self, job: Job) -> None:
        batch = [job]
        try:
            if not self._ready(job):
                return
            batch = self._companions(job)
            now = time.monotonic()
            for j in batch:
                self.metrics.observe("queue_wait_seconds", now - j.enqueued, model=self.model_id)
            if job.stream:
                assert job.params is not None
                if steppable(job.model, job.prompt, job.params):  # progresses together with other streams
                    self._streams.append((job, SteppedStream(job.model, job.prompt, job.params)))
                    self.metrics.inc("prompt_tokens_total", job.prompt_tokens, model=self.model_id)
                else:
                    self._run_stream(job)
            else:
                self.metrics.observe("batch_size", len(batch), model=self.model_id)
                self._run_batch(batch)
        except Exception as e:  # never let the worker thread die: fail the jobs at hand instead
            for j in batch:
                j.deliver(e)

    def _step_streams(self) -> None:
        """One token for every open stepped stream; finished, failed and cancelled streams leave the set."""
        for entry in list(self._streams):
            job, st = entry
            if job.dead:
                self.metrics.inc("cancelled_total", model=self.model_id)
                if not job.cancel.is_set():
                    job.deliver(TimeoutError("request timed out while streaming"))
                self._streams.remove(entry)
                continue
            try:
                chunks = st.step()
            except Exception as e:
                job.deliver(e)
                self._streams.remove(entry)
                continue
            for chunk in chunks:
                if chunk.token_id is not None and chunk.finish_reason is None:
                    self.metrics.inc("completion_tokens_total", 1, model=self.model_id)
                job.deliver(chunk)
            if st.done:
                job.deliver(END)
                self._streams.remove(entry)

    def _run_batch(self, batch: list[Job]) -> None:
        params = batch[0].params
        assert params is not None
        try:
            model, prompts = batch[0].model, [j.prompt for j in batch]
            ids_prompt = isinstance(batch[0].prompt, TokenPrompt)
            if (batch[0].token_ids or ids_prompt) and exact_topk_possible(model, params):
                outs = exact_topk(model, prompts, params.top_logprobs)
            else:
                outs = model.generate(prompts, params=params)
        except Exception as e:
            if len(batch) == 1:
                batch[0].deliver(e)
                return
            for j in batch:  # isolate the failing prompt
                self._run_batch([j])
            return
        for j, o in zip(batch, outs, strict=True):
            self._count(j, o)
            if j.cancel.is_set():  # its client went away while the batch ran: nobody to deliver to
                self.metrics.inc("cancelled_total", model=self.model_id)
                continue
            j.deliver(o)

    def _count(self, job: Job, outs: list[GenerationOutput]) -> None:
        from tutti.server.protocol import completion_tokens

        self.metrics.inc("prompt_tokens_total", job.prompt_tokens or (outs[0].prompt_tokens if outs else 0),
                         model=self.model_id)
        self.metrics.inc("completion_tokens_total", sum(completion_tokens(o) for o in outs), model=self.model_id)

    def _run_stream(self, job: Job) -> None:
        assert job.params is not None
        tokens = 0
        self.metrics.inc("prompt_tokens_total", job.prompt_tokens, model=self.model_id)
        gen = iter(())
        try:
            gen = iter(job.model.stream(job.prompt, params=job.params))
            for chunk in gen:
                if chunk.token_id is not None and chunk.finish_reason is None:
                    tokens += 1
                job.deliver(chunk)
                if job.dead:
                    self.metrics.inc("cancelled_total", model=self.model_id)
                    if not job.cancel.is_set():
                        job.deliver(TimeoutError("request timed out while streaming"))
                    return
            job.deliver(END)
        except Exception as e:
            job.deliver(e)
        finally:
            if hasattr(gen, "close"):
                gen.close()  # stops the model's decoding loop when we leave early
            self.metrics.inc("completion_tokens_total", tokens, model=self.model_id)
