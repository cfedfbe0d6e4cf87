"""write_duckdb: append and atomic replace into a real DuckDB file, checked by reading it back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.data import OxiData
from oxiflow.engine.local import run_plan
from oxiflow.oxi import OxiConfig, Source, StepContext, oxi
from oxiflow.registry import default_registry


class HalfThenFailConfig(OxiConfig):
    rows: int = 10


@oxi("golden_wd_half_then_fail", kind="source", config=HalfThenFailConfig, summary="test: rows, then a failure")
class HalfThenFail(Source):
    config: HalfThenFailConfig

    def read(self, ctx: StepContext) -> OxiData:
        schema = pa.schema([("id", pa.int64())])

        def batches() -> Iterator[pa.RecordBatch]:
            yield pa.record_batch([pa.array(range(self.config.rows), pa.int64())], schema=schema)
            raise ValueError("source broke half way")

        return OxiData(schema, batches())


default_registry().register(HalfThenFail)


def _csv(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")


def _run(write_pipeline, csv: str, sink: str, pushdown: bool = True):
    path = write_pipeline(
        f"""
        settings: {{pushdown: {str(pushdown).lower()}}}
        pipeline:
          - name: read_csv
            config: {{path: {csv}}}
          - name: write_duckdb
            id: sink
            config: {sink}
        """
    )
    return run_plan(load_pipeline(path))


def _rows(db: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql(query).fetchall()
    finally:
        con.close()


def test_append_creates_then_appends_by_name(tmp_path: Path, write_pipeline) -> None:
    _csv(tmp_path, "a.csv", "id,name,amount\n1,a,1.5\n2,b,\n")
    _csv(tmp_path, "b.csv", "amount,id,name\n9.25,3,c\n")  # columns in another order
    r1 = _run(write_pipeline, "a.csv", "{database: wh.duckdb, table: orders}")
    assert r1.status == "ok", r1.error
    r2 = _run(write_pipeline, "b.csv", "{database: wh.duckdb, table: orders, write_disposition: append}")
    assert r2.status == "ok", r2.error
    db = tmp_path / "wh.duckdb"
    got = _rows(db, "select id, name, amount from orders order by id")
    assert got == [(1, "a", 1.5), (2, "b", None), (3, "c", 9.25)]
    # the table took the Arrow types of the first load
    types = _rows(db, "select column_name, data_type from information_schema.columns where table_name='orders'")
    assert dict(types) == {"id": "BIGINT", "name": "VARCHAR", "amount": "DOUBLE", "_oxi_load_id": "VARCHAR"}
    # each row carries the run id of the load that inserted it
    assert _rows(db, "select _oxi_load_id from orders order by id") == [(r1.run_id,), (r1.run_id,), (r2.run_id,)]
    assert r2.metadata["sink"] == {"rows": 1, "table": "orders", "database": str(db), "load_id": r2.run_id}
    assert r2.balanced


def test_replace_swaps_content_and_schema(tmp_path: Path, write_pipeline) -> None:
    _csv(tmp_path, "a.csv", "id,name\n1,a\n2,b\n")
    _csv(tmp_path, "b.csv", "id,score,extra\n7,0.5,x\n")
    sink = "{database: out/wh.duckdb, table: analytics.t, write_disposition: replace}"
    assert _run(write_pipeline, "a.csv", sink).status == "ok"
    db = tmp_path / "out/wh.duckdb"
    assert _rows(db, "select * exclude (_oxi_load_id) from analytics.t order by id") == [(1, "a"), (2, "b")]
    r = _run(write_pipeline, "b.csv", sink)
    assert r.status == "ok", r.error
    assert _rows(db, "select * from analytics.t") == [(7, 0.5, "x", r.run_id)]
    # no staging table left behind
    assert _rows(db, "select table_schema, table_name from information_schema.tables") == [("analytics", "t")]
    assert r.metadata["sink"]["rows"] == 1


def test_replace_failure_keeps_old_table(tmp_path: Path, write_pipeline) -> None:
    _csv(tmp_path, "a.csv", "id\n100\n200\n")
    sink = "{database: wh.duckdb, table: t, write_disposition: replace}"
    assert _run(write_pipeline, "a.csv", sink).status == "ok"
    path = write_pipeline(
        f"""
        pipeline:
          - name: golden_wd_half_then_fail
          - name: write_duckdb
            config: {sink}
        """
    )
    r = run_plan(load_pipeline(path))
    assert r.status == "failed"
    assert "source broke half way" in str(r.error)
    db = tmp_path / "wh.duckdb"
    assert _rows(db, "select id from t order by id") == [(100,), (200,)]
    assert _rows(db, "select count(*) from information_schema.tables") == [(1,)]


def test_append_failure_adds_nothing(tmp_path: Path, write_pipeline) -> None:
    _csv(tmp_path, "a.csv", "id\n100\n")
    assert _run(write_pipeline, "a.csv", "{database: wh.duckdb, table: t}").status == "ok"
    path = write_pipeline(
        """
        pipeline:
          - name: golden_wd_half_then_fail
          - name: write_duckdb
            config: {database: wh.duckdb, table: t}
        """
    )
    assert run_plan(load_pipeline(path)).status == "failed"
    assert _rows(tmp_path / "wh.duckdb", "select id from t") == [(100,)]


@pytest.mark.parametrize("pushdown", [True, False])
def test_quoted_identifiers_and_type_mismatch(tmp_path: Path, write_pipeline, pushdown: bool) -> None:
    _csv(tmp_path, "a.csv", "id\n1\n")
    _csv(tmp_path, "b.csv", "id\nnot-a-number\n")
    # without a load id column the table has exactly the input's columns: DuckDB then casts inside
    # a pushed-down reader, which names the bad record
    sink = '{database: wh.duckdb, table: "we\\"ird t", load_id_column: null}'
    r = _run(write_pipeline, "a.csv", sink, pushdown)
    assert r.status == "ok", r.error
    assert _rows(tmp_path / "wh.duckdb", 'select id from "we""ird t"') == [(1,)]
    bad = _run(write_pipeline, "b.csv", sink, pushdown)
    assert bad.status == "failed"
    if pushdown:
        # one statement: DuckDB casts to the table's BIGINT while reading, so the reader names the record
        assert bad.error.context["file"].endswith("b.csv") and bad.error.context["line"] == 2
        assert bad.error.context["step"] == "read_csv" and bad.error.context["column"] == "id"
    else:
        assert 'we"ird t' in str(bad.error) and "wh.duckdb" in str(bad.error)
    assert _rows(tmp_path / "wh.duckdb", 'select id from "we""ird t"') == [(1,)]


@pytest.mark.parametrize("table", ["a.b.c", ".t", "s."])
def test_bad_table_name(tmp_path: Path, write_pipeline, table: str) -> None:
    _csv(tmp_path, "a.csv", "id\n1\n")
    r = _run(write_pipeline, "a.csv", f"{{database: wh.duckdb, table: '{table}'}}")
    assert r.status == "failed"
    assert "schema.table" in str(r.error)


@pytest.mark.parametrize("pushdown", [True, False], ids=["pushdown", "stream"])
def test_replace_tags_rows_with_the_load_and_replaces_an_input_load_id(
    tmp_path: Path, write_pipeline, pushdown: bool
) -> None:
    """A copy of an oxiflow table (it has `_oxi_load_id`) gets this load's id, in the last column, as a
    fresh load does; `load_id_column: null` adds none. Hand-checked rows and DuckDB's own column list."""
    _csv(tmp_path, "copy.csv", "_oxi_load_id,id,name\nold-1,1,a\nold-2,2,b\n")
    db = tmp_path / "wh.duckdb"
    run = _run(write_pipeline, "copy.csv", "{database: wh.duckdb, table: t, write_disposition: replace}", pushdown)
    assert run.status == "ok", run.error
    assert next(s for s in run.steps if s.step_id == "sink").pushdown is pushdown
    columns = (
        "select column_name, data_type from information_schema.columns where table_name='t' order by ordinal_position"
    )
    assert _rows(db, columns) == [("id", "BIGINT"), ("name", "VARCHAR"), ("_oxi_load_id", "VARCHAR")]
    assert _rows(db, "select * from t order by id") == [(1, "a", run.run_id), (2, "b", run.run_id)]
    assert [n for (n,) in _rows(db, "select table_name from information_schema.tables") if "staging" in n] == []
    plain = "{database: wh.duckdb, table: t, write_disposition: replace, load_id_column: null}"
    again = _run(write_pipeline, "copy.csv", plain, pushdown)
    assert again.status == "ok", again.error
    assert _rows(db, "select * from t order by id") == [("old-1", 1, "a"), ("old-2", 2, "b")]


@pytest.mark.parametrize("pushdown", [True, False], ids=["pushdown", "stream"])
def test_replace_with_a_key_the_input_lacks_fails_and_keeps_the_table(
    tmp_path: Path, write_pipeline, pushdown: bool
) -> None:
    _csv(tmp_path, "a.csv", "id,name\n1,a\n")
    db = tmp_path / "wh.duckdb"
    assert _run(write_pipeline, "a.csv", "{database: wh.duckdb, table: t, write_disposition: replace}").status == "ok"
    bad = "{database: wh.duckdb, table: t, write_disposition: replace, primary_key: [order_id]}"
    run = _run(write_pipeline, "a.csv", bad, pushdown)
    assert run.status == "failed"
    assert "primary_key names column(s) ['order_id'] that the input does not have" in str(run.error)
    assert _rows(db, "select id, name from t") == [(1, "a")]
    assert [n for (n,) in _rows(db, "select table_name from information_schema.tables") if "staging" in n] == []
