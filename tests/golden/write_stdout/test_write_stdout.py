"""write_stdout: rows as JSON Lines (or indented JSON), text as-is, prefix, newline; the data flows on."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.data import OxiData
from oxiflow.engine.local import run_plan
from oxiflow.oxi import StepContext
from oxiflow.oxis.oxide.stdio import WriteStdout, WriteStdoutConfig

ROWS = pa.table({"id": [1, 2], "name": ["Zoë", None]})


def printed(capsys: pytest.CaptureFixture[str], data: OxiData, **cfg: object) -> str:
    WriteStdout(WriteStdoutConfig(**cfg)).write(data, StepContext("w", "write_stdout", "t"))  # type: ignore[arg-type]
    return capsys.readouterr().out


def test_rows_are_json_lines_as_json_dumps_writes_them(capsys: pytest.CaptureFixture[str]) -> None:
    out = printed(capsys, OxiData.from_table(ROWS))
    assert out == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS.to_pylist())
    assert out == '{"id": 1, "name": "Zoë"}\n{"id": 2, "name": null}\n'


def test_pretty_prefix_and_newline(capsys: pytest.CaptureFixture[str]) -> None:
    pretty = printed(capsys, OxiData.from_table(ROWS), json_pretty=True)
    assert pretty == "".join(json.dumps(r, indent=2, ensure_ascii=False) + "\n" for r in ROWS.to_pylist())
    assert (
        printed(capsys, OxiData.from_table(ROWS), prefix="> ")
        == '> {"id": 1, "name": "Zoë"}\n> {"id": 2, "name": null}\n'
    )
    assert printed(capsys, OxiData.from_table(ROWS), newline=False) == '{"id": 1, "name": "Zoë"}{"id": 2, "name": null}'


def test_text_is_printed_as_is_with_a_final_newline(capsys: pytest.CaptureFixture[str]) -> None:
    assert printed(capsys, OxiData.from_text(["line one\nline", " two"])) == "line one\nline two\n"
    assert printed(capsys, OxiData.from_text(["a\n"]), prefix="| ") == "| a\n"
    assert printed(capsys, OxiData.from_text(["a"]), newline=False) == "a"


def test_the_data_flows_on_to_later_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.csv").write_text("id,name\n1,a\n2,b\n", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipeline:\n  - name: read_csv\n    config: {path: in.csv}\n  - name: write_stdout\n"
        "  - name: write_csv\n    inputs: [write_stdout]\n    config: {path: copy.csv}\n",
        encoding="utf-8",
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    assert capsys.readouterr().out == '{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n'
    assert (tmp_path / "copy.csv").read_text() == "id,name\n1,a\n2,b\n"
