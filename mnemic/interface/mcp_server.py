"""The MCP server (``mnemic mcp``): mnemic as the memory of Claude Desktop, Cursor and other MCP
clients, over stdio or streamable HTTP. One server acts as one user (``--user``,
``server.mcp_user`` or ``MNEMIC_SERVER__MCP_USER``); every tool calls the SDK as that user.
Needs the ``mcp`` extra (the official SDK, 2.x)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from mnemic.errors import ConfigError, MnemicError
from mnemic.models import MemoryItem
from mnemic.operation.retrieval.packing import context_text, render

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from mnemic.sdk import Memory

INSTRUCTIONS = """mnemic is your long-term memory. Call search_memory before answering anything \
that may depend on what the user told you earlier (preferences, facts about them, past events); \
call add_memory with what is worth remembering (one fact or message a call, with who said it). \
Memories carry the date they were true; use it for questions about time."""


def _item(item: MemoryItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "text": item.text,
        "speaker": item.speaker,
        "when": item.valid_from.isoformat() if item.valid_from else None,
        "session_id": item.session_id,
        "cube_id": item.cube_id,
        "kind": str(item.kind),
        "tags": item.tags,
        "version": item.version,
        "status": str(item.status),
    }


def build_server(memory: Memory, user_id: str) -> MCPServer:
    """An MCP server whose tools read and write ``user_id``'s memory in ``memory``."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            f"the MCP server needs its extra: pip install 'mnemic[mcp]' ({exc})"
        ) from exc

    server = MCPServer(name="mnemic", instructions=INSTRUCTIONS)

    def sdk_errors(exc: MnemicError) -> ToolError:
        return ToolError(f"{type(exc).__name__}: {exc}")

    @server.tool()
    def add_memory(
        text: str,
        speaker: str | None = None,
        session_id: str | None = None,
        timestamp: str | None = None,
        cube_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Remember a text (a fact, a preference, a message). ``speaker``: who said it;
        ``timestamp``: when it happened (ISO 8601, default now); ``cube_id``: default yours."""
        message: Any = {"content": text, "speaker": speaker} if speaker else text
        try:
            items = memory.add(
                message,
                user_id=user_id,
                cube_id=cube_id,
                session_id=session_id,
                timestamp=timestamp,
            )
        except MnemicError as exc:
            raise sdk_errors(exc) from exc
        return [_item(i) for i in items]

    @server.tool()
    def search_memory(
        query: str,
        top_k: int = 10,
        token_budget: int | None = None,
        session_id: str | None = None,
        cube_id: str | None = None,
    ) -> dict[str, Any]:
        """Search memory by meaning and words. Returns the hits (best first, each with why it
        was chosen) and ``context``: the hits as dated lines ready to read; with
        ``token_budget``, only what fits that many tokens."""
        filters = {"session_id": session_id} if session_id else None
        try:
            hits = memory.search(
                query,
                user_id=user_id,
                cube_id=cube_id,
                top_k=top_k,
                filters=filters,
                token_budget=token_budget,
            )
        except MnemicError as exc:
            raise sdk_errors(exc) from exc
        return {
            "context": context_text(hits),
            "hits": [
                {**_item(h.item), "score": round(h.score, 6), "line": render(h.item), "why": h.why}
                for h in hits
            ],
        }

    @server.tool()
    def get_memory(item_id: str, cube_id: str | None = None) -> dict[str, Any]:
        """One memory by id, with its metadata."""
        try:
            return _item(memory.get(item_id, user_id=user_id, cube_id=cube_id))
        except MnemicError as exc:
            raise sdk_errors(exc) from exc

    @server.tool()
    def delete_memory(item_id: str, cube_id: str | None = None) -> dict[str, Any]:
        """Forget a memory (it leaves search; its history is kept)."""
        try:
            memory.delete(item_id, user_id=user_id, cube_id=cube_id, reason="mcp")
        except MnemicError as exc:
            raise sdk_errors(exc) from exc
        return {"deleted": item_id}

    @server.tool()
    def memory_tree(cube_id: str | None = None, items_per_topic: int = 5) -> dict[str, Any]:
        """The memory organized by topic: each topic's title, summary, size and its first
        memories (``items_per_topic``), largest topics first."""
        try:
            view = memory.tree(
                user_id=user_id, cube_id=cube_id, items_per_topic=max(0, items_per_topic)
            )
        except MnemicError as exc:
            raise sdk_errors(exc) from exc
        return {
            "cube_id": view.cube_id,
            "unplaced": view.unplaced,
            "topics": [
                {
                    "id": t.id,
                    "title": t.title,
                    "summary": t.summary,
                    "size": t.size,
                    "items": [_item(i) for i in t.items],
                }
                for t in view.topics
            ],
        }

    @server.tool()
    def linked_memories(
        item_id: str, kinds: list[str] | None = None, cube_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The memories linked to one (same entity, before/after, same session, supersedes,
        derived from...), each with the link's kind (``link``) and ``direction``."""
        try:
            found = memory.neighbors(item_id, user_id=user_id, cube_id=cube_id, kinds=kinds)
        except MnemicError as exc:
            raise sdk_errors(exc) from exc
        return [{**_item(x.item), "link": x.kind, "direction": x.direction} for x in found]

    @server.tool()
    def list_cubes() -> list[dict[str, str]]:
        """The memory cubes this server's user owns and those shared with them."""
        try:
            owned = [{"cube_id": c, "access": "owner"} for c in memory.cubes(user_id=user_id)]
            shared = [
                {"cube_id": g.cube_id, "access": g.access}
                for g in memory.shared_cubes(user_id=user_id)
            ]
        except MnemicError as exc:
            raise sdk_errors(exc) from exc
        return owned + shared

    return server


def run(
    memory: Memory,
    user_id: str,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8751,
) -> None:
    """Serve until the client disconnects (stdio) or the process is interrupted (http)."""
    server = build_server(memory, user_id)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)
