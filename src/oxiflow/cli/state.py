"""`oxiflow state ...`, `oxiflow runs`, `oxiflow worker ...`: the state store from the command line.

Only typer is imported at module level (fast --help); the store is imported inside the commands.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from oxiflow.cli import output
from oxiflow.cli.options import ConfigOpt, JsonOpt

if TYPE_CHECKING:
    from oxiflow.state.store import LockRow, StateStore

app = typer.Typer(
    help="The state store: runs, cursors, loads, locks (docs/state.md).", no_args_is_help=True, rich_markup_mode=None
)
runs_app = typer.Typer(help="Past runs with their figures.", invoke_without_command=True, rich_markup_mode=None)
worker_app = typer.Typer(help="Running `oxiflow run` processes.", no_args_is_help=True, rich_markup_mode=None)

StateUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--state-url",
        help="An SQLite path or a postgresql:// URL (default: $OXIFLOW_STATE_URL, the project's settings.state_url, "
        "or .oxiflow/state.db).",
    ),
]
PipelineArg = Annotated[str, typer.Argument(help="A pipeline name (metadata.name, or the file's stem).")]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
POLL = 0.1  # seconds between checks while `worker stop` waits for the run to end


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``12h``, ``30d``, ``2w`` -> seconds (the prototype's duration syntax)."""
    m = _DURATION.match(text)
    if not m:
        output.fail_usage(f"expected a duration like 30d, 12h, 15m or 30s, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


# -- opening the store ------------------------------------------------------------------------------


@contextmanager
def _store(
    state_url: str | None, config: Path | None, *, create: bool = False, missing_ok: bool = False
) -> Iterator[StateStore]:
    """The store the options point at; every StateError becomes `error: ...` and its exit code
    (``missing_ok``: StoreMissing passes through)."""
    from oxiflow.config.load import find_project, load_project
    from oxiflow.errors import ConfigError
    from oxiflow.state.store import StateError, StoreMissing, open_store, resolve_url

    try:
        project = load_project(config) if config else find_project()
    except ConfigError as exc:
        output.err(f"error: {exc}")
        raise typer.Exit(2) from None
    try:
        with open_store(resolve_url(state_url, project), create=create) as store:
            yield store
    except StateError as exc:
        if missing_ok and isinstance(exc, StoreMissing):
            raise
        output.err(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None


@contextmanager
def _store_or_empty(state_url: str | None, config: Path | None) -> Iterator[StateStore | None]:
    """Listings treat a store that does not exist yet as empty (``None``)."""
    from oxiflow.state.store import StoreMissing

    with ExitStack() as stack:
        try:
            store: StateStore | None = stack.enter_context(_store(state_url, config, missing_ok=True))
        except StoreMissing:
            store = None
        yield store


def _print_rows(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, header_style="bold")
    numeric = {c for c in columns if rows and all(isinstance(r.get(c), int | float) for r in rows)}
    for c in columns:
        table.add_column(c, justify="right" if c in numeric else "left", overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r.get(c), c) for c in columns))
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200, highlight=False).print(table)


def _cell(value: Any, key: str = "") -> str:
    if value is None:
        return ""
    if key in ("pid", "exit_code", "attempts"):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


# -- state ------------------------------------------------------------------------------------------


@app.command("list")
def state_list(state_url: StateUrlOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Pipelines the store knows: runs, the last run, cursors, pending loads.

    Example: oxiflow state list --json
    """
    with _store_or_empty(state_url, config) as store:
        rows = store.pipelines() if store is not None else []
    if json_out:
        output.print_json(rows)
    elif not rows:
        output.err("no pipelines in the state store yet")
    else:
        _print_rows(
            rows, ["pipeline", "runs", "last_run", "last_status", "last_started_at", "cursors", "pending_loads"]
        )


@app.command("show")
def state_show(
    pipeline: PipelineArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Last runs to show.")] = 10,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A pipeline's state: cursors, last runs, its lock, pending loads.

    Example: oxiflow state show orders_daily
    """
    from dataclasses import asdict

    from oxiflow.state.lock import holder_of, is_held

    with _store(state_url, config) as store:
        runs = store.runs(pipeline, limit=limit)
        cursors = [asdict(c) for c in store.cursors(pipeline)]
        loads = [asdict(ld) for ld in store.pending_loads(pipeline)]
        held = is_held(store, pipeline)
        holder = holder_of(store, pipeline) if held else None
        if not (runs or cursors or loads or held):
            known = [p["pipeline"] for p in store.pipelines()]
            import difflib

            match = difflib.get_close_matches(pipeline, known, n=1)
            hint = f"did you mean {match[0]!r}?" if match else "see `oxiflow state list`"
            output.err(f"error: the state store has nothing for pipeline {pipeline!r} ({hint})")
            raise typer.Exit(1)
    lock = {"held": held, **(asdict(holder) if holder else {})}
    doc = {"pipeline": pipeline, "lock": lock, "cursors": cursors, "pending_loads": loads, "runs": runs}
    if json_out:
        output.print_json(doc)
        return
    state = f"locked by run {holder.run_id} (pid {holder.pid} on {holder.host})" if holder else "not running"
    sys.stdout.write(f"pipeline {pipeline}: {state}\n")
    if cursors:
        _print_rows(cursors, ["step", "key", "value", "load_id", "updated_at"], "cursors")
    if loads:
        _print_rows(loads, ["load_id", "step", "target", "run_id", "created_at"], "pending loads")
    if runs:
        _print_rows(runs, _RUN_COLUMNS, "runs")


@app.command("cleanup")
def state_cleanup(
    older_than: Annotated[str, typer.Option("--older-than", help="Delete runs started longer ago: 30d, 12h.")] = "30d",
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Only this pipeline's runs.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Delete old finished runs and their step figures, and old settled loads (committed or rolled back;
    pending loads, the load each cursor names, cursors and schemas are kept).

    Example: oxiflow state cleanup --older-than 30d
    """
    from datetime import timedelta

    from oxiflow.state.store import iso_before

    before = iso_before(timedelta(seconds=parse_duration(older_than)))
    with _store(state_url, config) as store:
        n = store.delete_runs_before(before, pipeline, dry_run=dry_run)
        loads = store.delete_loads_before(before, pipeline, dry_run=dry_run)
    if json_out:
        output.print_json(
            {
                "deleted_runs": 0 if dry_run else n,
                "matching_runs": n,
                "deleted_loads": 0 if dry_run else loads,
                "matching_loads": loads,
                "before": before,
            }
        )
    else:
        verb = "would delete" if dry_run else "deleted"
        output.err(f"{verb} {n} run(s) and {loads} settled load(s) started before {before}")


@app.command("export")
def state_export(
    file: Annotated[str, typer.Argument(help="Where to write the JSON (- for stdout).")] = "-",
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Only this pipeline's rows.")] = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write the store (or one pipeline's part) as one JSON document.

    Example: oxiflow state export state.json
    """
    with _store(state_url, config) as store:
        doc = store.export(pipeline)
    text = json.dumps(doc, indent=2, default=str) + "\n"
    if file == "-":
        sys.stdout.write(text)
    else:
        Path(file).write_text(text, encoding="utf-8")
        output.err(f"exported {sum(len(v) for v in doc['tables'].values())} row(s) to {file}")


def _read_export(file: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        doc = json.loads(text)
    except OSError as exc:
        output.err(f"error: cannot read {file}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    except ValueError as exc:
        output.err(f"error: {file} is not JSON: {exc}")
        raise typer.Exit(1) from None
    return doc if isinstance(doc, dict) else {}


@app.command("import")
def state_import(
    file: Annotated[str, typer.Argument(help="A JSON file from `state export` (- for stdin).")],
    replace: Annotated[bool, typer.Option("--replace", help="Empty the store first (default: merge).")] = False,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Load a `state export` document: rows are upserted by key, in one transaction.

    Example: oxiflow state import state.json
    """
    doc = _read_export(file)
    with _store(state_url, config, create=True) as store:
        _refuse_while_running(store, "import")
        counts = store.import_(doc, replace=replace)
    output.err("imported " + ", ".join(f"{n} {table}" for table, n in counts.items()))


@app.command("validate")
def state_validate(state_url: StateUrlOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Check the store: the database's own integrity check, the schema version, dangling rows,
    stale locks and runs left 'running' by dead processes. Exit 1 when something is wrong.

    Example: oxiflow state validate
    """
    from oxiflow.state.store import SCHEMA_VERSION

    with _store(state_url, config) as store:
        problems = store.integrity_problems() + store.consistency_problems()
        stale_locks, crashed = _stale(store)
        problems += [f"stale lock of {r.pipeline} (run {r.run_id}, pid {r.pid} on {r.host})" for r in stale_locks]
        problems += [f"run {r['run_id']} of {r['pipeline']} is marked running but no process runs it" for r in crashed]
        doc = {
            "url": store.display_url,
            "backend": store.backend,
            "schema_version": store.schema_version(),
            "expected_schema_version": SCHEMA_VERSION,
            "valid": not problems,
            "problems": problems,
        }
    if json_out:
        output.print_json(doc)
    else:
        output.err(f"state store {doc['url']} ({doc['backend']}, schema version {doc['schema_version']})")
        for p in problems:
            output.err(f"  problem: {p}")
        if stale_locks or crashed:
            output.err("  `oxiflow state repair` fixes stale locks and runs left running")
        output.err("valid" if not problems else f"{len(problems)} problem(s)")
    raise typer.Exit(0 if not problems else 1)


@app.command("backup")
def state_backup(
    dest: Annotated[Path, typer.Argument(help="The backup file to write (SQLite: a database file; PostgreSQL: JSON).")],
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A consistent copy of the store, safe while runs are writing (SQLite backup API; PostgreSQL: export).

    Example: oxiflow state backup backups/state-2025-01-31.db
    """
    from oxiflow.state.store import SQLiteStore

    with _store(state_url, config) as store:
        if isinstance(store, SQLiteStore):
            if dest.resolve() == store.path.resolve():
                output.fail_usage("the backup file is the store itself")
            dest.unlink(missing_ok=True)
            store.backup_to(dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(store.export(), indent=2, default=str) + "\n", encoding="utf-8")
    output.err(f"backed up {store.display_url} to {dest}")


@app.command("restore")
def state_restore(
    src: Annotated[Path, typer.Argument(help="A file from `state backup` (an SQLite file, or JSON).")],
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Replace the store's content with a backup. Refused while a run holds a lock.

    Example: oxiflow state restore backups/state-2025-01-31.db
    """
    from oxiflow.state.store import SQLiteStore

    if not src.is_file():
        output.err(f"error: no backup file {src}")
        raise typer.Exit(1)
    with src.open("rb") as fh:
        is_sqlite = fh.read(16) == b"SQLite format 3\x00"
    with _store(state_url, config, create=True) as store:
        _refuse_while_running(store, "restore")
        if is_sqlite:
            if not isinstance(store, SQLiteStore):
                output.err("error: an SQLite backup restores into an SQLite store; export it to JSON for PostgreSQL")
                raise typer.Exit(1)
            store.restore_from(src)
        else:
            store.import_(_read_export(str(src)), replace=True)
    output.err(f"restored {store.display_url} from {src}")


@app.command("repair")
def state_repair(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be fixed; change nothing.")] = False,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove lock rows whose process is gone, and mark runs left 'running' by dead processes 'crashed'.

    Example: oxiflow state repair
    """
    with _store(state_url, config) as store:
        stale_locks, crashed = _stale(store)
        if not dry_run:
            for row in stale_locks:
                store.delete_lock_row(row.pipeline, row.run_id)
            for run in crashed:
                store.mark_run(run["run_id"], "crashed", f"its process (pid {run['pid']} on {run['host']}) ended")
        pending = [ld.load_id for ld in store.pending_loads()]
    doc = {
        "dry_run": dry_run,
        "removed_locks": [r.pipeline for r in stale_locks],
        "crashed_runs": [r["run_id"] for r in crashed],
        "pending_loads": pending,
    }
    if json_out:
        output.print_json(doc)
        return
    verb = "would " if dry_run else ""
    for row in stale_locks:
        output.err(f"{verb}remove the stale lock of {row.pipeline} (run {row.run_id}, pid {row.pid})")
    for run in crashed:
        output.err(f"{verb}mark run {run['run_id']} of {run['pipeline']} crashed")
    if pending:
        output.err(f"{len(pending)} load(s) still pending: the next run of their pipeline settles them")
    if not (stale_locks or crashed):
        output.err("nothing to repair")


@app.command("unlock")
def state_unlock(
    pipeline: PipelineArg,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Break a lock held by a process on another host (PostgreSQL: end its session; SQLite: "
            "replace the lock file). A live process on this machine is never unlocked: use `oxiflow worker stop`.",
        ),
    ] = False,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Release a pipeline's lock. A lock whose process died is released already (the kernel or the
    server drops it); this removes its row. A live holder is refused: stop it with `oxiflow worker stop`.
    --force breaks the lock of a holder on another host only (one that hangs there, or whose NFS lock
    outlived it); a live process on this machine is never unlocked, --force or not (two writers).

    Example: oxiflow state unlock orders_daily
    """
    from oxiflow.state.lock import LiveHolder, break_lock, holder_of, is_held

    with _store(state_url, config) as store:
        if is_held(store, pipeline):
            holder = holder_of(store, pipeline)
            who = f"run {holder.run_id}, pid {holder.pid} on {holder.host}" if holder else "another process"
            stop = f"stop it with `oxiflow worker stop {holder.run_id if holder else pipeline}`"
            if not force:
                output.err(f"error: pipeline {pipeline!r} is locked by a live run ({who})")
                output.err(f"{stop}, or --force if its host is gone")
                raise typer.Exit(1)
            try:
                done = break_lock(store, pipeline)
            except LiveHolder as exc:
                output.err(f"error: {exc.message}")
                output.err(f"{stop} (--force kills it); the lock goes with the process")
                raise typer.Exit(1) from None
            output.err(f"{done} ({who})")
        removed = store.delete_lock_row(pipeline)
    output.err(f"unlocked {pipeline}" if removed else f"{pipeline} was not locked")


def _stale(store: StateStore) -> tuple[list[LockRow], list[dict[str, Any]]]:
    """Lock rows whose lock is not held; 'running' runs whose lock is not held by them."""
    from oxiflow.state.lock import is_held

    held = {}
    rows = store.lock_rows()
    for row in rows:
        held[row.pipeline] = is_held(store, row.pipeline)
    stale_locks = [r for r in rows if not held[r.pipeline]]
    live_runs = {r.run_id for r in rows if held[r.pipeline]}
    crashed = [r for r in store.runs(status="running", limit=None) if r["run_id"] not in live_runs]
    return stale_locks, crashed


def _refuse_while_running(store: StateStore, what: str) -> None:
    from oxiflow.state.lock import is_held

    busy = [r.pipeline for r in store.lock_rows() if is_held(store, r.pipeline)]
    if busy:
        output.err(f"error: cannot {what} while runs are going ({', '.join(busy)}); see `oxiflow worker list`")
        raise typer.Exit(1)


# -- runs -------------------------------------------------------------------------------------------

_RUN_COLUMNS = [
    "run_id", "pipeline", "status", "started_at", "seconds", "rows_read", "rows_written", "rows_rejected",
    "rows_filtered", "error",
]  # fmt: skip
_STEP_COLUMNS = [
    "step_id", "oxi", "kind", "status", "rows_in", "rows_out", "rows_rejected", "rows_filtered", "bytes_in",
    "bytes_out", "seconds", "attempts", "error",
]  # fmt: skip


@runs_app.callback()
def runs(
    ctx: typer.Context,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Only this pipeline's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs, newest first.")] = 20,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only runs with this status: ok, failed, cancelled, running, crashed."),
    ] = None,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List past runs with their figures, newest first; `oxiflow runs show RUN_ID` for the steps.

    Example: oxiflow runs --pipeline orders_daily --limit 5
    """
    ctx.obj = {"state_url": state_url, "config": config}
    if ctx.invoked_subcommand is not None:
        return
    with _store_or_empty(state_url, config) as store:
        rows = store.runs(pipeline, limit=limit, status=status) if store is not None else []
    if json_out:
        output.print_json(rows)
    elif not rows:
        output.err("no runs recorded" + (f" for {pipeline}" if pipeline else ""))
    else:
        _print_rows(rows, _RUN_COLUMNS)


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix of one).")],
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One run with its per-step figures.

    Example: oxiflow runs show 20250131T060000-3f2a1c
    """
    parent = ctx.obj or {}
    with _store(state_url or parent.get("state_url"), config or parent.get("config")) as store:
        run = store.run(run_id)
    if run is None:
        output.err(f"error: no run {run_id!r} in the state store (see `oxiflow runs`)")
        raise typer.Exit(1)
    _print_run(run, json_out)


def _print_run(run: dict[str, Any], json_out: bool) -> None:
    if json_out:
        output.print_json(run)
        return
    lines = [f"run {run['run_id']} of {run['pipeline']}: {run['status']}"]
    for key in ("started_at", "ended_at", "seconds", "rows_read", "rows_written", "rows_rejected", "rows_filtered"):
        if run.get(key) is not None:
            lines.append(f"  {key}: {_cell(run[key])}")
    for key in ("dlq_count", "dlq_path", "exit_code", "pid", "host", "pipeline_file", "error"):
        if run.get(key):
            lines.append(f"  {key}: {_cell(run[key], key)}")
    sys.stdout.write("\n".join(lines) + "\n")
    _print_rows(run["steps"], _STEP_COLUMNS, "steps")


# -- worker -----------------------------------------------------------------------------------------


def _workers(store: StateStore) -> list[dict[str, Any]]:
    from oxiflow.state.lock import is_held

    out = []
    for row in store.lock_rows():
        run = store.run(row.run_id) or {}
        out.append(
            {
                "run_id": row.run_id,
                "pipeline": row.pipeline,
                "pid": row.pid,
                "host": row.host,
                "started_at": row.acquired_at,
                "heartbeat_at": row.heartbeat_at,
                "state": "running" if is_held(store, row.pipeline) else "stale",
                "steps": run.get("steps", []),
            }
        )
    return out


def _find_worker(store: StateStore, ident: str) -> dict[str, Any]:
    workers = _workers(store)
    found = [w for w in workers if ident in (w["run_id"], w["pipeline"])]
    found = found or [w for w in workers if w["run_id"].startswith(ident)]
    if len(found) != 1:
        running = ", ".join(f"{w['run_id']} ({w['pipeline']})" for w in workers) or "none"
        output.err(f"error: no running worker {ident!r} (running: {running})")
        raise typer.Exit(1)
    return found[0]


@worker_app.command("list")
def worker_list(state_url: StateUrlOpt = None, config: ConfigOpt = None, json_out: JsonOpt = False) -> None:
    """Runs going now (from the lock table): run id, pipeline, pid, host, start. 'stale': its process
    is gone (`oxiflow state repair` clears it).

    Example: oxiflow worker list
    """
    with _store_or_empty(state_url, config) as store:
        workers = _workers(store) if store is not None else []
    for w in workers:
        del w["steps"]
    if json_out:
        output.print_json(workers)
    elif not workers:
        output.err("no runs are going")
    else:
        _print_rows(workers, ["run_id", "pipeline", "pid", "host", "started_at", "heartbeat_at", "state"])


@worker_app.command("show")
def worker_show(
    ident: Annotated[str, typer.Argument(help="A run id or a pipeline name.")],
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A running run with its live per-step figures (written every few seconds while it runs).

    Example: oxiflow worker show orders_daily
    """
    with _store(state_url, config) as store:
        worker = _find_worker(store, ident)
    if json_out:
        output.print_json(worker)
        return
    sys.stdout.write(
        f"run {worker['run_id']} of {worker['pipeline']}: {worker['state']}, pid {worker['pid']} on {worker['host']}, "
        f"since {worker['started_at']} (heartbeat {worker['heartbeat_at']})\n"
    )
    _print_rows(worker["steps"], _STEP_COLUMNS, "steps")


@worker_app.command("stop")
def worker_stop(
    ident: Annotated[str, typer.Argument(help="A run id or a pipeline name.")],
    force: Annotated[bool, typer.Option("--force", help="SIGKILL the run if SIGTERM did not stop it in time.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Seconds to wait for the run to stop after SIGTERM.")
    ] = 30.0,
    state_url: StateUrlOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Stop a run on this machine: SIGTERM (it cancels cleanly at the next batch, removes its temporary
    files, records itself 'cancelled' and exits 143); with --force, SIGKILL when it does not stop in time.

    Example: oxiflow worker stop orders_daily
    """
    import os
    import signal

    from oxiflow.state.lock import hostname, is_held

    with _store(state_url, config) as store:
        worker = _find_worker(store, ident)
        pipeline, pid, run_id = worker["pipeline"], worker["pid"], worker["run_id"]
        if worker["state"] != "running":
            output.err(f"error: run {run_id} is not running any more (`oxiflow state repair` clears its row)")
            raise typer.Exit(1)
        if worker["host"] != hostname():
            output.err(f"error: run {run_id} runs on {worker['host']}; stop it there")
            raise typer.Exit(1)

        def wait_stopped(seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while is_held(store, pipeline):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(POLL)
            return True

        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        output.err(f"sent SIGTERM to pid {pid} (run {run_id} of {pipeline})")
        if wait_stopped(timeout):
            store.mark_run(run_id, "cancelled", "stopped by oxiflow worker stop")  # if it could not say so itself
            output.err(f"run {run_id} stopped")
            return
        if not force:
            output.err(f"error: run {run_id} still runs after {timeout:g}s; --force kills it")
            raise typer.Exit(1)
        os.kill(pid, signal.SIGKILL)
        output.err(f"sent SIGKILL to pid {pid}")
        if not wait_stopped(30):
            output.err(f"error: pid {pid} still holds the lock of {pipeline}")
            raise typer.Exit(1)
        store.mark_run(run_id, "crashed", "killed by oxiflow worker stop --force", exit_code=137)  # 128 + SIGKILL
        store.delete_lock_row(pipeline, run_id)
        output.err(f"run {run_id} killed")
