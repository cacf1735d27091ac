"""Sharing cubes through the SDK: a grant lets another user read, or read and write, a cube;
everything else stays refused, and revoking takes the access back."""

from __future__ import annotations

import pytest

from mnemic import AccessDenied, Conflict, InvalidInput, Memory, NotFound


def test_read_grant_lets_read_but_not_write(memory: Memory) -> None:
    (item,) = memory.add("the launch is on Friday", user_id="ana", cube_id="ana/work")
    with pytest.raises(AccessDenied):
        memory.get(item.id, user_id="bob", cube_id="ana/work")
    memory.share("ana/work", user_id="ana", with_user="bob", access="read")
    assert memory.get(item.id, user_id="bob", cube_id="ana/work").text == item.text
    hits = memory.search("when is the launch", user_id="bob", cube_id="ana/work")
    assert [h.item.id for h in hits] == [item.id]
    assert [i.id for i in memory.get_all(user_id="bob", cube_id="ana/work")] == [item.id]
    assert memory.history(item.id, user_id="bob", cube_id="ana/work")[0].action == "add"
    with pytest.raises(AccessDenied):
        memory.add("bob was here", user_id="bob", cube_id="ana/work")
    with pytest.raises(AccessDenied):
        memory.update(item.id, user_id="bob", cube_id="ana/work", text="moved to Monday")
    with pytest.raises(AccessDenied):
        memory.delete(item.id, user_id="bob", cube_id="ana/work")
    with pytest.raises(AccessDenied):  # only the owner shares
        memory.share("ana/work", user_id="bob", with_user="cy")
    assert memory.get(item.id, user_id="ana", cube_id="ana/work").version == 1
    assert [g.cube_id for g in memory.shared_cubes(user_id="bob")] == ["ana/work"]
    # bob's own default cube is unaffected, and ana's other cubes stay closed
    assert memory.search("launch", user_id="bob") == []
    memory.add("private", user_id="ana")
    with pytest.raises(AccessDenied):
        memory.get_all(user_id="bob", cube_id="ana/default")


def test_write_grant_writes_into_the_owners_scope(memory: Memory) -> None:
    memory.create_cube("ana/team", user_id="ana")
    memory.share("ana/team", user_id="ana", with_user="bob", access="write")
    (note,) = memory.add("standup moves to 10:00", user_id="bob", cube_id="ana/team")
    assert note.user_id == "ana"  # the owner's scope, so the owner sees it
    assert memory.history(note.id, user_id="ana", cube_id="ana/team")[0].actor == "bob"
    assert [h.item.id for h in memory.search("standup", user_id="ana", cube_id="ana/team")] == [
        note.id
    ]
    updated = memory.update(note.id, user_id="bob", cube_id="ana/team", text="standup at 9:30")
    with pytest.raises(Conflict):
        memory.update(
            note.id, user_id="ana", cube_id="ana/team", text="x", expected_version=note.version
        )
    assert memory.get(note.id, user_id="ana", cube_id="ana/team").text == updated.text
    with pytest.raises(AccessDenied):  # purging is the owner's alone
        memory.delete(note.id, user_id="bob", cube_id="ana/team", purge=True)
    memory.delete(note.id, user_id="bob", cube_id="ana/team")
    assert memory.get_all(user_id="ana", cube_id="ana/team") == []


def test_unshare_takes_access_back(memory: Memory) -> None:
    (item,) = memory.add("quarterly numbers", user_id="ana", cube_id="ana/fin")
    memory.share("ana/fin", user_id="ana", with_user="bob")
    assert memory.grants("ana/fin", user_id="ana")[0].grantee == "bob"
    assert memory.unshare("ana/fin", user_id="ana", with_user="bob") is True
    with pytest.raises(AccessDenied):
        memory.get(item.id, user_id="bob", cube_id="ana/fin")
    assert memory.unshare("ana/fin", user_id="ana", with_user="bob") is False


def test_bad_sharing_is_refused(memory: Memory) -> None:
    memory.create_cube(user_id="ana")
    with pytest.raises(InvalidInput):
        memory.share("ana/default", user_id="ana", with_user="ana")
    with pytest.raises(InvalidInput):
        memory.share("ana/default", user_id="ana", with_user="bob", access="owner")
    with pytest.raises(NotFound):
        memory.share("ana/none", user_id="ana", with_user="bob")
    with pytest.raises(AccessDenied):  # a cube id someone else owns cannot be taken
        memory.create_cube("ana/default", user_id="bob")
    assert memory.grants("ana/default", user_id="ana") == []


def test_out_of_range_input_is_refused_not_crashing(memory: Memory) -> None:
    """Found by fuzzing the API: these reached SQLite or datetime and raised raw errors."""
    memory.add("hello", user_id="ana")
    with pytest.raises(InvalidInput):
        memory.add("x", user_id="ana", timestamp="0001-01-01T00:00:00+05:00")
    with pytest.raises(InvalidInput):
        memory.get_all(user_id="ana", offset=2**70)
    with pytest.raises(InvalidInput):
        memory.search("hello", user_id="ana", filters={"as_of": "0001-01-01T01:00:00+09:00"})
    assert [i.text for i in memory.get_all(user_id="ana")] == ["hello"]
