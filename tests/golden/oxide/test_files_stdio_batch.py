"""read_file, write_file, read_stdin, write_stdout and batch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from oxiflow.engine.metrics import RunResult
from oxiflow.errors import DataError

Run = Callable[..., RunResult]
OXIFLOW = str(Path(sys.executable).with_name("oxiflow"))


def test_text_round_trip_with_backup_and_step_metadata_path(tmp_path: Path, run: Run) -> None:
    text = "héllo\nwörld\n" * 1000
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/in.txt.copy").write_text("previous", encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.txt}
          - name: write_file
            id: writer
            config:
              path: "out/${steps.reader.metadata.content_type}.txt"
              encoding: latin-1
          - name: write_file
            id: copy
            config:
              path: out/in.txt.copy
              backup: true
        """
    )
    # The name derived from read_file's metadata: text/plain -> out/text/plain.txt.
    assert (tmp_path / "out/text/plain.txt").read_bytes() == text.encode("latin-1")
    assert (tmp_path / "out/in.txt.copy").read_text(encoding="utf-8") == text
    assert (tmp_path / "out/in.txt.copy.bak").read_text(encoding="utf-8") == "previous"
    meta = result.metadata
    assert meta["reader"] == {
        "path": str(tmp_path / "in.txt"),
        "size": len(text.encode()),
        "content_type": "text/plain",
        "encoding": "utf-8",
    }
    assert meta["copy"]["backup_path"] == str(tmp_path / "out/in.txt.copy.bak")
    assert meta["writer"]["size"] == len(text.encode("latin-1"))


def test_write_file_path_from_reader_path_after_fusion(tmp_path: Path, run: Run) -> None:
    (tmp_path / "in.csv").write_text("a,b\n1,x\n2,y\n", encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.csv}
          - name: parse_csv
          - name: write_file
            config: {path: "${steps.reader.metadata.path}.jsonl", create_directories: false}
        """
    )
    assert result.steps[0].fused == ["reader"]
    lines = (tmp_path / "in.csv.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]


def test_append_writes_rows_after_existing_content(tmp_path: Path, run: Run) -> None:
    (tmp_path / "in.csv").write_text("a\n1\n2\n", encoding="utf-8")
    (tmp_path / "out.csv").write_text("a\n0\n", encoding="utf-8")
    yaml = """
        pipeline:
          - name: read_file
            config: {path: in.csv}
          - name: parse_csv
          - name: write_file
            config: {path: out.csv, append: true}
        """
    run(yaml)
    assert (tmp_path / "out.csv").read_text() == "a\n0\n1\n2\n"  # no second header


def test_missing_folder_without_create_dirs_is_an_error(tmp_path: Path, run: Run) -> None:
    (tmp_path / "in.txt").write_text("x", encoding="utf-8")
    result = run(
        """
        pipeline:
          - name: read_file
            config: {path: in.txt}
          - name: write_file
            config: {path: nope/out.txt, create_dirs: false}
        """,
        ok=False,
    )
    assert isinstance(result.error, DataError) and "does not exist" in result.error.message
    assert not (tmp_path / "nope").exists()


def test_binary_read_passes_bytes_unchanged(tmp_path: Path, run: Run) -> None:
    payload = bytes(range(256)) * 5000
    (tmp_path / "in.bin").write_bytes(payload)
    result = run(
        """
        pipeline:
          - name: read_file
            id: reader
            config: {path: in.bin, binary: true}
          - name: write_file
            config: {path: out.bin}
        """
    )
    assert (tmp_path / "out.bin").read_bytes() == payload
    assert result.metadata["reader"]["content_type"] == "application/octet-stream"


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_batch_rechunks_without_changing_rows(tmp_path: Path, run: Run, size: int) -> None:
    lines = "".join(f"{i},v{i}\n" for i in range(2500))
    (tmp_path / "in.csv").write_text("n,v\n" + lines, encoding="utf-8")
    result = run(
        f"""
        settings: {{batch_size: 300}}
        pipeline:
          - name: read_file
            config: {{path: in.csv}}
          - name: parse_csv
          - name: batch
            config: {{batch_size: {size}, checkpoint_frequency: 2}}
          - name: write_parquet
            config: {{path: out.parquet}}
        """
    )
    got = pq.read_table(tmp_path / "out.parquet")
    assert got.column("n").to_pylist() == [str(i) for i in range(2500)]
    expected_batches = -(-2500 // size)
    assert result.metadata["batch"]["batches"] == expected_batches
    assert result.metadata["batch"]["checkpoint_batches"] == expected_batches - expected_batches % 2


def test_stdin_to_stdout_through_the_cli(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """
            pipeline:
              - name: read_stdin
                config: {timeout_seconds: 30}
              - name: parse_json
                config: {strict: false}
              - name: write_stdout
                config: {prefix: "> "}
              - name: format_csv
              - name: write_file
                config: {path: out.csv}
            """
        ),
        encoding="utf-8",
    )
    doc = '[{"a": 1, "b": "x"}, {"a": 2, "b": "y",},]'
    proc = subprocess.run([OXIFLOW, "run", str(pipeline), "-q"], input=doc, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '> {"a": 1, "b": "x"}\n> {"a": 2, "b": "y"}\n'
    # write_stdout is a sink: the rows flowed on to format_csv.
    assert (tmp_path / "out.csv").read_text() == "a,b\n1,x\n2,y\n"
