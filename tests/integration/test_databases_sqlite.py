"""read_sqlite / write_sqlite on real SQLite files; the oracle is the stdlib sqlite3 module."""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest
from _dbtest import ctx, read_all, write

from oxiflow.errors import DataError
from oxiflow.oxis.databases.sqlite import ReadSqlite, ReadSqliteConfig, WriteSqlite, WriteSqliteConfig
from oxiflow.oxis.databases.sqltypes import quote_ident

SRC = pa.table(
    {
        "id": pa.array([1, 2, None], pa.int64()),
        "price": pa.array([decimal.Decimal("12.345"), decimal.Decimal("-0.001"), None], pa.decimal128(12, 3)),
        "name": pa.array(["héllo", "", None]),
        "ok": pa.array([True, False, None]),
        "day": pa.array([dt.date(2024, 1, 1), dt.date(1999, 12, 31), None]),
        "at": pa.array([dt.datetime(2024, 1, 1, 12, 30, 0, 5), dt.datetime(2000, 1, 1), None], pa.timestamp("us")),
        "blob": pa.array([b"\x00\x01", b"", None], pa.binary()),
        "x": pa.array([0.5, None, 2.25]),
    }
)


def test_write_then_read_round_trips_types(tmp_path: Path) -> None:
    c = ctx(tmp_path)
    write(WriteSqlite(WriteSqliteConfig(database="a.db", table="t")), SRC, c)
    assert c.metadata["rows"] == 3
    with sqlite3.connect(tmp_path / "a.db") as con:
        raw = con.execute("SELECT id, price, name, ok, day, at, blob, x FROM t").fetchall()
    assert raw[0] == (1, 12.345, "héllo", 1, "2024-01-01", "2024-01-01 12:30:00.000005", b"\x00\x01", 0.5)
    got = read_all(ReadSqlite(ReadSqliteConfig(database="a.db", table="t", chunk_size=2)), ctx(tmp_path))
    assert got.drop_columns(["_oxi_load_id"]).equals(SRC)
    assert got.column("_oxi_load_id").to_pylist() == [c.run_id] * 3  # every appended row names its load


def test_query_and_partitions(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "b.db") as con:
        con.execute("CREATE TABLE t (id INTEGER, v TEXT)")
        con.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1000)])
        con.execute("INSERT INTO t VALUES (NULL, 'null id')")
    got = read_all(
        ReadSqlite(ReadSqliteConfig(database="b.db", query="SELECT id, v, id * 2 AS d FROM t")), ctx(tmp_path)
    )
    assert got.schema.field("d").type == pa.int64()
    parts = read_all(
        ReadSqlite(ReadSqliteConfig(database="b.db", table="t", partition_on="id", partitions=3)), ctx(tmp_path)
    ).sort_by("id")
    with sqlite3.connect(tmp_path / "b.db") as con:
        expected = con.execute("SELECT id, v FROM t ORDER BY id NULLS LAST").fetchall()
    assert [tuple(r.values()) for r in parts.to_pylist()] == expected
    assert got.column("d").to_pylist() == [None if i is None else i * 2 for i, _ in expected]


def test_append_widens_replace_swaps_and_failure_keeps_old(tmp_path: Path) -> None:
    sink = WriteSqlite(WriteSqliteConfig(database="c.db", table="t"))
    write(sink, pa.table({"id": [1]}), ctx(tmp_path))
    write(sink, pa.table({"id": [2], "n": ["x"]}), ctx(tmp_path))
    with sqlite3.connect(tmp_path / "c.db") as con:
        assert con.execute("SELECT id, n FROM t ORDER BY id").fetchall() == [(1, None), (2, "x")]
    replace = WriteSqlite(WriteSqliteConfig(database="c.db", table="t", write_disposition="replace"))
    swapped = ctx(tmp_path)
    write(replace, pa.table({"z": [5]}), swapped)
    with sqlite3.connect(tmp_path / "c.db") as con:
        assert con.execute("SELECT * FROM t").fetchall() == [(5, swapped.run_id)]
        assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("t",)]
    with pytest.raises(DataError, match="has no SQLite column type"):
        write(replace, pa.table({"d": pa.array([1], pa.duration("s"))}), ctx(tmp_path))
    with sqlite3.connect(tmp_path / "c.db") as con:
        assert con.execute("SELECT * FROM t").fetchall() == [(5, swapped.run_id)]


def test_missing_table_did_you_mean(tmp_path: Path) -> None:
    write(WriteSqlite(WriteSqliteConfig(database="d.db", table="orders")), pa.table({"id": [1]}), ctx(tmp_path))
    with pytest.raises(DataError, match="did you mean 'orders'"):
        read_all(ReadSqlite(ReadSqliteConfig(database="d.db", table="order")), ctx(tmp_path))


@pytest.mark.parametrize("name", ['we"ird', "a b", "select", "x`y", "ünï"])
def test_quoting_functions_survive_odd_names(tmp_path: Path, name: str) -> None:
    with sqlite3.connect(tmp_path / "q.db") as con:
        con.execute(f"CREATE TABLE {quote_ident('sqlite', name)} ({quote_ident('sqlite', name)} INTEGER)")
        con.execute(f"INSERT INTO {quote_ident('sqlite', name)} VALUES (1)")
        assert con.execute("SELECT name FROM sqlite_master").fetchall() == [(name,)]
    assert quote_ident("mysql", "x`y") == "`x``y`"
    assert quote_ident("postgres", 'we"ird') == '"we""ird"'
