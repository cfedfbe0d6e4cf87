"""plan/explain.py: the probed schema is the schema the run produces (nullability included)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.plan.explain import explain_plan


def explained(tmp_path: Path, steps: str) -> dict:
    path = tmp_path / "p.yaml"
    path.write_text("pipeline:\n" + steps, encoding="utf-8")
    return {s["id"]: s for s in explain_plan(load_pipeline(path))["steps"]}


@pytest.mark.parametrize(("on_error", "nullable"), [("null", True), ("fail", True), ("skip", True)])
def test_cast_nullability(tmp_path: Path, on_error: str, nullable: bool) -> None:
    (tmp_path / "t.csv").write_text("id,s\n1,x\n2,9\n", encoding="utf-8")
    steps = explained(
        tmp_path,
        f"  - {{name: read_csv, config: {{path: t.csv}}}}\n"
        f"  - {{name: cast, config: {{columns: {{s: INTEGER}}, on_error: '{on_error}'}}}}\n"
        "  - {name: write_parquet, config: {path: out.parquet}}\n",
    )
    (field,) = [f for f in steps["cast"]["schema"] if f["name"] == "s"]
    assert field == {"name": "s", "type": "int32", "nullable": nullable}


def test_cast_to_null_really_produces_nulls_in_a_nullable_column(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,s\n1,x\n2,9\n", encoding="utf-8")
    path = tmp_path / "p.yaml"
    path.write_text(
        "pipeline:\n  - {name: read_csv, config: {path: t.csv}}\n"
        "  - {name: cast, config: {columns: {s: INTEGER}, on_error: 'null'}}\n"
        "  - {name: write_parquet, config: {path: out.parquet}}\n",
        encoding="utf-8",
    )
    assert run_plan(load_pipeline(path)).status == "ok"
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("s").to_pylist() == [None, 9] and table.schema.field("s").nullable


def test_json_select_after_a_fused_parse_json_is_probed_from_the_types(tmp_path: Path) -> None:
    (tmp_path / "u.json").write_text('[{"users": [{"name": "Ann", "tags": ["a"]}]}]', encoding="utf-8")
    steps = explained(
        tmp_path,
        "  - {name: read_file, config: {path: u.json}}\n  - {name: parse_json}\n"
        "  - {name: json_select, config: {path: '[0].users'}}\n  - {name: write_json, config: {path: o.jsonl}}\n",
    )
    assert "error" not in steps["json_select"]
    assert [(f["name"], f["type"]) for f in steps["json_select"]["schema"]] == [
        ("name", "string"),
        ("tags", "list<item: string>"),
    ]
