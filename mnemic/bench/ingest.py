"""How long ``add`` takes for one long conversation, as users meet it: ``mnemic add`` of an
N-turn conversation (a new process: start-up, store, journaled job, no waiting), then the
same with ``--wait`` (embedding, rule extraction and lifecycle decisions done before it
returns), and in-process ``Memory.add`` with and without ``wait``. Each run uses a fresh
home. The conversation is the first N turns of the LoCoMo files (sessions in order, each
with its date)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mnemic.bench.locomo import load_conversations


def conversation(path: Path, turns: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for conv in load_conversations(path):
        for _, when, session in conv.sessions:
            for t in session:
                out.append(
                    {
                        "speaker": t["speaker"],
                        "content": t["text"],
                        "id": t["id"],
                        "timestamp": when.isoformat(),
                    }
                )
    if len(out) < turns:
        raise ValueError(f"{path} holds {len(out)} turns, fewer than {turns}")
    return out[:turns]


def _cli(home: Path, messages: Path, *extra: str) -> float:
    env = {**os.environ, "MNEMIC_HOME": str(home)}
    env.pop("MNEMIC_CONFIG", None)
    t = time.perf_counter()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mnemic.interface.cli", "add", "--messages", str(messages)),
            *("--user", "bench", *extra),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"mnemic add failed: {done.stderr[-2000:]}")
    return took


def run(path: Path, turns: int = 600) -> dict[str, Any]:
    from mnemic.sdk import Memory

    messages = conversation(path, turns)
    report: dict[str, Any] = {"turns": turns}
    with tempfile.TemporaryDirectory(prefix="mnemic-bench-add-") as tmp:
        root = Path(tmp)
        file = root / "conversation.json"
        file.write_text(json.dumps(messages), encoding="utf-8")
        report["cli_add_s"] = round(_cli(root / "cli", file), 3)
        report["cli_add_wait_s"] = round(_cli(root / "cli-wait", file, "--wait"), 3)
        with Memory(home=root / "sdk") as mem:
            mem.embedder.embed(["warm up"])  # a server has its embedder loaded
            t = time.perf_counter()
            mem.add(messages, user_id="bench")
            report["sdk_add_s"] = round(time.perf_counter() - t, 3)
            mem.wait(user_id="bench")
            report["sdk_add_then_jobs_s"] = round(time.perf_counter() - t, 3)
        with Memory(home=root / "sdk-wait") as mem:
            mem.embedder.embed(["warm up"])
            t = time.perf_counter()
            mem.add(messages, user_id="bench", wait=True)
            report["sdk_add_wait_s"] = round(time.perf_counter() - t, 3)
            items = mem.get_all(user_id="bench", limit=10_000)
            report["items"] = len(items)
            report["derived"] = sum("derived" in i.tags for i in items)
    return report
