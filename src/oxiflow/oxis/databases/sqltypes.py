"""Arrow <-> SQL types and identifier quoting, per dialect (PostgreSQL, MySQL/MariaDB, SQLite).

Sinks create tables with :func:`sql_type`; the tables in ``docs/databases.md`` are this module's
mapping written out.

Identifiers go through :func:`quote_ident`, the one quoting function of the SQL sinks and sources.
PostgreSQL's are quoted by the driver's own tool, ``psycopg.sql.Identifier`` (psycopg comes with
the ``postgres`` extra beside ADBC, which has no quoting helper). The sinks and sources talk ADBC and
have no psycopg connection, so it is psycopg's connection-less form (PostgreSQL's rule, as libpq's
``PQescapeIdentifier`` applies it); the state store, which has a psycopg connection, composes its SQL
with ``sql.Identifier`` on it. PyMySQL and sqlite3 have no identifier quoting (only string escaping),
so MySQL/MariaDB (backticks doubled) and SQLite (double quotes doubled) are quoted here. (DuckDB's
rule, the same as SQLite's, is ``oxiflow.engine.duck.ident``.) Tested with quotes, spaces, unicode and
reserved words against each database: ``tests/integration/test_identifiers.py``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

from oxiflow.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

SqlDialect = Literal["postgres", "mysql", "sqlite"]


# -- quoting ------------------------------------------------------------------------------------
def quote_ident(dialect: SqlDialect, name: str) -> str:
    """One identifier, quoted so any name (spaces, quotes, keywords) is taken literally."""
    if "\x00" in name:
        raise DataError(f"identifier {name!r} contains a NUL character", hint="rename the column or table")
    if dialect == "postgres":
        return _pg_identifier(name)
    if dialect == "mysql":
        return "`" + name.replace("`", "``") + "`"
    # SQLite: standard SQL double quotes, a quote inside doubled
    return '"' + name.replace('"', '""') + '"'


def _pg_identifier(name: str) -> str:
    sql = _psycopg_sql()
    if sql is not None:
        try:
            return str(sql.Identifier(name).as_string(None))
        except ValueError:  # psycopg < 3.2 quotes identifiers only with a connection
            pass
    # without psycopg (the postgres extra brings it): its rule, PostgreSQL's, double quotes doubled
    return '"' + name.replace('"', '""') + '"'


@functools.cache
def _psycopg_sql() -> Any:
    try:
        from psycopg import sql
    except ImportError:
        return None
    return sql


def qualified(dialect: SqlDialect, schema: str | None, table: str) -> str:
    return (quote_ident(dialect, schema) + "." if schema else "") + quote_ident(dialect, table)


def split_table(name: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); a bare name has no schema (the connection's default)."""
    parts = name.split(".")
    if len(parts) == 1 and parts[0]:
        return None, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise DataError(f"table {name!r} is not `table` or `schema.table`", hint="one dot at most, no quotes")


# -- Arrow -> SQL (sinks) -----------------------------------------------------------------------
def sql_type(dialect: SqlDialect, typ: pa.DataType, column: str = "") -> str:
    """The column type a sink creates for an Arrow type (see docs/databases.md)."""
    import pyarrow as pa
    import pyarrow.types as t

    if isinstance(typ, pa.BaseExtensionType):
        name = typ.extension_name
        if name == "arrow.json":
            return {"postgres": "jsonb", "mysql": "JSON", "sqlite": "JSON"}[dialect]
        if name == "arrow.uuid":
            return {"postgres": "uuid", "mysql": "CHAR(36)", "sqlite": "TEXT"}[dialect]
        return sql_type(dialect, typ.storage_type, column)
    if t.is_dictionary(typ):
        return sql_type(dialect, typ.value_type, column)
    if dialect == "postgres":
        return _pg_type(typ, column)
    if dialect == "mysql":
        return _mysql_type(typ, column)
    return _sqlite_type(typ, column)


def _unsupported(dialect: str, typ: pa.DataType, column: str) -> DataError:
    return DataError(
        f"column {column!r} has type {typ}, which has no {dialect} column type",
        hint="cast it first (a `cast` or `sql` step), e.g. to string",
    )


def _pg_type(typ: pa.DataType, column: str) -> str:
    import pyarrow.types as t

    if t.is_boolean(typ):
        return "boolean"
    if t.is_int8(typ) or t.is_int16(typ) or t.is_uint8(typ):
        return "smallint"
    if t.is_int32(typ) or t.is_uint16(typ):
        return "integer"
    if t.is_int64(typ) or t.is_uint32(typ):
        return "bigint"
    if t.is_uint64(typ):
        return "numeric(20,0)"
    if t.is_float16(typ) or t.is_float32(typ):
        return "real"
    if t.is_float64(typ):
        return "double precision"
    if t.is_decimal(typ):
        if typ.precision > 1000:
            return "numeric"
        return f"numeric({typ.precision},{typ.scale})"
    if t.is_string(typ) or t.is_large_string(typ) or t.is_string_view(typ) or t.is_null(typ):
        return "text"
    if t.is_binary(typ) or t.is_large_binary(typ) or t.is_fixed_size_binary(typ) or t.is_binary_view(typ):
        return "bytea"
    if t.is_date(typ):
        return "date"
    if t.is_timestamp(typ):
        return "timestamptz" if typ.tz else "timestamp"
    if t.is_time(typ):
        return "time"
    if t.is_duration(typ) or t.is_interval(typ):
        return "interval"
    if t.is_list(typ) or t.is_large_list(typ) or t.is_fixed_size_list(typ) or t.is_list_view(typ):
        inner = typ.value_type
        if t.is_list(inner) or t.is_large_list(inner) or t.is_struct(inner) or t.is_map(inner):
            return "jsonb"  # PostgreSQL arrays are rectangular and typed: nested data goes to jsonb
        return _pg_type(inner, column) + "[]"
    if t.is_struct(typ) or t.is_map(typ):
        return "jsonb"
    raise _unsupported("PostgreSQL", typ, column)


def _mysql_type(typ: pa.DataType, column: str) -> str:
    import pyarrow.types as t

    ints = {8: "TINYINT", 16: "SMALLINT", 32: "INT", 64: "BIGINT"}
    if t.is_boolean(typ):
        return "BOOLEAN"
    if t.is_signed_integer(typ):
        return ints[typ.bit_width]
    if t.is_unsigned_integer(typ):
        return ints[typ.bit_width] + " UNSIGNED"
    if t.is_float16(typ) or t.is_float32(typ):
        return "FLOAT"
    if t.is_float64(typ):
        return "DOUBLE"
    if t.is_decimal(typ):
        if typ.precision > 65 or typ.scale > 38:
            raise DataError(
                f"column {column!r} is {typ}: MySQL/MariaDB DECIMAL holds at most 65 digits, 38 after the point",
                hint="cast it to a smaller decimal or to string",
            )
        return f"DECIMAL({typ.precision},{typ.scale})"
    if t.is_string(typ) or t.is_large_string(typ) or t.is_string_view(typ) or t.is_null(typ):
        return "LONGTEXT"
    if t.is_binary(typ) or t.is_large_binary(typ) or t.is_fixed_size_binary(typ) or t.is_binary_view(typ):
        return "LONGBLOB"
    if t.is_date(typ):
        return "DATE"
    if t.is_timestamp(typ):
        return "DATETIME(6)"  # no time zone type: tz-aware values are written in UTC
    if t.is_time(typ):
        return "TIME(6)"
    if t.is_nested(typ):
        return "JSON"
    raise _unsupported("MySQL/MariaDB", typ, column)


def _sqlite_type(typ: pa.DataType, column: str) -> str:
    import pyarrow.types as t

    # SQLite stores values dynamically; the declared type picks the affinity and tells
    # read_sqlite which Arrow type to give the column back.
    if t.is_boolean(typ):
        return "BOOLEAN"
    if t.is_integer(typ):
        return "INTEGER"
    if t.is_floating(typ):
        return "REAL"
    if t.is_decimal(typ):
        return f"DECIMAL({typ.precision},{typ.scale})"
    if t.is_string(typ) or t.is_large_string(typ) or t.is_string_view(typ) or t.is_null(typ):
        return "TEXT"
    if t.is_binary(typ) or t.is_large_binary(typ) or t.is_fixed_size_binary(typ) or t.is_binary_view(typ):
        return "BLOB"
    if t.is_date(typ):
        return "DATE"
    if t.is_timestamp(typ):
        return "TIMESTAMPTZ" if typ.tz else "TIMESTAMP"
    if t.is_time(typ):
        return "TIME"
    if t.is_nested(typ):
        return "JSON"
    raise _unsupported("SQLite", typ, column)
