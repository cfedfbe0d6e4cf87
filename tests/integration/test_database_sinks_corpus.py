"""Every parquet-testing file DuckDB reads goes into every database sink (DuckDB, SQLite, PostgreSQL,
MariaDB), with all its rows; the only refusals are values the database has no place for, and they say so.
This is how the nested timestamps past year 9999 (SQLite, PostgreSQL JSON) were found."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest
from _dbtest import MYSQL_URL, PG_URL, unique

from _corpus import TESTDATA, live_duckdb_rows
from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import DataError
from oxiflow.oxis.databases.connection import parse_url

CORPUS = TESTDATA / "parquet-testing" / "data"
# a 2 GiB string map: the streamed reader's memory cap refuses it (see tests/conformance)
SKIP = {"large_string_map.brotli.parquet"}
# MySQL and MariaDB have no NaN or infinity in DOUBLE/FLOAT
NO_NAN = {
    "float16_nonzeros_and_nans.parquet",
    "float16_zeros_and_nans.parquet",
    "floating_orders_nan_count.parquet",
    "nan_in_stats.parquet",
}


FILES = sorted(p.name for p in CORPUS.glob("*.parquet") if p.name not in SKIP and isinstance(live_duckdb_rows(p), int))


def _target(sink: str, tmp_path: Path) -> str:
    return {
        "duckdb": f"database: '{tmp_path / 'w.duckdb'}'",
        "sqlite": f"database: '{tmp_path / 'w.sqlite'}'",
        "postgres": f"url: '{PG_URL}'",
        "mysql": f"url: '{MYSQL_URL}'",
    }[sink]


def _count_and_drop(sink: str, tmp_path: Path, table: str) -> int:
    if sink == "duckdb":
        with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
            return int(con.sql(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
    if sink == "sqlite":
        con = sqlite3.connect(tmp_path / "w.sqlite")
        try:
            return int(con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        finally:
            con.close()
    if sink == "postgres":
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            n = pg.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            pg.execute(f'DROP TABLE "{table}"')
            return int(n[0]) if n else -1
    url = parse_url(MYSQL_URL, "mysql")
    my: Any = pymysql.connect(
        host=url.host, port=url.port, user=url.user, password=url.password or "", database=url.database
    )
    try:
        with my.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM `{table}`")
            n = cur.fetchone()[0]
            cur.execute(f"DROP TABLE `{table}`")
        my.commit()
        return int(n)
    finally:
        my.close()


@pytest.mark.parametrize("sink", ["duckdb", "sqlite", "postgres", "mysql"])
@pytest.mark.parametrize("name", FILES)
def test_every_parquet_testing_file_loads(write_pipeline, tmp_path: Path, name: str, sink: str) -> None:
    table = unique("corpus")
    pipeline = write_pipeline(
        "pipeline:\n"
        f"  - {{name: read_parquet, id: src, config: {{path: '{CORPUS / name}'}}}}\n"
        f"  - {{name: write_{sink}, id: out, config: {{{_target(sink, tmp_path)}, table: {table}, "
        "write_disposition: replace}}\n"
    )
    result = run_plan(load_pipeline(pipeline))
    if sink == "mysql" and name in NO_NAN:
        assert isinstance(result.error, DataError) and result.error.context["step"] == "out"
        assert "cannot store NaN or infinity" in str(result.error)
        return
    assert result.status == "ok", f"{type(result.error).__name__}: {result.error}"
    assert _count_and_drop(sink, tmp_path, table) == result.steps[0].rows_out
