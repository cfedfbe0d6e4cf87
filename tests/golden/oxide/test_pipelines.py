"""Oxide Flow style pipeline folders: pipeline.yaml + input + expected output, run as files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan

HERE = Path(__file__).parent / "pipelines"
CASES = {
    "users_csv_to_json": ("out/users.json", "expected.json"),
    "nested_json_to_csv": ("out/orders.csv", "expected.csv"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pipeline_folder(tmp_path: Path, name: str) -> None:
    work = tmp_path / name
    shutil.copytree(HERE / name, work)
    result = run_plan(load_pipeline(work / "pipeline.yaml"))
    assert result.status == "ok", result.error
    output, expected = CASES[name]
    got = (work / output).read_text(encoding="utf-8")
    assert got == (work / expected).read_text(encoding="utf-8")
    if expected.endswith(".json"):
        assert json.loads(got)  # and it is valid JSON


def test_every_folder_has_a_case() -> None:
    assert sorted(p.name for p in HERE.iterdir() if p.is_dir()) == sorted(CASES)
