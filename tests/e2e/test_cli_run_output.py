"""What `oxiflow run` prints: progress (rows, rows/s, bytes) on a terminal, config errors as JSON under
--log-format json, --json refused next to a step printing to stdout, batch progress messages, the
conservation line, the default pipeline."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from _cli import oxiflow, write

PIPELINE = """
pipeline:
  - name: read_csv
    config: {path: in.csv}
  - name: sort
    config: {by: [id]}
  - name: write_parquet
    config: {path: out.parquet}
"""


def _orders(folder: Path, n: int = 2000) -> None:
    (folder / "in.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(n)), encoding="utf-8")


def run_on_a_terminal(folder: Path, *args: str) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (as a person at a terminal sees it); the bytes written there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oxiflow.cli.main", *args],
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            raise AssertionError("no output for 60 s")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


def test_progress_on_a_terminal_shows_rows_rate_and_bytes(tmp_path: Path) -> None:
    _orders(tmp_path)
    write(tmp_path / "p.yaml", PIPELINE)
    code, text = run_on_a_terminal(tmp_path, "run", "p.yaml", "--no-state")
    assert code == 0, text
    # the progress line is redrawn in place (\r + clear line); every step's final figures are drawn
    lines = [x for x in re.split(r"\r\x1b\[2K", text) if x.startswith("[")]
    assert lines, text
    last = lines[-1]
    assert re.search(r"read_csv: 2,000 rows \([\d,]+ rows/s, [\d.]+ (B|KB|MB)\)", last), last
    assert re.search(r"write_parquet: 2,000 rows \([\d,]+ rows/s, [\d.]+ (B|KB|MB)\)", last), last


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    _orders(tmp_path, 10)
    write(tmp_path / "p.yaml", PIPELINE)
    r = oxiflow("run", "p.yaml", "--no-state", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "\x1b[2K" not in r.stderr and "rows/s" not in r.stderr


def test_config_errors_are_json_under_log_format_json(tmp_path: Path) -> None:
    write(tmp_path / "bad.yaml", "pipeline:\n  - name: read_cvs\n    config: {pth: x.csv}\n")
    r = oxiflow("run", "bad.yaml", "--log-format", "json", "--no-state", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    (record,) = [json.loads(line) for line in r.stderr.splitlines()]
    assert record["level"] == "error" and record["event"] == "config_error"
    assert [(i["line"], i["message"]) for i in record["issues"]] == [(2, "unknown oxi 'read_cvs'")]
    assert record["issues"][0]["fix"] == {"replace": "read_cvs", "with": "read_csv"}


def test_json_summary_next_to_a_step_printing_to_stdout_is_refused(tmp_path: Path) -> None:
    _orders(tmp_path, 3)
    write(
        tmp_path / "p.yaml",
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: write_stdout
        """,
    )
    r = oxiflow("run", "p.yaml", "--json", "--no-state", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert "--json prints the run summary on stdout, where step write_stdout writes its data" in r.stderr
    # the documented way: data on stdout, the summary as JSON on stderr
    r = oxiflow("run", "p.yaml", "--log-format", "json", "--no-state", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == [0, 1, 2]
    summary = json.loads(r.stderr.splitlines()[-1])
    assert summary["event"] == "run_summary" and summary["status"] == "ok"


def test_run_without_a_name_runs_the_default_pipeline(tmp_path: Path) -> None:
    write(tmp_path / "oxiflow.yaml", "project: {name: t}\n")
    _orders(tmp_path, 3)
    r = oxiflow("run", "--no-state", cwd=tmp_path)
    assert r.returncode == 2
    assert "no pipeline named 'pipeline' (the one `oxiflow run` runs when none is named" in r.stderr
    write(tmp_path / "pipelines/pipeline.yaml", PIPELINE)
    r = oxiflow("run", "--no-state", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.parquet").is_file()


def test_batch_progress_messages_are_shown_and_quiet_hides_them(tmp_path: Path) -> None:
    _orders(tmp_path, 50)
    write(
        tmp_path / "p.yaml",
        """
        pipeline:
          - name: read_csv
            config: {path: in.csv}
          - name: batch
            config: {batch_size: 10, checkpoint_frequency: 2}
          - name: write_parquet
            config: {path: out.parquet}
        """,
    )
    r = oxiflow("run", "p.yaml", "--no-state", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [x for x in r.stderr.splitlines() if x.startswith("INFO")] == [
        "INFO step batch: 20 rows in 2 batches",
        "INFO step batch: 40 rows in 4 batches",
    ]
    quiet = oxiflow("run", "p.yaml", "--no-state", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr
    as_json = oxiflow("run", "p.yaml", "--no-state", "--log-format", "json", cwd=tmp_path)
    records = [json.loads(x) for x in as_json.stderr.splitlines()]
    assert [(r["event"], r["rows"]) for r in records if r.get("event") == "batch_checkpoint"] == [
        ("batch_checkpoint", 20),
        ("batch_checkpoint", 40),
    ]


def test_the_summary_says_which_steps_conservation_was_not_checked_on(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('[{"users": [{"n": 1}, {"n": 2}]}]', encoding="utf-8")
    write(
        tmp_path / "p.yaml",
        """
        pipeline:
          - name: read_file
            config: {path: in.json}
          - name: parse_json
          - name: json_select
            config: {path: "[0].users"}
          - name: write_json
            config: {path: out.jsonl}
        """,
    )
    r = oxiflow("run", "p.yaml", "--no-state", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (
        "rows in = rows out + rejected + filtered holds for 1 step(s); not checked on parse_json, "
        "json_select (reshape rows: one in is not one out)"
    ) in r.stderr
