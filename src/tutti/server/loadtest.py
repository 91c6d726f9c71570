"""A bounded load test of any OpenAI-compatible endpoint: N concurrent clients for T seconds, on loopback.

Each client loops over chat requests until the time is up (a request started before the end is awaited), and
every outcome is recorded: latency, status, completion tokens. Nothing grows without bound: the number of
requests in flight is at most ``clients``.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PROMPTS = (
    "What is the capital of France?",
    "Give one synonym of 'happy'.",
    "Name a prime number larger than 10.",
    "What colour is the sky on a clear day?",
    "Translate 'thank you' into Spanish.",
    "How many legs does a spider have?",
    "Name a planet of the solar system.",
    "What is 7 times 8?",
)


@dataclass
class LoadResult:
    """What a load test measured.

    Args:
        seconds: wall time from the first request to the last answer.
        latencies: seconds per successful request.
        completion_tokens: tokens generated per successful request.
        failures: one line per failed request (status or exception).
    """

    seconds: float
    latencies: list[float] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Successful requests."""
        return len(self.latencies)

    @property
    def requests_per_s(self) -> float:
        """Successful requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second over all clients."""
        return sum(self.completion_tokens) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` in [0, 100] (nearest rank), seconds."""
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]

    def summary(self) -> dict[str, Any]:
        """Figures for a report row."""
        return {"requests": self.requests, "failures": len(self.failures), "req_per_s": self.requests_per_s,
                "tok_per_s": self.tokens_per_s, "p50_s": self.percentile(50), "p95_s": self.percentile(95),
                "mean_s": statistics.fmean(self.latencies) if self.latencies else float("nan")}


def run_load(base_url: str, model: str, *, clients: int = 4, seconds: float = 10.0, max_tokens: int = 16,
             api_key: str | None = None, timeout_s: float = 120.0) -> LoadResult:
    """Run ``clients`` concurrent clients for ``seconds`` against ``base_url`` (``.../v1``), greedy chat requests.

    Args:
        base_url: the API root.
        model: model id to ask for.
        clients: concurrent clients (each waits for its answer before the next request).
        seconds: how long new requests are started.
        max_tokens: tokens per answer.
        api_key: bearer key, if the endpoint wants one.
        timeout_s: HTTP timeout per request (a timeout counts as a failure).
    """
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    result = LoadResult(seconds=0.0)
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s) as http:
            k = i
            while time.monotonic() < stop_at:
                body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                        "max_tokens": max_tokens, "temperature": 0}
                k += clients
                t0 = time.monotonic()
                try:
                    r = http.post("/chat/completions", json=body)
                    ok = r.status_code == 200
                    why = "" if ok else f"HTTP {r.status_code}: {r.text[:120]}"
                    tokens = int(r.json().get("usage", {}).get("completion_tokens", 0)) if ok else 0
                except (httpx.HTTPError, ValueError) as e:
                    ok, why, tokens = False, f"{type(e).__name__}: {e}", 0
                dt = time.monotonic() - t0
                with lock:
                    if ok:
                        result.latencies.append(dt)
                        result.completion_tokens.append(tokens)
                    else:
                        result.failures.append(why)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - start
    return result
