"""read_file -> parse_csv/parse_json is planned as one streaming DuckDB scan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from oxiflow.config.load import load_pipeline
from oxiflow.plan.explain import explain_plan

OXIFLOW = str(Path(sys.executable).with_name("oxiflow"))

CHILD = """
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(out.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux
print(out.stdout)
"""


def test_large_csv_streams_with_bounded_memory(tmp_path: Path) -> None:
    pad = "x" * 990
    rows = 1_000_000
    src = tmp_path / "big.csv"
    with src.open("w", encoding="utf-8") as fh:
        fh.write("id,pad\n")
        for start in range(0, rows, 10_000):
            fh.write("".join(f"{i},{pad}\n" for i in range(start, start + 10_000)))
    size = src.stat().st_size
    pipeline = tmp_path / "big.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """
            settings: {batch_size: 16384, memory_limit_mb: 200}
            pipeline:
              - name: read_file
                id: reader
                config: {path: big.csv}
              - name: parse_csv
            """
        ),
        encoding="utf-8",
    )
    # Measured in a child of a child: RUSAGE_CHILDREN there holds only the oxiflow run.
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, OXIFLOW, "run", str(pipeline), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    peak_kib, report = proc.stdout.split("\n", 1)
    result = json.loads(report)
    assert result["status"] == "ok"
    [step] = result["steps"]
    assert step["fused"] == ["reader"] and step["rows_out"] == rows
    assert result["metadata"]["reader"]["size"] == size
    peak = int(peak_kib) * 1024
    # Loading the text alone would need the whole file (950 MB) in memory.
    assert peak < size * 0.5, f"peak RSS {peak / 2**20:.0f} MB for a {size / 2**20:.0f} MB file"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_explain_shows_the_fused_scan(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('[{"a": 1, "b": {"c": "x"}}]', encoding="utf-8")
    plan = load_pipeline(
        _write(
            tmp_path,
            """
            pipeline:
              - name: read_file
                id: reader
                config: {path: in.json}
              - name: parse_json
                id: parser
              - name: write_file
                config: {path: out.jsonl}
            """,
        )
    )
    assert plan.fused == {"reader": "parser"}
    assert [s.id for s in plan.steps] == ["parser", "write_file"]
    explained = explain_plan(plan)
    parser = explained["steps"][0]
    assert parser["fused"].startswith("reader (read_file) + parser")
    assert [f["name"] for f in parser["schema"]] == ["a", "b"]
    assert parser["schema"][1]["type"].startswith("struct")
    cli = subprocess.run(
        [OXIFLOW, "run", str(tmp_path / "p.yaml"), "--dry-run", "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(cli.stdout)["steps"][0]["fused"] == parser["fused"]


def test_second_consumer_keeps_read_file_apart(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("a\n1\n", encoding="utf-8")
    plan = load_pipeline(
        _write(
            tmp_path,
            """
            pipeline:
              - name: read_file
                id: reader
                config: {path: in.csv}
              - name: parse_csv
              - name: write_file
                inputs: [reader]
                config: {path: copy.csv}
            """,
        )
    )
    assert plan.fused == {}
    assert os.fspath(plan.base_dir) == os.fspath(tmp_path)
