"""Running the REST app: with uvicorn in the foreground (``mnemic serve``) or in a thread (tests,
benchmarks) on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from mnemic.config import Settings
from mnemic.sdk import Memory


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until interrupted; a freshly generated admin key is announced once."""
    import uvicorn

    from mnemic.interface.rest.app import create_app

    app = create_app(settings)
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    if app.state.generated_admin_key:
        announce(f"admin key (shown once; only its hash is kept): {app.state.generated_admin_key}")
    announce(f"mnemic serving on http://{host}:{port} (OpenAPI: /docs, /openapi.json)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


class ThreadedServer:
    """The app under uvicorn in a background thread on 127.0.0.1 and a free port:
    ``with ThreadedServer(settings) as srv: httpx.get(srv.url + "/v1/health")``."""

    def __init__(self, settings: Settings, *, memory: Memory | None = None) -> None:
        import uvicorn

        from mnemic.interface.rest.app import create_app

        self.app = create_app(settings, memory=memory)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
