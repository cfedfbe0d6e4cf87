"""cast: DuckDB types per column; bad values fail (naming column, value, row), become null, or are rejected."""

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine, RunOptions, run_plan

GOOD = "id,amount,day,ts\n" + "".join(
    f"{i},{i * 3 / 7:.4f},2024-01-{i % 28 + 1:02d},2024-02-03 04:05:{i % 60:02d}\n" for i in range(1000)
)
TYPES = "{id: VARCHAR, amount: 'DECIMAL(10,2)', day: DATE, ts: TIMESTAMP}"


def pipeline(tmp_path: Path, write_pipeline, csv: str, columns: str, extra: str = ""):
    (tmp_path / "in.csv").write_text(csv)
    return write_pipeline(
        f"""
        settings: {{batch_size: 100, dlq_dir: dlq}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv, all_varchar: true}}}}
          - {{name: cast, id: types, config: {{columns: {columns}{extra}}}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )


def test_cast_matches_duckdb(tmp_path: Path, write_pipeline) -> None:
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, GOOD, TYPES)))
    assert result.status == "ok", result.error
    expected = duckdb.sql(
        "select id::VARCHAR as id, amount::DECIMAL(10,2) as amount, day::DATE as day, ts::TIMESTAMP as ts "
        f"from read_csv('{tmp_path / 'in.csv'}', all_varchar=true)"
    ).to_arrow_table()
    got = pq.read_table(tmp_path / "out/x.parquet")
    assert got.equals(expected)
    assert got.schema.field("amount").type == pa.decimal128(10, 2) and got.schema.field("day").type == pa.date32()
    step = next(s for s in result.steps if s.step_id == "types")
    assert (step.rows_in, step.rows_out, step.rows_rejected) == (1000, 1000, 0)
    assert result.balanced


BAD = GOOD.replace("\n250,", "\n250x,").replace("\n777,", "\n,")  # one bad value, one null (fine)


def test_fail_names_column_value_and_row(tmp_path: Path, write_pipeline) -> None:
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, BAD, "{id: BIGINT}")))
    assert result.status == "failed"
    text = str(result.error)
    assert "step types" in text and "column 'id'" in text and "'250x'" in text and "row 251" in text
    assert not (tmp_path / "out/x.parquet").exists()


def test_try_gives_null_and_counts(tmp_path: Path, write_pipeline) -> None:
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, BAD, "{id: BIGINT}", ", try: true")))
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out/x.parquet")
    con = duckdb.connect()  # materialised first: DuckDB pushes a TRY_CAST into read_csv, where it fails
    con.execute(f"create table t as select * from read_csv('{tmp_path / 'in.csv'}', all_varchar=true)")
    expected = con.sql("select try_cast(id as BIGINT) as id from t").to_arrow_table()
    assert got.column("id").equals(expected.column("id"))
    assert got.column("id").null_count == 2
    assert result.metadata["types"]["cast_failures"] == {"id": 1}
    assert result.balanced


@pytest.mark.parametrize("mode", ["skip", "dlq"])
def test_skip_and_dlq_reject_the_row(tmp_path: Path, write_pipeline, mode: str) -> None:
    path = pipeline(tmp_path, write_pipeline, BAD, "{id: BIGINT, day: DATE}", f", on_error: {mode}")
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out/x.parquet")
    assert got.num_rows == 999 and 250 not in got.column("id").to_pylist()
    step = next(s for s in result.steps if s.step_id == "types")
    assert (step.rows_in, step.rows_out, step.rows_rejected) == (1000, 999, 1)
    assert result.balanced
    if mode == "dlq":
        records = [json.loads(line) for line in Path(result.dlq_path).read_text().splitlines()]
        assert len(records) == 1 and records[0]["step"] == "types" and records[0]["column"] == "id"
        assert records[0]["raw"]["id"] == "250x" and "row 251" in records[0]["reason"]
    else:
        assert result.dlq_count == 0


@pytest.mark.parametrize(("columns", "needle"), [("{amout: INT}", "did you mean 'amount'"), ("{id: INTEGR}", "integr")])
def test_unknown_column_or_type(tmp_path: Path, write_pipeline, columns: str, needle: str) -> None:
    path = pipeline(tmp_path, write_pipeline, GOOD, columns)
    result = LocalEngine(load_pipeline(path), RunOptions(explain=True)).run()
    assert result.status == "failed"
    assert "step types" in str(result.error) and needle in str(result.error).lower()
