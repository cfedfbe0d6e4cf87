"""Pushdown: source -> [sql] -> sink chains run as one DuckDB statement, with the same results,
the same per-step figures and the same errors as streaming them (settings.pushdown: false)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.engine.metrics import RunResult
from oxiflow.errors import DataError, StepError

ROWS = [
    (1, "paid", 120.5, "2024-01-01 10:00:00", "EUR"),
    (2, "paid", 80.0, "2024-01-01 11:30:00", "USD"),
    (3, "cancelled", 300.0, "2024-01-02 09:00:00", "EUR"),
    (4, "shipped", 150.25, "2024-01-02 12:00:00", None),
    (5, "shipped", None, "2024-01-03 08:15:00", "USD"),
    (6, "paid", 999.0, "2024-01-03 23:59:59", "EUR"),
]
GROUP_BY = (
    "SELECT status, count(*) AS n, sum(amount) AS revenue FROM orders WHERE amount > 100 GROUP BY ALL ORDER BY status"
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    lines = ["id,status,amount,created_at,currency"]
    lines += [",".join("" if v is None else str(v) for v in row) for row in ROWS]
    (tmp_path / "orders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (tmp_path / "orders.jsonl").open("w", encoding="utf-8") as f:
        for row in ROWS:
            f.write(
                json.dumps(dict(zip(["id", "status", "amount", "created_at", "currency"], row, strict=True))) + "\n"
            )
    duckdb.sql(f"COPY (SELECT * FROM read_csv('{tmp_path / 'orders.csv'}')) TO '{tmp_path / 'orders.parquet'}'")
    return tmp_path


def run(write_pipeline, steps: str, pushdown: bool = True) -> tuple[RunResult, object]:
    path = write_pipeline(f"settings: {{pushdown: {str(pushdown).lower()}}}\npipeline:\n{steps}")
    plan = load_pipeline(path)
    return run_plan(plan), plan


def figures(result: RunResult) -> list[tuple[str, str, int, int, int]]:
    return [(s.step_id, s.status, s.rows_in, s.rows_out, s.rows_filtered) for s in result.steps]


SOURCES = {
    "csv": "  - name: read_csv\n    id: orders\n    config: {path: orders.csv}\n",
    "jsonl": "  - name: read_json\n    id: orders\n    config: {path: orders.jsonl}\n",
    "parquet": "  - name: read_parquet\n    id: orders\n    config: {path: orders.parquet}\n",
}
SINKS = {
    "parquet": ("  - name: write_parquet\n    id: out\n    config: {path: out/o.parquet}\n", "out/o.parquet"),
    "csv": ("  - name: write_csv\n    id: out\n    config: {path: out/o.csv}\n", "out/o.csv"),
    "json": ("  - name: write_json\n    id: out\n    config: {path: out/o.jsonl}\n", "out/o.jsonl"),
}


def read_back(path: Path) -> pa.Table:
    return duckdb.sql(f"SELECT * FROM '{path}' ORDER BY ALL").to_arrow_table()


@pytest.mark.parametrize("sink", sorted(SINKS))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_source_to_sink_same_as_streaming(write_pipeline, data: Path, source: str, sink: str) -> None:
    text, out = SINKS[sink]
    pushed, plan = run(write_pipeline, SOURCES[source] + text)
    assert set(plan.pushdowns) == {"out"}  # type: ignore[attr-defined]
    assert pushed.status == "ok", pushed.error
    fast = read_back(data / out)
    streamed, plan = run(write_pipeline, SOURCES[source] + text, pushdown=False)
    assert plan.pushdowns == {}  # type: ignore[attr-defined]
    assert streamed.status == "ok", streamed.error
    assert read_back(data / out).equals(fast)
    assert fast.num_rows == len(ROWS)
    assert figures(pushed) == figures(streamed) == [("orders", "ok", 6, 6, 0), ("out", "ok", 6, 6, 0)]
    assert all(s.pushdown for s in pushed.steps) and not any(s.pushdown for s in streamed.steps)
    assert pushed.metadata["orders"]["path"] == str(data / f"orders.{'jsonl' if source == 'jsonl' else source}")
    assert pushed.metadata["out"]["rows"] == 6


@pytest.mark.parametrize("disposition", ["append", "replace"])
def test_parquet_sql_duckdb_in_one_statement(write_pipeline, data: Path, disposition: str) -> None:
    steps = (
        SOURCES["parquet"]
        + f'  - name: sql\n    id: daily\n    config: {{query: "{GROUP_BY}"}}\n'
        + f"  - name: write_duckdb\n    id: wh\n    config: {{database: wh.duckdb, table: a.daily, "
        f"write_disposition: {disposition}}}\n"
    )
    result, plan = run(write_pipeline, steps)
    assert result.status == "ok", result.error
    assert plan.pushdowns["wh"].describe() == "orders -> daily -> wh: one DuckDB statement"  # type: ignore[attr-defined]
    oracle = duckdb.sql(GROUP_BY.replace("FROM orders", f"FROM '{data / 'orders.parquet'}'")).fetchall()
    con = duckdb.connect(str(data / "wh.duckdb"))
    got = con.sql("SELECT * EXCLUDE (_oxi_load_id) FROM a.daily ORDER BY status").fetchall()
    con.close()
    assert got == sorted(oracle)
    # rows in of the sql step come from the Parquet footers: exact without streaming them
    assert figures(result) == [("orders", "ok", 6, 6, 0), ("daily", "ok", 6, 3, 0), ("wh", "ok", 3, 3, 0)]


FILTER_SINKS = {  # each way a sink runs a pushed-down query: COPY to a file, a dataset load, a CopySink
    "parquet file": (SINKS["parquet"][0], "out/o.parquet"),
    "parquet dataset": (
        "  - name: write_parquet\n    id: out\n    config: {path: out/ds, write_disposition: append}\n",
        "out/ds/*.parquet",
    ),
    "csv": SINKS["csv"],
}


@pytest.mark.parametrize("sink", sorted(FILTER_SINKS))
def test_filter_like_sql_counts_balance(write_pipeline, data: Path, sink: str) -> None:
    text, out = FILTER_SINKS[sink]
    steps = (
        SOURCES["parquet"]
        + "  - name: sql\n    id: big\n    config: {query: 'select * from input where amount > 100'}\n"
        + text
    )
    result, plan = run(write_pipeline, steps)
    assert "out" in plan.pushdowns  # type: ignore[attr-defined]
    assert result.status == "ok" and result.balanced
    # the sql step's rows in are the source's count (its Parquet footers, read on the sink's
    # connection), as streaming counts them (a sql step reshapes: no rows are called filtered)
    expected = [("orders", "ok", 6, 6, 0), ("big", "ok", 6, 4, 0), ("out", "ok", 4, 4, 0)]
    assert figures(result) == expected
    assert duckdb.sql(f"SELECT count(*) FROM '{data / out}'").fetchall() == [(4,)]
    if sink != "parquet dataset":  # (a second append would add to the dataset)
        streamed, _ = run(write_pipeline, steps, pushdown=False)
        assert figures(streamed) == expected


def test_what_is_not_pushed_down(write_pipeline, data: Path) -> None:
    def chains(steps: str) -> set[str]:
        return set(load_pipeline(write_pipeline("pipeline:\n" + steps)).pushdowns)

    sql = "  - name: sql\n    config: {query: 'select * from orders'}\n"
    # a CSV cannot count its rows without reading them: the sql step's rows in would be unknown
    assert chains(SOURCES["csv"] + sql + SINKS["parquet"][0]) == set()
    assert chains(SOURCES["parquet"] + sql + SINKS["parquet"][0]) == {"out"}
    dlq = "  - name: read_csv\n    config: {path: orders.csv, on_error: dlq}\n"
    assert chains(dlq + SINKS["parquet"][0]) == set()
    lenient = SOURCES["csv"] + SINKS["parquet"][0].replace(
        "    id: out\n", "    id: out\n    continue_on_error: true\n"
    )
    assert chains(lenient) == set()
    # a source read by two steps streams to both
    two = SOURCES["csv"] + SINKS["parquet"][0] + SINKS["csv"][0].replace("id: out", "id: out2\n    inputs: [orders]")
    assert chains(two) == set()
    # a sink that feeds a later step passes its rows on: streaming
    chained = SOURCES["csv"] + SINKS["parquet"][0] + SINKS["csv"][0].replace("id: out", "id: out2")
    assert chains(chained) == set()
    # filter is a Python batch transform: not pushed down
    filt = "  - name: filter\n    config: {expr: amount > 1}\n"
    assert chains(SOURCES["parquet"] + filt + SINKS["parquet"][0]) == set()


def test_malformed_csv_error_names_reader_file_and_line(write_pipeline, data: Path) -> None:
    (data / "bad.csv").write_text("id,amount\n1,2.5\n2,3.5\n3,abc\n", encoding="utf-8")
    steps = (
        "  - name: read_csv\n    id: src\n    config: {path: bad.csv, columns: {id: BIGINT, amount: DOUBLE}}\n"
        + SINKS["parquet"][0]
    )
    for pushdown in (True, False):
        result, _ = run(write_pipeline, steps, pushdown)
        assert result.status == "failed"
        err = result.error
        assert isinstance(err, DataError)
        assert err.context["step"] == "src" and err.context["file"] == str(data / "bad.csv")
        assert err.context["line"] == 4
        assert not (data / "out").exists() or not list((data / "out").iterdir())
        src = next(s for s in result.steps if s.step_id == "src")
        assert src.status == "failed"


@pytest.mark.parametrize("transform", [True, False])
def test_corrupt_parquet_error_is_the_streamed_one(write_pipeline, data: Path, transform: bool) -> None:
    (data / "bad.parquet").write_bytes(b"PAR1 not a parquet file at all")
    steps = (
        "  - name: read_parquet\n    id: src\n    config: {path: bad.parquet}\n"
        + ("  - name: sql\n    config: {query: 'select count(*) AS n from src'}\n" if transform else "")
        + "  - name: write_duckdb\n    id: wh\n    config: {database: wh.duckdb, table: t}\n"
    )
    errors = []
    for pushdown in (True, False):
        result, plan = run(write_pipeline, steps, pushdown)
        assert bool(plan.pushdowns) is pushdown  # type: ignore[attr-defined]
        assert result.status == "failed"
        err = result.error
        assert isinstance(err, DataError)
        assert err.context["step"] == "src" and err.context["file"] == str(data / "bad.parquet")
        assert "No magic bytes" in str(err) and "LINE 1" not in str(err)  # not oxiflow's own SQL quoted
        assert not (data / "wh.duckdb").exists()
        errors.append(str(err))
    assert errors[0] == errors[1]


def test_an_error_about_the_target_belongs_to_the_sink(write_pipeline, data: Path) -> None:
    con = duckdb.connect(str(data / "wh.duckdb"))
    con.execute(
        "CREATE TABLE t (id BIGINT, status VARCHAR CHECK (status <> 'cancelled'), amount DOUBLE, "
        "created_at TIMESTAMP, currency VARCHAR)"
    )
    con.close()
    steps = (
        SOURCES["parquet"]
        + "  - name: sql\n    config: {query: 'select * from orders'}\n"
        + "  - name: write_duckdb\n    id: wh\n    config: {database: wh.duckdb, table: t}\n"
    )
    for pushdown in (True, False):
        result, plan = run(write_pipeline, steps, pushdown)
        assert bool(plan.pushdowns) is pushdown  # type: ignore[attr-defined]
        assert result.status == "failed"
        assert result.error is not None and result.error.context["step"] == "wh"
        assert "CHECK constraint failed" in str(result.error)
        assert [s.step_id for s in result.steps if s.status == "failed"] == ["wh"]
    con = duckdb.connect(str(data / "wh.duckdb"))
    assert con.sql("SELECT count(*) FROM t").fetchall() == [(0,)]  # nothing half-loaded
    con.close()


def test_sql_error_belongs_to_the_sql_step(write_pipeline, data: Path) -> None:
    steps = (
        SOURCES["parquet"]
        + "  - name: sql\n    id: q\n    config: {query: 'select amont from orders'}\n"
        + SINKS["parquet"][0]
    )
    result, plan = run(write_pipeline, steps)
    assert "out" in plan.pushdowns  # type: ignore[attr-defined]
    assert result.status == "failed"
    assert isinstance(result.error, StepError) and result.error.context["step"] == "q"
    assert "amont" in str(result.error)
    assert {s.step_id: s.status for s in result.steps}["q"] == "failed"
    assert not (data / "out/o.parquet").exists()


def test_metadata_of_a_folded_source_can_be_referenced(write_pipeline, data: Path) -> None:
    steps = (
        SOURCES["csv"]
        + SINKS["parquet"][0]
        + "  - name: read_parquet\n    id: again\n    config: {path: '${steps.out.metadata.path}'}\n"
        + "  - name: write_csv\n    id: copy\n    config: {path: 'out/${steps.orders.metadata.files}.csv'}\n"
    )
    result, plan = run(write_pipeline, steps)
    assert result.status == "ok", result.error
    assert set(plan.pushdowns) == {"out"}  # type: ignore[attr-defined]
    assert (data / "out/1.csv").exists()
    assert read_back(data / "out/1.csv").num_rows == 6


def test_explain_shows_the_chain(write_pipeline, data: Path) -> None:
    from oxiflow.plan.explain import explain_plan

    plan = load_pipeline(write_pipeline("pipeline:\n" + SOURCES["parquet"] + SINKS["parquet"][0]))
    explained = explain_plan(plan)
    assert [s.get("pushdown") for s in explained["steps"]] == ["orders -> out: one DuckDB statement"] * 2
    assert explained["steps"][0]["schema"][0]["name"] == "id"  # probed by streaming, as before
