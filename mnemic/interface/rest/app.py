"""The REST app: ``create_app(settings)`` wires the SDK, the key store, bounds, metrics,
error handling and the routes. Served by ``mnemic serve`` (uvicorn, 127.0.0.1 by default)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnemic.config import Settings, load_settings
from mnemic.errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigError,
    Conflict,
    InvalidInput,
    MnemicError,
    NotFound,
    StoreError,
)
from mnemic.interface.rest.auth import Admin, ApiError
from mnemic.interface.rest.keys import KeyStore
from mnemic.interface.rest.limits import BodyLimit, RateLimiter, error_body
from mnemic.interface.rest.metrics import Metrics, MetricsMiddleware
from mnemic.interface.rest.routes import router
from mnemic.interface.rest.schemas import ErrorBody, Health
from mnemic.sdk import Memory

log = logging.getLogger("mnemic.rest")

DASHBOARD = Path(__file__).with_name("static") / "dashboard.html"
# the page talks only to this server and loads nothing from elsewhere
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

# (status, code) of each SDK error; the SDK's message already says what to do
_STATUS: list[tuple[type[MnemicError], int, str]] = [
    (InvalidInput, 400, "invalid_input"),
    (NotFound, 404, "not_found"),
    (AccessDenied, 403, "access_denied"),
    (Conflict, 409, "conflict"),
    (BackendUnavailable, 502, "backend_unavailable"),
    (StoreError, 503, "store_unavailable"),
    (ConfigError, 500, "config_error"),
]


def _version() -> str:
    try:
        return version("mnemic")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def create_app(settings: Settings | None = None, *, memory: Memory | None = None) -> FastAPI:
    """The API over ``memory`` (default: a Memory of ``settings``). A generated admin key, if
    one was made at this start, is in ``app.state.generated_admin_key`` (show it once)."""
    settings = settings or (memory.settings if memory is not None else load_settings())
    mem = memory if memory is not None else Memory(settings)
    keys = KeyStore(settings.home / "keys.db")
    admin_key = settings.server.admin_key or os.environ.get("MNEMIC_ADMIN_KEY")
    generated = keys.setup_admin(admin_key)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        keys.close()
        if memory is None:  # a memory passed in is the caller's to close
            mem.close()

    app = FastAPI(
        title="mnemic",
        version=_version(),
        description="A memory operating system for LLM agents. Authenticate with "
        '\'Authorization: Bearer <API key>\'; errors are {"error": {"code", "message"}}.',
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            404: {"model": ErrorBody},
            409: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
            429: {"model": ErrorBody},
        },
    )
    app.state.memory = mem
    app.state.keys = keys
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.server.rate_limit, settings.server.rate_burst)
    app.state.metrics = metrics
    app.state.generated_admin_key = generated
    _install_errors(app)
    app.include_router(router)

    @app.get("/v1/health", tags=["system"])
    def health() -> Health:
        """Liveness and what the server runs on; needs no key."""
        llm = settings.llm
        return Health(
            status="ok",
            version=_version(),
            store=settings.store.backend,
            llm=None if llm.backend == "none" else f"{llm.backend}:{llm.model}",
        )

    @app.get("/v1/metrics", dependencies=[Admin], tags=["system"], response_class=PlainTextResponse)
    def prometheus() -> str:
        """Request counts and latency histograms, users and stored items (Prometheus text)."""
        users = keys.users()
        cubes = items = 0
        for user in users:
            for cube in mem.store.list_cubes(user.user_id):
                cubes += 1
                items += mem.store.count_items(user.user_id, cube.cube_id)
        return metrics.render(
            {"mnemic_users": len(users), "mnemic_cubes": cubes, "mnemic_active_items": items}
        )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard")

    @app.get("/dashboard", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        """The web dashboard: one static page over this API (the key stays in the tab)."""
        return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"), headers=_PAGE_HEADERS)

    app.add_middleware(
        BodyLimit,
        max_bytes=settings.server.max_body_bytes,
        per_path={"/v1/cubes/archive": settings.server.max_archive_bytes},
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _install_errors(app: FastAPI) -> None:
    def answer(status: int, code: str, message: str, headers: Any = None) -> JSONResponse:
        return JSONResponse(error_body(code, message), status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(MnemicError)
    async def mnemic_error(request: Request, exc: MnemicError) -> JSONResponse:
        for kind, status, code in _STATUS:
            if isinstance(exc, kind):
                if status >= 500:
                    log.error("%s on %s: %s", code, request.url.path, exc)
                return answer(status, code, str(exc))
        log.exception("unexpected mnemic error on %s", request.url.path, exc_info=exc)
        return answer(500, "internal_error", f"{exc}; see the server log")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return answer(422, "invalid_request", "fix the request and retry: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "no_route", 405: "method_not_allowed"}
        hint = {
            404: "no such route; the routes are listed in /openapi.json and /docs",
            405: "this route does not take that method; see /openapi.json",
        }
        return answer(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            hint.get(exc.status_code, str(exc.detail)),
            getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return answer(
            500, "internal_error", f"the server failed ({type(exc).__name__}); see its log"
        )
