"""read_mysql / write_mysql against the real MariaDB/MySQL server (OXIFLOW_TEST_MYSQL_URL).

The oracle is PyMySQL's default (buffered) cursor reading the same rows with plain SQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pymysql
import pytest
from _dbtest import MYSQL_URL, ctx, read_all, unique, write

from oxiflow.errors import DataError
from oxiflow.oxis.databases.connection import parse_url
from oxiflow.oxis.databases.mysql import ReadMysql, ReadMysqlConfig, WriteMysql, WriteMysqlConfig


@pytest.fixture
def my() -> Iterator[Any]:
    url = parse_url(MYSQL_URL, "mysql")
    con = pymysql.connect(
        host=url.host,
        port=url.port,
        user=url.user,
        password=url.password or "",
        database=url.database,
        autocommit=True,
    )
    yield con
    con.close()


@pytest.fixture
def table(my: Any) -> Iterator[str]:
    name = unique("oxi")
    yield name
    with my.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{name}`")


def rows(my: Any, sql: str) -> list[tuple]:
    with my.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_read_types_match_pymysql(my: Any, table: str, tmp_path: Path) -> None:
    rows(
        my,
        f"""CREATE TABLE `{table}` (i INT, big BIGINT UNSIGNED, d DECIMAL(20,4), f DOUBLE, t TEXT,
        b BOOLEAN, dd DATE, ts DATETIME(6), j JSON, bl BLOB, v VARCHAR(10))""",
    )
    rows(
        my,
        f"""INSERT INTO `{table}` VALUES (1, 18446744073709551615, 1234567890123456.7891, 1.5, 'héllo',
        true, '2024-02-29', '2024-01-02 03:04:05.123456', '{{"a": 1}}', x'00ff', 'v'),
        (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
    )
    got = read_all(ReadMysql(ReadMysqlConfig(url=MYSQL_URL, table=table, chunk_size=1)), ctx(tmp_path))
    assert got.schema.field("d").type == pa.decimal128(20, 4)
    assert got.schema.field("big").type == pa.uint64()
    assert got.schema.field("b").type == pa.bool_()
    assert got.schema.field("bl").type == pa.binary()
    expected = rows(my, f"SELECT i, big, d, f, t, b = 1, dd, ts, j, bl, v FROM `{table}`")
    expected = [tuple(None if v is None else (bool(v) if k == 5 else v) for k, v in enumerate(r)) for r in expected]
    assert [tuple(r.values()) for r in got.to_pylist()] == expected


def test_write_types_and_read_back(my: Any, table: str, tmp_path: Path) -> None:
    src = pa.table(
        {
            "id": pa.array([1, 2, None], pa.int64()),
            "price": pa.array([decimal.Decimal("12.345"), decimal.Decimal("-0.001"), None], pa.decimal128(12, 3)),
            "name": pa.array(['a, "quoted"\nline', "", None]),
            "word": pa.array(["NULL", "\\N", None]),
            "ok": pa.array([True, False, None]),
            "day": pa.array([dt.date(2024, 1, 1), dt.date(1999, 12, 31), None]),
            "at": pa.array([dt.datetime(2024, 1, 1, 12, 30, 0, 5), dt.datetime(2000, 1, 1), None], pa.timestamp("us")),
            "blob": pa.array([b'\x00\x01,\n"', b"", None], pa.binary()),
            "tags": pa.array([["x"], [], None], pa.list_(pa.string())),
        }
    )
    c = ctx(tmp_path)
    write(WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=table)), src, c)
    assert c.metadata["rows"] == 3
    got = rows(my, f"SELECT id, price, name, word, ok, day, `at`, `blob`, tags FROM `{table}` ORDER BY id IS NULL, id")
    assert got == [
        (
            1,
            decimal.Decimal("12.345"),
            'a, "quoted"\nline',
            "NULL",
            1,
            dt.date(2024, 1, 1),
            dt.datetime(2024, 1, 1, 12, 30, 0, 5),
            b'\x00\x01,\n"',
            '["x"]',
        ),
        (2, decimal.Decimal("-0.001"), "", "\\N", 0, dt.date(1999, 12, 31), dt.datetime(2000, 1, 1), b"", "[]"),
        (None, None, None, None, None, None, None, None, None),
    ]


def test_append_widens_and_replace_swaps(my: Any, table: str, tmp_path: Path) -> None:
    write(WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=table)), pa.table({"id": [1]}), ctx(tmp_path))
    write(WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=table)), pa.table({"id": [2], "n": ["x"]}), ctx(tmp_path))
    assert rows(my, f"SELECT id, n FROM `{table}` ORDER BY id") == [(1, None), (2, "x")]
    sink = WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=table, write_disposition="replace"))
    write(sink, pa.table({"z": [9, 8]}), ctx(tmp_path))
    assert rows(my, f"SELECT z FROM `{table}` ORDER BY z") == [(8,), (9,)]
    assert rows(my, f"SHOW TABLES LIKE '\\_oxiflow%{table}'") == []


def test_a_value_that_does_not_fit_fails(my: Any, table: str, tmp_path: Path) -> None:
    rows(my, f"CREATE TABLE `{table}` (id TINYINT)")
    with pytest.raises(DataError, match=r"(?i)out of range"):
        write(WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=table)), pa.table({"id": [1000]}), ctx(tmp_path))
    assert rows(my, f"SELECT count(*) FROM `{table}`") == [(0,)]


def test_partitioned_read(my: Any, table: str, tmp_path: Path) -> None:
    rows(my, f"CREATE TABLE `{table}` (id INT PRIMARY KEY, v VARCHAR(20))")
    rows(my, f"INSERT INTO `{table}` SELECT seq, concat('v', seq) FROM seq_1_to_5000")
    cfg = ReadMysqlConfig(url=MYSQL_URL, table=table, partition_on="id", partitions=3)
    got = read_all(ReadMysql(cfg), ctx(tmp_path)).sort_by("id")
    assert [tuple(r.values()) for r in got.to_pylist()] == rows(my, f"SELECT id, v FROM `{table}` ORDER BY id")


def test_errors_name_the_server_and_suggest(my: Any, table: str, tmp_path: Path) -> None:
    rows(my, f"CREATE TABLE `{table}` (id INT)")
    with pytest.raises(DataError, match="did you mean"):
        read_all(ReadMysql(ReadMysqlConfig(url=MYSQL_URL, table=table + "s")), ctx(tmp_path))
    with pytest.raises(DataError, match="check the user and password") as err:
        read_all(ReadMysql(ReadMysqlConfig(url=MYSQL_URL, password="wrong-pw-123", table=table)), ctx(tmp_path))
    assert "wrong-pw-123" not in str(err.value)


def test_load_committed_waits_for_a_commit_in_flight(my: Any, table: str, tmp_path: Path) -> None:
    """A killed run's COMMIT may still be running on the server: recovery's marker lookup waits for the
    session holding the marker's user lock (as the sink takes it) instead of answering "not committed"."""
    import threading

    from oxiflow.oxis.databases.sqlsink import marker_lock_name

    sink = WriteMysql(WriteMysqlConfig(url=MYSQL_URL, table=table))
    first = ctx(tmp_path, load_id=unique("load"))
    write(sink, pa.table({"id": [1]}), first)  # creates the target and _oxi_loads
    assert rows(my, f"SELECT IS_USED_LOCK('{marker_lock_name(first.load_id or '')}')") == [(None,)]  # released
    assert sink.load_committed(first.load_id or "", first) is True

    load_id = unique("load")
    url = parse_url(MYSQL_URL, "mysql")
    holder = pymysql.connect(host=url.host, port=url.port, user=url.user, database=url.database)
    try:
        # the "killed run": its marker written, its transaction not yet committed, the lock held as the sink does
        assert rows(holder, f"SELECT GET_LOCK('{marker_lock_name(load_id)}', 5)") == [(1,)]
        holder.begin()
        rows(
            holder,
            "INSERT INTO _oxi_loads (load_id, pipeline, step, committed_at) "
            f"VALUES ('{load_id}', 'p', 'step', '2026-01-01T00:00:00Z')",
        )
        answer: list[bool | None] = []
        asking = threading.Thread(target=lambda: answer.append(sink.load_committed(load_id, ctx(tmp_path))))
        asking.start()
        waiting = 0
        while not waiting and asking.is_alive():  # until the lookup is blocked on the lock
            waiting = rows(
                my,
                "SELECT count(*) FROM information_schema.processlist "
                f"WHERE info LIKE 'SELECT GET_LOCK(%{marker_lock_name(load_id)}%{365 * 24 * 3600})'",
            )[0][0]
        assert waiting and not answer, "the lookup answered before the transaction ended"
        holder.commit()
        rows(holder, f"SELECT RELEASE_LOCK('{marker_lock_name(load_id)}')")
        asking.join(timeout=60)
        assert answer == [True]
    finally:
        holder.close()
        rows(my, f"DELETE FROM _oxi_loads WHERE load_id IN ('{load_id}', '{first.load_id}')")
