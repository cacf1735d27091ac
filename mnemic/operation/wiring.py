"""How the SDK's ``Memory`` builds its lifecycle, extractor and job queue from the settings,
and the lifecycle policies it applies (TTL, archival, version chains)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mnemic.config import LifecycleConfig, Settings
from mnemic.errors import ConfigError
from mnemic.infra.embed.base import Embedder
from mnemic.infra.store.base import ItemFilter, Store
from mnemic.models import MemoryItem, MemoryStatus
from mnemic.operation.extraction import JOB_KIND, ExtractionJob, Extractor
from mnemic.operation.jobs import InProcessQueue, JobQueue
from mnemic.operation.lifecycle import Lifecycle
from mnemic.operation.organizer import Organizer
from mnemic.operation.organizer.job import JOB_KIND as ORGANIZE_JOB
from mnemic.operation.organizer.job import OrganizeJob

if TYPE_CHECKING:
    from mnemic.infra.llm.base import LLM

__all__ = [
    "JOB_KIND",
    "ORGANIZE_JOB",
    "expire",
    "job_scope",
    "lifecycle",
    "start_jobs",
    "version_chain",
]


def job_scope(user_id: str, cube_id: str) -> str:
    return f"{user_id}\n{cube_id}"  # ids cannot hold control characters


def _llm(settings: Settings) -> object | None:
    if settings.reader.backend != "llm":
        return None
    if settings.llm.backend == "none":
        raise ConfigError(
            'reader.backend = "llm" needs an LLM: set llm.backend (openai or hf) and llm.model'
        )
    from mnemic.infra.llm import get_llm

    return get_llm(settings.llm)


def lifecycle(settings: Settings, store: Store) -> Lifecycle:
    return Lifecycle(store, settings.lifecycle, _llm(settings))  # type: ignore[arg-type]


def extractor(settings: Settings, lc: Lifecycle) -> Extractor | None:
    if not settings.reader.extract:
        return None
    if lc.llm is not None:
        from mnemic.operation.reader.llm import LLMReader

        return LLMReader(lc.llm, window_chars=settings.reader.llm_window_chars)
    from mnemic.operation.reader.rules import RuleExtractor

    return RuleExtractor()


def start_jobs(
    settings: Settings,
    store: Store,
    embedder: Callable[[], Embedder],
    lc: Lifecycle,
    queue: JobQueue | None,
    *,
    background: bool = True,
) -> JobQueue:
    """The queue (by default :func:`job_queue`) with the extraction handler;
    ``background``: run jobs on a worker thread, else when someone waits for them."""
    if queue is None:
        queue = job_queue(settings, background=background)
    queue.register(JOB_KIND, ExtractionJob(store, embedder, extractor(settings, lc), lc))
    queue.register(ORGANIZE_JOB, OrganizeJob(organizer(settings, store)))
    queue.start()
    return queue


def organizer(settings: Settings, store: Store) -> Organizer:
    """The tree and graph organizer; summaries by the configured LLM, if any (made on the
    first pass that writes one), else extractive."""

    def llm() -> LLM | None:
        if settings.llm.backend == "none":
            return None
        from mnemic.infra.llm import get_llm

        return get_llm(settings.llm)

    return Organizer(store, settings.organizer, llm_factory=llm)


def job_queue(settings: Settings, *, background: bool = True) -> JobQueue:
    """``jobs.backend``: PostgreSQL (shared by every process using the store) or a journal
    file beside the SQLite database; ``auto`` follows the store."""
    backend = settings.jobs.backend
    if backend == "auto":
        backend = "postgres" if settings.store.backend == "postgres" else "local"
    if backend == "postgres":
        from mnemic.operation.pg_jobs import PostgresQueue

        return PostgresQueue(
            settings.store.dsn or "", worker=background, lease_s=settings.jobs.lease_s
        )
    db = settings.db_path
    return InProcessQueue(db.with_name(db.name + ".jobs"), worker=background)


def with_ttl(items: list[MemoryItem], config: LifecycleConfig) -> list[MemoryItem]:
    """Items whose kind has a TTL get ``expires_at`` (from when they were recorded)."""
    if not config.ttl_days:
        return items
    out = []
    for item in items:
        days = config.ttl_days.get(str(item.kind))
        if days is not None and item.expires_at is None:
            item = item.model_copy(update={"expires_at": item.recorded_at + timedelta(days=days)})
        out.append(item)
    return out


def expire(
    store: Store, config: LifecycleConfig, user_id: str, cube_id: str, now: datetime
) -> dict[str, int]:
    counts = {"expired": 0, "archived": 0}
    unused_since = (
        None if config.archive_after_days is None else now - timedelta(config.archive_after_days)
    )
    offset, page = 0, 1000
    due: list[tuple[MemoryItem, str, str]] = []
    while True:
        items = store.list_items(user_id, cube_id, ItemFilter(), limit=page, offset=offset)
        for item in items:
            if item.expires_at is not None and item.expires_at <= now:
                due.append((item, "expired", f"expired at {item.expires_at:%Y-%m-%d %H:%M}"))
            elif (
                unused_since is not None and (item.last_accessed or item.recorded_at) < unused_since
            ):
                due.append((item, "archived", f"unused for {config.archive_after_days} days"))
        if len(items) < page:
            break
        offset += page
    for item, what, reason in due:
        archived = item.model_copy(
            update={"status": MemoryStatus.ARCHIVED, "version": item.version + 1}
        )
        store.update_item(
            archived,
            None,
            actor="lifecycle",
            action="expire" if what == "expired" else "archive",
            reason=reason,
            expected_version=item.version,
        )
        counts[what] += 1
    return counts


def version_chain(store: Store, user_id: str, cube_id: str, item: MemoryItem) -> list[MemoryItem]:
    """Follow ``supersedes`` back and ``superseded_by`` forward; oldest first."""
    chain = [item]
    seen = {item.id}
    back = item
    while back.supersedes and back.supersedes not in seen:
        found = store.get_items(user_id, cube_id, [back.supersedes])
        if not found:
            break
        back = found[0]
        seen.add(back.id)
        chain.insert(0, back)
    forward = item
    while isinstance(nxt := forward.metadata.get("superseded_by"), str) and nxt not in seen:
        found = store.get_items(user_id, cube_id, [nxt])
        if not found:
            break
        forward = found[0]
        seen.add(forward.id)
        chain.append(forward)
    return chain


def derived_from(store: Store, user_id: str, cube_id: str, item_id: str) -> list[MemoryItem]:
    """Extracted memories whose every source is the item ``item_id`` (any status but deleted)."""
    from mnemic.operation.reader.rules import DERIVED_TAG

    flt = ItemFilter(
        statuses=(MemoryStatus.ACTIVE, MemoryStatus.SUPERSEDED, MemoryStatus.ARCHIVED),
        tags=(DERIVED_TAG,),
    )
    out: list[MemoryItem] = []
    offset, page = 0, 1000
    while True:
        items = store.list_items(user_id, cube_id, flt, limit=page, offset=offset)
        out.extend(i for i in items if i.source.item_ids and set(i.source.item_ids) == {item_id})
        if len(items) < page:
            return out
        offset += page
