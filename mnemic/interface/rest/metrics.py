"""Request counts and latency histograms per route, and store counts, as Prometheus text."""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        # (method, route) -> per-bucket counts (+inf last), sum of seconds, count
        self.hist: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            h = self.hist.setdefault((method, route), [0.0] * (len(BUCKETS) + 3))
            h[bisect.bisect_left(BUCKETS, seconds)] += 1
            h[-2] += seconds
            h[-1] += 1

    def render(self, gauges: dict[str, float]) -> str:
        out = [
            "# HELP mnemic_http_requests_total HTTP requests by method, route and status.",
            "# TYPE mnemic_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(
                    f'mnemic_http_requests_total{{method="{method}",route="{route}",'
                    f'status="{status}"}} {n}'
                )
            out += [
                "# HELP mnemic_http_request_seconds Time to answer a request.",
                "# TYPE mnemic_http_request_seconds histogram",
            ]
            for (method, route), h in sorted(self.hist.items()):
                labels = f'method="{method}",route="{route}"'
                cumulative: float = 0.0
                for bound, hits in zip((*BUCKETS, "+Inf"), h[: len(BUCKETS) + 1], strict=True):
                    cumulative += hits
                    out.append(
                        f'mnemic_http_request_seconds_bucket{{{labels},le="{bound}"}} '
                        f"{int(cumulative)}"
                    )
                out.append(f"mnemic_http_request_seconds_sum{{{labels}}} {h[-2]:.6f}")
                out.append(f"mnemic_http_request_seconds_count{{{labels}}} {int(h[-1])}")
        for name, value in sorted(gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Times every HTTP request; the label is the route template, never the raw path, so ids
    in paths do not create a series each."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)
