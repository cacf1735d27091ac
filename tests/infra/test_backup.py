"""Backups: online copy with a hash manifest, verified restore, refusal of tampered copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnemic import InvalidInput, Memory, load_settings
from mnemic.sdk import restore_backup


def test_backup_then_restore_brings_back_exactly_the_copy(tmp_path: Path, embedder) -> None:
    settings = load_settings(home=tmp_path / "home")
    with Memory(settings, embedder=embedder) as mem:
        (kept,) = mem.add("the spare key is under the blue pot", user_id="ana")
        assert mem.search("spare key", user_id="ana")[0].item.id == kept.id  # index built
        manifest = mem.backup(tmp_path / "bk")
        mem.add("written after the backup", user_id="ana")
    assert manifest["items"] == 1 and len(manifest["files"]["mnemic.db"]) == 64

    with pytest.raises(InvalidInput, match="force"):
        restore_backup(tmp_path / "bk", settings)
    restore_backup(tmp_path / "bk", settings, force=True)
    with Memory(settings, embedder=embedder) as mem:
        assert [i.text for i in mem.get_all(user_id="ana")] == [kept.text]
        # the vector index follows the restored rows, not the stale snapshot
        hits = mem.search("written after the backup", user_id="ana")
        assert [h.item.id for h in hits] == [kept.id]
        assert mem.history(kept.id, user_id="ana")[0].action == "add"


def test_tampered_or_foreign_backups_are_refused(tmp_path: Path, embedder) -> None:
    settings = load_settings(home=tmp_path / "home")
    with Memory(settings, embedder=embedder) as mem:
        mem.add("a", user_id="ana")
        mem.backup(tmp_path / "bk")
        with pytest.raises(InvalidInput, match="not empty"):
            mem.backup(tmp_path / "bk")
    db = tmp_path / "bk" / "mnemic.db"
    with db.open("r+b") as f:
        f.seek(200)
        f.write(b"\x00garbage")
    with pytest.raises(InvalidInput, match="hash"):
        restore_backup(tmp_path / "bk", settings, force=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "zip"}))
    with pytest.raises(InvalidInput, match="not a mnemic-sqlite-backup"):
        restore_backup(tmp_path / "other", settings, force=True)
    with Memory(settings, embedder=embedder) as mem:  # nothing was replaced
        assert [i.text for i in mem.get_all(user_id="ana")] == ["a"]


def test_cli_backup_and_restore(tmp_path: Path) -> None:
    env = {**os.environ, "MNEMIC_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mnemic.interface.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    assert run("add", "remember the milk", "--user", "ana").returncode == 0
    out = run("backup", str(tmp_path / "bk"))
    assert out.returncode == 0 and "backed up 1 items" in out.stdout, out.stderr
    refused = run("restore", str(tmp_path / "bk"))
    assert refused.returncode == 2 and "force" in refused.stderr
    out = run("restore", str(tmp_path / "bk"), "--force")
    assert out.returncode == 0 and "restored 1 items" in out.stdout, out.stderr
