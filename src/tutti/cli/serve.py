"""``tutti serve``: serve models and composites behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from tutti.errors import ConfigError

HELP = """Serve models and composites behind an OpenAI-compatible HTTP API.

TARGET is a serve config YAML (a 'models' list of {id, model | composite | remote}) or a single model (zoo name,
folder, hub id) served under its own name. Routes: GET /v1/models, POST /v1/chat/completions, POST
/v1/completions (stream: true gives server-sent events; also token-id prompts for remote ensemble members), GET
/health, GET /metrics (Prometheus). Compatible requests batch; greedy streams progress together; a client that
disconnects cancels its request; a full queue answers 503. Binds 127.0.0.1 unless --host says otherwise. The API
key comes from --api-key, else $TUTTI_API_KEY, else the config.
"""


def register(app: typer.Typer) -> None:
    """Add the ``serve`` subcommand."""

    @app.command("serve", help=HELP)
    def serve(
        target: str = typer.Argument(..., help="Serve config YAML, or one model (zoo name, folder, hub id)."),
        host: str | None = typer.Option(None, "--host", help="Bind address [config or 127.0.0.1]."),
        port: int | None = typer.Option(None, "--port", help="TCP port [config or 8000]."),
        api_key: str | None = typer.Option(None, "--api-key", help="Bearer key clients must send."),
        queue_size: int | None = typer.Option(None, "--queue-size", help="Waiting requests per model before 503."),
        max_batch_size: int | None = typer.Option(None, "--max-batch-size", help="Requests per generate call."),
        timeout: float | None = typer.Option(None, "--timeout", help="Per-request timeout in seconds."),
        model_id: str | None = typer.Option(None, "--id", help="Model id when TARGET is one model [its name]."),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
        check: bool = typer.Option(False, "--check", help="Validate the config and load the models, then exit."),
    ) -> None:
        from tutti.config.serve import load_serve_config, parse_serve_config
        from tutti.server import build_server, run

        if target.endswith((".yaml", ".yml")):
            if not Path(target).is_file():
                raise ConfigError(f"{target}: no such serve config")
            cfg = load_serve_config(target)
        else:
            mid = model_id or (Path(target).name if Path(target).exists() else target)
            cfg = parse_serve_config({"models": [{"id": mid, "model": target}]}, source=target)
        updates = {k: v for k, v in {
            "host": host, "port": port, "queue_size": queue_size, "max_batch_size": max_batch_size,
            "request_timeout_s": timeout, "api_key": api_key or os.environ.get("TUTTI_API_KEY"),
        }.items() if v is not None}
        cfg = parse_serve_config({**cfg.model_dump(), **updates}, source=target)
        server = build_server(cfg)
        if check:
            server.close()
            typer.echo(f"ok: {', '.join(server.models)}")
            return
        typer.echo(f"tutti serve: {', '.join(server.models)} on http://{cfg.host}:{cfg.port}/v1", err=True)
        run(server, host=cfg.host, port=cfg.port, log_level=log_level)
