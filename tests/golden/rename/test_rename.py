"""rename: old -> new names, order/types/metadata kept; unknown names and clashes are clear errors."""

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from oxiflow.config.load import load_pipeline
from oxiflow.data import OxiData
from oxiflow.engine.local import LocalEngine, RunOptions, run_plan
from oxiflow.oxi import StepContext
from oxiflow.oxis.transforms.relational import Rename, RenameConfig

CSV = "id,cust_id,amount\n" + "".join(f"{i},{i % 9},{i / 8}\n" for i in range(400))


def pipeline(tmp_path: Path, write_pipeline, columns: str):
    (tmp_path / "in.csv").write_text(CSV)
    return write_pipeline(
        f"""
        settings: {{batch_size: 64}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv}}}}
          - {{name: rename, id: names, config: {{columns: {columns}}}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )


def test_rename_matches_duckdb(tmp_path: Path, write_pipeline) -> None:
    path = pipeline(tmp_path, write_pipeline, "{cust_id: customer_id, amount: total}")
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    expected = duckdb.sql(
        f"select id, cust_id as customer_id, amount as total from read_csv('{tmp_path / 'in.csv'}')"
    ).to_arrow_table()
    assert pq.read_table(tmp_path / "out/x.parquet").equals(expected)
    step = next(s for s in result.steps if s.step_id == "names")
    assert (step.rows_in, step.rows_out) == (400, 400)
    assert result.balanced


def test_swap_names(tmp_path: Path, write_pipeline) -> None:
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, "{id: cust_id, cust_id: id}")))
    assert result.status == "ok", result.error
    got = pq.read_table(tmp_path / "out/x.parquet")
    assert got.column_names == ["cust_id", "id", "amount"]
    assert got.column("cust_id").to_pylist() == list(range(400))


def test_unknown_old_name_suggests(tmp_path: Path, write_pipeline) -> None:
    path = pipeline(tmp_path, write_pipeline, "{custid: customer_id}")
    for explain in (True, False):
        result = LocalEngine(load_pipeline(path), RunOptions(explain=explain)).run()
        assert result.status == "failed"
        text = str(result.error)
        assert "step names" in text and "'custid'" in text and "did you mean 'cust_id'" in text


def test_clash_is_an_error(tmp_path: Path, write_pipeline) -> None:
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, "{cust_id: id}")))
    assert result.status == "failed" and "two columns named 'id'" in str(result.error)


def test_metadata_kept() -> None:
    schema = pa.schema([pa.field("a", pa.int32(), False, {"k": "v"})], metadata={"s": "1"})
    data = OxiData(schema, [pa.record_batch([pa.array([1], pa.int32())], schema=schema)])
    out = Rename(RenameConfig(columns={"a": "b"})).transform([data], StepContext("r", "rename", "x")).read_all()
    assert out.schema.field("b").metadata == {b"k": b"v"} and not out.schema.field("b").nullable
    assert out.schema.metadata == {b"s": b"1"}
