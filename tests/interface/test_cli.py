"""The ``mnemic`` command end to end, as a user runs it (a real subprocess, a real store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def mnemic(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MNEMIC_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "mnemic.interface.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_add_search_show_update_history_delete(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = mnemic(home, "add", "My favourite food is ramen.", "--user", "ana", "--json")
    assert out.returncode == 0, out.stderr
    item_id = json.loads(out.stdout)[0]["id"]
    assert mnemic(home, "add", "-", "--user", "ana", stdin="I run every Sunday.").returncode == 0

    out = mnemic(home, "search", "what does ana like to eat", "--user", "ana", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    # the turn itself, or the preference extracted from it
    top = hits[0]["item"]
    assert item_id in (top["id"], *top["source"]["item_ids"]) and hits[0]["why"]

    shown = json.loads(mnemic(home, "show", item_id, "--user", "ana").stdout)
    assert shown["text"] == "My favourite food is ramen."

    assert (
        mnemic(
            home,
            "update",
            item_id,
            "My favourite food is pho.",
            "--user",
            "ana",
            "--reason",
            "changed mind",
        ).returncode
        == 0
    )
    hist = json.loads(mnemic(home, "history", item_id, "--user", "ana", "--json").stdout)
    assert [h["action"] for h in hist] == ["add", "update"]

    table = mnemic(home, "list", "--user", "ana")
    assert "pho" in table.stdout and "Sunday" in table.stdout

    assert mnemic(home, "delete", item_id, "--user", "ana").returncode == 0
    listed = json.loads(mnemic(home, "list", "--user", "ana", "--json").stdout)
    assert [i["text"] for i in listed] == ["I run every Sunday."]


def test_errors_are_clear_and_exit_nonzero(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = mnemic(home, "show", "nope", "--user", "ana")
    assert out.returncode == 2 and "error" in out.stderr and "Traceback" not in out.stderr
    mnemic(home, "add", "hello", "--user", "ana")
    out = mnemic(home, "show", "nope", "--user", "ana")
    assert out.returncode == 2 and "no memory 'nope'" in out.stderr
    out = mnemic(home, "search", "x", "--user", "ana", "--top-k", "0")
    assert out.returncode == 2 and "top_k" in out.stderr


def test_add_document_and_add_wait(tmp_path: Path) -> None:
    home = tmp_path / "home"
    doc = tmp_path / "notes.md"
    doc.write_text("# Boat\n\nThe boat is called Wanda.\n\n# Car\n\nThe car is blue.\n")
    out = mnemic(home, "add-document", str(doc), "--user", "ana", "--json")
    assert out.returncode == 0, out.stderr
    chunks = json.loads(out.stdout)
    assert [c["metadata"]["headings"] for c in chunks] == [["Boat"], ["Car"]]
    out = mnemic(home, "add", "--wait", "I live in Porto.", "--user", "ana")
    assert out.returncode == 0, out.stderr
    listed = json.loads(mnemic(home, "list", "--user", "ana", "--json").stdout)
    assert "the user lives in Porto" in [i["text"] for i in listed]
    assert json.loads(mnemic(home, "expire", "--user", "ana").stdout) == {
        "expired": 0,
        "archived": 0,
    }


def test_chat_without_llm_answers_from_memory_and_remembers_the_question(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert mnemic(home, "add", "My cat is called Miso.", "--user", "ana").returncode == 0
    out = mnemic(home, "chat", "what is my cat called?", "--user", "ana", "--session", "c1")
    assert out.returncode == 0, out.stderr
    assert "No LLM is configured" in out.stdout and "Miso" in out.stdout
    listed = mnemic(home, "chat", "and my dog?", "--user", "ana", "--session", "c1", "--json")
    reply = json.loads(listed.stdout)
    assert reply["llm"] is None and [t["text"] for t in reply["turns"]] == ["and my dog?"]
    shown = mnemic(home, "list", "--user", "ana")
    assert "what is my cat called?" in shown.stdout


def test_bad_input_on_the_command_line_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad_utf8 = tmp_path / "chat.json"
    bad_utf8.write_bytes(b'[{"role": "ana", "content": "caf\xe9"}]')
    not_json = tmp_path / "notes.json"
    not_json.write_text("this is not JSON")
    wrong_shape = tmp_path / "shape.json"
    wrong_shape.write_text('{"role": "ana"}')
    for args in (
        ("add", "--messages", str(bad_utf8), "--user", "ana"),
        ("add", "--messages", str(not_json), "--user", "ana"),
        ("add", "--messages", str(wrong_shape), "--user", "ana"),
        ("add", "--messages", str(tmp_path / "missing.json"), "--user", "ana"),
        ("add", "", "--user", "ana"),  # empty text
        ("add", "hello", "--user", "a\tb"),
        ("add", "hello", "--user", "ana", "--timestamp", "not a time"),
        ("search", "q", "--user", "ana", "-k", "0"),
        ("search", "q", "--user", "ana", "--budget", "-1"),
    ):
        out = mnemic(home, *args)
        assert out.returncode != 0, args
        assert "Traceback" not in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip()) > 10, args  # says what is wrong
    listed = mnemic(home, "list", "--user", "ana", "--json")
    assert listed.returncode != 0 or json.loads(listed.stdout) == []  # nothing was stored


def test_reorganize_tree_and_links(tmp_path: Path) -> None:
    home = tmp_path / "home"
    messages = tmp_path / "talk.json"
    messages.write_text(
        json.dumps(
            [
                {"speaker": "Ana", "content": "We adopted a puppy called Rex last week."},
                {"speaker": "Bo", "content": "Rex is a great name! What breed is he?"},
                {"speaker": "Ana", "content": "A beagle. We walk him by the river every day."},
            ]
        )
    )
    out = mnemic(
        home, "add", "--messages", str(messages), "--user", "ana", "--session", "s1", "--json"
    )
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)[0]["id"]
    out = mnemic(home, "reorganize", "--user", "ana", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["placed"] == report["items"] >= 3 and report["topics_written"] >= 1
    again = json.loads(mnemic(home, "reorganize", "--user", "ana", "--json").stdout)
    assert again["placed"] == again["moved"] == again["topics_written"] == 0
    view = json.loads(mnemic(home, "tree", "--user", "ana", "--json").stdout)
    assert view["unplaced"] == 0
    assert sum(t["size"] for t in view["topics"]) == report["items"]
    printed = mnemic(home, "tree", "--user", "ana")
    assert printed.returncode == 0 and "ana/default" in printed.stdout and "Rex" in printed.stdout
    links = json.loads(mnemic(home, "links", first, "--user", "ana", "--json").stdout)
    assert any(x["kind"] == "next_in_session" and x["direction"] == "out" for x in links)
