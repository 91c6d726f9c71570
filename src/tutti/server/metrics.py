"""Prometheus text-format metrics (counters, gauges, histograms), thread-safe and dependency-free."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels)
    return "{" + inner + "}"


class Metrics:
    """A small registry of named metrics rendered as Prometheus text (``GET /metrics``).

    Counters and histograms take labels as keyword arguments; gauges are read from callables at scrape time,
    so queue depths are always current.
    """

    def __init__(self, prefix: str = "tutti") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._hists: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._gauges: dict[str, Callable[[], dict[Labels, float]]] = {}

    def counter(self, name: str, help_: str) -> None:
        """Declare a counter."""
        self._help[name] = ("counter", help_)

    def histogram(self, name: str, help_: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        """Declare a histogram with upper bounds ``buckets``."""
        self._help[name] = ("histogram", help_)
        self._buckets[name] = buckets

    def gauge(self, name: str, help_: str, read: Callable[[], dict[Labels, float]]) -> None:
        """Declare a gauge whose labelled values ``read()`` returns at scrape time."""
        self._help[name] = ("gauge", help_)
        self._gauges[name] = read

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter."""
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            row = self._hists[name].setdefault(key, [0.0] * (len(self._buckets[name]) + 2))
            for i, b in enumerate(self._buckets[name]):
                if value <= b:
                    row[i] += 1
            row[-2] += 1  # count
            row[-1] += value  # sum

    def value(self, name: str, **labels: str) -> float:
        """Current value of a counter (0 when never incremented); for tests and benchmarks."""
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """All metrics in Prometheus text exposition format 0.0.4."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_) in self._help.items():
                full = f"{self.prefix}_{name}"
                lines += [f"# HELP {full} {help_}", f"# TYPE {full} {kind}"]
                if kind == "counter":
                    for lab, v in self._counters[name].items():
                        lines.append(f"{full}{_labels(lab)} {v:g}")
                elif kind == "histogram":
                    for lab, row in self._hists[name].items():
                        for b, c in zip(self._buckets[name], row, strict=False):
                            lines.append(f"{full}_bucket{_labels((*lab, ('le', f'{b:g}')))} {c:g}")
                        lines.append(f"{full}_bucket{_labels((*lab, ('le', '+Inf')))} {row[-2]:g}")
                        lines.append(f"{full}_count{_labels(lab)} {row[-2]:g}")
                        lines.append(f"{full}_sum{_labels(lab)} {row[-1]:g}")
                else:
                    for lab, v in self._gauges[name]().items():
                        lines.append(f"{full}{_labels(lab)} {v:g}")
        return "\n".join(lines) + "\n"


def server_metrics(queue_depths: Callable[[], dict[str, int]]) -> Metrics:
    """The metrics ``tutti serve`` exposes."""
    m = Metrics()
    m.counter("requests_total", "HTTP requests by model, endpoint and status code.")
    m.counter("prompt_tokens_total", "Prompt tokens processed.")
    m.counter("completion_tokens_total", "Tokens generated.")
    m.counter("cancelled_total", "Generations stopped early (client gone or timeout).")
    m.counter("rejected_total", "Requests refused because the model's queue was full (HTTP 503).")
    m.histogram("request_latency_seconds", "Time from request to last byte.")
    m.histogram("time_to_first_token_seconds", "Time from request to first streamed token.")
    m.histogram("queue_wait_seconds", "Time a request waited before its model started on it.")
    m.histogram("batch_size", "Requests merged into one generate call.", BATCH_BUCKETS)
    m.gauge("queue_depth", "Requests waiting per model.",
            lambda: {(("model", k),): float(v) for k, v in queue_depths().items()})
    return m
