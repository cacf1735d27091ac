"""A Python client for the REST API (``mnemic serve``), with the SDK's method names and
arguments: code written against :class:`mnemic.Memory` runs against a server by swapping the
object. Sync (:class:`Client`) and async (:class:`AsyncClient`) share the request building
and differ only in transport (httpx).

    from mnemic.client import Client
    mem = Client("http://127.0.0.1:8750", api_key="mn_...")
    mem.add("I moved to Lisbon in May.")
    for hit in mem.search("where do I live?"):
        print(hit.score, hit.item.text)

The user is the API key's; ``user_id`` arguments are accepted for compatibility with the
SDK and must name that user.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter

from mnemic.errors import (
    AccessDenied,
    BackendUnavailable,
    Conflict,
    InvalidInput,
    MnemicError,
    NotFound,
    StoreError,
)
from mnemic.models import ChatReply, HistoryEntry, Link, MemoryItem, MemoryTree, SearchHit

DEFAULT_URL = "http://127.0.0.1:8750"


class AuthenticationError(AccessDenied):
    """The server did not accept the API key (missing or wrong)."""


class RateLimited(MnemicError):
    """Too many requests with this key; ``retry_after`` says how long to wait (seconds)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_ERRORS: dict[int, type[MnemicError]] = {
    400: InvalidInput,
    401: AuthenticationError,
    403: AccessDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
    503: StoreError,
}

_FILTER_PARAMS = {"kinds": "kind", "statuses": "status", "tags": "tag"}


@dataclass
class _Call:
    """One HTTP request and how to read its answer."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    parse: Callable[[Any], Any] = lambda body: body


def _as(model: Any) -> Callable[[Any], Any]:
    adapter = TypeAdapter(model)
    return adapter.validate_python


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return value


def _error(response: httpx.Response) -> MnemicError:
    try:
        detail = response.json()["error"]
        message = f"{detail['message']} ({detail['code']}, HTTP {response.status_code})"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code} from {response.url}: {response.text[:200]}"
    if response.status_code == 429:
        retry = response.headers.get("retry-after")
        return RateLimited(message, float(retry) if retry else None)
    kind = _ERRORS.get(response.status_code)
    if kind is None:
        kind = BackendUnavailable if response.status_code >= 500 else MnemicError
    return kind(message)


class _Requests:
    """The API's requests, named after the SDK methods; shared by both clients."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._me: str | None = None

    def _check_user(self, user_id: str | None) -> None:
        if user_id is not None and self._me is not None and user_id != self._me:
            raise InvalidInput(
                f"this client acts as {self._me!r} (its API key's user), not {user_id!r}; "
                "use that user's key"
            )

    def me(self) -> _Call:
        return _Call("GET", "/v1/me", parse=lambda body: body["user_id"])

    def add(
        self,
        messages: Any,
        *,
        cube_id: str | None,
        session_id: str | None,
        agent_id: str | None,
        timestamp: datetime | str | None,
    ) -> _Call:
        body = {
            "messages": messages,
            "cube_id": cube_id,
            "session_id": session_id,
            "agent_id": agent_id,
            "timestamp": _jsonable(timestamp),
        }
        return _Call("POST", "/v1/memories", json=body, parse=_as(list[MemoryItem]))

    def search(
        self,
        query: str,
        *,
        cube_id: str | None,
        top_k: int,
        filters: Mapping[str, Any] | BaseModel | None,
        token_budget: int | None,
        now: datetime | str | None,
    ) -> _Call:
        body = {
            "query": query,
            "cube_id": cube_id,
            "top_k": top_k,
            "filters": _filters_json(filters),
            "token_budget": token_budget,
            "now": _jsonable(now),
        }
        return _Call(
            "POST",
            "/v1/memories/search",
            json=body,
            parse=lambda b: TypeAdapter(list[SearchHit]).validate_python(b["hits"]),
        )

    def get(self, item_id: str, *, cube_id: str | None) -> _Call:
        return _Call(
            "GET", f"/v1/memories/{_path(item_id)}", params=_params(cube_id=cube_id), parse=_item
        )

    def get_all(
        self,
        *,
        cube_id: str | None,
        filters: Mapping[str, Any] | BaseModel | None,
        limit: int,
        offset: int,
    ) -> _Call:
        params = _params(cube_id=cube_id, limit=limit, offset=offset)
        for key, value in (_filters_json(filters) or {}).items():
            params[_FILTER_PARAMS.get(key, key)] = value
        return _Call("GET", "/v1/memories", params=params, parse=_as(list[MemoryItem]))

    def update(
        self,
        item_id: str,
        *,
        cube_id: str | None,
        reason: str | None,
        expected_version: int | None,
        changes: dict[str, Any],
    ) -> _Call:
        body = {k: _jsonable(v) for k, v in changes.items()}
        body.update({k: v for k, v in (("cube_id", cube_id), ("reason", reason)) if v is not None})
        if expected_version is not None:
            body["expected_version"] = expected_version
        return _Call("PATCH", f"/v1/memories/{_path(item_id)}", json=body, parse=_item)

    def delete(
        self, item_id: str, *, cube_id: str | None, purge: bool, reason: str | None
    ) -> _Call:
        params = _params(cube_id=cube_id, purge=str(purge).lower(), reason=reason)
        return _Call(
            "DELETE", f"/v1/memories/{_path(item_id)}", params=params, parse=lambda _: None
        )

    def history(self, item_id: str, *, cube_id: str | None) -> _Call:
        return _Call(
            "GET",
            f"/v1/memories/{_path(item_id)}/history",
            params=_params(cube_id=cube_id),
            parse=_as(list[HistoryEntry]),
        )

    def versions(self, item_id: str, *, cube_id: str | None) -> _Call:
        return _Call(
            "GET",
            f"/v1/memories/{_path(item_id)}/versions",
            params=_params(cube_id=cube_id),
            parse=_as(list[MemoryItem]),
        )

    def neighbors(self, item_id: str, *, cube_id: str | None, kinds: list[str] | None) -> _Call:
        params = _params(cube_id=cube_id)
        if kinds:
            params["kind"] = list(kinds)
        return _Call(
            "GET",
            f"/v1/memories/{_path(item_id)}/links",
            params=params,
            parse=_as(list[Link]),
        )

    def tree(self, *, cube_id: str | None, items_per_topic: int | None) -> _Call:
        params = _params(cube_id=cube_id, items_per_topic=items_per_topic)
        return _Call("GET", "/v1/tree", params=params, parse=_as(MemoryTree))

    def reorganize(self, *, cube_id: str | None) -> _Call:
        return _Call("POST", "/v1/tree/reorganize", params=_params(cube_id=cube_id))

    def failed_jobs(self, *, cube_id: str | None) -> _Call:
        return _Call("GET", "/v1/jobs/failed", params=_params(cube_id=cube_id))

    def wait(self, *, cube_id: str | None, timeout: float) -> _Call:
        return _Call(
            "POST",
            "/v1/jobs/wait",
            params=_params(cube_id=cube_id, timeout=timeout),
            parse=lambda body: bool(body["done"]),
        )

    def cubes(self) -> _Call:
        return _Call("GET", "/v1/cubes", parse=lambda body: [c["cube_id"] for c in body])

    def list_cubes(self) -> _Call:
        return _Call("GET", "/v1/cubes")

    def create_cube(self, cube_id: str | None) -> _Call:
        return _Call("POST", "/v1/cubes", json={"cube_id": cube_id})

    def share(self, cube_id: str, with_user: str, access: str) -> _Call:
        body = {"cube_id": cube_id, "user_id": with_user, "access": access}
        return _Call("POST", "/v1/cubes/share", json=body)

    def unshare(self, cube_id: str, with_user: str) -> _Call:
        body = {"cube_id": cube_id, "user_id": with_user}
        return _Call("POST", "/v1/cubes/unshare", json=body, parse=lambda b: b["revoked"])

    def grants(self, cube_id: str) -> _Call:
        return _Call("GET", "/v1/cubes/grants", params={"cube_id": cube_id})

    def chat(
        self,
        query: str,
        *,
        session_id: str | None,
        cube_id: str | None,
        token_budget: int,
        now: datetime | str | None,
    ) -> _Call:
        body = {
            "query": query,
            "session_id": session_id,
            "cube_id": cube_id,
            "token_budget": token_budget,
            "now": _jsonable(now),
        }
        return _Call("POST", "/v1/chat", json=body, parse=ChatReply.model_validate)

    def create_user(self, user_id: str) -> _Call:
        return _Call("POST", "/v1/users", json={"user_id": user_id}, parse=lambda b: b["api_key"])

    def users(self) -> _Call:
        return _Call("GET", "/v1/users")

    def health(self) -> _Call:
        return _Call("GET", "/v1/health")


def _item(body: Any) -> MemoryItem:
    return MemoryItem.model_validate(body)


def _path(item_id: str) -> str:
    from urllib.parse import quote

    return quote(item_id, safe="")


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _filters_json(filters: Mapping[str, Any] | BaseModel | None) -> dict[str, Any] | None:
    if filters is None:
        return None
    if isinstance(filters, BaseModel):
        return filters.model_dump(mode="json", exclude_none=True)
    return {k: _jsonable(v) for k, v in filters.items() if v is not None}


def _headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def _unreachable(url: str, exc: Exception) -> BackendUnavailable:
    return BackendUnavailable(
        f"cannot reach the mnemic server at {url} ({exc}); is `mnemic serve` running there?"
    )


# MemCube archives travel as bytes, not JSON: downloaded into a hidden file beside the
# destination and linked to its name once complete, uploaded from the file as it is

ARCHIVE = "/v1/cubes/archive"


def _part_file(dest: str | Path) -> tuple[Path, Path]:
    target = Path(dest)
    if target.exists():
        raise InvalidInput(f"{target} exists; give a new file name for the archive")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target, target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")


def _finish_download(part: Path, target: Path) -> Path:
    try:
        os.link(part, target)  # never replaces a file that appeared meanwhile
    except FileExistsError:
        raise InvalidInput(f"{target} exists; give a new file name for the archive") from None
    return target


def _archive_params(cube_id: str | None, reembed: bool | None = None) -> dict[str, Any]:
    return _params(cube_id=cube_id, reembed=None if reembed is None else str(reembed).lower())


class Client:
    """The REST API through the SDK's methods, over a blocking httpx client."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._r = _Requests(url)
        self._http = httpx.Client(
            base_url=self._r.url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def _run(self, call: _Call) -> Any:
        try:
            response = self._http.request(
                call.method, call.path, json=call.json, params=call.params or None
            )
        except httpx.TransportError as exc:
            raise _unreachable(self._r.url, exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        return call.parse(response.json())

    def _user(self, user_id: str | None) -> None:
        if user_id is not None and self._r._me is None:
            self._r._me = self._run(self._r.me())
        self._r._check_user(user_id)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def whoami(self) -> str:
        return str(self._run(self._r.me()))

    def add(
        self,
        messages: Any,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> list[MemoryItem]:
        self._user(user_id)
        return self._run(  # type: ignore[no-any-return]
            self._r.add(
                messages,
                cube_id=cube_id,
                session_id=session_id,
                agent_id=agent_id,
                timestamp=timestamp,
            )
        )

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        top_k: int = 10,
        filters: Mapping[str, Any] | BaseModel | None = None,
        token_budget: int | None = None,
        now: datetime | str | None = None,
    ) -> list[SearchHit]:
        self._user(user_id)
        call = self._r.search(
            query,
            cube_id=cube_id,
            top_k=top_k,
            filters=filters,
            token_budget=token_budget,
            now=now,
        )
        return self._run(call)  # type: ignore[no-any-return]

    def get(
        self, item_id: str, *, user_id: str | None = None, cube_id: str | None = None
    ) -> MemoryItem:
        self._user(user_id)
        return self._run(self._r.get(item_id, cube_id=cube_id))  # type: ignore[no-any-return]

    def get_all(
        self,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        filters: Mapping[str, Any] | BaseModel | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MemoryItem]:
        self._user(user_id)
        call = self._r.get_all(cube_id=cube_id, filters=filters, limit=limit, offset=offset)
        return self._run(call)  # type: ignore[no-any-return]

    def update(
        self,
        item_id: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        **changes: Any,
    ) -> MemoryItem:
        self._user(user_id)
        call = self._r.update(
            item_id,
            cube_id=cube_id,
            reason=reason,
            expected_version=expected_version,
            changes=changes,
        )
        return self._run(call)  # type: ignore[no-any-return]

    def delete(
        self,
        item_id: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        purge: bool = False,
        reason: str | None = None,
    ) -> None:
        self._user(user_id)
        self._run(self._r.delete(item_id, cube_id=cube_id, purge=purge, reason=reason))

    def history(
        self, item_id: str, *, user_id: str | None = None, cube_id: str | None = None
    ) -> list[HistoryEntry]:
        self._user(user_id)
        return self._run(self._r.history(item_id, cube_id=cube_id))  # type: ignore[no-any-return]

    def versions(
        self, item_id: str, *, user_id: str | None = None, cube_id: str | None = None
    ) -> list[MemoryItem]:
        self._user(user_id)
        return self._run(self._r.versions(item_id, cube_id=cube_id))  # type: ignore[no-any-return]

    def neighbors(
        self,
        item_id: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        kinds: list[str] | None = None,
    ) -> list[Link]:
        self._user(user_id)
        return self._run(self._r.neighbors(item_id, cube_id=cube_id, kinds=kinds))  # type: ignore[no-any-return]

    def tree(
        self,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        items_per_topic: int | None = None,
    ) -> MemoryTree:
        self._user(user_id)
        call = self._r.tree(cube_id=cube_id, items_per_topic=items_per_topic)
        return self._run(call)  # type: ignore[no-any-return]

    def reorganize(
        self, *, user_id: str | None = None, cube_id: str | None = None
    ) -> dict[str, int]:
        self._user(user_id)
        return self._run(self._r.reorganize(cube_id=cube_id))  # type: ignore[no-any-return]

    def failed_jobs(
        self, *, user_id: str | None = None, cube_id: str | None = None
    ) -> list[dict[str, Any]]:
        self._user(user_id)
        return self._run(self._r.failed_jobs(cube_id=cube_id))  # type: ignore[no-any-return]

    def wait(
        self, *, user_id: str | None = None, cube_id: str | None = None, timeout: float = 10.0
    ) -> bool:
        self._user(user_id)
        return self._run(self._r.wait(cube_id=cube_id, timeout=timeout))  # type: ignore[no-any-return]

    def cubes(self, *, user_id: str | None = None) -> list[str]:
        """The ids of the cubes you own and those shared with you."""
        self._user(user_id)
        return self._run(self._r.cubes())  # type: ignore[no-any-return]

    def list_cubes(self) -> list[dict[str, Any]]:
        """Each cube with its owner and your access (owner, read, write)."""
        return self._run(self._r.list_cubes())  # type: ignore[no-any-return]

    def create_cube(self, cube_id: str | None = None, *, user_id: str | None = None) -> Any:
        self._user(user_id)
        return self._run(self._r.create_cube(cube_id))

    def share(
        self, cube_id: str, *, with_user: str, access: str = "read", user_id: str | None = None
    ) -> Any:
        self._user(user_id)
        return self._run(self._r.share(cube_id, with_user, access))

    def unshare(self, cube_id: str, *, with_user: str, user_id: str | None = None) -> bool:
        self._user(user_id)
        return bool(self._run(self._r.unshare(cube_id, with_user)))

    def grants(self, cube_id: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        self._user(user_id)
        return self._run(self._r.grants(cube_id))  # type: ignore[no-any-return]

    def chat(
        self,
        query: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        cube_id: str | None = None,
        token_budget: int = 1000,
        now: datetime | str | None = None,
    ) -> ChatReply:
        self._user(user_id)
        call = self._r.chat(
            query, session_id=session_id, cube_id=cube_id, token_budget=token_budget, now=now
        )
        return self._run(call)  # type: ignore[no-any-return]

    # MemCube archives
    def dump_cube(
        self, dest: str | Path, *, user_id: str | None = None, cube_id: str | None = None
    ) -> Path:
        """Download one of your cubes as a tar archive into the new file ``dest``."""
        self._user(user_id)
        target, part = _part_file(dest)
        try:
            with self._http.stream("GET", ARCHIVE, params=_archive_params(cube_id)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                with part.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
            return _finish_download(part, target)
        except httpx.TransportError as exc:
            raise _unreachable(self._r.url, exc) from exc
        finally:
            part.unlink(missing_ok=True)

    def load_cube(
        self,
        src: str | Path,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        reembed: bool = False,
    ) -> dict[str, Any]:
        """Upload a cube archive as one of your cubes (see :meth:`mnemic.Memory.load_cube`)."""
        self._user(user_id)
        with Path(src).open("rb") as archive:
            try:
                response = self._http.post(
                    ARCHIVE,
                    params=_archive_params(cube_id, reembed),
                    content=archive,
                    headers={"content-type": "application/x-tar"},
                )
            except httpx.TransportError as exc:
                raise _unreachable(self._r.url, exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        return response.json()  # type: ignore[no-any-return]

    # admin (with the admin key)
    def create_user(self, user_id: str) -> str:
        """Create a user and return its API key (shown only this once)."""
        return str(self._run(self._r.create_user(user_id)))

    def users(self) -> list[dict[str, Any]]:
        return self._run(self._r.users())  # type: ignore[no-any-return]

    def health(self) -> dict[str, Any]:
        return self._run(self._r.health())  # type: ignore[no-any-return]


class AsyncClient:
    """:class:`Client`'s methods as coroutines, over an async httpx client."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._r = _Requests(url)
        self._http = httpx.AsyncClient(
            base_url=self._r.url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def _run(self, call: _Call) -> Any:
        try:
            response = await self._http.request(
                call.method, call.path, json=call.json, params=call.params or None
            )
        except httpx.TransportError as exc:
            raise _unreachable(self._r.url, exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        return call.parse(response.json())

    async def _user(self, user_id: str | None) -> None:
        if user_id is not None and self._r._me is None:
            self._r._me = await self._run(self._r.me())
        self._r._check_user(user_id)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def whoami(self) -> str:
        return str(await self._run(self._r.me()))

    async def add(
        self,
        messages: Any,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> list[MemoryItem]:
        await self._user(user_id)
        call = self._r.add(
            messages, cube_id=cube_id, session_id=session_id, agent_id=agent_id, timestamp=timestamp
        )
        return await self._run(call)  # type: ignore[no-any-return]

    async def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        top_k: int = 10,
        filters: Mapping[str, Any] | BaseModel | None = None,
        token_budget: int | None = None,
        now: datetime | str | None = None,
    ) -> list[SearchHit]:
        await self._user(user_id)
        call = self._r.search(
            query,
            cube_id=cube_id,
            top_k=top_k,
            filters=filters,
            token_budget=token_budget,
            now=now,
        )
        return await self._run(call)  # type: ignore[no-any-return]

    async def get(
        self, item_id: str, *, user_id: str | None = None, cube_id: str | None = None
    ) -> MemoryItem:
        await self._user(user_id)
        return await self._run(self._r.get(item_id, cube_id=cube_id))  # type: ignore[no-any-return]

    async def get_all(
        self,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        filters: Mapping[str, Any] | BaseModel | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MemoryItem]:
        await self._user(user_id)
        call = self._r.get_all(cube_id=cube_id, filters=filters, limit=limit, offset=offset)
        return await self._run(call)  # type: ignore[no-any-return]

    async def update(
        self,
        item_id: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        **changes: Any,
    ) -> MemoryItem:
        await self._user(user_id)
        call = self._r.update(
            item_id,
            cube_id=cube_id,
            reason=reason,
            expected_version=expected_version,
            changes=changes,
        )
        return await self._run(call)  # type: ignore[no-any-return]

    async def delete(
        self,
        item_id: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        purge: bool = False,
        reason: str | None = None,
    ) -> None:
        await self._user(user_id)
        await self._run(self._r.delete(item_id, cube_id=cube_id, purge=purge, reason=reason))

    async def history(
        self, item_id: str, *, user_id: str | None = None, cube_id: str | None = None
    ) -> list[HistoryEntry]:
        await self._user(user_id)
        call = self._r.history(item_id, cube_id=cube_id)
        return await self._run(call)  # type: ignore[no-any-return]

    async def versions(
        self, item_id: str, *, user_id: str | None = None, cube_id: str | None = None
    ) -> list[MemoryItem]:
        await self._user(user_id)
        return await self._run(self._r.versions(item_id, cube_id=cube_id))  # type: ignore[no-any-return]

    async def neighbors(
        self,
        item_id: str,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        kinds: list[str] | None = None,
    ) -> list[Link]:
        await self._user(user_id)
        call = self._r.neighbors(item_id, cube_id=cube_id, kinds=kinds)
        return await self._run(call)  # type: ignore[no-any-return]

    async def tree(
        self,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        items_per_topic: int | None = None,
    ) -> MemoryTree:
        await self._user(user_id)
        call = self._r.tree(cube_id=cube_id, items_per_topic=items_per_topic)
        return await self._run(call)  # type: ignore[no-any-return]

    async def reorganize(
        self, *, user_id: str | None = None, cube_id: str | None = None
    ) -> dict[str, int]:
        await self._user(user_id)
        return await self._run(self._r.reorganize(cube_id=cube_id))  # type: ignore[no-any-return]

    async def failed_jobs(
        self, *, user_id: str | None = None, cube_id: str | None = None
    ) -> list[dict[str, Any]]:
        await self._user(user_id)
        return await self._run(self._r.failed_jobs(cube_id=cube_id))  # type: ignore[no-any-return]

    async def wait(
        self, *, user_id: str | None = None, cube_id: str | None = None, timeout: float = 10.0
    ) -> bool:
        await self._user(user_id)
        call = self._r.wait(cube_id=cube_id, timeout=timeout)
        return await self._run(call)  # type: ignore[no-any-return]

    async def cubes(self, *, user_id: str | None = None) -> list[str]:
        await self._user(user_id)
        return await self._run(self._r.cubes())  # type: ignore[no-any-return]

    async def list_cubes(self) -> list[dict[str, Any]]:
        return await self._run(self._r.list_cubes())  # type: ignore[no-any-return]

    async def create_cube(self, cube_id: str | None = None, *, user_id: str | None = None) -> Any:
        await self._user(user_id)
        return await self._run(self._r.create_cube(cube_id))

    async def share(
        self, cube_id: str, *, with_user: str, access: str = "read", user_id: str | None = None
    ) -> Any:
        await self._user(user_id)
        return await self._run(self._r.share(cube_id, with_user, access))

    async def unshare(self, cube_id: str, *, with_user: str, user_id: str | None = None) -> bool:
        await self._user(user_id)
        return bool(await self._run(self._r.unshare(cube_id, with_user)))

    async def grants(self, cube_id: str, *, user_id: str | None = None) -> list[dict[str, Any]]:
        await self._user(user_id)
        return await self._run(self._r.grants(cube_id))  # type: ignore[no-any-return]

    async def chat(
        self,
        query: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        cube_id: str | None = None,
        token_budget: int = 1000,
        now: datetime | str | None = None,
    ) -> ChatReply:
        await self._user(user_id)
        call = self._r.chat(
            query, session_id=session_id, cube_id=cube_id, token_budget=token_budget, now=now
        )
        return await self._run(call)  # type: ignore[no-any-return]

    async def dump_cube(
        self, dest: str | Path, *, user_id: str | None = None, cube_id: str | None = None
    ) -> Path:
        await self._user(user_id)
        target, part = _part_file(dest)
        try:
            async with self._http.stream(
                "GET", ARCHIVE, params=_archive_params(cube_id)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error(response)
                with part.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        out.write(chunk)
            return _finish_download(part, target)
        except httpx.TransportError as exc:
            raise _unreachable(self._r.url, exc) from exc
        finally:
            part.unlink(missing_ok=True)

    async def load_cube(
        self,
        src: str | Path,
        *,
        user_id: str | None = None,
        cube_id: str | None = None,
        reembed: bool = False,
    ) -> dict[str, Any]:
        await self._user(user_id)
        path = Path(src)

        async def chunks() -> AsyncIterator[bytes]:
            with path.open("rb") as archive:
                while block := archive.read(1 << 20):
                    yield block

        try:
            response = await self._http.post(
                ARCHIVE,
                params=_archive_params(cube_id, reembed),
                content=chunks(),
                headers={
                    "content-type": "application/x-tar",
                    "content-length": str(path.stat().st_size),
                },
            )
        except httpx.TransportError as exc:
            raise _unreachable(self._r.url, exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        return response.json()  # type: ignore[no-any-return]

    async def create_user(self, user_id: str) -> str:
        return str(await self._run(self._r.create_user(user_id)))

    async def users(self) -> list[dict[str, Any]]:
        return await self._run(self._r.users())  # type: ignore[no-any-return]

    async def health(self) -> dict[str, Any]:
        return await self._run(self._r.health())  # type: ignore[no-any-return]


__all__ = ["AsyncClient", "AuthenticationError", "Client", "RateLimited"]
