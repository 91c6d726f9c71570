"""Queueing, batching, 503 on a full queue, timeouts and cancellation on client disconnect (real servers)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tutti.models.interface import SamplingParams

CHAT = [{"role": "user", "content": "hello there"}]


def _forward_counter(model):
    calls = [0]

    def hook(*_):
        calls[0] += 1

    return calls, model.module.register_forward_hook(hook)


def test_hf_stream_stops_decoding_when_closed(repeater) -> None:
    tiny = repeater
    calls, handle = _forward_counter(tiny)
    try:
        full = list(tiny.stream("hello", params=SamplingParams(max_new_tokens=120)))
        assert full[-1].finish_reason == "length" and calls[0] == 120  # the control: no early stop by itself
        calls[0] = 0
        gen = tiny.stream("hello", params=SamplingParams(max_new_tokens=120))
        for _ in range(3):
            next(gen)
        gen.close()
        with tiny._lock:  # the decoding thread has let go of the model
            stopped_at = calls[0]
        time.sleep(0.2)
        assert calls[0] == stopped_at < 60
    finally:
        handle.remove()


def test_client_disconnect_cancels_generation(repeater, make_server) -> None:
    tiny = repeater
    calls, handle = _forward_counter(tiny)
    try:
        with make_server({"tiny": tiny}) as srv:
            body = {"model": "tiny", "prompt": "hello", "max_tokens": 300, "temperature": 0, "stream": True}
            with httpx.stream("POST", srv.url + "/completions", json=body) as r:
                lines = r.iter_lines()
                got = [next(lines) for _ in range(4)]
            assert all(g.startswith("data: ") or not g for g in got)
            deadline = time.monotonic() + 10
            while srv.server.metrics.value("cancelled_total", model="tiny") < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert srv.server.metrics.value("cancelled_total", model="tiny") == 1
            with tiny._lock:
                assert calls[0] < 150  # far fewer than the 300 steps asked for
            # the worker is free again: the next request is served
            r2 = httpx.post(srv.url + "/completions", json={**body, "stream": False, "max_tokens": 3})
            assert r2.status_code == 200 and r2.json()["usage"]["completion_tokens"] == 3
    finally:
        handle.remove()


def test_full_queue_answers_503_and_recovers(tiny, gated, make_server) -> None:
    slow = gated(tiny)
    with make_server({"tiny": slow}, queue_size=1, max_batch_size=1) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=60)
        kw = {"model": "tiny", "messages": CHAT, "max_tokens": 2, "temperature": 0}
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(c.chat.completions.create, **kw)
            assert slow.entered.wait(10)  # the worker holds the first request
            queued = pool.submit(c.chat.completions.create, **kw)
            deadline = time.monotonic() + 10
            while srv.server.workers["tiny"].depth < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(openai.InternalServerError) as e:
                c.chat.completions.create(**kw)
            assert e.value.status_code == 503 and e.value.code == "overloaded"
            slow.gate.set()
            assert running.result().choices[0].message.content == queued.result().choices[0].message.content
        assert srv.server.metrics.value("rejected_total", model="tiny") == 1
        assert 'tutti_rejected_total{model="tiny"} 1' in httpx.get(srv.url[:-3] + "/metrics").text


def test_request_timeout_504(tiny, gated, make_server) -> None:
    slow = gated(tiny)
    with make_server({"tiny": slow}, request_timeout_s=0.5) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=30)
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
        assert e.value.status_code == 504 and e.value.code == "timeout"
        assert time.monotonic() - t0 < 10
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, stream=True)
        assert e.value.status_code == 504
        slow.gate.set()


def test_compatible_requests_are_batched_and_match_single_runs(tiny, gated, make_server) -> None:
    slow = gated(tiny)
    prompts = ["hello", "The cat", "xyz 123", "q"]
    params = SamplingParams(max_new_tokens=8)
    expected = [tiny.generate([p], params=params)[0][0].text for p in prompts]
    with make_server({"tiny": slow}, max_batch_size=8, batch_wait_ms=50) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=60)
        with ThreadPoolExecutor(len(prompts) + 1) as pool:
            first = pool.submit(c.completions.create, model="tiny", prompt="zz", max_tokens=8, temperature=0)
            assert slow.entered.wait(10)
            futs = [pool.submit(c.completions.create, model="tiny", prompt=p, max_tokens=8, temperature=0)
                    for p in prompts]
            deadline = time.monotonic() + 10
            while srv.server.workers["tiny"].depth < len(prompts) and time.monotonic() < deadline:
                time.sleep(0.01)
            slow.gate.set()
            got = [f.result().choices[0].text for f in futs]
            first.result()
        assert got == expected
        metrics = httpx.get(srv.url[:-3] + "/metrics").text
        assert 'tutti_batch_size_bucket{model="tiny",le="2"} 1' in metrics  # the lone first request
        assert 'tutti_batch_size_bucket{model="tiny",le="4"} 2' in metrics  # then all four in one call
        assert 'tutti_batch_size_count{model="tiny"} 2' in metrics


def test_a_bad_prompt_does_not_fail_its_batch(tiny, make_server) -> None:
    with make_server({"tiny": tiny}, batch_wait_ms=200) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=60)
        long = "a b c " * 400
        out: dict[str, object] = {}

        def call(key: str, prompt: str) -> None:
            try:
                out[key] = c.completions.create(model="tiny", prompt=prompt, max_tokens=4, temperature=0)
            except openai.APIStatusError as e:
                out[key] = e.status_code

        ts = [threading.Thread(target=call, args=(k, p)) for k, p in (("ok", "hello"), ("bad", long))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert out["bad"] == 400
        assert out["ok"].choices[0].text == tiny.generate(["hello"], params=SamplingParams(max_new_tokens=4))[0][0].text


def test_bounded_load_no_failures(tiny, make_server) -> None:
    """Fixed clients x fixed seconds on loopback: every request succeeds, batches form, the queue drains."""
    from tutti.server.loadtest import run_load

    with make_server({"tiny": tiny}, max_batch_size=4) as srv:
        res = run_load(srv.url, "tiny", clients=4, seconds=3.0, max_tokens=8)
        assert res.failures == []
        assert res.requests >= 4 and all(0 < t <= 8 for t in res.completion_tokens)
        assert res.percentile(50) <= res.percentile(95) <= max(res.latencies)
        assert srv.server.workers["tiny"].depth == 0
        text = httpx.get(srv.url[:-3] + "/metrics").text
        assert f'tutti_requests_total{{endpoint="/v1/chat/completions",status="200"}} {res.requests}' in text


def test_a_failing_model_call_does_not_kill_the_worker(tiny, make_server) -> None:
    from tutti.errors import TuttiError

    class StreamRefuses:  # a real model whose stream refuses before returning an iterator
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

        def stream(self, prompt, *, params):
            raise TuttiError("this model cannot stream")

    with make_server({"tiny": StreamRefuses(tiny)}) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError, match="cannot stream"):
            c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, stream=True)
        ok = c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2, temperature=0)
        assert ok.usage.completion_tokens == 2


def test_client_disconnect_cancels_queued_and_running_plain_requests(tiny, gated, make_server) -> None:
    """Non-streamed requests whose clients give up: the queued one never runs, the running one is not delivered."""
    slow = gated(tiny)
    calls, handle = _forward_counter(tiny)
    try:
        with make_server({"tiny": slow}, max_batch_size=1) as srv:
            body = {"model": "tiny", "prompt": "hello", "max_tokens": 4, "temperature": 0}
            impatient = httpx.Timeout(30, read=0.5)
            with pytest.raises(httpx.ReadTimeout):  # runs: the worker is held at the gate
                httpx.post(srv.url + "/completions", json=body, timeout=impatient)
            assert slow.entered.is_set()
            with pytest.raises(httpx.ReadTimeout):  # waits in the queue behind it
                httpx.post(srv.url + "/completions", json={**body, "prompt": "The cat"}, timeout=impatient)
            assert srv.server.workers["tiny"].depth == 1  # still queued: the worker is held by the first
            time.sleep(0.3)  # both handlers notice their clients left (polled every 50 ms)
            slow.gate.set()
            deadline = time.monotonic() + 10
            while srv.server.metrics.value("cancelled_total", model="tiny") < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert srv.server.metrics.value("cancelled_total", model="tiny") == 2
            assert calls[0] == 4  # only the running request decoded (4 tokens); the queued one was dropped
            ok = httpx.post(srv.url + "/completions", json={**body, "max_tokens": 3}, timeout=30)
            assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
            metrics = httpx.get(srv.url[:-3] + "/metrics").text
            assert 'tutti_requests_total{endpoint="/v1/completions",status="499"} 2' in metrics
    finally:
        handle.remove()


def test_concurrent_streams_progress_together(repeater, tiny, make_server) -> None:
    """Two streams: the second one's first chunk arrives before the first one ends; texts equal non-streamed."""
    with make_server({"rep": repeater, "tiny": tiny}) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="-", max_retries=0, timeout=60)
        for model, n in (("rep", 60), ("tiny", 24)):
            stamps: dict[str, list[float]] = {"a": [], "b": []}
            texts: dict[str, str] = {}
            started = threading.Event()

            def read(key: str, prompt: str, model: str = model, n: int = n, stamps=stamps, texts=texts,
                     started=started) -> None:
                parts = []
                for ch in c.completions.create(model=model, prompt=prompt, max_tokens=n, temperature=0, stream=True):
                    stamps[key].append(time.monotonic())
                    started.set()
                    parts.append(ch.choices[0].text if ch.choices else "")
                texts[key] = "".join(parts)

            a = threading.Thread(target=read, args=("a", "hello"))
            a.start()
            assert started.wait(30)
            b = threading.Thread(target=read, args=("b", "The cat"))
            b.start()
            a.join()
            b.join()
            if model == "rep":
                assert stamps["b"][0] < stamps["a"][-1]  # b did not wait for a to finish
            for key, prompt in (("a", "hello"), ("b", "The cat")):
                plain = c.completions.create(model=model, prompt=prompt, max_tokens=n, temperature=0)
                assert texts[key] == plain.choices[0].text
