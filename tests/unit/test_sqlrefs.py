"""Which tables an `oxi sql` query reads, and the MATERIALIZED CTE that lets it read a one-shot
stream twice: checked against DuckDB running the same queries on a real table."""

from __future__ import annotations

from collections import Counter

import duckdb
import pyarrow as pa
import pytest

from oxiflow.pipe.sqlrefs import materialize, reads, table_refs


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("select count(*) from input", {"input": 1}),
        ("select * from input join c using (customer_id)", {"input": 1, "c": 1}),  # USING: no binding needed
        ("select * from input a join input b using (id)", {"input": 2}),
        ('select * from "Input" join main.input using (x)', {"input": 2}),  # case and main. as DuckDB resolves them
        ("with t as (select * from input) select * from t, c", {"input": 1, "c": 1}),  # a CTE is no table
        ("select * from c where id in (select id from input)", {"c": 1, "input": 1}),
        ("select input from c", {"c": 1}),  # a column named input is not the table
        ("select * from other_db.main.input", {}),  # another catalog's table is not ours
        ("select * from read_parquet('missing.parquet') join input using (a)", {"input": 1}),  # no file is opened
    ],
)
def test_table_refs(query: str, expected: dict[str, int]) -> None:
    assert table_refs(query) == Counter(expected)


@pytest.mark.parametrize("query", ["pivot input on a using sum(b)", "select * frm x", "select 1; select 2"])
def test_statements_duckdb_cannot_serialize_fall_back_to_the_word(query: str) -> None:
    refs = table_refs(query)
    assert refs is None
    assert reads(query, "input", refs) == ("input" in query)
    assert not reads("select * from inputs, my_input", "input", None)


def _stream(table: pa.Table) -> pa.RecordBatchReader:
    return pa.RecordBatchReader.from_batches(table.schema, iter(table.to_batches(max_chunksize=7)))


@pytest.mark.parametrize(
    "query",
    [
        "select count(*) from input a join input b using (g)",
        "select g, count(*) from (select * from input where id < 30 union all select * from input) "
        "group by g order by g",
        "with t as (select id, g from input) select count(*) from t join input using (id)",
        "-- a comment first\nWITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT count(*) FROM r, input a, input b WHERE a.id = b.id",
    ],
)
def test_materialized_stream_is_read_once_and_gives_the_table_result(query: str) -> None:
    table = pa.table({"id": list(range(100)), "g": [i % 7 for i in range(100)]})
    oracle = duckdb.connect()
    oracle.register("input", table)  # a table DuckDB may scan as often as it likes
    expected = oracle.execute(query).fetchall()

    con = duckdb.connect()
    con.register("input__stream", _stream(table))
    assert con.execute(materialize(query, {"input": "input__stream"})).fetchall() == expected
    # and without the CTE the one-shot stream cannot be read twice: what the CTE is for
    con.register("input", _stream(table))
    with pytest.raises(duckdb.Error, match="consumed"):
        con.execute(query).fetchall()
