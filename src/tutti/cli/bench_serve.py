"""``tutti bench serve``: a bounded loopback load test of ``tutti serve`` against ``transformers serve``.

Setup: both servers run as their own processes on 127.0.0.1 with the same model; each is warmed up once.
Run: rounds interleave the arms (tutti, tutti without batching, the peer), each arm serving ``--clients``
concurrent greedy chat clients for ``--seconds``. Report: the median over rounds of throughput and latency
percentiles, with ratios against the peer, written to ``docs/benchmarks.md`` (section ``serve``).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

from tutti.errors import TuttiError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], port: int, timeout: float = 300.0) -> subprocess.Popen[bytes]:
    import httpx

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TuttiError(f"server exited with code {proc.returncode}: {shlex.join(cmd)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TuttiError(f"server did not answer /health in {timeout:g} s: {shlex.join(cmd)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def register(bench_app: typer.Typer) -> None:
    """Add ``tutti bench serve``."""

    @bench_app.command("serve")
    def bench_serve(
        model: str = typer.Option("smollm2-135m-instruct", help="Zoo name, folder or hub id served by both."),
        clients: int = typer.Option(4, help="Concurrent clients."),
        seconds: float = typer.Option(15.0, help="Seconds each arm is loaded per round."),
        rounds: int = typer.Option(3, help="Interleaved rounds (the median is reported)."),
        max_tokens: int = typer.Option(16, "--max-tokens", help="Tokens per answer."),
        request_timeout: float = typer.Option(600.0, "--request-timeout", help="Client timeout per request (s)."),
        peer: bool = typer.Option(True, "--peer/--no-peer", help="Include `transformers serve` as the peer."),
        out: Path = typer.Option(Path("docs/benchmarks.md"), help="Markdown file to update."),
    ) -> None:
        """Load-test tutti serve (batched and unbatched) and transformers serve on loopback; no failure allowed."""
        from tutti.models.zoo import resolve_model
        from tutti.recipes.report import machine_line, md_table, write_section
        from tutti.server.loadtest import run_load

        path = str(resolve_model(model))
        arms: dict[str, tuple[list[str], str]] = {}
        for name, extra in (("tutti serve", []), ("tutti serve, no batching", ["--max-batch-size", "1"])):
            port = _free_port()
            cmd = [sys.executable, "-m", "tutti.cli.main", "serve", path, "--id", "bench", "--port", str(port),
                   "--log-level", "warning", *extra]
            arms[name] = (cmd, f"http://127.0.0.1:{port}/v1|bench")
        if peer:
            port = _free_port()
            arms["transformers serve (peer)"] = (
                ["transformers", "serve", path, "--host", "127.0.0.1", "--port", str(port)],
                f"http://127.0.0.1:{port}/v1|{path}",
            )
        procs = {}
        load_before = os.getloadavg()[0]
        try:
            for name, (cmd, target) in arms.items():
                url, mid = target.split("|", 1)
                procs[name] = _start(cmd, int(url.split(":")[2].split("/")[0]))
                warm = run_load(url, mid, clients=1, seconds=0.1, max_tokens=max_tokens,  # loads lazy peers
                                timeout_s=request_timeout)
                if warm.failures:
                    raise TuttiError(f"{name}: warm-up failed: {warm.failures[0]}")
            results: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
            for r in range(rounds):
                for name, (_, target) in arms.items():
                    url, mid = target.split("|", 1)
                    res = run_load(url, mid, clients=clients, seconds=seconds, max_tokens=max_tokens,
                                   timeout_s=request_timeout)
                    if res.failures:
                        raise TuttiError(f"{name}: {len(res.failures)} failed requests, e.g. {res.failures[0]}")
                    results[name].append(res.summary())
                    typer.echo(f"round {r + 1} {name}: {res.summary()}", err=True)
        finally:
            for p in procs.values():
                _stop(p)

        def med(name: str, key: str) -> float:
            import statistics  # imported here: its decimal module costs ~0.1-0.2 s of every tutti command

            return statistics.median(x[key] for x in results[name])

        ref = "transformers serve (peer)" if peer else "tutti serve, no batching"
        rows = []
        for name in arms:
            rows.append([name, int(sum(x["requests"] for x in results[name])), 0, f"{med(name, 'req_per_s'):.2f}",
                         f"{med(name, 'tok_per_s'):.1f}", f"{med(name, 'p50_s'):.2f}", f"{med(name, 'p95_s'):.2f}",
                         f"{med(name, 'tok_per_s') / med(ref, 'tok_per_s'):.2f}x",
                         f"{med(name, 'p50_s') / med(ref, 'p50_s'):.2f}x"])
        cmd_line = (f"tutti bench serve --model {model} --clients {clients} --seconds {seconds:g} --rounds {rounds} "
                    f"--max-tokens {max_tokens}" + ("" if peer else " --no-peer"))
        md = "\n".join([
            "## Serving: bounded loopback load test",
            "",
            f"Command: `{cmd_line}`  ",
            f"Machine: {machine_line()}  ",
            f"{clients} concurrent clients send greedy chat requests ({max_tokens} new tokens) for {seconds:g} s "
            f"per arm and round; {rounds} interleaved rounds, medians shown; each server is its own process on "
            f"127.0.0.1 with `{model}` in fp32. Ratios are against {ref}. No request failed. "
            f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run "
            f"(other jobs shared the {os.cpu_count()} cores: absolute figures are only comparable within this table).",
            "",
            md_table(["server", "requests (all rounds)", "failed", "req/s", "tokens/s", "p50 latency (s)",
                      "p95 latency (s)", f"tokens/s vs {ref.split(' (')[0]}", "p50 vs peer"], rows),
        ])
        write_section(out, "serve", md)
        typer.echo(md)
