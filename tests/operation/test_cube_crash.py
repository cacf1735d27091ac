"""Crash safety of MemCube files: SIGKILL a process while it dumps, or while it loads.

Dump: a child dumps one cube over and over (archives and folders by turns) and is killed at
a random moment; at the destination there is never a partial cube: each name is absent or a
whole cube that verifies against its hashes (only hidden ``.<name>.tmp-*`` may be left).

Load: a child loads cube archives one after another into a fresh store (SQLite or a real
PostgreSQL) and is killed at a random moment of a load (timed from the first load). Then,
after the recovery every cube operation starts with, each cube is entirely there — its items,
history and vectors exporting to exactly the archive's bytes, its files in place — or
entirely absent (no item, no folder, nothing staged), and loading it again works.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mnemic.infra.store.base import ItemFilter
from mnemic.models import CubeManifest, HistoryEntry, MemoryItem
from mnemic.operation import cube_io, cube_store

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

RUNS = int(os.environ.get("MNEMIC_CUBE_KILLS", "2"))  # killed children per backend and test
CUBES = 4  # archives a load child works through
ITEMS = 400  # items a cube (PostgreSQL inserts ~150/s into its HNSW index on 2 busy cores)
BLOB = 8 << 20  # bytes of the activation file each cube carries

DUMP_CHILD = r"""
import sys
from pathlib import Path
from mnemic import Memory
dest = Path(sys.argv[1])
with Memory() as mem:
    print("ready", flush=True)
    k = 0
    while True:
        target = dest / (f"c{k}.tar" if k % 2 == 0 else f"c{k}")
        mem.dump_cube(target, user_id="ana")
        print(f"done {target.name}", flush=True)
        k += 1
"""

LOAD_CHILD = r"""
import sys
from pathlib import Path
from mnemic import Memory
with Memory() as mem:
    mem.embedder.dim  # the model loads before the first load is timed
    print("ready", flush=True)
    for archive in sys.argv[1:]:
        print(f"start {archive}", flush=True)
        mem.load_cube(archive, user_id="ana")
        print(f"done {archive}", flush=True)
"""


@contextlib.contextmanager
def _store_env(
    request: pytest.FixtureRequest, backend: str, home: Path
) -> Iterator[dict[str, str]]:
    """Environment for a child (and the settings for the parent) on a fresh store."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MNEMIC_HOME": str(home)}
    env.pop("MNEMIC_CONFIG", None)
    if backend != "postgres":
        yield env
        return
    import psycopg
    from psycopg.conninfo import make_conninfo

    admin = request.getfixturevalue("pg_server").get_uri()
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield {
            **env,
            "MNEMIC_STORE__BACKEND": "postgres",
            "MNEMIC_STORE__DSN": make_conninfo(admin, dbname=name),
        }
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _memory(env: dict[str, str], embedder: object) -> object:
    from mnemic import Memory, load_settings

    overrides: dict[str, object] = {"home": Path(env["MNEMIC_HOME"])}
    if "MNEMIC_STORE__DSN" in env:
        overrides["store"] = {"backend": "postgres", "dsn": env["MNEMIC_STORE__DSN"]}
    return Memory(load_settings(**overrides), embedder=embedder)  # type: ignore[arg-type]


def _spawn(script: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    assert ready == "ready\n", child.stderr.read() if child.stderr else "child died"
    return child


def _kill(child: subprocess.Popen[str]) -> list[str]:
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=60)
    return out.splitlines()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_during_dump_never_leaves_a_partial_cube_at_the_destination(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, embedder: object
) -> None:
    rng = random.Random(11)
    with _store_env(request, backend, tmp_path / "home") as env:
        with _memory(env, embedder) as mem:  # type: ignore[attr-defined]
            mem.add(["I went hiking by the lake.", "My sister lives in Lisbon."], user_id="ana")
            mem.wait(user_id="ana")
            folder = mem.cube_folder(user_id="ana")
            (folder / "activation" / "big.bin").write_bytes(os.urandom(BLOB * 2))
        for run in range(RUNS):
            dest = tmp_path / f"out{run}"
            dest.mkdir()
            child = _spawn(DUMP_CHILD, [str(dest)], env)
            first = child.stdout.readline() if child.stdout else ""
            assert first.startswith("done"), child.stderr.read() if child.stderr else ""
            time.sleep(rng.uniform(0.0, 1.5))
            done = [first.split()[1], *(line.split()[1] for line in _kill(child))]
            whole = 0
            for entry in sorted(dest.iterdir()):
                if entry.name.startswith(".") and ".tmp-" in entry.name:
                    continue  # what a killed writer leaves beside, never at, the destination
                if entry.is_dir():
                    cube_io.verify(entry)
                else:
                    cube_io.unpack(entry, tmp_path / f"check{run}" / entry.name)
                whole += 1
            assert set(done) <= {e.name for e in dest.iterdir()}
            assert whole in (len(done), len(done) + 1)  # the one cut short: absent or whole


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)


def _archives(folder: Path, embedder_id: str) -> list[tuple[Path, dict[str, bytes], bytes]]:
    """Cubes ``ana/c<k>`` made as a dump would make them: items with vectors and history,
    and a large activation file (the load copies and hashes it)."""
    rng = np.random.default_rng(3)
    out = []
    for k in range(CUBES):
        cube = f"ana/c{k}"
        start = datetime(2024, 1, 1, tzinfo=UTC)
        items, history, vectors = [], [], []
        for n in range(ITEMS):
            item = MemoryItem(
                user_id="ana",
                cube_id=cube,
                text=f"cube {k} memory {n}: the {rng.integers(1e6)} pears of day {n % 30}",
                speaker="Ana",
                session_id=f"s{n // 100}",
                valid_from=start + timedelta(minutes=n),
            )
            items.append(item)
            history.append(
                HistoryEntry(
                    id=n + 1,
                    item_id=item.id,
                    user_id="ana",
                    cube_id=cube,
                    action="add",
                    actor="ana",
                    at=start + timedelta(minutes=n, seconds=1),
                    reason="add",
                    after=item.model_dump(mode="json"),
                )
            )
            v = rng.normal(size=384).astype("<f4")
            encoded = base64.b64encode((v / np.linalg.norm(v)).astype("<f4").tobytes()).decode()
            vectors.append({"id": item.id, "vector": encoded})
        plaintext = {
            cube_io.ITEMS: _jsonl([i.model_dump(mode="json") for i in items]),
            cube_io.HISTORY: _jsonl([h.model_dump(mode="json") for h in history]),
            cube_io.VECTORS: _jsonl(sorted(vectors, key=lambda r: r["id"])),
        }
        blob = os.urandom(BLOB)
        kinds = folder / f"kinds{k}"
        (kinds / "activation").mkdir(parents=True)
        (kinds / "activation" / "cache.bin").write_bytes(blob)
        manifest = CubeManifest(
            cube_id=cube, owner_id="ana", embedder=embedder_id, embedding_dim=384
        )
        cube_io.dump(folder / f"c{k}", manifest, plaintext, {"activation": kinds / "activation"})
        archive = cube_io.pack(folder / f"c{k}", folder / f"c{k}.tar")
        out.append((archive, plaintext, blob))
    return out


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, embedder: object) -> list:
    return _archives(tmp_path_factory.mktemp("cubes"), embedder.id)  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_during_load_leaves_each_cube_whole_or_absent(
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    embedder: object,
    archives: list,
) -> None:
    rng = random.Random(5)
    phases: dict[str, int] = {}
    for run in range(RUNS):
        with _store_env(request, backend, tmp_path / f"home{run}") as env:
            phase = killed_load(env, embedder, archives, rng)
            phases[phase] = phases.get(phase, 0) + 1
    print(f"{backend}: {RUNS} loads killed, where: {phases}")  # shown with pytest -s


def killed_load(env: dict[str, str], embedder: object, archives: list, rng: random.Random) -> str:
    """Kill a child somewhere in its second load, check every cube is whole or absent, and
    say where the kill landed: ``staging`` (before the commit was prepared), ``commit``
    (prepared, not committed), ``placing`` (committed, files not yet in place) or ``after``."""
    home = Path(env["MNEMIC_HOME"])
    child = _spawn(LOAD_CHILD, [str(a) for a, _, _ in archives], env)
    assert child.stdout is not None
    t0 = time.monotonic()
    assert child.stdout.readline().startswith("start")
    assert child.stdout.readline().startswith("done"), child.stderr.read() if child.stderr else ""
    one_load = time.monotonic() - t0
    assert child.stdout.readline().startswith("start")
    time.sleep(rng.uniform(0.0, one_load))  # somewhere inside the second load
    lines = _kill(child)
    done = {Path(line.split()[1]) for line in lines if line.startswith("done")}
    done.add(archives[0][0])

    with _memory(env, embedder) as mem:  # type: ignore[attr-defined]
        staged = list((home / "cubes" / ".loading").iterdir())
        phase = "after"
        if staged and not (staged[0] / "pending.json").exists():
            phase = "staging"
        elif staged:
            phase = "placing" if _committed(mem, staged[0]) else "commit"
        with cube_store.locked(mem.settings.home):
            cube_store.recover(mem.store, mem.settings.home)
        assert not any((home / "cubes" / ".loading").iterdir())
        present = []
        for k, (archive, plaintext, blob) in enumerate(archives):
            cube = f"ana/c{k}"
            folder = cube_store.cube_folder(home, cube)
            if mem.store.get_cube(cube) is None:
                assert archive not in done
                assert mem.store.count_items("ana", cube, ItemFilter.any_status()) == 0
                assert not folder.exists()
                continue
            present.append(k)
            assert cube_io.export_plaintext(mem.store, "ana", cube) == plaintext
            assert (folder / "activation" / "cache.bin").read_bytes() == blob
        assert present == list(range(len(present))) and len(present) >= 1
        # what was cut short loads now
        for k in range(len(present), CUBES):
            mem.load_cube(archives[k][0], user_id="ana")
            assert cube_io.export_plaintext(mem.store, "ana", f"ana/c{k}") == archives[k][1]
    return phase


def _committed(mem: object, staged: Path) -> bool:
    manifest = CubeManifest.model_validate_json((staged / "pending.json").read_text())
    return mem.store.get_cube(manifest.cube_id) == manifest  # type: ignore[attr-defined]
