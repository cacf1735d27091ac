"""Cube archives over real HTTP: download one (owner only), upload it into another server
(all or nothing, within the archive size bound), with the sync and the async client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from mnemic import Memory, load_settings
from mnemic.client import AsyncClient, Client
from mnemic.errors import AccessDenied, Conflict, InvalidInput
from mnemic.interface.rest.server import ThreadedServer

ADMIN = "test-admin-key"


@pytest.fixture
def servers(tmp_path: Path, embedder: object) -> Iterator[list[ThreadedServer]]:
    """Three servers on their own stores; the third takes archives of 4 KiB at most."""
    with ExitStack() as stack:
        out = []
        for n, bound in enumerate((1 << 30, 1 << 30, 4096)):
            settings = load_settings(
                home=tmp_path / f"srv{n}",
                server={
                    "admin_key": ADMIN,
                    "rate_limit": 1000,
                    "rate_burst": 1000,
                    "max_archive_bytes": bound,
                },
            )
            mem = stack.enter_context(Memory(settings, embedder=embedder))  # type: ignore[arg-type]
            out.append(stack.enter_context(ThreadedServer(settings, memory=mem)))
        yield out


def _key(server: ThreadedServer, name: str) -> str:
    with Client(server.url, api_key=ADMIN) as admin:
        return admin.create_user(name)


def _user(server: ThreadedServer, name: str) -> Client:
    return Client(server.url, api_key=_key(server, name))


def test_cube_archives_download_and_upload(servers: list[ThreadedServer], tmp_path: Path) -> None:
    first, second, small = servers
    ana_key = _key(first, "ana")
    ana, bob = Client(first.url, api_key=ana_key), _user(first, "bob")
    ana.add("My favourite food is ramen.", session_id="s1")
    assert ana.wait()
    path = ana.dump_cube(tmp_path / "ana.tar")
    assert path.is_file() and path.stat().st_size > 4096

    ana.share("ana/default", with_user="bob", access="write")
    with pytest.raises(AccessDenied, match="only the owner"):
        bob.dump_cube(tmp_path / "bob.tar", cube_id="ana/default")
    assert not (tmp_path / "bob.tar").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    async def over_async() -> tuple[Path, dict]:
        async with AsyncClient(first.url, api_key=ana_key) as on_first:
            again = await on_first.dump_cube(tmp_path / "again.tar")
        async with AsyncClient(second.url, api_key=_key(second, "ana")) as on_second:
            report = await on_second.load_cube(path)
        return again, report

    again, report = asyncio.run(over_async())
    assert again.read_bytes() == path.read_bytes()  # reproducible
    assert report["cube_id"] == "ana/default" and report["items"] >= 1
    assert report["vectors_embedded"] == 0

    cy = _user(second, "cy")
    with pytest.raises(Conflict, match="exists already"):
        cy.load_cube(path, cube_id="ana/default")
    # the same archive as cy's own cube: its item ids are taken in this store
    with pytest.raises(Conflict, match="already exists in this store"):
        cy.load_cube(path, cube_id="cy/copy")
    assert cy.cubes() == []

    # the archive is over the small server's bound: 413, nothing loaded
    on_small = _user(small, "ana")
    with pytest.raises(InvalidInput, match="over 4096 bytes"):
        on_small.load_cube(path)
    assert on_small.cubes() == []
    # a body that is not a tar archive
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(InvalidInput, match="not a readable plain tar"):
        on_small.load_cube(tmp_path / "junk.tar")
