"""read_file -> parse_json behaves the same fused (one DuckDB scan) and unfused (Python's parser on the
text): the same rows, the same errors with the same line and column. DuckDB's JSON reader alone is
lenient (trailing commas, NaN, Infinity) and reads a key with values of mixed types as JSON text; the
oracle is Python's json module with NaN/Infinity refused (what `strict: true` documents)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from oxiflow.engine.metrics import RunResult
from oxiflow.errors import DataError

Run = Callable[..., RunResult]
PIPELINE = """
pipeline:
  - name: read_file
    id: reader
    config: {path: in.json}
  - name: parse_json
    id: parser
  - name: write_parquet
    config: {path: out.parquet}
"""
UNFUSED_TAIL = """
- name: write_file
  inputs: [reader]
  config: {path: copy.txt}
"""

INVALID = {
    "trailing_comma_in_object": '[\n {"a": 1},\n {"a": 2,}\n]\n',
    "trailing_comma_in_array": '[\n {"a": 1},\n {"a": [1, 2,]}\n]\n',
    "nan": '[{"a": 1}, {"a": NaN}]',
    "infinity": '[{"a": Infinity}]',
    "minus_infinity": '{"a": -Infinity}',
    "lines_trailing_comma": '{"a": 1}\n{"a": 2,}\n',
    "lines_nan": '{"a": 1}\n{"a": NaN}\n',
}
MIXED = {
    "int_and_string": '[{"a": 1}, {"a": "1"}]',
    "bool_and_int": '[{"a": true}, {"a": 1}]',
    "list_and_object": '[{"a": [1]}, {"a": {"b": 1}}]',
}
VALID = {
    "array": '[{"a": 1, "b": "x"}, {"a": 2, "b": null}]',
    "object": '{"a": 1, "b": {"c": [1, 2]}}',
    "lines": '{"a": 1}\n{"a": 2}\n',
    "strings_that_look_lenient": '[{"a": "nan, inf, ],", "b": "/* not a comment */"}]',
    "int_and_float": '[{"a": 1}, {"a": 1.5}]',
}


def strict_loads(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def run_both(tmp_path: Path, run: Run, text: str) -> tuple[RunResult, RunResult]:
    (tmp_path / "in.json").write_text(text, encoding="utf-8")
    fused = run(PIPELINE, ok=False)
    unfused = run(PIPELINE, tail=UNFUSED_TAIL, ok=False)
    assert [s.fused for s in fused.steps if s.step_id == "parser"] == [["reader"]]
    assert [s.fused for s in unfused.steps if s.step_id == "parser"] == [[]]
    return fused, unfused


def where(err: BaseException | None) -> tuple[object, ...]:
    assert isinstance(err, DataError), err
    return err.message, err.context.get("line"), err.context.get("column")


@pytest.mark.parametrize("name", sorted(INVALID))
def test_strict_rejects_what_python_rejects_fused_or_not(tmp_path: Path, run: Run, name: str) -> None:
    text = INVALID[name]
    lines = [x for x in text.splitlines() if x.strip()]
    with pytest.raises(ValueError):
        # the oracle: the document (or, for JSON Lines, one of its lines) is not strict JSON
        if name.startswith("lines"):
            [strict_loads(x) for x in lines]
        else:
            strict_loads(text)
    fused, unfused = run_both(tmp_path, run, text)
    assert fused.status == unfused.status == "failed"
    assert where(fused.error) == where(unfused.error)
    assert not (tmp_path / "out.parquet").exists()


def test_the_error_names_the_line_and_column_python_names(tmp_path: Path, run: Run) -> None:
    text = INVALID["trailing_comma_in_object"]
    fused, _ = run_both(tmp_path, run, text)
    with pytest.raises(json.JSONDecodeError) as oracle:
        json.loads(text)
    assert where(fused.error)[1:] == (oracle.value.lineno, oracle.value.colno) == (3, 10)


@pytest.mark.parametrize("name", sorted(MIXED))
def test_a_key_of_mixed_types_is_an_error_fused_or_not(tmp_path: Path, run: Run, name: str) -> None:
    fused, unfused = run_both(tmp_path, run, MIXED[name])
    assert fused.status == unfused.status == "failed"
    assert where(fused.error) == where(unfused.error)
    assert "do not fit one column type" in str(fused.error)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_documents_give_the_same_rows_fused_or_not(tmp_path: Path, run: Run, name: str) -> None:
    text = VALID[name]
    (tmp_path / "in.json").write_text(text, encoding="utf-8")
    fused = run(PIPELINE)
    got_fused = pq.read_table(tmp_path / "out.parquet").to_pylist()
    run(PIPELINE, tail=UNFUSED_TAIL)
    got_unfused = pq.read_table(tmp_path / "out.parquet").to_pylist()
    value = strict_loads(text) if name != "lines" else [strict_loads(x) for x in text.splitlines()]
    oracle = value if isinstance(value, list) else [value]
    assert got_fused == got_unfused == oracle
    assert fused.status == "ok"


def test_a_later_failure_does_not_mark_the_fused_source_failed(tmp_path: Path, run: Run) -> None:
    (tmp_path / "in.json").write_text('[{"users": [{"n": 1}]}]', encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.json}
          - name: parse_json
            id: parser
          - name: json_select
            config: {path: "[0].usrs"}
          - name: write_json
            config: {path: out.jsonl}
        """,
        ok=False,
    )
    assert result.status == "failed" and "key 'usrs' is missing" in str(result.error)
    statuses = {s.step_id: s.status for s in result.steps}
    assert statuses["json_select"] == "failed"
    assert statuses["parser"] in ("ok", "cancelled")  # it did nothing wrong
