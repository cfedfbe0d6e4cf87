"""write_duckdb: load a stream into a table of a DuckDB database file.

``append`` inserts the stream into the table (created from the Arrow schema when missing),
matching columns by name. ``replace`` loads into a staging table and swaps it in within the same
transaction, so readers see the old table or the new one, never a partial one; a failure or a
``kill -9`` leaves the old table (DuckDB's WAL rolls back the uncommitted transaction).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from oxiflow.data import OxiData
from oxiflow.engine.duck import connect, ident
from oxiflow.errors import DataError, RunCancelled
from oxiflow.oxi import OxiConfig, Sink, StepContext, oxi

if TYPE_CHECKING:
    import duckdb


class WriteDuckdbConfig(OxiConfig):
    database: str
    """DuckDB database file (created when missing); relative paths start at the pipeline's folder."""
    table: str
    """Target table, optionally schema-qualified (`analytics.orders`)."""
    write_disposition: Literal["append", "replace"] = "append"
    """`append` inserts the rows; `replace` swaps in a new table atomically."""
    create_schema: bool = True
    """Create the table's schema (`analytics` in `analytics.orders`) when it does not exist."""


def split_table(name: str) -> tuple[str | None, str]:
    """``schema.table`` -> (schema, table); a bare name has no schema."""
    parts = name.split(".")
    if len(parts) == 1 and parts[0]:
        return None, parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise DataError(f"table {name!r} is not `table` or `schema.table`", hint="quote-free names, one dot at most")


@oxi(
    "write_duckdb",
    kind="sink",
    config=WriteDuckdbConfig,
    summary="Write into a DuckDB table (append, or replace atomically).",
    example=(
        "- name: write_duckdb\n  config:\n    database: warehouse.duckdb\n    table: analytics.orders\n"
        "    write_disposition: replace"
    ),
)
class WriteDuckdb(Sink):
    config: WriteDuckdbConfig

    def write(self, data: OxiData, ctx: StepContext) -> None:
        import duckdb

        cfg = self.config
        path = ctx.output_path(cfg.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        schema, table = split_table(cfg.table)
        qualified = (ident(schema) + "." if schema else "") + ident(table)
        con = connect(ctx, str(path))
        try:
            # The stream can be scanned once: tables are created from an empty twin with its schema.
            con.register("input_schema", data.schema.empty_table())
            con.register("input_stream", data.to_reader())
            con.execute("BEGIN TRANSACTION")
            try:
                if schema and cfg.create_schema:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
                if cfg.write_disposition == "replace":
                    rows = _replace(con, schema, table, qualified)
                else:
                    rows = _append(con, qualified)
                if ctx.cancel.is_set():
                    raise RunCancelled("write cancelled before commit", step=ctx.step_id)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        except duckdb.InterruptException:
            raise RunCancelled("write interrupted", step=ctx.step_id) from None
        except duckdb.Error as exc:
            raise DataError(
                f"writing table {cfg.table!r} in {path} failed: {str(exc).strip().splitlines()[0]}",
                file=str(path),
                hint="check that the input columns match the table's columns and types",
            ) from None
        finally:
            con.close()
        ctx.metadata.update(rows=rows, table=cfg.table, database=str(path))
        ctx.bytes_written += path.stat().st_size if path.exists() else 0


def _append(con: duckdb.DuckDBPyConnection, qualified: str) -> int:
    # A zero-row CREATE keeps the Arrow types; IF NOT EXISTS leaves an existing table alone.
    con.execute(f"CREATE TABLE IF NOT EXISTS {qualified} AS SELECT * FROM input_schema")
    return _insert(con, qualified)


def _replace(con: duckdb.DuckDBPyConnection, schema: str | None, table: str, qualified: str) -> int:
    prefix = ident(schema) + "." if schema else ""
    staging_name = f"_oxiflow_staging_{table}"
    staging = prefix + ident(staging_name)
    con.execute(f"DROP TABLE IF EXISTS {staging}")
    con.execute(f"CREATE TABLE {staging} AS SELECT * FROM input_schema")
    rows = _insert(con, staging)
    con.execute(f"DROP TABLE IF EXISTS {qualified}")
    con.execute(f"ALTER TABLE {staging} RENAME TO {ident(table)}")
    return rows


def _insert(con: duckdb.DuckDBPyConnection, qualified: str) -> int:
    row = con.execute(f"INSERT INTO {qualified} BY NAME SELECT * FROM input_stream").fetchone()
    return int(row[0]) if row else 0


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except Exception:  # no transaction left (DuckDB already aborted it): nothing to undo
        pass
