"""read_csv / write_csv dialects, encodings, compression and on_error (oracle: DuckDB / hand-checked)."""

import gzip
import json
from pathlib import Path

import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.csv import ReadCsv, ReadCsvConfig


def read(tmp_path: Path, **cfg):
    return ReadCsv(ReadCsvConfig(**cfg)).read(StepContext("r", "read_csv", "t", base_dir=tmp_path)).read_all()


@pytest.mark.parametrize(
    ("text", "cfg"),
    [
        ("id;name\n1;a\n2;b\n", {"delimiter": ";"}),
        ("id\tname\n1\ta\n2\tb\n", {}),  # TSV sniffed
        ("junk line\nmore junk\nid,name\n1,a\n2,b\n", {"skip_rows": 2}),
        ("1,a\n2,b\n", {"header": False, "columns": {"id": "BIGINT", "name": "VARCHAR"}}),
        ("id,name\n1,'a'\n2,'b'\n", {"quote": "'"}),
    ],
)
def test_dialects(tmp_path: Path, text: str, cfg: dict) -> None:
    (tmp_path / "in.csv").write_text(text)
    got = read(tmp_path, path="in.csv", **cfg)
    assert got.to_pylist() == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_quoted_newlines_and_latin1(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes('id,name\n1,"Zoë, ""the""\nsecond"\n'.encode("latin-1"))
    got = read(tmp_path, path="in.csv", encoding="latin-1")
    assert got.to_pylist() == [{"id": 1, "name": 'Zoë, "the"\nsecond'}]


def test_gzip_and_zstd(tmp_path: Path) -> None:
    import zstandard

    body = b"id,name\n1,a\n"
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(body))
    (tmp_path / "b.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    assert read(tmp_path, path="*.csv.*").to_pylist() == [{"id": 1, "name": "a"}] * 2


def test_fail_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,amount\n1,2\n2,oops\n")
    with pytest.raises(DataError) as err:
        read(tmp_path, path="in.csv", columns={"id": "INTEGER", "amount": "INTEGER"})
    ctx = err.value.context
    assert (Path(ctx["file"]).name, ctx["line"], ctx["column"]) == ("in.csv", 3, "amount")


@pytest.mark.parametrize("mode", ["skip", "dlq"])
def test_skip_and_dlq(tmp_path: Path, write_pipeline, mode: str) -> None:
    (tmp_path / "in.csv").write_text("id,amount\n1,2\n2,oops\n3,4\n")
    path = write_pipeline(
        f"""
        settings: {{dlq_dir: dlq}}
        pipeline:
          - name: read_csv
            config: {{path: in.csv, on_error: {mode}, columns: {{id: INTEGER, amount: INTEGER}}, header: true}}
          - name: write_csv
            config: {{path: out.csv}}
        """
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert (tmp_path / "out.csv").read_text() == "id,amount\n1,2\n3,4\n"
    assert result.steps[0].rows_rejected == 1 and result.balanced
    if mode == "dlq":
        (dead,) = [json.loads(x) for x in Path(result.dlq_path).read_text().splitlines()]
        assert Path(dead["file"]).name == "in.csv" and dead["line"] == 3 and dead["raw"] == "2,oops"
        assert dead["reason"]
    else:
        assert result.dlq_path is None
