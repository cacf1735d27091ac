"""The PostgreSQL job queue on a real server: order, failures journaled, several processes
draining one queue without running a job twice, resumption after a killed worker, and the
extraction job run twice adding nothing twice."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from mnemic import Memory, load_settings
from mnemic.errors import ConfigError, InvalidInput, StoreError
from mnemic.infra.store.base import ItemFilter
from mnemic.operation import wiring
from mnemic.operation.extraction import JOB_KIND
from mnemic.operation.jobs import InProcessQueue, JobFailed
from mnemic.operation.pg_jobs import MAX_ATTEMPTS, PostgresQueue

ROOT = Path(__file__).resolve().parents[2]

# A worker process: runs "t" jobs until told to stop; each run is recorded in the table
# `ran` (job payload n, scope, this pid, start and end times) by its own connection.
WORKER = """
import os, sys, time, psycopg
from mnemic.operation.pg_jobs import PostgresQueue

dsn, lease, hold = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
log = psycopg.connect(dsn, autocommit=True)

def handler(payload):
    start = time.time()
    if payload.get("block"):
        open(payload["block"], "w").close()  # tell the test the job has started
        time.sleep(3600)
    time.sleep(hold)
    log.execute(
        "INSERT INTO ran(n, scope, pid, started, ended) VALUES (%s, %s, %s, %s, %s)",
        (payload["n"], payload["scope"], os.getpid(), start, time.time()),
    )

queue = PostgresQueue(dsn, worker=True, lease_s=lease)
queue.register("t", handler)
queue.start()
print("ready", flush=True)
sys.stdin.readline()  # the test closes stdin to stop us
queue.close(timeout=None)
"""


def _worker(dsn: str, *, lease: float = 30.0, hold: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, dsn, str(lease), str(hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _ran_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE ran (n INT, scope TEXT, pid INT, started FLOAT8, ended FLOAT8)")


@pytest.mark.parametrize("worker", [True, False])
def test_jobs_run_in_order_and_failures_are_reported(pg_dsn: str, worker: bool) -> None:
    done: list[int] = []
    queue = PostgresQueue(pg_dsn, worker=worker)

    def handler(payload: dict) -> None:
        if payload["n"] == 2:
            raise RuntimeError("no good")
        done.append(payload["n"])

    queue.register("t", handler)
    queue.start()
    with pytest.raises(InvalidInput, match="no handler"):
        queue.submit("nope", "s", {})
    ids = [queue.submit("t", "s", {"n": n}) for n in range(4)]
    with pytest.raises(JobFailed, match="RuntimeError: no good"):
        queue.wait(ids, timeout=30)
    assert done == [0, 1, 3]
    (failed,) = queue.failed("s")
    assert failed.id == ids[2] and failed.error == "RuntimeError: no good"
    assert failed.attempts == 1 and failed.payload == {"n": 2}
    assert queue.failed("other") == [] and queue.pending() == 0
    queue.close()
    # the journal is the database's: another queue object sees the same jobs
    again = PostgresQueue(pg_dsn, worker=False)
    assert [j.id for j in again.failed()] == [ids[2]]
    again.close()


def test_queued_jobs_wait_for_the_next_process(pg_dsn: str) -> None:
    first = PostgresQueue(pg_dsn, worker=False)
    first.register("t", lambda payload: None)
    first.start()
    job = first.submit("t", "s", {"n": 1})
    first.close()  # ended before anyone waited: the job stays queued in the database
    seen: list[int] = []
    second = PostgresQueue(pg_dsn, worker=True)
    second.register("t", lambda payload: seen.append(payload["n"]))
    second.start()
    assert second.wait([job], timeout=30)[0].status == "done" and seen == [1]
    second.close()


def test_wait_times_out(pg_dsn: str) -> None:
    release = threading.Event()
    queue = PostgresQueue(pg_dsn)
    queue.register("t", lambda payload: release.wait(10))
    queue.start()
    job = queue.submit("t", "s", {})
    with pytest.raises(TimeoutError):
        queue.wait([job], timeout=0.3)
    assert not queue.wait_scope("s", timeout=0.2)
    release.set()
    assert queue.wait([job], timeout=30)[0].status == "done"
    queue.close()


def test_two_processes_drain_one_queue_each_job_once_in_scope_order(pg_dsn: str) -> None:
    _ran_table(pg_dsn)
    submitter = PostgresQueue(pg_dsn, worker=False)
    submitter.register("t", lambda payload: None)  # submits only: never waits for them
    workers = [_worker(pg_dsn, hold=0.02) for _ in range(2)]  # both ready before any job
    ids = [
        submitter.submit("t", f"scope{n // 10}", {"n": n, "scope": f"scope{n // 10}"})
        for n in range(40)
    ]
    try:
        deadline = time.monotonic() + 120
        while submitter.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert submitter.pending() == 0
    finally:
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)
    with psycopg.connect(pg_dsn) as db:
        rows = db.execute(
            "SELECT n, scope, pid, started, ended FROM ran ORDER BY started"
        ).fetchall()
        statuses = db.execute("SELECT DISTINCT status FROM mnemic_jobs").fetchall()
    assert sorted(r[0] for r in rows) == list(range(40))  # every job ran, none twice
    assert {r[2] for r in rows} == {p.pid for p in workers}  # both processes took jobs
    assert statuses == [("done",)]
    for scope in {r[1] for r in rows}:
        mine = [r for r in rows if r[1] == scope]
        assert [r[0] for r in mine] == sorted(r[0] for r in mine)  # submission order
        for before, after in itertools.pairwise(mine):
            assert before[4] <= after[3]  # one at a time: never two of a scope at once
    assert submitter.wait(ids, timeout=5)[0].status == "done"
    submitter.close()


def test_a_killed_workers_job_is_run_again_after_its_lease(pg_dsn: str, tmp_path: Path) -> None:
    _ran_table(pg_dsn)
    started = tmp_path / "started"
    queue = PostgresQueue(pg_dsn, worker=False, lease_s=1.0)
    queue.register("t", lambda payload: None)
    job = queue.submit("t", "s", {"n": 1, "scope": "s", "block": str(started)})
    later = queue.submit("t", "s", {"n": 2, "scope": "s"})
    doomed = _worker(pg_dsn, lease=1.0)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists()
        # the heartbeat keeps the lease of a live worker: nobody takes its job
        time.sleep(2.5)
        (running,) = [j for j in queue._jobs([job]) if j.status == "running"]
        assert running.attempts == 1
    finally:
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(30)
    assert not queue.wait_scope("s", timeout=0.1)  # still claimed by the dead worker

    rerun: list[int] = []
    survivor = PostgresQueue(pg_dsn, worker=True, lease_s=1.0)
    survivor.register("t", lambda payload: rerun.append(payload["n"]))
    survivor.start()
    assert survivor.wait_scope("s", timeout=30)  # the lease ran out: taken up again
    assert rerun == [1, 2]  # and the scope's next job only after it
    done = survivor.wait([job, later], timeout=5)
    assert [j.attempts for j in done] == [2, 1]
    survivor.close()
    queue.close()


def test_a_job_that_keeps_killing_its_worker_is_failed(pg_dsn: str) -> None:
    queue = PostgresQueue(pg_dsn, worker=False, lease_s=1.0)
    queue.register("t", lambda payload: None)
    job = queue.submit("t", "s", {})
    with psycopg.connect(pg_dsn, autocommit=True) as db:  # as a dead worker leaves it
        db.execute(
            "UPDATE mnemic_jobs SET status = 'running', attempts = %s, claimed_by = 'gone:1', "
            "lease_until = now() - interval '1 second' WHERE id = %s",
            (MAX_ATTEMPTS, job),
        )
    with pytest.raises(JobFailed, match=f"stopped before it ended, {MAX_ATTEMPTS} times"):
        queue.wait([job], timeout=10)
    queue.close()


def test_the_extraction_job_run_twice_adds_nothing_twice(
    pg_dsn: str, tmp_path: Path, embedder: object
) -> None:
    settings = load_settings(home=tmp_path, store={"backend": "postgres", "dsn": pg_dsn})
    every = ItemFilter.any_status()
    with Memory(settings, embedder=embedder) as mem:  # type: ignore[arg-type]
        assert isinstance(mem.jobs, PostgresQueue)  # auto: the store's database
        (turn,) = mem.add("I live in Porto and I love green tea.", user_id="ana", wait=True)
        before = mem.get_all(user_id="ana")
        count = mem.store.count_items("ana", "ana/default", every)
        with psycopg.connect(pg_dsn) as db:
            (job_id,) = db.execute("SELECT id FROM mnemic_jobs").fetchone() or (None,)
        (job,) = mem.jobs._jobs([job_id])
        assert job.kind == JOB_KIND and job.status == "done"
        # a worker that died after doing the work but before marking it done: run again
        mem.jobs.wait([mem.jobs.submit(JOB_KIND, job.scope, job.payload)], timeout=60)
        after = mem.get_all(user_id="ana")
        assert sorted(i.id for i in after) == sorted(i.id for i in before)
        assert mem.store.count_items("ana", "ana/default", every) == count
        assert len(before) >= 2 and turn.id in {i.id for i in before}  # the turn + a fact


def test_settings_choose_the_queue(pg_dsn: str, tmp_path: Path) -> None:
    pg = {"backend": "postgres", "dsn": pg_dsn}
    queue = wiring.job_queue(load_settings(home=tmp_path, store=pg), background=False)
    assert isinstance(queue, PostgresQueue)
    queue.close()
    local = load_settings(home=tmp_path, store=pg, jobs={"backend": "local"})
    queue = wiring.job_queue(local, background=False)
    assert isinstance(queue, InProcessQueue)
    queue.close()
    queue = wiring.job_queue(load_settings(home=tmp_path))
    assert isinstance(queue, InProcessQueue)  # an SQLite store: the journal file
    queue.close()
    with pytest.raises(ConfigError, match=r'store\.backend = "postgres"'):
        load_settings(home=tmp_path, jobs={"backend": "postgres"})


def test_a_role_that_may_not_create_tables(pg_dsn: str) -> None:
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute("DROP ROLE IF EXISTS mnemic_app")
        db.execute("CREATE ROLE mnemic_app LOGIN")  # PostgreSQL 15+: no CREATE on public
    try:
        app = make_conninfo(pg_dsn, user="mnemic_app")
        with pytest.raises(
            StoreError,
            match=r'cannot create its table .*\(permission denied.*jobs\.backend = "local"',
        ):
            PostgresQueue(app)
        PostgresQueue(pg_dsn).close()  # an owner creates it once
        with psycopg.connect(pg_dsn, autocommit=True) as db:
            db.execute("GRANT SELECT, INSERT, UPDATE ON mnemic_jobs TO mnemic_app")
        queue = PostgresQueue(app, worker=False)  # then the role uses it as it is
        queue.register("t", lambda payload: None)
        queue.start()
        assert queue.wait([queue.submit("t", "s", {})], timeout=30)[0].status == "done"
        queue.close()
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as db:
            db.execute("DROP OWNED BY mnemic_app")
            db.execute("DROP ROLE mnemic_app")
