"""The OpenAPI spec fuzzed with schemathesis (hypothesis underneath): for every operation of the
served spec, requests generated to fit it (positive) and to break it (negative) are sent to a
live server with real keys; the server must never answer 5xx, and every error must be the JSON
error shape."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from mnemic import Memory, load_settings
from mnemic.client import Client
from mnemic.interface.rest.server import ThreadedServer

ADMIN = "fuzz-admin-key"
ADMIN_PATHS = ("/v1/users", "/v1/metrics")
EXAMPLES = 20  # per operation and mode: 19 operations x 2 modes x 20 = 760 requests


def test_no_server_errors_on_any_operation(tmp_path: Path, embedder: object) -> None:
    config = load_settings(
        home=tmp_path / "fuzz",
        server={"admin_key": ADMIN, "rate_limit": 100_000, "rate_burst": 100_000},
    )
    with (
        Memory(config, embedder=embedder) as mem,  # type: ignore[arg-type]
        ThreadedServer(config, memory=mem) as srv,
    ):
        with Client(srv.url, api_key=ADMIN) as admin:
            key = admin.create_user("ana")
        with Client(srv.url, api_key=key) as ana:
            ana.add("seed memory so reads find a cube", session_id="s1")
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
        seen: dict[str, set[int]] = {}
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 19
        for op in operations:
            admin_route = op.path.startswith(ADMIN_PATHS)
            auth = {"authorization": f"Bearer {ADMIN if admin_route else key}"}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz(op, mode, srv.url, auth, seen)
        # the fuzzing reached every operation and got past validation on most of them
        assert len(seen) == len(operations)
        succeeded = [op for op, codes in seen.items() if any(c < 300 for c in codes)]
        assert len(succeeded) >= 12, seen


def fuzz(
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    url: str,
    auth: dict[str, str],
    seen: dict[str, set[int]],
) -> None:
    @given(case=op.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, headers=auth)
        where = f"{case.method} {case.formatted_path}"
        seen.setdefault(f"{op.method.upper()} {op.path}", set()).add(response.status_code)
        assert response.status_code < 500, (where, response.text[:500])
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error["code"] and error["message"], (where, response.text)

    try:
        call()
    except Unsatisfiable:
        # an operation without parameters or body has no invalid request to generate
        assert mode == GenerationMode.NEGATIVE and not op.body and not list(op.iter_parameters())
