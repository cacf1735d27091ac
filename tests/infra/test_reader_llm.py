"""The LLM MemReader and LLM lifecycle decisions end to end through ``Memory.add``.

The server is a protocol peer on 127.0.0.1 speaking the OpenAI chat-completions protocol with
scripted replies (it is not a model): it lets the tests drive extraction through well-formed,
malformed, slow and failing answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from protocol_peer import Reply
from test_llm import ChatPeer

from mnemic import Memory, load_settings
from mnemic.operation.jobs import JobFailed


@pytest.fixture
def peer() -> Iterator[ChatPeer]:
    server = ChatPeer()
    yield server
    server.close()


@pytest.fixture
def llm_memory(tmp_path: Path, embedder: object, peer: ChatPeer) -> Iterator[Memory]:
    settings = load_settings(
        home=tmp_path / "llm",
        reader={"backend": "llm"},
        llm={
            "backend": "openai",
            "base_url": peer.url,
            "model": "peer",
            "timeout_s": 1.0,
            "max_retries": 1,
        },
    )
    with Memory(settings, embedder=embedder) as mem:  # type: ignore[arg-type]
        yield mem


def extraction(*memories: dict[str, Any]) -> Reply:
    return Reply(content=json.dumps({"memories": list(memories)}))


def memory(text: str, kind: str = "fact", date: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"text": text, "kind": kind, "date": date, "confidence": 0.9, "turns": ["t1"], **kw}


TURNS = [
    {"speaker": "Ana", "content": "I went to a pottery class yesterday.", "id": "D1:1"},
    {"speaker": "Ben", "content": "Nice! Did you make a bowl?", "id": "D1:2"},
]


def derived(mem: Memory, **filters: Any) -> list:
    return mem.get_all(user_id="ana", filters={"tags": ["derived"], **filters})


def test_well_formed_extraction(llm_memory: Memory, peer: ChatPeer) -> None:
    peer.replies = [
        extraction(
            memory(
                "Ana went to a pottery class on 7 May 2023.",
                "event",
                "2023-05-07",
                entities=["Ana", "pottery class"],
            ),
            {**memory("Ben asked whether Ana made a bowl.", "event"), "turns": ["t2", "t1"]},
        )
    ]
    raw = llm_memory.add(TURNS, user_id="ana", timestamp="2023-05-08T13:56:00", wait=True)
    assert [r.kind for r in raw] == ["raw_turn", "raw_turn"]  # raw turns are always kept
    event, question = sorted(derived(llm_memory), key=lambda i: i.text)
    assert event.kind == "event" and event.valid_from == datetime(2023, 5, 7, tzinfo=UTC)
    assert event.entities == ["Ana", "pottery class"] and event.confidence == 0.9
    assert event.source.message_ids == ["D1:1"] and event.source.item_ids == [raw[0].id]
    assert event.metadata["prompt"] == "extract@1" and event.speaker == "Ana"
    assert question.source.message_ids == ["D1:2", "D1:1"]
    (request,) = peer.requests
    # the turns are sent labelled with the time they were said; the schema admits only
    # those labels as provenance
    assert (
        "[id t1] [8 May 2023, Monday 13:56] Ana: I went to a pottery class"
        in (request["messages"][1]["content"])
    )
    schema = json.dumps(request["response_format"])
    assert request["response_format"]["type"] == "json_schema" and '"t1", "t2"' in schema


def test_malformed_json_is_repaired(llm_memory: Memory, peer: ChatPeer) -> None:
    sloppy = "Sure! ```json\n{'memories': [{'text': 'Ana likes pottery', 'kind': 'preference', "
    sloppy += "'turns': ['t1'], 'confidence': 0.8,},]}\n```"
    peer.replies = [Reply(content=sloppy)]
    llm_memory.add(TURNS, user_id="ana", timestamp="2023-05-08", wait=True)
    (pref,) = derived(llm_memory)
    assert pref.text == "Ana likes pottery" and pref.kind == "preference"
    assert len(peer.requests) == 1


def test_invalid_reply_is_asked_again_with_the_error(llm_memory: Memory, peer: ChatPeer) -> None:
    peer.replies = [
        extraction({**memory("Ana made a bowl"), "turns": ["t9"]}),  # no such turn
        extraction(memory("Ana made a bowl")),
    ]
    llm_memory.add(TURNS, user_id="ana", timestamp="2023-05-08", wait=True)
    assert [i.text for i in derived(llm_memory)] == ["Ana made a bowl"]
    assert len(peer.requests) == 2
    assert "not valid" in peer.requests[1]["messages"][-1]["content"]


def test_timeout_then_retry_succeeds(llm_memory: Memory, peer: ChatPeer) -> None:
    peer.replies = [
        Reply(delay_s=1.5, content="{}"),  # past the 1 s timeout: the client retries
        extraction(memory("Ana took a pottery class", "event", "2023-05-07")),
    ]
    llm_memory.add(TURNS, user_id="ana", timestamp="2023-05-08", wait=True)
    assert [i.text for i in derived(llm_memory)] == ["Ana took a pottery class"]
    assert len(peer.requests) == 2


def test_server_error_is_reported_and_raw_turns_kept(llm_memory: Memory, peer: ChatPeer) -> None:
    peer.replies = [Reply(status=500, body='{"error": "boom"}') for _ in range(4)]
    with pytest.raises(JobFailed, match="could not read 1 window") as failure:
        llm_memory.add(TURNS, user_id="ana", timestamp="2023-05-08", wait=True)
    assert "D1:1" in str(failure.value)
    (job,) = llm_memory.failed_jobs(user_id="ana")
    assert "500" in job["error"]
    # nothing silently lost: the turns are stored, embedded and found
    assert derived(llm_memory) == []
    hits = llm_memory.search("pottery class", user_id="ana")
    assert hits and hits[0].item.source.message_ids == ["D1:1"] and "dense" in hits[0].stages


def test_update_chain_and_duplicate_by_llm(llm_memory: Memory, peer: ChatPeer) -> None:
    def said(text: str, when: str) -> None:
        llm_memory.add(
            [{"speaker": "Ana", "content": text}], user_id="ana", timestamp=when, wait=True
        )

    peer.replies = [extraction(memory("Ana lives in Boston", date="2023-01-05"))]
    said("I live in Boston.", "2023-01-05")
    assert len(peer.requests) == 1  # nothing stored to weigh it against: no lifecycle call

    peer.replies = [
        extraction(memory("Ana moved to Paris", date="2023-06-01")),
        Reply(content='{"action": "supersede", "target": 1, "reason": "Ana moved"}'),
    ]
    said("I moved to Paris at the start of June.", "2023-06-09")
    asked = peer.requests[-1]["messages"][1]["content"]
    assert "1. [fact] Ana lives in Boston (valid from 2023-01-05)" in asked
    assert "New memory: Ana moved to Paris (valid from 2023-06-01)" in asked

    peer.replies = [
        extraction(memory("Ana lives in Paris now", date="2023-07-01")),
        Reply(content='{"action": "skip", "target": 1, "reason": "already known"}'),
    ]
    said("Paris is home now.", "2023-07-01")

    (paris,) = derived(llm_memory)
    assert paris.text == "Ana moved to Paris"
    (boston,) = derived(llm_memory, statuses=["superseded"])
    assert boston.text == "Ana lives in Boston"
    assert boston.valid_to == datetime(2023, 6, 1, tzinfo=UTC) and paris.supersedes == boston.id
    assert [i.text for i in derived(llm_memory, as_of="2023-05-01")] == ["Ana lives in Boston"]
    assert [i.text for i in derived(llm_memory, as_of="2023-06-02")] == ["Ana moved to Paris"]
    history = llm_memory.history(paris.id, user_id="ana")
    assert [h.action for h in history] == ["add", "skip"]
    assert history[1].reason and "LLM (lifecycle v1): already known" in history[1].reason
    (superseded,) = [
        h for h in llm_memory.history(boston.id, user_id="ana") if h.action == "supersede"
    ]
    assert superseded.reason and "Ana moved" in superseded.reason


def test_document_chunks_are_read_into_procedures(llm_memory: Memory, peer: ChatPeer) -> None:
    doc = "# Backup\n\nStop the server.\n\nCopy the data folder.\n\n# Restore\n\nCopy it back."
    peer.replies = [
        extraction(
            {
                **memory("To back up: stop the server, then copy the data folder.", "procedure"),
                "turns": ["t1", "t2"],
            }
        )
    ]
    chunks = llm_memory.add_document(
        doc, user_id="ana", title="ops.md", format="markdown", wait=True
    )
    assert [c.text for c in chunks] == [
        "Stop the server.\n\nCopy the data folder.",
        "Copy it back.",
    ]
    (procedure,) = derived(llm_memory)
    assert procedure.kind == "procedure" and procedure.source.document == "ops.md"
    assert procedure.source.message_ids == ["ops.md#0", "ops.md#1"]
    assert "[id t1]" in peer.requests[0]["messages"][1]["content"]
