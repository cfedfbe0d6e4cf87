"""parse_json, format_json and json_select against Python's json module."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.engine.metrics import RunResult
from oxiflow.errors import DataError

Run = Callable[..., RunResult]

DOC = [
    {"id": 1, "user": {"name": "Ann", "tags": ["a", "b"]}, "score": 1.5},
    {"id": 2, "user": {"name": "Bo", "tags": []}, "score": None},
]
UNFUSED_TAIL = """
- name: write_file
  inputs: [reader]
  config: {path: copy.txt}
"""


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("layout", ["array", "lines"])
def test_parse_json_rows_keep_nesting(tmp_path: Path, run: Run, fused: bool, layout: str) -> None:
    text = json.dumps(DOC, indent=2) if layout == "array" else "\n".join(json.dumps(r) for r in DOC) + "\n"
    (tmp_path / "in.json").write_text(text, encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.json}
          - name: parse_json
            id: parser
          - name: write_parquet
            config: {path: out.parquet}
        """,
        tail="" if fused else UNFUSED_TAIL,
    )
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.to_pylist() == DOC
    assert pa.types.is_struct(got.schema.field("user").type)
    assert pa.types.is_list(got.schema.field("user").type.field("tags").type)
    assert result.metadata["reader"]["content_type"] == "application/json"
    assert [s.fused for s in result.steps if s.step_id == "parser"] == ([["reader"]] if fused else [[]])


@pytest.mark.parametrize("fused", [True, False])
def test_syntax_error_names_line_and_column(tmp_path: Path, run: Run, fused: bool) -> None:
    text = '[\n  {"a": 1},\n  {"a": 2,, "b": 3}\n]\n'
    (tmp_path / "in.json").write_text(text, encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.json}
          - name: parse_json
          - name: write_file
            config: {path: out.jsonl}
        """,
        tail="" if fused else UNFUSED_TAIL,
        ok=False,
    )
    err = result.error
    assert isinstance(err, DataError)
    with pytest.raises(json.JSONDecodeError) as oracle:
        json.loads(text)
    assert (err.context["line"], err.context["column"]) == (oracle.value.lineno, oracle.value.colno) == (3, 11)
    assert err.context["file"] == str(tmp_path / "in.json")


def test_comments_and_trailing_commas_when_allowed(tmp_path: Path, run: Run) -> None:
    text = '// settings\n{"a": [1, 2,], /* why */ "b": {"c": "x // not a comment",},}\n'
    (tmp_path / "in.json").write_text(text, encoding="utf-8")
    run(
        """
        pipeline:
          - name: read_file
            config: {path: in.json}
          - name: parse_json
            config: {allow_comments: true, allow_trailing_commas: true}
          - name: format_json
            config: {pretty: false}
          - name: write_file
            config: {path: out.json}
        """
    )
    # A single object stays a single object.
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": [1, 2], "b": {"c": "x // not a comment"}}


@pytest.mark.parametrize(
    ("config", "dumps"),
    [
        ({}, lambda v: json.dumps(v, indent=2)),
        ({"indent": 4, "sort_keys": True}, lambda v: json.dumps(v, indent=4, sort_keys=True)),
        ({"pretty": False}, lambda v: json.dumps(v)),
        ({"compact": True}, lambda v: json.dumps(v, separators=(",", ":"))),
    ],
)
def test_format_json_matches_json_dumps(tmp_path: Path, run: Run, config: dict, dumps: Callable) -> None:
    (tmp_path / "in.json").write_text(json.dumps(DOC), encoding="utf-8")
    run(
        f"""
        pipeline:
          - name: read_file
            config: {{path: in.json}}
          - name: parse_json
          - name: format_json
            config: {json.dumps(config)}
          - name: write_file
            config: {{path: out.txt}}
        """
    )
    assert (tmp_path / "out.txt").read_text() == dumps(DOC) + "\n"


NESTED = {"data": {"items": [{"meta": {"k": 1}}, {"meta": {"k": 2}}, {"meta": {"k": 3, "z": "q"}}]}, "users": [1]}


@pytest.mark.parametrize(
    ("doc", "path", "expected"),
    [
        (NESTED, "data.items[2].meta", {"k": 3, "z": "q"}),
        (NESTED, "data.items[-1].meta.z", "q"),
        (
            NESTED,
            "data.items",
            [{"meta": {"k": 1, "z": None}}, {"meta": {"k": 2, "z": None}}, {"meta": {"k": 3, "z": "q"}}],
        ),
        ([{"users": [{"n": "a"}, {"n": "b"}]}, {"users": []}], "[0].users", [{"n": "a"}, {"n": "b"}]),
        ([{"users": [5, 6]}], "[0].users[1]", 6),
    ],
)
def test_json_select_paths(tmp_path: Path, run: Run, doc: object, path: str, expected: object) -> None:
    (tmp_path / "in.json").write_text(json.dumps(doc), encoding="utf-8")
    run(
        f"""
        pipeline:
          - name: read_file
            config: {{path: in.json}}
          - name: parse_json
          - name: json_select
            config: {{path: "{path}"}}
          - name: format_json
            config: {{pretty: false}}
          - name: write_file
            config: {{path: out.json}}
        """
    )
    assert json.loads((tmp_path / "out.json").read_text()) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("data.nope", "key 'nope' is missing at data"),
        ("data.items[7]", "index 7 is out of range at data.items: the array has 3 item(s)"),
        ("users.x", "type mismatch at users: key 'x' needs an object but found an array"),
        ("data[0]", "type mismatch at data: [0] needs an array but found an object"),
    ],
)
def test_json_select_errors(tmp_path: Path, run: Run, path: str, message: str) -> None:
    (tmp_path / "in.json").write_text(json.dumps(NESTED), encoding="utf-8")
    result = run(
        f"""
        pipeline:
          - name: read_file
            config: {{path: in.json}}
          - name: parse_json
          - name: json_select
            config: {{path: "{path}"}}
          - name: write_file
            config: {{path: out.json}}
        """,
        ok=False,
    )
    assert isinstance(result.error, DataError)
    assert message in result.error.message
    assert result.error.context["step"] == "json_select"


def test_json_select_default_on_missing(tmp_path: Path, run: Run) -> None:
    (tmp_path / "in.json").write_text(json.dumps(NESTED), encoding="utf-8")
    run(
        """
        pipeline:
          - name: read_file
            config: {path: in.json}
          - name: parse_json
          - name: json_select
            config: {path: "data.items[9].meta", default_on_missing: {k: 0}}
          - name: format_json
            config: {compact: true}
          - name: write_file
            config: {path: out.json}
        """
    )
    assert (tmp_path / "out.json").read_text() == '{"k":0}\n'
