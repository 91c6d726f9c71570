"""Build a server from a :class:`ServeConfig` and run it with uvicorn, in the foreground or a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tutti.config.serve import ModelEntry, ServeConfig
from tutti.errors import TuttiError
from tutti.models.interface import Model
from tutti.server.app import Server, create_app

Rebuild = Callable[[Mapping[str, Any]], Model]


def load_entry(entry: ModelEntry) -> Model:
    """Load one config entry: an HF model, a composite (through ``tutti.collab``) or a remote endpoint."""
    return _load(entry)[0]


def _load(entry: ModelEntry) -> tuple[Model, Rebuild | None]:
    if entry.model is not None:
        from tutti.models.hf import HFModel

        model = HFModel.load(entry.model, dtype=entry.dtype, trust_remote_code=entry.trust_remote_code, name=entry.id)
        return model, None
    if entry.remote is not None:
        from tutti.models.remote import RemoteModel

        return RemoteModel.from_spec(entry.remote, name=entry.id), None
    assert entry.composite is not None
    return load_composite(entry.composite, name=entry.id)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def load_composite(spec: str | dict[str, Any], *, name: str) -> tuple[Model, Rebuild]:
    """Build a composite and a function that rebuilds it with strategy overrides, reusing the loaded members.

    Overrides (``extra_body={"collab": {...}}``) are deep-merged into the composite's config; they may change
    the strategy, combiner, weights, aligner or options, but not the members.
    """
    try:
        from tutti.collab import load, load_member
        from tutti.config.composite import load_composite_config, parse_composite
    except ImportError:
        raise TuttiError(f"model {name!r}: composites need tutti.collab, which this install lacks") from None
    if isinstance(spec, str):
        cfg = load_composite_config(spec)
        base: Path | None = Path(spec).parent
    else:
        cfg, base = parse_composite(spec, source=f"model {name!r}"), None
    data = {**cfg.model_dump(), "name": cfg.name or name}
    members = [load_member(m, base=base, dtype=cfg.dtype) for m in cfg.members]
    model = load(parse_composite(data), members=members)

    def rebuild(overrides: Mapping[str, Any]) -> Model:
        if "members" in overrides:
            raise TuttiError("strategy overrides cannot change 'members'; serve another composite instead")
        return load(parse_composite(_deep_merge(data, overrides), source="collab override"), members=members)

    return model, rebuild


def composite_of(strategy: str, members: list[Model], ids: list[str], *, name: str) -> Model:
    """A composite of already-loaded served models (for model names like ``ensemble:a+b``)."""
    try:
        from tutti.collab import load
    except ImportError:
        raise TuttiError("composites need tutti.collab, which this install lacks") from None
    return load({"strategy": strategy, "members": ids, "name": name}, members=members)


def build_server(config: ServeConfig, *, models: Mapping[str, Model] | None = None) -> Server:
    """Load every entry of ``config`` (or use the given ``models``) and wrap them in a :class:`Server`."""
    rebuilders: dict[str, Rebuild] = {}
    if models is None:
        from rich.console import Console

        console = Console(stderr=True)
        loaded: dict[str, Model] = {}
        for entry in config.models:
            with console.status(f"loading {entry.id}"):
                loaded[entry.id], rebuild = _load(entry)
            if rebuild is not None:
                rebuilders[entry.id] = rebuild
        models = loaded
    return Server(
        models, api_key=config.resolved_api_key(), queue_size=config.queue_size,
        max_batch_size=config.max_batch_size, batch_wait_ms=config.batch_wait_ms,
        request_timeout_s=config.request_timeout_s, default_max_tokens=config.default_max_tokens,
        max_n=config.max_n, rebuilders=rebuilders, batch_sizes={m.id: m.max_batch_size for m in config.models if m.max_batch_size},
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise TuttiError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    sock.listen(2048)
    return sock


def _uvicorn(server: Server, log_level: str) -> Any:
    import uvicorn

    cfg = uvicorn.Config(create_app(server), log_level=log_level, timeout_graceful_shutdown=2,
                         access_log=log_level == "debug")
    return uvicorn.Server(cfg)


def run(server: Server, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    sock = _bind(host, port)
    try:
        _uvicorn(server, log_level).run(sockets=[sock])
    finally:
        sock.close()
        server.close()


class BackgroundServer:
    """A real uvicorn server in a daemon thread, bound before it starts (``port=0`` picks a free port).

    Use as a context manager; ``url`` is the API root (``http://127.0.0.1:PORT/v1``).
    """

    def __init__(self, server: Server, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.server = server
        self._sock = _bind(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self._uv = _uvicorn(server, log_level)
        self._uv.config.install_signal_handlers = False  # not the main thread
        self._thread = threading.Thread(target=self._uv.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        """The API root, ending in ``/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start and wait until uvicorn accepts connections."""
        self._thread.start()
        t0 = time.monotonic()
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > timeout:
                raise TuttiError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop uvicorn and the model workers."""
        self._uv.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()
        self.server.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
