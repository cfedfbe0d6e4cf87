"""read_file on a named pipe (FIFO): it reads what a writer sends, and a stop (a timeout, Ctrl-C) ends a
read still waiting for a writer; file sources that need a regular file say so; a missing file's hint
names the folder relative paths start at."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from oxiflow.config.load import load_pipeline
from oxiflow.errors import DataError, RunCancelled
from oxiflow.oxi import StepContext
from oxiflow.oxis.files.csv import ReadCsv, ReadCsvConfig
from oxiflow.oxis.oxide.files import ReadFile, ReadFileConfig


def test_read_file_reads_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "in.pipe"
    os.mkfifo(fifo)

    def writer() -> None:
        with fifo.open("w") as fh:  # blocks until the reader opens its end
            fh.write("a,b\n1,2\n")

    t = threading.Thread(target=writer)
    t.start()
    ctx = StepContext("r", "read_file", "t", base_dir=tmp_path)
    data = ReadFile(ReadFileConfig(path="in.pipe")).read(ctx)
    assert data.read_text() == "a,b\n1,2\n"
    t.join(10)
    assert ctx.metadata["size"] == 8


def test_a_stop_ends_a_read_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "in.pipe"
    os.mkfifo(fifo)  # no writer ever comes
    ctx = StepContext("r", "read_file", "t", base_dir=tmp_path)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            ReadFile(ReadFileConfig(path="in.pipe")).read(ctx).read_text()
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    ctx.interrupt()  # what the engine does on a timeout: whenever it lands, the read ends
    t.join(10)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RunCancelled)


def test_read_csv_on_a_fifo_says_it_needs_a_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "in.csv")
    with pytest.raises(DataError) as err:
        ReadCsv(ReadCsvConfig(path="in.csv")).read(StepContext("r", "read_csv", "t", base_dir=tmp_path))
    assert "is not a regular file" in err.value.message and "read_pipe" in (err.value.hint or "")


def test_the_missing_file_hint_names_where_relative_paths_start(tmp_path: Path) -> None:
    (tmp_path / "oxiflow.yaml").write_text("project: {name: t}\n", encoding="utf-8")
    (tmp_path / "pipelines").mkdir()
    path = tmp_path / "pipelines" / "p.yaml"
    path.write_text("pipeline:\n  - name: read_file\n    config: {path: data/in.txt}\n  - name: write_stdout\n")
    from oxiflow.engine.local import run_plan

    result = run_plan(load_pipeline(path))
    assert isinstance(result.error, DataError)
    # inside a project relative paths start at the project root, not at the pipeline file's folder
    assert result.error.hint == f"check the path; relative paths start at {tmp_path}"
