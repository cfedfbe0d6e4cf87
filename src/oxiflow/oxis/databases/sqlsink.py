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

A later disposition (``merge``, ``delete_insert``, ``scd2``) sets ``staging = True`` and
implements :meth:`Disposition.finish` with its SQL (``INSERT ... ON CONFLICT``, ``DELETE ...
USING`` + ``INSERT``) over the loaded staging table and the target; the loading, the type
mapping, the transaction and the error handling stay here.
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
    def columns(self, schema: str | None, table: str) -> dict[str, str] | None:
        """Column name -> database type of an existing table, or None when there is no such table."""

    @abstractmethod
    def tables(self, schema: str | None) -> list[str]:
        """The tables of ``schema`` (or the default one), for a did-you-mean."""

    @abstractmethod
    def load(self, schema: str | None, table: str, batches: Iterator[pa.RecordBatch], types: dict[str, str]) -> int:
        """Bulk-load the batches into an existing table (``types``: its column types); return the rows."""

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
        types = {f.name: sql_type(self.dialect, f.type, f.name) for f in arrow}
        cols = ", ".join(f"{self.ident(name)} {typ}" for name, typ in types.items())
        self.execute(f"CREATE TABLE {self.q(schema, table)} ({cols})")
        return types

    def add_columns(self, schema: str | None, table: str, fields: list[pa.Field]) -> dict[str, str]:
        added = {}
        for f in fields:
            added[f.name] = sql_type(self.dialect, f.type, f.name)
            self.execute(f"ALTER TABLE {self.q(schema, table)} ADD COLUMN {self.ident(f.name)} {added[f.name]}")
        return added

    def fetch(self, sql: str) -> list[tuple[object, ...]]:
        """Rows of a SELECT (the load protocol's marker lookups)."""
        raise NotImplementedError

    def drop(self, schema: str | None, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {self.q(schema, table)}")

    def swap(self, schema: str | None, table: str, staging: str) -> None:
        """Put ``staging`` in the place of ``table`` (inside the open transaction)."""
        self.drop(schema, table)
        self.execute(f"ALTER TABLE {self.q(schema, staging)} RENAME TO {self.ident(table)}")


class Disposition:
    name: ClassVar[str]
    staging: ClassVar[bool]
    """Load into a fresh staging table (True) or straight into the target (False)."""

    def finish(self, db: Backend, schema: str | None, table: str, staging: str | None) -> None:
        """SQL run after the load, before the commit (same transaction where the database allows);
        nothing by default."""
        return None


class Append(Disposition):
    name = "append"
    staging = False


class Replace(Disposition):
    name = "replace"
    staging = True

    def finish(self, db: Backend, schema: str | None, table: str, staging: str | None) -> None:
        assert staging is not None
        db.swap(schema, table, staging)


DISPOSITIONS: dict[str, type[Disposition]] = {d.name: d for d in (Append, Replace)}


def write_table(
    db: Backend,
    data: OxiData,
    ctx: StepContext,
    *,
    table: str,
    disposition: str,
    create_schema: bool,
) -> int:
    """Load ``data`` into ``table`` of ``db`` with ``disposition``; report rows and table in ``ctx.metadata``."""
    schema, name = split_table(table)
    disp = DISPOSITIONS[disposition]()
    ctx.on_interrupt(db.cancel)
    staging: str | None = None
    if ctx.load_id is not None:
        data = with_load_id(data, ctx.load_id)
    try:
        db.begin()
        if schema and create_schema:
            db.create_schema(schema)
        if ctx.load_id is not None and db.columns(schema, LOADS_TABLE) is None:
            db.execute(
                f"CREATE TABLE {db.q(schema, LOADS_TABLE)} (load_id VARCHAR(64) NOT NULL, pipeline VARCHAR(255), "
                "step VARCHAR(255) NOT NULL, committed_at VARCHAR(40) NOT NULL)"
            )
        if disp.staging:
            staging = (STAGING_PREFIX + name)[:63]  # PostgreSQL's identifier limit
            db.drop(schema, staging)  # a stale one from a killed MySQL run
            types = db.create_table(schema, staging, data.schema)
            target = staging
        else:
            target = name
            existing = db.columns(schema, name)
            if existing is None:
                types = db.create_table(schema, name, data.schema)
            else:
                new = [f for f in data.schema if f.name not in existing]
                types = {**existing, **db.add_columns(schema, name, new)}
        if not db.transactional_ddl:
            db.commit()  # the DDL is committed anyway; start the load's own transaction
            db.begin()
        rows = db.load(schema, target, _checked(iter(data), ctx), types)
        if not db.transactional_ddl and staging is not None:
            db.commit()  # MySQL: the staging table is complete; RENAME TABLE swaps it in atomically
        disp.finish(db, schema, name, staging)
        if ctx.load_id is not None:
            # the load's marker commits with its rows: recovery asks load_committed() whether it is there
            db.execute(
                f"INSERT INTO {db.q(schema, LOADS_TABLE)} (load_id, pipeline, step, committed_at) VALUES "
                f"({_text(ctx.load_id)}, {_text(ctx.pipeline)}, {_text(ctx.step_id)}, {_text(_now())})"
            )
        ctx.check_cancelled()
        crash_point("before_sink_commit")
        db.commit()
    except BaseException:
        _quietly(db.rollback)
        if staging is not None and not db.transactional_ddl:
            _quietly(lambda: db.drop(schema, staging))
        raise
    ctx.metadata.update(rows=rows, table=table, database=db.label)
    return rows


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
            write_table(
                db, data, ctx, table=cfg.table, disposition=cfg.write_disposition, create_schema=cfg.create_schema
            )
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


def with_load_id(data: OxiData, load_id: str) -> OxiData:
    """Every row tagged with the load that wrote it (an ``_oxi_load_id`` column, replaced if present)."""
    import pyarrow as pa

    names = [n for n in data.schema.names if n != LOAD_ID_COLUMN]
    schema = pa.schema([data.schema.field(n) for n in names]).append(pa.field(LOAD_ID_COLUMN, pa.string()))

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in data:
            cols = [batch.column(n) for n in names]
            tag = pa.nulls(batch.num_rows, pa.string()).fill_null(load_id)
            yield pa.RecordBatch.from_arrays([*cols, tag], schema=schema)

    return data.with_batches(batches(), schema)


def load_committed(db: Backend, table: str, load_id: str, step: str) -> bool:
    """Whether the load's marker row is in the target's database (so its rows are committed)."""
    schema, _ = split_table(table)
    if db.columns(schema, LOADS_TABLE) is None:
        return False
    rows = db.fetch(
        f"SELECT count(*) FROM {db.q(schema, LOADS_TABLE)} WHERE load_id = {_text(load_id)} AND step = {_text(step)}"
    )
    return bool(rows and int(rows[0][0]))  # type: ignore[call-overload]


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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
    """Nested values (structs, maps, nested lists) as JSON text, for JSON/jsonb columns."""
    import json

    import pyarrow as pa

    def default(v: object) -> str:
        return v.hex() if isinstance(v, bytes) else str(v)

    values = arr.to_pylist()
    return pa.array(
        [
            None
            if v is None
            else json.dumps(dict(v) if isinstance(v, list) and _is_map(arr.type) else v, default=default)
            for v in values
        ],
        pa.string(),
    )


def _is_map(typ: pa.DataType) -> bool:
    import pyarrow.types as t

    return bool(t.is_map(typ))
