"""``tutti serve``: any model or composite behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

Python use::

    from tutti.models import load_model
    from tutti.server import BackgroundServer, Server

    with BackgroundServer(Server({"smol": load_model("smollm2-135m-instruct")})) as srv:
        print(srv.url)  # http://127.0.0.1:PORT/v1, for openai.OpenAI(base_url=srv.url, api_key="-")
"""

from tutti.server.app import APIError, Server, create_app
from tutti.server.runner import BackgroundServer, build_server, load_entry, run

__all__ = ["APIError", "BackgroundServer", "Server", "build_server", "create_app", "load_entry", "run"]
