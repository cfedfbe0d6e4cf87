"""sort: ORDER BY over the whole stream, stable, nulls last by default (oracle: DuckDB)."""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine, RunOptions

CSV = "id,amount,name\n" + "".join(
    f"{i},{'' if i % 19 == 0 else (i * 7919) % 300},{['b', 'a', 'c'][i % 3]}\n" for i in range(3000)
)


def run(tmp_path: Path, write_pipeline, by: str, explain: bool = False):
    (tmp_path / "in.csv").write_text(CSV)
    path = write_pipeline(
        f"""
        settings: {{batch_size: 256, memory_limit_mb: 256}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv}}}}
          - {{name: sort, id: order, config: {{by: {by}}}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )
    return LocalEngine(load_pipeline(path), RunOptions(explain=explain)).run()


@pytest.mark.parametrize(
    ("by", "order"),
    [
        ('["amount desc", id]', "amount desc nulls last, id"),
        ("name", "name, id"),  # equal keys keep input order (id is the input order)
        ('["amount nulls first", "name DESC"]', "amount asc nulls first, name desc, id"),
    ],
)
def test_sort_matches_duckdb(tmp_path: Path, write_pipeline, by: str, order: str) -> None:
    result = run(tmp_path, write_pipeline, by)
    assert result.status == "ok", result.error
    expected = duckdb.sql(f"select * from read_csv('{tmp_path / 'in.csv'}') order by {order}").to_arrow_table()
    assert pq.read_table(tmp_path / "out/x.parquet").equals(expected)
    step = next(s for s in result.steps if s.step_id == "order")
    assert (step.rows_in, step.rows_out, step.rows_filtered) == (3000, 3000, 0)
    assert result.balanced


def test_unknown_column_suggests(tmp_path: Path, write_pipeline) -> None:
    result = run(tmp_path, write_pipeline, '["amont desc"]', explain=True)
    assert result.status == "failed"
    assert "step order" in str(result.error) and "did you mean 'amount'" in str(result.error)
