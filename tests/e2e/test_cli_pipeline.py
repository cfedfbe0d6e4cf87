"""`oxiflow pipeline list|add|test|info` in a project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _cli import oxiflow, write

from oxiflow.cli.pipeline import TEMPLATES

ORDERS = """
metadata:
  name: orders
  description: Daily orders to Parquet
  tags: [daily, sales]
environment:
  IN: in.csv
pipeline:
  - name: read_csv
    id: src
    config: {path: "${IN}"}
  - name: write_parquet
    id: out
    config: {path: "${OUTPUT_DIR:-output}/orders.parquet"}
tests:
  - name: three rows
    expect: {status: ok, rows: {src: 3, out: 3}}
  - name: wrong count
    expect: {rows: {src: 5}}
  - name: missing input fails
    vars: {IN: nothere.csv}
    expect: {status: failed}
"""
REFUNDS = """
metadata: {description: Refunds, tags: [weekly]}
pipeline:
  - name: read_csv
    config: {path: r.csv}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "oxiflow.yaml", "project: {name: t}\n")
    write(tmp_path / "pipelines/orders.yaml", ORDERS)
    write(tmp_path / "pipelines/refunds.yaml", REFUNDS)
    (tmp_path / "in.csv").write_text("id,amount\n1,2.5\n2,3.5\n3,4.5\n", encoding="utf-8")
    return tmp_path


def test_list(project: Path) -> None:
    r = oxiflow("pipeline", "list", "--tags", cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "orders   Daily orders to Parquet  [daily, sales]",
        "refunds  Refunds  [weekly]",
    ]


def test_list_filter_and_json(project: Path) -> None:
    r = oxiflow("pipeline", "list", "--filter", "WEEK", "--json", cwd=project)
    assert r.returncode == 0, r.stderr
    assert [e["name"] for e in json.loads(r.stdout)] == ["refunds"]
    r = oxiflow("pipeline", "list", "--filter", "daily", cwd=project)
    assert r.stdout.split()[0] == "orders" and "refunds" not in r.stdout


def test_test_runs_the_tests_block(project: Path) -> None:
    r = oxiflow("pipeline", "test", "orders", cwd=project)
    assert r.returncode == 1  # one test expects the wrong count
    lines = r.stderr.splitlines()
    assert "✓ three rows" in lines
    assert "✗ wrong count" in lines
    assert "    rows of 'src': expected 5, got 3" in lines
    assert "✓ missing input fails" in lines
    assert "2 passed, 1 failed" in lines
    assert not (project / "output").exists()  # outputs went to a scratch OUTPUT_DIR


def test_test_json_report(project: Path) -> None:
    r = oxiflow("pipeline", "test", "orders", "--json", cwd=project)
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert [(t["name"], t["passed"]) for t in report["tests"]] == [
        ("three rows", True),
        ("wrong count", False),
        ("missing input fails", True),
    ]


def test_test_dry_run_and_schema(project: Path) -> None:
    r = oxiflow("pipeline", "test", "orders", "--dry-run", "--schema", "--json", cwd=project)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["tests"] == []
    assert [(f["name"], f["type"]) for f in report["schema"]["src"]] == [("id", "int64"), ("amount", "double")]


def test_test_reports_a_bad_tests_block_with_position(project: Path) -> None:
    write(project / "pipelines/bad.yaml", REFUNDS + "tests:\n  - expect: {rowz: {x: 1}}\n")
    r = oxiflow("pipeline", "test", "bad", cwd=project)
    assert r.returncode == 2
    assert "bad.yaml:6:14: unknown key 'rowz' in tests[0].expect" in r.stderr


def test_test_invalid_pipeline_exits_2(project: Path) -> None:
    write(project / "pipelines/broken.yaml", "pipeline:\n  - name: read_cvs\n")
    r = oxiflow("pipeline", "test", "broken", cwd=project)
    assert r.returncode == 2
    assert "broken.yaml:2:11: unknown oxi 'read_cvs' (did you mean 'read_csv'?)" in r.stderr


def test_info_json_and_yaml(project: Path) -> None:
    r = oxiflow("pipeline", "info", "orders", "--json", cwd=project)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["metadata"]["tags"] == ["daily", "sales"]
    assert [(s["id"], s["oxi"], s["inputs"]) for s in data["steps"]] == [
        ("src", "read_csv", []),
        ("out", "write_parquet", ["src"]),
    ]
    assert data["steps"][0]["config"] == {"path": "${IN}"}  # as written: variables are not expanded
    assert data["tests"] == ["three rows", "wrong count", "missing input fails"]
    y = oxiflow("pipeline", "info", "orders", "--yaml", cwd=project)
    assert yaml.safe_load(y.stdout) == data


def test_info_schema_text(project: Path) -> None:
    r = oxiflow("pipeline", "info", "orders", "--schema", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "         -> amount: double" in r.stdout.splitlines()


def test_add_refuses_unknown_template_and_existing_file(project: Path) -> None:
    r = oxiflow("pipeline", "add", "x", "--template", "etll", cwd=project)
    assert r.returncode == 2
    assert "unknown template 'etll' (did you mean 'etl'?" in r.stderr
    r = oxiflow("pipeline", "add", "orders", cwd=project)
    assert r.returncode == 2
    assert "orders.yaml already exists" in r.stderr


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_template_validates(project: Path, template: str) -> None:
    # Waits on the oxis the templates use (filter, sql, batch, read_json/write_json, parse_json, ...).
    r = oxiflow("pipeline", "add", f"new_{template}", "--template", template, cwd=project)
    assert r.returncode == 0, r.stderr
    path = project / "pipelines" / f"new_{template}.yaml"
    assert path.is_file()
    v = oxiflow("validate", str(path), cwd=project)
    assert v.returncode == 0, v.stderr
    listed = oxiflow("pipeline", "list", "--json", cwd=project)
    assert f"new_{template}" in [e["name"] for e in json.loads(listed.stdout)]
    # a new pipeline runs as it is: its sample input comes with it, and it passes its own tests
    assert "sample input: replace it with your data" in r.stderr
    tested = oxiflow("pipeline", "test", f"new_{template}", "--json", cwd=project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    report = json.loads(tested.stdout)
    assert report["tests"] and all(t["passed"] for t in report["tests"]), report
    ran = oxiflow("run", f"new_{template}", "--no-state", cwd=project)
    assert ran.returncode == 0, ran.stderr


def test_add_keeps_existing_sample_data(project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "mine.csv").write_text("id,name,amount\n1,mine,1\n", encoding="utf-8")
    r = oxiflow("pipeline", "add", "mine", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "sample input" not in r.stderr
    assert (project / "data" / "mine.csv").read_text() == "id,name,amount\n1,mine,1\n"


FIXABLE = """\
pipeline:
  - name: read_csvv            # typo in the oxi
    id: src
    config:
      pth: in.csv              # typo in a key
    timeout_second: 30
  - name: write_file
    inputs: [scr]
    config: {path: "${OUTPUT_DIR:-output}/${steps.src.metadta.files}.txt", apend: false}
tests:
  - expect: {rows: {src: 3}}
"""


def test_test_fix_repairs_what_is_unambiguous_and_keeps_the_rest(project: Path) -> None:
    path = project / "pipelines" / "fixme.yaml"
    path.write_text(FIXABLE, encoding="utf-8")
    r = oxiflow("pipeline", "test", "fixme", "--fix", cwd=project)
    assert r.returncode == 0, r.stderr
    assert path.read_text() == (
        FIXABLE.replace("read_csvv", "read_csv")
        .replace("pth:", "path:")
        .replace("timeout_second:", "timeout_seconds:")
        .replace("[scr]", "[src]")
        .replace("metadta", "metadata")
        .replace("apend", "append")
    )  # comments and layout kept
    assert "fixed " in r.stderr and "read_csvv -> read_csv" in r.stderr
    assert "1 passed, 0 failed" in r.stderr


def test_test_fix_leaves_what_needs_the_author(project: Path) -> None:
    path = project / "pipelines" / "broken.yaml"
    text = "pipeline:\n  - name: read_csv\n    config: {path: in.csv, skip_rows: many}\n"
    path.write_text(text, encoding="utf-8")
    r = oxiflow("pipeline", "test", "broken", "--fix", cwd=project)
    assert r.returncode == 2
    assert "nothing to repair automatically" in r.stderr and "skip_rows" in r.stderr
    assert path.read_text() == text
