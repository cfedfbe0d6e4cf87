"""write_postgres / write_mysql / write_sqlite with merge, scd2 and delete_insert, against the real
PostgreSQL and MariaDB servers and real SQLite files.

Two oracles for every case: the same loads run through ``write_duckdb`` (the reference sink, whose own
goldens are in tests/golden/write_duckdb) must leave the same table, and that table is also written out
by hand here. Rows are read back with each database's own driver (psycopg, PyMySQL, sqlite3, duckdb),
not with oxiflow's readers; booleans, timestamps and load ids are normalized (SQLite stores booleans as
0/1 and timestamps as ISO text; load ids become the number of the load that wrote the row).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pymysql
import pytest
from _dbtest import MYSQL_URL, PG_URL, ctx, unique, write

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import ConfigError, DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.databases.connection import parse_url
from oxiflow.oxis.databases.duckdb import WriteDuckdb, WriteDuckdbConfig
from oxiflow.oxis.databases.mysql import WriteMysql, WriteMysqlConfig
from oxiflow.oxis.databases.postgres import WritePostgres, WritePostgresConfig
from oxiflow.oxis.databases.sqlite import WriteSqlite, WriteSqliteConfig

T1, T2, T3 = dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1), dt.datetime(2024, 3, 1)
BOOLS = {"_is_current", "deleted"}
STAMPS = {"_valid_from", "_valid_to", "deleted_at"}


class Target:
    """One table in one database: load Arrow rows with the sink under test, read rows back with the
    database's own driver."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder = kind, folder
        self.table = unique("disp")
        self.loads: list[str] = []  # the load id (run id) of each load, in order

    def sink(self, cfg: dict[str, Any]) -> Any:
        if self.kind == "postgres":
            return WritePostgres(WritePostgresConfig(url=PG_URL, table=self.table, **cfg))
        if self.kind == "mysql":
            return WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=self.table, **cfg))
        if self.kind == "sqlite":
            return WriteSqlite(WriteSqliteConfig(database="t.db", table=self.table, **cfg))
        return WriteDuckdb(WriteDuckdbConfig(database="oracle.duckdb", table=self.table, **cfg))

    def load(self, rows: list[dict[str, Any]], schema: pa.Schema | None = None, **cfg: Any) -> StepContext:
        c = ctx(self.folder)
        write(self.sink(cfg), pa.Table.from_pylist(rows, schema=schema), c)
        self.loads.append(c.run_id)
        return c

    def raw(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` with ``{t}`` standing for the quoted table."""
        sql = sql.replace("{t}", f"`{self.table}`" if self.kind == "mysql" else f'"{self.table}"')
        if self.kind == "postgres":
            with psycopg.connect(PG_URL, autocommit=True) as con:
                cur = con.execute(sql)
                return cur.fetchall() if cur.description else []
        if self.kind == "mysql":
            url = parse_url(MYSQL_URL, "mysql")
            my = pymysql.connect(host=url.host, port=url.port, user=url.user, database=url.database, autocommit=True)
            try:
                with my.cursor() as cur:
                    cur.execute(sql)
                    return list(cur.fetchall())
            finally:
                my.close()
        if self.kind == "sqlite":
            with sqlite3.connect(self.folder / "t.db") as lite:
                return lite.execute(sql).fetchall()
        duck = duckdb.connect(str(self.folder / "oracle.duckdb"))
        try:
            return duck.execute(sql).fetchall()
        finally:
            duck.close()

    def rows(self, columns: list[str]) -> list[tuple[Any, ...]]:
        """The table's ``columns``, normalized, sorted (NULLs last)."""
        got = [
            tuple(self._value(c, v) for c, v in zip(columns, r, strict=True)) for r in self.raw(self._select(columns))
        ]
        return ordered(got)

    def _select(self, columns: list[str]) -> str:
        quote = "`{}`" if self.kind == "mysql" else '"{}"'
        return f"SELECT {', '.join(quote.format(c) for c in columns)} FROM {{t}}"

    def _value(self, column: str, value: Any) -> Any:
        if value is None:
            return None
        if column in BOOLS:
            return bool(value)
        if column in STAMPS and isinstance(value, str):
            return dt.datetime.fromisoformat(value)
        if column == "_oxi_load_id":
            return self.loads.index(value) + 1 if value in self.loads else value
        return value

    def columns(self) -> list[str]:
        if self.kind == "sqlite":
            return [r[1] for r in self.raw("PRAGMA table_info({t})")]
        if self.kind == "mysql":
            return [r[0] for r in self.raw(f"SHOW COLUMNS FROM `{self.table}`")]
        schema = "current_schema()" if self.kind == "postgres" else "'main'"
        return [
            r[0]
            for r in self.raw(
                "SELECT column_name FROM information_schema.columns "
                f"WHERE table_name = '{self.table}' AND table_schema = {schema} ORDER BY ordinal_position"
            )
        ]

    def leftovers(self) -> list[str]:
        """Staging or helper tables left in the database (none may be)."""
        if self.kind == "sqlite":
            names = [r[0] for r in self.raw("SELECT name FROM sqlite_master")]
        else:
            schema = "current_schema()" if self.kind == "postgres" else "database()"
            names = [
                r[0]
                for r in self.raw(f"SELECT table_name FROM information_schema.tables WHERE table_schema = {schema}")
            ]
        return [n for n in names if n.startswith("_oxiflow_staging_" + self.table)]

    def drop(self) -> None:
        if self.kind in ("postgres", "mysql"):
            self.raw("DROP TABLE IF EXISTS {t}")


def ordered(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows sorted column by column, NULLs last (databases disagree on where NULLs sort)."""
    return sorted(rows, key=lambda r: tuple((v is None, v if v is not None else 0) for v in r))


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    target = Target(request.param, tmp_path)
    yield target
    target.drop()


@pytest.fixture
def oracle(tmp_path: Path) -> Target:
    return Target("duckdb", tmp_path)


def both(db: Target, oracle: Target, loads: list[tuple[list[dict[str, Any]], pa.Schema | None, dict[str, Any]]]):
    """Run the same loads on the database under test and on DuckDB; the contexts of the tested loads."""
    out = []
    for rows, schema, cfg in loads:
        out.append(db.load(rows, schema, **cfg))
        oracle.load(rows, schema, **cfg)
    return out


def same(db: Target, oracle: Target, columns: list[str], golden: list[tuple[Any, ...]]) -> None:
    got = db.rows(columns)
    assert got == oracle.rows(columns), "differs from write_duckdb"
    assert got == ordered(golden)
    assert db.leftovers() == []


# -- merge ---------------------------------------------------------------------------------------
ITEMS = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])
MERGE = {"write_disposition": "merge", "primary_key": ["id"]}


# -- the load id on every row ---------------------------------------------------------------------------
@pytest.mark.parametrize("disposition", ["append", "replace"])
def test_append_and_replace_tag_every_row_with_its_load_id(db: Target, oracle: Target, disposition: str) -> None:
    """As dlt's `_dlt_load_id`: every row of every table names the load that wrote it (here the run id, no
    state store), on every table sink alike; an input column of that name (a copied table) is replaced."""
    cfg = {"write_disposition": disposition}
    copied = pa.schema([("id", pa.int64()), ("_oxi_load_id", pa.string())])
    first, second = both(
        db, oracle, [([{"id": 1}, {"id": 2}], None, cfg), ([{"id": 3, "_oxi_load_id": "copied"}], copied, cfg)]
    )
    golden = [(1, 1), (2, 1), (3, 2)] if disposition == "append" else [(3, 2)]
    same(db, oracle, ["id", "_oxi_load_id"], golden)  # load numbers: the rows' ids are the loads' run ids
    assert (first.metadata["load_id"], second.metadata["load_id"]) == (db.loads[0], db.loads[1])
    assert db.columns() == ["id", "_oxi_load_id"]


def test_load_id_column_null_leaves_the_input_columns_only(db: Target, oracle: Target) -> None:
    cfg = {"load_id_column": None}
    both(db, oracle, [([{"id": 1, "v": "a"}], None, cfg), ([{"id": 2, "v": "b"}], None, cfg)])
    same(db, oracle, ["id", "v"], [(1, "a"), (2, "b")])
    assert db.columns() == ["id", "v"] == oracle.columns()


def test_merge_three_loads(db: Target, oracle: Target) -> None:
    first, second, _ = both(
        db,
        oracle,
        [
            ([{"id": 1, "name": "a", "amount": 1.0}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}], ITEMS, MERGE),
            (
                [
                    {"id": 2, "name": "b", "amount": 2.0},  # NULL -> value
                    {"id": 4, "name": "d", "amount": 4.0},
                    {"id": 4, "name": "d2", "amount": 4.5},  # same key twice in one load: the later row wins
                    {"id": 1, "name": "a", "amount": 1.0},  # unchanged, merged again
                ],
                ITEMS,
                MERGE,
            ),
            ([{"id": 3, "name": None, "amount": None}, {"id": 5, "name": "e", "amount": 5.0}], ITEMS, MERGE),
        ],
    )
    assert first.metadata["changes"] == {"deleted": 0, "inserted": 3}
    assert second.metadata["changes"] == {"deleted": 2, "inserted": 3}
    assert second.metadata["rows"] == 4
    same(
        db,
        oracle,
        ["id", "name", "amount", "_oxi_load_id"],
        [(1, "a", 1.0, 2), (2, "b", 2.0, 2), (3, None, None, 3), (4, "d2", 4.5, 2), (5, "e", 5.0, 3)],
    )


EVENTS = pa.schema([("id", pa.int64()), ("v", pa.string()), ("ts", pa.int64()), ("deleted", pa.bool_())])


@pytest.mark.parametrize(("order", "winner"), [("desc", "high"), ("asc", "low")])
def test_merge_dedup_sort_and_hard_delete(db: Target, oracle: Target, order: str, winner: str) -> None:
    cfg = {**MERGE, "merge": {"dedup_sort": {"column": "ts", "order": order}, "hard_delete": "deleted"}}
    _, second = both(
        db,
        oracle,
        [
            ([{"id": i, "v": v, "ts": 1, "deleted": False} for i, v in [(1, "x"), (2, "y"), (3, "z")]], EVENTS, cfg),
            (
                [
                    {"id": 1, "v": "high", "ts": 5, "deleted": False},
                    {"id": 1, "v": "null-ts", "ts": None, "deleted": False},  # a NULL sort value loses either way
                    {"id": 1, "v": "low", "ts": 2, "deleted": False},
                    {"id": 2, "v": "y", "ts": 1, "deleted": True},  # deletes key 2
                    {"id": 9, "v": "ghost", "ts": 1, "deleted": True},  # deleting a missing key: nothing
                    {"id": 3, "v": "z-deleted", "ts": 9, "deleted": True},
                    {"id": 3, "v": "z-kept", "ts": 0, "deleted": None},
                ],
                EVENTS,
                cfg,
            ),
        ],
    )
    # key 3: desc -> the deleting row (ts 9) wins; asc -> the kept row (ts 0) wins
    golden = [(1, winner, 5 if winner == "high" else 2)] + ([(3, "z-kept", 0)] if order == "asc" else [])
    same(db, oracle, ["id", "v", "ts"], golden)
    assert second.metadata["changes"] == {"deleted": 3, "inserted": len(golden)}


def test_merge_hard_delete_on_a_timestamp_column(db: Target, oracle: Target) -> None:
    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("deleted_at", pa.timestamp("us"))])
    cfg = {**MERGE, "merge": {"hard_delete": "deleted_at"}}
    both(
        db,
        oracle,
        [
            ([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], schema, cfg),
            ([{"id": 1, "v": "a", "deleted_at": T1}, {"id": 2, "v": "B", "deleted_at": None}], schema, cfg),
        ],
    )
    same(db, oracle, ["id", "v", "deleted_at"], [(2, "B", None)])


def test_merge_missing_columns_keep_target_values_and_new_columns_are_added(db: Target, oracle: Target) -> None:
    both(
        db,
        oracle,
        [
            ([{"id": 1, "a": "a1", "b": "b1"}, {"id": 2, "a": "a2", "b": "b2"}], None, MERGE),
            ([{"id": 1, "a": "A1", "c": 10}, {"id": 3, "a": "a3", "c": 30}], None, MERGE),
        ],
    )
    golden = [
        (1, "A1", "b1", 10),  # b kept from the target
        (2, "a2", "b2", None),  # untouched
        (3, "a3", None, 30),  # new key: b NULL
    ]
    same(db, oracle, ["id", "a", "b", "c"], golden)
    assert db.columns() == ["id", "a", "b", "_oxi_load_id", "c"] == oracle.columns()


def test_merge_composite_key_without_load_id_column(db: Target, oracle: Target) -> None:
    cfg = {"write_disposition": "merge", "primary_key": ["k1", "k2"], "load_id_column": None}
    both(
        db,
        oracle,
        [
            ([{"k1": 1, "k2": "a", "v": 1}, {"k1": 1, "k2": "b", "v": 2}], None, cfg),
            ([{"k1": 1, "k2": "b", "v": 20}, {"k1": 2, "k2": "a", "v": 3}], None, cfg),
        ],
    )
    same(db, oracle, ["k1", "k2", "v"], [(1, "a", 1), (1, "b", 20), (2, "a", 3)])
    assert db.columns() == ["k1", "k2", "v"]


def test_merge_null_key_fails_and_changes_nothing(db: Target) -> None:
    db.load([{"id": 1, "v": "a"}], None, **MERGE)
    with pytest.raises(DataError, match=r"1 row\(s\) of the load have a NULL in the primary key \['id'\]"):
        db.load(
            [{"id": None, "v": "x"}, {"id": 1, "v": "y"}], pa.schema([("id", pa.int64()), ("v", pa.string())]), **MERGE
        )
    assert db.rows(["id", "v"]) == [(1, "a")]
    assert db.leftovers() == []


def test_merge_key_missing_from_the_input_fails_and_changes_nothing(db: Target) -> None:
    db.load([{"id": 1, "v": "a"}], None, **MERGE)
    with pytest.raises(DataError, match=r"primary_key names column\(s\) \['id'\] that the input lacks"):
        db.load([{"other": 1, "v": "b"}], None, **MERGE)
    assert db.rows(["id", "v"]) == [(1, "a")]
    assert db.columns() == ["id", "v", "_oxi_load_id"]  # not even schema growth happened


def test_merge_failing_after_its_delete_rolls_back(db: Target) -> None:
    """The insert fails (NOT NULL) after the delete of the matching keys ran: the rollback restores them."""
    db.raw("CREATE TABLE {t} (id BIGINT, v TEXT NOT NULL, _oxi_load_id TEXT)")
    db.raw("INSERT INTO {t} (id, v) VALUES (1, 'a'), (2, 'b')")
    with pytest.raises(DataError, match=r"not-null|cannot be null|NOT NULL constraint"):
        db.load([{"id": 1, "v": "A"}, {"id": 2, "v": None}, {"id": 3, "v": "c"}], None, **MERGE)
    assert db.rows(["id", "v", "_oxi_load_id"]) == [(1, "a", None), (2, "b", None)]
    assert db.leftovers() == []


# -- scd2 ----------------------------------------------------------------------------------------
def row_hash(**values: Any) -> str:
    """The documented row hash, computed independently: md5 of name<US>text pairs sorted by name,
    NULLs left out, joined with <RS>. Integers and strings have the same text in every database."""
    text = "\x1e".join(f"{k}\x1f{v}" for k, v in sorted(values.items()) if v is not None)
    return hashlib.md5(text.encode()).hexdigest()


SCD = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.int64()), ("deleted", pa.bool_())])
SCD_COLUMNS = ["id", "name", "amount", "_valid_from", "_valid_to", "_is_current", "_row_hash", "_oxi_load_id"]


def scd2(when: dt.datetime, **options: Any) -> dict[str, Any]:
    return {"write_disposition": "scd2", "primary_key": ["id"], "scd2": {"load_time": when, **options}}


def test_scd2_history_over_three_loads(db: Target, oracle: Target) -> None:
    _, second, third = both(
        db,
        oracle,
        [
            (
                [{"id": 1, "name": "a"}, {"id": 2, "name": "b", "amount": 2}, {"id": 3, "name": "c", "amount": 3}],
                SCD,
                scd2(T1, hard_delete="deleted"),
            ),
            (
                [
                    {"id": 1, "name": "a", "amount": 1},  # NULL -> value: a change
                    {"id": 2, "name": "b", "amount": 2},  # unchanged: no new version
                    {"id": 4, "name": "d", "amount": 4},  # new
                ],  # 3 absent from the full snapshot: closed
                SCD,
                scd2(T2, hard_delete="deleted"),
            ),
            (
                [
                    {"id": 1, "name": "a", "amount": 1, "deleted": False},  # unchanged (hard_delete is not hashed)
                    {"id": 2, "name": "b", "amount": 2, "deleted": True},  # deleted: closed
                    {"id": 3, "name": "c", "amount": 3, "deleted": False},  # back: a new version
                ],  # 4 absent: closed
                SCD,
                scd2(T3, hard_delete="deleted"),
            ),
        ],
    )
    assert second.metadata["changes"] == {"closed": 2, "inserted": 2}
    assert third.metadata["changes"] == {"closed": 2, "inserted": 1}
    a1, a2 = row_hash(name="a"), row_hash(name="a", amount=1)
    b, c, d = row_hash(name="b", amount=2), row_hash(name="c", amount=3), row_hash(name="d", amount=4)
    same(
        db,
        oracle,
        SCD_COLUMNS,
        [
            (1, "a", None, T1, T2, False, a1, 1),
            (1, "a", 1, T2, None, True, a2, 2),
            (2, "b", 2, T1, T3, False, b, 1),
            (3, "c", 3, T1, T2, False, c, 1),
            (3, "c", 3, T3, None, True, c, 3),
            (4, "d", 4, T2, T3, False, d, 2),
        ],
    )


def test_scd2_same_snapshot_twice_adds_no_version(db: Target, oracle: Target) -> None:
    snapshot = [{"id": 1, "name": "a", "amount": 1}, {"id": 2, "name": "b", "amount": None}]
    _, again = both(db, oracle, [(snapshot, SCD, scd2(T1)), (snapshot, SCD, scd2(T2))])
    assert again.metadata["changes"] == {"closed": 0, "inserted": 0}
    golden = [
        (1, "a", 1, T1, None, True, row_hash(name="a", amount=1), 1),
        (2, "b", None, T1, None, True, row_hash(name="b"), 1),
    ]
    same(db, oracle, SCD_COLUMNS, golden)


def test_scd2_incremental_keeps_absent_keys_and_dedups(db: Target, oracle: Target) -> None:
    both(
        db,
        oracle,
        [
            ([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], SCD, scd2(T1, full_snapshot=False)),
            # key 2 twice in one load: the later row is the new version; key 1 absent: kept
            ([{"id": 2, "name": "x"}, {"id": 2, "name": "B"}], SCD, scd2(T2, full_snapshot=False)),
        ],
    )
    same(
        db,
        oracle,
        ["id", "name", "_valid_from", "_valid_to", "_is_current"],
        [(1, "a", T1, None, True), (2, "B", T2, None, True), (2, "b", T1, T2, False)],
    )


def test_scd2_empty_full_snapshot_closes_everything(db: Target, oracle: Target) -> None:
    both(db, oracle, [([{"id": 1, "name": "a"}], SCD, scd2(T1)), ([], SCD, scd2(T2))])
    same(db, oracle, ["id", "_valid_from", "_valid_to", "_is_current"], [(1, T1, T2, False)])


# -- delete_insert -------------------------------------------------------------------------------
def test_delete_insert_backfill_is_idempotent_with_a_null_partition(db: Target, oracle: Target) -> None:
    cfg = {"write_disposition": "delete_insert", "partition_by": ["day"]}
    schema = pa.schema([("day", pa.string()), ("id", pa.int64())])
    backfill = [{"day": "d1", "id": 1}, {"day": "d1", "id": 5}, {"day": None, "id": 7}]
    _, first, second = both(
        db,
        oracle,
        [
            (
                [{"day": "d1", "id": i} for i in (1, 2, 3)] + [{"day": "d2", "id": 4}, {"day": None, "id": 6}],
                schema,
                cfg,
            ),
            (backfill, schema, cfg),
            (backfill, schema, cfg),  # the same backfill again: the same table
        ],
    )
    assert first.metadata["changes"] == {"deleted": 4, "inserted": 3}  # d1's 3 rows and the NULL day's one
    assert second.metadata["changes"] == {"deleted": 3, "inserted": 3}
    same(db, oracle, ["day", "id", "_oxi_load_id"], [("d1", 1, 3), ("d1", 5, 3), ("d2", 4, 1), (None, 7, 3)])


# -- naming --------------------------------------------------------------------------------------
def test_odd_column_names_are_quoted(db: Target, oracle: Target) -> None:
    schema = pa.schema([("key id", pa.int64()), ('we"ird`s', pa.string()), ("select", pa.int64())])
    cfg = {"write_disposition": "scd2", "primary_key": ["key id"], "scd2": {"load_time": T1}}
    both(
        db,
        oracle,
        [([{"key id": 1, 'we"ird`s': "x", "select": 1}], schema, cfg)],
    )
    assert db.rows(["_row_hash"]) == [(row_hash(**{'we"ird`s': "x", "select": 1}),)] == oracle.rows(["_row_hash"])


# -- through a pipeline file ---------------------------------------------------------------------
SINK_CONFIGS = {
    "postgres": f"name: write_postgres\n    config: {{url: '{PG_URL}', table: TABLE, ",
    "mysql": f"name: write_mysql\n    config: {{url: '{MYSQL_URL}', table: TABLE, ",
    "sqlite": "name: write_sqlite\n    config: {database: t.db, table: TABLE, ",
}


def test_merge_from_a_pipeline_file(db: Target, write_pipeline: Any) -> None:
    (db.folder / "in.csv").write_text("id,v\n1,a\n2,b\n1,c\n", encoding="utf-8")
    sink = SINK_CONFIGS[db.kind].replace("TABLE", db.table)
    path = write_pipeline(
        "pipeline:\n  - name: read_csv\n    config: {path: in.csv}\n"
        f"  - {sink}write_disposition: merge, primary_key: [id]}}\n"
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert db.rows(["id", "v"]) == [(1, "c"), (2, "b")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("write_disposition: merge", "write_disposition merge needs primary_key"),
        ("write_disposition: scd2", "write_disposition scd2 needs primary_key"),
        ("write_disposition: delete_insert", "write_disposition delete_insert needs partition_by"),
    ],
)
def test_config_errors_at_validate_time(db: Target, write_pipeline: Any, options: str, message: str) -> None:
    sink = SINK_CONFIGS[db.kind].replace("TABLE", db.table)
    path = write_pipeline(f"pipeline:\n  - name: read_csv\n    config: {{path: in.csv}}\n  - {sink}{options}}}\n")
    with pytest.raises(ConfigError, match=message):
        load_pipeline(path)
