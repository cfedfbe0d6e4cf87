"""read_sqlite / write_sqlite: SQLite database files through the standard library's ``sqlite3``.

SQLite stores values dynamically, so the Arrow type of a column comes from its *declared* type
(``PRAGMA table_info``; for a ``query``, from a temporary view over it): the names write_sqlite
declares (``BOOLEAN``, ``DECIMAL(p,s)``, ``DATE``, ``TIMESTAMP``, ``TIMESTAMPTZ``, ``JSON``,
``BLOB`` ...) read back as the Arrow types they came from; anything else follows SQLite's affinity
rules (``INT`` -> int64, ``REAL``/``FLOA``/``DOUB`` -> float64, ``BLOB`` -> binary, text otherwise).
Rows are read ``chunk_size`` at a time from the cursor, and loaded with ``executemany`` in one
transaction (``replace``: staging table + DROP + RENAME in that transaction).
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oxiflow.data import OxiData
from oxiflow.errors import DataError, RunCancelled
from oxiflow.oxi import Sink, Source, StepContext, oxi
from oxiflow.oxis.databases.dispositions import DispositionConfig, oxi_md5
from oxiflow.oxis.databases.sqlsink import Backend, load_committed, missing_table_error, to_json_strings, write_table
from oxiflow.oxis.databases.sqlsource import (
    SqlSourceConfig,
    incremental_query,
    interleave,
    minmax_sql,
    partition_queries,
)
from oxiflow.oxis.databases.sqltypes import qualified, quote_ident, split_table

if TYPE_CHECKING:
    import pyarrow as pa


class ReadSqliteConfig(SqlSourceConfig):
    database: str
    """SQLite database file (opened read-only); relative paths start at the pipeline's folder."""


class WriteSqliteConfig(DispositionConfig):
    database: str
    """SQLite database file (created when missing)."""
    table: str
    """Target table (`main.orders` or `orders`)."""
    create_schema: bool = False
    """SQLite has no schemas to create (a schema is an attached database): kept for symmetry, must stay false."""


def _open(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly and not path.is_file():
        raise DataError(f"SQLite database not found: {path}", file=str(path), hint="check the path")
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise DataError(
            f"cannot open SQLite database {path}: {exc}", file=str(path), hint="is it a SQLite file?"
        ) from None
    return con


# -- source -------------------------------------------------------------------------------------
@oxi(
    "read_sqlite",
    kind="source",
    config=ReadSqliteConfig,
    summary="Read a SQLite table or query as Arrow (streamed from a cursor, read-only).",
    example="- name: read_sqlite\n  config:\n    database: app.db\n    table: orders",
    since="0.2.0",
)
class ReadSqlite(Source):
    config: ReadSqliteConfig

    def _base_query(self, db: _SqliteBackend) -> str:
        cfg = self.config
        if cfg.query is not None:
            return cfg.query
        assert cfg.table is not None
        schema, table = split_table(cfg.table)
        if db.columns(schema, table) is None:
            raise missing_table_error(db, cfg.table)
        return f"SELECT * FROM {qualified('sqlite', schema, table)}"

    def cursor_range(self, column: str, ctx: StepContext) -> tuple[Any, Any] | None:
        """Dates and timestamps come back as the text SQLite stores (engine/checkpoints.py parses ISO text)."""
        path = ctx.input_path(self.config.database)
        con = _open(path, readonly=True)
        try:
            row = con.execute(
                minmax_sql(self._base_query(_SqliteBackend(con, str(path))), quote_ident("sqlite", column))
            ).fetchone()
        except sqlite3.Error as exc:
            raise DataError(f"reading {self.config.table or 'query'} of {path} failed: {exc}", file=str(path)) from None
        finally:
            con.close()
        return None if row is None or row[0] is None else (row[0], row[1])

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        path = ctx.input_path(cfg.database)
        con = _open(path, readonly=True)
        db = _SqliteBackend(con, str(path))
        try:
            base = incremental_query(self._base_query(db), ctx, lambda c: quote_ident("sqlite", c), text_dates=True)
            if ctx.limit_rows is not None:
                base = f"SELECT * FROM ({base}) LIMIT {int(ctx.limit_rows)}"
            queries = [base]
            if cfg.partition_on and cfg.partitions > 1 and ctx.limit_rows is None:
                col = quote_ident("sqlite", cfg.partition_on)
                queries = partition_queries(
                    base,
                    col,
                    cfg.partitions,
                    lambda sql: con.execute(sql).fetchone(),
                    _int_literal,
                )
            declared = _declared(con, base)
        except sqlite3.Error as exc:
            con.close()
            raise DataError(f"reading {cfg.table or 'query'} of {path} failed: {exc}", file=str(path)) from None
        except BaseException:
            con.close()
            raise
        chunk = cfg.chunk_size or ctx.batch_size
        first = _Stream(con, queries[0], declared, ctx, str(path))
        readers = [lambda: first.batches(chunk)] + [
            lambda q=q: _Stream(_open(path, readonly=True), q, declared, ctx, str(path)).batches(chunk)
            for q in queries[1:]
        ]
        ctx.metadata.update(database=str(path), **({"table": cfg.table} if cfg.table else {"query": cfg.query}))
        return OxiData(first.schema, interleave(readers, ctx))


def _int_literal(value: Any) -> str:
    if not isinstance(value, int):
        raise DataError(f"read_sqlite splits on integer columns only (min is {value!r})", hint="drop partition_on")
    return str(value)


def _declared(con: sqlite3.Connection, query: str) -> list[tuple[str, str]]:
    """(name, declared type) of the query's columns, through a temporary view (expressions: '')."""
    view = "_oxiflow_types_" + uuid.uuid4().hex
    con.execute(f"CREATE TEMP VIEW {view} AS {query}")
    try:
        return [(str(r[1]), str(r[2] or "")) for r in con.execute(f"PRAGMA temp.table_info({view})")]
    finally:
        con.execute(f"DROP VIEW temp.{view}")


_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)", re.I)


def arrow_type(declared: str) -> pa.DataType | None:
    """The Arrow type for a declared SQLite type; None: infer it from the values."""
    import pyarrow as pa

    d = declared.upper()
    if not d:
        return None
    if m := _DECIMAL.search(d):
        precision, scale = int(m.group(1)), int(m.group(2) or 0)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    exact = {
        "BOOLEAN": pa.bool_(),
        "BOOL": pa.bool_(),
        "DATE": pa.date32(),
        "TIMESTAMP": pa.timestamp("us"),
        "DATETIME": pa.timestamp("us"),
        "TIMESTAMPTZ": pa.timestamp("us", "UTC"),
        "TIME": pa.time64("us"),
        "JSON": pa.string(),
    }
    if d in exact:
        return exact[d]
    if "INT" in d:
        return pa.int64()
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return pa.string()
    if "BLOB" in d:
        return pa.binary()
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return pa.float64()
    return None


class _Stream:
    def __init__(
        self, con: sqlite3.Connection, query: str, declared: list[tuple[str, str]], ctx: StepContext, label: str
    ) -> None:
        import pyarrow as pa

        self.con, self.ctx, self.label = con, ctx, label
        ctx.on_interrupt(con.interrupt)
        try:
            self.cur = con.execute(query)
            self.first = self.cur.fetchmany(ctx.batch_size)
        except sqlite3.Error as exc:
            con.close()
            raise self._error(exc) from None
        types = [arrow_type(d) for _, d in declared]
        cols = list(zip(*self.first, strict=True)) if self.first else [() for _ in declared]
        fields = []
        for (name, _), typ, values in zip(declared, types, cols, strict=True):
            fields.append(pa.field(name, typ if typ is not None else _infer(values)))
        self.schema = pa.schema(fields)

    def _error(self, exc: BaseException) -> BaseException:
        if self.ctx.cancel.is_set() or "interrupted" in str(exc):
            return RunCancelled("read_sqlite interrupted", step=self.ctx.step_id)
        return DataError(f"reading {self.label} failed: {exc}", file=self.label)

    def batches(self, chunk: int) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        try:
            rows = self.first
            while rows:
                for start in range(0, len(rows), chunk):
                    part = rows[start : start + chunk]
                    cols = list(zip(*part, strict=True))
                    yield pa.RecordBatch.from_arrays(
                        [_to_arrow(v, f, self.label) for v, f in zip(cols, self.schema, strict=True)],
                        schema=self.schema,
                    )
                try:
                    rows = self.cur.fetchmany(chunk)
                except sqlite3.Error as exc:
                    raise self._error(exc) from None
        finally:
            self.con.close()


def _infer(values: tuple[Any, ...]) -> pa.DataType:
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if kinds == {int}:
        return pa.int64()
    if kinds <= {int, float} and kinds:
        return pa.float64()
    if kinds == {bytes}:
        return pa.binary()
    return pa.string()


def _to_arrow(values: tuple[Any, ...], f: pa.Field, label: str) -> pa.Array:
    import decimal

    import pyarrow as pa
    import pyarrow.types as t

    typ = f.type
    try:
        if t.is_decimal(typ):
            q = decimal.Decimal(1).scaleb(-typ.scale)
            return pa.array([None if v is None else decimal.Decimal(str(v)).quantize(q) for v in values], typ)
        if t.is_boolean(typ):
            return pa.array([None if v is None else bool(v) for v in values], typ)
        if t.is_date(typ) or t.is_timestamp(typ) or t.is_time(typ):
            return pa.array(values, pa.string()).cast(typ)
        if t.is_string(typ):
            return pa.array([v if v is None or isinstance(v, str) else str(v) for v in values], typ)
        return pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, decimal.InvalidOperation) as exc:
        raise DataError(
            f"column {f.name!r} of {label} has a value that is not {typ}: {exc}",
            file=label,
            hint="SQLite values follow no column type: cast the column in a `query`",
        ) from None


# -- sink ---------------------------------------------------------------------------------------
class _SqliteBackend(Backend):
    dialect = "sqlite"

    def __init__(self, con: sqlite3.Connection, label: str) -> None:
        self.con = con
        self.label = label

    def execute(self, sql: str) -> None:
        self.con.execute(sql)

    def run(self, sql: str) -> int:
        return max(self.con.execute(sql).rowcount, 0)

    def create_temp(self, table: str, types: dict[str, str]) -> None:
        # the rowid of a table without INTEGER PRIMARY KEY grows in insert order: it is the load order
        cols = ", ".join(f"{self.ident(name)} {typ}" for name, typ in types.items())
        self.execute(f"CREATE TEMP TABLE {self.ident(table)} ({cols})")

    def drop_temp(self, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS temp.{self.ident(table)}")

    def columns(self, schema: str | None, table: str) -> dict[str, str] | None:
        prefix = quote_ident("sqlite", schema) + "." if schema else ""
        rows = self.con.execute(f"PRAGMA {prefix}table_info({quote_ident('sqlite', table)})").fetchall()
        return {str(r[1]): str(r[2]) for r in rows} or None

    def tables(self, schema: str | None) -> list[str]:
        prefix = quote_ident("sqlite", schema) + "." if schema else ""
        rows = self.con.execute(f"SELECT name FROM {prefix}sqlite_master WHERE type IN ('table', 'view')").fetchall()
        return [str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_")]

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def create_schema(self, schema: str) -> None:
        raise DataError("SQLite has no schemas to create", hint="set create_schema: false, or use a bare table name")

    def load(
        self,
        schema: str | None,
        table: str,
        batches: Iterator[pa.RecordBatch],
        types: dict[str, str],
        *,
        temporary: bool = False,
    ) -> int:
        count = 0
        for batch in batches:
            cols = ", ".join(quote_ident("sqlite", n) for n in batch.schema.names)
            marks = ", ".join("?" for _ in batch.schema.names)
            values = [_python(batch.column(i)) for i in range(batch.num_columns)]
            self.con.executemany(
                f"INSERT INTO {self.q(schema, table)} ({cols}) VALUES ({marks})", zip(*values, strict=True)
            )
            count += batch.num_rows
        return count

    def begin(self) -> None:
        self.con.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.con.execute("COMMIT")

    def rollback(self) -> None:
        if self.con.in_transaction:
            self.con.execute("ROLLBACK")

    def cancel(self) -> None:
        self.con.interrupt()

    def close(self) -> None:
        self.con.close()


def _python(col: pa.Array) -> list[Any]:
    """A column as the Python values sqlite3 binds (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.types as t

    typ = col.type
    if isinstance(typ, pa.BaseExtensionType):
        if typ.extension_name == "arrow.uuid":
            return [None if b is None else str(uuid.UUID(bytes=b)) for b in col.storage.to_pylist()]
        col, typ = col.storage, col.storage.type
    if t.is_dictionary(typ):
        col = col.dictionary_decode()
        typ = col.type
    if t.is_decimal(typ) or t.is_date(typ) or t.is_time(typ):
        return col.cast(pa.string()).to_pylist()
    if t.is_timestamp(typ):
        if typ.tz:
            col = col.cast(pa.timestamp(typ.unit, "UTC"))
        return [None if v is None else v.isoformat(sep=" ") for v in col.to_pylist()]
    if t.is_nested(typ):
        return to_json_strings(col).to_pylist()
    if t.is_boolean(typ):
        return [None if v is None else int(v) for v in col.to_pylist()]
    if t.is_unsigned_integer(typ) and typ.bit_width == 64:
        return [None if v is None or v < 2**63 else str(v) for v in col.to_pylist()]
    return col.to_pylist()


@oxi(
    "write_sqlite",
    kind="sink",
    config=WriteSqliteConfig,
    summary=(
        "Write into a SQLite table (executemany in one transaction): append, replace atomically, merge (upsert), "
        "scd2 history, delete_insert."
    ),
    example=(
        "- name: write_sqlite\n  config:\n    database: app.db\n    table: orders\n"
        "    write_disposition: merge\n    primary_key: [id]"
    ),
    since="0.2.0",
)
class WriteSqlite(Sink):
    config: WriteSqliteConfig

    def load_committed(self, load_id: str, ctx: StepContext) -> bool | None:
        path = ctx.output_path(self.config.database)
        if not path.is_file():
            return False
        db = _SqliteBackend(_open(path, readonly=True), str(path))
        try:
            return load_committed(db, self.config.table, load_id, ctx.step_id)
        finally:
            db.close()

    def write(self, data: OxiData, ctx: StepContext) -> None:
        cfg = self.config
        path = ctx.output_path(cfg.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        con = _open(path, readonly=False)
        # SQLite has no md5: scd2's row hash calls this one (hashlib, so the same value on every run)
        con.create_function("oxi_md5", 1, oxi_md5, deterministic=True)
        db = _SqliteBackend(con, str(path))
        try:
            write_table(db, data, ctx, table=cfg.table, options=cfg, create_schema=cfg.create_schema)
        except (DataError, RunCancelled):
            raise
        except sqlite3.Error as exc:
            if ctx.cancel.is_set() or "interrupted" in str(exc):
                raise RunCancelled("write_sqlite interrupted", step=ctx.step_id) from None
            raise DataError(
                f"writing table {cfg.table!r} in {path} failed: {exc}",
                file=str(path),
                hint="check that the input columns fit the table",
            ) from None
        finally:
            db.close()
        ctx.bytes_written += path.stat().st_size
