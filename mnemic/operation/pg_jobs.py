"""The job queue in PostgreSQL: several processes, on one host or many, that share a
PostgreSQL store share its jobs. Same interface and behaviour as
:class:`~mnemic.operation.jobs.InProcessQueue` (see :class:`~mnemic.operation.jobs.JobQueue`).

Jobs live in the table ``mnemic_jobs`` of the store's database, created by the queue itself
(idempotently, under an advisory lock): it is the queue's own table, not part of the store's
schema. A worker claims the oldest queued job whose scope has no older job queued or running,
in one statement with ``FOR UPDATE SKIP LOCKED``, so two workers never take the same job and
a scope's jobs run one at a time, in submission order. A claim is a lease: while the job
runs, a heartbeat thread of the claiming process pushes ``lease_until`` forward every third
of ``lease_s``; a job whose lease ran out (its process was killed, its host lost power or the
network) goes back to the queue at the next claim anywhere, and is run again. Times are the
database server's, so hosts' clocks do not matter. A job that lost its worker
``MAX_ATTEMPTS`` times is marked failed instead of taking down worker after worker.

Jobs must therefore be safe to run twice (the extraction job is: vectors are replaced,
memories extracted again are found as duplicates by the lifecycle). Only jobs whose kind this
process has a handler for are claimed, so processes of different versions may share a queue.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mnemic.errors import ConfigError, InvalidInput, StoreError
from mnemic.operation.jobs import Job, WorkerQueue

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""Claims of one job by workers that died before ending it, after which it is failed."""

_LOCK_KEY = 0x6D6E656D6A6F6273  # "mnemjobs": serialises the CREATE TABLE of concurrent starts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mnemic_jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    payload JSONB NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'done', 'failed')),
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until TIMESTAMPTZ,
    submitted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS mnemic_jobs_open ON mnemic_jobs (scope, id)
    WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS mnemic_jobs_failed ON mnemic_jobs (scope, id)
    WHERE status = 'failed';
"""


class PostgresQueue(WorkerQueue):
    """Jobs in ``mnemic_jobs`` of the database ``dsn`` names; see the module doc.

    ``worker=True`` runs jobs on a thread of this process (long-lived processes), ``False``
    runs them when someone waits for them. ``lease_s``: how long a claimed job may go
    without its process's heartbeat before another process takes it up again.
    """

    def __init__(self, dsn: str, *, worker: bool = True, lease_s: float = 30.0) -> None:
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError as exc:  # pragma: no cover - the postgres extra
            raise ConfigError(
                "the PostgreSQL job queue needs psycopg 3: pip install 'mnemic[postgres]'"
            ) from exc
        if lease_s <= 0:
            raise InvalidInput(f"lease_s must be positive, got {lease_s}")
        from mnemic.infra.store.postgres import describe_dsn

        super().__init__(worker=worker)
        self.where = describe_dsn(dsn)
        self.lease_s = float(lease_s)
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._dsn, self._row_factory = dsn, dict_row
        # one connection, used under _cond for short statements only (never during a job)
        self._db: psycopg.Connection[Any] = self._connect()
        self._running: set[int] = set()  # jobs this process runs: their leases are renewed
        self._beat: threading.Thread | None = None
        try:
            with self._sql() as db, db.transaction():
                # a role that may not create tables can still use a queue made by another
                found = db.execute("SELECT to_regclass('mnemic_jobs') AS t").fetchone()
                if found is None or found["t"] is None:
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                    db.execute(_SCHEMA)  # type: ignore[arg-type]  # a constant script
        except psycopg.Error as exc:
            self._db.close()
            reason = getattr(exc.diag, "message_primary", None) or exc
            raise StoreError(
                f"the job queue cannot create its table mnemic_jobs in {self.where} ({reason}); "
                'let this role create tables once, or set jobs.backend = "local"'
            ) from exc
        except BaseException:
            self._db.close()
            raise

    # ------------------------------------------------------------------ interface

    def start(self) -> None:
        self._requeue_orphans()
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="mnemic-lease", daemon=True)
            self._beat.start()
        self._start_worker()

    def submit(self, kind: str, scope: str, payload: dict[str, Any]) -> int:
        if kind not in self._handlers:
            raise InvalidInput(f"no handler for job kind {kind!r}")
        from psycopg.types.json import Jsonb

        with self._sql() as db:
            row = db.execute(
                "INSERT INTO mnemic_jobs(kind, scope, payload) VALUES (%s, %s, %s) RETURNING id",
                (kind, scope, Jsonb(payload)),
            ).fetchone()
            self._cond.notify_all()
        assert row is not None
        return int(row["id"])

    def failed(self, scope: str | None = None) -> list[Job]:
        sql = "SELECT * FROM mnemic_jobs WHERE status = 'failed'"
        params: tuple[Any, ...] = ()
        if scope is not None:
            sql += " AND scope = %s"
            params = (scope,)
        with self._sql() as db:
            return [_job(r) for r in db.execute(sql + " ORDER BY id", params)]  # type: ignore[arg-type]

    def pending(self) -> int:
        with self._sql() as db:
            row = db.execute(
                "SELECT count(*) AS n FROM mnemic_jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
        return int(row["n"]) if row else 0

    # ------------------------------------------------------------------ running

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self._dsn, autocommit=True, row_factory=self._row_factory)
        except psycopg.Error as exc:
            raise StoreError(f"the job queue cannot connect to {self.where}: {exc}") from exc

    @contextmanager
    def _sql(self) -> Iterator[Any]:
        """The queue's connection, for one short statement or transaction; a connection
        the server dropped is replaced on the next use."""
        import psycopg

        with self._cond:
            if self._closed:
                raise StoreError(f"the job queue on {self.where} is closed")
            if self._db.broken or self._db.closed:
                self._db = self._connect()
            try:
                yield self._db
            except psycopg.OperationalError as exc:
                raise StoreError(f"the job queue on {self.where} failed: {exc}") from exc

    def _busy(self, scope: str) -> bool:
        with self._sql() as db:
            busy = db.execute(
                "SELECT 1 FROM mnemic_jobs WHERE scope = %s "
                "AND status IN ('queued', 'running') LIMIT 1",
                (scope,),
            ).fetchone()
        return busy is not None

    def _jobs(self, ids: Sequence[int]) -> list[Job]:
        with self._sql() as db:
            rows = {
                r["id"]: r
                for r in db.execute("SELECT * FROM mnemic_jobs WHERE id = ANY(%s)", (list(ids),))
            }
        missing = [i for i in ids if i not in rows]
        if missing:
            raise InvalidInput(f"no job {missing[0]}")
        return [_job(rows[i]) for i in ids]

    def _shutdown(self) -> None:
        with self._cond:
            if not self._closed:
                self._closed = True
                self._cond.notify_all()
                self._db.close()

    def _requeue_orphans(self) -> None:
        """Running jobs whose lease ran out go back to the queue (failed after MAX_ATTEMPTS
        claims: a job that kills its worker must not take down every worker in turn)."""
        with self._sql() as db:
            self._requeue_orphans_on(db)

    def _requeue_orphans_on(self, db: Any) -> None:
        db.execute(
            "UPDATE mnemic_jobs SET status = CASE WHEN attempts >= %s THEN 'failed' "
            "ELSE 'queued' END, "
            "error = CASE WHEN attempts >= %s THEN 'its worker stopped before it ended, ' "
            "|| attempts || ' times (last ' || coalesce(claimed_by, '?') || ')' END, "
            "ended_at = CASE WHEN attempts >= %s THEN now() END, "
            "claimed_by = NULL, lease_until = NULL "
            "WHERE status = 'running' AND lease_until < now()",
            (MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_ATTEMPTS),
        )

    def _claim(self, scope: str | None) -> Job | None:
        """The oldest queued job (of ``scope``) that heads its scope, marked running by this
        process. Locked rows are skipped: another worker is claiming them. A scope whose
        older job is queued or running elsewhere waits, so its jobs keep their order."""
        if not self._handlers:
            return None
        with self._sql() as db:
            self._requeue_orphans_on(db)
            where, params = ("", ()) if scope is None else (" AND j.scope = %s", (scope,))
            row = db.execute(
                "UPDATE mnemic_jobs SET status = 'running', attempts = attempts + 1, "
                "claimed_by = %s, lease_until = now() + make_interval(secs => %s) "
                "WHERE id = (SELECT j.id FROM mnemic_jobs j "
                f"  WHERE j.status = 'queued' AND j.kind = ANY(%s){where} "
                "  AND NOT EXISTS (SELECT 1 FROM mnemic_jobs o WHERE o.scope = j.scope "
                "    AND o.id < j.id AND o.status IN ('queued', 'running')) "
                "  ORDER BY j.id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                "AND status = 'queued' RETURNING *",
                (self.me, self.lease_s, sorted(self._handlers), *params),
            ).fetchone()
            if row is None:
                return None
            self._running.add(int(row["id"]))
            return _job(row)

    def _released(self, job: Job) -> None:
        with self._cond:
            self._running.discard(job.id)

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        with self._cond:
            if self._closed:
                return  # the lease runs out and another process runs the job again
            try:
                with self._sql() as db:
                    ended = db.execute(
                        "UPDATE mnemic_jobs SET status = %s, error = %s, "
                        "ended_at = CASE WHEN %s = 'queued' THEN NULL ELSE now() END, "
                        "claimed_by = NULL, lease_until = NULL "
                        "WHERE id = %s AND claimed_by = %s AND status = 'running'",
                        (status, error, status, job.id, self.me),
                    ).rowcount
            except StoreError as exc:  # the lease runs out and the job is run again
                log.warning("job %s (%s) ended but could not be marked: %s", job.id, job.kind, exc)
                return
            finally:
                self._cond.notify_all()
            if not ended:
                log.warning(
                    "job %s (%s) outlived its lease and was taken up again elsewhere "
                    "(lease_s %.0f: raise it if jobs run that long without a heartbeat)",
                    job.id,
                    job.kind,
                    self.lease_s,
                )

    def _heartbeat(self) -> None:
        """Renew the leases of the jobs this process runs, every third of ``lease_s``."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed, timeout=self.lease_s / 3)
                if self._closed:
                    return
                if not self._running:
                    continue
                try:
                    with self._sql() as db:
                        db.execute(
                            "UPDATE mnemic_jobs SET lease_until = now() + "
                            "make_interval(secs => %s) WHERE id = ANY(%s) AND claimed_by = %s "
                            "AND status = 'running'",
                            (self.lease_s, sorted(self._running), self.me),
                        )
                except Exception as exc:  # any error: the next beat tries again, for a
                    # beat that stopped for good would let a long job's lease run out
                    log.warning("job queue heartbeat failed: %s", exc)


def _job(row: dict[str, Any]) -> Job:
    return Job(
        id=int(row["id"]),
        kind=row["kind"],
        scope=row["scope"],
        payload=row["payload"],
        status=row["status"],
        error=row["error"],
        attempts=row["attempts"],
    )
