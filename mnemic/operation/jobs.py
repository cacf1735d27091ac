"""Background jobs: work that ``add`` acknowledges at once and finishes later (embedding raw
turns, extracting memories from them, lifecycle decisions).

:class:`JobQueue` is the interface; :class:`InProcessQueue` journals jobs in a small SQLite
file and runs them either on a worker thread of this process (``worker=True``, for
long-lived processes: the SDK, servers) or inline when someone waits for them
(``worker=False``: a CLI ``add`` returns at once, and the next command that needs the
results, such as ``search``, runs what is pending). A job whose process ended mid-way is
taken up again once its process is gone. A failed job is logged and kept in the journal
with its error (``failed()``), never dropped silently. The scheduler issue backs the same
interface with PostgreSQL.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mnemic.errors import InvalidInput, MnemicError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    scope: str  # jobs of one scope run in submission order
    payload: dict[str, Any]
    status: str  # queued | running | done | failed
    error: str | None = None
    attempts: int = 0


class JobFailed(MnemicError):
    """A background job ended with an error; its message says which job and why."""


class JobQueue(Protocol):
    def register(self, kind: str, handler: Handler) -> None:
        """Run ``handler(payload)`` for jobs of ``kind``; call before ``start``."""
        ...

    def start(self) -> None:
        """Begin working, resuming jobs a previous process left unfinished."""
        ...

    def submit(self, kind: str, scope: str, payload: dict[str, Any]) -> int:
        """Queue a job durably; returns its id."""
        ...

    def wait(self, ids: Sequence[int], timeout: float | None = None) -> list[Job]:
        """Block until the jobs have ended; raises :class:`JobFailed` if one failed,
        ``TimeoutError`` if ``timeout`` seconds pass first."""
        ...

    def wait_scope(self, scope: str, timeout: float | None = None) -> bool:
        """Block until the scope has no queued or running job; False on timeout."""
        ...

    def failed(self, scope: str | None = None) -> list[Job]: ...

    def close(self) -> None:
        """Stop after the running job; queued ones stay journaled for the next process."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_by INTEGER,
    submitted_at REAL NOT NULL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, scope, id);
"""

_ENDED = ("done", "failed")


class WorkerQueue:
    """What every queue shares: handlers, a worker thread or inline runs, waiting, closing.

    A backend says how jobs are kept: ``submit``, ``failed``, ``pending``, ``start`` and the
    hooks ``_jobs`` (the jobs of some ids), ``_busy`` (does a scope have work left),
    ``_claim`` (take the next job), ``_finish`` (record how it ended), ``_requeue_orphans``
    (jobs of workers that are gone go back to the queue) and ``_shutdown`` (release what it
    holds). ``_cond`` is re-entrant: a hook may take it again."""

    def __init__(self, *, worker: bool) -> None:
        self.worker = worker
        self._handlers: dict[str, Handler] = {}
        self._cond = threading.Condition()
        self._run_lock = threading.Lock()  # one job at a time in this process
        self._stop = False
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ backend hooks

    def _jobs(self, ids: Sequence[int]) -> list[Job]:
        raise NotImplementedError

    def _busy(self, scope: str) -> bool:
        raise NotImplementedError

    def _claim(self, scope: str | None) -> Job | None:
        raise NotImplementedError

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        raise NotImplementedError

    def _requeue_orphans(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    def _released(self, job: Job) -> None:
        """The job has ended here (whatever became of it)."""

    # ------------------------------------------------------------------ interface

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def wait(self, ids: Sequence[int], timeout: float | None = None) -> list[Job]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            jobs = self._jobs(ids)
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
        while self._busy(scope):
            if not self._advance({scope}, deadline):
                return False
        return True

    def close(self, timeout: float | None = 0.2) -> None:
        """Stop taking jobs. A running job gets ``timeout`` seconds to end (None: as long as
        it takes); one still running then is taken up again by a later process."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return  # the worker releases the queue when its job ends
        self._shutdown()
        atexit.unregister(self._at_exit)

    # ------------------------------------------------------------------ running

    def _start_worker(self) -> None:
        if self.worker and self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mnemic-jobs", daemon=True)
            self._thread.start()
        # native code (onnxruntime, torch) must not be mid-call when the interpreter ends
        atexit.register(self._at_exit)

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
        with self._cond:
            self._requeue_orphans()
            self._cond.wait(max(remaining, 0.0))
        return deadline is None or time.monotonic() < deadline

    def _run_next(self, scope: str | None) -> bool:
        with self._run_lock:
            job = self._claim(scope)
            if job is None:
                return False
            try:
                self._run(job)
            finally:
                self._released(job)
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
        self._finish(job, status, error)

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    break
            try:
                ran = self._run_next(None)
            except Exception as exc:  # the journal or the server is away: try again shortly
                log.warning("job queue: %s", exc)
                ran = False
            if not ran:
                with self._cond:
                    if self._stop:
                        break
                    self._cond.wait(0.5)
        if threading.main_thread().is_alive() and self._thread is None:
            self._shutdown()  # close() gave up waiting for us: the queue is ours to release


class InProcessQueue(WorkerQueue):
    """Jobs journaled at ``path`` (``None``: in memory, lost on exit); see the module doc."""

    def __init__(self, path: str | Path | None = None, *, worker: bool = True) -> None:
        super().__init__(worker=worker)
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            ":memory:" if self.path is None else str(self.path),
            check_same_thread=False,
            isolation_level=None,
            timeout=30,
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def start(self) -> None:
        with self._cond:
            self._requeue_orphans()
        self._start_worker()

    def submit(self, kind: str, scope: str, payload: dict[str, Any]) -> int:
        if kind not in self._handlers:
            raise InvalidInput(f"no handler for job kind {kind!r}")
        with self._cond:
            cur = self._db.execute(
                "INSERT INTO jobs(kind, scope, payload, submitted_at) VALUES (?, ?, ?, ?)",
                (kind, scope, json.dumps(payload), time.time()),
            )
            self._cond.notify_all()
            return int(cur.lastrowid or 0)

    def failed(self, scope: str | None = None) -> list[Job]:
        sql = "SELECT * FROM jobs WHERE status = 'failed'"
        params: tuple[Any, ...] = ()
        if scope is not None:
            sql += " AND scope = ?"
            params = (scope,)
        with self._cond:
            return [_job(r) for r in self._db.execute(sql + " ORDER BY id", params)]

    def pending(self) -> int:
        with self._cond:
            row = self._db.execute(
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')"
            ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ backend hooks

    def _jobs(self, ids: Sequence[int]) -> list[Job]:
        with self._cond:
            return [self._get(i) for i in ids]

    def _get(self, job_id: int) -> Job:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InvalidInput(f"no job {job_id}")
        return _job(row)

    def _busy(self, scope: str) -> bool:
        with self._cond:
            return (
                self._db.execute(
                    "SELECT 1 FROM jobs WHERE scope = ? AND status IN ('queued', 'running') "
                    "LIMIT 1",
                    (scope,),
                ).fetchone()
                is not None
            )

    def _requeue_orphans(self) -> None:
        """Jobs left 'running' by processes that no longer exist go back to the queue."""
        rows = self._db.execute("SELECT id, claimed_by FROM jobs WHERE status = 'running'")
        for row in rows.fetchall():
            if row["claimed_by"] != os.getpid() and not _alive(row["claimed_by"]):
                self._db.execute(
                    "UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'running'",
                    (row["id"],),
                )

    def _claim(self, scope: str | None) -> Job | None:
        """The oldest queued job (of ``scope``), marked running by this process; a scope
        whose older job runs elsewhere waits, so a scope's jobs keep their order."""
        with self._cond:
            if self._closed:
                return None
            where, params = ("", ()) if scope is None else (" AND scope = ?", (scope,))
            row = self._db.execute(
                "SELECT * FROM jobs WHERE status IN ('queued', 'running')"
                f"{where} ORDER BY id LIMIT 1",
                params,
            ).fetchone()
            if scope is None and (row is None or row["status"] == "running"):
                row = self._db.execute(
                    "SELECT * FROM jobs j WHERE status = 'queued' AND NOT EXISTS (SELECT 1 FROM "
                    "jobs o WHERE o.scope = j.scope AND o.status = 'running' AND o.id < j.id) "
                    "ORDER BY id LIMIT 1"
                ).fetchone()
            if row is None or row["status"] != "queued":
                return None
            claimed = self._db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, claimed_by = ? "
                "WHERE id = ? AND status = 'queued'",
                (os.getpid(), row["id"]),
            ).rowcount
            return _job(row) if claimed else None

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        with self._cond:
            if self._closed:
                return
            self._db.execute(
                "UPDATE jobs SET status = ?, error = ?, ended_at = ? WHERE id = ?",
                (status, error, time.time(), job.id),
            )
            self._cond.notify_all()

    def _shutdown(self) -> None:
        with self._cond:
            if not self._closed:
                self._closed = True
                self._db.close()


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        scope=row["scope"],
        payload=json.loads(row["payload"]),
        status=row["status"],
        error=row["error"],
        attempts=row["attempts"],
    )
