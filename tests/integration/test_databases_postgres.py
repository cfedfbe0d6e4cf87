"""read_postgres / write_postgres against the real PostgreSQL server (OXIFLOW_TEST_POSTGRES_URL).

The oracle is psycopg, PostgreSQL's own Python driver, reading the same rows: an independent
client from the ADBC driver the oxis use. A missing server fails these tests (no skips).
"""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from _dbtest import PG_URL, ctx, read_all, unique, write

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import DataError
from oxiflow.oxis.databases.postgres import ReadPostgres, ReadPostgresConfig, WritePostgres, WritePostgresConfig

OXIFLOW = [sys.executable, "-c", "from oxiflow.cli.main import main; main()"]


@pytest.fixture
def pg() -> Iterator[psycopg.Connection]:
    with psycopg.connect(PG_URL.replace("postgresql://", "postgresql://", 1), autocommit=True) as con:
        yield con


@pytest.fixture
def table(pg: psycopg.Connection) -> Iterator[str]:
    name = unique("oxi")
    yield name
    pg.execute(f'DROP TABLE IF EXISTS "{name}"')
    pg.execute(f'DROP TABLE IF EXISTS "_oxiflow_staging_{name}"')


def rows(pg: psycopg.Connection, sql: str) -> list[tuple]:
    return pg.execute(sql).fetchall()


def test_read_types_match_psycopg(pg: psycopg.Connection, table: str, tmp_path: Path) -> None:
    pg.execute(
        f"""CREATE TABLE "{table}" (i2 smallint, i4 integer, i8 bigint, n numeric(20,4), nu numeric, t text,
        b boolean, d date, ts timestamp, tz timestamptz, j json, jb jsonb, by bytea, u uuid, ai int[], at text[])"""
    )
    pg.execute(
        f"""INSERT INTO "{table}" VALUES
        (1, 2, 9000000000, 1234567890123456.7891, 1.000000000000000000001, 'héllo', true, '2024-02-29',
         '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', '{{"a": [1, 2]}}', '{{"b": null}}', '\\x00ff',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{1,NULL,3}}', '{{"x","y"}}'),
        (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"""
    )
    got = read_all(ReadPostgres(ReadPostgresConfig(url=PG_URL, table=table)), ctx(tmp_path))
    assert got.schema.field("n").type == pa.decimal128(20, 4)
    assert got.schema.field("nu").type == pa.string()  # unconstrained numeric: exact text
    assert got.schema.field("tz").type == pa.timestamp("us", "UTC")
    assert got.schema.field("ai").type == pa.list_(pa.int32())
    oracle = rows(
        pg,
        f'SELECT i2, i4, i8, n, nu::text, t, b, d, ts, tz, j::text, jb::text, by, u::text, ai, at FROM "{table}"',
    )
    expected = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in oracle]
    assert [tuple(r.values()) for r in got.to_pylist()] == expected
    assert isinstance(expected[0][3], decimal.Decimal) and isinstance(expected[0][9], dt.datetime)


def test_write_types_and_read_back_with_psycopg(pg: psycopg.Connection, table: str, tmp_path: Path) -> None:
    src = pa.table(
        {
            "id": pa.array([1, 2, None], pa.int64()),
            "small": pa.array([1, -2, None], pa.int8()),
            "price": pa.array([decimal.Decimal("12.345"), decimal.Decimal("-0.001"), None], pa.decimal128(12, 3)),
            "name": pa.array(["a 'quoted' \"name\"", "", None]),
            "ok": pa.array([True, False, None]),
            "day": pa.array([dt.date(2024, 1, 1), dt.date(1999, 12, 31), None]),
            "at": pa.array([dt.datetime(2024, 1, 1, 12, 30), dt.datetime(2000, 1, 1), None], pa.timestamp("us")),
            "at_utc": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC), None, None], pa.timestamp("us", "UTC")),
            "blob": pa.array([b"\x00\x01", b"", None], pa.binary()),
            "tags": pa.array([["x", "y"], [], None], pa.list_(pa.string())),
            "meta": pa.array([{"k": 1}, {"k": None}, None], pa.struct([("k", pa.int64())])),
        }
    )
    c = ctx(tmp_path)
    write(WritePostgres(WritePostgresConfig(url=PG_URL, table=table)), src, c)
    assert c.metadata["rows"] == 3 and c.metadata["table"] == table
    types = dict(
        rows(pg, f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}'")
    )
    assert types["price"] == "numeric" and types["meta"] == "jsonb" and types["tags"] == "ARRAY"
    assert types["at_utc"] == "timestamp with time zone" and types["small"] == "smallint"
    got = rows(pg, f'SELECT id, small, price, name, ok, day, at, at_utc, blob, tags, meta FROM "{table}" ORDER BY id')
    expected = [tuple(r.values()) for r in src.to_pylist()]
    norm = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in got]
    assert norm == [(*e[:10], e[10]) for e in expected]


def test_append_adds_new_columns_and_replace_swaps(pg: psycopg.Connection, table: str, tmp_path: Path) -> None:
    sink = WritePostgres(WritePostgresConfig(url=PG_URL, table=f"public.{table}"))
    write(sink, pa.table({"id": [1, 2]}), ctx(tmp_path))
    write(sink, pa.table({"id": [3], "note": ["new"]}), ctx(tmp_path))
    assert rows(pg, f'SELECT id, note FROM "{table}" ORDER BY id') == [(1, None), (2, None), (3, "new")]

    replace = WritePostgres(WritePostgresConfig(url=PG_URL, table=table, write_disposition="replace"))
    c = ctx(tmp_path)
    write(replace, pa.table({"other": ["only"]}), c)
    assert rows(pg, f'SELECT * FROM "{table}"') == [("only", c.run_id)]  # every row names its load
    assert c.metadata["rows"] == 1
    assert rows(pg, f"SELECT count(*) FROM pg_tables WHERE tablename LIKE '_oxiflow_staging_{table}'") == [(0,)]


def test_a_failed_replace_leaves_the_old_table(pg: psycopg.Connection, table: str, tmp_path: Path) -> None:
    pg.execute(f'CREATE TABLE "{table}" (id int)')
    pg.execute(f'INSERT INTO "{table}" VALUES (7)')

    def batches() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"id": [1, 2]})
        raise RuntimeError("upstream failed mid-stream")

    from oxiflow.data import OxiData

    sink = WritePostgres(WritePostgresConfig(url=PG_URL, table=table, write_disposition="replace"))
    with pytest.raises(Exception, match="upstream failed"):
        sink.write(OxiData(pa.schema([("id", pa.int64())]), batches()), ctx(tmp_path))
    assert rows(pg, f'SELECT id FROM "{table}"') == [(7,)]


def test_partitioned_read_equals_the_plain_read(pg: psycopg.Connection, table: str, tmp_path: Path) -> None:
    pg.execute(
        f'CREATE TABLE "{table}" AS SELECT i AS id, md5(i::text) AS h, '
        f"timestamp '2024-01-01' + i * interval '1 minute' AS at FROM generate_series(-50, 9949) i"
    )
    for column in ("id", "at"):
        cfg = ReadPostgresConfig(url=PG_URL, table=table, partition_on=column, partitions=4, chunk_size=777)
        c = ctx(tmp_path)
        data = ReadPostgres(cfg).read(c)
        batches = list(data)
        assert all(b.num_rows <= 777 for b in batches)
        got = pa.Table.from_batches(batches).sort_by("id")
        assert c.metadata["partitions"] == 4
        assert got.column("id").to_pylist() == [r[0] for r in rows(pg, f'SELECT id FROM "{table}" ORDER BY id')]
        assert got.column("h").to_pylist() == [r[0] for r in rows(pg, f'SELECT h FROM "{table}" ORDER BY id')]


def test_query_mode(pg: psycopg.Connection, table: str, tmp_path: Path) -> None:
    pg.execute(f'CREATE TABLE "{table}" AS SELECT i AS id FROM generate_series(1, 100) i')
    query = f'SELECT id * 2 AS twice FROM "{table}" WHERE id % 10 = 0 ORDER BY id'
    got = read_all(ReadPostgres(ReadPostgresConfig(url=PG_URL, query=query)), ctx(tmp_path))
    assert got.column("twice").to_pylist() == [r[0] for r in rows(pg, query)]


def test_missing_table_suggests_a_close_name(table: str, pg: psycopg.Connection, tmp_path: Path) -> None:
    pg.execute(f'CREATE TABLE "{table}" (id int)')
    with pytest.raises(DataError, match=r"did you mean") as err:
        read_all(ReadPostgres(ReadPostgresConfig(url=PG_URL, table=table[:-1] + "x")), ctx(tmp_path))
    assert table in str(err.value) and "127.0.0.1" in str(err.value)


def test_connection_errors_name_the_server_without_the_password(tmp_path: Path) -> None:
    bad_port = "postgresql://postgres:s3cr3t-pw@127.0.0.1:1/test"
    with pytest.raises(DataError, match="is PostgreSQL running") as err:
        read_all(ReadPostgres(ReadPostgresConfig(url=bad_port, table="x")), ctx(tmp_path))
    assert "s3cr3t-pw" not in str(err.value) and "postgresql://postgres:***@127.0.0.1:1/test" in str(err.value)
    bad_db = PG_URL.rsplit("/", 1)[0] + "/no_such_db_oxiflow"
    with pytest.raises(DataError, match="check the database name"):
        read_all(ReadPostgres(ReadPostgresConfig(url=bad_db, table="x")), ctx(tmp_path))


def test_timeout_cancels_a_blocked_query(tmp_path: Path, write_pipeline) -> None:
    path = write_pipeline(
        f"""
        pipeline:
          - name: read_postgres
            config: {{url: "{PG_URL}", query: "SELECT pg_sleep(60) AS slept"}}
            timeout_seconds: 1
          - name: write_parquet
            config: {{path: out.parquet}}
        """
    )
    start = time.monotonic()
    result = run_plan(load_pipeline(path))
    assert result.status != "ok"
    assert "timed out" in str(result.error)
    assert time.monotonic() - start < 8  # cancelled in the server, not waited out (60 s)


def test_kill_during_replace_keeps_the_old_table(pg: psycopg.Connection, table: str, tmp_path: Path) -> None:
    pg.execute(f'CREATE TABLE "{table}" (id bigint, name text)')
    pg.execute(f"INSERT INTO \"{table}\" VALUES (-1, 'old')")
    big = tmp_path / "big.parquet"
    import pyarrow.parquet as pq

    n = 3_000_000
    pq.write_table(pa.table({"id": pa.array(range(n), pa.int64()), "name": pa.array(["x" * 20] * n)}), big)
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            pipeline:
              - name: read_parquet
                config: {{path: big.parquet}}
              - name: write_postgres
                config: {{url: "{PG_URL}", table: {table}, write_disposition: replace}}
            """
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen([*OXIFLOW, "run", str(path), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        # the COPY into the staging table is running once the server reports it
        while not rows(pg, "SELECT 1 FROM pg_stat_progress_copy WHERE tuples_processed > 0"):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the load never started"
            time.sleep(0.005)  # polling interval
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the server rolls the transaction back when the client's socket closes
    deadline = time.monotonic() + 30
    while rows(pg, "SELECT 1 FROM pg_stat_activity WHERE state <> 'idle' AND query LIKE 'COPY%'"):
        assert time.monotonic() < deadline
        time.sleep(0.01)  # polling interval
    assert rows(pg, f'SELECT id, name FROM "{table}"') == [(-1, "old")]
    assert rows(pg, f"SELECT count(*) FROM pg_tables WHERE tablename = '_oxiflow_staging_{table}'") == [(0,)]
    assert uuid.UUID  # (uuid imported for table names in _db)
