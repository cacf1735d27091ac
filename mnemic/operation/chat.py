"""Memory-augmented chat: the session's recent turns and the memories that fit a token budget,
answered by the configured LLM; the question and the answer are remembered as new turns.

Without an LLM the answer is the retrieved memories themselves, saying that no LLM is
configured, and only the question is remembered (an answer made of memories would store
them twice).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mnemic.errors import InvalidInput, NotFound
from mnemic.models import ChatReply, MemoryItem, utcnow
from mnemic.operation.reader.messages import parse_time
from mnemic.operation.retrieval.packing import context_text

if TYPE_CHECKING:
    from mnemic.sdk import Memory

RECENT_TURNS = 8  # the session's last turns given to the model as the conversation so far
ASSISTANT = "assistant"
NO_LLM = (
    'No LLM is configured (set llm.backend = "openai" and llm.model / llm.base_url, or '
    "MNEMIC_LLM__BACKEND=openai), so here is what I remember that matches your question:"
)
NOTHING_FOUND = "I have no memories that match this question yet."

SYSTEM = """You are a helpful assistant with a long-term memory of past conversations.
The current date is {today}. These memories may help with the user's message; use them when \
they are relevant, say when they do not answer the question, and never invent memories.

Memories:
{context}"""


def recent_turns(
    mem: Memory, *, user_id: str, cube_id: str | None, session_id: str, n: int
) -> list[MemoryItem]:
    """The session's last ``n`` items, oldest first (working memory for the conversation)."""
    try:
        owner, cube = mem._access(user_id, cube_id)
    except NotFound:
        return []
    from mnemic.sdk import SearchFilters

    flt = SearchFilters(session_id=session_id).to_item_filter()
    total = mem.store.count_items(owner, cube, flt)
    return mem.store.list_items(owner, cube, flt, limit=n, offset=max(0, total - n))


def chat(
    mem: Memory,
    query: str,
    *,
    user_id: str,
    session_id: str | None = None,
    cube_id: str | None = None,
    token_budget: int = 1000,
    now: datetime | str | None = None,
) -> ChatReply:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must be a non-empty string")
    if not isinstance(token_budget, int) or token_budget < 1:
        raise InvalidInput("token_budget must be a positive integer")
    when = parse_time(now, "now") or utcnow()
    history = (
        recent_turns(mem, user_id=user_id, cube_id=cube_id, session_id=session_id, n=RECENT_TURNS)
        if session_id is not None
        else []
    )
    recent_ids = {item.id for item in history}
    hits = mem.search(
        query,
        user_id=user_id,
        cube_id=cube_id,
        top_k=50,
        token_budget=token_budget,
        now=when,
        session_id=session_id,  # the session's working memory (scheduler) joins the ranking
    )
    # the conversation so far is already in the prompt; do not spend the budget twice
    hits = [h for h in hits if h.item.id not in recent_ids]
    context = context_text(hits)
    llm = mem.llm
    asked = mem.add(
        {"speaker": user_id, "content": query},
        user_id=user_id,
        cube_id=cube_id,
        session_id=session_id,
        timestamp=when,
    )
    if llm is None:
        answer = f"{NO_LLM}\n{context}" if hits else f"{NO_LLM}\n{NOTHING_FOUND}"
        return ChatReply(
            answer=answer, session_id=session_id, llm=None, context=context, hits=hits, turns=asked
        )

    messages = [
        {
            "role": "system",
            "content": SYSTEM.format(
                today=f"{when:%A %d %B %Y}", context=context or "(none match this message)"
            ),
        }
    ]
    for item in history:
        role = "assistant" if item.speaker == ASSISTANT else "user"
        messages.append(
            {"role": role, "content": item.text if role == "assistant" else item.said()}
        )
    messages.append({"role": "user", "content": query})
    answer = llm.complete(messages).strip()
    if answer:
        asked += mem.add(
            {"speaker": ASSISTANT, "content": answer},
            user_id=user_id,
            cube_id=cube_id,
            session_id=session_id,
            timestamp=when,
        )
    return ChatReply(
        answer=answer, session_id=session_id, llm=llm.id, context=context, hits=hits, turns=asked
    )
