"""write_duckdb: load a stream into a table of a DuckDB database file.

``append`` inserts the stream into the table (created from the Arrow schema when missing),
matching columns by name. ``replace`` loads into a staging table and swaps it in within the same
transaction, so readers see the old table or the new one, never a partial one; a failure or a
``kill -9`` leaves the old table (DuckDB's WAL rolls back the uncommitted transaction).
``merge``, ``scd2`` and ``delete_insert`` load a temporary staging table and apply it with the
statements of :mod:`oxiflow.oxis.databases.dispositions`, in the same transaction.

Input columns the table lacks are added (``ALTER TABLE ... ADD COLUMN``) for every disposition.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from oxiflow.engine.duck import connect, ident, literal, unimportable_error
from oxiflow.errors import DataError, RunCancelled
from oxiflow.incremental import crash_point
from oxiflow.oxi import PushedQuery, Sink, StepContext, oxi
from oxiflow.oxis.databases.dispositions import (
    DUCKDB,
    DispositionConfig,
    insert_rows,
    reserved,
    statements,
    system_columns,
)
from oxiflow.oxis.databases.sqlsink import LOADS_TABLE, load_id_of, prune_markers_sql

if TYPE_CHECKING:
    import duckdb

    from oxiflow.data import OxiData

NEW_LOAD_ID = "_oxiflow_new_load_id"  # replace: the load id's column until an input column of its name is gone


class WriteDuckdbConfig(DispositionConfig):
    database: str
    """DuckDB database file (created when missing); relative paths start at the pipeline's folder."""
    table: str
    """Target table, optionally schema-qualified (`analytics.orders`)."""
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
    summary="Write into a DuckDB table: append, replace atomically, merge (upsert), scd2 history, delete_insert.",
    example=(
        "- name: write_duckdb\n  config:\n    database: warehouse.duckdb\n    table: analytics.orders\n"
        "    write_disposition: merge\n    primary_key: [order_id]"
    ),
)
class WriteDuckdb(Sink):
    config: WriteDuckdbConfig

    def write(self, data: OxiData, ctx: StepContext) -> None:
        import duckdb
        import pyarrow as pa

        cfg = self.config
        path = ctx.output_path(cfg.database)

        def prepare(con: duckdb.DuckDBPyConnection) -> None:
            # The stream can be scanned once: tables are created from an empty twin with its schema.
            con.register("input_schema", data.schema.empty_table())
            con.register("input_stream", data.to_reader())

        try:
            self._load(ctx, prepare, "SELECT * FROM input_schema", "SELECT * FROM input_stream")
        except duckdb.InterruptException:
            raise RunCancelled("write interrupted", step=ctx.step_id) from None
        except (duckdb.Error, pa.ArrowException) as exc:
            if (unfit := unimportable_error(data.schema, f"table {cfg.table!r}")) is not None:
                raise unfit from None
            raise DataError(
                f"writing table {cfg.table!r} in {path} failed: {str(exc).strip().splitlines()[0]}",
                file=str(path),
                hint="check that the input columns match the table's columns and types",
            ) from None

    def pushdown_ready(self) -> bool:
        return True  # every disposition starts from "rows of a query": the stream or the pushed-down one

    def write_query(self, query: PushedQuery, ctx: StepContext) -> int:
        return self._load(ctx, query.prepare, f"SELECT * FROM ({query.sql}) LIMIT 0", query.sql)

    def _load(
        self, ctx: StepContext, prepare: Callable[[duckdb.DuckDBPyConnection], None], empty_sql: str, rows_sql: str
    ) -> int:
        """Load ``rows_sql`` in one transaction; ``empty_sql`` (no rows, the same columns) gives the types."""
        cfg = self.config
        path = ctx.output_path(cfg.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        schema, table = split_table(cfg.table)
        qualified = (ident(schema) + "." if schema else "") + ident(table)
        load_id = load_id_of(ctx)
        changes: dict[str, int] = {}
        created = not path.exists()  # a failed first load must not leave an empty database behind
        con = connect(ctx, str(path))
        try:
            prepare(con)
            source = f"({rows_sql}) AS src"
            incoming: dict[str, str] = {}
            columns: dict[str, str] = {}
            if cfg.write_disposition != "replace":
                # (replace takes the types from the load itself: binding a pushed-down scan sniffs its
                # file again, ~40 ms of JSON)
                skip = reserved(cfg)  # an input `_oxi_load_id` (a copy of an oxiflow table) is replaced
                incoming = _describe(con, empty_sql)
                columns = {n: t for n, t in incoming.items() if n not in skip}
                _check_columns(cfg, columns)
            con.execute("BEGIN TRANSACTION")
            try:
                if schema and cfg.create_schema:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
                if cfg.write_disposition == "replace":
                    rows = _replace(con, cfg, schema, table, qualified, source, load_id)
                elif cfg.write_disposition == "append":
                    _ensure_table(con, cfg, schema, table, qualified, columns)
                    rows = _append(con, cfg, qualified, rows_sql, source, columns, len(incoming), load_id)
                else:
                    rows = self._apply(ctx, con, schema, table, qualified, columns, source, load_id, changes)
                if ctx.load_id is not None:
                    # the load's marker commits with its rows: recovery asks load_committed() for it
                    _mark_load(con, schema, ctx)
                if ctx.cancel.is_set():
                    raise RunCancelled("write cancelled before commit", step=ctx.step_id)
                crash_point("before_sink_commit")
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        except BaseException:
            if created:
                con.close()
                for leftover in (path, path.with_name(path.name + ".wal")):
                    leftover.unlink(missing_ok=True)
            raise
        finally:
            con.close()
        ctx.metadata.update(rows=rows, table=cfg.table, database=str(path))
        if cfg.load_id_column:
            ctx.metadata["load_id"] = load_id
        if changes:
            ctx.metadata["changes"] = changes
        ctx.bytes_written += path.stat().st_size if path.exists() else 0
        return rows

    def load_committed(self, load_id: str, ctx: StepContext) -> bool | None:
        import duckdb

        path = ctx.output_path(self.config.database)
        if not path.exists():
            return False
        schema, _ = split_table(self.config.table)
        loads = (ident(schema) + "." if schema else "") + ident(LOADS_TABLE)
        con = duckdb.connect(str(path), read_only=True)
        try:
            rows = con.execute(f"SELECT count(*) FROM {loads} WHERE load_id = ? AND step = ?", [load_id, ctx.step_id])
            return bool(rows.fetchall()[0][0])
        except duckdb.CatalogException:  # no load was ever marked here
            return False
        finally:
            con.close()

    def _apply(
        self,
        ctx: StepContext,
        con: duckdb.DuckDBPyConnection,
        schema: str | None,
        table: str,
        qualified: str,
        columns: dict[str, str],
        source: str,
        load_id: str,
        changes: dict[str, int],
    ) -> int:
        """merge / scd2 / delete_insert: load a temporary staging table, then run the disposition's statements."""
        cfg = self.config
        staging = f"_oxiflow_staging_{table}"
        cols = ", ".join(ident(c) for c in columns)
        # a temp table: in memory (spilling under the memory limit), never in the database file's WAL
        con.execute(f"CREATE TEMP TABLE {ident(staging)} AS SELECT {cols} FROM {source}")
        rows, unique = _count(con, f"SELECT count(*) FROM {ident(staging)}"), False
        if cfg.primary_key:
            unique = _check_keys(con, staging, cfg.primary_key, cfg.table, rows)
        target_columns = _ensure_table(con, cfg, schema, table, qualified, columns)
        load_time = None
        if cfg.write_disposition == "scd2":
            load_time = _utc((cfg.scd2 and cfg.scd2.load_time) or ctx.metadata.get("load_time") or datetime.now(UTC))
        for label, sql in statements(
            DUCKDB,
            cfg,
            target=qualified,
            staging=staging,
            columns=columns,
            target_columns=target_columns,
            load_id=load_id,
            load_time=load_time,
            unique_keys=unique,
        ):
            n = _count(con, sql)
            if label:
                changes[label] = changes.get(label, 0) + n
            ctx.check_cancelled()
        return rows


def _describe(con: duckdb.DuckDBPyConnection, select: str) -> dict[str, str]:
    """Column name -> DuckDB type of a query's result."""
    return {str(r[0]): str(r[1]) for r in con.execute(f"DESCRIBE {select}").fetchall()}


def _table_columns(con: duckdb.DuckDBPyConnection, schema: str | None, table: str) -> list[str] | None:
    """The columns of a table of the database file (not a temp table), or None when there is none."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema or "main", table],
    ).fetchall()
    return [str(r[0]) for r in rows] or None


def _ensure_table(
    con: duckdb.DuckDBPyConnection,
    cfg: WriteDuckdbConfig,
    schema: str | None,
    table: str,
    qualified: str,
    columns: dict[str, str],
) -> list[str]:
    """Create the target, or add the columns it lacks (schema growth); return its columns."""
    wanted = [*columns.items(), *system_columns(DUCKDB, cfg)]
    existing = _table_columns(con, schema, table)
    if existing is None:
        con.execute(f"CREATE TABLE {qualified} (" + ", ".join(f"{ident(n)} {t}" for n, t in wanted) + ")")
        return [n for n, _ in wanted]
    for name, typ in wanted:
        if name not in existing:
            con.execute(f"ALTER TABLE {qualified} ADD COLUMN {ident(name)} {typ}")
            existing.append(name)
    return existing


def _check_columns(cfg: WriteDuckdbConfig, columns: Collection[str]) -> None:
    """The configured key/partition/option columns must be input columns."""
    opts = cfg.options()
    named = {
        "primary_key": cfg.primary_key or [],
        "partition_by": (cfg.partition_by or []) if cfg.write_disposition == "delete_insert" else [],
        "dedup_sort": [opts.dedup_sort.column] if opts.dedup_sort else [],
    }
    for option, names in named.items():
        missing = [n for n in names if n not in columns]
        if missing:
            raise DataError(
                f"{option} names column(s) {missing} that the input does not have",
                hint=f"the input's columns: {', '.join(columns)}",
            )


def _check_keys(con: duckdb.DuckDBPyConnection, staging: str, keys: list[str], table: str, rows: int) -> bool:
    """Fail on a NULL key; whether every key of the load is unique (then no dedup is needed)."""
    cond = " OR ".join(f"{ident(k)} IS NULL" for k in keys)
    key = ident(keys[0]) if len(keys) == 1 else "row(" + ", ".join(ident(k) for k in keys) + ")"
    row = con.execute(f"SELECT count(*) FILTER (WHERE {cond}), count(DISTINCT {key}) FROM {ident(staging)}").fetchone()
    nulls, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
    if nulls:
        raise DataError(
            f"{nulls} row(s) of the load have a NULL in the primary key {keys} of {table!r}",
            hint="filter them out or fill the key before the sink: a NULL key matches no row",
        )
    return distinct == rows


def _utc(value: object) -> datetime:
    """A load time as naive UTC (the `_valid_from` / `_valid_to` columns are TIMESTAMP in UTC)."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def _replace(
    con: duckdb.DuckDBPyConnection,
    cfg: WriteDuckdbConfig,
    schema: str | None,
    table: str,
    qualified: str,
    source: str,
    load_id: str,
) -> int:
    """The load into a staging table (CREATE TABLE AS: the query's own types), renamed over the table."""
    prefix = ident(schema) + "." if schema else ""
    staging_name = f"_oxiflow_staging_{table}"
    staging = prefix + ident(staging_name)
    con.execute(f"DROP TABLE IF EXISTS {staging}")
    tag = cfg.load_id_column
    # the load id under a name no input has; an input column of the load id's name is replaced by it
    tagged = f", {literal(load_id)} AS {ident(NEW_LOAD_ID)}" if tag else ""
    rows = _count(con, f"CREATE TABLE {staging} AS SELECT *{tagged} FROM {source}")
    names = _table_columns(con, schema, staging_name) or []
    if tag:
        if tag in names:
            con.execute(f"ALTER TABLE {staging} DROP COLUMN {ident(tag)}")
        con.execute(f"ALTER TABLE {staging} RENAME COLUMN {ident(NEW_LOAD_ID)} TO {ident(tag)}")
    _check_columns(cfg, [n for n in names if n not in (tag, NEW_LOAD_ID)])
    con.execute(f"DROP TABLE IF EXISTS {qualified}")
    con.execute(f"ALTER TABLE {staging} RENAME TO {ident(table)}")
    return rows


def _append(
    con: duckdb.DuckDBPyConnection,
    cfg: WriteDuckdbConfig,
    qualified: str,
    rows_sql: str,
    source: str,
    columns: dict[str, str],
    incoming: int,
    load_id: str,
) -> int:
    if not cfg.load_id_column and len(columns) == incoming:
        # the plain form: with nothing added, DuckDB casts to the table's types inside a pushed-down
        # reader, which then reports a bad value with its file and line
        return _count(con, f"INSERT INTO {qualified} BY NAME {rows_sql}")
    return _count(con, insert_rows(DUCKDB, cfg, qualified, source, list(columns), load_id))


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """Run a statement; its row count (DuckDB returns it as the single value of INSERT/UPDATE/DELETE)."""
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except Exception:  # no transaction left (DuckDB already aborted it): nothing to undo
        pass


def _mark_load(con: duckdb.DuckDBPyConnection, schema: str | None, ctx: StepContext) -> None:
    """An ``_oxi_loads`` row for this load, inside the transaction that writes its rows."""
    loads = (ident(schema) + "." if schema else "") + ident(LOADS_TABLE)
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {loads} (load_id VARCHAR NOT NULL, pipeline VARCHAR, step VARCHAR NOT NULL, "
        "committed_at TIMESTAMPTZ NOT NULL)"
    )
    con.execute(f"INSERT INTO {loads} VALUES (?, ?, ?, now())", [ctx.load_id, ctx.pipeline, ctx.step_id])
    con.execute(prune_markers_sql(loads, ctx, literal))  # earlier loads are settled: their markers are not needed
