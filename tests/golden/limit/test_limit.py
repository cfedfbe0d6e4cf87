"""limit: the first n rows (after an offset); stops reading early, and so does the step feeding it."""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan

N = 5000
CSV = "id,x\n" + "".join(f"{i},{i * 3}\n" for i in range(N))


@pytest.mark.parametrize(("n", "offset"), [(10, 0), (300, 250), (0, 0), (N + 10, 0), (100, N - 40)])
def test_limit_matches_duckdb(tmp_path: Path, write_pipeline, n: int, offset: int) -> None:
    (tmp_path / "in.csv").write_text(CSV)
    path = write_pipeline(
        f"""
        settings: {{batch_size: 128, queue_size: 2}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv}}}}
          - {{name: limit, id: head, config: {{n: {n}, offset: {offset}}}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    expected = duckdb.sql(
        f"select * from read_csv('{tmp_path / 'in.csv'}') order by id limit {n} offset {offset}"
    ).to_arrow_table()
    got = pq.read_table(tmp_path / "out/x.parquet")
    assert got.to_pylist() == expected.to_pylist()
    source, step = (next(s for s in result.steps if s.step_id == i) for i in ("read_csv", "head"))
    assert (step.rows_out, step.rows_filtered) == (expected.num_rows, step.rows_in - expected.num_rows)
    assert source.rows_out == step.rows_in  # what was sent was read (queued leftovers count as filtered)
    # the source stopped exactly when limit had its rows
    wanted = min(N, n + offset)
    assert step.rows_in == wanted  # the scan itself stops at n + offset rows (ctx.limit_rows)
    assert result.balanced
