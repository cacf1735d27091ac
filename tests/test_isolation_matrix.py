"""Isolation, as a matrix: every SDK read and write path x the cube's owner, a stranger, a
user with a read grant and one with a write grant, on both store backends.

Every path is tried on ana's cube by each caller; the allowed ones must work, the others
must raise AccessDenied, and afterwards ana's memories are exactly as the allowed calls
left them (a refused call changes nothing). The REST layer has its own matrix over HTTP
(tests/interface/test_rest.py); the REST and MCP servers call these same SDK paths.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from mnemic import AccessDenied, Memory

CUBE = "ana/shared"

# path -> (needs write access, call(mem, user, item_id))
PATHS: dict[str, tuple[bool, Callable[[Memory, str, str], Any]]] = {
    "get": (False, lambda m, u, i: m.get(i, user_id=u, cube_id=CUBE)),
    "get_all": (False, lambda m, u, i: m.get_all(user_id=u, cube_id=CUBE)),
    "search": (False, lambda m, u, i: m.search("garden", user_id=u, cube_id=CUBE)),
    "search in session": (
        False,
        lambda m, u, i: m.search("garden", user_id=u, cube_id=CUBE, session_id="s"),
    ),
    "history": (False, lambda m, u, i: m.history(i, user_id=u, cube_id=CUBE)),
    "versions": (False, lambda m, u, i: m.versions(i, user_id=u, cube_id=CUBE)),
    "wait": (False, lambda m, u, i: m.wait(user_id=u, cube_id=CUBE, timeout=5)),
    "failed_jobs": (False, lambda m, u, i: m.failed_jobs(user_id=u, cube_id=CUBE)),
    "tree": (False, lambda m, u, i: m.tree(user_id=u, cube_id=CUBE)),
    "neighbors": (False, lambda m, u, i: m.neighbors(i, user_id=u, cube_id=CUBE)),
    "add": (True, lambda m, u, i: m.add(f"{u} was here", user_id=u, cube_id=CUBE)),
    "add_document": (
        True,
        lambda m, u, i: m.add_document("# Note\n\nA plan.", user_id=u, cube_id=CUBE),
    ),
    "update": (True, lambda m, u, i: m.update(i, user_id=u, cube_id=CUBE, tags=[u])),
    "delete": (True, lambda m, u, i: m.delete(i, user_id=u, cube_id=CUBE)),
    "expire": (True, lambda m, u, i: m.expire(user_id=u, cube_id=CUBE)),
    "reorganize": (True, lambda m, u, i: m.reorganize(user_id=u, cube_id=CUBE)),
    "chat": (True, lambda m, u, i: m.chat("garden?", user_id=u, cube_id=CUBE, session_id="c")),
    # MemCube files: the cube's folder, and composing it from or into the caller's own cube
    "cube_folder": (False, lambda m, u, i: m.cube_folder(CUBE, user_id=u)),
    "compose from": (False, lambda m, u, i: m.compose_cubes(CUBE, user_id=u, into_cube=_own(m, u))),
    "compose into": (True, lambda m, u, i: m.compose_cubes(_own(m, u), user_id=u, into_cube=CUBE)),
}
OWNER_ONLY: dict[str, Callable[[Memory, str, str], Any]] = {
    "purge": lambda m, u, i: m.delete(i, user_id=u, cube_id=CUBE, purge=True),
    "share": lambda m, u, i: m.share(CUBE, user_id=u, with_user="eve"),
    "unshare": lambda m, u, i: m.unshare(CUBE, user_id=u, with_user="eve"),
    "grants": lambda m, u, i: m.grants(CUBE, user_id=u),
    "dump_cube": lambda m, u, i: m.dump_cube(
        m.settings.home / f"dump-{uuid.uuid4().hex}.tar", user_id=u, cube_id=CUBE
    ),
}


def _own(mem: Memory, user: str) -> str:
    """A cube of the caller's own, with one memory in it."""
    mem.add(f"{user}'s own note", user_id=user, cube_id=f"{user}/mine", wait=True)
    return f"{user}/mine"


CALLERS = {"owner": "ana", "stranger": "sam", "reader": "rita", "writer": "will"}


def allowed(role: str, needs_write: bool) -> bool:
    return role == "owner" or role == "writer" or (role == "reader" and not needs_write)


@pytest.mark.parametrize("role", list(CALLERS))
def test_every_path_for_every_kind_of_caller(memory: Memory, role: str) -> None:
    user = CALLERS[role]
    # no background organizing: a pass may merge the near-identical targets between two
    # snapshots, and this test is about what refused calls change (reorganize is a path here)
    memory.settings.organizer.every_adds = 0
    memory.add("ana's secret garden has tulips", user_id="ana", cube_id=CUBE, wait=True)
    memory.add("sam keeps his own notes", user_id="sam", wait=True)  # the stranger's own cube
    memory.share(CUBE, user_id="ana", with_user="rita", access="read")
    memory.share(CUBE, user_id="ana", with_user="will", access="write")

    def snapshot() -> list[tuple[str, int, str, str]]:
        items = memory.get_all(user_id="ana", cube_id=CUBE, filters={"statuses": []}, limit=1000)
        return sorted((i.id, i.version, str(i.status), i.text) for i in items)

    for name, (needs_write, call) in PATHS.items():
        target = memory.add(f"target of {name}", user_id="ana", cube_id=CUBE, wait=True)[0].id
        before = snapshot()
        assert any(t == f"target of {name}" for *_, t in before)
        if allowed(role, needs_write):
            call(memory, user, target)
        else:
            with pytest.raises(AccessDenied):
                call(memory, user, target)
            assert snapshot() == before, f"a refused {name} by the {role} changed something"

    for name, call in OWNER_ONLY.items():
        target = memory.add(f"target of {name}", user_id="ana", cube_id=CUBE, wait=True)[0].id
        before = snapshot()
        if role == "owner":
            call(memory, user, target)
        else:
            with pytest.raises(AccessDenied):
                call(memory, user, target)
            assert snapshot() == before, f"a refused {name} by the {role} changed something"

    # whatever the caller could do, no other user's data ever shows up in its results
    for hit in memory.search("notes garden", user_id=user, top_k=50):
        assert hit.item.user_id == user
    if role != "stranger":
        assert all(
            h.item.user_id == "ana" for h in memory.search("garden", user_id=user, cube_id=CUBE)
        )
