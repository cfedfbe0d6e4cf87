"""The CLI starts fast: --help and validate do not import the heavy engines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _cli import write

PROBE = """
import json, sys
sys.argv = ["oxi", *json.loads(sys.argv[1])]
from oxiflow.cli.main import main
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("pyarrow", "duckdb", "polars", "fastavro", "yaml") if m in sys.modules)
sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
"""


def _heavy_modules(args: list[str], cwd: Path) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("HEAVY="))
    return json.loads(line[len("HEAVY=") :])


def test_help_imports_no_pyarrow_or_duckdb(tmp_path: Path) -> None:
    assert _heavy_modules(["--help"], tmp_path) == []
    assert _heavy_modules(["pipeline", "--help"], tmp_path) == []
    assert _heavy_modules(["run", "--help"], tmp_path) == []


def test_validate_imports_no_duckdb(tmp_path: Path) -> None:
    write(
        tmp_path / "small.yaml",
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: write_parquet
            config: {path: out.parquet}
        """,
    )
    assert _heavy_modules(["validate", "small.yaml"], tmp_path) == ["yaml"]


def test_a_verb_without_a_pipeline_file_imports_no_yaml(tmp_path: Path) -> None:
    """`oxi head FILE` builds its step without YAML: yaml (~20 ms) is imported when a file is read."""
    (tmp_path / "in.csv").write_text("id,amount\n1,2.5\n2,4.0\n")
    assert "yaml" not in _heavy_modules(["head", "in.csv", "-f", "csv"], tmp_path)


def test_a_pushed_down_run_imports_no_pyarrow(tmp_path: Path) -> None:
    """read_csv -> write_parquet and read_parquet -> sql -> write_duckdb run as one DuckDB statement:
    no Arrow batch is ever made, so pyarrow (~30 ms of start-up) is not imported."""
    (tmp_path / "in.csv").write_text("id,amount\n1,2.5\n2,4.0\n")
    write(
        tmp_path / "copy.yaml",
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: write_parquet
            config: {path: out.parquet}
        """,
    )
    write(
        tmp_path / "warehouse.yaml",
        """
        pipeline:
          - name: read_parquet
            id: src
            config: {path: out.parquet}
          - name: sql
            config: {query: "select sum(amount) as total from src"}
          - name: write_duckdb
            config: {database: w.duckdb, table: totals, write_disposition: replace}
        """,
    )
    assert _heavy_modules(["run", "copy.yaml", "--quiet", "--no-state"], tmp_path) == ["duckdb", "yaml"]
    assert _heavy_modules(["run", "warehouse.yaml", "--quiet", "--no-state"], tmp_path) == ["duckdb", "yaml"]
    import duckdb

    assert duckdb.connect(str(tmp_path / "w.duckdb")).sql("select total from totals").fetchall() == [(6.5,)]
