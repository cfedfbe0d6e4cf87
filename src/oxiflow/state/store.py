"""The state store: runs, per-step metrics, cursors, loads, dataset schema versions and lock rows.

One schema, two backends: an embedded SQLite file (default ``.oxiflow/state.db``) and PostgreSQL
(a ``postgresql://`` URL). Both speak the same SQL here: ``?`` placeholders (rewritten to ``%s`` for
psycopg), ``INSERT ... ON CONFLICT ... DO UPDATE``, TEXT timestamps in one fixed ISO-8601 UTC format
(so they compare as strings), JSON as TEXT. The DDL is versioned: ``schema_version`` holds the applied
migrations; a store written by a newer oxiflow is refused rather than misread.

Connections run in autocommit mode and every write goes through :meth:`StateStore.transaction`, which
issues BEGIN/COMMIT itself (``BEGIN IMMEDIATE`` on SQLite, so two writers queue on busy_timeout instead
of deadlocking on a lock upgrade). One connection per store, guarded by a re-entrant lock: engine
observers call in from step threads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from oxiflow.errors import OxiflowError

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_PATH = ".oxiflow/state.db"
ENV_URL = "OXIFLOW_STATE_URL"
BUSY_TIMEOUT_MS = 30_000

_SECRET = re.compile(r"(://[^:/@\s]+:)[^/\s]*@")


def mask_secrets(text: str) -> str:
    """``postgresql://u:pw@h`` -> ``postgresql://u:***@h`` anywhere in ``text``."""
    return _SECRET.sub(r"\1***@", text)


def now_iso(at: datetime | None = None) -> str:
    """One fixed format (millisecond precision, ``Z``), so timestamps compare as strings."""
    at = at or datetime.now(UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def iso_before(delta: timedelta) -> str:
    return now_iso(datetime.now(UTC) - delta)


class StateError(OxiflowError):
    """The state store cannot be opened, read or written."""


class StoreMissing(StateError):
    """A read-only command found no SQLite state file."""


# -- schema -----------------------------------------------------------------------------------------

RUN_COLUMNS = (
    "run_id", "pipeline", "status", "started_at", "ended_at", "seconds", "rows_read", "rows_written",
    "rows_rejected", "rows_filtered", "dlq_count", "dlq_path", "error", "exit_code", "pid", "host", "pipeline_file",
)  # fmt: skip
STEP_COLUMNS = (
    "run_id", "step_id", "position", "oxi", "kind", "reshapes", "status", "rows_in", "rows_out", "rows_rejected",
    "rows_filtered", "bytes_in", "bytes_out", "seconds", "attempts", "error", "fused", "pushdown", "balanced",
)  # fmt: skip
CURSOR_COLUMNS = ("pipeline", "step", "key", "value", "load_id", "updated_at")
LOAD_COLUMNS = ("load_id", "pipeline", "run_id", "step", "status", "target", "created_at", "committed_at")
SCHEMA_COLUMNS = ("dataset", "version", "schema", "fingerprint", "created_at")
LOCK_COLUMNS = ("pipeline", "run_id", "pid", "host", "acquired_at", "heartbeat_at")

# table -> (columns, primary key); in dependency order (step_runs after runs) for import/export
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "runs": (RUN_COLUMNS, ("run_id",)),
    "step_runs": (STEP_COLUMNS, ("run_id", "step_id")),
    "cursors": (CURSOR_COLUMNS, ("pipeline", "step", "key")),
    "loads": (LOAD_COLUMNS, ("load_id",)),
    "schema_versions": (SCHEMA_COLUMNS, ("dataset", "version")),
    "locks": (LOCK_COLUMNS, ("pipeline",)),
}

# Modules whose tables are created on first use, outside the numbered migrations (the DLQ and dataset
# statistics; the schema registry's approvals, settings and drift). Each has EXPORT_TABLES (as TABLES)
# and ensure_tables(store): export and import carry their tables after the store's own.
EXTENSIONS = ("oxiflow.state.dlq", "oxiflow.state.approvals")

# MIGRATIONS[i] brings the store from version i to i + 1. Append only; never edit a released one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, status TEXT NOT NULL,
            started_at TEXT NOT NULL, ended_at TEXT, seconds DOUBLE PRECISION,
            rows_read BIGINT NOT NULL DEFAULT 0, rows_written BIGINT NOT NULL DEFAULT 0,
            rows_rejected BIGINT NOT NULL DEFAULT 0, rows_filtered BIGINT NOT NULL DEFAULT 0,
            dlq_count BIGINT NOT NULL DEFAULT 0, dlq_path TEXT, error TEXT, exit_code INTEGER,
            pid INTEGER, host TEXT, pipeline_file TEXT)""",
        "CREATE INDEX runs_pipeline_started ON runs (pipeline, started_at)",
        """CREATE TABLE step_runs (
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE, step_id TEXT NOT NULL,
            position INTEGER NOT NULL, oxi TEXT NOT NULL, kind TEXT NOT NULL, reshapes INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL, rows_in BIGINT NOT NULL DEFAULT 0, rows_out BIGINT NOT NULL DEFAULT 0,
            rows_rejected BIGINT NOT NULL DEFAULT 0, rows_filtered BIGINT NOT NULL DEFAULT 0,
            bytes_in BIGINT NOT NULL DEFAULT 0, bytes_out BIGINT NOT NULL DEFAULT 0,
            seconds DOUBLE PRECISION NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
            fused TEXT NOT NULL DEFAULT '[]', pushdown INTEGER NOT NULL DEFAULT 0, balanced INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (run_id, step_id))""",
        """CREATE TABLE cursors (
            pipeline TEXT NOT NULL, step TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            load_id TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (pipeline, step, key))""",
        """CREATE TABLE loads (
            load_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, run_id TEXT, step TEXT NOT NULL,
            status TEXT NOT NULL, target TEXT, created_at TEXT NOT NULL, committed_at TEXT)""",
        "CREATE INDEX loads_pipeline_status ON loads (pipeline, status)",
        """CREATE TABLE schema_versions (
            dataset TEXT NOT NULL, version INTEGER NOT NULL, schema TEXT NOT NULL, fingerprint TEXT NOT NULL,
            created_at TEXT NOT NULL, PRIMARY KEY (dataset, version))""",
        """CREATE TABLE locks (
            pipeline TEXT PRIMARY KEY, run_id TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL,
            acquired_at TEXT NOT NULL, heartbeat_at TEXT NOT NULL)""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


# -- typed rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    pipeline: str
    step: str
    key: str
    value: Any  # any JSON value
    load_id: str | None
    updated_at: str


@dataclass(frozen=True)
class Load:
    load_id: str
    pipeline: str
    run_id: str | None
    step: str
    status: str  # pending | committed | rolled_back
    target: str | None
    created_at: str
    committed_at: str | None


@dataclass(frozen=True)
class SchemaVersion:
    dataset: str
    version: int
    fields: list[dict[str, Any]]  # name, type, nullable, metadata: readable without pyarrow
    fingerprint: str
    created_at: str
    ipc: bytes  # the Arrow IPC serialisation: the exact schema

    @property
    def schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.ipc.read_schema(pa.py_buffer(self.ipc))


@dataclass(frozen=True)
class LockRow:
    pipeline: str
    run_id: str
    pid: int
    host: str
    acquired_at: str
    heartbeat_at: str


# -- the store --------------------------------------------------------------------------------------


class Tx:
    """An open transaction (or the store's autocommit connection): what ``conn=`` arguments take."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.store._execute(sql, params)


class StateStore:
    """The interface both backends share. Open one with :func:`open_store`."""

    backend = "?"
    placeholder = "?"

    def __init__(self, url: str) -> None:
        self.url = url
        self._mutex = threading.RLock()
        self._depth = 0
        self._tx = Tx(self)

    # backend hooks
    def _raw_execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _begin_sql(self) -> str:
        return "BEGIN"

    def close(self) -> None:
        raise NotImplementedError

    def integrity_problems(self) -> list[str]:
        """The backend's own consistency check (empty when fine)."""
        return []

    @property
    def display_url(self) -> str:
        return mask_secrets(self.url)

    # plumbing
    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.placeholder != "?":
            sql = sql.replace("?", self.placeholder)
        with self._mutex:
            try:
                return self._raw_execute(sql, params)
            except StateError:
                raise
            except Exception as exc:
                raise StateError(
                    f"state store {self.display_url}: {mask_secrets(str(exc)).strip()}",
                    hint="`oxiflow state validate` checks the store",
                ) from exc

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """All writes inside commit together (or not at all). Nested calls join the outer one."""
        with self._mutex:
            if self._depth:
                self._depth += 1
                try:
                    yield self._tx
                finally:
                    self._depth -= 1
                return
            self._execute(self._begin_sql())
            self._depth = 1
            try:
                yield self._tx
            except BaseException:
                self._depth = 0
                self._execute("ROLLBACK")
                raise
            self._depth = 0
            self._execute("COMMIT")

    def _q(self, conn: Tx | None, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if conn is not None:
            return conn.execute(sql, params)
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    # migrations
    def migrate(self) -> None:
        with self.transaction() as tx:
            self._serialise_migrations(tx)  # first: two first opens would race to create the tables
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise StateError(
                    f"state store {self.display_url} has schema version {current}, newer than this oxiflow "
                    f"understands ({SCHEMA_VERSION})",
                    hint="upgrade oxiflow, or point --state-url elsewhere",
                )
            for version in range(current, SCHEMA_VERSION):
                for ddl in MIGRATIONS[version]:
                    tx.execute(ddl)
                tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version + 1, now_iso()))

    def _serialise_migrations(self, tx: Tx) -> None:
        """Two processes opening a fresh store must not both migrate (SQLite: BEGIN IMMEDIATE does it)."""

    def schema_version(self) -> int:
        rows = self._read("SELECT max(version) FROM schema_version")
        return int(rows[0][0] or 0)

    # runs
    def start_run(
        self, run_id: str, pipeline: str, *, pid: int, host: str, pipeline_file: str | None, conn: Tx | None = None
    ) -> None:
        self._q(
            conn,
            "INSERT INTO runs (run_id, pipeline, status, started_at, pid, host, pipeline_file) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?)",
            (run_id, pipeline, now_iso(), pid, host, pipeline_file),
        )

    def finish_run(self, run_id: str, values: dict[str, Any], conn: Tx | None = None) -> None:
        values = {**values, "ended_at": values.get("ended_at") or now_iso()}
        if values.get("error"):
            values["error"] = mask_secrets(str(values["error"]))
        self._update("runs", values, {"run_id": run_id}, conn)

    def mark_run(
        self, run_id: str, status: str, error: str | None = None, conn: Tx | None = None,
        *, exit_code: int | None = None,
    ) -> bool:  # fmt: skip
        """Set a run's final status from outside the engine (a run stopped before its end, worker stop,
        repair); only while it is still 'running'. ``exit_code``: the process's, when it is known."""
        rows = self._q(
            conn,
            "UPDATE runs SET status = ?, error = coalesce(?, error), exit_code = coalesce(?, exit_code), "
            "ended_at = ? WHERE run_id = ? AND status = 'running' RETURNING run_id",
            (status, mask_secrets(error) if error else None, exit_code, now_iso(), run_id),
        )
        return bool(rows)

    def save_steps(self, run_id: str, steps: list[dict[str, Any]], conn: Tx | None = None) -> None:
        """Upsert per-step rows (fields of StepMetrics.to_dict() plus ``position``)."""
        cols = STEP_COLUMNS
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in ("run_id", "step_id"))
        sql = (
            f"INSERT INTO step_runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (run_id, step_id) DO UPDATE SET {sets}"
        )
        with self.transaction() if conn is None else _joined(conn) as tx:
            for s in steps:
                row = {**s, "run_id": run_id}
                row["fused"] = json.dumps(list(row.get("fused") or []))
                for flag in ("reshapes", "pushdown", "balanced"):
                    row[flag] = int(bool(row.get(flag, flag == "balanced")))
                if row.get("error"):
                    row["error"] = mask_secrets(str(row["error"]))
                tx.execute(sql, [row.get(c) for c in cols])

    def runs(
        self, pipeline: str | None = None, limit: int | None = 20, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first."""
        where, params = _where({"pipeline": pipeline, "status": status})
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs{where} ORDER BY started_at DESC, run_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [dict(zip(RUN_COLUMNS, r, strict=True)) for r in self._read(sql, params)]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run with its ``steps``; ``run_id`` may be a unique prefix."""
        rows = self._read(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            rows = self._read(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id LIMIT 2",
                (run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            )
            if len(rows) != 1:
                return None
        run = dict(zip(RUN_COLUMNS, rows[0], strict=True))
        run["steps"] = self.steps(run["run_id"])
        return run

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._read(
            f"SELECT {', '.join(STEP_COLUMNS)} FROM step_runs WHERE run_id = ? ORDER BY position", (run_id,)
        )
        out = []
        for r in rows:
            step = dict(zip(STEP_COLUMNS, r, strict=True))
            step["fused"] = json.loads(step["fused"] or "[]")
            for flag in ("reshapes", "pushdown", "balanced"):
                step[flag] = bool(step[flag])
            out.append(step)
        return out

    def delete_runs_before(self, before: str, pipeline: str | None = None, *, dry_run: bool = False) -> int:
        """Delete finished runs started before ``before`` (ISO time) with their steps; running ones stay."""
        where = "started_at < ? AND status <> 'running'" + (" AND pipeline = ?" if pipeline else "")
        params: list[Any] = [before] + ([pipeline] if pipeline else [])
        with self.transaction() as tx:
            ids = [r[0] for r in tx.execute(f"SELECT run_id FROM runs WHERE {where}", params)]
            if not dry_run and ids:
                # explicit, not only ON DELETE CASCADE: SQLite enforces foreign keys only when asked
                tx.execute(f"DELETE FROM step_runs WHERE run_id IN (SELECT run_id FROM runs WHERE {where})", params)
                tx.execute(f"DELETE FROM runs WHERE {where}", params)
        return len(ids)

    def delete_loads_before(self, before: str, pipeline: str | None = None, *, dry_run: bool = False) -> int:
        """Delete settled loads (committed or rolled back) created before ``before``. Pending loads stay (the
        next run settles them by asking the sinks), and so does the load each cursor names (``state show``
        says which load moved it). Nothing else refers to a settled load: the sinks' markers of it are gone
        by the time a later load commits (oxis/databases/sqlsink.py, ``prune_markers_sql``)."""
        where = (
            "created_at < ? AND status <> 'pending' "
            "AND load_id NOT IN (SELECT load_id FROM cursors WHERE load_id IS NOT NULL)"
            + (" AND pipeline = ?" if pipeline else "")
        )
        params: list[Any] = [before] + ([pipeline] if pipeline else [])
        with self.transaction() as tx:
            count = tx.execute(f"SELECT count(*) FROM loads WHERE {where}", params)
            if not dry_run:
                tx.execute(f"DELETE FROM loads WHERE {where}", params)
        return int(count[0][0]) if count else 0

    # cursors
    def get_cursor(self, pipeline: str, step: str, key: str = "cursor") -> Cursor | None:
        rows = self._read(
            f"SELECT {', '.join(CURSOR_COLUMNS)} FROM cursors WHERE pipeline = ? AND step = ? AND key = ?",
            (pipeline, step, key),
        )
        return _cursor(rows[0]) if rows else None

    def cursors(self, pipeline: str | None = None) -> list[Cursor]:
        where, params = _where({"pipeline": pipeline})
        rows = self._read(
            f"SELECT {', '.join(CURSOR_COLUMNS)} FROM cursors{where} ORDER BY pipeline, step, key", params
        )
        return [_cursor(r) for r in rows]

    def set_cursor(
        self, pipeline: str, step: str, value: Any, load_id: str | None = None, conn: Tx | None = None,
        *, key: str = "cursor",
    ) -> None:  # fmt: skip
        """Store ``value`` (any JSON value). Pass ``conn`` to commit it with the load it describes."""
        self._q(
            conn,
            "INSERT INTO cursors (pipeline, step, key, value, load_id, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (pipeline, step, key) DO UPDATE SET value = excluded.value, load_id = excluded.load_id, "
            "updated_at = excluded.updated_at",
            (pipeline, step, key, json.dumps(value, default=str), load_id, now_iso()),
        )

    def delete_cursors(self, pipeline: str, step: str | None = None, conn: Tx | None = None) -> int:
        where, params = _where({"pipeline": pipeline, "step": step})
        return len(self._q(conn, f"DELETE FROM cursors{where} RETURNING key", params))

    # loads
    def begin_load(
        self, pipeline: str, step: str, *, run_id: str | None = None, target: str | None = None,
        conn: Tx | None = None,
    ) -> str:  # fmt: skip
        """Record a pending load before writing; returns its id (put it beside the data it writes)."""
        load_id = uuid.uuid4().hex
        self._q(
            conn,
            "INSERT INTO loads (load_id, pipeline, run_id, step, status, target, created_at) "
            "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (load_id, pipeline, run_id, step, target, now_iso()),
        )
        return load_id

    def commit_load(self, load_id: str, conn: Tx | None = None) -> None:
        self._finish_load(load_id, "committed", conn)

    def rollback_load(self, load_id: str, conn: Tx | None = None) -> None:
        self._finish_load(load_id, "rolled_back", conn)

    def _finish_load(self, load_id: str, status: str, conn: Tx | None) -> None:
        rows = self._q(
            conn,
            "UPDATE loads SET status = ?, committed_at = ? WHERE load_id = ? AND status = 'pending' RETURNING load_id",
            (status, now_iso(), load_id),
        )
        if not rows:
            found = self._q(conn, "SELECT status FROM loads WHERE load_id = ?", (load_id,))
            state = f"it is {found[0][0]}" if found else "no such load"
            raise StateError(f"cannot mark load {load_id} {status}: {state}")

    def pending_loads(self, pipeline: str | None = None) -> list[Load]:
        return self.loads(pipeline, status="pending")

    def loads(self, pipeline: str | None = None, status: str | None = None) -> list[Load]:
        where, params = _where({"pipeline": pipeline, "status": status})
        rows = self._read(f"SELECT {', '.join(LOAD_COLUMNS)} FROM loads{where} ORDER BY created_at", params)
        return [Load(*r) for r in rows]

    # dataset schema versions
    def record_schema(self, dataset: str, schema: pa.Schema, conn: Tx | None = None) -> int:
        """Store ``schema`` as the dataset's next version, unless it equals the latest; returns the version."""
        ipc = schema.serialize().to_pybytes()
        fingerprint = hashlib.sha256(ipc).hexdigest()
        doc = json.dumps({"fields": _fields(schema), "ipc": base64.b64encode(ipc).decode("ascii")})
        with self.transaction() if conn is None else _joined(conn) as tx:
            rows = tx.execute(
                "SELECT version, fingerprint FROM schema_versions WHERE dataset = ? ORDER BY version DESC LIMIT 1",
                (dataset,),
            )
            if rows and rows[0][1] == fingerprint:
                return int(rows[0][0])
            version = int(rows[0][0]) + 1 if rows else 1
            tx.execute(
                "INSERT INTO schema_versions (dataset, version, schema, fingerprint, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (dataset, version, doc, fingerprint, now_iso()),
            )
            return version

    def latest_schema(self, dataset: str) -> SchemaVersion | None:
        rows = self._read(
            f"SELECT {', '.join(SCHEMA_COLUMNS)} FROM schema_versions WHERE dataset = ? ORDER BY version DESC LIMIT 1",
            (dataset,),
        )
        return _schema_version(rows[0]) if rows else None

    def schema_versions(self, dataset: str) -> list[SchemaVersion]:
        rows = self._read(
            f"SELECT {', '.join(SCHEMA_COLUMNS)} FROM schema_versions WHERE dataset = ? ORDER BY version", (dataset,)
        )
        return [_schema_version(r) for r in rows]

    # lock rows (visibility only: the lock itself is lock.py's)
    def put_lock_row(self, row: LockRow, conn: Tx | None = None) -> None:
        cols = LOCK_COLUMNS
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        self._q(
            conn,
            f"INSERT INTO locks ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (pipeline) DO UPDATE SET {sets}",
            [getattr(row, c) for c in cols],
        )

    def delete_lock_row(self, pipeline: str, run_id: str | None = None, conn: Tx | None = None) -> bool:
        where, params = _where({"pipeline": pipeline, "run_id": run_id})
        return bool(self._q(conn, f"DELETE FROM locks{where} RETURNING pipeline", params))

    def lock_rows(self, pipeline: str | None = None) -> list[LockRow]:
        where, params = _where({"pipeline": pipeline})
        return [LockRow(*r) for r in self._read(f"SELECT {', '.join(LOCK_COLUMNS)} FROM locks{where}", params)]

    # whole-store views
    def pipelines(self) -> list[dict[str, Any]]:
        """Every pipeline the store knows, with its run count, last run and cursor count."""
        names = {
            r[0]
            for table in ("runs", "cursors", "locks", "loads")
            for r in self._read(f"SELECT DISTINCT pipeline FROM {table}")
        }
        out = []
        for name in sorted(names):
            count = self._read("SELECT count(*) FROM runs WHERE pipeline = ?", (name,))[0][0]
            last = self.runs(name, limit=1)
            cursors = self._read("SELECT count(*) FROM cursors WHERE pipeline = ?", (name,))[0][0]
            pending = self._read("SELECT count(*) FROM loads WHERE pipeline = ? AND status = 'pending'", (name,))[0][0]
            out.append(
                {
                    "pipeline": name,
                    "runs": int(count),
                    "last_run": last[0]["run_id"] if last else None,
                    "last_status": last[0]["status"] if last else None,
                    "last_started_at": last[0]["started_at"] if last else None,
                    "cursors": int(cursors),
                    "pending_loads": int(pending),
                }
            )
        return out

    def export(self, pipeline: str | None = None) -> dict[str, Any]:
        """Every table as JSON-ready rows, the DLQ's and the schema registry's too (``pipeline``: only that
        pipeline's rows of tables that name one; dataset schemas, DLQ schemas and drift reports always)."""
        tables: dict[str, list[dict[str, Any]]] = {}
        for table, (cols, key) in _export_tables().items():
            if table not in TABLES and not self.has_table(table):
                tables[table] = []  # never used in this store: nothing to carry (and export creates nothing)
                continue
            rows = self._export_rows(table, cols, key, pipeline)
            tables[table] = [dict(zip(cols, r, strict=True)) for r in rows]
        return {"format": "oxiflow-state", "schema_version": self.schema_version(), "tables": tables}

    def _export_rows(
        self, table: str, cols: tuple[str, ...], key: tuple[str, ...], pipeline: str | None
    ) -> list[tuple[Any, ...]]:
        order = ", ".join(key)
        if pipeline is not None and table == "step_runs":
            return self._read(
                f"SELECT {', '.join('s.' + c for c in cols)} FROM step_runs s JOIN runs r USING (run_id) "
                f"WHERE r.pipeline = ? ORDER BY s.run_id, s.step_id",
                (pipeline,),
            )
        if pipeline is not None and "pipeline" in cols:
            return self._read(f"SELECT {', '.join(cols)} FROM {table} WHERE pipeline = ? ORDER BY {order}", (pipeline,))
        return self._read(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}")

    def import_(self, doc: dict[str, Any], *, replace: bool = False) -> dict[str, int]:
        """Upsert an :meth:`export` document; ``replace`` empties every table first. One transaction."""
        if not isinstance(doc, dict) or doc.get("format") != "oxiflow-state" or not isinstance(doc.get("tables"), dict):
            raise StateError("not an oxiflow state export (expected a JSON object with format: oxiflow-state)")
        if int(doc.get("schema_version") or 0) > SCHEMA_VERSION:
            raise StateError(f"the export has schema version {doc['schema_version']}, newer than {SCHEMA_VERSION}")
        every = _export_tables()
        unknown = set(doc["tables"]) - set(every)
        if unknown:
            raise StateError(f"unknown table(s) in the export: {', '.join(sorted(unknown))}")
        for module in _extensions():  # their tables exist only once used: the import may be their first use
            module.ensure_tables(self)
        counts: dict[str, int] = {}
        with self.transaction() as tx:
            if replace:
                for table in reversed(list(every)):
                    tx.execute(f"DELETE FROM {table}")
            for table, (cols, key) in every.items():
                rows = doc["tables"].get(table) or []
                sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key) or None
                conflict = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
                sql = (
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                    f"ON CONFLICT ({', '.join(key)}) {conflict}"
                )
                for i, row in enumerate(rows):
                    missing = [c for c in key if row.get(c) is None]
                    if not isinstance(row, dict) or missing:
                        raise StateError(f"{table} row {i + 1}: missing {', '.join(missing) or 'everything'}")
                    tx.execute(sql, [row.get(c) for c in cols])
                counts[table] = len(rows)
        return counts

    def has_table(self, name: str) -> bool:
        """The table exists (SQLite's catalogue; PostgreSQL: on the search path, i.e. in the store's schema)."""
        if self.backend == "postgresql":
            return self._read("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0] is True
        return bool(self._read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def consistency_problems(self) -> list[str]:
        """Rows that point nowhere; runs still marked running with no lock row."""
        problems = []
        orphans = self._read("SELECT count(*) FROM step_runs WHERE run_id NOT IN (SELECT run_id FROM runs)")[0][0]
        if orphans:
            problems.append(f"{orphans} step row(s) belong to no run")
        lost = self._read(
            "SELECT count(*) FROM cursors WHERE load_id IS NOT NULL AND load_id NOT IN (SELECT load_id FROM loads)"
        )[0][0]
        if lost:
            problems.append(f"{lost} cursor(s) name a load the store does not have")
        for (version,) in self._read("SELECT version FROM schema_version"):
            if not 1 <= int(version) <= SCHEMA_VERSION:
                problems.append(f"unknown schema version {version}")
        return problems

    def _update(self, table: str, values: dict[str, Any], key: dict[str, Any], conn: Tx | None) -> None:
        sets = ", ".join(f"{c} = ?" for c in values)
        where = " AND ".join(f"{c} = ?" for c in key)
        self._q(conn, f"UPDATE {table} SET {sets} WHERE {where}", [*values.values(), *key.values()])


def _extensions() -> list[Any]:
    import importlib

    return [importlib.import_module(name) for name in EXTENSIONS]


def _export_tables() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """The store's tables, then those of the EXTENSIONS modules: the order of export and import."""
    out = dict(TABLES)
    for module in _extensions():
        out.update(module.EXPORT_TABLES)
    return out


@contextmanager
def _joined(tx: Tx) -> Iterator[Tx]:
    yield tx


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), list(used.values())


def _cursor(row: Sequence[Any]) -> Cursor:
    pipeline, step, key, value, load_id, updated_at = row
    return Cursor(pipeline, step, key, json.loads(value), load_id, updated_at)


def _schema_version(row: Sequence[Any]) -> SchemaVersion:
    dataset, version, doc, fingerprint, created_at = row
    data = json.loads(doc)
    return SchemaVersion(dataset, int(version), data["fields"], fingerprint, created_at, base64.b64decode(data["ipc"]))


def _fields(schema: pa.Schema) -> list[dict[str, Any]]:
    def meta(m: dict[bytes, bytes] | None) -> dict[str, str]:
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (m or {}).items()}

    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable, "metadata": meta(f.metadata)} for f in schema]


# -- SQLite -----------------------------------------------------------------------------------------


class SQLiteStore(StateStore):
    backend = "sqlite"

    def __init__(self, path: Path, *, create: bool = True) -> None:
        super().__init__(str(path))
        self.path = path
        if not path.exists():
            if not create:
                raise StoreMissing(f"no state store at {path}", hint="nothing has run here yet, or pass --state-url")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # autocommit (isolation_level=None): transaction() issues BEGIN IMMEDIATE / COMMIT itself
            self.conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            self.conn.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, much faster
            self.conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state store {path}: {exc}") from exc

    def _raw_execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def _begin_sql(self) -> str:
        return "BEGIN IMMEDIATE"

    def close(self) -> None:
        self.conn.close()

    def integrity_problems(self) -> list[str]:
        rows = self._read("PRAGMA integrity_check")
        return [] if [r[0] for r in rows] == ["ok"] else [f"sqlite integrity_check: {r[0]}" for r in rows]

    def backup_to(self, dest: Path) -> None:
        """A consistent copy of the live database (sqlite3 backup API: safe while others write)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(dest)
        try:
            with self._mutex:
                self.conn.backup(target)
        finally:
            target.close()

    def restore_from(self, src: Path) -> None:
        """Replace this database's content with the SQLite file ``src`` (checked first)."""
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        try:
            check = source.execute("PRAGMA integrity_check").fetchall()
            if [r[0] for r in check] != ["ok"]:
                raise StateError(f"{src} is damaged: {check[0][0]}")
            tables = {r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"schema_version", *TABLES} <= tables:
                raise StateError(f"{src} is not an oxiflow state database (tables missing)")
            with self._mutex:
                source.backup(self.conn)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{src} is not an SQLite database: {exc}") from exc
        finally:
            source.close()
        self.migrate()  # an older backup comes up to this version


# -- PostgreSQL -------------------------------------------------------------------------------------


class PostgresStore(StateStore):
    backend = "postgresql"
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        conninfo, self.schema = split_schema(url)
        self.conninfo = conninfo
        try:
            import psycopg
        except ImportError as exc:
            raise StateError("a PostgreSQL state store needs psycopg", hint="pip install 'oxiflow[postgres]'") from exc
        try:
            self.conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = mask_secrets(str(exc)).strip()
            raise StateError(f"cannot connect to the state store {self.display_url}: {reason}") from None
        if self.schema:
            from psycopg import sql

            try:
                self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            except psycopg.errors.UniqueViolation:
                pass  # created by a concurrent opener
            self.conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    def _raw_execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(cast(Any, sql), tuple(params))  # our own SQL text, never user input
        return cur.fetchall() if cur.description is not None else []

    def _serialise_migrations(self, tx: Tx) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (advisory_key(f"migrate:{self.schema or ''}"),))

    def close(self) -> None:
        self.conn.close()


def split_schema(url: str) -> tuple[str, str | None]:
    """Take oxiflow's own ``schema=NAME`` query parameter off a PostgreSQL URL (libpq does not know it)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema or None


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# -- opening ----------------------------------------------------------------------------------------


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str, base: Path) -> Path:
    """``sqlite:///abs.db``, ``sqlite:rel.db`` or a plain path; relative ones are taken from ``base``."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite://") :])
    elif url.startswith("sqlite:"):
        path = Path(url[len("sqlite:") :])
    else:
        path = Path(url).expanduser()
    return path if path.is_absolute() else (base / path)


def resolve_url(explicit: str | None, project: Any = None, pipeline_dir: Path | None = None) -> str:
    """Where the store is: --state-url > $OXIFLOW_STATE_URL > the project's settings.state_url >
    ``.oxiflow/state.db`` under the project root (or beside the pipeline file, or the current folder).
    SQLite paths come back absolute."""
    base = project.root if project is not None else (pipeline_dir or Path.cwd())
    url = explicit or os.environ.get(ENV_URL) or None
    if url:
        base = Path.cwd()  # a path given on the command line or in the environment is the user's own
    elif project is not None and getattr(project.model.settings, "state_url", None):
        url = project.model.settings.state_url
    url = url or DEFAULT_PATH
    return url if is_postgres(url) else str(sqlite_path(url, base).resolve())


def open_store(url: str, *, create: bool = True) -> StateStore:
    """Open (and on first use create and migrate) the store at ``url``."""
    store: StateStore = (
        PostgresStore(url) if is_postgres(url) else SQLiteStore(sqlite_path(url, Path.cwd()), create=create)
    )
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
