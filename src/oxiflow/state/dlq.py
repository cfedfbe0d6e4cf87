"""The dead-letter queue and dataset statistics in the state store (SQLite or PostgreSQL).

Tables (created with ``CREATE TABLE IF NOT EXISTS`` on first use, outside the store's versioned
migrations, so that they can ship on their own):

- ``dlq``: one row per rejected record: pipeline, run, step, oxi, rule(s), reason, file/line/column,
  the raw record and the offending values (JSON), the fingerprint of the step's input schema, which
  fields were masked, when; ``replayed_at`` / ``replay_run_id`` once ``oxiflow dlq replay`` sent it
  through the pipeline again.
- ``dlq_schemas``: Arrow schemas (IPC, base64) by fingerprint, so a replay rebuilds typed batches.
- ``dataset_stats``: per run and dataset the row count, null rates and column means the ``validate``
  step measured: the history its anomaly checks compare a run with.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oxiflow.state.store import StateStore, Tx, now_iso

if TYPE_CHECKING:
    import pyarrow as pa

DLQ_COLUMNS = (
    "id", "pipeline", "run_id", "step", "oxi", "rule", "reason", "file", "line", "column_name", "raw", "vals",
    "schema_fp", "masked", "created_at", "replayed_at", "replay_run_id",
)  # fmt: skip
STATS_COLUMNS = ("dataset", "run_id", "pipeline", "step", "row_count", "null_rate", "means", "created_at")
SCHEMA_COLUMNS = ("fingerprint", "schema", "created_at")

# carried by `oxiflow state export` / `import` with the store's own tables (columns, primary key)
EXPORT_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "dlq_schemas": (SCHEMA_COLUMNS, ("fingerprint",)),
    "dlq": (DLQ_COLUMNS, ("id",)),
    "dataset_stats": (STATS_COLUMNS, ("dataset", "run_id")),
}

DDL = [
    """CREATE TABLE IF NOT EXISTS dlq (
        id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, run_id TEXT NOT NULL, step TEXT NOT NULL, oxi TEXT,
        rule TEXT, reason TEXT NOT NULL, file TEXT, line BIGINT, column_name TEXT, raw TEXT, vals TEXT,
        schema_fp TEXT, masked TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL,
        replayed_at TEXT, replay_run_id TEXT)""",
    "CREATE INDEX IF NOT EXISTS dlq_pipeline_run ON dlq (pipeline, run_id)",
    "CREATE INDEX IF NOT EXISTS dlq_created ON dlq (created_at)",
    """CREATE TABLE IF NOT EXISTS dlq_schemas (
        fingerprint TEXT PRIMARY KEY, schema TEXT NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dataset_stats (
        dataset TEXT NOT NULL, run_id TEXT NOT NULL, pipeline TEXT, step TEXT, row_count BIGINT NOT NULL,
        null_rate TEXT NOT NULL DEFAULT '{}', means TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL,
        PRIMARY KEY (dataset, run_id))""",
    "CREATE INDEX IF NOT EXISTS dataset_stats_created ON dataset_stats (dataset, created_at)",
]

_ready: weakref.WeakSet[StateStore] = weakref.WeakSet()  # open stores whose tables exist
_ready_lock = threading.Lock()
_CHUNK = 200  # rows per multi-row INSERT: one round trip per chunk on PostgreSQL


def ensure_tables(store: StateStore) -> None:
    """Create the tables when missing (idempotent; two processes may race: serialised on PostgreSQL)."""
    with _ready_lock:
        if store in _ready:
            return
        with store.transaction() as tx:
            if store.backend == "postgresql":
                from oxiflow.state.store import advisory_key

                tx.execute("SELECT pg_advisory_xact_lock(?)", (advisory_key("oxiflow-dlq-ddl"),))
            for ddl in DDL:
                tx.execute(ddl)
        _ready.add(store)


def schema_fingerprint(schema: pa.Schema) -> tuple[str, bytes]:
    ipc = schema.serialize().to_pybytes()
    return hashlib.sha256(ipc).hexdigest()[:32], ipc


@dataclass
class DlqRecord:
    id: str
    pipeline: str
    run_id: str
    step: str
    oxi: str | None
    rule: str | None
    reason: str
    file: str | None
    line: int | None
    column: str | None
    raw: Any
    values: Any
    schema_fp: str | None
    masked: list[str]
    created_at: str
    replayed_at: str | None
    replay_run_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "step": self.step,
            "oxi": self.oxi,
            "rule": self.rule,
            "reason": self.reason,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "raw": self.raw,
            "values": self.values,
            "masked": self.masked,
            "created_at": self.created_at,
            "replayed_at": self.replayed_at,
            "replay_run_id": self.replay_run_id,
        }


def _record(row: Sequence[Any]) -> DlqRecord:
    d = dict(zip(DLQ_COLUMNS, row, strict=True))
    return DlqRecord(
        id=d["id"],
        pipeline=d["pipeline"],
        run_id=d["run_id"],
        step=d["step"],
        oxi=d["oxi"],
        rule=d["rule"],
        reason=d["reason"],
        file=d["file"],
        line=int(d["line"]) if d["line"] is not None else None,
        column=d["column_name"],
        raw=json.loads(d["raw"]) if d["raw"] is not None else None,
        values=json.loads(d["vals"]) if d["vals"] is not None else None,
        schema_fp=d["schema_fp"],
        masked=json.loads(d["masked"] or "[]"),
        created_at=d["created_at"],
        replayed_at=d["replayed_at"],
        replay_run_id=d["replay_run_id"],
    )


class DlqTable:
    """Reads and writes of the ``dlq`` / ``dlq_schemas`` / ``dataset_stats`` tables of one store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        ensure_tables(store)

    # -- writing --------------------------------------------------------------------------------------
    def save_schema(self, schema: pa.Schema, conn: Tx | None = None) -> str:
        fp, ipc = schema_fingerprint(schema)
        self.store._q(
            conn,
            "INSERT INTO dlq_schemas (fingerprint, schema, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (fingerprint) DO NOTHING",
            (fp, base64.b64encode(ipc).decode("ascii"), now_iso()),
        )
        return fp

    def insert(self, rows: list[dict[str, Any]]) -> None:
        """Rows as the engine's DLQ writes them (keys of DLQ_COLUMNS; raw/vals/masked already JSON)."""
        cols = DLQ_COLUMNS[:15]  # not replayed_at / replay_run_id
        one = "(" + ", ".join("?" * len(cols)) + ")"
        with self.store.transaction() as tx:
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                params = [r.get(c) for r in chunk for c in cols]
                tx.execute(f"INSERT INTO dlq ({', '.join(cols)}) VALUES {', '.join([one] * len(chunk))}", params)

    def mark_replayed(self, ids: list[str], replay_run_id: str) -> int:
        at = now_iso()
        n = 0
        with self.store.transaction() as tx:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                n += len(
                    tx.execute(
                        f"UPDATE dlq SET replayed_at = ?, replay_run_id = ? WHERE id IN ({marks}) RETURNING id",
                        (at, replay_run_id, *chunk),
                    )
                )
        return n

    def purge(self, *, before: str | None = None, run_id: str | None = None, pipeline: str | None = None) -> int:
        where, params = self._where(pipeline=pipeline, run_id=run_id, before=before)
        if not where:
            raise ValueError("purge needs a filter")
        with self.store.transaction() as tx:
            return len(tx.execute(f"DELETE FROM dlq{where} RETURNING id", params))

    # -- reading --------------------------------------------------------------------------------------
    @staticmethod
    def _where(
        *,
        pipeline: str | None = None,
        run_id: str | None = None,
        step: str | None = None,
        before: str | None = None,
        pending: bool = False,
    ) -> tuple[str, list[Any]]:
        conds, params = [], []
        for col, value in (("pipeline", pipeline), ("run_id", run_id), ("step", step)):
            if value is not None:
                conds.append(f"{col} = ?")
                params.append(value)
        if before is not None:
            conds.append("created_at < ?")
            params.append(before)
        if pending:
            conds.append("replayed_at IS NULL")
        return (" WHERE " + " AND ".join(conds)) if conds else "", params

    def records(
        self,
        *,
        pipeline: str | None = None,
        run_id: str | None = None,
        step: str | None = None,
        pending: bool = False,
        limit: int | None = None,
    ) -> list[DlqRecord]:
        where, params = self._where(pipeline=pipeline, run_id=run_id, step=step, pending=pending)
        sql = f"SELECT {', '.join(DLQ_COLUMNS)} FROM dlq{where} ORDER BY created_at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_record(r) for r in self.store._read(sql, params)]

    def summary(self, *, pipeline: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """Per pipeline, run and step: how many records, how many not replayed yet, the first rule."""
        where, params = self._where(pipeline=pipeline, run_id=run_id)
        rows = self.store._read(
            "SELECT pipeline, run_id, step, count(*), sum(CASE WHEN replayed_at IS NULL THEN 1 ELSE 0 END), "
            f"min(rule), min(created_at) FROM dlq{where} GROUP BY pipeline, run_id, step "
            "ORDER BY min(created_at), pipeline, run_id, step",
            params,
        )
        keys = ("pipeline", "run_id", "step", "records", "pending", "rule", "first_at")
        return [dict(zip(keys, (*r[:3], int(r[3]), int(r[4] or 0), *r[5:]), strict=True)) for r in rows]

    def get(self, record_id: str) -> DlqRecord | None:
        """One record; ``record_id`` may be a unique prefix."""
        rows = self.store._read(f"SELECT {', '.join(DLQ_COLUMNS)} FROM dlq WHERE id = ?", (record_id,))
        if not rows:
            rows = self.store._read(
                f"SELECT {', '.join(DLQ_COLUMNS)} FROM dlq WHERE id LIKE ? ORDER BY id LIMIT 2", (record_id + "%",)
            )
            if len(rows) != 1:
                return None
        return _record(rows[0])

    def schema(self, fingerprint: str) -> pa.Schema | None:
        rows = self.store._read("SELECT schema FROM dlq_schemas WHERE fingerprint = ?", (fingerprint,))
        if not rows:
            return None
        import pyarrow as pa

        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(rows[0][0])))

    # -- dataset statistics (anomaly history) ----------------------------------------------------------
    def record_stats(
        self,
        dataset: str,
        run_id: str,
        *,
        pipeline: str,
        step: str,
        row_count: int,
        null_rate: dict[str, float],
        means: dict[str, float | None],
    ) -> None:
        cols = STATS_COLUMNS
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
        self.store._q(
            None,
            f"INSERT INTO dataset_stats ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (dataset, run_id) DO UPDATE SET {sets}",
            (dataset, run_id, pipeline, step, row_count, json.dumps(null_rate), json.dumps(means), now_iso()),
        )

    def stats_history(self, dataset: str, runs: int, exclude_run: str | None = None) -> list[dict[str, Any]]:
        """The last ``runs`` statistics of ``dataset``, newest first."""
        rows = self.store._read(
            f"SELECT {', '.join(STATS_COLUMNS)} FROM dataset_stats WHERE dataset = ? AND run_id <> ? "
            f"ORDER BY created_at DESC, run_id DESC LIMIT {int(runs)}",
            (dataset, exclude_run or ""),
        )
        out = []
        for r in rows:
            d = dict(zip(STATS_COLUMNS, r, strict=True))
            d["null_rate"] = json.loads(d["null_rate"])
            d["means"] = json.loads(d["means"])
            out.append(d)
        return out
