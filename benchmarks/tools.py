"""The comparison tools, one job per call, run by run.py in a fresh process each:

    python benchmarks/tools.py JOB INPUT OUTPUT

Each job is what a user of that tool would write, with its default settings, so the timing
includes interpreter start-up and imports just like the ``oxiflow run`` subprocess does.
"""

from __future__ import annotations

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
    """The same COPY with the memory cap oxiflow gives its scans (128 MB per core, at least 2)."""
    import os

    import duckdb

    con = duckdb.connect(config={"memory_limit": f"{128 * max(2, os.cpu_count() or 1)}MB"})
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


def noop(src: str, out: str) -> None:
    """Interpreter start-up alone, for reference."""


JOBS: dict[str, Callable[[str, str], None]] = {
    f.__name__: f
    for f in (duckdb_csv, duckdb_csv_tuned, duckdb_json, duckdb_groupby, polars_csv, polars_json, pyarrow_csv, noop)
}

if __name__ == "__main__":
    job, src, out = sys.argv[1:4]
    JOBS[job](src, out)
