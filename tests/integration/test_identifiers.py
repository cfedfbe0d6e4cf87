"""Odd table and column names (quotes of every kind, spaces, unicode, reserved words) through every database
sink and source: PostgreSQL, MariaDB, SQLite and DuckDB (docs/databases.md, "Identifiers").

Tables are written by the sinks (append, then merge on an oddly named key: the staging tables and the
disposition SQL quote them too) and read back by the sources (a table read split into ranges on an odd
column), and the oracle is each database itself: its catalogue must list exactly these names, and its own
driver reads the rows (psycopg composes the PostgreSQL query with ``sql.Identifier``; PyMySQL, sqlite3 and
duckdb have no identifier quoting, so the test writes those queries' quotes by hand).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pymysql
import pytest
from _dbtest import MYSQL_URL, PG_URL, ctx, read_all, write
from psycopg import sql

from oxiflow.oxis.databases.connection import parse_url
from oxiflow.oxis.databases.duckdb import WriteDuckdb, WriteDuckdbConfig
from oxiflow.oxis.databases.mysql import ReadMysql, ReadMysqlConfig, WriteMysql, WriteMysqlConfig
from oxiflow.oxis.databases.postgres import ReadPostgres, ReadPostgresConfig, WritePostgres, WritePostgresConfig
from oxiflow.oxis.databases.read_duckdb import ReadDuckdb, ReadDuckdbConfig
from oxiflow.oxis.databases.sqlite import ReadSqlite, ReadSqliteConfig, WriteSqlite, WriteSqliteConfig

KEY = "order"  # a reserved word, as the merge key and the partition column
COLUMNS = [KEY, 'we"ird', "a b", "ünïcødé", "x`y", "it's", "select"]
SCHEMA = pa.schema(
    [
        (KEY, pa.int64()),
        ('we"ird', pa.string()),
        ("a b", pa.float64()),
        ("ünïcødé", pa.string()),
        ("x`y", pa.int64()),
        ("it's", pa.string()),
        ("select", pa.bool_()),
    ]
)
FIRST = [
    {KEY: i, 'we"ird': f'q"{i}', "a b": i / 2, "ünïcødé": "é" * i, "x`y": -i, "it's": f"'{i}'", "select": i % 2 == 0}
    for i in range(1, 6)
]
UPDATE = [{**FIRST[1], 'we"ird': "changed", "select": False}, {**FIRST[0], KEY: 9, "it's": "new"}]


def _table(kind: str) -> str:
    # quotes of every kind, a space, unicode and a reserved word in one name (short: PostgreSQL keeps 63 bytes)
    return f"sel\"ect `t' ü {kind} {uuid.uuid4().hex[:6]}"


class Db:
    """One database: its sink and source for ``table``, and its own driver for the oracle."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder, self.table = kind, folder, _table(kind)

    def sink(self, **cfg: Any) -> Any:
        if self.kind == "postgres":
            return WritePostgres(WritePostgresConfig(url=PG_URL, table=self.table, **cfg))
        if self.kind == "mysql":
            return WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=self.table, **cfg))
        if self.kind == "sqlite":
            return WriteSqlite(WriteSqliteConfig(database="odd.db", table=self.table, **cfg))
        return WriteDuckdb(WriteDuckdbConfig(database="odd.duckdb", table=self.table, **cfg))

    def source(self, **cfg: Any) -> Any:
        if self.kind == "postgres":
            return ReadPostgres(ReadPostgresConfig(url=PG_URL, table=self.table, **cfg))
        if self.kind == "mysql":
            return ReadMysql(ReadMysqlConfig(url=MYSQL_URL, table=self.table, **cfg))
        if self.kind == "sqlite":
            return ReadSqlite(ReadSqliteConfig(database="odd.db", table=self.table, **cfg))
        return ReadDuckdb(ReadDuckdbConfig(database="odd.duckdb", table=self.table, **cfg))

    # the oracle: the database's catalogue and its own driver
    def catalogue_columns(self) -> list[str]:
        if self.kind == "postgres":
            return [
                r[0]
                for r in self._pg(
                    "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 ORDER BY attnum",
                    (sql.Identifier(self.table).as_string(None),),
                )
            ]
        if self.kind == "mysql":
            return [
                r[0]
                for r in self._my(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = database() "
                    "AND table_name = %s ORDER BY ordinal_position",
                    (self.table,),
                )
            ]
        if self.kind == "sqlite":
            with sqlite3.connect(self.folder / "odd.db") as con:
                return [r[1] for r in con.execute("SELECT * FROM pragma_table_info(?)", (self.table,))]
        con = duckdb.connect(str(self.folder / "odd.duckdb"), read_only=True)
        try:
            return [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [self.table]
                ).fetchall()
            ]
        finally:
            con.close()

    def tables(self) -> list[str]:
        if self.kind == "postgres":
            return [r[0] for r in self._pg("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", ("sel%",))]
        if self.kind == "mysql":
            return [
                r[0]
                for r in self._my(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = database() AND table_name LIKE %s",
                    ("sel%",),
                )
            ]
        if self.kind == "sqlite":
            with sqlite3.connect(self.folder / "odd.db") as con:
                return [
                    r[0]
                    for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'sel%'")
                ]
        con = duckdb.connect(str(self.folder / "odd.duckdb"), read_only=True)
        try:
            return [
                r[0]
                for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'sel%'").fetchall()
            ]
        finally:
            con.close()

    def rows(self) -> list[tuple[Any, ...]]:
        """COLUMNS of the table, by the database's own driver, ordered by the key."""
        if self.kind == "postgres":
            query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS), sql.Identifier(self.table), sql.Identifier(KEY)
            )
            with psycopg.connect(PG_URL, autocommit=True) as pg:
                got = pg.execute(query).fetchall()
        elif self.kind == "mysql":
            tick = lambda n: "`" + n.replace("`", "``") + "`"  # noqa: E731 (PyMySQL has no identifier quoting)
            got = self._my(f"SELECT {', '.join(map(tick, COLUMNS))} FROM {tick(self.table)} ORDER BY {tick(KEY)}")
        else:
            dq = lambda n: '"' + n.replace('"', '""') + '"'  # noqa: E731 (sqlite3 and duckdb have none either)
            query = f"SELECT {', '.join(map(dq, COLUMNS))} FROM {dq(self.table)} ORDER BY {dq(KEY)}"
            if self.kind == "sqlite":
                with sqlite3.connect(self.folder / "odd.db") as con:
                    got = con.execute(query).fetchall()
            else:
                duck = duckdb.connect(str(self.folder / "odd.duckdb"), read_only=True)
                try:
                    got = duck.execute(query).fetchall()
                finally:
                    duck.close()
        return [(*r[:6], bool(r[6])) for r in got]  # MySQL and SQLite keep booleans as 0/1

    def _pg(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            return pg.execute(query, params).fetchall()

    def _my(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        url = parse_url(MYSQL_URL, "mysql")
        my = pymysql.connect(host=url.host, port=url.port, user=url.user, database=url.database, autocommit=True)
        try:
            with my.cursor() as cur:
                cur.execute(query, params or None)
                return list(cur.fetchall())
        finally:
            my.close()

    def drop(self) -> None:
        for name in {self.table, *self.tables()}:
            if self.kind == "postgres":
                with psycopg.connect(PG_URL, autocommit=True) as pg:
                    pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            elif self.kind == "mysql":
                self._my("DROP TABLE IF EXISTS `" + name.replace("`", "``") + "`")


@pytest.fixture(params=["postgres", "mysql", "sqlite", "duckdb"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    target = Db(request.param, tmp_path)
    yield target
    target.drop()


def _expected(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r[c] for c in COLUMNS) for r in rows)


def test_odd_names_are_written_and_read_back_exactly(db: Db) -> None:
    write(db.sink(), pa.Table.from_pylist(FIRST, schema=SCHEMA), ctx(db.folder))
    assert db.tables() == [db.table]  # the name as given, nothing else (no staging table left)
    assert db.catalogue_columns() == [*COLUMNS, "_oxi_load_id"]
    assert db.rows() == _expected(FIRST)

    # merge on the reserved-word key: staging tables, dedup and the delete/insert statements quote them too
    merge = db.sink(write_disposition="merge", primary_key=[KEY], merge={"hard_delete": "select"})
    c = ctx(db.folder)
    write(merge, pa.Table.from_pylist([*UPDATE, {**FIRST[3], "select": True}], schema=SCHEMA), c)
    assert c.metadata["changes"] == {"deleted": 2, "inserted": 2}  # 2 updated, 9 new, 4 deleted by its flag
    want = _expected([FIRST[0], UPDATE[0], FIRST[2], FIRST[4], UPDATE[1]])
    assert db.rows() == want
    assert db.tables() == [db.table]

    # the source: the table by its name, split into ranges on the reserved-word column
    got = read_all(db.source(partition_on=KEY, partitions=3), ctx(db.folder))
    assert got.column_names == [*COLUMNS, "_oxi_load_id"]
    assert sorted((*r[:6], bool(r[6])) for r in (tuple(row[c] for c in COLUMNS) for row in got.to_pylist())) == want
