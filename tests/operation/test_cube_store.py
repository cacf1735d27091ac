"""A MemCube's life through the SDK on both backends: dump, load elsewhere (the other backend)
and dump again byte for byte with all three kinds; loading refuses what is taken, hostile
archives and another embedder (unless migrating, which re-embeds); compose merges two cubes
with duplicates collapsed and provenance kept."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "infra"))
from protocol_peer import ProtocolPeer, Reply

from mnemic import Conflict, InvalidInput, Memory, load_settings
from mnemic.infra import parametric
from mnemic.infra.activation import ActivationStore
from mnemic.infra.hf_models import byte_tokenizer, random_model
from mnemic.infra.parametric.provenance import PROVENANCE
from mnemic.infra.store.base import ItemFilter
from mnemic.operation import cube_io
from mnemic.operation.reader.deterministic import embed_text

WHEN = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
TURNS = [
    {"role": "Caroline", "content": "I went hiking by the lake last Saturday."},
    {"role": "Melanie", "content": "My sister visits us in July, she lives in Lisbon."},
    {"role": "Caroline", "content": "I love painting sunsets with watercolours."},
]


@contextlib.contextmanager
def _database(pg_server: object) -> Iterator[str]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    admin = pg_server.get_uri()  # type: ignore[attr-defined]
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _backend(mem: Memory) -> str:
    return "postgres" if hasattr(mem.store, "dsn") else "sqlite"


@contextlib.contextmanager
def _memory(
    request: pytest.FixtureRequest, backend: str, home: Path, embedder: object, **settings: object
) -> Iterator[Memory]:
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            dsn = stack.enter_context(_database(request.getfixturevalue("pg_server")))
            settings["store"] = {"backend": "postgres", "dsn": dsn}
        mem = Memory(load_settings(home=home, **settings), embedder=embedder)  # type: ignore[arg-type]
        stack.callback(mem.close)
        yield mem


@pytest.fixture
def elsewhere(
    request: pytest.FixtureRequest, memory: Memory, tmp_path: Path, embedder: object
) -> Iterator[Memory]:
    """A second system on the other backend, with its own home."""
    other = "sqlite" if _backend(memory) == "postgres" else "postgres"
    with _memory(request, other, tmp_path / "elsewhere", embedder) as mem:
        yield mem


def _fill(memory: Memory, tmp_path: Path) -> list:
    """Ana's default cube: turns with extracted memories, an edit, a deletion, a KV cache of
    two items and an adapter distilled from them."""
    items = memory.add(TURNS, user_id="ana", session_id="s1", timestamp=WHEN, wait=True)
    memory.update(items[1].id, user_id="ana", text="My sister visits us in August.")
    memory.delete(items[2].id, user_id="ana")
    kept = memory.store.get_items("ana", "ana/default", [items[0].id, items[1].id])
    folder = memory.cube_folder(user_id="ana")
    model, tok = random_model("tiny", seed=0), byte_tokenizer()
    ActivationStore(folder / "activation").get_or_compile(model, tok, kept)
    result = parametric.distill(
        model, tok, kept, name="mem", config=parametric.DistillConfig(steps=2)
    )
    parametric.save(result.model, "mem", folder / "parametric" / "mem")
    return kept


def _scope_state(mem: Memory, owner: str, cube: str) -> tuple[list, dict, list]:
    items = mem.store.list_items(owner, cube, ItemFilter.any_status(), limit=10_000)
    vectors = mem.store.get_vectors(owner, cube, [i.id for i in items])
    history = [
        h.model_dump(exclude={"id"})
        for i in sorted(items, key=lambda i: i.id)
        for h in mem.store.history(owner, cube, i.id)
    ]
    return (
        [i.model_dump() for i in items],  # in the store's order, kept by a load
        {k: v.tobytes() for k, v in vectors.items()},
        history,
    )


def test_dump_load_elsewhere_dump_is_byte_identical_with_all_three_kinds(
    memory: Memory, elsewhere: Memory, tmp_path: Path
) -> None:
    kept = _fill(memory, tmp_path)
    doc = memory.dump_cube(tmp_path / "a.tar", user_id="ana")
    files = set(doc["files"])
    assert {cube_io.ITEMS, cube_io.HISTORY, cube_io.VECTORS} <= files
    assert any(f.startswith("activation/") and f.endswith(".safetensors") for f in files)
    assert "parametric/mem/adapter_model.safetensors" in files
    assert doc["format_version"] == cube_io.FORMAT_VERSION == 2

    report = elsewhere.load_cube(tmp_path / "a.tar", user_id="ana")
    n = memory.store.count_items("ana", "ana/default", ItemFilter.any_status())
    assert report["items"] == n > len(TURNS)  # the turns and what was extracted from them
    assert report["vectors_stored"] == n and report["vectors_embedded"] == 0
    assert report["reembedded"] is False
    # the same items, the very same vectors, the same history (times, actors, contents)
    assert _scope_state(elsewhere, "ana", "ana/default") == _scope_state(
        memory, "ana", "ana/default"
    )
    assert elsewhere.store.get_cube("ana/default") == memory.store.get_cube("ana/default")
    hits = elsewhere.search("when does my sister visit", user_id="ana")
    assert kept[1].id in [h.item.id for h in hits[:3]]
    folder = elsewhere.cube_folder(user_id="ana")
    assert ActivationStore(folder / "activation").get(random_model("tiny", seed=0), kept)
    assert parametric.read_info(folder / "parametric" / "mem").items == [
        (i.id, i.version) for i in kept
    ]

    elsewhere.dump_cube(tmp_path / "b.tar", user_id="ana")
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "a.tar").read_bytes()
    elsewhere.dump_cube(tmp_path / "b", user_id="ana")  # a folder: the same files
    unpacked = tmp_path / "unpacked"
    cube_io.unpack(tmp_path / "a.tar", unpacked)
    assert _tree(tmp_path / "b") == _tree(unpacked)


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _nothing_loaded(mem: Memory, cube: str, owner: str = "ana") -> None:
    assert mem.store.get_cube(cube) is None
    assert mem.store.count_items(owner, cube, ItemFilter.any_status()) == 0
    cubes = mem.settings.home / "cubes"
    leftovers = [p for p in cubes.rglob("*") if p.name != ".lock"] if cubes.exists() else []
    assert [p for p in leftovers if not p.is_dir()] == []


def test_load_refuses_a_taken_cube_or_taken_ids_and_writes_nothing(
    memory: Memory, tmp_path: Path
) -> None:
    memory.add("the launch is on Friday", user_id="ana", wait=True)
    memory.dump_cube(tmp_path / "a", user_id="ana")
    with pytest.raises(Conflict, match="exists already"):
        memory.load_cube(tmp_path / "a", user_id="ana")
    # under another id the items' ids are still taken, on both backends alike
    with pytest.raises(Conflict, match="already exists in this store"):
        memory.load_cube(tmp_path / "a", user_id="bob", cube_id="bob/copy")
    assert memory.store.get_cube("bob/copy") is None
    assert memory.store.count_items("bob", "bob/copy", ItemFilter.any_status()) == 0
    assert not any((memory.settings.home / "cubes" / ".loading").iterdir())


def test_load_as_another_owner_and_cube_rebinds_every_row(
    memory: Memory, elsewhere: Memory, tmp_path: Path
) -> None:
    (item,) = memory.add("the launch is on Friday", user_id="ana", wait=True)
    memory.dump_cube(tmp_path / "a.tar", user_id="ana")
    report = elsewhere.load_cube(tmp_path / "a.tar", user_id="bob", cube_id="bob/launch")
    assert report["cube_id"] == "bob/launch" and report["owner_id"] == "bob"
    (got,) = elsewhere.get_all(user_id="bob", cube_id="bob/launch")
    assert (got.id, got.user_id, got.cube_id) == (item.id, "bob", "bob/launch")
    (row,) = elsewhere.history(item.id, user_id="bob", cube_id="bob/launch")
    assert row.after is not None and row.after["user_id"] == "bob"
    assert row.after["cube_id"] == "bob/launch"
    manifest = elsewhere.store.get_cube("bob/launch")
    assert manifest is not None and manifest.owner_id == "bob"
    assert manifest.provenance["loaded_from"] == {"cube_id": "ana/default", "owner_id": "ana"}
    assert elsewhere.search("when is the launch", user_id="bob", cube_id="bob/launch")
    with pytest.raises(Exception, match="another user"):
        elsewhere.dump_cube(tmp_path / "x.tar", user_id="ana", cube_id="bob/launch")
    assert not (tmp_path / "x.tar").exists()


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _rehash(members: dict[str, bytes]) -> dict[str, bytes]:
    """A forged archive: the manifest's hashes recomputed for the changed files."""
    doc = json.loads(members["cube.json"])
    doc["files"] = {
        k: hashlib.sha256(v).hexdigest() for k, v in members.items() if k != "cube.json"
    }
    return {**members, "cube.json": json.dumps(doc).encode()}


def test_a_hostile_archive_is_refused_and_nothing_is_written(
    memory: Memory, elsewhere: Memory, tmp_path: Path
) -> None:
    memory.add(TURNS, user_id="ana", timestamp=WHEN, wait=True)
    memory.dump_cube(tmp_path / "a", user_id="ana")
    good = _tree(tmp_path / "a")

    bad_hash = {**good, cube_io.ITEMS: good[cube_io.ITEMS].replace(b"Lisbon", b"Lisbom")}
    with pytest.raises(InvalidInput, match="does not match the hash"):
        elsewhere.load_cube(_tar(tmp_path / "h.tar", bad_hash), user_id="ana")
    _nothing_loaded(elsewhere, "ana/default")

    escape = {**good, "../../evil.txt": b"x"}
    with pytest.raises(InvalidInput, match="outside its folder"):
        elsewhere.load_cube(_tar(tmp_path / "e.tar", escape), user_id="ana")
    _nothing_loaded(elsewhere, "ana/default")
    assert not (tmp_path / "evil.txt").exists()

    # hashes that match, but rows of someone else's cube smuggled in
    rows = [json.loads(line) for line in good[cube_io.ITEMS].splitlines()]
    rows[0]["user_id"] = "victim"
    forged = _rehash(
        {**good, cube_io.ITEMS: b"".join(json.dumps(r).encode() + b"\n" for r in rows)}
    )
    with pytest.raises(InvalidInput, match="not of the cube its manifest names"):
        elsewhere.load_cube(_tar(tmp_path / "f.tar", forged), user_id="ana")
    _nothing_loaded(elsewhere, "ana/default")
    assert elsewhere.store.count_items("victim", "ana/default", ItemFilter.any_status()) == 0

    # a vector of the wrong size, hashes matching
    lines = good[cube_io.VECTORS].splitlines()
    first = json.loads(lines[0])
    first["vector"] = first["vector"][:8]
    forged = _rehash(
        {**good, cube_io.VECTORS: b"\n".join([json.dumps(first).encode(), *lines[1:]])}
    )
    with pytest.raises(InvalidInput, match="vector"):
        elsewhere.load_cube(_tar(tmp_path / "v.tar", forged), user_id="ana")
    _nothing_loaded(elsewhere, "ana/default")

    # a file outside the three kinds, listed with its hash
    stray = _rehash({**good, "elsewhere/run.sh": b"#!/bin/sh\n"})
    with pytest.raises(InvalidInput, match="files under plaintext/"):
        elsewhere.load_cube(_tar(tmp_path / "s.tar", stray), user_id="ana")
    _nothing_loaded(elsewhere, "ana/default")

    # the untouched archive still loads
    assert elsewhere.load_cube(tmp_path / "a", user_id="ana")["items"] == len(
        good[cube_io.ITEMS].splitlines()
    )


class EmbeddingsPeer(ProtocolPeer):
    """An OpenAI-compatible /embeddings server on 127.0.0.1: 16-d vectors from the text's
    hash, so equal texts embed equally."""

    def answer(self, payload: dict, reply: Reply) -> str:
        data = [
            {"object": "embedding", "index": i, "embedding": self.vector(t).tolist()}
            for i, t in enumerate(payload["input"])
        ]
        return json.dumps({"object": "list", "data": data, "model": payload["model"]})

    @staticmethod
    def vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
        v = np.random.default_rng(seed).normal(size=16).astype(np.float32)
        return v / np.linalg.norm(v)


def test_migrate_to_another_embedder_reembeds_every_item(
    request: pytest.FixtureRequest, memory: Memory, tmp_path: Path
) -> None:
    from mnemic.infra.embed.openai import OpenAIEmbedder

    memory.add(TURNS, user_id="ana", timestamp=WHEN, wait=True)
    memory.dump_cube(tmp_path / "a.tar", user_id="ana")
    peer = EmbeddingsPeer()
    request.addfinalizer(peer.close)
    other = OpenAIEmbedder(base_url=peer.url, model="peer-embed", api_key="k")
    with _memory(request, _backend(memory), tmp_path / "migrated", other) as target:
        with pytest.raises(InvalidInput, match="reembed"):
            target.load_cube(tmp_path / "a.tar", user_id="ana")
        _nothing_loaded(target, "ana/default")
        report = target.load_cube(tmp_path / "a.tar", user_id="ana", reembed=True)
        assert report["reembedded"] is True and report["embedder"] == "openai:peer-embed"
        assert report["from_embedder"] == memory.embedder.id
        assert report["vectors_embedded"] == report["items"] and report["vectors_stored"] == 0
        items = target.store.list_items("ana", "ana/default", ItemFilter.any_status())
        vectors = target.store.get_vectors("ana", "ana/default", [i.id for i in items])
        assert len(vectors) == len(items)
        for item in items:
            # the client normalises what comes over JSON: equal up to float rounding
            expected = EmbeddingsPeer.vector(embed_text(item))
            assert np.allclose(vectors[item.id], expected, atol=1e-6)
        manifest = target.store.get_cube("ana/default")
        assert manifest is not None
        assert (manifest.embedder, manifest.embedding_dim) == ("openai:peer-embed", 16)
        assert manifest.provenance["reembedded_from"] == {
            "embedder": memory.embedder.id,
            "embedding_dim": 384,
        }
        hits = target.search("Lisbon sister July", user_id="ana")
        assert any("Lisbon" in h.item.text for h in hits)
        # what it dumps now says which embedder made its vectors
        doc = target.dump_cube(tmp_path / "m.tar", user_id="ana")
        assert doc["cube"]["embedder"] == "openai:peer-embed"


def test_compose_collapses_duplicates_keeps_provenance_and_carries_adapters(
    memory: Memory, tmp_path: Path
) -> None:
    a_items = memory.add(TURNS, user_id="ana", session_id="s1", timestamp=WHEN, wait=True)
    b_turns = [
        # the same turn, said the same day: a duplicate by text
        {"role": "Caroline", "content": "I went hiking by the LAKE last Saturday!"},
        # the same words from someone else: not a duplicate
        {"role": "Melanie", "content": "I love painting sunsets with watercolours."},
        # new
        {"role": "Caroline", "content": "My cat Luna knocked over the easel."},
    ]
    b_items = memory.add(
        b_turns, user_id="ana", cube_id="ana/trip", session_id="s1", timestamp=WHEN, wait=True
    )
    # a near duplicate by vector alone (another day, other words), same speaker
    (near,) = memory.add(
        {"role": "Melanie", "content": "My sister is visiting us in July, she lives in Lisbon."},
        user_id="ana",
        cube_id="ana/trip",
        timestamp=datetime(2023, 6, 1, tzinfo=UTC),
        wait=True,
    )
    va, vb = memory.embedder.embed([embed_text(a_items[1]), embed_text(near)])
    assert float(va @ vb) >= memory.settings.cube.duplicate_similarity

    a_folder = memory.cube_folder(user_id="ana")
    model, tok = random_model("tiny", seed=0), byte_tokenizer()
    kv = ActivationStore(a_folder / "activation")
    held_survivor = kv.get_or_compile(model, tok, [a_items[0]])
    held_other = kv.get_or_compile(model, tok, [a_items[2]])
    b_folder = memory.cube_folder(user_id="ana", cube_id="ana/trip")
    result = parametric.distill(
        model, tok, b_items[2:], name="cat", config=parametric.DistillConfig(steps=1)
    )
    parametric.save(result.model, "cat", b_folder / "parametric" / "cat")

    before_b = memory.store.count_items("ana", "ana/trip", ItemFilter.any_status())
    report = memory.compose_cubes("ana/trip", user_id="ana")
    assert report["carried"] + report["collapsed"] == before_b
    assert report["collapsed"] >= 2 and a_items[0].id in report["changed"]
    assert a_items[1].id in report["changed"]

    survivor = memory.get(a_items[0].id, user_id="ana")
    assert survivor.version == a_items[0].version + 1
    assert {"cube_id": "ana/trip", "owner_id": "ana", "item_id": b_items[0].id} in (
        survivor.metadata["composed_from"]
    )
    assert memory.history(survivor.id, user_id="ana")[-1].action == "compose"
    assert any(
        e["item_id"] == near.id
        for e in memory.get(a_items[1].id, user_id="ana").metadata["composed_from"]
    )
    everything = memory.store.list_items("ana", "ana/default", ItemFilter.any_status())
    copies = {
        e["item_id"]: i
        for i in everything
        for e in i.metadata.get("composed_from", [])
        if i.id not in report["changed"]
    }
    for b in (b_items[1], b_items[2]):  # other speaker, new: copied with new ids
        copy = copies[b.id]
        assert copy.id != b.id and copy.text == b.text and copy.speaker == b.speaker
        (row,) = memory.history(copy.id, user_id="ana")
        assert row.action == "compose" and b.id in (row.reason or "")
    assert b_items[2].text in [h.item.text for h in memory.search("cat easel", user_id="ana")]
    # the survivor's cache is gone, the other stays; the adapter came along, with provenance
    assert report["invalidated_caches"] == 1
    assert kv.get(model, [a_items[0]]) is None and held_survivor is not None
    assert kv.get(model, [a_items[2]]) is not None and held_other is not None
    meta = json.loads((a_folder / "parametric" / "cat" / PROVENANCE).read_text())
    carried_from = meta["made_by"]["composed_from"]
    assert carried_from["cube_id"] == "ana/trip" and carried_from["adapter"] == "cat"
    assert carried_from["item_ids"][b_items[2].id] == copies[b_items[2].id].id
    # the source is left as it was; composing again changes nothing
    assert memory.store.count_items("ana", "ana/trip", ItemFilter.any_status()) == before_b
    count = len(everything)
    again = memory.compose_cubes("ana/trip", user_id="ana")
    assert (again["carried"], again["collapsed"], again["adapters"]) == (0, 0, [])
    assert memory.store.count_items("ana", "ana/default", ItemFilter.any_status()) == count
    assert memory.get(a_items[0].id, user_id="ana").version == survivor.version
    with pytest.raises(InvalidInput, match="into itself"):
        memory.compose_cubes("ana/default", user_id="ana")
