"""Checkpointed loads and `oxiflow run --resume`: a run that fails (or is killed) part-way keeps the
slices it committed; the resumed run reads only what was not committed and the target ends exactly
as the source (DuckDB compares them)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import uuid
from pathlib import Path

import duckdb
import pytest
from _cli import oxiflow, write

ROWS = 100  # one event per hour from 2024-01-01: days of 24, 24, 24, 24 and 4 rows


def failing_at(row_id: int) -> str:
    """A sql step query that fails on the row ``row_id`` when the variable FAIL is yes (a bad record)."""
    bad = f"id = {row_id} AND '${{FAIL:-no}}' = 'yes'"
    return f"SELECT * FROM input WHERE CASE WHEN {bad} THEN error('bad') ELSE true END"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    con = duckdb.connect(str(tmp_path / "src.duckdb"))
    con.execute(
        f"CREATE TABLE ev AS SELECT range AS id, TIMESTAMP '2024-01-01' + INTERVAL (range) HOUR AS ts, "
        f"'v' || range AS v FROM range({ROWS})"
    )
    con.close()
    return tmp_path


def pipeline(folder: Path, cursor: str = "ts", every: str = "1d") -> Path:
    # `FAIL` makes the row with id 60 (the third day) fail the run, as a bad record would
    return write(
        folder / "p.yaml",
        f"""
        metadata: {{name: resumable}}
        pipeline:
          - name: read_duckdb
            config:
              database: src.duckdb
              table: ev
              incremental: {{cursor: {cursor}, checkpoint_every: {every}}}
          - name: sql
            config:
              query: "{failing_at(60)}"
          - name: write_duckdb
            config: {{database: dst.duckdb, table: ev, write_disposition: append, load_id_column: null}}
        """,
    )


def target_ids(folder: Path) -> list[int]:
    con = duckdb.connect(str(folder / "dst.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT id FROM ev ORDER BY id").fetchall()]
    finally:
        con.close()


def assert_target_is_source(folder: Path) -> None:
    con = duckdb.connect()
    con.execute(f"ATTACH '{folder / 'src.duckdb'}' AS s (READ_ONLY)")
    con.execute(f"ATTACH '{folder / 'dst.duckdb'}' AS d (READ_ONLY)")
    assert con.execute("SELECT count(*) FROM d.ev").fetchone() == (ROWS,)  # no row twice
    missing = con.execute("SELECT count(*) FROM (SELECT id, ts, v FROM s.ev EXCEPT SELECT id, ts, v FROM d.ev)")
    assert missing.fetchone() == (0,)
    con.close()


def run_json(folder: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    proc = oxiflow("run", "p.yaml", "--json", *args, cwd=folder, env=env)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def rows_read(result: dict) -> int:
    return next(s["rows_out"] for s in result["steps"] if s["step_id"] == "read_duckdb")


def test_a_failed_run_keeps_its_checkpoints_and_resume_reads_only_the_rest(project: Path) -> None:
    pipeline(project)
    code, failed, _ = run_json(project, "--var", "FAIL=yes")
    assert code == 1
    assert failed["metadata"]["checkpoints"] == {"committed": 2, "slices": 3}
    assert target_ids(project) == list(range(48))  # the first two days, committed

    code, resumed, err = run_json(project, "--resume")
    assert code == 0, err
    assert "resuming resumable after run" in err and "(failed, 2 checkpoint(s) committed)" in err
    assert rows_read(resumed) == ROWS - 48  # nothing committed was read again
    assert resumed["metadata"]["checkpoints"] == {"committed": 3, "slices": 3}
    assert_target_is_source(project)

    code, _, err = run_json(project, "--resume")
    assert code == 0 and "nothing to resume" in err
    assert_target_is_source(project)


def test_a_killed_run_resumes_after_its_last_commit(project: Path) -> None:
    pipeline(project)
    proc = oxiflow("run", "p.yaml", "-q", cwd=project, env={"OXIFLOW_TEST_CRASH_AT": "after_state_commit"})
    assert proc.returncode == -9  # killed right after the first slice committed
    assert target_ids(project) == list(range(24))

    code, resumed, err = run_json(project, "--resume")
    assert code == 0, err
    assert "was killed, 1 checkpoint(s) committed" in err
    assert rows_read(resumed) == ROWS - 24
    assert_target_is_source(project)


def test_integer_cursor_slices(project: Path) -> None:
    pipeline(project, cursor="id", every="30")
    code, result, err = run_json(project)
    assert code == 0, err
    # ends 30, 60, 90, then the last slice: [0, 30) [30, 60) [60, 90) [90, ...)
    assert result["metadata"]["checkpoints"] == {"committed": 4, "slices": 4}
    assert rows_read(result) == ROWS
    assert_target_is_source(project)


def test_file_checkpoints_and_resume(tmp_path: Path) -> None:
    for i in range(5):
        write(tmp_path / "in" / f"part{i}.csv", f"id,v\n{2 * i},a{i}\n{2 * i + 1},b{i}\n")
    write(
        tmp_path / "p.yaml",
        f"""
        metadata: {{name: files}}
        pipeline:
          - name: read_csv
            config:
              path: in/*.csv
              incremental: {{mode: files, cursor: name, checkpoint_every: 2}}
          - name: sql
            config:
              query: "{failing_at(7)}"
          - name: write_duckdb
            config: {{database: dst.duckdb, table: t, write_disposition: append}}
        """,
    )

    def ids() -> list[int]:
        con = duckdb.connect(str(tmp_path / "dst.duckdb"), read_only=True)
        try:
            return [r[0] for r in con.execute("SELECT id FROM t ORDER BY id").fetchall()]
        finally:
            con.close()

    code, failed, _ = run_json(tmp_path, "--var", "FAIL=yes")
    assert code == 1 and failed["metadata"]["checkpoints"] == {"committed": 1, "slices": 2}
    assert ids() == [0, 1, 2, 3]  # part0 and part1; the slice part2+part3 failed on id 7

    code, resumed, err = run_json(tmp_path, "--resume")
    assert code == 0, err
    read = next(s["rows_out"] for s in resumed["steps"] if s["step_id"] == "read_csv")
    assert read == 6  # part2, part3, part4: the committed files were not read again
    assert ids() == list(range(10))


def test_resume_needs_an_incremental_source(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "id\n1\n")
    write(
        tmp_path / "p.yaml",
        """
        pipeline:
          - name: read_csv
            config: {path: a.csv}
          - name: write_csv
            config: {path: out.csv}
        """,
    )
    proc = oxiflow("run", "p.yaml", "--resume", cwd=tmp_path)
    assert proc.returncode == 2
    assert "has no incremental source" in proc.stderr
    assert not (tmp_path / "out.csv").exists()


def test_a_sink_that_rewrites_its_output_is_refused(project: Path) -> None:
    path = pipeline(project)
    path.write_text(path.read_text().replace("write_disposition: append", "write_disposition: replace"))
    proc = oxiflow("validate", "p.yaml", cwd=project)
    assert proc.returncode == 2
    assert "cannot take a checkpointed load (write_disposition replace)" in proc.stderr


PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("OXIFLOW_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
EVENTS = [(i, dt.datetime(2024, 1, 1) + dt.timedelta(hours=i), f"v{i}") for i in range(ROWS)]


def _source_table(kind: str, folder: Path, table: str) -> str:
    """The 100 events in a table of ``kind``; the read step's config (YAML flow mapping body)."""
    create = f"CREATE TABLE {table} (id INTEGER, ts TIMESTAMP, v VARCHAR(20))"
    if kind == "sqlite":
        con = sqlite3.connect(folder / "src.db")
        con.execute(create)
        con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", [(i, t.isoformat(" "), v) for i, t, v in EVENTS])
        con.commit()
        con.close()
        return f"database: src.db, table: {table}"
    if kind == "postgres":
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as con:
            con.execute(create)
            with con.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", EVENTS)
        return f"url: '{PG_URL}', table: {table}"
    import pymysql

    rest = MYSQL_URL.removeprefix("mysql://")
    user, _, hostpart = rest.rpartition("@")
    host, _, db = hostpart.partition("/")
    con = pymysql.connect(host=host.split(":")[0], port=int(host.split(":")[1]), user=user, database=db)
    with con.cursor() as cur:
        cur.execute(create)
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", EVENTS)
    con.commit()
    con.close()
    return f"url: '{MYSQL_URL}', table: {table}"


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mysql"])
def test_database_sources_resume(tmp_path: Path, kind: str) -> None:
    table = f"ev_{uuid.uuid4().hex[:10]}"
    source = _source_table(kind, tmp_path, table)
    write(
        tmp_path / "p.yaml",
        f"""
        metadata: {{name: db_{kind}}}
        pipeline:
          - name: read_{kind}
            config: {{{source}, incremental: {{cursor: ts, checkpoint_every: 1d}}}}
          - name: sql
            config:
              query: "{failing_at(60)}"
          - name: write_duckdb
            config: {{database: dst.duckdb, table: ev, write_disposition: append}}
        """,
    )
    code, failed, err = run_json(tmp_path, "--var", "FAIL=yes")
    assert code == 1, err
    assert failed["metadata"]["checkpoints"] == {"committed": 2, "slices": 3}
    assert target_ids(tmp_path) == list(range(48))

    code, resumed, err = run_json(tmp_path, "--resume")
    assert code == 0, err
    read = next(s["rows_out"] for s in resumed["steps"] if s["step_id"] == f"read_{kind}")
    assert read == ROWS - 48
    assert target_ids(tmp_path) == list(range(ROWS))
