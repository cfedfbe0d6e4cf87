"""read_json on JSON Lines: an error names the file's line and the column in that line, never the
parser's own "line 1" of the record."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.errors import DataError
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.json import ReadJson, ReadJsonConfig

TEXT = '{"id":1,"u":{"a":1}}\n{"id":2,"u":{"a":2}}\n{"id":3,"u":\n{"id":4,"u":{"a":4}}\n'


def test_fail_names_line_and_column_of_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text(TEXT, encoding="utf-8")
    with pytest.raises(orjson.JSONDecodeError) as oracle:
        orjson.loads(TEXT.splitlines()[2])
    column = oracle.value.colno  # 13: where the record ends, unfinished
    with pytest.raises(DataError) as err:
        ReadJson(ReadJsonConfig(path="bad.jsonl")).read(
            StepContext("r", "read_json", "t", base_dir=tmp_path)
        ).read_all()
    assert (err.value.context["line"], err.value.context["column"]) == (3, column) == (3, 13)
    assert err.value.message == "malformed JSON at line 3, column 13: unexpected end of data"
    assert "line 1" not in str(err.value)


def test_the_dead_letter_reason_names_the_same_place(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text(TEXT, encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(
        "settings: {dlq_dir: dlq}\npipeline:\n  - name: read_json\n    config: {path: bad.jsonl, on_error: dlq}\n"
        "  - name: write_json\n    config: {path: out.jsonl}\n",
        encoding="utf-8",
    )
    result = run_plan(load_pipeline(path))
    assert result.status == "ok", result.error
    (dead,) = [json.loads(x) for x in Path(str(result.dlq_path)).read_text().splitlines()]
    assert (dead["line"], dead["reason"]) == (3, "malformed JSON at line 3, column 13: unexpected end of data")


@pytest.mark.parametrize("on_error", ["fail", "skip", "dlq"])
def test_a_malformed_array_document_says_why_nothing_can_be_set_aside(tmp_path: Path, on_error: str) -> None:
    text = '[{"id": 1},\n {"id": 2,}]'
    (tmp_path / "bad.json").write_text(text, encoding="utf-8")
    with pytest.raises(orjson.JSONDecodeError) as oracle:  # 2:10, the trailing comma
        orjson.loads(text)
    with pytest.raises(DataError) as err:
        ReadJson(ReadJsonConfig(path="bad.json", on_error=on_error)).read(  # type: ignore[arg-type]
            StepContext("r", "read_json", "t", base_dir=tmp_path)
        ).read_all()
    assert (err.value.context["line"], err.value.context["column"]) == (oracle.value.lineno, oracle.value.colno)
    hint = err.value.hint or ""
    if on_error == "fail":
        assert hint == "fix the document (read_json reads a JSON array of objects, one object, or JSON Lines)"
    else:
        assert f"on_error: {on_error} sets aside bad lines of JSON Lines" in hint
        assert "cannot be split into records" in hint
