"""dedupe: one row per key, first/last by stream order or a column; drops counted (oracle: DuckDB)."""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine, RunOptions, run_plan

# key k repeats; v is the position in the file; u is a version with ties and nulls
CSV = "k,v,u\n" + "".join(f"{i % 97},{i},{'' if i % 17 == 0 else i % 5}\n" for i in range(2000))


def run(tmp_path: Path, write_pipeline, config: str, explain: bool = False):
    (tmp_path / "in.csv").write_text(CSV)
    path = write_pipeline(
        f"""
        settings: {{batch_size: 128, memory_limit_mb: 256}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv}}}}
          - {{name: dedupe, id: once, config: {config}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )
    return LocalEngine(load_pipeline(path), RunOptions(explain=explain)).run()


@pytest.mark.parametrize(
    ("config", "order"),
    [
        ("{keys: [k]}", "v"),
        ("{keys: [k], keep: last}", "v desc"),
        ("{keys: [k], order_by: u}", "u asc nulls last, v"),
        ("{keys: [k], keep: last, order_by: u}", "u desc nulls last, v desc"),
        ("{keys: [k], order_by: [u desc]}", "u desc nulls last, v"),
    ],
)
def test_dedupe_matches_duckdb_window(tmp_path: Path, write_pipeline, config: str, order: str) -> None:
    result = run(tmp_path, write_pipeline, config)
    assert result.status == "ok", result.error
    expected = duckdb.sql(
        f"select * from read_csv('{tmp_path / 'in.csv'}') "
        f"qualify row_number() over (partition by k order by {order}) = 1 order by v"
    ).to_arrow_table()
    got = pq.read_table(tmp_path / "out/x.parquet")
    assert got.equals(expected)  # survivors in input order
    step = next(s for s in result.steps if s.step_id == "once")
    assert (step.rows_in, step.rows_out, step.rows_filtered) == (2000, 97, 2000 - 97)
    assert result.balanced


def test_all_columns_by_default(tmp_path: Path, write_pipeline) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,x\n1,x\n2,x\n1,y\n2,x\n,\n,\n")
    path = write_pipeline(
        """
        pipeline:
          - {name: read_csv, config: {path: in.csv}}
          - {name: dedupe, id: once, config: {}}
          - {name: write_parquet, config: {path: out/x.parquet}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert pq.read_table(tmp_path / "out/x.parquet").to_pylist() == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": None, "b": None},
    ]
    assert result.balanced and result.steps[1].rows_filtered == 3


def test_unknown_key_names_step(tmp_path: Path, write_pipeline) -> None:
    for config in ("{keys: [kk]}", "{keys: [k], order_by: w}"):
        result = run(tmp_path, write_pipeline, config, explain=True)
        assert result.status == "failed"
        assert "step once" in str(result.error) and "unknown" in str(result.error)
