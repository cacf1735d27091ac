"""The MCP server as a client runs it: ``mnemic mcp --user ana`` started over stdio as a
subprocess, each tool called with the official ``mcp`` client."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from mnemic import Memory, load_settings

TOOLS = {
    "add_memory",
    "search_memory",
    "get_memory",
    "delete_memory",
    "list_cubes",
    "memory_tree",
    "linked_memories",
}


def _data(result: Any) -> Any:
    """A tool result's structured content (falling back to its JSON text)."""
    assert not result.is_error, result.content
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)


def test_every_tool_over_stdio(tmp_path: Path, embedder: object) -> None:
    home = tmp_path / "home"
    with Memory(load_settings(home=home), embedder=embedder) as mem:  # type: ignore[arg-type]
        (secret,) = mem.add("bob's safe code is 4812", user_id="bob")
        trains = mem.add(
            ["The night train to Vienna was late.", "We took the tram to the station."],
            user_id="ana",
            session_id="s0",
            wait=True,
        )
        mem.reorganize(user_id="ana")
    env = {
        **os.environ,
        "MNEMIC_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mnemic.interface.cli", "mcp", "--user", "ana"], env=env
    )

    async def session() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Client(params, read_timeout_seconds=120) as client:
            out["tools"] = {t.name for t in (await client.list_tools()).tools}
            out["added"] = _data(
                await client.call_tool(
                    "add_memory",
                    {"text": "I adopted a cat called Miso.", "speaker": "ana", "session_id": "s1"},
                )
            )
            await client.call_tool("add_memory", {"text": "My brother lives in Porto."})
            out["found"] = _data(
                await client.call_tool("search_memory", {"query": "what is my cat called?"})
            )
            out["bob"] = _data(await client.call_tool("search_memory", {"query": "safe code"}))
            item_id = out["added"][0]["id"]
            out["got"] = _data(await client.call_tool("get_memory", {"item_id": item_id}))
            out["cubes"] = _data(await client.call_tool("list_cubes", {}))
            out["tree"] = _data(await client.call_tool("memory_tree", {"items_per_topic": 1}))
            out["links"] = _data(
                await client.call_tool("linked_memories", {"item_id": trains[0].id})
            )
            out["deleted"] = _data(await client.call_tool("delete_memory", {"item_id": item_id}))
            out["after"] = _data(await client.call_tool("search_memory", {"query": "cat Miso"}))
            out["missing"] = await client.call_tool("get_memory", {"item_id": "nope"})
            out["other"] = await client.call_tool(
                "get_memory", {"item_id": secret.id, "cube_id": "bob/default"}
            )
        return out

    out = asyncio.run(session())
    assert out["tools"] >= TOOLS
    assert out["added"][0]["text"] == "I adopted a cat called Miso."
    assert out["added"][0]["speaker"] == "ana" and out["added"][0]["cube_id"] == "ana/default"
    assert out["found"]["hits"][0]["text"] == "I adopted a cat called Miso."
    assert "Miso" in out["found"]["context"] and out["found"]["hits"][0]["why"]
    assert all(h["cube_id"] == "ana/default" for h in out["bob"]["hits"])  # ana's only
    assert "4812" not in out["bob"]["context"]
    assert out["got"]["id"] == out["added"][0]["id"]
    assert out["cubes"] == [{"cube_id": "ana/default", "access": "owner"}]
    assert out["deleted"] == {"deleted": out["added"][0]["id"]}
    placed = sum(t["size"] for t in out["tree"]["topics"])
    assert placed >= 2 and out["tree"]["cube_id"] == "ana/default"  # the trains, at least
    assert all(len(t["items"]) <= 1 and t["summary"] for t in out["tree"]["topics"])
    assert any(
        (x["link"], x["direction"], x["id"]) == ("next_in_session", "out", trains[1].id)
        for x in out["links"]
    )
    assert out["missing"].is_error and "NotFound" in out["missing"].content[0].text
    assert out["other"].is_error and "AccessDenied" in out["other"].content[0].text
    with Memory(load_settings(home=home), embedder=embedder) as mem:  # type: ignore[arg-type]
        assert mem.history(out["added"][0]["id"], user_id="ana")[-1].actor == "ana"
        assert mem.get(secret.id, user_id="bob").status == "active"


def test_streamable_http_transport(tmp_path: Path) -> None:
    import socket
    import subprocess
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MNEMIC_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    args = ["mcp", "--user", "ana", "--transport", "http", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemic.interface.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the MCP http server did not start"
                time.sleep(0.1)

        async def session() -> tuple[Any, Any]:
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=120) as client:
                added = _data(await client.call_tool("add_memory", {"text": "I like figs."}))
                found = _data(await client.call_tool("search_memory", {"query": "figs"}))
            return added, found

        added, found = asyncio.run(session())
        assert found["hits"][0]["id"] == added[0]["id"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
