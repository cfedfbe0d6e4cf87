"""plan/fusion.py: read_file -> parse_csv / parse_json becomes one streaming scan, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.plan.build import Plan
from oxiflow.plan.explain import explain_plan


def plan(tmp_path: Path, steps: str) -> Plan:
    path = tmp_path / "p.yaml"
    path.write_text("pipeline:\n" + steps, encoding="utf-8")
    return load_pipeline(path)


READER = "  - {name: read_file, id: reader, config: {path: in.csv}}\n"


@pytest.mark.parametrize("parser", ["parse_csv", "parse_json"])
def test_read_file_folds_into_the_parser(tmp_path: Path, parser: str) -> None:
    p = plan(tmp_path, READER + f"  - {{name: {parser}, id: parser}}\n  - {{name: write_stdout}}\n")
    assert [s.id for s in p.steps] == ["parser", "write_stdout"]
    parsed = p.step("parser")
    assert parsed.fused_from is not None and parsed.fused_from.id == "reader" and parsed.inputs == []
    assert p.fused == {"reader": "parser"}
    assert "one streaming scan" in explain_plan(p, probe=False)["steps"][0]["fused"]


@pytest.mark.parametrize(
    ("steps", "why"),
    [
        (
            "  - {name: read_file, id: reader, config: {path: in.csv, binary: true}}\n  - {name: parse_csv}\n",
            "bytes are not text to parse",
        ),
        (
            READER + "  - {name: parse_csv}\n  - {name: write_file, inputs: [reader], config: {path: c.txt}}\n",
            "two readers",
        ),
        (READER + "  - {name: write_file, config: {path: c.txt}}\n", "no parser"),
        (
            "  - {name: read_csv, id: a, config: {path: a.csv}}\n"
            "  - {name: read_file, id: reader, config: {path: '${steps.a.metadata.path}'}}\n"
            "  - {name: parse_csv}\n",
            "the path is known only when it runs",
        ),
    ],
)
def test_no_fusion(tmp_path: Path, steps: str, why: str) -> None:
    p = plan(tmp_path, steps)
    assert p.fused == {}, why
    assert all(s.fused_from is None for s in p.steps)


def test_a_fused_reader_still_reports_its_metadata(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,2\n3,4\n", encoding="utf-8")
    p = plan(
        tmp_path,
        READER + "  - {name: parse_csv, id: parser}\n"
        "  - {name: write_file, config: {path: 'out-${steps.reader.metadata.size}.csv'}}\n",
    )
    result = run_plan(p)
    assert result.status == "ok", result.error
    assert result.metadata["reader"]["size"] == 12 and (tmp_path / "out-12.csv").read_text() == "a,b\n1,2\n3,4\n"
    assert [m.fused for m in result.steps if m.step_id == "parser"] == [["reader"]]
