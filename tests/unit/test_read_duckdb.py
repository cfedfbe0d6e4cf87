"""read_duckdb: tables and queries of a real DuckDB file, checked against DuckDB reading it directly."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import new_run_id, run_plan
from oxiflow.errors import ConfigError, DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.databases.read_duckdb import ReadDuckdb, ReadDuckdbConfig


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA analytics")
    con.execute(
        "CREATE TABLE analytics.orders AS SELECT i AS id, 'c' || (i % 7) AS customer, i * 0.5 AS amount, "
        "CASE WHEN i % 5 = 0 THEN NULL ELSE [i, i + 1] END AS tags FROM range(10000) t(i)"
    )
    con.execute("CREATE TABLE customers AS SELECT 'c' || i AS customer, i AS rank FROM range(7) t(i)")
    con.execute("CREATE VIEW big_orders AS SELECT * FROM analytics.orders WHERE amount > 4000")
    con.close()
    return path


def _expected(db: Path, query: str) -> pa.Table:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(query).to_arrow_table()


def _ctx(base: Path, **kw: object) -> StepContext:
    return StepContext(step_id="r", oxi_name="read_duckdb", run_id=new_run_id(), base_dir=base, **kw)  # type: ignore[arg-type]


def _read(base: Path, batch_size: int = 1000, **config: object) -> tuple[pa.Table, StepContext]:
    ctx = _ctx(base, batch_size=batch_size)
    data = ReadDuckdb(ReadDuckdbConfig(**config)).read(ctx)  # type: ignore[arg-type]
    batches = list(data)
    assert all(b.num_rows <= batch_size for b in batches)
    return pa.Table.from_batches(batches, schema=data.schema), ctx


def test_pipeline_copies_a_schema_qualified_table(db: Path, tmp_path: Path, write_pipeline) -> None:
    path = write_pipeline(
        """
        pipeline:
          - name: read_duckdb
            config: {database: w.duckdb, table: analytics.orders}
          - name: write_parquet
            config: {path: out.parquet}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert pq.read_table(tmp_path / "out.parquet").equals(_expected(db, "SELECT * FROM analytics.orders"))
    assert [(s.rows_in, s.rows_out) for s in result.steps] == [(10000, 10000), (10000, 10000)]


def test_streams_in_batches_of_the_step_size(db: Path, tmp_path: Path) -> None:
    table, ctx = _read(tmp_path, batch_size=1000, database="w.duckdb", table="customers")
    assert table.equals(_expected(db, "SELECT * FROM customers"))
    assert ctx.metadata == {"database": str(db), "table": "customers"}


def test_query_mode_joins_and_reads_views(db: Path, tmp_path: Path) -> None:
    query = "SELECT o.id, c.rank FROM big_orders o JOIN customers c USING (customer) WHERE o.id % 3 = 0 ORDER BY o.id"
    table, _ = _read(tmp_path, database=str(db), query=query)
    assert table.equals(_expected(db, query))
    assert table.num_rows > 0


def test_the_database_is_opened_read_only(db: Path, tmp_path: Path) -> None:
    before = _expected(db, "SELECT count(*) AS n FROM customers")
    with pytest.raises(DataError, match="read-only"):
        _read(tmp_path, database="w.duckdb", query="DELETE FROM customers RETURNING *")
    assert _expected(db, "SELECT count(*) AS n FROM customers").equals(before)


def test_explain_probe_gets_the_schema_and_no_rows(db: Path, tmp_path: Path) -> None:
    expected = _expected(db, "SELECT * FROM analytics.orders LIMIT 0").schema
    ctx = _ctx(tmp_path, limit_rows=0)
    data = ReadDuckdb(ReadDuckdbConfig(database="w.duckdb", table="analytics.orders")).read(ctx)
    assert data.schema == expected
    assert sum(b.num_rows for b in data) == 0


def test_scan_sql_runs_on_another_connection(db: Path, tmp_path: Path) -> None:
    source = ReadDuckdb(ReadDuckdbConfig(database="w.duckdb", table="analytics.orders"))
    assert source.pushdown_ready()
    scan = source.scan_sql(_ctx(tmp_path))
    assert scan.files == [str(db)]
    other = duckdb.connect()  # knows nothing of the file: no ATTACH
    assert other.sql(scan.sql).to_arrow_table().equals(_expected(db, "SELECT * FROM analytics.orders"))
    assert scan.count_sql is not None
    assert other.sql(scan.count_sql).fetchall() == [(10000,)]


def test_queries_have_no_pushdown(db: Path) -> None:
    # a query names tables of the file: only a connection that ATTACHed it could run it
    assert not ReadDuckdb(ReadDuckdbConfig(database="w.duckdb", query="SELECT 1")).pushdown_ready()


def test_scan_errors_translate_to_the_streaming_error(db: Path, tmp_path: Path) -> None:
    scan = ReadDuckdb(ReadDuckdbConfig(database="w.duckdb", table="analytics.order")).scan_sql(_ctx(tmp_path))
    with pytest.raises(duckdb.Error) as info:
        duckdb.connect().sql(scan.sql).fetchall()
    assert scan.translate is not None
    err = scan.translate(info.value)
    assert isinstance(err, DataError)
    assert "no table 'analytics.order'" in str(err) and "did you mean 'analytics.orders'?" in str(err)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"table": "analytics.order"}, r"no table 'analytics.order' in w.duckdb \(did you mean 'analytics.orders'\?\)"),
        ({"table": "customer"}, r"no table 'customer' in w.duckdb \(did you mean 'customers'\?\)"),
        ({"table": "big_orders"}, r"'big_orders' in w.duckdb is a view, not a table \(read it with query: "),
        ({"table": "a.b.c"}, r"is not `table` or `schema.table`"),
        ({"table": "zzz"}, r"no table 'zzz' in w.duckdb \(its tables: analytics.orders, customers\)"),
        ({"query": "SELECT * FROM nope"}, r"reading query of .* failed: Catalog Error"),
    ],
)
def test_clear_errors(db: Path, tmp_path: Path, config: dict[str, str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        _read(tmp_path, database="w.duckdb", **config)


def test_missing_file_and_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"DuckDB database not found: nope\.duckdb"):
        _read(tmp_path, database="nope.duckdb", table="t")
    assert not (tmp_path / "nope.duckdb").exists()  # read-only never creates the file
    (tmp_path / "text.duckdb").write_text("hello, not a database\n" * 100)
    with pytest.raises(DataError, match="cannot open DuckDB database"):
        _read(tmp_path, database="text.duckdb", table="t")


def test_config_needs_exactly_one_of_table_and_query() -> None:
    with pytest.raises(ValueError, match="exactly one of `table`"):
        ReadDuckdbConfig(database="w.duckdb")
    with pytest.raises(ValueError, match="exactly one of `table`"):
        ReadDuckdbConfig(database="w.duckdb", table="t", query="SELECT 1")


# -- chunk_size and range partitions (the options of the other database sources) ------------------------
@pytest.fixture
def events(tmp_path: Path) -> Path:
    """10,000 rows with an integer, a timestamp and a date column to split on, and one row of NULLs."""
    path = tmp_path / "e.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE ev AS SELECT i - 50 AS id, TIMESTAMP '2024-01-01' + INTERVAL (i) MINUTE AS at, "
        "DATE '2024-01-01' + CAST(i // 100 AS INTEGER) AS day, md5(CAST(i AS VARCHAR)) AS h FROM range(10000) t(i)"
    )
    con.execute("INSERT INTO ev VALUES (NULL, NULL, NULL, 'nulls')")
    con.close()
    return path


@pytest.mark.parametrize("column", ["id", "at", "day"])
def test_partitioned_read_equals_the_plain_read(events: Path, tmp_path: Path, column: str) -> None:
    got, ctx = _read(
        tmp_path, 10_000, database="e.duckdb", table="ev", partition_on=column, partitions=4, chunk_size=777
    )
    assert ctx.metadata["partitions"] == 4
    plain, _ = _read(tmp_path, 10_000, database="e.duckdb", table="ev")
    oracle = _expected(events, "SELECT * FROM ev ORDER BY h")
    assert got.sort_by("h").equals(oracle) and plain.sort_by("h").equals(oracle)  # every row once, NULLs too
    assert got.num_rows == 10_001


def test_chunk_size_sets_the_batch_size(events: Path, tmp_path: Path) -> None:
    data = ReadDuckdb(ReadDuckdbConfig(database="e.duckdb", table="ev", chunk_size=333)).read(_ctx(tmp_path))
    sizes = [b.num_rows for b in data]
    assert sizes[:-1] == [333] * (len(sizes) - 1) and sum(sizes) == 10_001


def test_partitions_in_a_pipeline_stream_instead_of_pushing_down(events: Path, tmp_path: Path, write_pipeline) -> None:
    assert not ReadDuckdb(
        ReadDuckdbConfig(database="e.duckdb", table="ev", partition_on="id", partitions=3)
    ).pushdown_ready()
    path = write_pipeline(
        """
        pipeline:
          - name: read_duckdb
            config:
              database: e.duckdb
              query: "SELECT id, h FROM ev WHERE id % 2 = 0"
              partition_on: id
              partitions: 3
          - name: write_parquet
            config: {path: out.parquet}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert result.metadata["read_duckdb"]["partitions"] == 3
    got = pq.read_table(tmp_path / "out.parquet").sort_by("h")
    assert got.equals(_expected(events, "SELECT id, h FROM ev WHERE id % 2 = 0 ORDER BY h"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("partitions: 4", "`partitions` > 1 needs `partition_on`"),
        ("partitions: 0, partition_on: id", "`partitions` must be at least 1"),
        ("chunk_size: 0", "`chunk_size` must be at least 1"),
        ("incremental: {mode: files, cursor: name}", "database sources take `incremental.mode: rows` only"),
    ],
)
def test_read_options_are_checked_at_validate_time(write_pipeline, config: str, message: str) -> None:
    path = write_pipeline(
        f"pipeline:\n  - name: read_duckdb\n    config: {{database: e.duckdb, table: ev, {config}}}\n"
        "  - name: write_parquet\n    config: {path: out.parquet}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_pipeline(path)
    assert ":3:" in str(exc.value)  # the config's line
