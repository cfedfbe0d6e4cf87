"""Run Oxide Flow pipelines in-process and read back what they wrote."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import run_plan
from oxiflow.engine.metrics import RunResult

Run = Callable[..., RunResult]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """run(yaml, tail="", ok=True) -> RunResult; relative paths in the YAML start at tmp_path."""

    def go(text: str, *, tail: str = "", ok: bool = True) -> RunResult:
        path = tmp_path / "pipeline.yaml"
        path.write_text(textwrap.dedent(text).lstrip() + textwrap.indent(textwrap.dedent(tail), "  "), encoding="utf-8")
        result = run_plan(load_pipeline(path))
        if ok:
            assert result.status == "ok", result.error
            assert result.balanced
        return result

    return go


def parquet(path: Path) -> pa.Table:
    return pq.read_table(path)
