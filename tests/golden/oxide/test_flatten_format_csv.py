"""flatten and format_csv against hand-checked values and Python's csv writer."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from oxiflow.engine.metrics import RunResult

Run = Callable[..., RunResult]

ROWS = [
    {"id": 1, "user": {"name": "Ann", "address": {"city": "Oslo"}, "tags": ["a", "b"]}},
    {"id": 2, "user": {"name": "Bo", "address": {"city": "Rome"}, "tags": ["c"]}},
]


def flatten_yaml(config: str) -> str:
    return f"""
    pipeline:
      - name: read_file
        config: {{path: in.json}}
      - name: parse_json
      - name: flatten
        config: {config}
      - name: write_parquet
        config: {{path: out.parquet}}
    """


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "{}",
            [
                {"id": 1, "user.name": "Ann", "user.address.city": "Oslo", "user.tags[0]": "a", "user.tags[1]": "b"},
                {"id": 2, "user.name": "Bo", "user.address.city": "Rome", "user.tags[0]": "c", "user.tags[1]": None},
            ],
        ),
        (
            "{delimiter: _, preserve_arrays: true}",
            [
                {"id": 1, "user_name": "Ann", "user_address_city": "Oslo", "user_tags": ["a", "b"]},
                {"id": 2, "user_name": "Bo", "user_address_city": "Rome", "user_tags": ["c"]},
            ],
        ),
        (
            "{array_mode: explode}",
            [
                {"id": 1, "user.name": "Ann", "user.address.city": "Oslo", "user.tags": "a"},
                {"id": 1, "user.name": "Ann", "user.address.city": "Oslo", "user.tags": "b"},
                {"id": 2, "user.name": "Bo", "user.address.city": "Rome", "user.tags": "c"},
            ],
        ),
        (
            "{max_depth: 1, array_mode: preserve}",
            [
                {"id": 1, "user.name": "Ann", "user.address": {"city": "Oslo"}, "user.tags": ["a", "b"]},
                {"id": 2, "user.name": "Bo", "user.address": {"city": "Rome"}, "user.tags": ["c"]},
            ],
        ),
    ],
)
def test_flatten_modes(tmp_path: Path, run: Run, config: str, expected: list[dict]) -> None:
    (tmp_path / "in.json").write_text(json.dumps(ROWS), encoding="utf-8")
    run(flatten_yaml(config))
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == expected


def test_explode_keeps_rows_with_empty_arrays(tmp_path: Path, run: Run) -> None:
    rows = [{"k": 1, "items": [{"n": "x"}, {"n": "y"}]}, {"k": 2, "items": []}, {"k": 3, "items": None}]
    (tmp_path / "in.json").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    run(flatten_yaml("{array_mode: explode}"))
    got = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert got == [
        {"k": 1, "items.n": "x"},
        {"k": 1, "items.n": "y"},
        {"k": 2, "items.n": None},
        {"k": 3, "items.n": None},
    ]


TABLE = [
    {"id": 1, "name": 'say "hi"', "amount": 1.5, "ok": True, "note": None},
    {"id": 2, "name": "a,b", "amount": -2.0, "ok": False, "note": "line\nbreak"},
]


@pytest.mark.parametrize(
    ("config", "writer_args"),
    [
        ({}, {}),
        ({"quote_style": "all", "line_ending": "windows"}, {"quoting": csv.QUOTE_ALL, "lineterminator": "\r\n"}),
        ({"quote_style": "non_numeric", "delimiter": ";"}, {"quoting": csv.QUOTE_NONNUMERIC, "delimiter": ";"}),
        (
            {"quote_style": "none", "escape_char": "\\", "include_headers": False, "line_ending": "mac"},
            {"quoting": csv.QUOTE_NONE, "escapechar": "\\", "doublequote": False, "lineterminator": "\r"},
        ),
    ],
)
def test_format_csv_matches_csv_writer(tmp_path: Path, run: Run, config: dict, writer_args: dict) -> None:
    (tmp_path / "in.json").write_text(json.dumps(TABLE), encoding="utf-8")
    run(
        f"""
        pipeline:
          - name: read_file
            config: {{path: in.json}}
          - name: parse_json
          - name: format_csv
            config: {json.dumps(config)}
          - name: write_file
            config: {{path: out.csv}}
        """
    )
    buf = io.StringIO()
    writer = csv.writer(buf, **{"lineterminator": "\n", **writer_args})
    if config.get("include_headers", True):
        writer.writerow(list(TABLE[0]))
    for row in TABLE:
        writer.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in row.values()])
    assert (tmp_path / "out.csv").read_bytes().decode() == buf.getvalue()
