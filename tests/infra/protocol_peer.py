"""A protocol peer for client tests: a small HTTP server on 127.0.0.1 that speaks the OpenAI
API (embeddings, chat completions, server-sent events) with scripted replies. It is not a
model: it lets tests drive our clients through timeouts, retries and malformed answers."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: str | None = None  # a raw body instead of the peer's normal answer
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content: str = "hello"  # chat: the assistant's text
    sse: list[str] | None = None  # chat: stream these deltas as server-sent events


class ProtocolPeer:
    """Answers each POST with the next scripted ``Reply`` (or a default one) and logs every
    request with its path and Authorization header in ``requests``."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                peer.requests.append(
                    {"path": self.path, "auth": self.headers.get("authorization"), **payload}
                )
                reply = peer.replies.pop(0) if peer.replies else Reply()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                # the client may have given up already (timeout tests)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    peer.respond(self, payload, reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def respond(self, handler: BaseHTTPRequestHandler, payload: dict, reply: Reply) -> None:
        body = reply.body if reply.body is not None else self.answer(payload, reply)
        handler.send_response(reply.status)
        handler.send_header("content-type", "application/json")
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.send_header("content-length", str(len(body.encode())))
        handler.end_headers()
        handler.wfile.write(body.encode())

    def answer(self, payload: dict, reply: Reply) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
