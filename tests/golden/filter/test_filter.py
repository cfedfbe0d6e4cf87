"""filter: rows where a SQL expression is true, across many batches; dropped rows counted (oracle: DuckDB)."""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine, RunOptions

CSV = "id,amount,status\n" + "".join(
    f"{i},{'' if i % 11 == 0 else (i * 37) % 500 / 4},{['paid', 'open', 'void'][i % 3]}\n" for i in range(1, 3001)
)


def run(tmp_path: Path, write_pipeline, expr: str, explain: bool = False):
    (tmp_path / "in.csv").write_text(CSV)
    path = write_pipeline(
        f"""
        settings: {{batch_size: 256}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv}}}}
          - {{name: filter, id: keep, config: {{expr: "{expr}"}}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )
    return LocalEngine(load_pipeline(path), RunOptions(explain=explain)).run()


@pytest.mark.parametrize(
    "expr",
    ["amount > 60 and status <> 'void'", "amount is null or id % 2 = 0", "status like 'p%'", "false", "true"],
)
def test_filter_matches_duckdb_where(tmp_path: Path, write_pipeline, expr: str) -> None:
    result = run(tmp_path, write_pipeline, expr)
    assert result.status == "ok", result.error
    expected = duckdb.sql(f"select * from read_csv('{tmp_path / 'in.csv'}') where {expr}").to_arrow_table()
    got = pq.read_table(tmp_path / "out/x.parquet")
    assert got.equals(expected)  # order kept, schema unchanged
    step = next(s for s in result.steps if s.step_id == "keep")
    assert (step.rows_in, step.rows_out, step.rows_filtered) == (3000, expected.num_rows, 3000 - expected.num_rows)
    assert result.balanced


def test_null_result_drops_the_row(tmp_path: Path, write_pipeline) -> None:
    result = run(tmp_path, write_pipeline, "amount > 0")  # null amounts give null: dropped
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out/x.parquet")
    assert got.num_rows == sum(1 for i in range(1, 3001) if i % 11 and (i * 37) % 500)
    assert result.balanced


@pytest.mark.parametrize(
    ("expr", "needle"),
    [("amount >", "syntax error"), ("amout > 1", "amout"), ("amount + 1", "must be true or false")],
)
def test_bad_expression_names_the_step(tmp_path: Path, write_pipeline, expr: str, needle: str) -> None:
    for explain in (True, False):  # caught while probing schemas, before any row is read
        result = run(tmp_path, write_pipeline, expr, explain=explain)
        assert result.status == "failed"
        assert "step keep" in str(result.error) and needle in str(result.error).lower()
