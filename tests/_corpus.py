"""What the corpus tests share: where ``../shared/testdata`` is, and DuckDB's own read of a Parquet file."""

from __future__ import annotations

from pathlib import Path

import duckdb

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"  # shared/ sits next to the repo


def live_duckdb_rows(path: Path) -> int | str:
    """The rows DuckDB reads from the Parquet file ``path``, or its error."""
    try:
        return len(duckdb.sql(f"select * from read_parquet('{path}')").fetchall())
    except duckdb.Error as exc:
        return str(exc)
