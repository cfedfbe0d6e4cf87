"""write_json: JSON Lines and arrays, compression; read back with DuckDB as the oracle."""

import gzip
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from oxiflow.data import OxiData
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.json import WriteJson, WriteJsonConfig

TABLE = pa.table({"id": [1, 2], "s": [{"a": 1, "b": [1, 2]}, None], "t": ["x", None]})


def write(tmp_path: Path, **cfg) -> StepContext:
    ctx = StepContext("w", "write_json", "t", base_dir=tmp_path)
    WriteJson(WriteJsonConfig(**cfg)).write(OxiData.from_table(TABLE), ctx)
    return ctx


def test_json_lines_default(tmp_path: Path) -> None:
    ctx = write(tmp_path, path="out/x.jsonl")
    lines = (tmp_path / "out/x.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"id": 1, "s": {"a": 1, "b": [1, 2]}, "t": "x"},
        {"id": 2, "s": None, "t": None},
    ]
    assert ctx.metadata["rows"] == 2


@pytest.mark.parametrize("name", ["x.json", "x.json.gz"])
def test_array_and_gzip(tmp_path: Path, name: str) -> None:
    write(tmp_path, path=name, format="array")
    raw = (tmp_path / name).read_bytes()
    doc = json.loads(gzip.decompress(raw) if name.endswith(".gz") else raw)
    assert doc == TABLE.to_pylist()
    assert duckdb.sql(f"select * from read_json('{tmp_path / name}')").to_arrow_table().to_pylist() == doc


def test_no_partial_file_on_failure(tmp_path: Path) -> None:
    def boom():
        yield TABLE.to_batches()[0]
        raise RuntimeError("upstream died")

    with pytest.raises(Exception, match="upstream died"):
        WriteJson(WriteJsonConfig(path="x.jsonl")).write(
            OxiData(TABLE.schema, boom()), StepContext("w", "write_json", "t", base_dir=tmp_path)
        )
    assert list(tmp_path.iterdir()) == []
