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

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mnemic.errors import ConfigError, InvalidInput, StoreError
from mnemic.operation.jobs import Handler, Job, JobFailed

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

_ENDED = ("done", "failed")


class PostgresQueue:
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

        self.where = describe_dsn(dsn)
        self.worker = worker
        self.lease_s = float(lease_s)
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._dsn, self._row_factory = dsn, dict_row
        # one connection, used under _cond for short statements only (never during a job)
        self._db: psycopg.Connection[Any] = self._connect()
        self._handlers: dict[str, Handler] = {}
        self._cond = threading.Condition()
        self._run_lock = threading.Lock()  # one job at a time in this process
        self._running: set[int] = set()  # jobs this process runs: their leases are renewed
        self._stop = False
        self._closed = False
        self._thread: threading.Thread | None = None
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

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def start(self) -> None:
        self._requeue_orphans()
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="mnemic-lease", daemon=True)
            self._beat.start()
        if self.worker and self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mnemic-jobs", daemon=True)
            self._thread.start()
        atexit.register(self._at_exit)

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

    def wait(self, ids: Sequence[int], timeout: float | None = None) -> list[Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = self._get(ids)
            if all(j.status in _ENDED for j in jobs):
                break
            scopes = {j.scope for j in jobs if j.status not in _ENDED}
            if not self._advance(scopes, deadline):
                raise TimeoutError(f"jobs {list(ids)} still running after {timeout} s")
        failed = [j for j in jobs if j.status == "failed"]
        if failed:
            raise JobFailed(
                "; ".join(f"job {j.id} ({j.kind}) failed: {j.error}" for j in failed)
                + " (the raw turns are stored; see Memory.failed_jobs())"
            )
        return jobs

    def wait_scope(self, scope: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._sql() as db:
                busy = db.execute(
                    "SELECT 1 FROM mnemic_jobs WHERE scope = %s "
                    "AND status IN ('queued', 'running') LIMIT 1",
                    (scope,),
                ).fetchone()
            if not busy:
                return True
            if not self._advance({scope}, deadline):
                return False

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

    def close(self, timeout: float | None = 0.2) -> None:
        """Stop taking jobs. A running job gets ``timeout`` seconds to end (None: as long as
        it takes); one still running then keeps its lease until it ends here, or is taken
        up elsewhere once this process is gone."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return  # the worker closes the connection when its job ends
        self._shutdown()
        atexit.unregister(self._at_exit)

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

    def _get(self, ids: Sequence[int]) -> list[Job]:
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

    def _at_exit(self) -> None:
        thread = self._thread
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if thread is not None:
            thread.join()

    def _advance(self, scopes: set[str], deadline: float | None) -> bool:
        """Make progress on the scopes' jobs: run one inline (no worker), or wait a little
        for the worker or another process. False once the deadline has passed."""
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if self._thread is None and not self._stop:
            for scope in sorted(scopes):
                if self._run_next(scope):
                    return True
        remaining = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        self._requeue_orphans()
        with self._cond:
            self._cond.wait(max(remaining, 0.0))
        return deadline is None or time.monotonic() < deadline

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

    def _run_next(self, scope: str | None) -> bool:
        with self._run_lock:
            job = self._claim(scope)
            if job is None:
                return False
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running.discard(job.id)
            return True

    def _run(self, job: Job) -> None:
        status, error = "done", None
        try:
            handler = self._handlers.get(job.kind)
            if handler is None:
                raise InvalidInput(f"no handler for job kind {job.kind!r}")
            handler(job.payload)
        except Exception as exc:  # every failure is journaled and logged
            if self._stop:  # interrupted by close(): a later process runs it again
                status = "queued"
            else:
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                log.error("job %s (%s) failed: %s", job.id, job.kind, error)
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

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    break
            try:
                ran = self._run_next(None)
            except Exception as exc:  # the server is away: try again shortly
                log.warning("job queue: %s", exc)
                ran = False
            if not ran:
                with self._cond:
                    if self._stop:
                        break
                    self._cond.wait(0.5)
        if threading.main_thread().is_alive() and self._thread is None:
            self._shutdown()  # close() gave up waiting for us: the connection is ours to close


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
