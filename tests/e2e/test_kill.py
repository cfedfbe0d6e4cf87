"""Crash safety: `oxiflow run` killed with SIGKILL (or stopped with SIGINT) while writing leaves the
previous output intact and no partial target; a rerun gives exactly the source's rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

ROWS = 3_000_000
OXIFLOW = [sys.executable, "-c", "from oxiflow.cli.main import main; main()"]
# an independent fingerprint of a set of rows: count, sums and an order-free hash
FINGERPRINT = "count(*), sum(id), sum(amount), sum(hash(name)), sum(cat)"


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kill-src") / "big.csv"
    duckdb.sql(
        f"COPY (SELECT range AS id, 'name-' || range AS name, range * 0.25 AS amount, range % 8 AS cat "
        f"FROM range({ROWS})) TO '{path}' (HEADER)"
    )
    return path


def one(query: str, database: str = ":memory:") -> tuple:
    con = duckdb.connect(database, read_only=database != ":memory:")
    try:
        row = con.execute(query).fetchone()
    finally:
        con.close()
    assert row is not None
    return row


def source_fingerprint(csv: Path) -> tuple:
    return one(f"SELECT {FINGERPRINT} FROM read_csv('{csv}')")


def pipeline(folder: Path, csv: Path, sink: str) -> Path:
    path = folder / "pipeline.yaml"
    text = f"""
    pipeline:
      - name: read_csv
        config: {{path: "{csv}"}}
      - name: {sink}
    """
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run_ok(path: Path) -> None:
    proc = subprocess.run([*OXIFLOW, "run", str(path), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def start_and_stop(path: Path, started: Callable[[], bool], sig: int = signal.SIGKILL) -> int:
    """Start a run, wait (polling, no fixed sleep) until ``started()``, then send ``sig``."""
    proc = subprocess.Popen([*OXIFLOW, "run", str(path), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while not started():
            assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()[1]!r}"
            assert time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.002)  # polling interval
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def temps(folder: Path, name: str) -> list[Path]:
    return list(folder.glob(f".{name}.oxitmp-*"))


def visible(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


@pytest.mark.parametrize("partitioned", [False, True])
def test_kill_while_writing_parquet(tmp_path: Path, big_csv: Path, partitioned: bool) -> None:
    out = tmp_path / "out"
    out.mkdir()
    name = "data" if partitioned else "data.parquet"
    sink = f"write_parquet\n        config: {{path: out/{name}" + (", partition_by: [cat]}" if partitioned else "}")
    path = pipeline(tmp_path, big_csv, sink)

    rc = start_and_stop(path, lambda: bool(temps(out, name)))
    assert rc == -signal.SIGKILL
    assert visible(out) == set()  # no partial target, only hidden temporaries
    assert temps(out, name)

    run_ok(path)
    assert temps(out, name) == []  # the successful run removed the killed run's leftovers
    assert visible(out) == {name}
    glob = f"{out / name}/**/*.parquet" if partitioned else str(out / name)
    got = one(f"SELECT {FINGERPRINT} FROM read_parquet('{glob}', hive_partitioning = true)")
    assert got == source_fingerprint(big_csv)


def test_kill_while_overwriting_parquet_keeps_the_old_file(tmp_path: Path, big_csv: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_text("id,name,amount,cat\n-1,old,0.5,1\n", encoding="utf-8")
    out = tmp_path / "out"
    run_ok(pipeline(tmp_path, small, "write_parquet\n        config: {path: out/data.parquet}"))
    path = pipeline(tmp_path, big_csv, "write_parquet\n        config: {path: out/data.parquet}")
    assert start_and_stop(path, lambda: bool(temps(out, "data.parquet"))) == -signal.SIGKILL
    assert duckdb.sql(f"SELECT id, name FROM '{out / 'data.parquet'}'").fetchall() == [(-1, "old")]


@pytest.mark.parametrize("disposition", ["replace", "append"])
def test_kill_while_writing_duckdb(tmp_path: Path, big_csv: Path, disposition: str) -> None:
    small = tmp_path / "small.csv"
    small.write_text("id,name,amount,cat\n-1,old,0.5,1\n-2,older,1.5,2\n", encoding="utf-8")
    db = tmp_path / "wh.duckdb"
    sink = f"write_duckdb\n        config: {{database: wh.duckdb, table: main.t, write_disposition: {disposition}}}"
    run_ok(pipeline(tmp_path, small, sink))
    size_before = db.stat().st_size
    path = pipeline(tmp_path, big_csv, sink)

    # rows are flowing once DuckDB starts writing the new row groups into the file
    rc = start_and_stop(path, lambda: db.stat().st_size > size_before)
    assert rc == -signal.SIGKILL

    def table() -> list[tuple]:
        con = duckdb.connect(str(db), read_only=True)
        try:
            tables = con.sql("SELECT table_name FROM information_schema.tables").fetchall()
            assert tables == [("t",)], tables  # no staging table is visible
            return con.sql("SELECT id, name FROM t ORDER BY id").fetchall()
        finally:
            con.close()

    assert table() == [(-2, "older"), (-1, "old")]

    run_ok(path)
    got = one(f"SELECT {FINGERPRINT} FROM t WHERE id >= 0", str(db))
    con = duckdb.connect(str(db), read_only=True)
    try:
        old = con.sql("SELECT id FROM t WHERE id < 0 ORDER BY id").fetchall()
    finally:
        con.close()
    assert got == source_fingerprint(big_csv)
    assert old == ([] if disposition == "replace" else [(-2,), (-1,)])


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path: Path, big_csv: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = pipeline(tmp_path, big_csv, "write_parquet\n        config: {path: out/data.parquet}")
    rc = start_and_stop(path, lambda: bool(temps(out, "data.parquet")), signal.SIGINT)
    assert rc == 130
    assert list(out.iterdir()) == []  # neither a partial target nor a temporary file


def test_stale_temps_of_other_targets_are_kept(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_text("id\n1\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    other = out / ".other.parquet.oxitmp-x-1"
    other.write_bytes(b"partial")
    stale = out / ".data.parquet.oxitmp-x-2"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    run_ok(pipeline(tmp_path, small, "write_parquet\n        config: {path: out/data.parquet}"))
    assert not stale.exists()
    assert other.exists()  # belongs to another target
