"""``mnemic cube dump|load|compose`` as a user runs them (real subprocesses, real stores)."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import mnemic


def test_cube_dump_load_compose_on_the_command_line(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    out = mnemic(a, "add", "My favourite food is ramen.", "--user", "ana", "--wait")
    assert out.returncode == 0, out.stderr
    out = mnemic(a, "cube", "dump", str(tmp_path / "ana.tar"), "--user", "ana")
    assert out.returncode == 0 and "dumped" in out.stdout, out.stderr

    out = mnemic(b, "cube", "load", str(tmp_path / "ana.tar"), "--user", "ana", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["cube_id"] == "ana/default" and report["items"] >= 1
    assert report["reembedded"] is False and report["vectors_embedded"] == 0
    hits = json.loads(mnemic(b, "search", "ramen", "--user", "ana", "--json").stdout)
    assert any("ramen" in h["item"]["text"] for h in hits)

    again = mnemic(b, "cube", "load", str(tmp_path / "ana.tar"), "--user", "ana")
    assert again.returncode == 2 and "exists already" in again.stderr

    out = mnemic(b, "add", "I am learning Portuguese.", "--user", "ana", "-c", "ana/new", "--wait")
    assert out.returncode == 0, out.stderr
    out = mnemic(b, "cube", "compose", "ana/new", "--user", "ana", "--json")
    assert out.returncode == 0, out.stderr
    composed = json.loads(out.stdout)
    assert composed["cube_id"] == "ana/default" and composed["carried"] >= 1
    listed = json.loads(mnemic(b, "list", "--user", "ana", "--json").stdout)
    assert any("Portuguese" in i["text"] for i in listed)
