"""Write dispositions as SQL: a staging table holding one load -> the statements that apply it.

Every table sink loads the same way (``write_duckdb``; ``write_postgres``, ``write_mysql`` and
``write_sqlite`` through :func:`oxiflow.oxis.databases.sqlsink.write_table`):

1. load the batch into a **staging table** (``append`` may load straight into the target);
2. make sure the target exists and has every input column plus the disposition's
   :func:`system_columns` (``ALTER TABLE ... ADD COLUMN`` for new ones: schema growth);
3. run :func:`statements` -- a list of ``(label, sql)`` -- inside the same transaction as the load;
   a label (``inserted``, ``deleted``, ``closed`` ...) names what the statement's row count means.

Only step 3 lives here, and it is plain SQL built from a :class:`Dialect`: quoting plus the few
pieces that differ between databases (a temporary table, the row hash, "delete/update the rows
matching another table", NULL-safe comparison, ``NULLS LAST``, which expression gives the staging
table's load order). :data:`DUCKDB` and :data:`POSTGRES` are plain ``Dialect`` values (PostgreSQL
joins the hash's parts with ``array_to_string(ARRAY[...])``: ``concat_ws`` takes at most 100
arguments); :class:`SqliteDialect` and :class:`MysqlDialect` override what their SQL lacks (SQLite:
no ``md5``, so the sink registers ``oxi_md5`` on its connection, and no ``DELETE ... USING``;
MySQL: ``<=>``, multi-table ``DELETE``/``UPDATE``, ``CONCAT``, no ``NULLS LAST``).

The plans are set-based on purpose: one ``DELETE ... USING`` plus one ``INSERT`` beat DuckDB's own
``MERGE INTO`` (no index) and ``INSERT OR REPLACE`` (primary-key table) for 1M rows into 5M: 1.5 s
against 3.2 s and 3.8 s with wide unique strings, 0.3 s against 0.76 s on the benchmark orders,
all in one process. They need no index or constraint on the target. The dedup window (0.2 s of
it) runs only when a key repeats in the load: the sink checks ``count(DISTINCT key)`` first.

Semantics (docs/dispositions.md has them with examples):

- ``append``: insert the rows.
- ``replace``: handled by the sink (load a staging table, swap it in).
- ``merge`` on ``primary_key``: the load is first **deduplicated** by key -- by default the last
  row in load order wins, or the first after ordering by ``dedup_sort`` (``desc``: the highest
  value wins; NULLs lose; ties go to the later row). Target rows with a key of the load are
  deleted, then the winners are inserted, except those whose ``hard_delete`` column is truthy
  (``true`` for a boolean column, not NULL for any other type): those only delete. Columns the
  target has and the input lacks **keep their target values** for updated keys (NULL for new
  keys); dlt sets them to NULL -- keeping them makes a partial load an update of those columns only.
- ``scd2``: history. The target gets ``_valid_from``, ``_valid_to`` (NULL = current),
  ``_is_current`` and ``_row_hash``. After the same dedup, a key whose hash differs from its
  current version's (or that is deleted) has that version closed (``_valid_to`` = the load time,
  ``_is_current`` = false) and, unless deleted, a new version opened (``_valid_from`` = the load
  time). Same hash: nothing happens. With ``full_snapshot`` (the default, as dlt does) a current
  key absent from the load is closed too -- so an empty snapshot closes everything.
- ``delete_insert`` by ``partition_by``: delete the target rows whose partition values (NULL
  matching NULL) appear in the load, insert the whole load: running a backfill twice gives the
  same table.

Every inserted row gets the load id in ``load_id_column`` (``_oxi_load_id`` unless disabled).

The row hash (:meth:`Dialect.row_hash`) is ``md5`` over the non-key input columns sorted by name,
each NULL-free one written as ``name<US>text`` and joined with ``<RS>`` (ASCII unit and record
separators), the text being the database's cast of the value to text. NULLs are left out, so a
column added later with NULLs does not change old hashes, while NULL -> value does change it. It
is stable across runs and DuckDB versions as long as DuckDB's text form of a value stays the same
(it is documented and has been for integers, decimals, strings, dates and timestamps; doubles
print their shortest round-trip form). Each database hashes its own text form, so the same row can
hash differently in DuckDB and PostgreSQL (``1.0`` vs ``1`` for a double): hashes are compared
only within one table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import model_validator

from oxiflow.engine.duck import ident, literal
from oxiflow.errors import DataError
from oxiflow.oxi import OxiConfig
from oxiflow.oxis.databases.sqltypes import quote_ident

Disposition = Literal["append", "replace", "merge", "scd2", "delete_insert"]

LOAD_ID_COLUMN = "_oxi_load_id"
VALID_FROM, VALID_TO, IS_CURRENT, ROW_HASH = "_valid_from", "_valid_to", "_is_current", "_row_hash"
SCD2_COLUMNS = (VALID_FROM, VALID_TO, IS_CURRENT, ROW_HASH)


# -- configuration ------------------------------------------------------------------------------
class DedupSort(OxiConfig):
    column: str
    """Column that decides which row wins among rows of one load with the same key."""
    order: Literal["asc", "desc"] = "desc"
    """`desc`: the highest value wins (the latest `updated_at`); `asc`: the lowest. NULLs lose; ties: the later row."""


class MergeOptions(OxiConfig):
    dedup_sort: DedupSort | None = None
    """Which row wins among duplicate keys inside one load; default: the last row in load order."""
    hard_delete: str | None = None
    """Column marking deletions: a truthy value (`true`, or not NULL for non-boolean columns) deletes the
    target row with that key, and the row itself is not inserted. A load without the column deletes nothing."""


class Scd2Options(MergeOptions):
    full_snapshot: bool = True
    """The load is the whole source: current keys absent from it are closed (deleted). False: only keys in
    the load are considered (incremental loads)."""
    load_time: datetime | None = None
    """`_valid_from` of new versions and `_valid_to` of closed ones (UTC, one value per load). Default: the
    load's start; set it to backfill history as of a date."""


class DispositionConfig(OxiConfig):
    """The disposition fields shared by the table sinks (write_duckdb, write_postgres, write_mysql, write_sqlite)."""

    write_disposition: Disposition = "append"
    """`append` inserts; `replace` swaps in a new table atomically; `merge` upserts on `primary_key`;
    `scd2` keeps a history of versions per `primary_key`; `delete_insert` replaces the `partition_by`
    partitions present in the load."""
    primary_key: list[str] | None = None
    """Key column(s) for `merge` and `scd2` (required there)."""
    merge: MergeOptions | None = None
    """`merge` options: `dedup_sort`, `hard_delete`."""
    scd2: Scd2Options | None = None
    """`scd2` options: `full_snapshot`, `load_time`, `dedup_sort`, `hard_delete`."""
    partition_by: list[str] | None = None
    """Partition column(s) for `delete_insert` (required there)."""
    load_id_column: str | None = LOAD_ID_COLUMN
    """Column holding the load id of each inserted row (`null`: none)."""

    @model_validator(mode="after")
    def _check_disposition(self) -> DispositionConfig:
        check_disposition(self.write_disposition, self.primary_key, self.partition_by, self.merge, self.scd2)
        return self

    def options(self) -> MergeOptions:
        """The dedup/hard-delete options in force for this disposition."""
        if self.write_disposition == "scd2":
            return self.scd2 or Scd2Options()
        return self.merge or MergeOptions()


def check_disposition(
    disposition: str,
    primary_key: list[str] | None,
    partition_by: list[str] | None,
    merge: MergeOptions | None,
    scd2: Scd2Options | None,
) -> None:
    """ValueErrors (config errors at validate time) for options that do not fit the disposition."""
    if disposition in ("merge", "scd2") and not primary_key:
        raise ValueError(f"write_disposition {disposition} needs primary_key: the column(s) identifying a row")
    if disposition == "delete_insert" and not partition_by:
        raise ValueError("write_disposition delete_insert needs partition_by: the column(s) whose values it replaces")
    if merge is not None and disposition != "merge":
        raise ValueError(f"`merge` options apply to write_disposition merge, not {disposition}")
    if scd2 is not None and disposition != "scd2":
        raise ValueError(f"`scd2` options apply to write_disposition scd2, not {disposition}")
    if primary_key and len(set(primary_key)) != len(primary_key):
        raise ValueError(f"primary_key repeats a column: {primary_key}")
    opts = merge or scd2
    if opts is not None and opts.hard_delete and primary_key and opts.hard_delete in primary_key:
        raise ValueError(f"hard_delete column {opts.hard_delete!r} is part of the primary key")


def check_input_columns(cfg: DispositionConfig, columns: Sequence[str], table: str) -> None:
    """DataError when a key / partition / dedup_sort column is not an input column (before anything runs)."""
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
                f"{cfg.write_disposition} into {table!r}: {option} names column(s) {missing} that the input lacks",
                hint=f"the input's columns: {', '.join(columns)}",
            )


def load_time(cfg: DispositionConfig, metadata: dict[str, object]) -> datetime:
    """The scd2 load time as naive UTC: ``scd2.load_time``, else the state store's, else now."""
    value = (cfg.scd2 and cfg.scd2.load_time) or metadata.get("load_time") or datetime.now(UTC)
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


# -- dialects -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dialect:
    """What differs between databases in the disposition SQL."""

    name: str
    quote: Callable[[str], str]
    literal: Callable[[object], str]
    load_order: str
    """Expression over the staging table giving the load order of its rows (DuckDB: ``rowid``)."""
    timestamp_type: str
    boolean_type: str
    text_type: str
    temp_table_sql: str = "CREATE TEMP TABLE {name} AS {select}"
    hash_sql: str = "md5({text})"
    join_sql: str = "concat_ws({sep}, {parts})"
    """Join the hash's parts with ``sep``, leaving NULL parts out."""

    def temp_table(self, name: str, select: str) -> str:
        return self.temp_table_sql.format(name=name, select=select)

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS {self.text_type})"

    def concat(self, left: str, right: str) -> str:
        return f"{left} || {right}"

    def timestamp(self, value: datetime) -> str:
        """A naive UTC timestamp as a SQL value of ``timestamp_type``."""
        return f"CAST({self.literal(value.isoformat(sep=' '))} AS {self.timestamp_type})"

    def hash_parts(self, alias: str, columns: Sequence[str]) -> list[str]:
        """``name<US>text`` of each column of ``alias``, sorted by name; NULL for a NULL value."""
        return [
            f"CASE WHEN {alias}.{self.quote(c)} IS NULL THEN NULL ELSE "
            f"{self.concat(self.literal(c + chr(31)), self.text(alias + '.' + self.quote(c)))} END"
            for c in sorted(columns)
        ]

    def row_hash(self, alias: str, columns: Sequence[str]) -> str:
        """Deterministic hash of ``columns`` of ``alias`` (see the module doc for the exact text)."""
        parts = self.hash_parts(alias, columns)
        text = self.join_sql.format(sep=self.literal(chr(30)), parts=", ".join(parts)) if parts else self.literal("")
        return self.hash_sql.format(text=text)

    def not_distinct(self, left: str, right: str) -> str:
        """NULL-safe equality (NULL matches NULL)."""
        return f"{left} IS NOT DISTINCT FROM {right}"

    def distinct(self, left: str, right: str) -> str:
        return f"{left} IS DISTINCT FROM {right}"

    def nulls_last(self, expr: str, direction: str) -> str:
        return f"{expr} {direction} NULLS LAST"

    def delete_matching(self, target: str, source: str, on: str) -> str:
        """Delete the rows of ``target`` (alias ``t``) that match a row of ``source`` (alias ``s``) by ``on``."""
        return f"DELETE FROM {target} AS t USING {source} AS s WHERE {on}"

    def update(self, target: str, source: str | None, assignments: Sequence[tuple[str, str]], where: str) -> str:
        """UPDATE ``target`` (alias ``t``) setting ``column = value``, joined to ``source`` (alias ``s``) if given."""
        sets = ", ".join(f"{self.quote(c)} = {v}" for c, v in assignments)
        joined = f" FROM {source} AS s" if source else ""
        return f"UPDATE {target} AS t SET {sets}{joined} WHERE {where}"

    def is_boolean(self, sql_type: str) -> bool:
        return sql_type.upper() in ("BOOLEAN", "BOOL")


@dataclass(frozen=True)
class SqliteDialect(Dialect):
    """SQLite: no ``md5`` (the sink registers :func:`oxi_md5` as ``oxi_md5``), no ``concat_ws`` before
    3.44, no ``DELETE ... USING``; timestamps are ISO text (a ``CAST`` to TIMESTAMP would make a number)."""

    def row_hash(self, alias: str, columns: Sequence[str]) -> str:
        # each non-NULL part prefixed by <RS>, the first one stripped: concat_ws without its argument limit
        sep = self.literal(chr(30))
        parts = [f"coalesce({self.concat(sep, p)}, '')" for p in self.hash_parts(alias, columns)]
        text = " || ".join(parts) if parts else self.literal("")
        return f"oxi_md5(substr({text}, 2))" if parts else f"oxi_md5({text})"

    def timestamp(self, value: datetime) -> str:
        return self.literal(value.isoformat(sep=" "))  # the text write_sqlite stores for a timestamp

    def delete_matching(self, target: str, source: str, on: str) -> str:
        return f"DELETE FROM {target} AS t WHERE EXISTS (SELECT 1 FROM {source} AS s WHERE {on})"


@dataclass(frozen=True)
class MysqlDialect(Dialect):
    """MySQL/MariaDB: ``<=>``, multi-table DELETE and UPDATE, ``CONCAT`` (``||`` is OR), ``CAST(... AS
    CHAR)``, no ``NULLS LAST``; temporary tables, whose CREATE and DROP do not commit the transaction."""

    def text(self, expr: str) -> str:
        return f"CAST({expr} AS CHAR)"

    def concat(self, left: str, right: str) -> str:
        return f"CONCAT({left}, {right})"

    def not_distinct(self, left: str, right: str) -> str:
        return f"{left} <=> {right}"

    def distinct(self, left: str, right: str) -> str:
        return f"NOT ({left} <=> {right})"

    def nulls_last(self, expr: str, direction: str) -> str:
        return f"{expr} IS NULL, {expr} {direction}"

    def delete_matching(self, target: str, source: str, on: str) -> str:
        return f"DELETE t FROM {target} AS t JOIN {source} AS s ON {on}"

    def update(self, target: str, source: str | None, assignments: Sequence[tuple[str, str]], where: str) -> str:
        sets = ", ".join(f"t.{self.quote(c)} = {v}" for c, v in assignments)
        joined = f", {source} AS s" if source else ""
        return f"UPDATE {target} AS t{joined} SET {sets} WHERE {where}"

    def is_boolean(self, sql_type: str) -> bool:
        return sql_type.upper() in ("BOOLEAN", "BOOL", "TINYINT(1)")


DUCKDB = Dialect(
    name="duckdb",
    quote=ident,
    literal=literal,
    load_order="rowid",
    timestamp_type="TIMESTAMP",
    boolean_type="BOOLEAN",
    text_type="VARCHAR",
)


def oxi_md5(text: str | None) -> str | None:
    """md5 of the UTF-8 text as hex: SQLite's ``oxi_md5`` (the same digest PostgreSQL's and MySQL's md5 give)."""
    return None if text is None else hashlib.md5(text.encode("utf-8")).hexdigest()


def _mysql_literal(value: object) -> str:
    """A MySQL string literal that means the same whatever ``sql_mode`` (NO_BACKSLASH_ESCAPES or not)."""
    text = str(value)
    if "\\" in text or "\x00" in text:
        return f"CONVERT(X'{text.encode('utf-8').hex()}' USING utf8mb4)"
    return "'" + text.replace("'", "''") + "'"


def _sql_literal(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# The load order of a server staging table is an identity column filled in load order.
LOAD_ORDER_COLUMN = "_oxi_row"

POSTGRES = Dialect(
    name="postgres",
    quote=lambda name: quote_ident("postgres", name),
    literal=_sql_literal,
    load_order=f'"{LOAD_ORDER_COLUMN}"',  # a fixed plain name (quoting it here would import psycopg at import)
    timestamp_type="timestamp",
    boolean_type="boolean",
    text_type="text",
    join_sql="array_to_string(ARRAY[{parts}], {sep})",  # concat_ws takes at most 100 arguments
)

MYSQL = MysqlDialect(
    name="mysql",
    quote=lambda name: quote_ident("mysql", name),
    literal=_mysql_literal,
    load_order=quote_ident("mysql", LOAD_ORDER_COLUMN),
    timestamp_type="DATETIME(6)",
    boolean_type="BOOLEAN",
    text_type="LONGTEXT",
    temp_table_sql="CREATE TEMPORARY TABLE {name} AS {select}",
    hash_sql="MD5({text})",
)

SQLITE = SqliteDialect(
    name="sqlite",
    quote=lambda name: quote_ident("sqlite", name),
    literal=_sql_literal,
    load_order="rowid",
    timestamp_type="TIMESTAMP",
    boolean_type="BOOLEAN",
    text_type="TEXT",
)

DIALECTS: dict[str, Dialect] = {"duckdb": DUCKDB, "postgres": POSTGRES, "mysql": MYSQL, "sqlite": SQLITE}


def system_columns(dialect: Dialect, cfg: DispositionConfig) -> list[tuple[str, str]]:
    """The columns the disposition adds to the target, with their types."""
    cols: list[tuple[str, str]] = []
    if cfg.write_disposition == "scd2":
        cols += [
            (VALID_FROM, dialect.timestamp_type),
            (VALID_TO, dialect.timestamp_type),
            (IS_CURRENT, dialect.boolean_type),
            (ROW_HASH, dialect.text_type),
        ]
    if cfg.load_id_column:
        cols.append((cfg.load_id_column, dialect.text_type))
    return cols


def reserved(cfg: DispositionConfig) -> set[str]:
    """Input columns the disposition writes itself: an input column of that name is replaced."""
    names = {cfg.load_id_column} if cfg.load_id_column else set()
    if cfg.write_disposition == "scd2":
        names.update(SCD2_COLUMNS)
    return names


# -- statements ---------------------------------------------------------------------------------
Statement = tuple[str, str]


def statements(
    dialect: Dialect,
    cfg: DispositionConfig,
    *,
    target: str,
    staging: str,
    columns: dict[str, str],
    target_columns: Sequence[str],
    load_id: str,
    load_time: datetime | None = None,
    unique_keys: bool = False,
) -> list[Statement]:
    """The ``(label, sql)`` statements applying the load in ``staging`` to ``target``.

    ``target`` is the quoted, qualified target; ``staging`` the bare name of a temporary table
    (the helper tables are named after it); ``columns`` the staging table's data
    columns (name -> SQL type, reserved names already left out); ``target_columns`` the target's
    columns after schema growth. ``unique_keys``: the sink checked that no key repeats in the load
    (``count(*) = count(DISTINCT key)``, far cheaper than the dedup window), so no dedup is needed.
    Run them in order, in the load's transaction.
    """
    q = dialect.quote
    loaded = q(staging)
    if cfg.write_disposition == "append":
        return [("inserted", insert_rows(dialect, cfg, target, loaded, list(columns), load_id))]
    if cfg.write_disposition == "delete_insert":
        assert cfg.partition_by
        parts = cfg.partition_by
        source = f"(SELECT DISTINCT {', '.join(q(c) for c in parts)} FROM {loaded})"
        on = " AND ".join(dialect.not_distinct(f"t.{q(c)}", f"s.{q(c)}") for c in parts)
        return [
            ("deleted", dialect.delete_matching(target, source, on)),
            ("inserted", insert_rows(dialect, cfg, target, loaded, list(columns), load_id)),
        ]
    if cfg.write_disposition == "merge":
        return _merge(dialect, cfg, target, staging, columns, target_columns, load_id, unique_keys)
    if cfg.write_disposition == "scd2":
        assert load_time is not None
        return _scd2(dialect, cfg, target, staging, columns, load_id, load_time, unique_keys)
    raise ValueError(f"{cfg.write_disposition} is not applied with statements")  # replace: the sink swaps tables


def insert_rows(
    dialect: Dialect, cfg: DispositionConfig, target: str, source: str, cols: list[str], load_id: str
) -> str:
    """INSERT of ``cols`` from ``source`` (a table, or a subquery with an alias), with the load id."""
    q = dialect.quote
    names = [q(c) for c in cols]
    values = list(names)
    if cfg.load_id_column:
        names.append(q(cfg.load_id_column))
        values.append(dialect.literal(load_id))
    return f"INSERT INTO {target} ({', '.join(names)}) SELECT {', '.join(values)} FROM {source}"


def dedup_select(
    dialect: Dialect, staging: str, columns: Sequence[str], keys: Sequence[str], opts: MergeOptions
) -> str:
    """SELECT of the winning row per key of ``staging`` (``columns`` plus ``_oxi_deleted`` when
    ``hard_delete`` is set); the same rule for tables and Parquet datasets."""
    q = dialect.quote
    order = []
    if opts.dedup_sort:
        order.append(dialect.nulls_last(q(opts.dedup_sort.column), opts.dedup_sort.order.upper()))
    order.append(f"{dialect.load_order} DESC")
    cols = ", ".join(q(c) for c in columns)
    ranked = (
        f"SELECT {cols}, row_number() OVER (PARTITION BY {', '.join(q(k) for k in keys)} "
        f"ORDER BY {', '.join(order)}) AS _oxi_rank FROM {staging}"
    )
    return f"SELECT {cols} FROM ({ranked}) AS ranked WHERE _oxi_rank = 1"


def deleted_expr(dialect: Dialect, column: str, sql_type: str, alias: str | None = None) -> str:
    """SQL truth of a ``hard_delete`` value: true for a boolean column, not NULL for any other."""
    col = (alias + "." if alias else "") + dialect.quote(column)
    return f"({col} IS TRUE)" if dialect.is_boolean(sql_type) else f"({col} IS NOT NULL)"


def _winners(
    dialect: Dialect,
    cfg: DispositionConfig,
    staging: str,
    columns: dict[str, str],
    unique_keys: bool,
    extra: str = "",
) -> tuple[list[Statement], str, Callable[[str], str]]:
    """The rows that win per key: (statements creating their table, its name, ``deleted(alias)``:
    SQL truth of "this row deletes its key").

    With ``unique_keys`` (the sink checked the load has no duplicate key) and nothing to add, the
    staging table itself is the winners' table: no window, no copy (0.2 s of 0.6 s at 1M rows)."""
    assert cfg.primary_key
    q = dialect.quote
    opts = cfg.options()
    # a load without the hard_delete column deletes nothing
    marked = opts.hard_delete if opts.hard_delete in columns else None

    def deleted(alias: str) -> str:
        return deleted_expr(dialect, marked, columns[marked], alias) if marked else "false"

    if unique_keys and not extra:
        return [], q(staging), deleted
    name = q(staging + "_dedup")
    rows = q(staging) if unique_keys else f"({dedup_select(dialect, q(staging), list(columns), cfg.primary_key, opts)})"
    create = dialect.temp_table(name, f"SELECT *, {deleted('w')} AS _oxi_deleted{extra} FROM {rows} AS w")
    return [("", create)], name, lambda alias: f"{alias}._oxi_deleted"


def _merge(
    dialect: Dialect,
    cfg: DispositionConfig,
    target: str,
    staging: str,
    columns: dict[str, str],
    target_columns: Sequence[str],
    load_id: str,
    unique_keys: bool,
) -> list[Statement]:
    assert cfg.primary_key
    q = dialect.quote
    keys = cfg.primary_key
    out, winners, deleted = _winners(dialect, cfg, staging, columns, unique_keys)
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in keys)
    kept = [c for c in target_columns if c not in columns and c != cfg.load_id_column]
    if kept:
        # columns the input lacks keep their target values: read them before the delete
        filled = q(staging + "_filled")
        sel = ", ".join(
            [*(f"s.{q(c)}" for c in columns), f"{deleted('s')} AS _oxi_deleted", *(f"t.{q(c)}" for c in kept)]
        )
        out.append(
            ("", dialect.temp_table(filled, f"SELECT {sel} FROM {winners} AS s LEFT JOIN {target} AS t ON {on}"))
        )
        winners, deleted = filled, lambda alias: f"{alias}._oxi_deleted"
    out.append(("deleted", dialect.delete_matching(target, winners, on)))
    cols = [*columns, *kept]
    source = f"{winners} AS s WHERE NOT {deleted('s')}"
    out.append(("inserted", insert_rows(dialect, cfg, target, source, cols, load_id)))
    return out


def _scd2(
    dialect: Dialect,
    cfg: DispositionConfig,
    target: str,
    staging: str,
    columns: dict[str, str],
    load_id: str,
    load_time: datetime,
    unique_keys: bool,
) -> list[Statement]:
    assert cfg.primary_key
    q = dialect.quote
    keys = cfg.primary_key
    opts = cfg.scd2 or Scd2Options()
    hashed = [c for c in columns if c not in keys and c != opts.hard_delete]
    row_hash = dialect.row_hash("w", hashed)
    creates, winners, deleted = _winners(dialect, cfg, staging, columns, unique_keys, f", {row_hash} AS _oxi_hash")
    ts = dialect.timestamp(load_time)
    closing = [(VALID_TO, ts), (IS_CURRENT, "false")]
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in keys)
    changed = dialect.distinct(f"t.{q(ROW_HASH)}", "s._oxi_hash")
    out: list[Statement] = [
        *creates,
        # changed or deleted: close the current version
        (
            "closed",
            dialect.update(
                target,
                winners,
                closing,
                f"{on} AND t.{q(IS_CURRENT)} AND ({deleted('s')} OR {changed})",
            ),
        ),
    ]
    if opts.full_snapshot:
        out.append(
            (
                "closed",
                dialect.update(
                    target,
                    None,
                    closing,
                    f"t.{q(IS_CURRENT)} AND NOT EXISTS (SELECT 1 FROM {winners} AS s WHERE {on})",
                ),
            )
        )
    # new keys and changed ones (whose current version was just closed) get a new version
    names = [q(c) for c in columns] + [q(c) for c in (VALID_FROM, VALID_TO, IS_CURRENT, ROW_HASH)]
    values = [f"s.{q(c)}" for c in columns] + [ts, "NULL", "true", "s._oxi_hash"]
    if cfg.load_id_column:
        names.append(q(cfg.load_id_column))
        values.append(dialect.literal(load_id))
    out.append(
        (
            "inserted",
            f"INSERT INTO {target} ({', '.join(names)}) SELECT {', '.join(values)} FROM {winners} AS s "
            f"WHERE NOT {deleted('s')} AND NOT EXISTS "
            f"(SELECT 1 FROM {target} AS t WHERE {on} AND t.{q(IS_CURRENT)})",
        )
    )
    return out
