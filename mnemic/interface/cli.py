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


def _memory(home: Path | None, config: Path | None, *, long_lived: bool = False) -> Any:
    from mnemic.config import load_settings
    from mnemic.sdk import Memory

    # a command is a short-lived process: add's background jobs are journaled and run by
    # the next command that needs them (search, add --wait), never cut off at exit; and a
    # working memory would die with it, so the scheduler does not preload (mnemic serve and
    # mnemic mcp keep theirs)
    overrides: dict[str, Any] = {"home": home} if home is not None else {}
    settings = load_settings(config, **overrides)
    if not long_lived:
        settings = settings.model_copy(
            update={"scheduler": settings.scheduler.model_copy(update={"enabled": False})}
        )
    return Memory(settings, background=False)


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
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Also embed and extract memories now, instead of at the next search."
        ),
    ] = False,
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
            payload, user_id=user, cube_id=cube, session_id=session, timestamp=timestamp, wait=wait
        )
    if as_json:
        _dump([i.model_dump(mode="json") for i in items])
    else:
        for item in items:
            console.print(f"[green]added[/green] {item.id}  {item.text[:80]}")


@app.command("add-document")
def add_document(
    file: Annotated[Path, typer.Argument(help="A plain-text or Markdown file.")],
    user: UserOpt = "default",
    cube: CubeOpt = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="text or markdown (default: by extension).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Also extract memories now.")] = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remember a document, chunked along its headings and paragraphs."""
    try:
        body = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MnemicError(f"cannot read {file}: {exc}") from exc
    kind = fmt or ("markdown" if file.suffix.lower() in (".md", ".markdown") else "text")
    with _memory(home, config) as mem:
        items = mem.add_document(
            body, user_id=user, cube_id=cube, title=file.name, format=kind, wait=wait
        )
    if as_json:
        _dump([i.model_dump(mode="json") for i in items])
    else:
        console.print(f"[green]added[/green] {len(items)} chunks of {file.name}")


@app.command()
def expire(
    user: UserOpt = "default",
    cube: CubeOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Archive what the lifecycle policy says is due (TTL, unused for too long)."""
    with _memory(home, config) as mem:
        _dump(mem.expire(user_id=user, cube_id=cube))


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
def tree(
    user: UserOpt = "default",
    cube: CubeOpt = None,
    items: Annotated[
        int, typer.Option(help="Items shown under each topic (0: titles and summaries only).")
    ] = 5,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the memory tree: the cube, its topics with their summaries, their memories."""
    from rich.markup import escape
    from rich.tree import Tree

    with _memory(home, config) as mem:
        view = mem.tree(user_id=user, cube_id=cube, items_per_topic=None if as_json else items)
    if as_json:
        _dump(view.model_dump(mode="json"))
        return
    root = Tree(
        f"[bold]{escape(view.cube_id)}[/bold] ({view.user_id}): {len(view.topics)} topics"
        + (f", {view.unplaced} memories not placed yet" if view.unplaced else "")
    )
    for topic in view.topics:
        node = root.add(
            f"[cyan]{escape(topic.title)}[/cyan] ({topic.size}) [dim]{topic.id[:8]}[/dim]\n"
            f"[dim]{escape(topic.summary[:200])}[/dim]"
        )
        for item in topic.items:
            who = f"{item.speaker}: " if item.speaker else ""
            node.add(f"{item.id[:8]}  {escape(who + item.text[:90])}")
        if 0 < len(topic.items) < topic.size:
            node.add(f"[dim]... {topic.size - len(topic.items)} more[/dim]")
    console.print(root)


@app.command()
def reorganize(
    user: UserOpt = "default",
    cube: CubeOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Organize the cube now: place new memories in the tree, merge near-duplicates, split
    and merge topics, rewrite changed summaries, update the graph (one transaction)."""
    with _memory(home, config) as mem:
        report = mem.reorganize(user_id=user, cube_id=cube)
    if as_json:
        _dump(report)
        return
    changes = ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in report.items() if v and k != "items"
    )
    console.print(f"[green]organized[/green] {report['items']} memories: {changes or 'no change'}")


@app.command()
def links(
    item_id: str,
    user: UserOpt = "default",
    cube: CubeOpt = None,
    kind: Annotated[
        list[str] | None, typer.Option(help="Only edges of this kind (repeatable).")
    ] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The memories linked to one in the graph (same entity, before/after, session...)."""
    with _memory(home, config) as mem:
        found = mem.neighbors(item_id, user_id=user, cube_id=cube, kinds=kind)
    if as_json:
        _dump([link.model_dump(mode="json") for link in found])
        return
    table = Table("kind", "dir", "id", "text")
    for link in found:
        table.add_row(link.kind, link.direction, link.item.id[:8], link.item.text[:80])
    console.print(table)


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


@app.command()
def chat(
    query: Annotated[str, typer.Argument(help="Your message.")],
    user: UserOpt = "default",
    cube: CubeOpt = None,
    session: Annotated[str | None, typer.Option(help="Conversation id (keeps context).")] = None,
    budget: Annotated[int, typer.Option("--budget", help="Tokens of memories to use.")] = 1000,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask with memory: retrieved memories + the configured LLM; the turns are remembered."""
    with _memory(home, config) as mem:
        reply = mem.chat(query, user_id=user, session_id=session, cube_id=cube, token_budget=budget)
    if as_json:
        _dump(reply.model_dump(mode="json"))
    else:
        console.print(reply.answer, markup=False, highlight=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8750).")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the REST API (OpenAPI at /docs). The admin key: MNEMIC_ADMIN_KEY or generated."""
    from mnemic.config import load_settings
    from mnemic.interface.rest.server import serve as run

    overrides: dict[str, Any] = {"home": home} if home is not None else {}
    run(load_settings(config, **overrides), host=host, port=port, announce=console.print)


@app.command()
def mcp(
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Whose memory (default: server.mcp_user).")
    ] = None,
    transport: Annotated[str, typer.Option(help="stdio (default) or http.")] = "stdio",
    host: Annotated[str, typer.Option(help="http: interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="http: port (path /mcp).")] = 8751,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Serve mnemic as an MCP server (tools: add/search/get/delete memory, list cubes)."""
    from mnemic.interface.mcp_server import run

    if transport not in ("stdio", "http"):
        raise MnemicError(f"--transport must be stdio or http, not {transport!r}")
    with _memory(home, config, long_lived=True) as mem:
        who = user or mem.settings.server.mcp_user
        if transport == "http":
            err.print(f"mnemic MCP for user {who!r} on http://{host}:{port}/mcp")
        run(mem, who, transport="http" if transport == "http" else "stdio", host=host, port=port)


@app.command("migrate-store")
def migrate_store(
    src: Annotated[str, typer.Argument(help="Source store: a SQLite file or a PostgreSQL DSN.")],
    dst: Annotated[str, typer.Argument(help="Destination: a SQLite file or a PostgreSQL DSN.")],
    force: Annotated[
        bool, typer.Option(help="Copy into a store that already holds other users' memories.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Copy every cube, item, vector and history row to another store; counts and hashes
    are checked on the destination. Stop writers to the source first for an exact copy."""
    from mnemic.infra.store.copy import migrate

    report = migrate(src, dst, force=force)
    if json_out:
        _dump(report.as_dict())
        return
    console.print(
        f"[green]copied[/green] {report.items} items, {report.history} history rows, "
        f"{report.cubes} cubes in {len(report.scopes)} scopes from {report.source} to "
        f"{report.destination}; counts and sha256 of every scope match"
    )


# ------------------------------------------------------------------ MemCube files

cube_app = typer.Typer(help="A cube as files: dump it, load it elsewhere, compose two cubes.")
app.add_typer(cube_app, name="cube")


@cube_app.command("dump")
def cube_dump(
    dest: Annotated[Path, typer.Argument(help="A new folder, or an archive name ending .tar.")],
    user: UserOpt = "default",
    cube: CubeOpt = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write one of your cubes (items, vectors, history, KV caches, adapters) to files,
    atomically and byte-reproducibly."""
    with _memory(home, config) as mem:
        doc = mem.dump_cube(dest, user_id=user, cube_id=cube)
    if json_out:
        _dump(doc)
        return
    console.print(
        f"[green]dumped[/green] cube {doc['cube']['cube_id']} to {dest} "
        f"({len(doc['files'])} files, embedder {doc['cube']['embedder']})"
    )


@cube_app.command("load")
def cube_load(
    src: Annotated[Path, typer.Argument(help="A dumped cube: folder or .tar archive.")],
    user: UserOpt = "default",
    cube: Annotated[
        str | None, typer.Option("--cube", "-c", help="Cube id here (default: the cube's own).")
    ] = None,
    reembed: Annotated[
        bool, typer.Option(help="Re-embed every item if the cube has another embedder.")
    ] = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Load a dumped cube as one of your cubes, all or nothing, after checking its hashes."""
    with _memory(home, config) as mem:
        report = mem.load_cube(src, user_id=user, cube_id=cube, reembed=reembed)
    if json_out:
        _dump(report)
        return
    how = (
        f"re-embedded with {report['embedder']} (was {report['from_embedder']})"
        if report["reembedded"]
        else f"{report['vectors_stored']} stored vectors kept"
    )
    console.print(
        f"[green]loaded[/green] cube {report['cube_id']}: {report['items']} items, "
        f"{report['history']} history rows, {len(report['files'])} files; {how}"
    )


@cube_app.command("compose")
def cube_compose(
    source: Annotated[str, typer.Argument(help="The cube to merge in (yours or shared).")],
    into: Annotated[
        str | None, typer.Option("--into", help="The cube merged into (default: your own).")
    ] = None,
    user: UserOpt = "default",
    home: HomeOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge a cube into another: duplicates collapse (provenance kept), the rest is copied,
    adapters come along, KV caches of changed items are invalidated."""
    with _memory(home, config) as mem:
        report = mem.compose_cubes(source, user_id=user, into_cube=into)
    if json_out:
        _dump(report)
        return
    console.print(
        f"[green]composed[/green] {report['from_cube']} into {report['cube_id']}: "
        f"{report['carried']} copied, {report['collapsed']} duplicates collapsed, "
        f"{len(report['adapters'])} adapters carried, "
        f"{report['invalidated_caches']} KV caches invalidated"
    )


def _default_locomo() -> Path:
    from mnemic.bench.locomo import DEFAULT_PATH

    here = Path("../shared/bench/locomo")
    return here if here.is_dir() else DEFAULT_PATH


@bench_app.command("add")
def bench_add(
    path: Annotated[
        Path | None,
        typer.Argument(help="A folder of LoCoMo .json files (default ../shared/bench/locomo)."),
    ] = None,
    turns: Annotated[int, typer.Option(help="Turns in the conversation.")] = 600,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Seconds to add one long conversation: CLI with and without --wait, SDK likewise."""
    from mnemic.bench import ingest

    report = ingest.run(path or _default_locomo(), turns)
    table = Table(title=f"add of a {turns}-turn conversation (seconds)")
    for key in report:
        table.add_column(key)
    table.add_row(*(str(v) for v in report.values()))
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        console.print(f"wrote {json_out}")


@bench_app.command("serve")
def bench_serve(
    requests: Annotated[int, typer.Option(help="Total requests.")] = 2000,
    clients: Annotated[int, typer.Option(help="Concurrent clients (one user each).")] = 8,
    add_share: Annotated[float, typer.Option(help="Share of adds; the rest search.")] = 0.5,
    url: Annotated[
        str | None, typer.Option(help="A running server (default: start one, temporary home).")
    ] = None,
    admin_key: Annotated[
        str | None, typer.Option(envvar="MNEMIC_ADMIN_KEY", help="With --url: its admin key.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Load the REST API: mixed adds and searches from concurrent clients on loopback."""
    from mnemic.bench import serve as bench

    report = bench.run(
        requests=requests, clients=clients, add_share=add_share, url=url, admin_key=admin_key
    )
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2))
    table = Table("op", "requests", "p50 ms", "p95 ms", "max ms")
    for op, row in report["ops"].items():
        ms = [f"{row[k]:.1f}" for k in ("p50_ms", "p95_ms", "max_ms")]
        table.add_row(op, str(row["n"]), *ms)
    console.print(table)
    console.print(
        f"{report['clients']} clients, {report['wall_s']:.1f} s, "
        f"{report['throughput_rps']:.0f} req/s, errors {report['errors']}, "
        f"acknowledged items {report['acknowledged_items']}, lost writes {report['lost_writes']}"
    )
    for sample in report["error_samples"]:
        err.print(sample)
    if report["errors"] or report["lost_writes"]:
        raise SystemExit(1)


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
    holdout: Annotated[
        str | None,
        typer.Option(
            help="Conversations reported apart as never tuned on, comma-separated "
            "(default: 43,44, the two held out while tuning; '' for none)."
        ),
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
            holdout=locomo.HOLDOUT
            if holdout is None
            else [s.strip() for s in holdout.split(",") if s.strip()],
        )
    print_locomo(report)
    if "holdout" in report:
        print_holdout(report)
    if ablate:
        print_ablation(report)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")


@bench_app.command("scheduler")
def bench_scheduler(
    path: Annotated[
        Path | None,
        typer.Argument(help="A folder of LoCoMo .json files (default ../shared/bench/locomo)."),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    sizes: Annotated[str, typer.Option(help="Working-memory sizes, comma-separated.")] = "10,20,50",
    config: ConfigOpt = None,
) -> None:
    """Working-memory hit rate per policy (none, recency, next-scene prediction) on LoCoMo."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from mnemic.bench import scheduler as bench
    from mnemic.bench.locomo import load_conversations
    from mnemic.config import load_settings
    from mnemic.infra.embed import get_embedder

    path = path or _default_locomo()
    if not path.exists():
        raise MnemicError(f"{path} does not exist; pass the folder of LoCoMo .json files")
    try:
        capacities = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError as exc:
        raise MnemicError(f"--sizes takes integers like 10,20,50, not {sizes!r}") from exc
    settings = load_settings(config)
    conversations = load_conversations(path)
    total = sum(len(qs) for c in conversations for qs in bench.schedule(c).values())
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("replay and ask", total=total)
        report = bench.run(
            conversations,
            get_embedder(settings.embedder),
            sizes=capacities,
            config=settings.scheduler,
            progress=lambda _what, n: bar.advance(task, n),
        )
    table = Table(title="Working memory: share of a question's evidence held before search")
    for column in ("policy", "W", "hit rate", "all held", *bench.CATEGORIES_ORDER):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for row in report["rows"]:
        table.add_row(
            row["policy"],
            str(row["capacity"]),
            f"{row['hit_rate']:.3f}",
            f"{row['all_evidence_held']:.3f}",
            *(f"{row['by_category'].get(c, 0.0):.3f}" for c in bench.CATEGORIES_ORDER),
        )
    console.print(table)
    ratio = bench.ratio(report, 20)
    console.print(
        f"prediction / recency at W=20: {ratio}x · working-memory lookup p50 "
        f"{report['lookup_us_p50']} µs, p95 {report['lookup_us_p95']} µs · preload p50 "
        f"{report['preload_ms_p50']} ms · store search p50 {report['search_ms_p50']} ms"
    )
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


@bench_app.command("scale")
def bench_scale(
    store: Annotated[str, typer.Option(help="sqlite, postgres, or both (comma)")] = "sqlite",
    n: Annotated[str, typer.Option("--n", help="Comma-separated sizes.")] = "10000,100000",
    dim: Annotated[int, typer.Option(help="Vector dimensions.")] = 384,
    queries: Annotated[int, typer.Option(help="Timed queries per size.")] = 100,
    dsn: Annotated[
        str | None,
        typer.Option(help="PostgreSQL server that may create databases (default: pgserver)."),
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="Folder for SQLite files.")] = None,
    defer_index: Annotated[
        bool, typer.Option(help="postgres: build the HNSW index after the load (bulk import).")
    ] = False,
    embedder: Annotated[
        bool,
        typer.Option(
            "--embedder",
            help="Embed template sentences with the configured embedder instead of synthetic "
            "vectors (~146 texts/s with the default: 100k items take ~12 min to embed).",
        ),
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the rows here.")] = None,
) -> None:
    """Add throughput, search p50/p95, index build, disk and ANN recall@10 as a store grows."""
    from mnemic.bench import scale

    model = None
    if embedder:
        from mnemic.config import load_settings
        from mnemic.infra.embed import get_embedder

        model = get_embedder(load_settings().embedder)

    backends = [s.strip() for s in store.split(",") if s.strip()]
    if not backends or set(backends) - {"sqlite", "postgres"}:
        raise MnemicError(f"--store takes sqlite, postgres or both, not {store!r}")
    sizes = [int(x.replace("_", "")) for x in n.split(",") if x.strip()]
    columns = (
        ("store", "store"), ("n", "n"), ("add_items_per_s", "add/s"),
        ("index_build_s", "build s"), ("vector_p50_ms", "vec p50"), ("vector_p95_ms", "vec p95"),
        ("recall_at_10", "recall@10"), ("fulltext_p50_ms", "fts p50"),
        ("fulltext_p95_ms", "fts p95"), ("disk_mb", "disk MB"), ("add_mode", "HNSW in add"),
        ("vectors", "vectors"),
    )  # fmt: skip

    def show(row: Any) -> None:
        err.print("  ".join(f"{label} {getattr(row, key)}" for key, label in columns))

    rows = scale.run(
        backends,
        sizes,
        dim=dim,
        queries=queries,
        dsn=dsn,
        workdir=workdir,
        defer_index=defer_index,
        embedder=model,
        log=lambda msg: err.print(f"[dim]{msg}[/dim]"),
        on_row=show,
    )
    items = "template sentences, embedded" if embedder else "synthetic items, precomputed vectors"
    table = Table(title=f"Store at scale (one scope; {items})")
    for _, label in columns:
        table.add_column(label, justify="left" if label == "store" else "right")
    for row in rows:
        table.add_row(*(str(row[key]) for key, _ in columns))
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=2))
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
    strata = report.get("evidence_turns", {})
    if strata:
        by_evidence = Table(title="recall_all by evidence turns per question (mnemic / bm25)")
        for column in ("evidence turns", "questions", "all@10", "all@1kt", "all@2kt"):
            by_evidence.add_column(column, justify="right")
        base = report["baseline_bm25"].get("evidence_turns", {})
        for name, values in strata.items():
            other = base.get(name, {})
            by_evidence.add_row(
                name,
                str(values["questions"]),
                *[
                    f"{values[k]:.3f} / {other[k]:.3f}" if k in other else f"{values[k]:.3f}"
                    for k in ("recall_all@10", "recall_all@1000tok", "recall_all@2000tok")
                ],
            )
        console.print(by_evidence)
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


def print_holdout(report: dict[str, Any]) -> None:
    ours, base = report["holdout"], report["baseline_bm25"].get("holdout", {})
    keys = [k for k in ours["dev"] if k != "questions"]
    names = ", ".join(ours["held_out_conversations"])
    table = Table(title=f"recall_all, dev against held-out conversations ({names})")
    table.add_column("run")
    table.add_column("questions", justify="right")
    for key in keys:
        table.add_column(key.removeprefix("recall_all@").replace("tok", " tok"), justify="right")
    for label, data in (("mnemic", ours), ("bm25", base)):
        if not data:
            continue
        for row, values in (("dev", data["dev"]), ("held-out", data["held_out"])):
            table.add_row(
                f"{label} {row}", str(values["questions"]), *[f"{values[k]:.3f}" for k in keys]
            )
        table.add_row(
            f"{label} gap, points ± 1 s.e.",
            "",
            *[f"{data['gap_points'][k]:.1f} ± {data['gap_se_points'][k]:.1f}" for k in keys],
        )
        by_conversation = data.get("gap_se_conversations_points", {})
        if any(v is not None for v in by_conversation.values()):
            table.add_row(
                f"{label} gap's s.e., conversations",
                "",
                *[f"± {by_conversation[k]:.1f}" for k in keys],
            )
        table.add_row(
            f"{label} held-out at dev's rates",
            "",
            *[f"{data['held_out_at_dev_rates'][k]:.3f}" for k in keys],
        )
        table.add_section()
    console.print(table)
    console.print(
        "held-out at dev's rates: each held-out question found as often as dev questions with "
        "as many evidence turns; dev minus it is the gap the mix of questions makes. The gap's "
        "s.e. takes questions as the units sampled; the conversations' s.e. takes each "
        "conversation as one, and says how much the gap would move with others held out"
    )


def print_ablation(report: dict[str, Any]) -> None:
    table = Table(title="Ablation: each row searches the same store with another recipe")
    columns = ("variant", "all@10", "all@500t", "all@1kt", "all@2kt", "multi@10", "multi@1kt")
    for column in (*columns, "p50 ms"):
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
            *(
                f"{row[k]:.3f}" if row.get(k) is not None else ""
                for k in ("multi-hop@10", "multi-hop@1000tok")
            ),
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
