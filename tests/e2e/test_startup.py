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
heavy = sorted(m for m in ("pyarrow", "duckdb", "polars", "fastavro") if m in sys.modules)
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
    # pyarrow still loads here: validating read_csv imports its module, which imports oxiflow.data
    # (pyarrow, ~40 ms). DuckDB, the larger cost, must not.
    assert "duckdb" not in _heavy_modules(["validate", "small.yaml"], tmp_path)
