"""The journaled job queue: order, failures reported, inline running, resumption."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mnemic import Memory, load_settings
from mnemic.operation.jobs import InProcessQueue, JobFailed


@pytest.mark.parametrize("worker", [True, False])
def test_jobs_run_in_order_and_failures_are_reported(tmp_path: Path, worker: bool) -> None:
    done: list[int] = []
    queue = InProcessQueue(tmp_path / "jobs.db", worker=worker)

    def handler(payload: dict) -> None:
        if payload["n"] == 2:
            raise RuntimeError("no good")
        done.append(payload["n"])

    queue.register("t", handler)
    queue.start()
    ids = [queue.submit("t", "s", {"n": n}) for n in range(4)]
    with pytest.raises(JobFailed, match="RuntimeError: no good"):
        queue.wait(ids, timeout=30)
    assert done == [0, 1, 3]
    (failed,) = queue.failed("s")
    assert failed.id == ids[2] and failed.error == "RuntimeError: no good"
    assert queue.failed("other") == [] and queue.pending() == 0
    queue.close()


def test_unfinished_jobs_resume_in_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    first = InProcessQueue(path, worker=False)
    first.register("t", lambda payload: None)
    first.start()
    job = first.submit("t", "s", {"n": 1})
    first.close()  # ended before anyone waited: the job stays queued

    # a job left "running" by a process that has died is taken up again
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO jobs(kind, scope, payload, status, claimed_by, submitted_at) "
            "VALUES ('t', 's', '{\"n\": 2}', 'running', ?, 0)",
            (int(dead.stdout),),
        )
    seen: list[int] = []
    second = InProcessQueue(path, worker=True)
    second.register("t", lambda payload: seen.append(payload["n"]))
    second.start()
    assert second.wait_scope("s", timeout=30)
    assert seen == [1, 2] and second.wait([job])[0].status == "done"
    second.close()


def test_wait_times_out(tmp_path: Path) -> None:
    release = threading.Event()
    queue = InProcessQueue(tmp_path / "jobs.db")
    queue.register("t", lambda payload: release.wait(10))
    queue.start()
    job = queue.submit("t", "s", {})
    with pytest.raises(TimeoutError):
        queue.wait([job], timeout=0.3)
    assert not queue.wait_scope("s", timeout=0.2)
    release.set()
    assert queue.wait([job], timeout=30)[0].status == "done"
    queue.close()


def test_add_without_waiting_is_finished_by_the_next_process(
    tmp_path: Path, embedder: object
) -> None:
    settings = load_settings(home=tmp_path / "h")
    with Memory(settings, embedder=embedder, background=False) as mem:  # type: ignore[arg-type]
        (turn,) = mem.add("I live in Porto.", user_id="ana")
    with Memory(settings, embedder=embedder, background=False) as mem:  # type: ignore[arg-type]
        hits = mem.search("which city is home", user_id="ana")  # runs the pending job first
        assert {h.item.id for h in hits} >= {turn.id}
        assert any("dense" in h.stages for h in hits if h.item.id == turn.id)
        (fact,) = mem.get_all(user_id="ana", filters={"tags": ["slot:residence"]})
        assert fact.text == "the user lives in Porto"
