"""Who is calling: the API key in ``Authorization: Bearer <key>`` or ``X-API-Key``, checked
against the key store and the caller's rate bucket. Every memory route runs as that user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mnemic.interface.rest.keys import ADMIN, hash_key


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key") or None


def principal(request: Request) -> str:
    key = _presented_key(request)
    if key is None:
        raise ApiError(
            401,
            "missing_api_key",
            "send your API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'; "
            "the admin creates users and their keys with POST /v1/users",
            {"www-authenticate": "Bearer"},
        )
    state = request.app.state
    wait = state.limiter.take(hash_key(key))
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests with this key; retry in {wait:.2f} s "
            "(server.rate_limit and server.rate_burst set the bounds)",
            {"retry-after": str(max(1, round(wait + 0.5)))},
        )
    who = state.keys.authenticate(key)
    if who is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "this API key is not valid; check it, or ask the admin for a new one "
            "(POST /v1/users/{user_id}/keys)",
            {"www-authenticate": "Bearer"},
        )
    return who


def current_user(who: Annotated[str, Depends(principal)]) -> str:
    if who == ADMIN:
        raise ApiError(
            403,
            "user_key_required",
            "the admin key manages users only; call memory routes with a user's key",
        )
    return who


def require_admin(who: Annotated[str, Depends(principal)]) -> None:
    if who != ADMIN:
        raise ApiError(403, "admin_required", "this route needs the admin key (MNEMIC_ADMIN_KEY)")


User = Annotated[str, Depends(current_user)]
Admin = Depends(require_admin)
