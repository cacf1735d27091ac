"""The REST API over real HTTP: uvicorn serves the app in a thread on a free loopback port and
the tests talk to it with httpx and with mnemic's own client."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mnemic import Memory, load_settings
from mnemic.client import AsyncClient, AuthenticationError, Client, RateLimited
from mnemic.errors import AccessDenied, Conflict, InvalidInput, NotFound
from mnemic.interface.rest.app import create_app
from mnemic.interface.rest.keys import ADMIN as ADMIN_PRINCIPAL
from mnemic.interface.rest.server import ThreadedServer

ADMIN = "test-admin-key"


@pytest.fixture
def server(tmp_path: Path, embedder: object) -> Iterator[ThreadedServer]:
    settings = load_settings(
        home=tmp_path / "srv", server={"admin_key": ADMIN, "rate_limit": 1000, "rate_burst": 1000}
    )
    with (
        Memory(settings, embedder=embedder) as mem,  # type: ignore[arg-type]
        ThreadedServer(settings, memory=mem) as srv,
    ):
        yield srv


@pytest.fixture
def admin(server: ThreadedServer) -> Iterator[Client]:
    with Client(server.url, api_key=ADMIN) as c:
        yield c


def user(server: ThreadedServer, admin: Client, name: str) -> Client:
    return Client(server.url, api_key=admin.create_user(name))


def raw(server: ThreadedServer, key: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/metrics"),
    ("POST", "/v1/users"),
    ("GET", "/v1/users"),
    ("POST", "/v1/users/{user_id}/keys"),
    ("GET", "/v1/me"),
    ("GET", "/v1/cubes"),
    ("POST", "/v1/cubes"),
    ("POST", "/v1/cubes/share"),
    ("POST", "/v1/cubes/unshare"),
    ("GET", "/v1/cubes/grants"),
    ("GET", "/v1/cubes/archive"),
    ("POST", "/v1/cubes/archive"),
    ("POST", "/v1/memories"),
    ("GET", "/v1/memories"),
    ("POST", "/v1/memories/search"),
    ("GET", "/v1/memories/{item_id}"),
    ("PATCH", "/v1/memories/{item_id}"),
    ("DELETE", "/v1/memories/{item_id}"),
    ("GET", "/v1/memories/{item_id}/history"),
    ("GET", "/v1/memories/{item_id}/versions"),
    ("GET", "/v1/memories/{item_id}/links"),
    ("GET", "/v1/tree"),
    ("POST", "/v1/tree/reorganize"),
    ("GET", "/v1/jobs/failed"),
    ("POST", "/v1/jobs/wait"),
    ("POST", "/v1/chat"),
]


def routes(server: ThreadedServer) -> list[tuple[str, str]]:
    """(method, path) of every route in the served OpenAPI spec."""
    spec = httpx.get(server.url + "/openapi.json").json()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert len(body["error"]["message"]) > 20  # says what to do


# ------------------------------------------------------------------ system and auth


def test_health_needs_no_key_and_openapi_lists_every_route(server: ThreadedServer) -> None:
    with raw(server) as http:
        assert http.get("/v1/health").json()["status"] == "ok"
        assert http.get("/docs").status_code == 200
    assert sorted(routes(server)) == sorted(ROUTES)  # the tests below cover each of these


def test_every_protected_route_refuses_missing_and_wrong_keys(
    server: ThreadedServer, admin: Client
) -> None:
    ana_key = admin.create_user("ana")
    admin_only = {"/v1/users", "/v1/users/{user_id}/keys", "/v1/metrics"}
    protected = [(m, p) for m, p in routes(server) if p != "/v1/health"]
    with raw(server) as anon, raw(server, "mn_wrong") as wrong, raw(server, ana_key) as ana:
        with raw(server, ADMIN) as adm:
            for method, template in protected:
                path = template.replace("{item_id}", "x").replace("{user_id}", "ana")
                assert_error(anon.request(method, path), 401, "missing_api_key")
                assert_error(wrong.request(method, path), 401, "invalid_api_key")
                if template in admin_only:
                    assert_error(ana.request(method, path), 403, "admin_required")
                else:
                    assert_error(adm.request(method, path), 403, "user_key_required")
        # the key may come in X-API-Key too, and a key is not valid for another route family
        assert anon.get("/v1/me", headers={"x-api-key": ana_key}).json() == {"user_id": "ana"}


def test_users_are_managed_with_the_admin_key_and_keys_are_hashed_at_rest(
    server: ThreadedServer, admin: Client, tmp_path: Path
) -> None:
    ana_key = admin.create_user("ana")
    admin.create_user("bob")
    assert [u["user_id"] for u in admin.users()] == ["ana", "bob"]
    with pytest.raises(Conflict):
        admin.create_user("ana")
    with pytest.raises(InvalidInput):
        admin.create_user("bad\x00id")
    assert Client(server.url, api_key=ana_key).whoami() == "ana"
    db = tmp_path / "srv" / "keys.db"
    stored = b"".join(
        str(row).encode() for row in sqlite3.connect(db).execute("SELECT * FROM keys")
    )
    assert ana_key.encode() not in stored and ADMIN.encode() not in db.read_bytes()
    # a new key with revoke_others replaces the old one
    with raw(server, ADMIN) as adm:
        new = adm.post("/v1/users/ana/keys", params={"revoke_others": "true"}).json()["api_key"]
        assert_error(adm.post("/v1/users/zoe/keys"), 404, "not_found")
    assert Client(server.url, api_key=new).whoami() == "ana"
    with pytest.raises(AuthenticationError):
        Client(server.url, api_key=ana_key).whoami()


def test_a_generated_admin_key_is_shown_once_and_kept_hashed(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "gen")
    first = create_app(settings)
    key = first.state.generated_admin_key
    assert key and key.startswith("mn_")
    second = create_app(settings)
    assert second.state.generated_admin_key is None
    assert second.state.keys.authenticate(key) == ADMIN_PRINCIPAL
    assert second.state.keys.authenticate("mn_guess") is None
    assert key.encode() not in (tmp_path / "gen" / "keys.db").read_bytes()
    for app in (first, second):
        app.state.keys.close()
        app.state.memory.close()


# ------------------------------------------------------------------ every endpoint


def test_memories_endpoints_end_to_end(server: ThreadedServer, admin: Client) -> None:
    ana = user(server, admin, "ana")
    items = ana.add(
        [
            {"role": "ana", "content": "I adopted a cat called Miso."},
            {"role": "ana", "content": "My brother teaches maths in Porto."},
        ],
        session_id="s1",
        timestamp="2024-03-10T10:00:00Z",
        user_id="ana",
    )
    assert [i.cube_id for i in items] == ["ana/default"] * 2
    hits = ana.search("what is my cat called", top_k=1)
    assert hits[0].item.id == items[0].id and hits[0].why and hits[0].stages
    with raw(server, ana._http.headers["authorization"].split()[1]) as http:
        body = http.post(
            "/v1/memories/search",
            json={"query": "brother", "token_budget": 30, "explain": False},
        ).json()
        assert body["context"].startswith("[10 March 2024]") and "Porto" in body["context"]
        assert body["hits"][0]["why"] == "" and body["hits"][0]["stages"] == {}
    assert ana.search("cat", filters={"session_id": "other"}) == []
    assert ana.get(items[1].id).text == "My brother teaches maths in Porto."
    assert [i.id for i in ana.get_all(filters={"session_id": "s1"})] == [i.id for i in items]

    updated = ana.update(items[0].id, text="I adopted a cat called Tofu.", expected_version=1)
    assert updated.version == 2
    with pytest.raises(Conflict):
        ana.update(items[0].id, tags=["pets"], expected_version=1)
    assert ana.get(items[0].id).tags == []
    history = ana.history(items[0].id)
    assert [h.action for h in history] == ["add", "update"]
    assert history[1].before and history[1].before["text"] == "I adopted a cat called Miso."
    assert [v.id for v in ana.versions(items[0].id)] == [items[0].id]
    assert ana.wait(timeout=30) is True and ana.failed_jobs() == []

    # as-of: the view at a time before the add sees nothing; deleted items leave the view
    assert ana.get_all(filters={"known_at": "2000-01-01T00:00:00Z"}) == []
    ana.delete(items[1].id, reason="wrong")
    assert [i.id for i in ana.get_all()] == [items[0].id]
    deleted = ana.get_all(filters={"statuses": ["deleted"]})
    assert [i.id for i in deleted] == [items[1].id]
    ana.delete(items[1].id, purge=True)
    assert ana.history(items[1].id)[-1].action == "purge"
    with pytest.raises(NotFound):
        ana.get(items[1].id)
    with pytest.raises(InvalidInput):
        ana.add([{"content": "x", "colour": "red"}])
    with pytest.raises(InvalidInput):
        ana.add("x", user_id="bob")  # the key is ana's


def test_cubes_and_chat_endpoints(server: ThreadedServer, admin: Client) -> None:
    ana = user(server, admin, "ana")
    ana.create_cube("ana/work")
    ana.add("The launch is on Friday.", cube_id="ana/work")
    assert ana.cubes() == ["ana/work"]
    assert ana.list_cubes()[0]["access"] == "owner"
    reply = ana.chat("when is the launch?", cube_id="ana/work", session_id="c1")
    assert reply.llm is None and "No LLM is configured" in reply.answer
    assert "Friday" in reply.answer
    assert [t.text for t in reply.turns] == ["when is the launch?"]
    with raw(server, ADMIN) as adm:
        text = adm.get("/v1/metrics").text
    assert 'mnemic_http_requests_total{method="POST",route="/v1/chat",status="200"} 1' in text
    assert 'mnemic_http_request_seconds_bucket{method="POST",route="/v1/memories"' in text
    assert "mnemic_active_items 2" in text and "mnemic_users 1" in text


# ------------------------------------------------------------------ tenants


def test_one_tenant_never_reaches_another_through_any_endpoint(
    server: ThreadedServer, admin: Client
) -> None:
    ana, bob = user(server, admin, "ana"), user(server, admin, "bob")
    (secret,) = bob.add("bob's safe code is 4812", session_id="b1")
    (private,) = bob.add("bob's private diary entry about the safe", cube_id="bob/private")
    ana.add("ana likes the sea", session_id="a1")

    # searches, lists and chat see only ana's own memories
    for hits in (ana.search("safe code"), ana.search("bob diary safe", top_k=50)):
        assert all(h.item.user_id == "ana" for h in hits)
    assert {i.user_id for i in ana.get_all(limit=1000)} == {"ana"}
    reply = ana.chat("what is bob's safe code?", session_id="a1")
    assert "4812" not in reply.answer and all(h.item.user_id == "ana" for h in reply.hits)
    assert set(ana.cubes()) == {"ana/default"}

    # by id in ana's own cube: not found; naming bob's cubes: denied
    for call in (
        lambda: ana.get(secret.id),
        lambda: ana.history(secret.id),
        lambda: ana.versions(secret.id),
        lambda: ana.neighbors(secret.id),
        lambda: ana.update(secret.id, text="hacked"),
        lambda: ana.delete(secret.id),
        lambda: ana.delete(secret.id, purge=True),
    ):
        with pytest.raises(NotFound):
            call()
    for cube, item in (("bob/default", secret), ("bob/private", private)):
        for call in (
            lambda c=cube, i=item: ana.get(i.id, cube_id=c),
            lambda c=cube, i=item: ana.history(i.id, cube_id=c),
            lambda c=cube, i=item: ana.versions(i.id, cube_id=c),
            lambda c=cube, i=item: ana.neighbors(i.id, cube_id=c),
            lambda c=cube: ana.tree(cube_id=c),
            lambda c=cube: ana.reorganize(cube_id=c),
            lambda c=cube: ana.failed_jobs(cube_id=c),
            lambda c=cube: ana.wait(cube_id=c, timeout=1),
            lambda c=cube, i=item: ana.update(i.id, cube_id=c, text="hacked"),
            lambda c=cube, i=item: ana.delete(i.id, cube_id=c),
            lambda c=cube, i=item: ana.delete(i.id, cube_id=c, purge=True),
            lambda c=cube: ana.get_all(cube_id=c),
            lambda c=cube: ana.search("safe", cube_id=c),
            lambda c=cube: ana.chat("safe code?", cube_id=c),
            lambda c=cube: ana.add("planted", cube_id=c),
            lambda c=cube: ana.grants(c),
            lambda c=cube: ana.share(c, with_user="ana", access="write"),
            lambda c=cube: ana.share(c, with_user="cy"),
            lambda c=cube: ana.unshare(c, with_user="bob"),
            lambda c=cube: ana.create_cube(c),
        ):
            with pytest.raises(AccessDenied):
                call()

    # bob's memories are exactly as he left them
    for item in (secret, private):
        cube = item.cube_id
        now = bob.get(item.id, cube_id=cube)
        assert (now.text, now.version, now.status) == (item.text, 1, item.status)
        assert [h.action for h in bob.history(item.id, cube_id=cube)] == ["add"]
    assert bob.get_all(cube_id="bob/private")[0].id == private.id
    assert bob.grants("bob/private") == []


def test_shared_read_and_write_over_http(server: ThreadedServer, admin: Client) -> None:
    ana, bob = user(server, admin, "ana"), user(server, admin, "bob")
    (plan,) = ana.add("the offsite is in Sintra", cube_id="ana/team")
    ana.add("ana's own note", cube_id="ana/default")
    grant = ana.share("ana/team", with_user="bob", access="read")
    assert grant["access"] == "read" and ana.grants("ana/team")[0]["user_id"] == "bob"
    cubes = {c["cube_id"]: c["access"] for c in bob.list_cubes()}
    assert cubes == {"ana/team": "read"}

    assert bob.get(plan.id, cube_id="ana/team").text == plan.text
    assert [h.item.id for h in bob.search("offsite", cube_id="ana/team")] == [plan.id]
    assert bob.history(plan.id, cube_id="ana/team")[0].action == "add"
    for call in (
        lambda: bob.add("bob's idea", cube_id="ana/team"),
        lambda: bob.update(plan.id, cube_id="ana/team", text="in Porto"),
        lambda: bob.delete(plan.id, cube_id="ana/team"),
        lambda: bob.chat("where is the offsite?", cube_id="ana/team"),  # chat writes turns
        lambda: bob.get_all(cube_id="ana/default"),
    ):
        with pytest.raises(AccessDenied):
            call()

    ana.share("ana/team", with_user="bob", access="write")
    (idea,) = bob.add("bob suggests a boat trip", cube_id="ana/team")
    bob.update(plan.id, cube_id="ana/team", text="the offsite is in Porto")
    assert ana.get(plan.id, cube_id="ana/team").text == "the offsite is in Porto"
    assert ana.history(idea.id, cube_id="ana/team")[0].actor == "bob"
    with pytest.raises(AccessDenied):
        bob.delete(plan.id, cube_id="ana/team", purge=True)

    assert ana.unshare("ana/team", with_user="bob") is True
    with pytest.raises(AccessDenied):
        bob.get(plan.id, cube_id="ana/team")
    assert bob.cubes() == []


# ------------------------------------------------------------------ bounds and errors


def test_errors_are_json_that_say_what_to_do(server: ThreadedServer, admin: Client) -> None:
    key = admin.create_user("ana")
    with raw(server, key) as http:
        assert_error(http.get("/v1/nowhere"), 404, "no_route")
        assert_error(http.put("/v1/memories"), 405, "method_not_allowed")
        assert_error(
            http.post(
                "/v1/memories", content=b"{not json", headers={"content-type": "application/json"}
            ),
            422,
            "invalid_request",
        )
        assert_error(http.post("/v1/memories/search", json={"query": ""}), 422, "invalid_request")
        assert_error(http.post("/v1/memories", json={"messages": []}), 400, "invalid_input")
        big = {"messages": "x" * 1_100_000}
        assert_error(http.post("/v1/memories", json=big), 413, "payload_too_large")
        assert_error(http.get("/v1/memories/nope"), 404, "not_found")
        # nothing was written by the failures: the user still has no cube at all
        assert_error(http.get("/v1/memories"), 404, "not_found")


def test_rate_limit_per_key(tmp_path: Path, embedder: object) -> None:
    settings = load_settings(
        home=tmp_path / "rl", server={"admin_key": ADMIN, "rate_limit": 0.01, "rate_burst": 3}
    )
    with (
        Memory(settings, embedder=embedder) as mem,  # type: ignore[arg-type]
        ThreadedServer(settings, memory=mem) as srv,
    ):
        with Client(srv.url, api_key=ADMIN) as adm:
            ana_key, bob_key = adm.create_user("ana"), adm.create_user("bob")
        ana = Client(srv.url, api_key=ana_key)
        for _ in range(3):
            ana.whoami()
        with pytest.raises(RateLimited) as caught:
            ana.whoami()
        assert caught.value.retry_after and caught.value.retry_after >= 1
        assert Client(srv.url, api_key=bob_key).whoami() == "bob"  # buckets are per key


def test_tree_and_links_endpoints(server: ThreadedServer, admin: Client) -> None:
    key = admin.create_user("ana")
    ana = Client(server.url, api_key=key)
    turns = [
        {"speaker": "Ana", "content": "We adopted a puppy called Rex."},
        {"speaker": "Bo", "content": "Rex! What breed?"},
        {"speaker": "Ana", "content": "A beagle; we walk him by the river."},
    ]
    first, second, _ = ana.add(turns, session_id="s1")
    report = ana.reorganize()
    assert report["placed"] == report["items"] >= 3
    assert ana.reorganize()["placed"] == 0
    view = ana.tree()
    assert view.cube_id == "ana/default" and view.unplaced == 0
    assert sum(t.size for t in view.topics) == report["items"] and view.topics[0].summary
    links = ana.neighbors(first.id)
    assert any(x.kind == "next_in_session" and x.item.id == second.id for x in links)
    back = ana.neighbors(second.id, kinds=["next_in_session"])
    assert {x.direction for x in back} == {"in", "out"}
    assert ana.neighbors(second.id, kinds=["no_such_kind"]) == []

    async def run() -> tuple[Any, Any]:
        async with AsyncClient(server.url, api_key=key) as a:
            return await a.tree(), await a.neighbors(first.id, kinds=["next_in_session"])

    tree, out = asyncio.run(run())
    assert tree == view and [x.item.id for x in out] == [second.id]
    short = ana.tree(items_per_topic=1)
    assert [t.size for t in short.topics] == [t.size for t in view.topics]
    assert all(len(t.items) == min(1, t.size) for t in short.topics)
    with pytest.raises(InvalidInput):
        ana.tree(items_per_topic=-1)
    with pytest.raises(NotFound):
        ana.neighbors("nope")


def test_async_client(server: ThreadedServer, admin: Client) -> None:
    key = admin.create_user("ana")

    async def run() -> list[Any]:
        async with AsyncClient(server.url, api_key=key) as ana:
            (item,) = await ana.add("I keep bees on the roof.")
            hits = await ana.search("bees", user_id="ana")
            got = await ana.get(item.id)
            await ana.update(item.id, tags=["hobby"])
            history = await ana.history(item.id)
            await ana.delete(item.id)
            reply = await ana.chat("bees?")
            return [item, hits, got, history, await ana.get_all(), await ana.cubes(), reply]

    item, hits, got, history, left, cubes, reply = asyncio.run(run())
    assert hits[0].item.id == item.id == got.id
    assert [h.action for h in history] == ["add", "update"]
    assert [i.text for i in left] == ["bees?"] and cubes == ["ana/default"]
    assert reply.llm is None


def test_rate_buckets_refill_and_are_forgotten_when_full() -> None:
    from mnemic.interface.rest.limits import RateLimiter

    limiter = RateLimiter(rate=1000.0, burst=2)
    assert limiter.take("k") == 0 and limiter.take("k") == 0
    assert limiter.take("k") > 0  # the burst is spent
    limiter.MAX_BUCKETS = 5  # type: ignore[misc]
    for n in range(6):
        limiter.take(f"other{n}")
    import time

    time.sleep(0.01)  # 2 tokens at 1000/s refill in 2 ms: every bucket is full again
    limiter.take("new")
    assert len(limiter._buckets) == 1
