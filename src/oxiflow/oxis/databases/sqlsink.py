"""The shared body of the SQL sinks (write_postgres, write_mysql, write_sqlite).

A load is: open one connection (a :class:`Backend`), create or widen the target (or a staging
table), stream the batches in with the dialect's bulk path, then let the *write disposition*
finish it, all in one transaction where the database allows it.

Write dispositions are small strategy objects (:class:`Disposition`) over "rows loaded into a
table -> SQL in the same transaction":

- ``append`` loads straight into the target (created from the Arrow schema when missing; columns
  the input has and the table lacks are added with ``ALTER TABLE ... ADD COLUMN``). Nothing to do
  afterwards: the commit makes the rows visible at once.
- ``replace`` loads into a staging table ``_oxiflow_staging_<table>`` next to the target and, in
  the same transaction, drops the target and renames the staging table in its place
  (:meth:`Backend.swap`). PostgreSQL and SQLite have transactional DDL, so a failure or a
  ``kill -9`` at any point leaves the old table as it was. MySQL/MariaDB commit DDL implicitly:
  the staging table is loaded and committed first, then swapped with one ``RENAME TABLE``
  (atomic); a killed run leaves at most a stale staging table, which the next run drops.

- ``merge``, ``scd2`` and ``delete_insert`` (:class:`Applied`) load a **temporary** staging table
  (with a load-order column), make sure the target has every input column plus the disposition's
  system columns (``_oxi_load_id``, the scd2 columns), and run the statements of
  :mod:`oxiflow.oxis.databases.dispositions` for the backend's dialect -- the same plans as
  ``write_duckdb`` -- then drop the staging tables, all before the commit. PostgreSQL and SQLite:
  one transaction from the DDL to the load marker. MySQL/MariaDB: creating or widening the target is
  DDL and commits on its own (first, before any row changes); temporary tables are created and
  dropped without a commit, so the load, every statement and the marker are one InnoDB transaction.

The loading, the type mapping, the transaction and the error handling stay here.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from oxiflow.data import OxiData
from oxiflow.errors import DataError, RunCancelled
from oxiflow.incremental import crash_point
from oxiflow.oxi import Sink
from oxiflow.oxis.databases.dispositions import (
    DIALECTS,
    LOAD_ORDER_COLUMN,
    DispositionConfig,
    check_input_columns,
    load_time,
    reserved,
    statements,
    system_columns,
)
from oxiflow.oxis.databases.sqltypes import SqlDialect, qualified, quote_ident, split_table, sql_type

if TYPE_CHECKING:
    import pyarrow as pa

    from oxiflow.oxi import StepContext
    from oxiflow.oxis.databases.connection import DbUrl

STAGING_PREFIX = "_oxiflow_staging_"
LOADS_TABLE = "_oxi_loads"
LOAD_ID_COLUMN = "_oxi_load_id"


class Backend(ABC):
    """One connection to one database, as the sink needs it. Methods raise driver errors; the
    sink turns them into DataErrors that name the database (``label``, password masked)."""

    dialect: ClassVar[SqlDialect]
    # whether CREATE/ALTER/DROP/RENAME roll back with the transaction (not in MySQL/MariaDB)
    transactional_ddl: ClassVar[bool] = True
    label: str

    def q(self, schema: str | None, table: str) -> str:
        return qualified(self.dialect, schema, table)

    def ident(self, name: str) -> str:
        return quote_ident(self.dialect, name)

    @abstractmethod
    def execute(self, sql: str) -> None: ...

    @abstractmethod
    def run(self, sql: str) -> int:
        """Execute a DML statement; the number of rows it changed."""

    @abstractmethod
    def columns(self, schema: str | None, table: str) -> dict[str, str] | None:
        """Column name -> database type of an existing table, or None when there is no such table."""

    @abstractmethod
    def tables(self, schema: str | None) -> list[str]:
        """The tables of ``schema`` (or the default one), for a did-you-mean."""

    @abstractmethod
    def load(
        self,
        schema: str | None,
        table: str,
        batches: Iterator[pa.RecordBatch],
        types: dict[str, str],
        *,
        temporary: bool = False,
    ) -> int:
        """Bulk-load the batches into an existing table (``types``: its column types; ``temporary``: a
        table of :meth:`create_temp`); return the rows."""

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def cancel(self) -> None:
        """Stop the running statement (called from another thread, on timeout or Ctrl-C)."""

    @abstractmethod
    def close(self) -> None: ...

    def create_schema(self, schema: str) -> None:
        self.execute(f"CREATE SCHEMA IF NOT EXISTS {self.ident(schema)}")

    def create_table(self, schema: str | None, table: str, arrow: pa.Schema) -> dict[str, str]:
        types = self.types(arrow)
        self.create_typed(schema, table, types)
        return types

    def types(self, arrow: pa.Schema | list[pa.Field]) -> dict[str, str]:
        """Column name -> the column type this database gets for each Arrow field."""
        return {f.name: sql_type(self.dialect, f.type, f.name) for f in arrow}

    def create_typed(self, schema: str | None, table: str, types: dict[str, str]) -> None:
        cols = ", ".join(f"{self.ident(name)} {typ}" for name, typ in types.items())
        self.execute(f"CREATE TABLE {self.q(schema, table)} ({cols})")

    def add_columns(self, schema: str | None, table: str, fields: list[pa.Field]) -> dict[str, str]:
        added = self.types(fields)
        self.add_typed(schema, table, added)
        return added

    def add_typed(self, schema: str | None, table: str, types: dict[str, str]) -> None:
        for name, typ in types.items():
            self.execute(f"ALTER TABLE {self.q(schema, table)} ADD COLUMN {self.ident(name)} {typ}")

    def create_temp(self, table: str, types: dict[str, str]) -> None:
        """A temporary staging table whose rows keep their load order (``dialect.load_order``): here an
        identity column ``_oxi_row`` filled as the rows arrive (SQLite overrides: its ``rowid`` is that)."""
        cols = ", ".join(f"{self.ident(name)} {typ}" for name, typ in types.items())
        order = f"{self.ident(LOAD_ORDER_COLUMN)} bigint GENERATED ALWAYS AS IDENTITY"
        self.execute(f"CREATE TEMP TABLE {self.ident(table)} ({order}, {cols})")

    def drop_temp(self, table: str) -> None:
        """Drop a temporary table if there is one (never a permanent table of that name)."""
        self.execute(f"DROP TABLE IF EXISTS pg_temp.{self.ident(table)}")

    def fetch(self, sql: str) -> list[tuple[object, ...]]:
        """Rows of a SELECT (the load protocol's marker lookups)."""
        raise NotImplementedError

    def lock_marker(self, load_id: str) -> None:
        """Inside the load's transaction, before its marker is written: take a lock that the transaction
        holds until it ends, so that :meth:`wait_for_marker` can wait for its COMMIT. A server can go on
        committing after its client was killed (the COMMIT was sent); a database inside the process (SQLite)
        commits or dies with it and needs nothing here."""
        return None

    def wait_for_marker(self, load_id: str) -> None:
        """Return once no transaction that took :meth:`lock_marker` for ``load_id`` is still in flight."""
        return None

    def drop(self, schema: str | None, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {self.q(schema, table)}")

    def swap(self, schema: str | None, table: str, staging: str) -> None:
        """Put ``staging`` in the place of ``table`` (inside the open transaction)."""
        self.drop(schema, table)
        self.execute(f"ALTER TABLE {self.q(schema, staging)} RENAME TO {self.ident(table)}")


class Disposition(ABC):
    """How a load is applied: :meth:`apply` runs inside the load's transaction and returns the rows loaded."""

    name: ClassVar[str]

    def __init__(self, cfg: DispositionConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def apply(self, db: Backend, data: OxiData, ctx: StepContext, schema: str | None, name: str) -> int: ...

    def cleanup(self, db: Backend, schema: str | None, name: str) -> None:
        """Undo what a rollback does not (MySQL's committed DDL); called after a failure."""
        return None

    def tagged(self, data: OxiData, ctx: StepContext) -> OxiData:
        """Every row with the load id in ``load_id_column`` (as dlt's ``_dlt_load_id``): the state store's
        load id in incremental runs, else the run id; an input column of that name is replaced."""
        if not self.cfg.load_id_column:
            return data
        return with_load_id(data, load_id_of(ctx), self.cfg.load_id_column)


class Append(Disposition):
    name = "append"

    def apply(self, db: Backend, data: OxiData, ctx: StepContext, schema: str | None, name: str) -> int:
        data = self.tagged(data, ctx)
        existing = db.columns(schema, name)
        if existing is None:
            types = db.create_table(schema, name, data.schema)
        else:
            new = [f for f in data.schema if f.name not in existing]
            types = {**existing, **db.add_columns(schema, name, new)}
        if not db.transactional_ddl:
            db.commit()  # the DDL is committed anyway; start the load's own transaction
            db.begin()
        return db.load(schema, name, _checked(iter(data), ctx), types)


class Replace(Disposition):
    name = "replace"

    def staging(self, name: str) -> str:
        return (STAGING_PREFIX + name)[:63]  # PostgreSQL's identifier limit

    def apply(self, db: Backend, data: OxiData, ctx: StepContext, schema: str | None, name: str) -> int:
        data = self.tagged(data, ctx)
        staging = self.staging(name)
        db.drop(schema, staging)  # a stale one from a killed MySQL run
        types = db.create_table(schema, staging, data.schema)
        if not db.transactional_ddl:
            db.commit()
            db.begin()
        rows = db.load(schema, staging, _checked(iter(data), ctx), types)
        if not db.transactional_ddl:
            db.commit()  # MySQL: the staging table is complete; RENAME TABLE swaps it in atomically
        db.swap(schema, name, staging)
        return rows

    def cleanup(self, db: Backend, schema: str | None, name: str) -> None:
        if not db.transactional_ddl:
            db.drop(schema, self.staging(name))


class Applied(Disposition):
    """``merge`` / ``scd2`` / ``delete_insert``: a temporary staging table, then the dialect's statements."""

    name = "applied"

    def staging(self, name: str) -> str:
        # room for the helper tables' suffixes (`_dedup`, `_filled`) within 63 characters
        return (STAGING_PREFIX + name)[:56]

    def apply(self, db: Backend, data: OxiData, ctx: StepContext, schema: str | None, name: str) -> int:
        cfg = self.cfg
        dialect = DIALECTS[db.dialect]
        skip = reserved(cfg)  # an input `_oxi_load_id` (a copy of an oxiflow table) is replaced
        data = _without(data, skip)
        columns = db.types(data.schema)
        check_input_columns(cfg, list(columns), name)
        if LOAD_ORDER_COLUMN in columns:
            raise DataError(
                f"the input has a column named {LOAD_ORDER_COLUMN!r}, which write dispositions use for the load order",
                hint="rename it before the sink",
            )
        target_columns = ensure_table(db, schema, name, [*columns.items(), *system_columns(dialect, cfg)])
        if not db.transactional_ddl:
            db.commit()  # MySQL: the target's DDL commits anyway; what follows is one transaction
            db.begin()
        staging = self.staging(name)
        self.cleanup(db, schema, name)
        db.create_temp(staging, columns)
        rows = db.load(None, staging, _checked(iter(data), ctx), columns, temporary=True)
        unique = check_keys(db, staging, cfg.primary_key, name, rows) if cfg.primary_key else False
        load_id = load_id_of(ctx)
        changes: dict[str, int] = {}
        for label, sql in statements(
            dialect,
            cfg,
            target=db.q(schema, name),
            staging=staging,
            columns=columns,
            target_columns=target_columns,
            load_id=load_id,
            load_time=load_time(cfg, ctx.metadata) if cfg.write_disposition == "scd2" else None,
            unique_keys=unique,
        ):
            n = db.run(sql)
            if label:
                changes[label] = changes.get(label, 0) + n
            ctx.check_cancelled()
        self.cleanup(db, schema, name)
        ctx.metadata["changes"] = changes
        return rows

    def cleanup(self, db: Backend, schema: str | None, name: str) -> None:
        staging = self.staging(name)
        for table in (staging, staging + "_dedup", staging + "_filled"):
            db.drop_temp(table)


DISPOSITIONS: dict[str, type[Disposition]] = {
    "append": Append,
    "replace": Replace,
    "merge": Applied,
    "scd2": Applied,
    "delete_insert": Applied,
}


def write_table(
    db: Backend,
    data: OxiData,
    ctx: StepContext,
    *,
    table: str,
    options: DispositionConfig,
    create_schema: bool,
) -> int:
    """Load ``data`` into ``table`` of ``db`` as ``options`` say; report rows and table in ``ctx.metadata``."""
    repeated = sorted({n for n in data.schema.names if data.schema.names.count(n) > 1})
    if repeated:  # a table cannot hold two columns of one name (Arrow, Parquet and DuckDB results can)
        raise DataError(
            f"the input has more than one column named {', '.join(map(repr, repeated))}",
            hint="give each column its own name first (a `rename` or `sql` step)",
        )
    schema, name = split_table(table)
    disp = DISPOSITIONS[options.write_disposition](options)
    ctx.on_interrupt(db.cancel)
    try:
        db.begin()
        if schema and create_schema:
            db.create_schema(schema)
        if ctx.load_id is not None and db.columns(schema, LOADS_TABLE) is None:
            db.execute(
                f"CREATE TABLE {db.q(schema, LOADS_TABLE)} (load_id VARCHAR(64) NOT NULL, pipeline VARCHAR(255), "
                "step VARCHAR(255) NOT NULL, committed_at VARCHAR(40) NOT NULL)"
            )
        rows = disp.apply(db, data, ctx, schema, name)
        if ctx.load_id is not None:
            # the load's marker commits with its rows: recovery asks load_committed() whether it is there
            # (after waiting for this transaction, should its COMMIT still be on its way when it asks)
            text = DIALECTS[db.dialect].literal
            db.lock_marker(ctx.load_id)
            db.execute(
                f"INSERT INTO {db.q(schema, LOADS_TABLE)} (load_id, pipeline, step, committed_at) VALUES "
                f"({text(ctx.load_id)}, {text(ctx.pipeline)}, {text(ctx.step_id)}, {text(_now())})"
            )
            db.execute(prune_markers_sql(db.q(schema, LOADS_TABLE), ctx, text))
        ctx.check_cancelled()
        crash_point("before_sink_commit")
        db.commit()
    except BaseException:
        _quietly(db.rollback)
        _quietly(lambda: disp.cleanup(db, schema, name))
        raise
    ctx.metadata.update(rows=rows, table=table, database=db.label)
    if options.load_id_column:
        ctx.metadata["load_id"] = load_id_of(ctx)
    return rows


def prune_markers_sql(loads: str, ctx: StepContext, text: Any) -> str:
    """DELETE of the markers of this step's earlier loads, run in the load's transaction. A marker is
    only read while its load is pending (recovery asks whether it committed), and the state store settles
    every pending load of the pipeline before it begins a new one (state/loads.py), so none of them is
    needed any more: `_oxi_loads` keeps one row per step instead of one per run. (The history of loads is
    the state store's `loads` table, and every row names its load in `_oxi_load_id`.)"""
    return (
        f"DELETE FROM {loads} WHERE pipeline = {text(ctx.pipeline)} AND step = {text(ctx.step_id)} "
        f"AND load_id <> {text(ctx.load_id)}"
    )


def load_id_of(ctx: StepContext) -> str:
    """The id a sink tags its rows with: the state store's load id in an incremental run, else the run id."""
    return str(ctx.load_id or ctx.metadata.get("load_id") or ctx.run_id)


def ensure_table(db: Backend, schema: str | None, name: str, wanted: list[tuple[str, str]]) -> list[str]:
    """Create the target with ``wanted`` (name, SQL type) columns, or add those it lacks; its columns."""
    existing = db.columns(schema, name)
    if existing is None:
        db.create_typed(schema, name, dict(wanted))
        return [n for n, _ in wanted]
    added = {n: t for n, t in wanted if n not in existing}
    db.add_typed(schema, name, added)
    return [*existing, *added]


def check_keys(db: Backend, staging: str, keys: list[str], table: str, rows: int) -> bool:
    """Fail on a NULL key; whether every key of the load is unique (then the dedup window is skipped)."""
    cols = ", ".join(db.ident(k) for k in keys)
    null = " OR ".join(f"{db.ident(k)} IS NULL" for k in keys)
    got = db.fetch(
        f"SELECT (SELECT count(*) FROM {db.ident(staging)} WHERE {null}), "
        f"(SELECT count(*) FROM (SELECT {cols} FROM {db.ident(staging)} GROUP BY {cols}) AS g)"
    )
    nulls, distinct = (int(got[0][0]), int(got[0][1])) if got else (0, 0)  # type: ignore[call-overload]
    if nulls:
        raise DataError(
            f"{nulls} row(s) of the load have a NULL in the primary key {keys} of {table!r}",
            hint="filter them out or fill the key before the sink: a NULL key matches no row",
        )
    return distinct == rows


class ServerSink(Sink):
    """write_postgres / write_mysql: a :class:`Backend` on a URL, one :func:`write_table` per run,
    driver errors turned into errors that name the table and the masked URL."""

    config: Any

    @abstractmethod
    def url(self) -> DbUrl: ...

    @abstractmethod
    def backend(self, url: DbUrl, *, loading: bool) -> Backend:
        """A connection for a load (``loading``) or for a quick read of the target."""

    @abstractmethod
    def interrupted(self, exc: BaseException) -> bool:
        """Whether the driver error is the query being cancelled (a timeout, Ctrl-C)."""

    @abstractmethod
    def first_line(self, exc: BaseException, url: DbUrl) -> str:
        """The driver's message, short and without secrets."""

    def load_committed(self, load_id: str, ctx: StepContext) -> bool | None:
        db = self.backend(self.url(), loading=False)
        try:
            return load_committed(db, self.config.table, load_id, ctx.step_id)
        finally:
            db.close()

    def write(self, data: OxiData, ctx: StepContext) -> None:
        cfg = self.config
        url = self.url()
        db = self.backend(url, loading=True)
        try:
            write_table(db, data, ctx, table=cfg.table, options=cfg, create_schema=cfg.create_schema)
        except (DataError, RunCancelled):
            raise
        except Exception as exc:
            if ctx.cancel.is_set() or self.interrupted(exc):
                raise RunCancelled(f"{self.spec.name} interrupted", step=ctx.step_id) from None
            raise DataError(
                f"writing table {cfg.table!r} in {url.masked()} failed: {self.first_line(exc, url)}",
                file=url.masked(),
                hint="check that the input columns fit the table's column types (a `cast` step can convert them)",
            ) from None
        finally:
            db.close()


def with_load_id(data: OxiData, load_id: str, column: str = LOAD_ID_COLUMN) -> OxiData:
    """Every row tagged with the load that wrote it (an ``_oxi_load_id`` column, replaced if present)."""
    import pyarrow as pa

    names = [n for n in data.schema.names if n != column]
    schema = pa.schema([data.schema.field(n) for n in names]).append(pa.field(column, pa.string()))

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in data:
            cols = [batch.column(n) for n in names]
            tag = pa.nulls(batch.num_rows, pa.string()).fill_null(load_id)
            yield pa.RecordBatch.from_arrays([*cols, tag], schema=schema)

    return data.with_batches(batches(), schema)


def _without(data: OxiData, names: set[str]) -> OxiData:
    """``data`` without the columns ``names`` (those the disposition writes itself)."""
    import pyarrow as pa

    keep = [n for n in data.schema.names if n not in names]
    if len(keep) == len(data.schema.names):
        return data
    schema = pa.schema([data.schema.field(n) for n in keep])

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in data:
            yield pa.RecordBatch.from_arrays([batch.column(n) for n in keep], schema=schema)

    return data.with_batches(batches(), schema)


def load_committed(db: Backend, table: str, load_id: str, step: str) -> bool:
    """Whether the load's marker row is in the target's database (so its rows are committed). A killed run's
    COMMIT may still be in flight on the server (sent just before the kill): its marker is not visible yet,
    but it will be, so the answer waits for that transaction to end (:meth:`Backend.wait_for_marker`), or a
    rerun would load the rows again beside them. Its first load creates `_oxi_loads` in that transaction
    too, hence the wait before the table is looked for."""
    schema, _ = split_table(table)
    db.wait_for_marker(load_id)
    if db.columns(schema, LOADS_TABLE) is None:
        return False
    text = DIALECTS[db.dialect].literal
    rows = db.fetch(
        f"SELECT count(*) FROM {db.q(schema, LOADS_TABLE)} WHERE load_id = {text(load_id)} AND step = {text(step)}"
    )
    return bool(rows and int(rows[0][0]))  # type: ignore[call-overload]


def marker_lock_key(load_id: str) -> int:
    """A signed 64-bit key (a PostgreSQL advisory lock's) for the load ``load_id``'s marker."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"oxiflow-load-marker:{load_id}".encode()).digest()[:8], "big", signed=True)


def marker_lock_name(load_id: str) -> str:
    """A MySQL/MariaDB user lock's name (at most 64 characters) for the load ``load_id``'s marker."""
    import hashlib

    return "oxiflow-load-marker-" + hashlib.sha256(load_id.encode()).hexdigest()[:40]


def _now() -> str:
    from oxiflow.state.store import now_iso

    return now_iso()


def _checked(batches: Iterator[pa.RecordBatch], ctx: StepContext) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        ctx.check_cancelled()
        if batch.num_rows:
            yield batch


def _quietly(fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except Exception:  # cleanup after a failure: the original error is the one to report
        pass


def missing_table_error(db: Backend, table: str, what: str = "table") -> DataError:
    """A DataError for a table that is not there, with a did-you-mean from the database's tables."""
    schema, name = split_table(table)
    try:
        names = db.tables(schema)
    except Exception:  # cannot list them (permissions): no suggestion
        names = []
    match = difflib.get_close_matches(name, names, n=1)
    if match:
        hint = f"did you mean {((schema + '.') if schema else '') + match[0]!r}?"
    elif names:
        hint = f"its tables: {', '.join(sorted(names)[:20])}" + (" ..." if len(names) > 20 else "")
    else:
        hint = f"the {'schema' if schema else 'database'} has no tables"
    return DataError(f"no {what} {table!r} in {db.label}", file=db.label, hint=hint)


def to_json_strings(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Nested values (structs, maps, nested lists) as JSON text, for JSON/jsonb columns: maps at any depth
    as objects, dates and timestamps as Arrow's ISO text (no Python datetime, which ends at year 9999),
    bytes as hex, decimals as text."""
    import json

    import pyarrow as pa

    from oxiflow.arrow_nested import as_text, cast_leaves, map_fixer

    def default(v: object) -> str:
        return v.hex() if isinstance(v, bytes) else str(v)

    col = cast_leaves(arr, as_text)
    fix = map_fixer(col.type)
    values = col.to_pylist()
    if fix is not None:
        values = [fix(v) for v in values]
    return pa.array([None if v is None else json.dumps(v, default=default) for v in values], pa.string())
