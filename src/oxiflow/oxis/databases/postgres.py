"""read_postgres / write_postgres: PostgreSQL through ADBC (``adbc-driver-postgresql``).

ADBC speaks Arrow natively on both paths: reads stream ``COPY (query) TO STDOUT (FORMAT binary)``
decoded in C into record batches (bounded memory: one batch at a time), and loads go through
``adbc_ingest``, which is ``COPY ... FROM STDIN (FORMAT binary)`` fed from Arrow in C. Measured
against psycopg CSV COPY and connectorx in docs/databases.md (ADBC was fastest both ways).

Types read: PostgreSQL ``numeric(p,s)`` becomes ``decimal128(p,s)`` (``decimal256`` past 38
digits), unconstrained ``numeric`` stays exact as a string; ``json``/``jsonb`` are JSON text
(string); ``uuid`` is its canonical text; arrays are Arrow lists. Write types: sqltypes.py.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from oxiflow.data import OxiData
from oxiflow.errors import ConfigError, DataError, RunCancelled
from oxiflow.oxi import OxiConfig, Source, StepContext, oxi
from oxiflow.oxis.databases.connection import DbUrl, parse_url
from oxiflow.oxis.databases.dispositions import DispositionConfig
from oxiflow.oxis.databases.sqlsink import Backend, ServerSink, marker_lock_key, missing_table_error, to_json_strings
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

log = logging.getLogger("oxiflow.loads")


class PostgresConnectionConfig(OxiConfig):
    url: str
    """`postgresql://user@host:5432/database` (use `${PG_URL}`: the URL may hold a password)."""
    password: str | None = None
    """The password, when it is kept out of the URL (`${PG_PASSWORD}`); never printed."""


class ReadPostgresConfig(SqlSourceConfig, PostgresConnectionConfig):
    pass


class WritePostgresConfig(DispositionConfig, PostgresConnectionConfig):
    table: str
    """Target table, optionally schema-qualified (`analytics.orders`)."""
    create_schema: bool = True
    """Create the schema (`analytics` in `analytics.orders`) when it does not exist."""


# -- connections and errors ---------------------------------------------------------------------
def _url(cfg: PostgresConnectionConfig) -> DbUrl:
    return parse_url(cfg.url, "postgres", cfg.password)


def connect(url: DbUrl, *, autocommit: bool) -> Any:
    try:
        import adbc_driver_postgresql.dbapi as pg
    except ImportError:
        raise DataError(
            "read_postgres/write_postgres need the ADBC PostgreSQL driver",
            hint="pip install 'oxiflow[postgres]'",
        ) from None
    try:
        return pg.connect(url.full(), autocommit=autocommit)
    except Exception as exc:
        raise connect_error(exc, url) from None


def _first(exc: BaseException, url: DbUrl) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return url.scrub(" ".join(lines[:2]))


def connect_error(exc: BaseException, url: DbUrl) -> DataError:
    text = _first(exc, url)
    low = text.lower()
    if "password authentication failed" in low or ("role" in low and "does not exist" in low):
        hint = "check the user and password (url / password)"
    elif "database" in low and "does not exist" in low:
        hint = "check the database name at the end of the URL"
    elif "refused" in low or "could not connect" in low or "timeout" in low or "translate host" in low:
        hint = "is PostgreSQL running and reachable at that host and port?"
    else:
        hint = "check the URL"
    return DataError(f"cannot connect to PostgreSQL {url.masked()}: {text}", file=url.masked(), hint=hint)


def _cancelled(exc: BaseException) -> bool:
    return "cancel" in str(exc).lower()


# -- source -------------------------------------------------------------------------------------
@oxi(
    "read_postgres",
    kind="source",
    config=ReadPostgresConfig,
    summary="Read a PostgreSQL table or query as Arrow (ADBC, streamed; optional parallel range reads).",
    example=(
        "- name: read_postgres\n  config:\n    url: ${PG_URL}\n    table: analytics.orders\n"
        "    partition_on: order_id\n    partitions: 4"
    ),
    since="0.2.0",
)
class ReadPostgres(Source):
    config: ReadPostgresConfig

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        url = _url(cfg)
        con = connect(url, autocommit=True)
        try:
            base = incremental_query(self._base_query(con, url), ctx, lambda c: quote_ident("postgres", c))
            if ctx.limit_rows is not None:
                base = f"SELECT * FROM ({base}) AS _oxi LIMIT {int(ctx.limit_rows)}"
            queries = [base]
            if cfg.partition_on and cfg.partitions > 1 and ctx.limit_rows is None:
                queries = self._partition_queries(con, url, base)
        except BaseException:
            con.close()
            raise
        chunk = cfg.chunk_size or ctx.batch_size
        # the first partition's stream starts now, so the schema is known before the first batch
        first = _Stream(con, queries[0], url, self._what(), ctx)
        schema = first.schema

        def open_rest(query: str) -> Iterator[pa.RecordBatch]:
            stream = _Stream(connect(url, autocommit=True), query, url, self._what(), ctx)
            return stream.batches(chunk)

        readers = [lambda: first.batches(chunk)] + [lambda q=q: open_rest(q) for q in queries[1:]]
        ctx.metadata.update(database=url.masked(), **({"table": cfg.table} if cfg.table else {"query": cfg.query}))
        if len(queries) > 1:
            ctx.metadata["partitions"] = len(queries)
        return OxiData(schema, interleave(readers, ctx))

    def _what(self) -> str:
        return f"table {self.config.table!r}" if self.config.table else "query"

    def cursor_range(self, column: str, ctx: StepContext) -> tuple[Any, Any] | None:
        url = _url(self.config)
        con = connect(url, autocommit=True)
        try:
            cur = con.cursor()
            try:
                cur.execute(minmax_sql(self._base_query(con, url), quote_ident("postgres", column)))
                row = cur.fetchone()
            finally:
                cur.close()
        finally:
            con.close()
        return None if row is None or row[0] is None else (row[0], row[1])

    def _base_query(self, con: Any, url: DbUrl) -> str:
        cfg = self.config
        if cfg.query is not None:
            return cfg.query
        assert cfg.table is not None
        schema, table = split_table(cfg.table)
        db = _PgBackend(con, url)
        if db.columns(schema, table) is None:
            raise missing_table_error(db, cfg.table)
        return f"SELECT * FROM {qualified('postgres', schema, table)}"

    def _partition_queries(self, con: Any, url: DbUrl, base: str) -> list[str]:
        cfg = self.config
        col = quote_ident("postgres", str(cfg.partition_on))

        def minmax(sql: str) -> Any:
            cur = con.cursor()
            try:
                cur.execute(sql)
                return cur.fetchone()
            finally:
                cur.close()

        try:
            return partition_queries(base, col, cfg.partitions, minmax, _literal)
        except (DataError, ConfigError):
            raise
        except Exception as exc:
            raise DataError(
                f"cannot split {self._what()} of {url.masked()} on {cfg.partition_on!r}: {_first(exc, url)}",
                file=url.masked(),
                hint="partition_on must be a column of the table or query",
            ) from None


def _literal(value: Any) -> str:
    import datetime as dt

    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'::{'timestamptz' if value.tzinfo else 'timestamp'}"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'::date"
    return str(int(value))


class _Stream:
    """One query's result as batches over an ADBC stream (COPY binary, decoded in C)."""

    def __init__(self, con: Any, query: str, url: DbUrl, what: str, ctx: StepContext) -> None:
        self.con, self.url, self.what, self.ctx = con, url, what, ctx
        self.cur = con.cursor()
        ctx.on_interrupt(self._cancel)
        try:
            self.cur.execute(query)
            self.reader = self.cur.fetch_record_batch()
        except BaseException as exc:
            self.close()
            raise self._error(exc) from None
        self.source_schema = self.reader.schema
        self.schema = arrow_schema(self.source_schema)

    def _cancel(self) -> None:
        self.cur.adbc_cancel()

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, DataError | RunCancelled):
            return exc
        if self.ctx.cancel.is_set() or _cancelled(exc):
            return RunCancelled("read_postgres interrupted", step=self.ctx.step_id)
        return DataError(
            f"reading {self.what} of {self.url.masked()} failed: {_first(exc, self.url)}",
            file=self.url.masked(),
            hint="check the query's tables and columns" if "query" in self.what else None,
        )

    def batches(self, chunk: int) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                try:
                    batch = self.reader.read_next_batch()
                except StopIteration:
                    break
                except Exception as exc:
                    raise self._error(exc) from None
                batch = convert_batch(batch, self.schema)
                for offset in range(0, batch.num_rows, chunk):
                    yield batch.slice(offset, chunk)
        finally:
            self.close()

    def close(self) -> None:
        for fn in (self.cur.close, self.con.close):
            try:
                fn()
            except Exception:  # closing after an error or a cancel
                pass


def arrow_schema(schema: pa.Schema) -> pa.Schema:
    """The schema read_postgres yields for the ADBC stream's schema (see the module docstring)."""
    import pyarrow as pa

    fields = []
    for f in schema:
        typ = f.type
        if isinstance(typ, pa.BaseExtensionType):
            typ = _plain(f)
        fields.append(pa.field(f.name, typ, f.nullable, f.metadata))
    return pa.schema(fields)


def _plain(f: pa.Field) -> pa.DataType:
    import pyarrow as pa

    meta = f.metadata or {}
    if f.type.extension_name == "arrow.opaque" and meta.get(b"POSTGRESQL:type") == b"numeric":
        typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1"))
        if typmod >= 4:
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
            return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
        return pa.string()
    if f.type.extension_name == "arrow.uuid":
        return pa.string()
    return f.type.storage_type


def convert_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    if batch.schema.equals(schema):
        return batch
    cols = []
    for col, f in zip(batch.columns, schema, strict=True):
        if isinstance(col.type, pa.BaseExtensionType):
            storage = col.storage
            if col.type.extension_name == "arrow.uuid":
                col = pa.array(
                    [None if b is None else str(uuid.UUID(bytes=b)) for b in storage.to_pylist()], pa.string()
                )
            else:
                col = storage.cast(f.type) if storage.type != f.type else storage
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, schema=schema)


# -- sink ---------------------------------------------------------------------------------------
class _PgBackend(Backend):
    dialect = "postgres"

    def __init__(self, con: Any, url: DbUrl) -> None:
        self.con = con
        self.url = url
        self.label = url.masked()
        self.cur = con.cursor()

    def execute(self, sql: str) -> None:
        self.cur.execute(sql)

    def run(self, sql: str) -> int:
        self.cur.execute(sql)
        return max(int(self.cur.rowcount), 0)

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        self.cur.execute(sql, params)
        return list(self.cur.fetchall())

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        self.cur.execute(sql)
        return list(self.cur.fetchall())

    def lock_marker(self, load_id: str) -> None:
        # held until the transaction ends: the server may commit it after its client was killed
        self.fetch(f"SELECT pg_advisory_xact_lock({marker_lock_key(load_id)})")

    def wait_for_marker(self, load_id: str) -> None:
        # on the autocommit connection of load_committed: the shared lock is released as soon as it is had
        key = marker_lock_key(load_id)
        got = self.fetch(f"SELECT pg_try_advisory_xact_lock_shared({key})")
        if not (got and got[0][0]):
            log.warning(
                "load %s: a transaction that wrote its marker in %s is still committing; waiting for it to end",
                load_id,
                self.label,
            )
            self.fetch(f"SELECT pg_advisory_xact_lock_shared({key})")

    def columns(self, schema: str | None, table: str) -> dict[str, str] | None:
        rows = self._rows(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema()) AND a.attnum > 0 "
            "AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY a.attnum",
            (table, schema),
        )
        if not rows:
            exists = self._rows(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema())",
                (table, schema),
            )
            return {} if exists else None
        return {str(name): str(typ) for name, typ in rows}

    def tables(self, schema: str | None) -> list[str]:
        rows = self._rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = coalesce($1, current_schema())",
            (schema,),
        )
        return [str(r[0]) for r in rows]

    def load(
        self,
        schema: str | None,
        table: str,
        batches: Iterator[pa.RecordBatch],
        types: dict[str, str],
        *,
        temporary: bool = False,
    ) -> int:
        import pyarrow as pa

        first = next(batches, None)
        if first is None:
            return 0
        fixed = _fit(first, types)
        count = 0

        def stream() -> Iterator[pa.RecordBatch]:
            nonlocal count
            count += fixed.num_rows
            yield fixed
            for batch in batches:
                out = _fit(batch, types)
                count += out.num_rows
                yield out

        reader = pa.RecordBatchReader.from_batches(fixed.schema, stream())
        if temporary:  # ADBC looks a temporary table up in pg_temp only when told so
            self.cur.adbc_ingest(table, reader, mode="append", temporary=True)
        else:
            self.cur.adbc_ingest(table, reader, mode="append", db_schema_name=schema)
        return count

    def begin(self) -> None:
        pass  # ADBC without autocommit is always inside a transaction

    def commit(self) -> None:
        self.con.commit()

    def rollback(self) -> None:
        self.con.rollback()

    def cancel(self) -> None:
        self.cur.adbc_cancel()

    def close(self) -> None:
        for fn in (self.cur.close, self.con.close):
            try:
                fn()
            except Exception:  # closing after a cancel
                pass


def _fit(batch: pa.RecordBatch, types: dict[str, str]) -> pa.RecordBatch:
    """Arrow columns shaped the way COPY binary needs them for the target's column types."""
    import pyarrow as pa
    import pyarrow.types as t

    cols, fields = [], []
    for f, col in zip(batch.schema, batch.columns, strict=True):
        target = types.get(f.name, "")
        if t.is_dictionary(col.type):
            col = col.dictionary_decode()
        if target in ("jsonb", "json") and not isinstance(col.type, pa.BaseExtensionType):
            strings = col.cast(pa.string()) if t.is_string(col.type) or t.is_large_string(col.type) else None
            col = pa.ExtensionArray.from_storage(pa.json_(), strings if strings is not None else to_json_strings(col))
        elif target == "uuid" and (t.is_string(col.type) or t.is_large_string(col.type)):
            raw = [None if v is None else uuid.UUID(v).bytes for v in col.to_pylist()]
            col = pa.ExtensionArray.from_storage(pa.uuid(), pa.array(raw, pa.binary(16)))
        cols.append(col)
        fields.append(pa.field(f.name, col.type, f.nullable))
    return pa.RecordBatch.from_arrays(cols, schema=pa.schema(fields))


@oxi(
    "write_postgres",
    kind="sink",
    config=WritePostgresConfig,
    summary=(
        "Load into a PostgreSQL table with binary COPY (ADBC): append, replace atomically, merge (upsert), "
        "scd2 history, delete_insert."
    ),
    example=(
        "- name: write_postgres\n  config:\n    url: ${PG_URL}\n    table: analytics.orders\n"
        "    write_disposition: merge\n    primary_key: [order_id]"
    ),
    since="0.2.0",
)
class WritePostgres(ServerSink):
    config: WritePostgresConfig

    def url(self) -> DbUrl:
        return _url(self.config)

    def backend(self, url: DbUrl, *, loading: bool) -> Backend:
        return _PgBackend(connect(url, autocommit=not loading), url)

    def interrupted(self, exc: BaseException) -> bool:
        return _cancelled(exc)

    def first_line(self, exc: BaseException, url: DbUrl) -> str:
        return _first(exc, url)
