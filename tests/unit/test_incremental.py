"""Incremental loading through the engine with a real SQLite state store (docs/incremental.md).

The oracle is computed independently from the source database with SQL: the target, reduced to the
latest version of each key, equals the source table; every (key, cursor) version is loaded once.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oxiflow.config.load import load_pipeline
from oxiflow.engine.local import RunOptions, run_plan
from oxiflow.engine.metrics import RunResult
from oxiflow.state.store import open_store

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pipeline(folder: Path, incremental: str, sink: str) -> Path:
    path = folder / "p.yaml"
    path.write_text(
        "metadata: {name: inc}\npipeline:\n"
        "  - name: read_sqlite\n    config:\n      database: src.db\n      table: t\n"
        f"      incremental: {incremental}\n"
        f"  - {sink}\n",
        encoding="utf-8",
    )
    return path


def _run(pipeline: Path, state: Path, *, full_refresh: bool = False) -> RunResult:
    with open_store(str(state)) as store:
        result = run_plan(load_pipeline(pipeline), RunOptions(state=store, full_refresh=full_refresh))
    assert result.status == "ok", result.error
    assert result.balanced
    return result


def _src(folder: Path) -> sqlite3.Connection:
    con = sqlite3.connect(folder / "src.db", isolation_level=None)
    con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER, updated_at TIMESTAMP, v TEXT)")
    return con


def _target_rows(folder: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(folder / "dst.db")
    try:
        return con.execute("SELECT id, updated_at, v FROM t ORDER BY id, updated_at").fetchall()
    finally:
        con.close()


def _check_against_source(folder: Path) -> None:
    """Latest version per key in the target == the source; no (key, cursor) loaded twice."""
    target = _target_rows(folder)
    assert len(target) == len({(r[0], r[1]) for r in target}), "a (key, cursor) version was loaded twice"
    latest = {}
    for key, cursor, v in target:
        if key not in latest or cursor > latest[key][0]:
            latest[key] = (cursor, v)
    src = _src(folder)
    expected = src.execute("SELECT id, updated_at, v FROM t ORDER BY id").fetchall()
    src.close()
    assert sorted((k, c, v) for k, (c, v) in latest.items()) == expected


SINK = "name: write_sqlite\n    config: {database: dst.db, table: t}"


def test_growing_table_new_late_equal_and_updated_rows(tmp_path: Path) -> None:
    src = _src(tmp_path)
    src.executemany(
        "INSERT INTO t VALUES (?, ?, ?)", [(i, f"2024-01-0{1 + i % 3} 10:00:00", f"v{i}") for i in range(6)]
    )
    p = _pipeline(tmp_path, "{cursor: updated_at, primary_key: id, lag: P1D}", SINK)
    state = tmp_path / "state.db"
    _run(p, state)
    _check_against_source(tmp_path)
    # equal to the last value, late inside the lag window, new, and an update of a loaded row
    src.execute("INSERT INTO t VALUES (10, '2024-01-03 10:00:00', 'eq'), (11, '2024-01-02 12:00:00', 'late')")
    src.execute("INSERT INTO t VALUES (12, '2024-01-05 00:00:00', 'new')")
    src.execute("UPDATE t SET updated_at = '2024-01-04 00:00:00', v = 'upd' WHERE id = 0")
    second = _run(p, state)
    _check_against_source(tmp_path)
    read = next(s for s in second.steps if s.step_id == "read_sqlite")
    assert read.rows_out == 4  # eq, late, new, upd: nothing loaded before is read out again
    assert len(_target_rows(tmp_path)) == 10
    # a run with nothing new loads nothing
    third = _run(p, state)
    assert next(s for s in third.steps if s.step_id == "write_sqlite").rows_out == 0
    # the rows carry their load id, and every load id has its marker in the target
    con = sqlite3.connect(tmp_path / "dst.db")
    ids = {r[0] for r in con.execute("SELECT DISTINCT _oxi_load_id FROM t")}
    markers = {r[0] for r in con.execute("SELECT load_id FROM _oxi_loads")}
    assert len(ids) == 2 and ids <= markers
    with open_store(str(state)) as store:
        assert not store.pending_loads("inc")
        assert {load.load_id for load in store.loads("inc", status="committed")} == markers


def test_without_lag_late_rows_are_missed_as_documented(tmp_path: Path) -> None:
    src = _src(tmp_path)
    src.executemany("INSERT INTO t VALUES (?, ?, 'x')", [(1, "2024-01-02 00:00:00"), (2, "2024-01-03 00:00:00")])
    p = _pipeline(tmp_path, "{cursor: updated_at, primary_key: id}", SINK)
    _run(p, tmp_path / "state.db")
    src.execute("INSERT INTO t VALUES (3, '2024-01-01 00:00:00', 'late'), (4, '2024-01-03 00:00:00', 'eq')")
    _run(p, tmp_path / "state.db")
    assert [r[0] for r in _target_rows(tmp_path)] == [1, 2, 4]  # 3 arrived with an older cursor


def test_full_refresh_resets_the_cursor(tmp_path: Path) -> None:
    src = _src(tmp_path)
    src.execute("INSERT INTO t VALUES (1, '2024-01-02 00:00:00', 'a')")
    replace = "name: write_sqlite\n    config: {database: dst.db, table: t, write_disposition: replace}"
    p = _pipeline(tmp_path, "{cursor: updated_at}", replace)
    _run(p, tmp_path / "state.db")
    src.execute("INSERT INTO t VALUES (2, '2024-01-03 00:00:00', 'b')")
    _run(p, tmp_path / "state.db")
    assert [r[0] for r in _target_rows(tmp_path)] == [2]  # replace + incremental: the last increment
    _run(p, tmp_path / "state.db", full_refresh=True)
    assert [r[0] for r in _target_rows(tmp_path)] == [1, 2]


def test_initial_and_end_bound_a_backfill(tmp_path: Path) -> None:
    src = _src(tmp_path)
    src.executemany("INSERT INTO t VALUES (?, ?, 'x')", [(i, f"2024-01-0{i} 00:00:00") for i in range(1, 8)])
    p = _pipeline(tmp_path, "{cursor: updated_at, initial: '2024-01-03', end: '2024-01-06'}", SINK)
    _run(p, tmp_path / "state.db")
    assert [r[0] for r in _target_rows(tmp_path)] == [3, 4, 5]


def test_postgres_sink(tmp_path: Path) -> None:
    import psycopg

    table = f"inc_{os.getpid()}"
    with psycopg.connect(PG_URL, autocommit=True) as pg:
        pg.execute(f"DROP TABLE IF EXISTS {table}")
        src = _src(tmp_path)
        src.executemany(
            "INSERT INTO t VALUES (?, ?, ?)", [(i, f"2024-01-0{1 + i % 5} 00:00:00", "a") for i in range(9)]
        )
        p = _pipeline(
            tmp_path,
            "{cursor: updated_at, primary_key: id, lag: 2d}",
            f"name: write_postgres\n    config: {{url: '{PG_URL}', table: {table}}}",
        )
        _run(p, tmp_path / "state.db")
        src.execute("INSERT INTO t VALUES (20, '2024-01-04 00:00:00', 'late'), (21, '2024-01-05 00:00:00', 'eq')")
        _run(p, tmp_path / "state.db")
        got = pg.execute(f"SELECT id, count(*) FROM {table} GROUP BY id ORDER BY id").fetchall()
        assert got == [(i, 1) for i in [*range(9), 20, 21]]
        pg.execute(f"DROP TABLE {table}")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    inserts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
)
def test_random_runs_equal_one_full_load(tmp_path_factory: pytest.TempPathFactory, inserts, cuts) -> None:
    """Inserts arrive in order with a cursor that only moves forward (or stays); split into random runs,
    the target holds exactly the rows one full load would."""
    folder = tmp_path_factory.mktemp("prop")
    src = _src(folder)
    p = _pipeline(folder, "{cursor: updated_at, primary_key: id}", SINK)
    cursor = 0
    rows = []
    for i, (step, _) in enumerate(inserts):
        cursor += step % 3  # 0: equal to the last value
        rows.append((i, f"2024-01-01 00:{cursor // 60:02d}:{cursor % 60:02d}", f"v{i}"))
    bounds = sorted({min(c, len(rows)) for c in cuts} | {len(rows)})
    done = 0
    for b in bounds:
        src.executemany("INSERT INTO t VALUES (?, ?, ?)", rows[done:b])
        done = b
        _run(p, folder / "state.db")
    assert _target_rows(folder) == sorted(rows)


def test_files_mode_reads_only_new_files_by_mtime_and_by_name(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()

    def put(name: str, ids: list[int], mtime_ns: int) -> None:
        path = tmp_path / "in" / name
        pacsv.write_csv(pa.table({"id": ids}), path)
        os.utime(path, ns=(mtime_ns, mtime_ns))

    for cursor in ("mtime", "name"):
        for f in (tmp_path / "in").glob("*"):
            f.unlink()
        put("b.csv", [1, 2], 2_000_000_000_000_000_000)
        put("c.csv", [3], 2_000_000_000_000_000_000)
        p = tmp_path / f"f_{cursor}.yaml"
        p.write_text(
            f"metadata: {{name: files_{cursor}}}\npipeline:\n"
            f"  - name: read_csv\n    config: {{path: 'in/*.csv', incremental: {{mode: files, cursor: {cursor}}}}}\n"
            f"  - name: write_sqlite\n    config: {{database: f_{cursor}.db, table: t}}\n",
            encoding="utf-8",
        )
        state = tmp_path / "state.db"
        _run(p, state)
        nothing = _run(p, state)  # no new file: no rows, the schema of what is there
        assert next(s for s in nothing.steps if s.step_id == "read_csv").rows_out == 0
        # a newer file; and one with a later name but an old mtime (found by name, not by mtime)
        put("d.csv", [4], 2_000_000_001_000_000_000)
        put("e.csv", [5], 1_000_000_000_000_000_000)
        _run(p, state)
        con = sqlite3.connect(tmp_path / f"f_{cursor}.db")
        got = [r[0] for r in con.execute("SELECT id FROM t ORDER BY id")]
        con.close()
        assert got == ([1, 2, 3, 4] if cursor == "mtime" else [1, 2, 3, 4, 5])


def test_no_state_is_refused(tmp_path: Path) -> None:
    _src(tmp_path).execute("INSERT INTO t VALUES (1, '2024-01-01', 'a')")
    result = run_plan(load_pipeline(_pipeline(tmp_path, "{cursor: updated_at}", SINK)))
    assert result.status == "failed" and "state store" in str(result.error)
