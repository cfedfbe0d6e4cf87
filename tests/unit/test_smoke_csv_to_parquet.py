from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan


def test_csv_to_parquet_matches_duckdb(tmp_path: Path, write_pipeline) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,name,amount\n1,a,1.5\n2,b,\n3,c,7.25\n", encoding="utf-8")
    path = write_pipeline(
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: write_parquet
            config: {path: out/x.parquet}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out/x.parquet")
    expected = duckdb.sql(f"select * from read_csv('{src}')").to_arrow_table()
    assert got.equals(expected)
    assert [(s.rows_in, s.rows_out) for s in result.steps] == [(3, 3), (3, 3)]
    assert result.balanced
