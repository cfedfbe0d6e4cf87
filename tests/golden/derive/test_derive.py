"""derive: columns from SQL expressions, added or replaced in place (oracle: DuckDB)."""

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine, RunOptions, run_plan

CSV = "id,quantity,amount,created_at\n" + "".join(
    f"{i},{i % 5},{'' if i % 13 == 0 else i / 4},2024-03-{i % 28 + 1:02d} 10:00:00\n" for i in range(1, 1501)
)


def pipeline(tmp_path: Path, write_pipeline, columns: dict[str, str]):
    (tmp_path / "in.csv").write_text(CSV)
    return write_pipeline(
        f"""
        settings: {{batch_size: 200}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv}}}}
          - {{name: derive, id: calc, config: {{columns: {json.dumps(columns)}}}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )


def test_derive_matches_duckdb(tmp_path: Path, write_pipeline) -> None:
    cols = {
        "total": "quantity * amount",
        "day": "created_at::date",
        "big": "coalesce(total, 0) > 100",  # uses a column defined just before
        "amount": "round(amount, 0)",  # replaces in place
    }
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, cols)))
    assert result.status == "ok", result.error
    expected = duckdb.sql(
        "select id, quantity, round(amount, 0) as amount, created_at, quantity * amount as total, "
        "created_at::date as day, coalesce(quantity * amount, 0) > 100 as big "
        f"from read_csv('{tmp_path / 'in.csv'}')"
    ).to_arrow_table()
    assert pq.read_table(tmp_path / "out/x.parquet").equals(expected)
    step = next(s for s in result.steps if s.step_id == "calc")
    assert (step.rows_in, step.rows_out) == (1500, 1500)
    assert result.balanced


def test_bad_expression_names_step(tmp_path: Path, write_pipeline) -> None:
    path = pipeline(tmp_path, write_pipeline, {"x": "quantty * 2"})
    for explain in (True, False):
        result = LocalEngine(load_pipeline(path), RunOptions(explain=explain)).run()
        assert result.status == "failed"
        assert "step calc" in str(result.error) and "quantty" in str(result.error)


def test_aggregate_is_refused(tmp_path: Path, write_pipeline) -> None:
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, {"x": "unnest([1, 2])"})))
    assert result.status == "failed" and "one value per row" in str(result.error)
