"""The OpenAI-compatible LLM client and the tolerant JSON reading of replies.

The server here is a protocol peer on 127.0.0.1 speaking the OpenAI chat-completions protocol
(JSON answers and server-sent-event streams) with scripted replies; it is not a model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from protocol_peer import ProtocolPeer, Reply
from pydantic import BaseModel

from mnemic.errors import BackendUnavailable
from mnemic.infra.llm import LLM, LLMConfig, LLMOutputError, get_llm, parse_json_reply
from mnemic.infra.llm.openai_compat import OpenAICompatLLM


class Fact(BaseModel):
    subject: str
    tags: list[str] = []
    confident: bool = True


class ChatPeer(ProtocolPeer):
    """Answers ``POST /v1/chat/completions`` with the scripted content, or streams it."""

    def respond(self, handler: BaseHTTPRequestHandler, payload: dict, reply: Reply) -> None:
        if reply.sse is None:
            super().respond(handler, payload, reply)
            return
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.end_headers()  # HTTP/1.0: the body ends when the connection closes
        handler.wfile.write(b": keep-alive\n\n")
        for piece in reply.sse:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            handler.wfile.flush()
        handler.wfile.write(b'data: {"choices": [{"index": 0, "delta": {}}]}\n\n')
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.write(b'data: {"choices": [{"delta": {"content": "after"}}]}\n\n')

    def answer(self, payload: dict, reply: Reply) -> str:
        return completion(reply.content)


def completion(content: str) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    )


@pytest.fixture
def peer() -> Iterator[ChatPeer]:
    server = ChatPeer()
    yield server
    server.close()


def client(peer: ChatPeer, **kw: Any) -> OpenAICompatLLM:
    return OpenAICompatLLM("test-chat", base_url=peer.url, backoff_base_s=0.01, **kw)


ASK = [{"role": "user", "content": "Who went to Paris?"}]
REJECT_SCHEMA = Reply(
    status=400,
    body='{"error": {"message": "response_format type json_schema is not supported"}}',
)


def test_get_llm_by_config(peer: ChatPeer) -> None:
    assert get_llm(LLMConfig()) is None
    llm = get_llm(LLMConfig(backend="openai", model="m", base_url=peer.url, api_key="sk-x"))
    assert isinstance(llm, OpenAICompatLLM) and isinstance(llm, LLM)
    assert llm.id == "openai:m"
    with pytest.raises(ValueError):
        LLMConfig(backend="openai", bogus=1)  # type: ignore[call-arg]


def test_plain_completion(peer: ChatPeer) -> None:
    peer.replies = [Reply(content="Caroline went.")]
    llm = client(peer, api_key="sk-test")
    assert llm.complete(ASK, temperature=0.3, max_tokens=50) == "Caroline went."
    request = peer.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["model"] == "test-chat" and request["messages"] == ASK
    assert request["temperature"] == 0.3 and request["max_tokens"] == 50
    assert "response_format" not in request and "stream" not in request


def test_json_schema_reply_parsed(peer: ChatPeer) -> None:
    peer.replies = [Reply(content='{"subject": "Caroline", "tags": ["travel"]}')]
    fact = client(peer).complete_json(ASK, Fact)
    assert fact == Fact(subject="Caroline", tags=["travel"])
    fmt = peer.requests[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Fact" and fmt["json_schema"]["strict"] is False
    assert fmt["json_schema"]["schema"] == Fact.model_json_schema()


@pytest.mark.parametrize(
    "content",
    [
        '{"subject": "Mel", "tags": ["a", "b",],}',
        'Here you go:\n```json\n{"subject": "Mel", "tags": ["a", "b"]}\n```',
    ],
)
def test_malformed_json_repaired(peer: ChatPeer, content: str) -> None:
    peer.replies = [Reply(content=content)]
    assert client(peer).complete_json(ASK, Fact) == Fact(subject="Mel", tags=["a", "b"])
    assert len(peer.requests) == 1


def test_invalid_reply_retried_with_the_error_quoted(peer: ChatPeer) -> None:
    peer.replies = [Reply(content='{"tags": "not a list"}'), Reply(content='{"subject": "Jon"}')]
    assert client(peer).complete_json(ASK, Fact) == Fact(subject="Jon")
    assert len(peer.requests) == 2
    second = peer.requests[1]["messages"]
    assert second[: len(ASK)] == ASK
    assert second[-2] == {"role": "assistant", "content": '{"tags": "not a list"}'}
    follow_up = second[-1]
    assert follow_up["role"] == "user"
    assert follow_up["content"].startswith("Your previous reply was not valid:")
    assert "subject: Field required" in follow_up["content"]
    assert "tags: Input should be a valid list" in follow_up["content"]
    assert follow_up["content"].endswith("Reply with JSON only.")


def test_invalid_replies_exhaust_retries(peer: ChatPeer) -> None:
    peer.replies = [Reply(content="I cannot answer that.")] * 2
    with pytest.raises(LLMOutputError, match=r"not JSON.*I cannot answer that") as info:
        client(peer).complete_json(ASK, Fact, retries=1)
    assert info.value.reply == "I cannot answer that."
    assert len(peer.requests) == 2


def test_json_schema_rejected_falls_back_and_remembers(peer: ChatPeer) -> None:
    llm = client(peer)
    peer.replies = [REJECT_SCHEMA, Reply(content='{"subject": "Ann"}')]
    assert llm.complete_json(ASK, Fact) == Fact(subject="Ann")
    assert [r["response_format"]["type"] for r in peer.requests] == ["json_schema", "json_object"]
    system = peer.requests[1]["messages"][0]
    assert (
        system["role"] == "system"
        and "JSON" in system["content"]
        and "subject" in system["content"]
    )
    assert llm.json_format == "json_object"
    peer.replies = [Reply(content='{"subject": "Bo"}')]
    assert llm.complete_json(ASK, Fact) == Fact(subject="Bo")
    assert peer.requests[2]["response_format"] == {
        "type": "json_object",
        "schema": Fact.model_json_schema(),  # llama.cpp's server enforces it
    }


def test_falls_back_to_no_response_format(peer: ChatPeer) -> None:
    llm = client(peer)
    unknown = Reply(status=400, body='{"error": "unknown field: response_format"}')
    peer.replies = [REJECT_SCHEMA, unknown, Reply(content='{"subject": "Cy"}')]
    assert llm.complete_json(ASK, Fact) == Fact(subject="Cy")
    assert "response_format" not in peer.requests[2]
    assert llm.json_format == "none"


def test_other_400_is_not_a_format_fallback(peer: ChatPeer) -> None:
    peer.replies = [Reply(status=400, body='{"error": "context length exceeded"}')]
    with pytest.raises(BackendUnavailable, match=r"400.*context length"):
        client(peer).complete_json(ASK, Fact)
    assert len(peer.requests) == 1


def test_500_then_success(peer: ChatPeer) -> None:
    peer.replies = [Reply(status=500, body='{"error": "overloaded"}'), Reply(content="fine")]
    assert client(peer, max_retries=2).complete(ASK) == "fine"
    assert len(peer.requests) == 2


def test_401_fails_at_once_with_the_key_hint(peer: ChatPeer) -> None:
    peer.replies = [Reply(status=401, body='{"error": "invalid api key"}')]
    with pytest.raises(BackendUnavailable, match=r"401.*invalid api key.*check llm\.api_key"):
        client(peer, max_retries=3).complete(ASK)
    assert len(peer.requests) == 1


def test_malformed_completion_body(peer: ChatPeer) -> None:
    peer.replies = [Reply(body='{"choices": []}')]
    with pytest.raises(BackendUnavailable, match=r"without choices\[0\]\.message\.content"):
        client(peer).complete(ASK)


def test_timeout_is_honoured(peer: ChatPeer) -> None:
    peer.replies = [Reply(delay_s=1.5)]
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="timed out"):
        client(peer, timeout_s=0.2, max_retries=0).complete(ASK)
    assert time.monotonic() - start < 1.0


def test_streaming_yields_chunks_in_order(peer: ChatPeer) -> None:
    peer.replies = [Reply(sse=["Car", "oline ", "went", " to Paris."])]
    pieces = list(client(peer).stream(ASK))
    assert pieces == ["Car", "oline ", "went", " to Paris."]  # nothing after [DONE]
    assert peer.requests[0]["stream"] is True


def test_streaming_error_status(peer: ChatPeer) -> None:
    peer.replies = [Reply(status=403, body='{"error": "forbidden"}')]
    with pytest.raises(BackendUnavailable, match=r"403.*forbidden.*llm\.api_key"):
        list(client(peer).stream(ASK))


# --- parse_json_reply --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"subject": "a"}', Fact(subject="a")),
        ('  {"subject": "a", "tags": ["x",],}  ', Fact(subject="a", tags=["x"])),
        ('```\n{"subject": "a"}\n```', Fact(subject="a")),
        ('Sure! ```json {"subject": "a"} ``` Anything else?', Fact(subject="a")),
        ("{'subject': 'it\\'s', 'tags': ['x']}", Fact(subject="it's", tags=["x"])),
        ("{'subject': \"Ann's trip\"}", Fact(subject="Ann's trip")),
        ("I'm sure: {\"subject\": \"don't\", 'tags': ['a',]", Fact(subject="don't", tags=["a"])),
        ('{"subject": "a", "confident": False}', Fact(subject="a", confident=False)),
        ('{"subject": "a"}}]', Fact(subject="a")),
        ('{"subject": "a", "tags": ["x", "y"}', Fact(subject="a", tags=["x", "y"])),
        ('{"subject": "a", "tags": ["x"', Fact(subject="a", tags=["x"])),
        ('{"subject": "a, \\"b\\" }]', Fact(subject='a, "b" }]')),
        ('{"subject": "braces } ] , inside"}', Fact(subject="braces } ] , inside")),
        ('Notes [draft] then {"subject": "ünï"} end', Fact(subject="ünï")),
        ('{"subject": "a"} and {"subject": "b"}', Fact(subject="a")),
    ],
)
def test_parse_json_reply(text: str, expected: Fact) -> None:
    assert parse_json_reply(text, Fact) == expected


def test_parse_json_reply_does_not_touch_strings() -> None:
    text = '{"subject": "True, None, \'quoted\' [x,]"}'
    assert parse_json_reply(text, Fact).subject == "True, None, 'quoted' [x,]"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("no json at all", r"not JSON.*reply: 'no json at all'"),
        ('{"tags": 3}', r"does not match Fact: subject: Field required; tags: Input should be"),
        ("[1, 2]", r"\(root\): Input should be a valid dictionary"),
        ("", "not JSON"),
    ],
)
def test_parse_json_reply_errors(text: str, says: str) -> None:
    with pytest.raises(LLMOutputError, match=says) as info:
        parse_json_reply(text, Fact)
    assert isinstance(info.value, BackendUnavailable) and info.value.reply == text


def test_parse_json_reply_quotes_a_long_reply_cut_short() -> None:
    with pytest.raises(LLMOutputError) as info:
        parse_json_reply("word " * 500, Fact)
    assert "..." in str(info.value) and len(str(info.value)) < 400


def test_server_error_refusing_json_schema_falls_back_at_once(peer: ChatPeer) -> None:
    # llama-cpp-python's server answers OpenAI's json_schema with HTTP 500 and a validation
    # error: retrying cannot help, the next format is asked at once
    refusal = Reply(
        status=500,
        body='{"error": {"message": "1 validation error: {\'type\': \'literal_error\', '
        "'loc': ('body', 'response_format', 'type'), 'msg': \\\"Input should be 'text' or "
        "'json_object'\\\", 'input': 'json_schema'}\"}}",
    )
    llm = client(peer, max_retries=3)
    peer.replies = [refusal, Reply(content='{"subject": "Di"}')]
    assert llm.complete_json(ASK, Fact) == Fact(subject="Di")
    assert [r["response_format"]["type"] for r in peer.requests] == ["json_schema", "json_object"]
    # an ordinary server error is still retried, not taken for a refusal
    peer.replies = [
        Reply(status=500, body='{"error": "overloaded"}'),
        Reply(content='{"subject": "Ed"}'),
    ]
    assert llm.complete_json(ASK, Fact) == Fact(subject="Ed")
    assert [r["response_format"]["type"] for r in peer.requests[2:]] == ["json_object"] * 2
