"""Checkpointed loads and `oxiflow run --resume`: a run that fails (or is killed) part-way keeps the
slices it committed; the resumed run reads only what was not committed and the target ends exactly
as the source (DuckDB compares them)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import psycopg
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


# -- a file source cannot be cut into row slices; a failing probe is a failed run; exit codes are recorded
def _recorded(folder: Path) -> list[dict]:
    proc = oxiflow("runs", "--json", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_file_source_in_rows_mode_is_refused_before_anything_runs(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", "id,ts\n1,2024-01-01\n2,2024-01-03\n")
    write(
        tmp_path / "p.yaml",
        """
        metadata: {name: csv_rows}
        pipeline:
          - name: read_csv
            config: {path: a.csv, incremental: {cursor: ts, checkpoint_every: 1d}}
          - name: write_duckdb
            config: {database: dst.duckdb, table: t}
        """,
    )
    for command in ("validate", "run"):
        proc = oxiflow(command, "p.yaml", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "p.yaml:4:13: read_csv cannot tell the range of its cursor" in proc.stderr
        assert "Traceback" not in proc.stderr and "mode: files" in proc.stderr
    assert not (tmp_path / "dst.duckdb").exists()
    assert not (tmp_path / ".oxiflow" / "state.db").exists()  # caught before the run was even recorded


def test_a_source_that_fails_its_range_query_fails_the_run_cleanly(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "src.db").close()  # a database without the table
    write(
        tmp_path / "p.yaml",
        """
        metadata: {name: no_table}
        pipeline:
          - name: read_sqlite
            config: {database: src.db, table: ev, incremental: {cursor: ts, checkpoint_every: 1d}}
          - name: write_duckdb
            config: {database: dst.duckdb, table: ev}
        """,
    )
    proc = oxiflow("run", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "error: " in proc.stderr and "ev" in proc.stderr
    (run,) = _recorded(tmp_path)
    assert (run["status"], run["exit_code"]) == ("failed", 1) and "ev" in run["error"]


def test_resume_records_its_exit_code(project: Path, tmp_path: Path) -> None:
    pipeline(project)
    code, _, err = run_json(project)
    assert code == 0, err
    code, _, err = run_json(project, "--resume")
    assert code == 0 and "nothing to resume" in err
    assert [(r["status"], r["exit_code"]) for r in _recorded(project)] == [("ok", 0), ("ok", 0)]
    plain = tmp_path / "plain"
    write(plain / "a.csv", "id\n1\n")
    write(plain / "p.yaml", "pipeline:\n  - name: read_csv\n    config: {path: a.csv}\n"
          "  - name: write_csv\n    config: {path: out.csv}\n")  # fmt: skip
    assert oxiflow("run", "p.yaml", "--resume", cwd=plain).returncode == 2
    assert [(r["status"], r["exit_code"]) for r in _recorded(plain)] == [("failed", 2)]


# -- oxiflow worker stop, then --resume -------------------------------------------------------------------
def test_worker_stop_then_resume_gives_one_clean_run(project: Path) -> None:
    """A checkpointed load into PostgreSQL is stopped with `oxiflow worker stop` while its second slice is
    blocked in the sink (the test holds an uncommitted row with a key of that slice in a unique index, so the
    COPY waits on it): deterministic, no sleeping. The stopped run exits 143 keeping its first checkpoint;
    `--resume` reads only the rest, and the target then holds exactly the rows of one clean run of the same
    pipeline into another table (and of the source)."""
    tables = {name: f"ev_{name}_{uuid.uuid4().hex[:8]}" for name in ("stopped", "clean")}
    for name, table in tables.items():
        write(
            project / f"{name}.yaml",
            f"""
            metadata: {{name: {name}}}
            pipeline:
              - name: read_duckdb
                config:
                  database: src.duckdb
                  table: ev
                  incremental: {{cursor: ts, checkpoint_every: 1d}}
              - name: write_postgres
                config: {{url: '{PG_URL}', table: {table}, write_disposition: append}}
            """,
        )
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        for table in tables.values():
            admin.execute(f"CREATE TABLE {table} (id bigint, ts timestamp, v text, _oxi_load_id text)")
            admin.execute(f"CREATE UNIQUE INDEX ON {table} (id)")
    blocker = psycopg.connect(PG_URL)  # not autocommit: its insert stays uncommitted
    state = project / ".oxiflow" / "state.db"
    proc = None
    try:
        blocker.execute(f"INSERT INTO {tables['stopped']} (id) VALUES (30)")  # id 30: in the second day
        me = blocker.info.backend_pid
        proc = subprocess.Popen(
            [sys.executable, "-m", "oxiflow.cli.main", "run", "stopped.yaml", "-q"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def committed_slices() -> int:
            if not state.exists():
                return 0
            con = sqlite3.connect(state)
            try:
                return con.execute("SELECT count(*) FROM loads WHERE status = 'committed'").fetchone()[0]
            except sqlite3.OperationalError:  # the store is being created
                return 0
            finally:
                con.close()

        def waits_on_me() -> int:
            with psycopg.connect(PG_URL, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (me,)
                )
                return row.fetchone()[0]

        deadline = time.monotonic() + 60
        # the first checkpoint is committed, and the second slice's COPY waits on the uncommitted row
        while not (committed_slices() >= 1 and waits_on_me()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not reach its second slice"
            time.sleep(0.02)  # polling interval
        stop = oxiflow("worker", "stop", "stopped", cwd=project)
        assert stop.returncode == 0, stop.stderr
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 143, stderr  # not 134: an abort at exit while a native query ran
        assert "error: stopped by SIGTERM" in stderr
    finally:
        blocker.rollback()
        blocker.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    try:
        runs = _recorded(project)
        assert (runs[0]["status"], runs[0]["exit_code"], runs[0]["error"]) == ("cancelled", 143, "stopped by SIGTERM")
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            assert pg.execute(f"SELECT count(*) FROM {tables['stopped']}").fetchone() == (24,)  # the first day

        proc2 = oxiflow("run", "stopped.yaml", "--resume", "--json", cwd=project)
        assert proc2.returncode == 0, proc2.stderr
        assert "(cancelled, 1 checkpoint(s) committed)" in proc2.stderr
        resumed = json.loads(proc2.stdout)
        assert rows_read(resumed) == ROWS - 24  # nothing committed was read again
        clean = oxiflow("run", "clean.yaml", "-q", cwd=project)
        assert clean.returncode == 0, clean.stderr
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            got, want = (
                pg.execute(f"SELECT id, ts, v FROM {tables[name]} ORDER BY id").fetchall()
                for name in ("stopped", "clean")
            )
            loads = pg.execute(f"SELECT count(DISTINCT _oxi_load_id) FROM {tables['stopped']}").fetchone()
        assert got == want and len(got) == ROWS
        src = duckdb.connect(str(project / "src.duckdb"), read_only=True)
        try:
            assert got == src.execute("SELECT id, ts, v FROM ev ORDER BY id").fetchall()
        finally:
            src.close()
        assert loads == (5,)  # one committed load per day slice: 1 before the stop, 4 by the resume
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            for table in tables.values():
                admin.execute(f"DROP TABLE IF EXISTS {table}")
