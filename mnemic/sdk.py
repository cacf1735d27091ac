"""The SDK: ``mnemic.Memory`` — every caller (CLI, REST, MCP, bench) goes through it.

from mnemic import Memory
mem = Memory()                       # embedded store in MNEMIC_HOME or the user data dir
mem.add("I moved to Lisbon in May.", user_id="ana")
for hit in mem.search("where does Ana live?", user_id="ana"):
    print(hit.score, hit.item.text)
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mnemic.config import RetrievalConfig, Settings, load_settings
from mnemic.errors import AccessDenied, ConfigError, Conflict, InvalidInput, NotFound
from mnemic.infra.embed import Embedder, get_embedder
from mnemic.infra.store.base import Grant, ItemFilter, Scored, Store
from mnemic.models import (
    ChatReply,
    CubeManifest,
    HistoryEntry,
    Link,
    MemoryItem,
    MemoryKind,
    MemoryLayer,
    MemoryStatus,
    MemoryTree,
    SearchHit,
    TreeTopic,
    utcnow,
)
from mnemic.operation.jobs import JobQueue
from mnemic.operation.reader.deterministic import DeterministicReader, embed_text
from mnemic.operation.reader.messages import (
    MessagesInput,
    check_text,
    normalize_messages,
    parse_time,
)
from mnemic.operation.retrieval.packing import pack
from mnemic.operation.retrieval.pipeline import Retriever
from mnemic.operation.scheduler import Scheduler

if TYPE_CHECKING:
    from mnemic.infra.llm.base import LLM
    from mnemic.operation.organizer import Organizer
    from mnemic.operation.scheduler.activation import KVPreloader

MAX_TOP_K = 1000
MAX_TOKEN_BUDGET = 1_000_000
MAX_OFFSET = 2**62  # SQLite integers are 64-bit
_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


class SearchFilters(BaseModel):
    """Filters a caller may pass to ``search`` and ``get_all`` (as a dict or this model)."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = None
    agent_id: str | None = None
    speaker: str | None = None
    kinds: list[MemoryKind] | None = None
    statuses: list[MemoryStatus] | None = None
    tags: list[str] | None = None
    after: datetime | None = None  # valid_from >= after
    before: datetime | None = None  # valid_from < before
    as_of: datetime | None = None  # what was true at that time (valid time)
    known_at: datetime | None = None  # what had been recorded by that time (system time)

    def to_item_filter(self) -> ItemFilter:
        statuses: tuple[MemoryStatus, ...]
        if self.statuses is not None:
            statuses = tuple(self.statuses)
        elif self.as_of is not None or self.known_at is not None:
            # a view of the past sees items that were later superseded or archived
            statuses = (MemoryStatus.ACTIVE, MemoryStatus.SUPERSEDED, MemoryStatus.ARCHIVED)
        else:
            statuses = (MemoryStatus.ACTIVE,)
        return ItemFilter(
            statuses=statuses,
            kinds=tuple(self.kinds or ()),
            session_id=self.session_id,
            agent_id=self.agent_id,
            speaker=self.speaker,
            tags=tuple(self.tags or ()),
            valid_after=parse_time(self.after),
            valid_before=parse_time(self.before),
            as_of=parse_time(self.as_of),
            known_at=parse_time(self.known_at),
        )


_UPDATABLE = {
    "text",
    "kind",
    "layer",
    "status",
    "valid_from",
    "valid_to",
    "expires_at",
    "speaker",
    "entities",
    "tags",
    "confidence",
    "importance",
    "metadata",
    "session_id",
    "agent_id",
}


class Memory:
    """A memory system for one or many users, over one store and one embedder."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        home: str | Path | None = None,
        config_file: str | Path | None = None,
        store: Store | None = None,
        embedder: Embedder | None = None,
        jobs: JobQueue | None = None,
        background: bool = True,
    ) -> None:
        """``background``: run add's jobs (embedding, extraction) on a worker thread of this
        process; ``False`` (short-lived processes such as the CLI): journal them and run them
        when something waits for them (``add(wait=True)``, ``search``, ``wait``)."""
        if settings is None:
            overrides: dict[str, Any] = {"home": Path(home)} if home is not None else {}
            settings = load_settings(config_file, **overrides)
        self.settings = settings
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self.store: Store = store if store is not None else self._open_store()
        self.reader = DeterministicReader(
            context_turns=settings.reader.context_turns,
            context_after=settings.reader.context_after,
            date_keys=settings.reader.date_keys,
        )
        self._retriever: Retriever | None = None
        self._scheduler: Scheduler | None = None
        self._kv_preloader: KVPreloader | None = None
        self._organizer: Organizer | None = None
        # called with the stored items after every durable add (benchmarks, observers)
        self.listeners: list[Callable[[list[MemoryItem]], None]] = []
        # items added through this process per scope since it last queued an organize job
        self._unorganized: dict[tuple[str, str], int] = {}
        from mnemic.operation import wiring

        self.lifecycle = wiring.lifecycle(self.settings, self.store)
        self.jobs: JobQueue = wiring.start_jobs(
            self.settings,
            self.store,
            lambda: self.embedder,
            self.lifecycle,
            jobs,
            background=background,
        )

    # ------------------------------------------------------------------ wiring

    def _open_store(self) -> Store:
        backend = self.settings.store.backend
        if backend == "sqlite":
            from mnemic.infra.store.sqlite import SQLiteStore

            return SQLiteStore(self.settings.db_path)
        if backend == "postgres":
            from mnemic.infra.store.postgres import PostgresStore

            cfg = self.settings.store
            return PostgresStore(cfg.dsn or "", pool_size=cfg.pool_size)
        raise ConfigError(f"unknown store backend {backend!r}; use sqlite or postgres")

    @property
    def embedder(self) -> Embedder:
        """Loaded on first use, so commands that never embed start fast."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = get_embedder(self.settings.embedder)
        return self._embedder

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = Retriever(self.store, self.embedder, self.settings.retrieval)
        return self._retriever

    @property
    def scheduler(self) -> Scheduler | None:
        """The memory scheduler (per-session working memory), or None when disabled."""
        if self._scheduler is None and self.settings.scheduler.enabled:
            self._scheduler = Scheduler(
                self.store, self.settings.scheduler, embedder=lambda: self.embedder
            )
        return self._scheduler

    def attach_model(
        self, model: Any, tokenizer: Any, *, model_id: str | None = None, max_items: int = 50
    ) -> None:
        """Preload into activation memory too: from now on every preload of a session's
        working memory (next-scene prediction after ``add``) also compiles the KV cache of
        those items for this local transformer (extra ``hf``), in the background, into the
        cube's activation folder; :meth:`session_cache` hands it over for generation
        (:func:`mnemic.infra.activation.generate`)."""
        from mnemic.operation.scheduler.activation import KVPreloader

        scheduler = self.scheduler
        if scheduler is None:
            raise ConfigError("attach_model needs the scheduler: set scheduler.enabled = true")
        if self._kv_preloader is not None:
            self._kv_preloader.close()
        self._kv_preloader = KVPreloader(
            model,
            tokenizer,
            lambda user, cube: self.cube_folder(cube, user_id=user),
            model_id=model_id,
            max_items=max_items,
        )
        scheduler.on_preload = self._kv_preloader

    def session_cache(
        self,
        session_id: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        wait: float | None = None,
    ) -> Any | None:
        """The KV cache of the session's preloaded working memory (an
        :class:`~mnemic.infra.activation.kv.KVCache`), or None: no model attached, nothing
        preloaded yet, or one of its items changed since. ``wait``: seconds to wait for a
        compile in progress."""
        owner, cube = self._access(user_id, cube_id)
        preloader = self._kv_preloader
        if preloader is None:
            return None
        if wait:
            preloader.wait(wait)
        cache = preloader.cache((owner, cube, session_id))
        if cache is None:
            return None
        now = self.store.get_items(owner, cube, [item_id for item_id, _ in cache.items])
        versions = {i.id: (i.version if i.status == "active" else None) for i in now}
        return cache if cache.is_current(versions) else None

    def set_retrieval(self, config: RetrievalConfig) -> None:
        """Search with another retrieval recipe from now on (stages, weights, depths)."""
        self._retriever = Retriever(self.store, self.embedder, config)
        self.settings = self.settings.model_copy(update={"retrieval": config})

    def close(self) -> None:
        """Close the store; jobs not yet done stay journaled and resume on the next open."""
        if self._kv_preloader is not None:
            self._kv_preloader.close()
        self.jobs.close()
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ scope

    def _access(
        self,
        user_id: str,
        cube_id: str | None,
        *,
        create: bool = False,
        embeds: bool = False,
        write: bool = False,
    ) -> tuple[str, str]:
        """(owner, cube) of the cube a call works on, checked: it exists (or is created), the
        user owns it or holds a grant on it (a write grant when ``write``), and when the call
        embeds (``create``/``embeds``), the configured embedder is the cube's. Store calls
        use the owner: a shared cube's items stay in its owner's scope."""
        _check_id(user_id, "user_id")
        cube = cube_id if cube_id is not None else default_cube(user_id)
        _check_id(cube, "cube_id")
        manifest = self.store.get_cube(cube)
        if manifest is None:
            if not create:
                raise NotFound(f"user {user_id!r} has no cube {cube!r}; add memories to create it")
            manifest = self.store.ensure_cube(
                cube, user_id, embedder=self.embedder.id, dim=self.embedder.dim
            )
        if manifest.owner_id != user_id:
            access = {g.grantee: g.access for g in self.store.grants(cube_id=cube)}.get(user_id)
            if access is None:
                raise AccessDenied(
                    f"cube {cube!r} belongs to another user; use your own cube_id "
                    "or ask its owner to share it"
                )
            if (write or create) and access != "write":
                raise AccessDenied(
                    f"cube {cube!r} is shared with {user_id!r} read-only; ask its owner "
                    "for write access"
                )
        if (create or embeds) and manifest.embedder and manifest.embedder != self.embedder.id:
            raise ConfigError(
                f"cube {cube!r} was embedded with {manifest.embedder} but the configured "
                f"embedder is {self.embedder.id}; configure that embedder or migrate the cube"
            )
        return manifest.owner_id, cube

    # ------------------------------------------------------------------ writes

    def add(
        self,
        messages: MessagesInput,
        *,
        user_id: str,
        cube_id: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        timestamp: datetime | str | None = None,
        wait: bool = False,
    ) -> list[MemoryItem]:
        """Remember messages or text. Returns the stored raw items once they are durable.

        ``messages``: a text, a list of texts, or chat messages as dicts with ``content`` (or
        ``text``), and optionally ``role``/``speaker``, ``id`` and ``timestamp``.
        ``timestamp`` is when the conversation happened (default: now); it becomes each
        item's ``valid_from`` unless a message carries its own.

        Raw turns are stored (and full-text searchable) before this returns; embedding them,
        extracting memories and the lifecycle decisions run as a background job. ``wait``
        returns only when that job is done (and raises if it failed).
        """
        parsed = normalize_messages(messages, self.settings.max_text_chars)
        owner, cube = self._access(user_id, cube_id, create=True, write=True)
        if session_id is not None:
            _check_id(session_id, "session_id")
        when = parse_time(timestamp) or utcnow()
        stored = self._session_tail(owner, cube, session_id)
        items = self.reader.read(
            parsed,
            user_id=owner,
            cube_id=cube,
            session_id=session_id,
            agent_id=agent_id,
            timestamp=when,
            earlier=stored,
        )
        from mnemic.operation import wiring

        items = wiring.with_ttl(items, self.settings.lifecycle)
        # the session's last stored turns gain these turns in their keys, in the same
        # transaction as the add
        rekey = self.reader.rekey(stored, parsed)
        self.store.add_items(items, None, actor=user_id, reason="add", rekey=rekey)
        if self.scheduler is not None:
            self.scheduler.observe(items, None)
        for listener in self.listeners:
            listener(items)
        job = self.jobs.submit(
            wiring.JOB_KIND,
            wiring.job_scope(owner, cube),
            {
                "user_id": owner,
                "cube_id": cube,
                "item_ids": [i.id for i in items],
                "actor": user_id,
            },
        )
        self._organize_if_due(owner, cube, len(items))
        if wait:
            self.jobs.wait([job])
        return items

    def _session_tail(self, owner: str, cube: str, session_id: str | None) -> list[MemoryItem]:
        """The session's last stored turns, oldest first, for an add that continues it (an
        agent adding one exchange at a time): the context of its first turns, and the turns
        whose keys it extends."""
        reader = self.settings.reader
        wanted = reader.context_turns + reader.context_after
        if session_id is None or wanted == 0:
            return []
        return self.store.session_tail(owner, cube, session_id, wanted, (MemoryKind.RAW_TURN,))

    def _organize_if_due(self, owner: str, cube: str, added: int) -> int | None:
        """Queue an organize job (it runs after the scope's extraction jobs) when the policy
        says so (``organizer.every_adds``, ``growth``); the store is asked at the first add
        of this process to the scope, then once per ``every_adds`` items added."""
        from mnemic.operation import wiring
        from mnemic.operation.organizer import job as organize

        cfg = self.settings.organizer
        if cfg.every_adds <= 0:
            return None
        key = (owner, cube)
        since = self._unorganized.get(key)
        if since is not None and since + added < cfg.every_adds:
            self._unorganized[key] = since + added
            return None
        self._unorganized[key] = 0
        if not organize.due(self.store, cfg, owner, cube):
            return None
        return self.jobs.submit(
            wiring.ORGANIZE_JOB, wiring.job_scope(owner, cube), {"user_id": owner, "cube_id": cube}
        )

    def add_document(
        self,
        text: str,
        *,
        user_id: str,
        title: str | None = None,
        format: str = "text",
        cube_id: str | None = None,
        session_id: str | None = None,
        timestamp: datetime | str | None = None,
        wait: bool = False,
    ) -> list[MemoryItem]:
        """Remember a document (``format``: ``text`` or ``markdown``), chunked along its
        structure (headings, paragraphs, sentences); each chunk is a ``document`` item with
        its offsets. Extraction runs in the background as for ``add``."""
        from mnemic.operation import wiring
        from mnemic.operation.reader.documents import read_document

        text = check_text(text, self.settings.max_text_chars, "document")
        if format not in ("text", "markdown"):
            raise InvalidInput(f"format must be text or markdown, not {format!r}")
        if title is not None:
            _check_id(title, "title")
        owner, cube = self._access(user_id, cube_id, create=True, write=True)
        if session_id is not None:
            _check_id(session_id, "session_id")
        items = read_document(
            text,
            user_id=owner,
            cube_id=cube,
            title=title,
            fmt=format,
            timestamp=parse_time(timestamp) or utcnow(),
            session_id=session_id,
        )
        items = wiring.with_ttl(items, self.settings.lifecycle)
        self.store.add_items(items, None, actor=user_id, reason=f"add document {title or ''}")
        job = self.jobs.submit(
            wiring.JOB_KIND,
            wiring.job_scope(owner, cube),
            {
                "user_id": owner,
                "cube_id": cube,
                "item_ids": [i.id for i in items],
                "actor": user_id,
            },
        )
        self._organize_if_due(owner, cube, len(items))
        if wait:
            self.jobs.wait([job])
        return items

    def update(
        self,
        item_id: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        **changes: Any,
    ) -> MemoryItem:
        """Change an item's fields; its version goes up and history keeps the old one.
        With ``expected_version``, the change is refused (Conflict) unless the stored item
        still has that version: no lost update between a read and this write."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidInput(
                f"cannot update {sorted(unknown)}; updatable fields: {sorted(_UPDATABLE)}"
            )
        if not changes:
            raise InvalidInput("nothing to update: pass fields such as text=... or tags=[...]")
        owner, cube = self._access(user_id, cube_id, embeds="text" in changes, write=True)
        old = self._get(owner, cube, item_id)
        if expected_version is not None and expected_version != old.version:
            raise Conflict(
                f"memory {item_id} is at version {old.version}, not {expected_version}; "
                "read it again and retry your change"
            )
        if "text" in changes:
            changes["text"] = check_text(changes["text"], self.settings.max_text_chars)
            changes["index_text"] = None  # the old key described the old text
        try:
            new = MemoryItem.model_validate(
                {**old.model_dump(), **changes, "version": old.version + 1}
            )
        except ValidationError as exc:
            raise InvalidInput(f"invalid update of item {item_id}: {exc}") from exc
        vector = self.embedder.embed([embed_text(new)])[0] if "text" in changes else None
        stored = self.store.update_item(
            new, vector, actor=user_id, reason=reason, expected_version=old.version
        )
        self._forget(owner, cube, [item_id])
        return stored

    def delete(
        self,
        item_id: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        purge: bool = False,
        reason: str | None = None,
    ) -> None:
        """Mark an item deleted (kept in history, restorable); ``purge=True`` erases it
        (the cube's owner only)."""
        owner, cube = self._access(user_id, cube_id, write=True)
        if purge and owner != user_id:
            raise AccessDenied(f"only the owner of cube {cube!r} may purge its memories")
        self._forget(owner, cube, [item_id])
        from mnemic.operation import wiring

        self.jobs.wait_scope(wiring.job_scope(owner, cube), self.settings.reader.search_wait_s)
        for derived in wiring.derived_from(self.store, owner, cube, item_id):
            self.delete(derived.id, user_id=user_id, cube_id=cube, purge=purge, reason=reason)
        if purge:
            self.store.purge_item(owner, cube, item_id, actor=user_id)
            return
        old = self._get(owner, cube, item_id)
        if old.status == MemoryStatus.DELETED:
            return
        new = old.model_copy(update={"status": MemoryStatus.DELETED, "version": old.version + 1})
        self.store.update_item(
            new,
            None,
            actor=user_id,
            action="delete",
            reason=reason,
            expected_version=old.version,
        )

    def _forget(self, user_id: str, cube_id: str, ids: list[str]) -> None:
        if self._scheduler is not None:
            self._scheduler.forget(user_id, cube_id, ids)

    # ------------------------------------------------------------------ reads

    def get(self, item_id: str, *, user_id: str, cube_id: str | None = None) -> MemoryItem:
        owner, cube = self._access(user_id, cube_id)
        return self._get(owner, cube, item_id)

    def _get(self, owner: str, cube: str, item_id: str) -> MemoryItem:
        found = self.store.get_items(owner, cube, [item_id])
        if not found:
            raise NotFound(f"no memory {item_id!r} in cube {cube!r}")
        return found[0]

    def get_all(
        self,
        *,
        user_id: str,
        cube_id: str | None = None,
        filters: Mapping[str, Any] | SearchFilters | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[MemoryItem]:
        if not 1 <= limit <= 10_000 or not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput(f"limit must be within 1..10000 and offset within 0..{MAX_OFFSET}")
        owner, cube = self._access(user_id, cube_id)
        return self.store.list_items(
            owner, cube, _filters(filters).to_item_filter(), limit=limit, offset=offset
        )

    def history(
        self, item_id: str, *, user_id: str, cube_id: str | None = None
    ) -> list[HistoryEntry]:
        owner, cube = self._access(user_id, cube_id)
        entries = self.store.history(owner, cube, item_id)
        if not entries:
            raise NotFound(f"no memory {item_id!r} in cube {cube!r}")
        return entries

    def search(
        self,
        query: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        top_k: int = 10,
        filters: Mapping[str, Any] | SearchFilters | None = None,
        token_budget: int | None = None,
        now: datetime | str | None = None,
        session_id: str | None = None,
    ) -> list[SearchHit]:
        """Hybrid search in the user's cube. With ``token_budget``, the best hits whose
        rendered context fits that many tokens (cl100k_base), up to ``top_k`` of them.
        ``now`` is when the question is asked: "last May" or "yesterday" in the query count
        back from it (default: the current time). With ``session_id``, the session's working
        memory is consulted first (its matches join the ranking) and keeps the results."""
        check_text(query, self.settings.max_text_chars, "query")
        if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be an integer within 1..{MAX_TOP_K}")
        if token_budget is not None and not 1 <= token_budget <= MAX_TOKEN_BUDGET:
            raise InvalidInput(f"token_budget must be within 1..{MAX_TOKEN_BUDGET}")
        try:
            owner, cube = self._access(user_id, cube_id, embeds=True)
        except NotFound:
            return []  # nothing remembered yet is an empty answer, not an error
        from mnemic.operation import wiring

        # read your writes: what this scope's recent adds extract is searched too
        self.jobs.wait_scope(wiring.job_scope(owner, cube), self.settings.reader.search_wait_s)
        flt = _filters(filters).to_item_filter()
        seed: dict[str, list[Scored]] = {}
        scheduler = self.scheduler if session_id is not None else None
        if scheduler is not None and session_id is not None:
            _check_id(session_id, "session_id")
            # working memories live in the cube's scope (its owner's), like its items
            found = scheduler.lookup(query, user_id=owner, cube_id=cube, session_id=session_id)
            if filters is None:  # filtered searches rank only what the store's filter admits
                seed["working"] = [Scored(slot.item.id, v) for slot, v in found]
        hits = self.retriever.search(
            query,
            user_id=owner,
            cube_id=cube,
            top_k=top_k,
            flt=flt,
            now=parse_time(now, "now"),
            seed=seed,
        )
        if token_budget is not None:
            hits = pack(hits, token_budget)
        if scheduler is not None and session_id is not None:
            scheduler.record_results(
                [h.item for h in hits], user_id=owner, cube_id=cube, session_id=session_id
            )
        return hits

    # ------------------------------------------------------------------ lifecycle

    def wait(
        self, *, user_id: str, cube_id: str | None = None, timeout: float | None = None
    ) -> bool:
        """Block until the scope's background jobs are done; False if ``timeout`` passed."""
        from mnemic.operation import wiring

        owner, cube = self._access(user_id, cube_id)
        return self.jobs.wait_scope(wiring.job_scope(owner, cube), timeout)

    def failed_jobs(self, *, user_id: str, cube_id: str | None = None) -> list[dict[str, Any]]:
        """Background jobs of the scope that failed, with their errors (raw turns are kept)."""
        from mnemic.operation import wiring

        owner, cube = self._access(user_id, cube_id)
        return [
            {"id": j.id, "kind": j.kind, "error": j.error, "item_ids": j.payload.get("item_ids")}
            for j in self.jobs.failed(wiring.job_scope(owner, cube))
        ]

    def versions(
        self, item_id: str, *, user_id: str, cube_id: str | None = None
    ) -> list[MemoryItem]:
        """The chain of memories this one belongs to, oldest first: the items it superseded
        and those that superseded it (each item's own edits are in ``history``)."""
        from mnemic.operation import wiring

        owner, cube = self._access(user_id, cube_id)
        return wiring.version_chain(
            self.store, owner, cube, self.get(item_id, user_id=user_id, cube_id=cube)
        )

    def expire(
        self,
        *,
        user_id: str,
        cube_id: str | None = None,
        now: datetime | str | None = None,
    ) -> dict[str, int]:
        """Apply the lifecycle policy: items past ``expires_at`` and, with
        ``lifecycle.archive_after_days``, items unused that long are archived (kept, out of
        search; history says why). Returns how many of each."""
        from mnemic.operation import wiring

        owner, cube = self._access(user_id, cube_id, write=True)
        return wiring.expire(
            self.store, self.settings.lifecycle, owner, cube, parse_time(now, "now") or utcnow()
        )

    def backup(self, dest: str | Path) -> dict[str, Any]:
        """Copy the whole store, online, to the new folder ``dest`` (with a hash manifest)."""
        return self.store.backup(dest)

    def cubes(self, *, user_id: str) -> list[str]:
        _check_id(user_id, "user_id")
        return [c.cube_id for c in self.store.list_cubes(user_id)]

    # ------------------------------------------------------------------ tree and graph

    def reorganize(self, *, user_id: str, cube_id: str | None = None) -> dict[str, int]:
        """Organize the cube now (after its pending jobs): place new items in the tree, merge
        near-duplicates, split and merge topics, rewrite changed summaries, update the graph.
        One transaction; returns what changed (all zero when it was in order)."""
        from mnemic.operation import wiring

        owner, cube = self._access(user_id, cube_id, write=True)
        self.jobs.wait_scope(wiring.job_scope(owner, cube), self.settings.reader.search_wait_s)
        report = self.organizer.run(owner, cube, actor=user_id)
        self._unorganized[(owner, cube)] = 0
        return report.as_dict()

    @property
    def organizer(self) -> Organizer:
        if self._organizer is None:
            from mnemic.operation import wiring

            self._organizer = wiring.organizer(self.settings, self.store)
        return self._organizer

    def tree(
        self, *, user_id: str, cube_id: str | None = None, items_per_topic: int | None = None
    ) -> MemoryTree:
        """The cube's memory tree: its topics (largest first) with their summaries and
        their active items (the first ``items_per_topic`` of each in time; all when None),
        and how many active items wait to be placed."""
        if items_per_topic is not None and not 0 <= items_per_topic <= 10_000:
            raise InvalidInput("items_per_topic must be within 0..10000 (or None: all)")
        owner, cube = self._access(user_id, cube_id)
        members = self.store.topic_members(owner, cube)
        items = {
            i.id: i
            for i in self.store.get_items(owner, cube, list(members))
            if i.status == MemoryStatus.ACTIVE
        }
        by_topic: dict[str, list[MemoryItem]] = {}
        for item_id, topic_id in members.items():
            if item_id in items:
                by_topic.setdefault(topic_id, []).append(items[item_id])
        topics = []
        for t in self.store.topics(owner, cube):
            leaves = sorted(
                by_topic.get(t.id, []),
                key=lambda i: (i.valid_from or i.recorded_at, i.recorded_at, i.id),
            )
            topics.append(
                TreeTopic(
                    id=t.id,
                    title=t.title,
                    summary=t.summary,
                    size=len(leaves),
                    version=t.version,
                    updated_at=t.updated_at,
                    items=leaves if items_per_topic is None else leaves[:items_per_topic],
                )
            )
        topics.sort(key=lambda t: (-t.size, t.title, t.id))
        active = self.store.count_items(owner, cube, ItemFilter())
        return MemoryTree(
            user_id=owner, cube_id=cube, topics=topics, unplaced=max(0, active - len(items))
        )

    def neighbors(
        self,
        item_id: str,
        *,
        user_id: str,
        cube_id: str | None = None,
        kinds: list[str] | None = None,
    ) -> list[Link]:
        """The items linked to ``item_id`` in the graph (same entity, before/after, same
        session, supersedes, merged into, derived from...), optionally of ``kinds`` only."""
        owner, cube = self._access(user_id, cube_id)
        self._get(owner, cube, item_id)
        edges = self.store.links(owner, cube, [item_id], kinds=tuple(kinds or ()))
        others = {e.dst if e.src == item_id else e.src for e in edges}
        found = {i.id: i for i in self.store.get_items(owner, cube, sorted(others))}
        links = []
        for e in edges:
            out = e.src == item_id
            other = found.get(e.dst if out else e.src)
            if other is not None:
                links.append(
                    Link(kind=e.kind, direction="out" if out else "in", weight=e.weight, item=other)
                )
        return links

    # ------------------------------------------------------------------ cubes and sharing

    def create_cube(self, cube_id: str | None = None, *, user_id: str) -> CubeManifest:
        """Create the cube ``cube_id`` owned by ``user_id`` (their default cube if None);
        creating a cube the user already owns returns it unchanged."""
        owner, cube = self._access(user_id, cube_id, create=True)
        if owner != user_id:
            raise AccessDenied(f"cube {cube!r} already exists and belongs to another user")
        manifest = self.store.get_cube(cube)
        assert manifest is not None
        return manifest

    def share(self, cube_id: str, *, user_id: str, with_user: str, access: str = "read") -> Grant:
        """Let ``with_user`` read (or, with ``access="write"``, also change) ``user_id``'s cube."""
        _check_id(with_user, "with_user")
        self._own(user_id, cube_id)
        if with_user == user_id:
            raise InvalidInput("a cube's owner already has every access; share with another user")
        return self.store.grant(cube_id, with_user, access)

    def unshare(self, cube_id: str, *, user_id: str, with_user: str) -> bool:
        """Take back ``with_user``'s access to the cube; False if they had none."""
        _check_id(with_user, "with_user")
        self._own(user_id, cube_id)
        return self.store.revoke(cube_id, with_user)

    def grants(self, cube_id: str, *, user_id: str) -> list[Grant]:
        """Who the owner has shared the cube with."""
        self._own(user_id, cube_id)
        return self.store.grants(cube_id=cube_id)

    def shared_cubes(self, *, user_id: str) -> list[Grant]:
        """The cubes other users have shared with ``user_id``."""
        _check_id(user_id, "user_id")
        return self.store.grants(grantee=user_id)

    def _own(self, user_id: str, cube_id: str) -> None:
        owner, cube = self._access(user_id, cube_id)
        if owner != user_id:
            raise AccessDenied(f"only the owner of cube {cube!r} may change who it is shared with")

    # ------------------------------------------------------------------ MemCube files

    def cube_folder(self, cube_id: str | None = None, *, user_id: str) -> Path:
        """The folder of a cube's activation memory (``activation/``: KV caches, see
        :class:`~mnemic.infra.activation.ActivationStore`) and parametric memory
        (``parametric/``: adapter folders), in ``<home>/cubes/``; created on first use."""
        from mnemic.operation import cube_store

        _, cube = self._access(user_id, cube_id)
        return cube_store.folder_of(self.store, self.settings.home, cube)

    def dump_cube(
        self, dest: str | Path, *, user_id: str, cube_id: str | None = None
    ) -> dict[str, Any]:
        """Write one of your cubes — every item with its vector and history, its KV caches
        and adapters — to the new folder ``dest``, or to one archive if ``dest`` ends in
        ``.tar`` (written atomically, byte-reproducible). Returns the manifest written."""
        from mnemic.operation import cube_store, wiring

        owner, cube = self._access(user_id, cube_id)
        if owner != user_id:
            raise AccessDenied(f"only the owner of cube {cube!r} may dump it")
        self.jobs.wait_scope(wiring.job_scope(owner, cube), self.settings.reader.search_wait_s)
        return cube_store.dump(self.store, self.settings.home, owner, cube, Path(dest))

    def load_cube(
        self,
        src: str | Path,
        *,
        user_id: str,
        cube_id: str | None = None,
        reembed: bool = False,
    ) -> dict[str, Any]:
        """Load a dumped cube (folder or ``.tar``) as ``user_id``'s cube ``cube_id`` (default:
        the cube's own id, which must be free here), all or nothing, after verifying every
        hash. A cube embedded by another embedder is refused unless ``reembed``, which
        re-embeds every item with the configured one (a migration; the result says so)."""
        from mnemic.operation import cube_store

        _check_id(user_id, "user_id")
        if cube_id is not None:
            _check_id(cube_id, "cube_id")
        return cube_store.load(
            self.store,
            self.settings.home,
            Path(src),
            owner=user_id,
            cube_id=cube_id,
            embedder=self.embedder,
            reembed=reembed,
        )

    def compose_cubes(
        self, source_cube: str, *, user_id: str, into_cube: str | None = None
    ) -> dict[str, Any]:
        """Merge ``source_cube`` (yours or shared with you) into ``into_cube`` (default: your
        own cube; you need write access): duplicates collapse into the target's items, which
        record what they stand for; the rest is copied with its provenance; adapters come
        along; KV caches of changed items are invalidated. The source is left as it is."""
        from mnemic.operation import cube_compose, cube_store, wiring

        a_owner, a_cube = self._access(user_id, into_cube, write=True, embeds=True)
        b_owner, b_cube = self._access(user_id, source_cube)
        if (a_owner, a_cube) == (b_owner, b_cube):
            raise InvalidInput("a cube cannot be composed into itself; name another cube")
        for owner, cube in ((a_owner, a_cube), (b_owner, b_cube)):
            self.jobs.wait_scope(wiring.job_scope(owner, cube), self.settings.reader.search_wait_s)
        home = self.settings.home
        source = self.store.get_cube(b_cube)
        report = cube_compose.compose(
            self.store,
            into=(a_owner, a_cube, cube_store.folder_of(self.store, home, a_cube)),
            source=(b_owner, b_cube, cube_store.folder_of(self.store, home, b_cube)),
            embedder=self.embedder,
            source_embedder=source.embedder if source is not None else None,
            actor=user_id,
            threshold=self.settings.cube.duplicate_similarity,
        )
        self._forget(a_owner, a_cube, report["changed"])
        return report

    # ------------------------------------------------------------------ chat

    def chat(
        self,
        query: str,
        *,
        user_id: str,
        session_id: str | None = None,
        cube_id: str | None = None,
        token_budget: int = 1000,
        now: datetime | str | None = None,
    ) -> ChatReply:
        """Answer ``query`` from memory: the session's recent turns and the memories that fit
        ``token_budget``, through the configured LLM (or, without one, the memories
        themselves); the question and the answer are remembered as new turns."""
        from mnemic.operation.chat import chat

        return chat(
            self,
            query,
            user_id=user_id,
            session_id=session_id,
            cube_id=cube_id,
            token_budget=token_budget,
            now=now,
        )

    @property
    def llm(self) -> LLM | None:
        """The configured LLM, made on first use; None when ``llm.backend`` is ``none``."""
        if not hasattr(self, "_llm"):
            from mnemic.infra.llm import get_llm

            self._llm = get_llm(self.settings.llm)
        return self._llm


def restore_backup(
    src: str | Path, settings: Settings | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Put the backup in ``src`` in place of the configured store, after checking its hash and
    integrity. Stop every process using the store first; ``force`` replaces an existing one."""
    from mnemic.infra.store import backup

    settings = settings or load_settings()
    if settings.store.backend != "sqlite":
        raise ConfigError(
            "restore works on the sqlite store; into PostgreSQL, copy the backup with "
            "`mnemic migrate-store SRC/mnemic.db DSN` (or use your database's own tools)"
        )
    return backup.restore(Path(src), settings.db_path, force=force)


# MemOS readers know the system by that name
MemOS = Memory


def default_cube(user_id: str) -> str:
    return f"{user_id}/default"


def _check_id(value: Any, what: str) -> None:
    if (
        not isinstance(value, str)
        or not _ID.match(value)
        or not value.strip()
        or not _encodable(value)
    ):
        raise InvalidInput(
            f"{what} must be a non-empty string of at most 256 characters without control "
            f"characters, not {value!r}"
        )


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no store can keep it
        return False
    return True


def _filters(filters: Mapping[str, Any] | SearchFilters | None) -> SearchFilters:
    if filters is None:
        return SearchFilters()
    if isinstance(filters, SearchFilters):
        return filters
    try:
        return SearchFilters.model_validate(dict(filters))
    except (ValidationError, TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid filters: {exc}") from exc


__all__ = [
    "MemOS",
    "Memory",
    "MemoryLayer",
    "SearchFilters",
    "default_cube",
    "restore_backup",
]
