"""read_mysql / write_mysql: MySQL and MariaDB through PyMySQL.

Reads use an unbuffered server-side cursor (``SSCursor``): rows arrive as the loop asks for them,
``chunk_size`` at a time, and are turned into Arrow column by column with types from the result's
column descriptions (``DECIMAL(p,s)`` -> ``decimal128(p,s)``, ``TINYINT(1)`` -> bool, binary
collation -> binary, ``JSON`` -> string, ``TIME`` -> duration).

Loads use ``LOAD DATA LOCAL INFILE``: each batch is written by DuckDB to a temporary CSV (nulls as
the bare word ``NULL``, every value quoted, blobs hex-encoded and ``UNHEX``ed on load, nested
values as JSON, tz-aware timestamps in UTC) and loaded by the server in one statement; any
warning (a truncated or out-of-range value, which ``LOCAL`` would otherwise only warn about)
fails the step. Measured against ``executemany`` in docs/databases.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from oxiflow.data import OxiData
from oxiflow.errors import DataError, RunCancelled
from oxiflow.oxi import OxiConfig, Source, StepContext, oxi
from oxiflow.oxis.databases.connection import DbUrl, parse_url
from oxiflow.oxis.databases.dispositions import LOAD_ORDER_COLUMN, DispositionConfig
from oxiflow.oxis.databases.sqlsink import Backend, ServerSink, marker_lock_name, missing_table_error
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


class MysqlConnectionConfig(OxiConfig):
    url: str
    """`mysql://user@host:3306/database` (`mariadb://` too; use `${MYSQL_URL}`)."""
    password: str | None = None
    """The password, when it is kept out of the URL (`${MYSQL_PASSWORD}`); never printed."""


class ReadMysqlConfig(SqlSourceConfig, MysqlConnectionConfig):
    pass


class WriteMysqlConfig(DispositionConfig, MysqlConnectionConfig):
    table: str
    """Target table, optionally database-qualified (`analytics.orders`)."""
    create_schema: bool = True
    """Create the database (`analytics` in `analytics.orders`) when it does not exist."""


def _url(cfg: MysqlConnectionConfig) -> DbUrl:
    return parse_url(cfg.url, "mysql", cfg.password)


def connect(url: DbUrl, **kw: Any) -> Any:
    try:
        import pymysql
    except ImportError:
        raise DataError("read_mysql/write_mysql need PyMySQL", hint="pip install 'oxiflow[mysql]'") from None
    try:
        return pymysql.connect(
            host=url.host,
            port=url.port,
            user=url.user or "root",
            password=url.password or "",
            database=url.database,
            charset="utf8mb4",
            autocommit=True,
            **kw,
        )
    except Exception as exc:
        raise connect_error(exc, url) from None


def _first(exc: BaseException, url: DbUrl) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    text = str(args[1]) if len(args) >= 2 else str(exc)
    return url.scrub(" ".join(line.strip() for line in text.splitlines()[:2] if line.strip()))


def connect_error(exc: BaseException, url: DbUrl) -> DataError:
    text = _first(exc, url)
    low = text.lower()
    if "access denied" in low:
        hint = "check the user and password (url / password)"
    elif "unknown database" in low:
        hint = "check the database name at the end of the URL"
    elif "can't connect" in low or "refused" in low or "timed out" in low:
        hint = "is MySQL/MariaDB running and reachable at that host and port?"
    else:
        hint = "check the URL"
    return DataError(f"cannot connect to MySQL {url.masked()}: {text}", file=url.masked(), hint=hint)


def _killer(url: DbUrl, con: Any) -> Any:
    """A callback that stops ``con``'s running statement with ``KILL QUERY`` from a second connection."""
    thread_id = con.thread_id()

    def kill() -> None:
        other = connect(url)
        try:
            with other.cursor() as cur:
                cur.execute(f"KILL QUERY {int(thread_id)}")
        finally:
            other.close()

    return kill


def _interrupted(exc: BaseException) -> bool:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    return bool(args) and args[0] in (1317, 1927)  # query execution was interrupted / connection killed


# -- source -------------------------------------------------------------------------------------
@oxi(
    "read_mysql",
    kind="source",
    config=ReadMysqlConfig,
    summary="Read a MySQL/MariaDB table or query as Arrow (server-side cursor; optional parallel range reads).",
    example="- name: read_mysql\n  config:\n    url: ${MYSQL_URL}\n    table: shop.orders",
    since="0.2.0",
)
class ReadMysql(Source):
    config: ReadMysqlConfig

    def _base_query(self, con: Any, url: DbUrl) -> str:
        cfg = self.config
        if cfg.query is not None:
            return cfg.query
        assert cfg.table is not None
        schema, table = split_table(cfg.table)
        db = _MysqlBackend(con, url)
        if db.columns(schema, table) is None:
            raise missing_table_error(db, cfg.table)
        return f"SELECT * FROM {qualified('mysql', schema, table)}"

    def cursor_range(self, column: str, ctx: StepContext) -> tuple[Any, Any] | None:
        url = _url(self.config)
        con = connect(url)
        try:
            with con.cursor() as cur:
                cur.execute(minmax_sql(self._base_query(con, url), quote_ident("mysql", column)))
                row = cur.fetchone()
        finally:
            con.close()
        return None if row is None or row[0] is None else (row[0], row[1])

    def read(self, ctx: StepContext) -> OxiData:
        cfg = self.config
        url = _url(cfg)
        con = connect(url)
        what = f"table {cfg.table!r}" if cfg.table else "query"
        try:
            base = incremental_query(self._base_query(con, url), ctx, lambda c: quote_ident("mysql", c))
            if ctx.limit_rows is not None:
                base = f"SELECT * FROM ({base}) AS _oxi LIMIT {int(ctx.limit_rows)}"
            queries = [base]
            if cfg.partition_on and cfg.partitions > 1 and ctx.limit_rows is None:

                def minmax(sql: str) -> Any:
                    with con.cursor() as cur:
                        cur.execute(sql)
                        return cur.fetchone()

                try:
                    col = quote_ident("mysql", cfg.partition_on)
                    queries = partition_queries(base, col, cfg.partitions, minmax, _literal)
                except DataError:
                    raise
                except Exception as exc:
                    raise DataError(
                        f"cannot split {what} of {url.masked()} on {cfg.partition_on!r}: {_first(exc, url)}",
                        file=url.masked(),
                        hint="partition_on must be a column of the table or query",
                    ) from None
        except BaseException:
            con.close()
            raise
        chunk = cfg.chunk_size or ctx.batch_size
        first = _Stream(con, queries[0], url, what, ctx)
        readers = [lambda: first.batches(chunk)] + [
            lambda q=q: _Stream(connect(url), q, url, what, ctx).batches(chunk) for q in queries[1:]
        ]
        ctx.metadata.update(database=url.masked(), **({"table": cfg.table} if cfg.table else {"query": cfg.query}))
        return OxiData(first.schema, interleave(readers, ctx))


def _literal(value: Any) -> str:
    if isinstance(value, dt.datetime | dt.date):
        return f"'{value.isoformat(sep=' ') if isinstance(value, dt.datetime) else value.isoformat()}'"
    return str(int(value))


class _Stream:
    def __init__(self, con: Any, query: str, url: DbUrl, what: str, ctx: StepContext) -> None:
        import pymysql.cursors

        self.con, self.url, self.what, self.ctx = con, url, what, ctx
        ctx.on_interrupt(_killer(url, con))
        self.cur = con.cursor(pymysql.cursors.SSCursor)
        try:
            self.cur.execute(query)
        except BaseException as exc:
            self.close()
            raise self._error(exc) from None
        self.schema = mysql_schema(self.cur._result.fields)

    def _error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, DataError | RunCancelled):
            return exc
        if self.ctx.cancel.is_set() or _interrupted(exc):
            return RunCancelled("read_mysql interrupted", step=self.ctx.step_id)
        return DataError(
            f"reading {self.what} of {self.url.masked()} failed: {_first(exc, self.url)}",
            file=self.url.masked(),
            hint="check the query's tables and columns" if self.what == "query" else None,
        )

    def batches(self, chunk: int) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        try:
            while True:
                try:
                    rows = self.cur.fetchmany(chunk)
                except Exception as exc:
                    raise self._error(exc) from None
                if not rows:
                    break
                cols = list(zip(*rows, strict=True))
                yield pa.RecordBatch.from_arrays(
                    [_column(values, f.type) for values, f in zip(cols, self.schema, strict=True)], schema=self.schema
                )
        finally:
            self.close()

    def close(self) -> None:
        for fn in (self.cur.close, self.con.close):
            try:
                fn()
            except Exception:  # closing after an error or a KILL QUERY
                pass


def _column(values: tuple[Any, ...], typ: pa.DataType) -> pa.Array:
    import pyarrow as pa

    if pa.types.is_boolean(typ):
        values = tuple(None if v is None else bool(v) for v in values)
    return pa.array(values, typ)


def mysql_schema(fields: Any) -> pa.Schema:
    """Arrow types for PyMySQL's result fields (type code, length, decimals, flags, charset)."""
    import pyarrow as pa
    from pymysql.constants import FIELD_TYPE as T

    unsigned_flag, binary_charset = 32, 63
    out = []
    for f in fields:
        code, unsigned = f.type_code, bool(f.flags & unsigned_flag)
        ints = {
            T.TINY: pa.uint8() if unsigned else pa.int8(),
            T.SHORT: pa.uint16() if unsigned else pa.int16(),
            T.INT24: pa.uint32() if unsigned else pa.int32(),
            T.LONG: pa.uint32() if unsigned else pa.int32(),
            T.LONGLONG: pa.uint64() if unsigned else pa.int64(),
            T.YEAR: pa.int16(),
        }
        typ: pa.DataType
        if code == T.TINY and f.length == 1:
            typ = pa.bool_()  # TINYINT(1), what BOOLEAN is
        elif code in ints:
            typ = ints[code]
        elif code == T.FLOAT:
            typ = pa.float32()
        elif code == T.DOUBLE:
            typ = pa.float64()
        elif code in (T.DECIMAL, T.NEWDECIMAL):
            scale = f.scale
            precision = f.length - (1 if scale else 0) - (0 if unsigned else 1)
            typ = pa.decimal128(max(precision, 1), scale) if precision <= 38 else pa.decimal256(precision, scale)
        elif code == T.DATE:
            typ = pa.date32()
        elif code in (T.DATETIME, T.TIMESTAMP):
            typ = pa.timestamp("us")
        elif code == T.TIME:
            typ = pa.duration("us")
        elif code in (T.BIT, T.GEOMETRY) or (
            code in (T.TINY_BLOB, T.MEDIUM_BLOB, T.LONG_BLOB, T.BLOB, T.VAR_STRING, T.STRING)
            and f.charsetnr == binary_charset
        ):
            typ = pa.binary()
        elif code == T.NULL:
            typ = pa.null()
        else:  # text types, JSON, ENUM, SET
            typ = pa.string()
        out.append(pa.field(f.name, typ))
    return pa.schema(out)


# -- sink ---------------------------------------------------------------------------------------
class _MysqlBackend(Backend):
    dialect = "mysql"
    transactional_ddl = False

    def __init__(self, con: Any, url: DbUrl) -> None:
        self.con = con
        self.url = url
        self.label = url.masked()
        self._kill = _killer(url, con)
        self._duck: Any = None
        self._marker_lock: str | None = None

    def execute(self, sql: str) -> None:
        with self.con.cursor() as cur:
            cur.execute(sql)

    def run(self, sql: str) -> int:
        with self.con.cursor() as cur:
            return int(cur.execute(sql))

    def create_temp(self, table: str, types: dict[str, str]) -> None:
        # TEMPORARY: CREATE and DROP do not commit the open transaction (a plain table's would)
        cols = ", ".join(f"{self.ident(name)} {typ}" for name, typ in types.items())
        order = f"{self.ident(LOAD_ORDER_COLUMN)} BIGINT AUTO_INCREMENT PRIMARY KEY"
        self.execute(f"CREATE TEMPORARY TABLE {self.ident(table)} ({order}, {cols})")

    def drop_temp(self, table: str) -> None:
        self.execute(f"DROP TEMPORARY TABLE IF EXISTS {self.ident(table)}")

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self.con.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return self._rows(sql, ())

    # GET_LOCK's timeout in seconds: a year stands for "no timeout" (MariaDB returns NULL for MySQL's -1)
    LOCK_WAIT_SECONDS = 365 * 24 * 3600

    # A user lock is the session's, not the transaction's: taken before the marker, released after COMMIT or
    # ROLLBACK; a killed client's session keeps it until the server has finished its COMMIT and ends it.
    def lock_marker(self, load_id: str) -> None:
        self._marker_lock = marker_lock_name(load_id)
        self._rows("SELECT GET_LOCK(%s, %s)", (self._marker_lock, self.LOCK_WAIT_SECONDS))

    def wait_for_marker(self, load_id: str) -> None:
        name = marker_lock_name(load_id)
        got = self._rows("SELECT GET_LOCK(%s, 0)", (name,))
        if not (got and got[0][0] == 1):
            log.warning(
                "load %s: a transaction that wrote its marker in %s is still committing; waiting for it to end",
                load_id,
                self.label,
            )
            self._rows("SELECT GET_LOCK(%s, %s)", (name, self.LOCK_WAIT_SECONDS))
        self._rows("SELECT RELEASE_LOCK(%s)", (name,))

    def _release_marker_lock(self) -> None:
        name, self._marker_lock = self._marker_lock, None
        if name is not None:
            try:
                self._rows("SELECT RELEASE_LOCK(%s)", (name,))
            except Exception:  # a session gone (killed query) has released it already
                pass

    def columns(self, schema: str | None, table: str) -> dict[str, str] | None:
        rows = self._rows(
            "SELECT column_name, column_type FROM information_schema.columns "
            "WHERE table_schema = coalesce(%s, database()) AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        )
        return {str(n): str(t) for n, t in rows} or None

    def tables(self, schema: str | None) -> list[str]:
        rows = self._rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = coalesce(%s, database())",
            (schema,),
        )
        return [str(r[0]) for r in rows]

    def swap(self, schema: str | None, table: str, staging: str) -> None:
        target = self.q(schema, table)
        if self.columns(schema, table) is None:
            self.execute(f"RENAME TABLE {self.q(schema, staging)} TO {target}")
            return
        old = (f"_oxiflow_old_{table}")[:64]
        self.drop(schema, old)
        # one RENAME TABLE statement swaps both names atomically
        self.execute(f"RENAME TABLE {target} TO {self.q(schema, old)}, {self.q(schema, staging)} TO {target}")
        self.drop(schema, old)

    def load(
        self,
        schema: str | None,
        table: str,
        batches: Iterator[pa.RecordBatch],
        types: dict[str, str],
        *,
        temporary: bool = False,
    ) -> int:
        from oxiflow.engine.duck import connect as duck_connect

        target = self.q(schema, table)
        count = 0
        fd, path = tempfile.mkstemp(prefix="oxiflow-mysql-", suffix=".csv")
        os.close(fd)
        duck = duck_connect(None, threads=1)
        try:
            for batch in batches:
                exprs, columns, sets = _csv_plan(batch.schema, self.ident)
                duck.register("batch", batch)
                duck.execute(
                    f"COPY (SELECT {', '.join(exprs)} FROM batch) TO '{path}' "
                    "(FORMAT csv, HEADER false, FORCE_QUOTE *, NULLSTR 'NULL', QUOTE '\"', ESCAPE '\"')"
                )
                duck.unregister("batch")
                sql = (
                    f"LOAD DATA LOCAL INFILE %s INTO TABLE {target} CHARACTER SET utf8mb4 "
                    "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n' "
                    f"({', '.join(columns)})" + (f" SET {', '.join(sets)}" if sets else "")
                )
                with self.con.cursor() as cur:
                    loaded = cur.execute(sql, (path,))
                    cur.execute("SHOW WARNINGS LIMIT 3")
                    warnings = "; ".join(str(w[2]) for w in cur.fetchall() if w[0] != "Note")
                    if warnings:
                        hint = "a value does not fit its column's type: cast it first or widen the column"
                        # MySQL and MariaDB have no NaN or infinity for DOUBLE/FLOAT
                        if any(f"value: '{v}'" in warnings for v in ("nan", "-nan", "inf", "-inf")):
                            hint = (
                                "MySQL/MariaDB cannot store NaN or infinity: turn them into NULL first, "
                                "e.g. a derive step with CASE WHEN isnan(x) OR isinf(x) THEN NULL ELSE x END"
                            )
                        raise DataError(
                            f"loading into {table!r} of {self.label} failed: {warnings}", file=self.label, hint=hint
                        )
                count += int(loaded)
        finally:
            duck.close()
            os.unlink(path)
        return count

    def begin(self) -> None:
        self.con.begin()

    def commit(self) -> None:
        self.con.commit()
        self._release_marker_lock()

    def rollback(self) -> None:
        self.con.rollback()
        self._release_marker_lock()

    def cancel(self) -> None:
        self._kill()

    def close(self) -> None:
        try:
            self.con.close()
        except Exception:  # closing after a KILL QUERY
            pass


def _csv_plan(schema: pa.Schema, ident: Any) -> tuple[list[str], list[str], list[str]]:
    """DuckDB expressions writing each column as MySQL's LOAD DATA reads it; the LOAD DATA column
    list; its SET clauses (blobs go through a variable and UNHEX)."""
    import pyarrow as pa
    import pyarrow.types as t

    from oxiflow.engine.duck import ident as dq

    exprs, columns, sets = [], [], []
    for i, f in enumerate(schema):
        c = dq(f.name)
        typ = f.type.storage_type if isinstance(f.type, pa.BaseExtensionType) else f.type
        if t.is_dictionary(typ):
            typ = typ.value_type
        if t.is_boolean(typ):
            exprs.append(f"CAST({c} AS INTEGER)")
        elif t.is_binary(typ) or t.is_large_binary(typ) or t.is_fixed_size_binary(typ) or t.is_binary_view(typ):
            exprs.append(f"hex({c})")
            columns.append(f"@v{i}")
            sets.append(f"{ident(f.name)} = UNHEX(@v{i})")
            continue
        elif t.is_timestamp(typ) and typ.tz:
            exprs.append(f"CAST(timezone('UTC', {c}) AS TIMESTAMP)")
        elif t.is_nested(typ):
            exprs.append(f"CAST(to_json({c}) AS VARCHAR)")
        else:
            exprs.append(c)
        columns.append(ident(f.name))
    return exprs, columns, sets


@oxi(
    "write_mysql",
    kind="sink",
    config=WriteMysqlConfig,
    summary=(
        "Load into a MySQL/MariaDB table with LOAD DATA LOCAL INFILE: append, replace atomically, merge (upsert), "
        "scd2 history, delete_insert."
    ),
    example=(
        "- name: write_mysql\n  config:\n    url: ${MYSQL_URL}\n    table: shop.orders\n"
        "    write_disposition: merge\n    primary_key: [order_id]"
    ),
    since="0.2.0",
)
class WriteMysql(ServerSink):
    config: WriteMysqlConfig

    def url(self) -> DbUrl:
        return _url(self.config)

    def backend(self, url: DbUrl, *, loading: bool) -> Backend:
        return _MysqlBackend(connect(url, local_infile=True), url)

    def interrupted(self, exc: BaseException) -> bool:
        return _interrupted(exc)

    def first_line(self, exc: BaseException, url: DbUrl) -> str:
        return _first(exc, url)
