"""MemCube dump and load: all three kinds round-trip byte for byte; hostile archives are refused."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mnemic.errors import InvalidInput
from mnemic.infra import parametric
from mnemic.infra.activation import ActivationStore
from mnemic.infra.hf_models import byte_tokenizer, random_model
from mnemic.models import CubeManifest, MemoryItem
from mnemic.operation import cube_io

CUBE = "u/default"


@pytest.fixture
def cube(store, tmp_path: Path) -> tuple[CubeManifest, dict[str, bytes], dict[str, Path]]:
    manifest = store.ensure_cube(CUBE, "u", embedder="test-embedder", dim=8)
    items = [
        MemoryItem(user_id="u", cube_id=CUBE, text=t, speaker="Caroline")
        for t in ("I went hiking by the lake.", "My sister visits in July.")
    ]
    store.add_items(items, np.eye(2, 8, dtype=np.float32), actor="u")
    store.update_item(
        items[0].model_copy(update={"version": 2, "text": "I went hiking by the sea."}),
        None,
        actor="u",
        expected_version=1,
    )
    items[0] = store.get_items("u", CUBE, [items[0].id])[0]
    model, tok = random_model("tiny", seed=0), byte_tokenizer()
    ActivationStore(tmp_path / "kv").get_or_compile(model, tok, items)
    result = parametric.distill(
        model, tok, items, name="mem", config=parametric.DistillConfig(steps=2)
    )
    parametric.save(result.model, "mem", tmp_path / "adapters" / "mem")
    kinds = {"activation": tmp_path / "kv", "parametric": tmp_path / "adapters"}
    return manifest, cube_io.export_plaintext(store, "u", CUBE), kinds


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_dump_load_dump_is_byte_identical_for_all_three_kinds(cube, tmp_path: Path) -> None:
    manifest, plaintext, kinds = cube
    doc = cube_io.dump(tmp_path / "a", manifest, plaintext, kinds)
    files = set(doc["files"])
    assert {"plaintext/items.jsonl", "plaintext/history.jsonl"} <= files
    assert any(f.startswith("activation/") and f.endswith(".safetensors") for f in files)
    assert "parametric/mem/adapter_model.safetensors" in files
    items = [json.loads(line) for line in plaintext["plaintext/items.jsonl"].splitlines()]
    history = plaintext["plaintext/history.jsonl"].splitlines()
    assert sorted(i["version"] for i in items) == [1, 2] and len(history) == 3

    archive = cube_io.pack(tmp_path / "a", tmp_path / "a.tar")
    loaded = tmp_path / "loaded"
    got = cube_io.unpack(archive, loaded, embedder="test-embedder", embedding_dim=8)
    assert got == doc
    # dump what was loaded: the same folder, the same archive bytes
    again = tmp_path / "b"
    cube_io.dump(
        again,
        CubeManifest.model_validate(got["cube"]),
        {rel: (loaded / rel).read_bytes() for rel in plaintext},
        {kind: loaded / kind for kind in cube_io.KINDS},
    )
    assert _tree(again) == _tree(tmp_path / "a")
    assert cube_io.pack(again, tmp_path / "b.tar").read_bytes() == archive.read_bytes()


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "plaintext/../../evil.txt"])
def test_paths_escaping_the_folder_are_refused_and_nothing_is_written(
    tmp_path: Path, name: str
) -> None:
    archive = _tar(tmp_path / "bad.tar", [(tarfile.TarInfo(name), b"x")])
    with pytest.raises(InvalidInput, match="outside its folder"):
        cube_io.unpack(archive, tmp_path / "out" / "cube")
    assert not (tmp_path / "out" / "cube").exists() and not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_links_in_an_archive_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("cube.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(InvalidInput, match="not a regular file"):
        cube_io.unpack(_tar(tmp_path / "l.tar", [(link, b"")]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_compressed_bomb_is_refused_before_it_fills_the_disk(tmp_path: Path) -> None:
    """64 MB of zeros gzip to ~64 KB: unpacked, an upload bounded at 1 GiB could write ~1 TB."""
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("plaintext/items.jsonl")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(InvalidInput, match="plain tar"):
        cube_io.unpack(bomb, tmp_path / "out" / "cube")
    assert list((tmp_path / "out").iterdir()) == []


def _repack(tmp_path: Path, folder: Path, change) -> Path:
    members = []
    for rel, data in sorted(_tree(folder).items()):
        members.append((tarfile.TarInfo(rel), change(rel, data)))
    return _tar(tmp_path / "changed.tar", members)


def test_bad_hash_newer_schema_and_other_embedder_are_refused(cube, tmp_path: Path) -> None:
    manifest, plaintext, kinds = cube
    cube_io.dump(tmp_path / "a", manifest, plaintext, kinds)

    def flip_items(rel: str, data: bytes) -> bytes:
        return data.replace(b"July", b"June") if rel == "plaintext/items.jsonl" else data

    with pytest.raises(InvalidInput, match="does not match the hash"):
        cube_io.unpack(_repack(tmp_path, tmp_path / "a", flip_items), tmp_path / "o1")
    assert not (tmp_path / "o1").exists()

    def newer(rel: str, data: bytes) -> bytes:
        if rel != "cube.json":
            return data
        doc = json.loads(data)
        doc["cube"]["schema_version"] += 1
        return json.dumps(doc).encode()

    (tmp_path / "changed.tar").unlink()
    with pytest.raises(InvalidInput, match="newer mnemic"):
        cube_io.unpack(_repack(tmp_path, tmp_path / "a", newer), tmp_path / "o2")
    assert not (tmp_path / "o2").exists()

    archive = cube_io.pack(tmp_path / "a", tmp_path / "a.tar")
    with pytest.raises(InvalidInput, match="migrate"):
        cube_io.unpack(archive, tmp_path / "o3", embedder="other", embedding_dim=384)
    assert not (tmp_path / "o3").exists()

    (tmp_path / "a" / "activation" / "stray.bin").write_bytes(b"?")
    with pytest.raises(InvalidInput, match="does not list"):
        cube_io.verify(tmp_path / "a")


def test_a_symlink_in_a_kind_folder_is_not_dumped(cube, tmp_path: Path) -> None:
    manifest, plaintext, kinds = cube
    (kinds["activation"] / "link.safetensors").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="symbolic link"):
        cube_io.dump(tmp_path / "a", manifest, plaintext, kinds)


def test_a_write_during_the_dump_is_read_again_not_torn(tmp_path: Path) -> None:
    """A writer changes an item between the dump's reads: the dump reads again and holds one
    consistent state (here: the item at its new version, with its history)."""
    from mnemic.infra.store.sqlite import SQLiteStore

    class WrittenDuringTheDump(SQLiteStore):
        writes = 0

        def history(self, user_id, cube_id, item_id):
            if self.writes == 0:  # between reading the items and their history
                self.writes += 1
                (old,) = self.get_items(user_id, cube_id, [item_id])
                new = old.model_copy(update={"text": "changed", "version": old.version + 1})
                self.update_item(new, np.ones(4, np.float32), actor="w", expected_version=1)
            return super().history(user_id, cube_id, item_id)

    store = WrittenDuringTheDump(tmp_path / "s.db", dim=4)
    item = MemoryItem(user_id="u", cube_id=CUBE, text="first")
    store.add_items([item], np.ones((1, 4), np.float32), actor="u")
    out = cube_io.export_plaintext(store, "u", CUBE)
    (line,) = out[cube_io.ITEMS].splitlines()
    assert json.loads(line)["version"] == 2 and json.loads(line)["text"] == "changed"
    assert len(out[cube_io.HISTORY].splitlines()) == 2
    assert out == cube_io.export_plaintext(store, "u", CUBE)
    store.close()
