"""chat(): memories packed into a token budget, the configured LLM (a scripted OpenAI peer
here), and the new turns written back; without an LLM, the memories themselves."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra"))
from protocol_peer import ProtocolPeer, Reply

from mnemic import Memory, load_settings
from mnemic.errors import BackendUnavailable
from mnemic.infra.tokens import count_tokens


class ChatPeer(ProtocolPeer):
    def answer(self, payload: dict, reply: Reply) -> str:
        return json.dumps(
            {
                "id": "c1",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": "stop",
                    }
                ],
            }
        )


@pytest.fixture
def peer() -> Iterator[ChatPeer]:
    p = ChatPeer()
    yield p
    p.close()


@pytest.fixture
def with_llm(tmp_path: Path, embedder: object, peer: ChatPeer) -> Iterator[Memory]:
    settings = load_settings(
        home=tmp_path / "llm",
        llm={"backend": "openai", "model": "test-model", "base_url": peer.url, "max_retries": 0},
    )
    with Memory(settings, embedder=embedder) as mem:  # type: ignore[arg-type]
        yield mem


def _facts(mem: Memory) -> None:
    mem.add(
        [
            {"role": "ana", "content": "I adopted a cat called Miso in March."},
            {"role": "ana", "content": "My brother lives in Porto and teaches maths."},
            {"role": "ana", "content": "I run 10 km every Sunday morning."},
        ],
        user_id="ana",
        session_id="old",
        timestamp="2024-03-10T10:00:00",
    )


def test_chat_without_llm_answers_with_memories_and_says_so(memory: Memory) -> None:
    _facts(memory)
    reply = memory.chat("what is my cat called?", user_id="ana", session_id="s1")
    assert reply.llm is None
    assert "No LLM is configured" in reply.answer
    assert "Miso" in reply.answer and reply.hits[0].item.text.startswith("I adopted a cat")
    # the question is remembered in the session; no answer turn is written without an LLM
    assert [t.text for t in reply.turns] == ["what is my cat called?"]
    session = memory.get_all(user_id="ana", filters={"session_id": "s1"})
    assert [(i.speaker, i.text) for i in session] == [("ana", "what is my cat called?")]
    empty = memory.chat("anything?", user_id="zoe")
    assert "no memories" in empty.answer and empty.hits == []


def test_chat_with_llm_packs_memories_and_writes_both_turns(
    with_llm: Memory, peer: ChatPeer
) -> None:
    _facts(with_llm)
    peer.replies.append(Reply(content="Your cat is called Miso."))
    reply = with_llm.chat("what is my cat called?", user_id="ana", session_id="s1", token_budget=40)
    assert reply.answer == "Your cat is called Miso." and reply.llm == "openai:test-model"
    assert count_tokens(reply.context) <= 40 and "Miso" in reply.context
    sent = peer.requests[-1]
    assert sent["model"] == "test-model"
    assert "Miso" in sent["messages"][0]["content"]  # the memories reach the model
    assert sent["messages"][-1] == {"role": "user", "content": "what is my cat called?"}
    assert [(t.speaker, t.text) for t in reply.turns] == [
        ("ana", "what is my cat called?"),
        ("assistant", "Your cat is called Miso."),
    ]
    # the next turn of the session sees the conversation so far as chat messages
    peer.replies.append(Reply(content="In March."))
    with_llm.chat("when did I get it?", user_id="ana", session_id="s1")
    roles = [(m["role"], m["content"]) for m in peer.requests[-1]["messages"][1:]]
    assert roles == [
        ("user", "ana: what is my cat called?"),
        ("assistant", "Your cat is called Miso."),
        ("user", "when did I get it?"),
    ]
    assert len(with_llm.get_all(user_id="ana", filters={"session_id": "s1"})) == 4


def test_llm_failure_keeps_the_question(with_llm: Memory, peer: ChatPeer) -> None:
    peer.replies.append(Reply(status=500, body='{"error": "boom"}'))
    with pytest.raises(BackendUnavailable):
        with_llm.chat("are you there?", user_id="ana", session_id="s2")
    kept = with_llm.get_all(user_id="ana", filters={"session_id": "s2"})
    assert [i.text for i in kept] == ["are you there?"]
