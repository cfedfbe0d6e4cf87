"""parse_csv against Python's csv module, fused (DuckDB scan) and unfused (Python parser) alike."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from oxiflow.engine.metrics import RunResult
from oxiflow.errors import DataError

Run = Callable[..., RunResult]
parquet = pq.read_table

TRICKY = 'id, name ,note\n1, Ann ,"said ""hi"", left"\n2,"multi\nline",\n\n3,  ,x\n'


def oracle(text: str, *, delimiter: str = ",", quotechar: str = '"', escapechar: str | None = None) -> list[dict]:
    rows = [
        r for r in csv.reader(io.StringIO(text), delimiter=delimiter, quotechar=quotechar, escapechar=escapechar) if r
    ]
    header = [h.strip() for h in rows[0]]
    return [{h: (v.strip() or None) for h, v in zip(header, r, strict=True)} for r in rows[1:]]


# A second consumer of read_file's text keeps the steps apart: the Python parser runs.
UNFUSED_TAIL = """
  - name: write_file
    inputs: [reader]
    config: {path: copy.txt}
"""


@pytest.mark.parametrize("fused", [True, False])
def test_headers_quotes_trim_and_empty_values(tmp_path: Path, run: Run, fused: bool) -> None:
    (tmp_path / "in.csv").write_text(TRICKY, encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.csv}
          - name: parse_csv
            id: parser
          - name: write_parquet
            config: {path: out.parquet}
        """,
        tail="" if fused else UNFUSED_TAIL,
    )
    assert parquet(tmp_path / "out.parquet").to_pylist() == oracle(TRICKY)
    assert [s.fused for s in result.steps if s.step_id == "parser"] == ([["reader"]] if fused else [[]])
    meta = result.metadata["reader"]
    assert meta["path"] == str(tmp_path / "in.csv")
    assert meta["size"] == len(TRICKY.encode())
    assert meta["content_type"] == "text/csv"


@pytest.mark.parametrize("fused", [True, False])
def test_no_headers_delimiter_skip_rows_escape(tmp_path: Path, run: Run, fused: bool) -> None:
    text = "# exported\n# by hand\na;'b\\'c';1\nd;e; 2\n"
    (tmp_path / "in.csv").write_text(text, encoding="utf-8")
    run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.csv}
          - name: parse_csv
            config: {include_headers: false, delimiter: ";", quote_char: "'", escape_char: "\\\\", skip_rows: 2,
                     trim_whitespace: false}
          - name: write_parquet
            config: {path: out.parquet}
        """,
        tail="" if fused else UNFUSED_TAIL,
    )
    got = parquet(tmp_path / "out.parquet")
    assert got.schema.names == ["column_1", "column_2", "column_3"]
    expected = list(
        csv.reader(io.StringIO("\n".join(text.splitlines()[2:])), delimiter=";", quotechar="'", escapechar="\\")
    )
    assert [list(r.values()) for r in got.to_pylist()] == expected == [["a", "b'c", "1"], ["d", "e", " 2"]]


@pytest.mark.parametrize("fused", [True, False])
def test_ragged_row_names_file_and_line(tmp_path: Path, run: Run, fused: bool) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.csv}
          - name: parse_csv
          - name: write_parquet
            config: {path: out.parquet}
        """,
        tail="" if fused else UNFUSED_TAIL,
        ok=False,
    )
    assert result.status == "failed"
    err = result.error
    assert isinstance(err, DataError)
    assert err.context["file"] == str(tmp_path / "in.csv")
    assert err.context["line"] == 3
    assert not (tmp_path / "out.parquet").exists()
