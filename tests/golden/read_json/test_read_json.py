"""read_json: NDJSON and arrays, nesting, compression, on_error fail/skip/dlq (oracle: DuckDB)."""

import gzip
import json
from pathlib import Path

import duckdb
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.json import ReadJson, ReadJsonConfig

ROWS = [{"id": 1, "user": {"name": "a", "tags": ["x", "y"]}}, {"id": 2, "user": {"name": "b", "tags": []}}]


def read(tmp_path: Path, **cfg):
    return ReadJson(ReadJsonConfig(**cfg)).read(StepContext("r", "read_json", "t", base_dir=tmp_path)).read_all()


def oracle(path: Path):
    return duckdb.sql(f"select * from read_json('{path}')").to_arrow_table()


@pytest.mark.parametrize("layout", ["lines", "array"])
def test_nested_records_become_structs_and_lists(tmp_path: Path, layout: str) -> None:
    src = tmp_path / "in.json"
    text = "\n".join(json.dumps(r) for r in ROWS) if layout == "lines" else json.dumps(ROWS, indent=2)
    src.write_text(text + "\n")
    got = read(tmp_path, path="in.json")
    assert got.to_pylist() == ROWS
    utype = got.schema.field("user").type
    assert utype.field("name").type == "string" and str(utype.field("tags").type).startswith("list<")
    assert got.equals(oracle(src))


def test_gzip_and_zstd_glob(tmp_path: Path) -> None:
    import zstandard

    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    got = read(tmp_path, path="*.jsonl.*")
    assert got.num_rows == 4
    assert got.column("id").to_pylist() == [1, 2, 1, 2]


def test_fail_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n{"id": 2,\n{"id": 3}\n')
    with pytest.raises(DataError) as err:
        read(tmp_path, path="in.jsonl")
    assert err.value.context["line"] == 2
    assert err.value.context["file"].endswith("in.jsonl")


def test_array_document_is_parsed_strictly(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('[{"id": 1},\n {"id": 2},]')  # DuckDB alone accepts the trailing comma
    with pytest.raises(DataError) as err:
        read(tmp_path, path="in.json", format="array")
    assert err.value.context["line"] == 2


def test_dlq_keeps_good_rows_and_dead_letters_bad_ones(tmp_path: Path, write_pipeline) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1, "v": "a"}\n{"id": 2, "v": \n\n[1, 2]\n{"id": 4, "v": "d"}\n')
    path = write_pipeline(
        """
        settings: {dlq_dir: dlq}
        pipeline:
          - name: read_json
            config: {path: in.jsonl, on_error: dlq}
          - name: write_json
            config: {path: out.jsonl}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [{"id": 1, "v": "a"}, {"id": 4, "v": "d"}]
    dead = [json.loads(x) for x in Path(result.dlq_path).read_text().splitlines()]
    assert [(d["line"], d["raw"]) for d in dead] == [(2, '{"id": 2, "v": '), (4, "[1, 2]")]
    assert all(d["file"].endswith("in.jsonl") and d["reason"] for d in dead)
    assert result.steps[0].rows_rejected == 2
    assert result.balanced


def test_skip_counts_rejects(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    ctx = StepContext("r", "read_json", "t", base_dir=tmp_path)
    got = ReadJson(ReadJsonConfig(path="in.jsonl", on_error="skip")).read(ctx).read_all()
    assert got.column("id").to_pylist() == [1, 3]
    assert ctx.rows_rejected == 1
