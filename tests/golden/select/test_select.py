"""select: keep/reorder or exclude columns; metadata kept; unknown columns rejected with a suggestion."""

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import LocalEngine, RunOptions, run_plan
from oxiflow.oxi import StepContext
from oxiflow.oxis.transforms.relational import Select, SelectConfig

CSV = "id,name,amount,status\n" + "".join(f"{i},n{i},{i / 4},{['a', 'b'][i % 2]}\n" for i in range(500))


def pipeline(tmp_path: Path, write_pipeline, config: str):
    (tmp_path / "in.csv").write_text(CSV)
    return write_pipeline(
        f"""
        settings: {{batch_size: 64}}
        pipeline:
          - {{name: read_csv, config: {{path: in.csv}}}}
          - {{name: select, id: pick, config: {config}}}
          - {{name: write_parquet, config: {{path: out/x.parquet}}}}
        """
    )


@pytest.mark.parametrize(
    ("config", "sql"),
    [
        ("{columns: [amount, id]}", "select amount, id"),
        ("{exclude: [name]}", "select * exclude (name)"),
        ("{columns: [status, id, name], exclude: [id]}", "select status, name"),
    ],
)
def test_select_matches_duckdb(tmp_path: Path, write_pipeline, config: str, sql: str) -> None:
    result = run_plan(load_pipeline(pipeline(tmp_path, write_pipeline, config)))
    assert result.status == "ok", result.error
    expected = duckdb.sql(f"{sql} from read_csv('{tmp_path / 'in.csv'}')").to_arrow_table()
    assert pq.read_table(tmp_path / "out/x.parquet").equals(expected)
    step = next(s for s in result.steps if s.step_id == "pick")
    assert (step.rows_in, step.rows_out, step.rows_filtered) == (500, 500, 0)
    assert result.balanced


def test_unknown_column_suggests_a_name(tmp_path: Path, write_pipeline) -> None:
    path = pipeline(tmp_path, write_pipeline, "{columns: [id, amout]}")
    for explain in (True, False):
        result = LocalEngine(load_pipeline(path), RunOptions(explain=explain)).run()
        assert result.status == "failed"
        text = str(result.error)
        assert "step pick" in text and "unknown column 'amout'" in text and "did you mean 'amount'" in text


def test_field_metadata_survives() -> None:
    schema = pa.schema([pa.field("id", pa.int64(), False, {"pii": "no"}), pa.field("x", pa.string())])
    batch = pa.record_batch([pa.array([1, 2]), pa.array(["a", "b"])], schema=schema)
    from oxiflow.data import OxiData

    out = Select(SelectConfig(columns=["id"])).transform([OxiData(schema, [batch])], StepContext("s", "select", "r"))
    table = out.read_all()
    assert table.schema.field("id").metadata == {b"pii": b"no"} and not table.schema.field("id").nullable
    assert table.column("id").to_pylist() == [1, 2]


def test_config_needs_columns_or_exclude() -> None:
    with pytest.raises(ValueError, match="columns"):
        SelectConfig()
