"""The state store on both backends (a real SQLite file, the real PostgreSQL), same test bodies."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from oxiflow.state.store import (
    SCHEMA_VERSION,
    SQLiteStore,
    StateError,
    StateStore,
    iso_before,
    mask_secrets,
    open_store,
    resolve_url,
    split_schema,
)

PG_URL = os.environ.get("OXIFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_url_with_schema(schema: str) -> str:
    return f"{PG_URL}{'&' if '?' in PG_URL else '?'}schema={schema}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema per test, dropped afterwards; a PostgreSQL that is down fails the test."""
    schema = f"oxistate_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state" / "state.db")
    return pg_url_with_schema(request.getfixturevalue("pg_schema"))


@pytest.fixture
def store(url: str) -> Iterator[StateStore]:
    with open_store(url) as s:
        yield s


def _step(step_id: str, kind: str, rows_in: int, rows_out: int, **kw: object) -> dict[str, object]:
    from oxiflow.engine.metrics import StepMetrics

    m = StepMetrics(step_id, step_id, kind, status="ok", rows_in=rows_in, rows_out=rows_out, attempts=1)
    for k, v in kw.items():
        setattr(m, k, v)
    return m.to_dict()


def test_schema_is_created_and_versioned(store: StateStore, url: str) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    with open_store(url) as again:  # reopening migrates nothing twice
        assert again.schema_version() == SCHEMA_VERSION
        assert again._read("SELECT count(*) FROM schema_version")[0][0] == SCHEMA_VERSION


def test_a_newer_store_is_refused(store: StateStore, url: str) -> None:
    with store.transaction() as tx:
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 'x')", (SCHEMA_VERSION + 1,))
    with pytest.raises(StateError, match="newer than this oxiflow"):
        open_store(url)


def test_runs_and_steps_round_trip(store: StateStore) -> None:
    store.start_run("r1", "orders", pid=1, host="h", pipeline_file="/p.yaml")
    store.start_run("r2", "orders", pid=1, host="h", pipeline_file="/p.yaml")
    store.start_run("r3", "other", pid=1, host="h", pipeline_file=None)
    steps = [
        {**_step("src", "source", 10, 10), "position": 0},
        {**_step("f", "transform", 10, 7, rows_filtered=3, fused=["x"]), "position": 1},
        {**_step("out", "sink", 7, 7, error="boom postgresql://u:hunter2@db/x"), "position": 2},
    ]
    store.save_steps("r2", steps)
    store.finish_run("r2", {"status": "ok", "seconds": 1.5, "rows_read": 10, "rows_written": 7, "error": None})

    assert [r["run_id"] for r in store.runs("orders")] == ["r2", "r1"]  # newest first
    assert [r["run_id"] for r in store.runs(limit=1)] == ["r3"]
    assert [r["run_id"] for r in store.runs(status="running")] == ["r3", "r1"]
    run = store.run("r2")
    assert run is not None
    assert (run["status"], run["seconds"], run["rows_read"], run["rows_written"]) == ("ok", 1.5, 10, 7)
    got = [(s["step_id"], s["rows_in"], s["rows_out"], s["rows_filtered"], s["fused"]) for s in run["steps"]]
    assert got == [("src", 10, 10, 0, []), ("f", 10, 7, 3, ["x"]), ("out", 7, 7, 0, [])]
    assert run["steps"][2]["error"] == "boom postgresql://u:***@db/x"  # secrets are masked
    assert run["steps"][1]["balanced"] is True and run["steps"][0]["pushdown"] is False
    assert store.run("nope") is None


def test_run_lookup_by_unique_prefix(store: StateStore) -> None:
    store.start_run("20250101-aa", "p", pid=1, host="h", pipeline_file=None)
    store.start_run("20250101-ab", "p", pid=1, host="h", pipeline_file=None)
    assert store.run("20250101-aa") is not None
    assert store.run("20250101-a") is None  # ambiguous
    found = store.run("20250101-ab"[:-1] + "b")
    assert found is not None and found["run_id"] == "20250101-ab"


def test_mark_run_only_touches_running_runs(store: StateStore) -> None:
    store.start_run("r1", "p", pid=1, host="h", pipeline_file=None)
    assert store.mark_run("r1", "crashed", "its process died")
    assert not store.mark_run("r1", "cancelled")
    run = store.run("r1")
    assert run is not None and (run["status"], run["error"]) == ("crashed", "its process died")


def test_cursors(store: StateStore) -> None:
    assert store.get_cursor("p", "src") is None
    store.set_cursor("p", "src", {"updated_at": "2025-01-01", "ids": [1, 2]}, "load1")
    store.set_cursor("p", "src", 42, None, key="offset")
    c = store.get_cursor("p", "src")
    assert c is not None and (c.value, c.load_id) == ({"updated_at": "2025-01-01", "ids": [1, 2]}, "load1")
    store.set_cursor("p", "src", "2025-02-01", "load2")
    c = store.get_cursor("p", "src")
    assert c is not None and (c.value, c.load_id) == ("2025-02-01", "load2")
    offset = store.get_cursor("p", "src", key="offset")
    assert offset is not None and offset.value == 42
    assert [(x.step, x.key) for x in store.cursors("p")] == [("src", "cursor"), ("src", "offset")]
    assert store.delete_cursors("p") == 2
    assert store.cursors() == []


def test_load_and_cursor_commit_together(store: StateStore) -> None:
    load = store.begin_load("p", "sink", run_id="r1", target="t.parquet")
    assert [ld.load_id for ld in store.pending_loads("p")] == [load]
    with store.transaction() as tx:
        store.commit_load(load, conn=tx)
        store.set_cursor("p", "src", 5, load, conn=tx)
    assert store.pending_loads("p") == []
    (committed,) = store.loads("p")
    assert (committed.status, committed.target, committed.run_id) == ("committed", "t.parquet", "r1")
    assert committed.committed_at is not None
    with pytest.raises(StateError, match="it is committed"):
        store.rollback_load(load)


def test_a_failed_transaction_leaves_nothing(store: StateStore) -> None:
    load = store.begin_load("p", "sink")
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.commit_load(load, conn=tx)
        store.set_cursor("p", "src", 5, load, conn=tx)
        raise RuntimeError("the write failed")
    assert store.get_cursor("p", "src") is None
    assert [ld.status for ld in store.loads("p")] == ["pending"]


def test_schema_versions(store: StateStore) -> None:
    s1 = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())])
    s2 = s1.append(pa.field("ts", pa.timestamp("us", tz="UTC")))
    assert store.latest_schema("orders") is None
    assert store.record_schema("orders", s1) == 1
    assert store.record_schema("orders", s1) == 1  # unchanged: no new version
    assert store.record_schema("orders", s2) == 2
    assert store.record_schema("other", s2) == 1
    latest = store.latest_schema("orders")
    assert latest is not None and latest.version == 2 and latest.schema.equals(s2)
    assert latest.fields[0] == {"name": "id", "type": "int64", "nullable": False, "metadata": {}}
    assert [v.version for v in store.schema_versions("orders")] == [1, 2]
    assert store.schema_versions("orders")[0].schema.equals(s1)


def test_cleanup_deletes_old_finished_runs_only(store: StateStore) -> None:
    for run_id in ("old", "old-running", "new"):
        store.start_run(run_id, "p", pid=1, host="h", pipeline_file=None)
        store.save_steps(run_id, [{**_step("src", "source", 1, 1), "position": 0}])
    store.finish_run("old", {"status": "ok"})
    with store.transaction() as tx:
        tx.execute("UPDATE runs SET started_at = '2000-01-01T00:00:00.000Z' WHERE run_id LIKE ?", ("old%",))
    assert store.delete_runs_before(iso_before(timedelta(days=30)), dry_run=True) == 1
    assert len(store.runs(limit=None)) == 3
    assert store.delete_runs_before(iso_before(timedelta(days=30))) == 1
    assert sorted(r["run_id"] for r in store.runs(limit=None)) == ["new", "old-running"]
    assert store._read("SELECT count(*) FROM step_runs WHERE run_id = 'old'")[0][0] == 0


def test_cleanup_deletes_old_settled_loads_only(store: StateStore) -> None:
    ids = {name: store.begin_load("p", "out", run_id=name) for name in ("committed", "rolled", "pending", "cursor")}
    other = store.begin_load("q", "out", run_id="other")
    for name in ("committed", "cursor"):
        store.commit_load(ids[name])
    store.commit_load(other)
    store.rollback_load(ids["rolled"])
    store.set_cursor("p", "src", {"last": 1}, ids["cursor"])  # the load that moved the cursor is kept
    fresh = store.begin_load("p", "out", run_id="fresh")
    store.commit_load(fresh)
    with store.transaction() as tx:
        tx.execute("UPDATE loads SET created_at = '2000-01-01T00:00:00.000Z' WHERE load_id <> ?", (fresh,))
    before = iso_before(timedelta(days=30))
    assert store.delete_loads_before(before, "p", dry_run=True) == 2
    assert len(store.loads()) == 6
    assert store.delete_loads_before(before, "p") == 2  # committed and rolled back; q's stays (--pipeline p)
    assert sorted(load.load_id for load in store.loads()) == sorted([ids["pending"], ids["cursor"], other, fresh])
    assert store.delete_loads_before(before) == 1  # q's
    assert store.pending_loads("p")[0].load_id == ids["pending"]  # the next run settles it: never deleted


def test_mark_run_records_the_exit_code(store: StateStore) -> None:
    store.start_run("r1", "p", pid=1, host="h", pipeline_file=None)
    assert store.mark_run("r1", "cancelled", "stopped by SIGTERM", exit_code=143)
    run = store.run("r1")
    assert run is not None and (run["status"], run["error"], run["exit_code"]) == (
        "cancelled",
        "stopped by SIGTERM",
        143,
    )


@pytest.mark.parametrize(
    ("raised", "stop_code", "recorded"),
    [
        (KeyboardInterrupt("stopped by SIGTERM"), 143, ("cancelled", 143, "stopped by SIGTERM")),
        (KeyboardInterrupt(), None, ("cancelled", 130, "stopped before the run finished")),
        (RuntimeError("oxiflow broke"), None, ("failed", 1, "stopped before the run finished")),
    ],
)
def test_a_run_stopped_outside_the_engine_records_its_exit_code(
    tmp_path: Path, raised: BaseException, stop_code: int | None, recorded: tuple[object, ...]
) -> None:
    """What `oxiflow run` does when a stop or an error leaves the run before the engine recorded it (while the
    store opens, between checkpoint slices): the session marks it with the exit code the process gives."""
    from oxiflow.config.load import load_pipeline
    from oxiflow.state.session import RunSession

    path = tmp_path / "p.yaml"
    path.write_text("pipeline:\n  - name: read_csv\n    config: {path: a.csv}\n  - name: write_csv\n"
                    "    config: {path: b.csv}\n", encoding="utf-8")  # fmt: skip
    state = str(tmp_path / "state.db")
    session = RunSession.open(load_pipeline(path), "r1", state_url=state)
    with pytest.raises(type(raised)):
        try:
            raise raised
        finally:
            session.close(stop_code)
    with open_store(state) as store:
        run = store.run("r1")
    assert run is not None and (run["status"], run["exit_code"], run["error"]) == recorded


def test_export_import_round_trip(store: StateStore, tmp_path: Path) -> None:
    store.start_run("r1", "p", pid=1, host="h", pipeline_file=None)
    store.save_steps("r1", [{**_step("src", "source", 3, 3), "position": 0}])
    store.start_run("r2", "q", pid=1, host="h", pipeline_file=None)
    load = store.begin_load("p", "sink")
    store.set_cursor("p", "src", [1, "a"], load)
    store.record_schema("ds", pa.schema([("a", pa.int32())]))
    doc = json.loads(json.dumps(store.export()))  # survives JSON

    with open_store(str(tmp_path / "copy.db")) as other:
        counts = other.import_(doc)
        assert counts["runs"] == 2 and counts["step_runs"] == 1 and counts["cursors"] == 1
        assert other.export() == doc
        other.import_(doc)  # importing twice changes nothing
        assert other.export() == doc
        only_p = store.export("p")
        assert [r["run_id"] for r in only_p["tables"]["runs"]] == ["r1"]
        other.import_(only_p, replace=True)
        assert [r["run_id"] for r in other.runs(limit=None)] == ["r1"]
        with pytest.raises(StateError, match="not an oxiflow state export"):
            other.import_({"tables": []})


def _fill_every_table(store: StateStore) -> None:
    """At least one row in every table of the store, the DLQ's and the schema registry's included."""
    from oxiflow.state.approvals import Registry
    from oxiflow.state.dlq import DlqTable
    from oxiflow.state.store import LockRow

    store.start_run("r1", "p", pid=1, host="h", pipeline_file="p.yaml")
    store.save_steps("r1", [{**_step("src", "source", 3, 2), "position": 0}])
    load = store.begin_load("p", "sink", run_id="r1")
    store.set_cursor("p", "src", {"at": "2025-01-02"}, load)
    store.record_schema("ds", pa.schema([("a", pa.int32())]))
    store.put_lock_row(LockRow("p", "r1", 42, "h", "2025-01-01T00:00:00Z", "2025-01-01T00:00:05Z"))
    dlq = DlqTable(store)
    fp = dlq.save_schema(pa.schema([("a", pa.int32()), ("b", pa.string())]))
    dlq.insert([
        {"id": f"d{i}", "pipeline": "p", "run_id": "r1", "step": "validate", "oxi": "validate", "rule": "range(a)",
         "reason": f"a = {i} must be <= 0", "file": "in.csv", "line": i, "column_name": "a",
         "raw": json.dumps({"a": i, "b": "x"}), "vals": json.dumps({"a": i}), "schema_fp": fp, "masked": "[]",
         "created_at": f"2025-01-01T00:00:0{i}Z"}
        for i in range(1, 4)
    ])  # fmt: skip
    dlq.mark_replayed(["d1"], "r2")
    dlq.record_stats("ds", "r1", pipeline="p", step="validate", row_count=2, null_rate={"a": 0.5}, means={"a": 1.5})
    registry = Registry(store)
    registry.request("ds", "fp2", ["field a dropped"], base_version=1, pipeline="p", step="sink", run_id="r1")
    registry.approve("ds", by="ana", reason="planned")
    registry.save_settings("ds", compatibility="backward", schema_contract={"columns": "evolve"}, contract=None,
                           pipeline="p", step="sink")  # fmt: skip
    registry.save_drift("ds", 1, [{"change": "added", "field": "a"}], "r1")


def _catalogue(store: StateStore) -> list[str]:
    """Every table of the store as its database lists it (not from oxiflow's own list of tables)."""
    if store.backend == "postgresql":
        rows = store._read("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    else:
        rows = store._read("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return sorted(str(r[0]) for r in rows)


def _table_rows(store: StateStore, table: str) -> list[tuple[object, ...]]:
    return sorted(store._read(f"SELECT * FROM {table}"), key=repr)


def test_export_import_carries_every_table(url: str, tmp_path: Path) -> None:
    """export -> JSON -> import into a fresh store: every table the database has, row for row."""
    postgres = url.startswith("postgresql")
    fresh_schema = f"oxistate_{uuid.uuid4().hex[:12]}"
    fresh = pg_url_with_schema(fresh_schema) if postgres else str(tmp_path / "fresh.db")
    try:
        with open_store(url) as store, open_store(fresh) as other:
            _fill_every_table(store)
            tables = _catalogue(store)
            assert {
                "dlq",
                "dlq_schemas",
                "dataset_stats",
                "schema_approvals",
                "dataset_settings",
                "schema_drift",
            } <= set(tables)
            doc = json.loads(json.dumps(store.export(), default=str))
            other.import_(doc)
            assert _catalogue(other) == tables
            for table in tables:
                assert _table_rows(store, table), f"{table} was left empty by the fixture"
                if table == "schema_version":  # the store's own bookkeeping: applied_at is the fresh store's
                    continue
                assert _table_rows(other, table) == _table_rows(store, table), table
            # --replace empties the DLQ's tables too before loading
            other.import_({"format": "oxiflow-state", "schema_version": 1, "tables": {}}, replace=True)
            assert all(not _table_rows(other, t) for t in tables if t != "schema_version")
            # one pipeline's export: its DLQ rows and stats; DLQ schemas and drift reports always
            only_q = store.export("q")["tables"]
            assert only_q["dlq"] == only_q["dataset_stats"] == only_q["schema_approvals"] == []
            assert len(only_q["dlq_schemas"]) == 1 and len(only_q["schema_drift"]) == 1
    finally:
        if postgres:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{fresh_schema}" CASCADE')


def test_pipelines_overview(store: StateStore) -> None:
    store.start_run("r1", "a", pid=1, host="h", pipeline_file=None)
    store.finish_run("r1", {"status": "failed"})
    store.set_cursor("b", "src", 1)
    got = {p["pipeline"]: (p["runs"], p["last_status"], p["cursors"]) for p in store.pipelines()}
    assert got == {"a": (1, "failed", 0), "b": (0, None, 1)}


def test_writes_from_many_threads(store: StateStore) -> None:
    """Engine observers call from step threads: one connection, serialised, nothing lost."""
    store.start_run("r", "p", pid=1, host="h", pipeline_file=None)

    def work(i: int) -> None:
        for j in range(20):
            store.save_steps("r", [{**_step(f"s{i}", "transform", j, j), "position": i}])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run = store.run("r")
    assert run is not None
    assert [(s["step_id"], s["rows_in"]) for s in run["steps"]] == [(f"s{i}", 19) for i in range(4)]


def test_sqlite_is_wal_with_busy_timeout(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "s.db")) as store:
        assert isinstance(store, SQLiteStore)
        assert store._read("PRAGMA journal_mode")[0][0] == "wal"
        assert store._read("PRAGMA busy_timeout")[0][0] >= 1000
        store.start_run("r", "p", pid=1, host="h", pipeline_file=None)
    con = sqlite3.connect(tmp_path / "s.db")  # an independent reader sees the committed row
    assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r", "running")]
    con.close()


def test_sqlite_backup_and_restore(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "s.db")) as store:
        assert isinstance(store, SQLiteStore)
        store.set_cursor("p", "src", 1)
        store.backup_to(tmp_path / "b.db")
        store.set_cursor("p", "src", 2)
        store.restore_from(tmp_path / "b.db")
        c = store.get_cursor("p", "src")
        assert c is not None and c.value == 1
        (tmp_path / "junk.db").write_text("not a database")
        with pytest.raises(StateError, match="not an SQLite database"):
            store.restore_from(tmp_path / "junk.db")


def test_missing_store_is_not_created_for_reads(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no state store at"):
        open_store(str(tmp_path / "nope.db"), create=False)
    assert not (tmp_path / "nope.db").exists()


def test_postgres_down_fails_clearly_without_the_password() -> None:
    with pytest.raises(StateError, match="cannot connect") as exc:
        open_store("postgresql://u:sekret@127.0.0.1:1/x")
    assert "sekret" not in str(exc.value)


def test_url_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mask_secrets("x postgresql://me:p@ss@h/db y") == "x postgresql://me:***@h/db y"
    assert split_schema("postgresql://h/db?sslmode=disable&schema=s1") == ("postgresql://h/db?sslmode=disable", "s1")
    monkeypatch.delenv("OXIFLOW_STATE_URL", raising=False)
    assert resolve_url(None, None, tmp_path) == str(tmp_path / ".oxiflow" / "state.db")
    monkeypatch.setenv("OXIFLOW_STATE_URL", "postgresql://h/db")
    assert resolve_url(None, None, tmp_path) == "postgresql://h/db"
    assert resolve_url("sqlite:///abs/x.db", None, tmp_path) == "/abs/x.db"
