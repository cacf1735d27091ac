"""The API's routes: users (admin), cubes and sharing, memories, chat. Each is a thin call
into the SDK as the caller's user; the SDK enforces ownership and grants."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from mnemic.interface.rest.auth import Admin, User
from mnemic.interface.rest.schemas import (
    AddMemories,
    Chat,
    CreateCube,
    CreateUser,
    CubeOut,
    Deleted,
    GrantOut,
    Me,
    NewKey,
    Search,
    SearchResult,
    Share,
    Unshare,
    Unshared,
    Update,
    UserOut,
)
from mnemic.models import (
    ChatReply,
    HistoryEntry,
    Link,
    MemoryItem,
    MemoryKind,
    MemoryStatus,
    MemoryTree,
)
from mnemic.operation.retrieval.packing import context_text
from mnemic.sdk import Memory, SearchFilters, _check_id

router = APIRouter(prefix="/v1")


def _memory(request: Request) -> Memory:
    mem: Memory = request.app.state.memory
    return mem


Mem = Annotated[Memory, Depends(_memory)]
CubeQ = Annotated[
    str | None, Query(description="the cube (default: your own); a cube shared with you")
]

# ------------------------------------------------------------------ users (admin)


@router.post("/users", status_code=201, dependencies=[Admin], tags=["users"])
def create_user(body: CreateUser, request: Request) -> NewKey:
    """Create a user; the answer holds its API key, shown only this once."""
    _check_id(body.user_id, "user_id")
    return NewKey(user_id=body.user_id, api_key=request.app.state.keys.create_user(body.user_id))


@router.get("/users", dependencies=[Admin], tags=["users"])
def list_users(request: Request) -> list[UserOut]:
    return [UserOut(**u.__dict__) for u in request.app.state.keys.users()]


@router.post("/users/{user_id}/keys", status_code=201, dependencies=[Admin], tags=["users"])
def issue_key(
    user_id: str,
    request: Request,
    revoke_others: Annotated[bool, Query(description="make it the user's only key")] = False,
) -> NewKey:
    """A new key for a user (e.g. a lost or leaked one, with ``revoke_others``)."""
    key = request.app.state.keys.issue_key(user_id, revoke_others=revoke_others)
    return NewKey(user_id=user_id, api_key=key)


@router.get("/me", tags=["users"])
def me(user: User) -> Me:
    return Me(user_id=user)


# ------------------------------------------------------------------ cubes


@router.get("/cubes", tags=["cubes"])
def list_cubes(user: User, mem: Mem) -> list[CubeOut]:
    """Your cubes and the cubes shared with you, with your access to each."""
    out = [
        CubeOut(
            cube_id=c.cube_id,
            owner_id=c.owner_id,
            access="owner",
            created_at=c.created_at,
            embedder=c.embedder,
        )
        for c in mem.store.list_cubes(user)
    ]
    for g in mem.shared_cubes(user_id=user):
        cube = mem.store.get_cube(g.cube_id)
        if cube is not None:
            out.append(
                CubeOut(
                    cube_id=cube.cube_id,
                    owner_id=cube.owner_id,
                    access="write" if g.access == "write" else "read",
                    created_at=cube.created_at,
                    embedder=cube.embedder,
                )
            )
    return out


@router.post("/cubes", status_code=201, tags=["cubes"])
def create_cube(body: CreateCube, user: User, mem: Mem) -> CubeOut:
    c = mem.create_cube(body.cube_id, user_id=user)
    return CubeOut(
        cube_id=c.cube_id,
        owner_id=c.owner_id,
        access="owner",
        created_at=c.created_at,
        embedder=c.embedder,
    )


@router.post("/cubes/share", tags=["cubes"])
def share(body: Share, user: User, mem: Mem) -> GrantOut:
    """Let another user read (or also write) one of your cubes."""
    g = mem.share(body.cube_id, user_id=user, with_user=body.user_id, access=body.access)
    return GrantOut(cube_id=g.cube_id, user_id=g.grantee, access=g.access, granted_at=g.granted_at)


@router.post("/cubes/unshare", tags=["cubes"])
def unshare(body: Unshare, user: User, mem: Mem) -> Unshared:
    return Unshared(revoked=mem.unshare(body.cube_id, user_id=user, with_user=body.user_id))


@router.get("/cubes/grants", tags=["cubes"])
def grants(
    cube_id: Annotated[str, Query(min_length=1, max_length=256)], user: User, mem: Mem
) -> list[GrantOut]:
    """Who one of your cubes is shared with."""
    return [
        GrantOut(cube_id=g.cube_id, user_id=g.grantee, access=g.access, granted_at=g.granted_at)
        for g in mem.grants(cube_id, user_id=user)
    ]


# ------------------------------------------------------------------ cube archives


@router.get(
    "/cubes/archive",
    tags=["cubes"],
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}}},
)
def dump_cube(user: User, mem: Mem, cube_id: CubeQ = None) -> StreamingResponse:
    """One of your cubes as a tar archive: its items with vectors and history, its KV caches
    and adapters, with the sha256 of every file (``mnemic cube load`` or POST it back)."""
    folder = Path(tempfile.mkdtemp(prefix="mnemic-cube-"))
    try:
        doc = mem.dump_cube(folder / "cube.tar", user_id=user, cube_id=cube_id)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", doc["cube"]["cube_id"]).strip("-.") or "cube"
    # the folder goes at once: the open handle keeps the bytes readable until it is closed,
    # so a client that goes away mid-download leaves nothing behind on disk
    handle = (folder / "cube.tar").open("rb")
    shutil.rmtree(folder, ignore_errors=True)
    size = os.fstat(handle.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(1 << 20):
                yield block

    return StreamingResponse(
        chunks(),
        media_type="application/x-tar",
        headers={
            "content-disposition": f'attachment; filename="{name}.tar"',
            "content-length": str(size),
        },
    )


@router.post(
    "/cubes/archive",
    status_code=201,
    tags=["cubes"],
    openapi_extra={
        "requestBody": {
            "required": True,
            # the bytes of a tar archive (any content type is read as such)
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def load_cube(
    request: Request,
    user: User,
    mem: Mem,
    cube_id: Annotated[
        str | None, Query(description="its id here (default: the archive's own)")
    ] = None,
    reembed: Annotated[
        bool, Query(description="re-embed every item if the cube has another embedder")
    ] = False,
) -> dict[str, Any]:
    """Load a cube archive (the body, up to ``server.max_archive_bytes``) as one of your
    cubes, all or nothing, after checking every hash; refused if the cube id is taken."""
    folder = Path(tempfile.mkdtemp(prefix="mnemic-upload-"))
    try:
        with (folder / "cube.tar").open("wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
        return await run_in_threadpool(
            mem.load_cube, folder / "cube.tar", user_id=user, cube_id=cube_id, reembed=reembed
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ memories


@router.post("/memories", status_code=201, tags=["memories"])
def add(body: AddMemories, user: User, mem: Mem) -> list[MemoryItem]:
    """Remember a text or a conversation; answers once the items are durable."""
    return mem.add(
        body.messages,
        user_id=user,
        cube_id=body.cube_id,
        session_id=body.session_id,
        agent_id=body.agent_id,
        timestamp=body.timestamp,
    )


@router.post("/memories/search", tags=["memories"])
def search(body: Search, user: User, mem: Mem) -> SearchResult:
    """Hybrid search; filters take ``as_of``/``known_at`` for a view of the past."""
    hits = mem.search(
        body.query,
        user_id=user,
        cube_id=body.cube_id,
        top_k=body.top_k,
        filters=body.filters,
        token_budget=body.token_budget,
        now=body.now,
    )
    if not body.explain:
        hits = [h.model_copy(update={"stages": {}, "why": ""}) for h in hits]
    context = context_text(hits) if body.token_budget is not None else None
    return SearchResult(hits=hits, context=context)


@router.get("/memories", tags=["memories"])
def list_memories(
    user: User,
    mem: Mem,
    cube_id: CubeQ = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    session_id: str | None = None,
    agent_id: str | None = None,
    speaker: str | None = None,
    kind: Annotated[list[MemoryKind] | None, Query()] = None,
    status: Annotated[list[MemoryStatus] | None, Query()] = None,
    tag: Annotated[list[str] | None, Query()] = None,
    after: datetime | None = None,
    before: datetime | None = None,
    as_of: Annotated[datetime | None, Query(description="what was true then")] = None,
    known_at: Annotated[datetime | None, Query(description="what was recorded by then")] = None,
) -> list[MemoryItem]:
    """Your memories in a cube, oldest first; ``as_of``/``known_at`` show the past."""
    filters: dict[str, Any] = {
        "session_id": session_id,
        "agent_id": agent_id,
        "speaker": speaker,
        "kinds": kind,
        "statuses": status,
        "tags": tag,
        "after": after,
        "before": before,
        "as_of": as_of,
        "known_at": known_at,
    }
    flt = SearchFilters(**{k: v for k, v in filters.items() if v is not None})
    return mem.get_all(user_id=user, cube_id=cube_id, filters=flt, limit=limit, offset=offset)


@router.get("/memories/{item_id}", tags=["memories"])
def get(item_id: str, user: User, mem: Mem, cube_id: CubeQ = None) -> MemoryItem:
    return mem.get(item_id, user_id=user, cube_id=cube_id)


@router.patch("/memories/{item_id}", tags=["memories"])
def update(item_id: str, body: Update, user: User, mem: Mem) -> MemoryItem:
    """Change fields of a memory (a new version; history keeps the old)."""
    return mem.update(
        item_id,
        user_id=user,
        cube_id=body.cube_id,
        reason=body.reason,
        expected_version=body.expected_version,
        **body.changes(),
    )


@router.delete("/memories/{item_id}", tags=["memories"])
def delete(
    item_id: str,
    user: User,
    mem: Mem,
    cube_id: CubeQ = None,
    purge: Annotated[bool, Query(description="erase for good (owner only)")] = False,
    reason: Annotated[str | None, Query(max_length=1000)] = None,
) -> Deleted:
    mem.delete(item_id, user_id=user, cube_id=cube_id, purge=purge, reason=reason)
    return Deleted(id=item_id, purged=purge)


@router.get("/memories/{item_id}/history", tags=["memories"])
def history(item_id: str, user: User, mem: Mem, cube_id: CubeQ = None) -> list[HistoryEntry]:
    return mem.history(item_id, user_id=user, cube_id=cube_id)


@router.get("/memories/{item_id}/versions", tags=["memories"])
def versions(item_id: str, user: User, mem: Mem, cube_id: CubeQ = None) -> list[MemoryItem]:
    """The chain this memory belongs to, oldest first: what it superseded and what
    superseded it (an item's own edits are in its history)."""
    return mem.versions(item_id, user_id=user, cube_id=cube_id)


@router.get("/memories/{item_id}/links", tags=["memories"])
def links(
    item_id: str,
    user: User,
    mem: Mem,
    cube_id: CubeQ = None,
    kind: Annotated[
        list[str] | None,
        Query(description="only edges of these kinds (same_entity, before, ...); repeatable"),
    ] = None,
) -> list[Link]:
    """The memories linked to this one in the graph, with the edge's kind and direction."""
    return mem.neighbors(item_id, user_id=user, cube_id=cube_id, kinds=kind)


# ------------------------------------------------------------------ tree


@router.get("/tree", tags=["tree"])
def tree(
    user: User,
    mem: Mem,
    cube_id: CubeQ = None,
    items_per_topic: Annotated[
        int | None, Query(ge=0, le=10_000, description="memories shown per topic (default all)")
    ] = None,
) -> MemoryTree:
    """The cube's memory tree: its topics, their summaries and their memories."""
    return mem.tree(user_id=user, cube_id=cube_id, items_per_topic=items_per_topic)


@router.post("/tree/reorganize", tags=["tree"])
def reorganize(user: User, mem: Mem, cube_id: CubeQ = None) -> dict[str, int]:
    """Organize the cube now (tree, duplicates, graph); returns what changed."""
    return mem.reorganize(user_id=user, cube_id=cube_id)


# ------------------------------------------------------------------ jobs


@router.get("/jobs/failed", tags=["jobs"])
def failed_jobs(user: User, mem: Mem, cube_id: CubeQ = None) -> list[dict[str, Any]]:
    """Background jobs (extraction after an add) of a cube that failed, with their errors;
    the raw turns they worked on are kept."""
    return mem.failed_jobs(user_id=user, cube_id=cube_id)


@router.post("/jobs/wait", tags=["jobs"])
def wait_jobs(
    user: User,
    mem: Mem,
    cube_id: CubeQ = None,
    timeout: Annotated[float, Query(ge=0, le=60, description="seconds")] = 10.0,
) -> dict[str, bool]:
    """Wait until a cube's background jobs are done: ``done`` is false if ``timeout`` passed."""
    return {"done": mem.wait(user_id=user, cube_id=cube_id, timeout=timeout)}


# ------------------------------------------------------------------ chat


@router.post("/chat", tags=["chat"])
def chat(body: Chat, user: User, mem: Mem) -> ChatReply:
    """Answer from memory with the configured LLM; the turns are remembered."""
    return mem.chat(
        body.query,
        user_id=user,
        session_id=body.session_id,
        cube_id=body.cube_id,
        token_budget=body.token_budget,
        now=body.now,
    )
