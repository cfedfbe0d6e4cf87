"""The comparison tools, one job per call, run by run.py in a fresh process each:

    python benchmarks/tools.py JOB INPUT OUTPUT

Each job is what a user of that tool would write, with its default settings, so the timing
includes interpreter start-up and imports just like the ``oxiflow run`` subprocess does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

# The filter + group-by every tool computes (DuckDB dialect); {src} is the scan.
GROUP_BY = """
SELECT currency, status, date_trunc('day', created_at) AS day,
       count(*) AS orders, sum(amount) AS revenue, avg(quantity) AS avg_quantity
FROM {src}
WHERE status IN ('completed', 'shipped') AND amount > 100
GROUP BY ALL
"""


def _q(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def duckdb_csv(src: str, out: str) -> None:
    import duckdb

    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_csv({_q(src)})) TO {_q(out)} (FORMAT parquet, COMPRESSION zstd)"
    )


def duckdb_csv_tuned(src: str, out: str) -> None:
    """The same COPY with the memory cap oxiflow gives its scans (112 MB per core, at least 2: engine/duck.py)."""
    import os

    import duckdb

    con = duckdb.connect(config={"memory_limit": f"{112 * max(2, os.cpu_count() or 1)}MB"})
    con.execute(f"COPY (SELECT * FROM read_csv({_q(src)})) TO {_q(out)} (FORMAT parquet, COMPRESSION zstd)")


def duckdb_json(src: str, out: str) -> None:
    import duckdb

    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_json({_q(src)})) TO {_q(out)} (FORMAT parquet, COMPRESSION zstd)"
    )


def duckdb_groupby(src: str, out: str) -> None:
    import duckdb

    con = duckdb.connect(out)
    con.execute("DROP TABLE IF EXISTS daily")
    con.execute("CREATE TABLE daily AS " + GROUP_BY.format(src=f"read_parquet({_q(src)})"))
    con.close()


def duckdb_groupby_floor(src: str, out: str) -> None:
    """duckdb_groupby after importing what oxiflow's command line and config stand on (typer, pydantic,
    yaml), with pydantic's plugin scan off as oxiflow has it: the least any CLI built on them can take."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    import pydantic  # noqa: F401
    import typer  # noqa: F401
    import yaml  # noqa: F401

    duckdb_groupby(src, out)


def duckdb_json_table(src: str, out: str) -> None:
    """DuckDB's own read_json into a table of a database file."""
    import duckdb

    con = duckdb.connect(out)
    con.execute("DROP TABLE IF EXISTS orders")
    con.execute(f"CREATE TABLE orders AS SELECT * FROM read_json({_q(src)})")
    con.close()


def _dlt_pipeline(out: str):  # type: ignore[no-untyped-def]
    import os

    import dlt

    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    name = "bench_" + os.path.basename(out).split(".")[0]
    return dlt.pipeline(
        pipeline_name=name, destination=dlt.destinations.duckdb(out), dataset_name="bench", pipelines_dir=out + ".dlt"
    )


def dlt_json_arrow(src: str, out: str) -> None:
    """dlt fed Arrow batches (pyarrow's streaming JSON Lines reader) into DuckDB."""
    import pyarrow.json as pj

    batches = iter(pj.open_json(src, read_options=pj.ReadOptions(block_size=64 << 20)))
    _dlt_pipeline(out).run(batches, table_name="orders", write_disposition="replace")


def dlt_json_rows(src: str, out: str) -> None:
    """dlt fed Python dicts (its default path for JSON), one per line."""
    import json

    def rows():  # type: ignore[no-untyped-def]
        with open(src, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    _dlt_pipeline(out).run(rows(), table_name="orders", write_disposition="replace")


PG_URL = os.environ.get("OXIFLOW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_DDL = (
    "(order_id bigint, customer_id bigint, product_id bigint, quantity bigint, amount float8, "
    "currency text, status text, created_at timestamp)"
)


def psql_copy(src: str, out: str) -> None:
    """Load the orders CSV with psql's \\copy, what a user would type; ``out`` is the table."""
    import subprocess

    base = ["psql", "-q", "-v", "ON_ERROR_STOP=1", PG_URL]
    subprocess.run([*base, "-c", f"DROP TABLE IF EXISTS {out}; CREATE TABLE {out} {PG_DDL}"], check=True)
    subprocess.run([*base, "-c", f"\\copy {out} FROM '{src}' CSV HEADER"], check=True)


def connectorx_read(src: str, out: str) -> None:
    """Read table ``src`` from PostgreSQL into a Parquet file with connectorx's Arrow stream."""
    import connectorx as cx
    import pyarrow.parquet as pq

    reader = cx.read_sql(PG_URL, f"SELECT * FROM {src}", return_type="arrow_stream", batch_size=122_880)
    with pq.ParquetWriter(out, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)


ORDER_COLUMNS = ("order_id", "customer_id", "product_id", "quantity", "amount", "currency", "status", "created_at")


def merge_inputs(src: str, out: str) -> None:
    """From the orders Parquet ``src``, in the folder ``out``: base.duckdb (table orders, no index),
    base_pk.duckdb (the same with PRIMARY KEY (order_id)), base_oxi.duckdb (the table as an earlier
    oxiflow load left it: with its ``_oxi_load_id`` column) and updates.parquet: every 10th order
    changed plus as many new order ids, shuffled (1/5 of the rows: half updates, half new keys)."""
    import duckdb

    os.makedirs(out, exist_ok=True)
    scan = f"read_parquet({_q(src)})"
    con = duckdb.connect()
    n = int(con.execute(f"SELECT count(*) FROM {scan}").fetchall()[0][0])
    updates = os.path.join(out, "updates.parquet")
    con.execute(
        "COPY (SELECT * FROM ("
        "SELECT * REPLACE ('updated' AS status, coalesce(amount, 0) + 1 AS amount) "
        f"FROM {scan} WHERE order_id % 10 = 0 "
        f"UNION ALL SELECT * REPLACE (order_id + {n} AS order_id) FROM {scan} WHERE order_id % 10 = 1"
        f") ORDER BY hash(order_id)) TO {_q(updates)} (FORMAT parquet)"
    )
    con.close()
    for name, ddl in (("base.duckdb", ""), ("base_pk.duckdb", "PRIMARY KEY"), ("base_oxi.duckdb", "load id")):
        path = os.path.join(out, name)
        if os.path.exists(path):
            os.remove(path)
        con = duckdb.connect(path)
        rows = f"SELECT *, 'initial-load' AS _oxi_load_id FROM {scan}" if ddl == "load id" else f"SELECT * FROM {scan}"
        con.execute(f"CREATE TABLE orders AS {rows} LIMIT 0")
        if ddl == "PRIMARY KEY":
            con.execute("ALTER TABLE orders ADD PRIMARY KEY (order_id)")
        con.execute(f"INSERT INTO orders {rows}")
        con.close()


def duckdb_merge_into(src: str, out: str) -> None:
    """DuckDB's MERGE INTO from the updates file into table orders of ``out`` (no index)."""
    import duckdb

    cols = ", ".join(ORDER_COLUMNS)
    sets = ", ".join(f"{c} = u.{c}" for c in ORDER_COLUMNS[1:])
    con = duckdb.connect(out)
    con.execute(
        f"MERGE INTO orders USING read_parquet({_q(src)}) AS u ON orders.order_id = u.order_id "
        f"WHEN MATCHED THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({', '.join('u.' + c for c in ORDER_COLUMNS)})"
    )
    con.close()


def duckdb_insert_or_replace(src: str, out: str) -> None:
    """INSERT OR REPLACE into table orders of ``out``, which has PRIMARY KEY (order_id)."""
    import duckdb

    con = duckdb.connect(out)
    con.execute(f"INSERT OR REPLACE INTO orders SELECT * FROM read_parquet({_q(src)})")
    con.close()


def dlt_merge_arrow(src: str, out: str) -> None:
    """dlt's merge (primary key order_id) fed Arrow batches of the Parquet file ``src``."""
    import pyarrow.parquet as pq

    batches = pq.ParquetFile(src).iter_batches(batch_size=100_000)
    _dlt_pipeline(out).run(batches, table_name="orders", write_disposition="merge", primary_key="order_id")


def polars_csv(src: str, out: str) -> None:
    import polars as pl

    pl.scan_csv(src, try_parse_dates=True).sink_parquet(out, compression="zstd")


def polars_json(src: str, out: str) -> None:
    import polars as pl

    pl.scan_ndjson(src).sink_parquet(out, compression="zstd")


def pyarrow_csv(src: str, out: str) -> None:
    """pyarrow's streaming CSV reader into a ParquetWriter: constant memory, one batch at a time."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    reader = pcsv.open_csv(src)
    with pq.ParquetWriter(out, reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)


def duckdb_summarize(src: str, out: str) -> None:
    """DuckDB's own column summary (SUMMARIZE), what `oxi profile` is compared with; written as CSV."""
    import duckdb

    ext = src.rsplit(".", 1)[-1]
    reader = {"parquet": "read_parquet", "json": "read_json", "jsonl": "read_json"}.get(ext, "read_csv")
    duckdb.connect().sql(f"SUMMARIZE SELECT * FROM {reader}({_q(src)})").write_csv(out)


def noop(src: str, out: str) -> None:
    """Interpreter start-up alone, for reference."""


JOBS: dict[str, Callable[[str, str], None]] = {
    f.__name__: f
    for f in (
        duckdb_csv,
        duckdb_csv_tuned,
        duckdb_json,
        duckdb_groupby,
        duckdb_groupby_floor,
        duckdb_summarize,
        duckdb_json_table,
        dlt_json_arrow,
        dlt_json_rows,
        psql_copy,
        connectorx_read,
        merge_inputs,
        duckdb_merge_into,
        duckdb_insert_or_replace,
        dlt_merge_arrow,
        polars_csv,
        polars_json,
        pyarrow_csv,
        noop,
    )
}

if __name__ == "__main__":
    job, src, out = sys.argv[1:4]
    JOBS[job](src, out)
