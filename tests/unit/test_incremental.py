"""Incremental loading through the engine with a real SQLite state store (docs/incremental.md).

The oracle is computed independently from the source database with SQL: the target, reduced to the
latest version of each key, equals the source table; every (key, cursor) version is loaded once.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import duckdb
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
    # the rows carry their load id, each a committed load of the state store; the target keeps the marker
    # of its step's latest load only (the earlier ones were settled before it began: docs/incremental.md)
    con = sqlite3.connect(tmp_path / "dst.db")
    ids = {r[0] for r in con.execute("SELECT DISTINCT _oxi_load_id FROM t")}
    markers = con.execute("SELECT load_id, pipeline, step FROM _oxi_loads").fetchall()
    with open_store(str(state)) as store:
        assert not store.pending_loads("inc")
        committed = [load.load_id for load in store.loads("inc", status="committed")]
    assert len(committed) == 3 and len(ids) == 2 and ids <= set(committed)
    assert markers == [(committed[-1], "inc", "write_sqlite")]


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


# -- property: incremental runs == one full refresh ------------------------------------------------------
LAG = 30  # seconds: the pipeline's `lag`; late rows are generated inside it
T0 = dt.datetime(2024, 1, 1)
Row = tuple[int, dt.datetime, str, bool]  # id, updated_at, v, deleted


class PropSource:
    """The source table ``t (id, updated_at, v, deleted)`` in SQLite, DuckDB or PostgreSQL, written with each
    database's own driver (not oxiflow's), and the read step that reads it incrementally."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder = kind, folder
        self.table = f"prop_{uuid.uuid4().hex[:10]}" if kind == "postgres" else "t"
        self.write(f"CREATE TABLE {self.table} (id INTEGER, updated_at TIMESTAMP, v VARCHAR(20), deleted BOOLEAN)", [])

    def write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.kind == "sqlite":
            con = sqlite3.connect(self.folder / "src.db")
            with con:
                con.executemany(sql, rows) if rows else con.execute(sql)
            con.close()
        elif self.kind == "duckdb":
            duck = duckdb.connect(str(self.folder / "src.duckdb"))  # closed before every run reads it
            try:
                duck.executemany(sql, rows) if rows else duck.execute(sql)
            finally:
                duck.close()
        else:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as pg:
                sql = sql.replace("?", "%s")
                if rows:
                    with pg.cursor() as cur:
                        cur.executemany(sql, rows)
                else:
                    pg.execute(sql)

    def upsert(self, row: Row, *, new: bool) -> None:
        key, at, v, deleted = row
        stamp = at.isoformat(sep=" ") if self.kind == "sqlite" else at  # SQLite keeps timestamps as ISO text
        if new:
            self.write(f"INSERT INTO {self.table} VALUES (?, ?, ?, ?)", [(key, stamp, v, deleted)])
        else:
            self.write(
                f"UPDATE {self.table} SET updated_at = ?, v = ?, deleted = ? WHERE id = ?", [(stamp, v, deleted, key)]
            )

    def step(self) -> str:
        where = {"sqlite": "database: src.db", "duckdb": "database: src.duckdb", "postgres": f"url: '{PG_URL}'"}
        return (
            f"  - name: read_{self.kind}\n    config:\n      {where[self.kind]}\n      table: {self.table}\n"
            f"      incremental: {{cursor: updated_at, primary_key: id, lag: {LAG}s}}\n"
        )

    def drop(self) -> None:
        if self.kind == "postgres":
            self.write(f"DROP TABLE IF EXISTS {self.table}", [])


class PropSink:
    """A sink step into table ``name`` (append or merge with hard deletes), and its rows read back with the
    database's own driver, normalized: (id, 'YYYY-MM-DD HH:MM:SS', v, deleted)."""

    def __init__(self, kind: str, disposition: str, folder: Path) -> None:
        self.kind, self.disposition, self.folder = kind, disposition, folder
        self.prefix = f"prop_{uuid.uuid4().hex[:10]}_"

    def step(self, name: str) -> str:
        where = {
            "sqlite": "database: dst.db",
            "duckdb": "database: dst.duckdb",
            "postgres": f"url: '{PG_URL}'",
        }[self.kind]
        merge = ", primary_key: [id], merge: {hard_delete: deleted}" if self.disposition == "merge" else ""
        table = self.prefix + name
        return (
            f"  - name: write_{self.kind}\n"
            f"    config: {{{where}, table: {table}, write_disposition: {self.disposition}{merge}}}\n"
        )

    def rows(self, name: str) -> list[tuple[Any, ...]]:
        table, sql = self.prefix + name, f"SELECT id, updated_at, v, deleted FROM {self.prefix + name}"
        if self.kind == "sqlite":
            con = sqlite3.connect(self.folder / "dst.db")
            try:
                got = con.execute(sql).fetchall()
            except sqlite3.OperationalError:  # no load created it yet
                got = []
            finally:
                con.close()
        elif self.kind == "duckdb":
            if not (self.folder / "dst.duckdb").exists():
                return []
            duck = duckdb.connect(str(self.folder / "dst.duckdb"), read_only=True)
            try:
                exists = duck.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]).fetchall()
                got = duck.execute(sql).fetchall() if exists[0][0] else []
            finally:
                duck.close()
        else:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as pg:
                found = pg.execute("SELECT to_regclass(%s)", (table,)).fetchone()
                got = pg.execute(sql).fetchall() if found and found[0] else []
        return sorted((int(k), str(at).replace("T", " ")[:19], v, bool(d)) for k, at, v, d in got)

    def drop(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as pg:
                for name in ("inc", "full"):
                    pg.execute(f"DROP TABLE IF EXISTS {self.prefix + name}")


# one edit of the source between runs: (kind, amount, which key); kinds:
#   new     a new key at the highest cursor plus 0..3 s (0: equal to the last cursor loaded: the boundary)
#   late    a new key arriving late, 1..LAG s below the cursor the last run reached (inside the lag)
#   update  a key moved forward to the highest cursor plus 0..3 s (a new (cursor, key) version)
#   delete  the same, flagged deleted (merge's hard_delete removes the key)
EDIT = st.tuples(st.sampled_from(["new", "new", "late", "update", "delete"]), st.integers(0, LAG), st.integers(0, 99))
COMBOS = [
    ("sqlite", "sqlite", "append"),
    ("sqlite", "sqlite", "merge"),
    ("duckdb", "duckdb", "merge"),
    ("postgres", "postgres", "merge"),
]


@pytest.mark.parametrize(("source_kind", "sink_kind", "disposition"), COMBOS, ids=["-".join(c) for c in COMBOS])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.lists(EDIT, max_size=7), min_size=1, max_size=4))
def test_random_runs_equal_one_full_load(
    tmp_path_factory: pytest.TempPathFactory, source_kind: str, sink_kind: str, disposition: str, rounds
) -> None:
    """Edits of the source (new keys, keys equal to the last cursor, late rows inside `lag`, updates, deletes)
    loaded by one incremental run after each round of edits leave the target exactly as one `--full-refresh`
    run of the same pipeline into a separate target (the oracle, with a state store of its own). merge with
    hard deletes: the same rows. append: the latest version of each key is the full load's row, and no
    (key, cursor) version is there twice."""
    folder = tmp_path_factory.mktemp("prop")
    source, sink = PropSource(source_kind, folder), PropSink(sink_kind, disposition, folder)
    head = "metadata: {name: prop}\npipeline:\n" + source.step()
    incremental = folder / "inc.yaml"
    incremental.write_text(head + sink.step("inc"), encoding="utf-8")
    oracle = folder / "full.yaml"
    oracle.write_text(head + sink.step("full"), encoding="utf-8")
    rows: dict[int, Row] = {}
    top = reached = 0  # the highest cursor in the source; the highest one the last run loaded
    try:
        for edits in rounds:
            for kind, amount, pick in edits:
                if kind in ("update", "delete") and rows:
                    key = sorted(rows)[pick % len(rows)]
                    at = T0 + dt.timedelta(seconds=top + amount % 4)
                    if at == rows[key][1]:
                        at += dt.timedelta(seconds=1)  # a new (cursor, key): an update that keeps its cursor is unseen
                    rows[key] = (key, at, f"v{key}.{len(rows)}.{amount}", kind == "delete")
                    source.upsert(rows[key], new=False)
                else:
                    second = max(0, reached - 1 - amount % LAG) if kind == "late" else top + amount % 4
                    key = len(rows)
                    rows[key] = (key, T0 + dt.timedelta(seconds=second), f"v{key}", False)
                    source.upsert(rows[key], new=True)
                top = max(top, int((rows[key][1] - T0).total_seconds()))
            _run(incremental, folder / "state.db")
            reached = top
        _run(oracle, folder / "oracle-state.db", full_refresh=True)
        got, want = sink.rows("inc"), sink.rows("full")
        if disposition == "merge":
            assert got == want
        else:
            assert len(got) == len({(k, at) for k, at, _, _ in got}), "a (key, cursor) version was loaded twice"
            latest = {r[0]: r for r in sorted(got, key=lambda r: r[1])}  # the version with the highest cursor
            assert sorted(latest.values()) == want
        assert want == sorted((k, str(at), v, d) for k, at, v, d in rows.values() if not (d and disposition == "merge"))
    finally:
        source.drop()
        sink.drop()


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
