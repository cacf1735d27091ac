"""The ``mnemic`` command: a thin layer over :class:`mnemic.Memory`; every command calls the SDK."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mnemic.errors import MnemicError

app = typer.Typer(
    help="mnemic: a memory operating system for LLM agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print a table and can write JSON.")
app.add_typer(bench_app, name="bench")

console = Console(width=max(Console().width, 110))
err = Console(stderr=True)

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="MNEMIC_HOME",
        help="Data directory (default: MNEMIC_HOME, else the user data directory).",
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="A TOML config file (default: MNEMIC_CONFIG).")
]
UserOpt = Annotated[str, typer.Option("--user", "-u", help="Whose memory.")]
CubeOpt = Annotated[
    str | None, typer.Option("--cube", "-c", help="Cube id (default: the user's own cube).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _memory(home: Path | None, config: Path | None) -> Any:
    from mnemic.sdk import Memory

    return Memory(home=home, config_file=config)


def _dump(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


@app.command()
def add(
    text: Annotated[
        str | None, typer.Argument(help="Text to remember; '-' or nothing reads stdin.")
    ] = None,
    user: UserOpt = "default",
    cube: CubeOpt = None,
    session: Annotated[str | None, typer.Option(help="Session id.")] = None,
    speaker: Annotated[str | None, typer.Option(help="Who said it.")] = None,
    timestamp: Annotated[
        str | None, typer.Option(help="When it happened (ISO 8601); default now.")
    ] = None,
    messages: Annotated[
        Path | None,
        typer.Option(help="A JSON file holding a list of messages ({role|speaker, content})."),
    ] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remember a text, or a conversation from a JSON file of messages."""
    payload: Any
    if messages is not None:
        try:
            payload = json.loads(messages.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MnemicError(f"cannot read messages from {messages}: {exc}") from exc
    else:
        body = sys.stdin.read() if text in (None, "-") else text
        payload = {"content": body, "speaker": speaker} if speaker else body
    with _memory(home, config) as mem:
        items = mem.add(
            payload, user_id=user, cube_id=cube, session_id=session, timestamp=timestamp
        )
    if as_json:
        _dump([i.model_dump(mode="json") for i in items])
    else:
        for item in items:
            console.print(f"[green]added[/green] {item.id}  {item.text[:80]}")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    user: UserOpt = "default",
    cube: CubeOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="How many items.")] = 10,
    budget: Annotated[
        int | None, typer.Option("--budget", help="Pack the results into this many tokens.")
    ] = None,
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a user's memory; each hit says which stages found it."""
    filters = {"session_id": session} if session else None
    with _memory(home, config) as mem:
        hits = mem.search(
            query, user_id=user, cube_id=cube, top_k=top_k, filters=filters, token_budget=budget
        )
    if as_json:
        _dump([h.model_dump(mode="json") for h in hits])
        return
    table = Table("score", "when", "who", "text", "why", show_lines=False)
    for h in hits:
        when = h.item.valid_from.strftime("%Y-%m-%d") if h.item.valid_from else ""
        table.add_row(f"{h.score:.4f}", when, h.item.speaker or "", h.item.text, h.why)
    console.print(table)


@app.command()
def show(
    item_id: str,
    user: UserOpt = "default",
    cube: CubeOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print one memory with all its metadata."""
    with _memory(home, config) as mem:
        _dump(mem.get(item_id, user_id=user, cube_id=cube).model_dump(mode="json"))


@app.command()
def history(
    item_id: str,
    user: UserOpt = "default",
    cube: CubeOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every change to a memory: who, when, what it was before and after."""
    with _memory(home, config) as mem:
        entries = mem.history(item_id, user_id=user, cube_id=cube)
    if as_json:
        _dump([e.model_dump(mode="json") for e in entries])
        return
    table = Table("when", "action", "actor", "version", "text", "reason")
    for e in entries:
        after = e.after or {}
        table.add_row(
            e.at.isoformat(timespec="seconds"),
            e.action,
            e.actor,
            str(after.get("version", "")),
            str(after.get("text", ""))[:80],
            e.reason or "",
        )
    console.print(table)


@app.command("list")
def list_items(
    user: UserOpt = "default",
    cube: CubeOpt = None,
    limit: int = 50,
    offset: int = 0,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a user's active memories, oldest first."""
    with _memory(home, config) as mem:
        items = mem.get_all(user_id=user, cube_id=cube, limit=limit, offset=offset)
    if as_json:
        _dump([i.model_dump(mode="json") for i in items])
        return
    table = Table("id", "when", "who", "text")
    for i in items:
        when = i.valid_from.strftime("%Y-%m-%d") if i.valid_from else ""
        table.add_row(i.id, when, i.speaker or "", i.text)
    console.print(table)


@app.command()
def update(
    item_id: str,
    text: Annotated[str, typer.Argument(help="The new text.")],
    user: UserOpt = "default",
    cube: CubeOpt = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the history.")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Replace a memory's text; the old version stays in its history."""
    with _memory(home, config) as mem:
        item = mem.update(item_id, user_id=user, cube_id=cube, text=text, reason=reason)
    console.print(f"[green]updated[/green] {item.id} to version {item.version}")


@app.command()
def delete(
    item_id: str,
    user: UserOpt = "default",
    cube: CubeOpt = None,
    purge: Annotated[
        bool, typer.Option(help="Erase it for good instead of marking it deleted.")
    ] = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete a memory (a status change kept in history), or purge it."""
    with _memory(home, config) as mem:
        mem.delete(item_id, user_id=user, cube_id=cube, purge=purge)
    console.print(f"[yellow]{'purged' if purge else 'deleted'}[/yellow] {item_id}")


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="A new folder for the backup.")],
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Copy the whole store, online (writers may go on), with a manifest of hashes."""
    with _memory(home, config) as mem:
        manifest = mem.backup(dest)
    console.print(
        f"[green]backed up[/green] {manifest['items']} items to {dest} "
        f"(sha256 {manifest['files']['mnemic.db'][:12]}...)"
    )


@app.command()
def restore(
    src: Annotated[Path, typer.Argument(help="A folder made by `mnemic backup`.")],
    force: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Put a verified backup in place of the store. Stop every process using it first."""
    from mnemic.config import load_settings
    from mnemic.sdk import restore_backup

    overrides: dict[str, Any] = {"home": home} if home is not None else {}
    manifest = restore_backup(src, load_settings(config, **overrides), force=force)
    console.print(f"[green]restored[/green] {manifest['items']} items from {src}")


def _default_locomo() -> Path:
    from mnemic.bench.locomo import DEFAULT_PATH

    here = Path("../shared/bench/locomo")
    return here if here.is_dir() else DEFAULT_PATH


@bench_app.command("locomo")
def bench_locomo(
    path: Annotated[
        Path | None,
        typer.Argument(help="A folder of LoCoMo .json files (default ../shared/bench/locomo)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    ablate: Annotated[
        bool, typer.Option("--ablate", help="Also one row per recipe variant (stage on/off).")
    ] = False,
    stages: Annotated[
        str | None,
        typer.Option(help="Retrieval recipe, comma-separated (default: the configured one)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Retrieval recall on LoCoMo against a BM25 baseline, latency and ingest speed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from mnemic.bench import locomo
    from mnemic.config import load_settings

    path = path or _default_locomo()
    if not path.exists():
        raise MnemicError(f"{path} does not exist; pass the folder of LoCoMo .json files")
    turns, questions = locomo.total_work(path)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks = {
            "ingest": bar.add_task("ingest turns", total=turns),
            "search": bar.add_task("search questions", total=questions),
        }
        report = locomo.run(
            path,
            load_settings(config),
            progress=lambda what, n: bar.advance(tasks[what], n),
            ablate=ablate,
            stages=[s.strip() for s in stages.split(",") if s.strip()] if stages else None,
        )
    print_locomo(report)
    if ablate:
        print_ablation(report)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")


@bench_app.command("activation")
def bench_activation(
    shape: Annotated[
        str, typer.Option(help="Model shape, random weights: qwen2.5-0.5b, smollm2-360m, tiny.")
    ] = "qwen2.5-0.5b",
    tokens: Annotated[
        str, typer.Option(help="Memory sizes in tokens, comma-separated.")
    ] = "1024,2048,4096",
    repeats: Annotated[int, typer.Option(help="Timed runs per measurement (fastest).")] = 3,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Time to first token with memory as prompt text vs as a loaded KV cache (extra hf)."""
    from mnemic.bench import activation

    try:
        sizes = tuple(int(t) for t in tokens.split(",") if t.strip())
    except ValueError as exc:
        raise MnemicError(f"--tokens takes integers separated by commas, not {tokens!r}") from exc
    report = activation.run(
        shape=shape,
        sizes=sizes,
        repeats=repeats,
        threads=threads,
        progress=lambda msg: err.print(f"[dim]{msg}[/dim]"),
    )
    m = report["model"]
    table = Table(
        title=f"Time to first token, {m['shape']} shape ({m['parameters'] / 1e6:.0f}M params, "
        f"random weights, {m['dtype']}), CPU x{report['threads']} threads, fastest of {repeats}"
    )
    for column in (
        "memory tokens",
        "question tokens",
        "as prompt text",
        "as KV cache",
        "of which load",
        "cut",
        "CPU s text / cache",
        "cut in CPU",
        "cache on disk",
        "compile once",
        "same tokens",
    ):
        table.add_column(column, justify="right")
    for r in report["rows"]:
        table.add_row(
            str(r["memory_tokens"]),
            str(r["question_tokens"]),
            f"{r['ttft_text_ms']:.0f} ms",
            f"{r['ttft_cache_ms']:.0f} ms",
            f"{r['cache_load_ms']:.0f} ms",
            f"{r['cut']:.1%}",
            f"{r['cpu_text_s']:.1f} / {r['cpu_cache_s']:.1f}",
            f"{r['cut_cpu']:.1%}",
            f"{r['cache_mb']:.1f} MB",
            f"{r['compile_s']:.1f} s",
            "yes" if r["same_tokens"] else "NO",
        )
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")


def print_locomo(report: dict[str, Any]) -> None:
    columns = {
        "recall_all@5": "all@5",
        "recall_all@10": "all@10",
        "recall_all@20": "all@20",
        "recall_any@10": "any@10",
        "recall_all@500tok": "all@500t",
        "recall_all@1000tok": "all@1kt",
        "recall_all@2000tok": "all@2kt",
        "context_tokens@10": "tok@10",
    }
    table = Table(title="LoCoMo retrieval, categories 1-4 (recall_all/any at k items or t tokens)")
    table.add_column("run")
    table.add_column("category")
    for label in columns.values():
        table.add_column(label, justify="right")
    for run, label in (("mnemic", "mnemic"), ("baseline_bm25", "bm25")):
        data = report if run == "mnemic" else report[run]
        rows = [("overall", data["overall"]), *data["categories"].items()]
        for scope, values in rows:
            table.add_row(
                label,
                scope,
                *[
                    f"{values[k]:.0f}" if k.startswith("context") else f"{values[k]:.3f}"
                    for k in columns
                ],
            )
        table.add_section()
    console.print(table)
    o, b = report["overall"], report["baseline_bm25"]["overall"]
    console.print(
        f"recall_all@10 {o['recall_all@10']:.3f} vs bm25 {b['recall_all@10']:.3f} "
        f"(x{o['recall_all@10'] / max(b['recall_all@10'], 1e-9):.2f}) · "
        f"recall_all@1000tok {o['recall_all@1000tok']:.3f} vs {b['recall_all@1000tok']:.3f}\n"
        f"search p50 {o['search_p50_ms']} ms, p95 {o['search_p95_ms']} ms · ingest "
        f"{o['ingest_items_per_s']} items/s, {o['ingest_share_outside_embedder']:.0%} of it "
        f"outside the embedder · {o['items']} items, {o['questions']} questions · "
        f"embedder {report['config']['embedder']}"
    )


def print_ablation(report: dict[str, Any]) -> None:
    table = Table(title="Ablation: each row searches the same store with another recipe")
    for column in ("variant", "all@10", "all@500t", "all@1kt", "all@2kt", "multi@1kt", "p50 ms"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, row in report["ablation"].items():
        table.add_row(
            name,
            *(
                f"{row[k]:.3f}"
                for k in (
                    "recall_all@10",
                    "recall_all@500tok",
                    "recall_all@1000tok",
                    "recall_all@2000tok",
                )
            ),
            f"{row['multi-hop@1000tok']:.3f}" if row["multi-hop@1000tok"] is not None else "",
            f"{row['search_p50_ms']:.1f}",
        )
    console.print(table)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except MnemicError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
