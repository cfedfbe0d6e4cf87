"""read_duckdb: stream a table (or a SELECT) of a DuckDB database file as Arrow batches.

The file is opened read-only, so a pipeline (or ``oxi diff warehouse.duckdb::orders ...``) can
never change it, and several readers may share it. ``table`` reads a base table; ``query`` runs
any SELECT over the database (views, joins, filters).

``chunk_size``, ``partition_on`` and ``partitions`` mean what they mean for the other database sources
(:mod:`oxiflow.oxis.databases.sqlsource`): batches of ``chunk_size`` rows; N half-open ranges of the
column's ``min``/``max`` (NULLs in the last) read at once, each on its own cursor of the one read-only
connection (DuckDB cursors are connections to the same database instance, so they can run in parallel
threads), interleaved through a bounded queue.
"""

from __future__ import annotations

import difflib
import functools
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import model_validator

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect, ident, literal
from oxiflow.errors import DataError, RunCancelled
from oxiflow.incremental import IncrementalConfig
from oxiflow.oxi import OxiConfig, ScanSQL, Source, StepContext, oxi
from oxiflow.oxis.databases.sqlsource import check_read_options, interleave, partition_queries
from oxiflow.oxis.files.duckscan import scan_with_cursor

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


class ReadDuckdbConfig(OxiConfig):
    database: str
    """DuckDB database file, opened read-only; relative paths start at the pipeline's folder."""
    table: str | None = None
    """A base table, optionally schema-qualified (`analytics.orders`); views are read with `query`."""
    query: str | None = None
    """A SELECT over the database's tables and views (instead of `table`)."""
    chunk_size: int | None = None
    """Rows per Arrow batch (default: the pipeline's batch size)."""
    partition_on: str | None = None
    """An integer, date or timestamp column to split the read on (with `partitions`)."""
    partitions: int = 1
    """How many range reads to run at once, each on its own cursor (needs `partition_on`)."""
    incremental: IncrementalConfig | None = None
    """Read only rows new since the last run, by a cursor column (the bound is pushed into the query).
    See docs/incremental.md."""

    @model_validator(mode="after")
    def _one_of(self) -> ReadDuckdbConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError(
                "give exactly one of `table` (on the command line: warehouse.duckdb::schema.table) or `query`"
            )
        check_read_options(self.chunk_size, self.partition_on, self.partitions, self.incremental)
        return self


def split_table(name: str) -> tuple[str, str]:
    """``schema.table`` -> (schema, table); a bare name is in DuckDB's default schema ``main``."""
    parts = name.split(".")
    if len(parts) == 1 and parts[0]:
        return "main", parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise DataError(f"table {name!r} is not `table` or `schema.table`", hint="one dot at most, no quotes")


@oxi(
    "read_duckdb",
    kind="source",
    config=ReadDuckdbConfig,
    summary="Read a table (or the result of a SELECT) from a DuckDB database file, read-only.",
    example="- name: read_duckdb\n  config:\n    database: warehouse.duckdb\n    table: analytics.orders",
    since="0.2.0",
)
class ReadDuckdb(Source):
    config: ReadDuckdbConfig

    def read(self, ctx: StepContext) -> OxiData:
        import duckdb

        cfg = self.config
        path = database_path(cfg.database, ctx)
        # Read-only: the step cannot change the file, and other read-only processes may open it too.
        # (``access_mode`` is DuckDB's config key for ``duckdb.connect(read_only=True)``.)
        try:
            con = connect(ctx, str(path), stream="read", access_mode="READ_ONLY")
        except duckdb.Error as exc:
            raise _open_error(exc, path, cfg.database) from None
        try:
            if cfg.table is not None:
                schema, table = split_table(cfg.table)
                check_table(con, schema, table, cfg.database)
                query = f"SELECT * FROM {ident(schema)}.{ident(table)}"
            else:
                query = str(cfg.query)
            query = scan_with_cursor(query, ctx)
            if ctx.limit_rows is not None:
                query = f"SELECT * FROM ({query}) LIMIT {int(ctx.limit_rows)}"
            queries = [query]
            if cfg.partition_on and cfg.partitions > 1 and ctx.limit_rows is None:
                queries = partition_queries(query, ident(cfg.partition_on), cfg.partitions, _one_row(con), _bound)
            chunk = cfg.chunk_size or ctx.batch_size
            # the first range's reader starts now, so the schema is known before the first batch
            first = con.sql(queries[0]).to_arrow_reader(chunk)
        except BaseException as exc:
            con.close()
            raise _translate(exc, cfg, path) from None
        ctx.metadata.update(database=str(path), **({"table": cfg.table} if cfg.table else {"query": cfg.query}))
        if len(queries) > 1:
            ctx.metadata["partitions"] = len(queries)

        def stream(reader: Any) -> Iterator[pa.RecordBatch]:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except Exception as exc:
                    raise _translate(exc, cfg, path) from None
                if batch.num_rows:
                    yield batch

        def other_range(query: str) -> Iterator[pa.RecordBatch]:
            cur = con.cursor()  # a connection of its own to the same database: it runs in parallel
            ref = weakref.ref(cur)  # weak: see engine/duck.py (a bound method keeps the cursor alive)
            ctx.on_interrupt(lambda: _interrupt(ref()))
            try:
                yield from stream(cur.sql(query).to_arrow_reader(chunk))
            except BaseException as exc:
                raise _translate(exc, cfg, path) from None
            finally:
                cur.close()

        readers = [lambda: stream(first)] + [lambda q=q: other_range(q) for q in queries[1:]]

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from interleave(readers, ctx)
            finally:
                con.close()

        return OxiData(first.schema, batches())

    def cursor_range(self, column: str, ctx: StepContext) -> tuple[Any, Any] | None:
        cfg = self.config
        path = database_path(cfg.database, ctx)
        con = connect(ctx, str(path), stream="read", access_mode="READ_ONLY")
        try:
            if cfg.table is not None:
                schema, table = split_table(cfg.table)
                check_table(con, schema, table, cfg.database)
                query = f"SELECT * FROM {ident(schema)}.{ident(table)}"
            else:
                query = str(cfg.query)
            row = con.execute(f"SELECT min({ident(column)}), max({ident(column)}) FROM ({query})").fetchone()
        except BaseException as exc:
            raise _translate(exc, cfg, path) from None
        finally:
            con.close()
        return None if row is None or row[0] is None else (row[0], row[1])

    def pushdown_ready(self) -> bool:
        # A table scan is one SELECT any connection can run: DuckDB's ``read_duckdb(file,
        # schema_name, table_name)`` reads another database file without ATTACH. A `query` cannot:
        # it names tables of the file, which only a connection that ATTACHed it (a statement, not
        # part of a SELECT) could resolve, so queries always take the streaming path. Range reads
        # (`partitions` > 1) were asked for explicitly: they stream too. (`chunk_size` shapes batches,
        # which a pushed-down statement has none of.)
        return self.config.table is not None and self.config.partitions == 1 and has_read_duckdb()

    def scan_sql(self, ctx: StepContext) -> ScanSQL:
        cfg = self.config
        assert cfg.table is not None, "scan_sql is only offered for `table` (see pushdown_ready)"
        path = ctx.input_path(cfg.database)
        schema, table = split_table(cfg.table)
        scan = f"read_duckdb({literal(str(path))}, schema_name = {literal(schema)}, table_name = {literal(table)})"
        ctx.metadata.update(database=str(path), table=cfg.table)

        def translate(exc: BaseException) -> BaseException:
            # Re-check through a read-only connection, so a missing file or table gets the same
            # error (with its did-you-mean) as the streaming path.
            try:
                with connect(None, str(database_path(cfg.database, ctx)), access_mode="READ_ONLY") as con:
                    check_table(con, schema, table, cfg.database)
            except DataError as err:
                return err
            except Exception:  # the check itself failed (locked, corrupt): report the scan's error
                pass
            return _translate(exc, cfg, path)

        return ScanSQL(
            sql=f"SELECT * FROM {scan}",
            files=[str(path)],
            count_sql=f"SELECT count(*) FROM {scan}",  # from the table's metadata: no scan
            translate=translate,
        )


def _one_row(con: duckdb.DuckDBPyConnection) -> Any:
    """Run a one-row SELECT to its end (DuckDB 2 refuses new work on a connection with a result still open)."""

    def run(sql: str) -> tuple[Any, ...] | None:
        rows = con.execute(sql).fetchall()
        return rows[0] if rows else None

    return run


def _bound(value: Any) -> str:
    """A range bound of ``partition_on`` as a DuckDB literal of its type."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        return f"{'TIMESTAMPTZ' if value.tzinfo else 'TIMESTAMP'} {literal(value.isoformat())}"
    if isinstance(value, dt.date):
        return f"DATE {literal(value.isoformat())}"
    return str(int(value))


def _interrupt(cur: duckdb.DuckDBPyConnection | None) -> None:
    if cur is not None:
        cur.interrupt()


@functools.cache
def has_read_duckdb() -> bool:
    """Whether this DuckDB has the ``read_duckdb`` table function (newer than the 1.1 we support)."""
    import duckdb

    with duckdb.connect() as con:
        row = con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'read_duckdb'").fetchone()
    return bool(row and row[0])


def database_path(database: str, ctx: StepContext) -> Path:
    """The database file, which must exist (connecting read-only never creates one)."""
    path = ctx.input_path(database)
    if not path.is_file():
        raise DataError(
            f"DuckDB database not found: {database}",
            file=database,
            hint="check the path (relative paths start at the pipeline file's folder)",
        )
    return path


def check_table(con: duckdb.DuckDBPyConnection, schema: str, table: str, database: str) -> None:
    """Raise a DataError with a did-you-mean unless ``schema.table`` is a base table of ``con``'s database."""
    rows = con.execute(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database()"
    ).fetchall()
    # DuckDB resolves identifiers case-insensitively, so compare the same way
    found = {(s.lower(), t.lower()): kind for s, t, kind in rows}
    kind = found.get((schema.lower(), table.lower()))
    if kind == "BASE TABLE":
        return
    shown = f"{table}" if schema == "main" else f"{schema}.{table}"
    if kind is not None:  # a view: read_duckdb's `table` reads stored tables only (see pushdown_ready)
        raise DataError(
            f"{shown!r} in {database} is a view, not a table",
            file=database,
            hint=f"read it with query: SELECT * FROM {'' if schema == 'main' else ident(schema) + '.'}{ident(table)}",
        )
    names = sorted(t if s == "main" else f"{s}.{t}" for s, t, k in rows if k == "BASE TABLE")
    match = difflib.get_close_matches(shown, names, n=1)
    if match:
        hint = f"did you mean {match[0]!r}?"
    elif names:
        hint = f"its tables: {', '.join(names[:20])}" + (" ..." if len(names) > 20 else "")
    else:
        hint = "the database has no tables"
    raise DataError(f"no table {shown!r} in {database}", file=database, hint=hint)


# DuckDB refuses a second handle on a file this process already has open another way (a
# write_duckdb step on the same file): one DuckDB instance per file and process would be needed
_SAME_FILE = ("different configuration", "Unique file handle conflict", "already attached")
_SAME_FILE_HINT = (
    "this process has the file open for writing too (a write_duckdb step on the same database?): "
    "read from a copy or write to another database file"
)


def _open_error(exc: BaseException, path: Path, database: str) -> DataError:
    first = str(exc).strip().splitlines()[0]
    if any(s in str(exc) for s in _SAME_FILE):
        hint = _SAME_FILE_HINT
    elif "lock" in first.lower():
        hint = "another process has the database open for writing; wait for it or read a copy"
    else:
        hint = "is it a DuckDB database file (written by DuckDB, same or older version)?"
    return DataError(f"cannot open DuckDB database {path}: {first}", file=database, hint=hint)


def _translate(exc: BaseException, cfg: ReadDuckdbConfig, path: Path) -> BaseException:
    import duckdb

    if isinstance(exc, DataError | RunCancelled):
        return exc
    if isinstance(exc, duckdb.InterruptException):
        return RunCancelled("read_duckdb interrupted")
    if isinstance(exc, duckdb.Error):
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:4] if line.strip())
        what = f"table {cfg.table!r}" if cfg.table else "query"
        hint = "check the query's tables and columns (it runs on the database, read-only)" if cfg.query else None
        if any(s in str(exc) for s in _SAME_FILE):
            hint = _SAME_FILE_HINT
        return DataError(f"reading {what} of {path} failed: {first}", file=cfg.database, hint=hint)
    return exc
